//! `POST /api/v1/query`: analytics queries over the column store, scoped to the caller's tenant;
//! `GET /api/v1/events/definitions`: the event names and property keys it holds.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use livora_analytics::QueryResult;
use livora_columnar::Table;
use livora_model::segment::ValueRef;
use livora_store::Permission;
use serde::{Deserialize, Serialize};
use serde_json::json;

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
    // Breaking down by a personal trait or property shows its values, and comparing one
    // (`email gt "m"`, …) rebuilds them from counts: both need `pii.view`, as in segments.
    crate::privacy::guard_values(&state, &principal, "query", |visit| {
        visit_properties(&value, "query", visit)
    })?;
    let query: livora_analytics::Query = serde_json::from_value(value)
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
    let columns = columns.clone();
    let result = tokio::task::spawn_blocking(move || match table {
        Some(t) => {
            // The kernel's own heap is not the store's to evict: room for it first. Reserved
            // with the table unlocked: the eviction takes every table's read lock, and a
            // second read lock on one this thread holds can wait forever behind a writer.
            let heap = query.heap_estimate(&livora_columnar::ColumnStore::read(&t));
            let _room = columns.reserve(heap as u64);
            livora_analytics::run(&livora_columnar::ColumnStore::read(&t), &query, tz)
        }
        None => livora_analytics::run(&Table::default(), &query, tz),
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::new(Code::InvalidQuery, e.to_string()))?;
    Ok(Json(Answer { result, log_offset }))
}

/// Every property a query names (its filters and breakdowns: the objects with a `property`),
/// as a trait (`"source": "person"`) or an event property, at its path; a dotted name is
/// also given by its first part. Filters that only ask whether it is set are left out, as
/// `exists` is in segments.
fn visit_properties(v: &serde_json::Value, path: &str, f: &mut dyn FnMut(&str, ValueRef<'_>)) {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            let presence = matches!(
                o.get("op").and_then(Value::as_str),
                Some("is_set" | "is_not_set")
            );
            if let Some(name) = o.get("property").and_then(Value::as_str)
                && !presence
            {
                let at = format!("{path}.property");
                let person = o.get("source").and_then(Value::as_str) == Some("person");
                let head = name.split_once('.').map(|(head, _)| head);
                for n in std::iter::once(name).chain(head) {
                    f(
                        &at,
                        if person {
                            ValueRef::Trait(n)
                        } else {
                            ValueRef::Property(n)
                        },
                    );
                }
            }
            for (k, child) in o {
                visit_properties(child, &format!("{path}.{k}"), f);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                visit_properties(child, &format!("{path}[{i}]"), f);
            }
        }
        _ => {}
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsQuery {
    #[serde(default = "default_days")]
    days: u32,
}

fn default_days() -> u32 {
    30
}

/// `GET /api/v1/events/definitions`: the event names used in the last `days` days, most
/// used first with their counts and newest time, and the property keys the columns hold
/// with their types: what the dashboard suggests wherever an event or a property is named.
/// Names and keys only, no values, so `analytics.read` is enough.
pub async fn definitions(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    q: Result<Query<DefinitionsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    if !(1..=3660).contains(&q.days) {
        return Err(
            ApiError::new(Code::InvalidRequest, "days: from 1 to 3660").with("path", "days")
        );
    }
    let Some(columns) = &state.columns else {
        return Err(ApiError::new(
            Code::AnalyticsDisabled,
            "this node does not serve queries ([analytics] enabled = false)",
        ));
    };
    let from = (Utc::now() - chrono::Duration::days(i64::from(q.days))).timestamp_micros();
    let table = columns.table(principal.tenant);
    let (events, properties) = tokio::task::spawn_blocking(move || {
        let Some(t) = table else {
            return (Vec::new(), Vec::new());
        };
        let t = livora_columnar::ColumnStore::read(&t);
        let events: Vec<_> = t
            .names_within(from, i64::MAX)
            .into_iter()
            .map(|u| {
                json!({
                    "name": u.name,
                    "count": u.count,
                    "last_seen": DateTime::from_timestamp_micros(u.last_ts),
                })
            })
            .collect();
        let properties: Vec<_> = t
            .property_keys()
            .into_iter()
            .map(|(name, text, number)| {
                let types: Vec<&str> = [(text, "string"), (number, "number")]
                    .into_iter()
                    .filter_map(|(has, ty)| has.then_some(ty))
                    .collect();
                json!({"name": name, "types": types})
            })
            .collect();
        (events, properties)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(
        json!({"days": q.days, "events": events, "properties": properties}),
    ))
}
