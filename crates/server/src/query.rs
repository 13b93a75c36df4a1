//! `POST /api/v1/query`: analytics queries over the column store, scoped to the caller's tenant.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::extract::State;
use livora_analytics::{Query, QueryResult};
use livora_columnar::Table;
use livora_store::Permission;
use serde::Serialize;

use crate::AppState;
use crate::access::Principal;
use crate::error::{ApiError, Code};

/// Largest query body accepted.
const MAX_QUERY_BYTES: usize = 256 * 1024;

#[derive(Serialize)]
pub struct Answer {
    #[serde(flatten)]
    result: QueryResult,
    /// Every event below this log offset is included.
    log_offset: u64,
}

pub async fn run(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<Answer>, ApiError> {
    if body.len() > MAX_QUERY_BYTES {
        return Err(ApiError::new(
            Code::BodyTooLarge,
            format!("a query is at most {MAX_QUERY_BYTES} bytes"),
        ));
    }
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(Code::InvalidQuery, format!("invalid query: {e}")))?;
    // The tenant's time zone sets calendar periods; its retention, the oldest time asked.
    let tenant = state
        .store
        .tenant(principal.tenant)
        .await?
        .ok_or_else(|| ApiError::new(Code::Unauthorized, "the tenant no longer exists"))?;
    // Until the column store has expired rows past the retention (at once after a change,
    // then hourly), no query reaches back before it.
    if let Some(cutoff) = crate::cutoff_of(&tenant)
        && let Some(from) = value.get_mut("from")
        && from
            .as_str()
            .and_then(|f| chrono::DateTime::parse_from_rfc3339(f).ok())
            .is_some_and(|f| f < cutoff)
    {
        *from = serde_json::Value::String(cutoff.to_rfc3339());
    }
    let query: Query = serde_json::from_value(value)
        .map_err(|e| ApiError::new(Code::InvalidQuery, format!("invalid query: {e}")))?;
    // Aggregates need `analytics.read` (the route's permission); naming persons is personal
    // data, and is audited.
    if query.lists_persons() {
        principal.require(Permission::ViewPii)?;
        let mut entry = crate::staff::entry(&principal, "pii.view", None);
        entry.after = Some(serde_json::json!({"route": "POST /api/v1/query", "persons": true}));
        state.audit(entry).await?;
    }
    let Some(columns) = &state.columns else {
        return Err(ApiError::new(
            Code::AnalyticsDisabled,
            "this node does not serve queries ([analytics] enabled = false)",
        ));
    };
    let tz: chrono_tz::Tz = tenant.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let table = columns.table(principal.tenant);
    let log_offset = columns.applied();
    let result = tokio::task::spawn_blocking(move || match table {
        Some(t) => livora_analytics::run(&livora_columnar::ColumnStore::read(&t), &query, tz),
        None => livora_analytics::run(&Table::default(), &query, tz),
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::new(Code::InvalidQuery, e.to_string()))?;
    Ok(Json(Answer { result, log_offset }))
}
