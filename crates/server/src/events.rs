//! `GET /api/v1/events`: the tenant's newest events, filtered and paginated.
//!
//! A read-back API for checking what was stored until the analytics engine exists: it scans
//! the log backwards from the cursor, so its cost grows with the log, not with the page.

use std::sync::Arc;

use axum::Json;
use axum::extract::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::Uri;
use chrono::{DateTime, Utc};
use livora_model::EventType;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::AppState;
use crate::access::Principal;
use crate::error::{ApiError, Code};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    event: Option<String>,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The fields a filter looks at, read without decoding the rest of the event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(borrow, default)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    anonymous_id: Option<std::borrow::Cow<'a, str>>,
    timestamp: DateTime<Utc>,
}

struct Filter {
    kind: Option<EventType>,
    event: Option<String>,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, h: &Head<'_>) -> bool {
        self.kind.is_none_or(|k| k == h.kind)
            && self
                .event
                .as_deref()
                .is_none_or(|e| h.event.as_deref() == Some(e))
            && self
                .user_id
                .as_deref()
                .is_none_or(|u| h.user_id.as_deref() == Some(u))
            && self
                .anonymous_id
                .as_deref()
                .is_none_or(|a| h.anonymous_id.as_deref() == Some(a))
            && self.since.is_none_or(|s| h.timestamp >= s)
            && self.until.is_none_or(|u| h.timestamp < u)
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(Code::InvalidQuery, message)
}

fn time(name: &str, v: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| invalid(format!("`{name}` must be an ISO-8601 date-time: {e}")))
    })
    .transpose()
}

/// A page of events. Each event is the exact JSON text stored in the log.
#[derive(Serialize)]
pub struct Page {
    events: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(q) = query.map_err(|e| invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let before = q
        .cursor
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| invalid("`cursor` is not a cursor from a previous page".into()))
        })
        .transpose()?;
    let filter = Filter {
        kind: q
            .kind
            .map(|t| {
                EventType::parse(&t).ok_or_else(|| {
                    invalid(format!(
                        "`type` {t:?} is not one of track, identify, page, screen, group, alias"
                    ))
                })
            })
            .transpose()?,
        event: q.event,
        user_id: q.user_id,
        anonymous_id: q.anonymous_id,
        // Events past the tenant's retention are gone from every answer.
        since: match (
            time("since", q.since)?,
            crate::retention_cutoff(&state, principal.tenant).await?,
        ) {
            (Some(s), Some(c)) => Some(s.max(c)),
            (s, c) => s.or(c),
        },
        until: time("until", q.until)?,
    };
    let tenant = principal.tenant.0;
    let log = state.log.clone();
    let scan = tokio::task::spawn_blocking(move || {
        let mut found: Vec<(u64, Box<RawValue>)> = Vec::new();
        let mut corrupt = None;
        let mut more = false;
        log.scan_backwards(before, |r| {
            if r.tenant != tenant {
                return true;
            }
            let Ok(text) = std::str::from_utf8(&r.payload) else {
                corrupt = Some(r.offset);
                return true;
            };
            match serde_json::from_str::<Head<'_>>(text) {
                Ok(head) if filter.matches(&head) => {
                    if found.len() == limit {
                        more = true;
                        return false;
                    }
                    match RawValue::from_string(text.to_owned()) {
                        Ok(raw) => found.push((r.offset, raw)),
                        Err(_) => corrupt = Some(r.offset),
                    }
                }
                Ok(_) => {}
                Err(_) => corrupt = Some(r.offset),
            }
            true
        })
        .map(|()| (found, more, corrupt))
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let (found, more, corrupt) = scan.map_err(|e| ApiError::internal(&e))?;
    if let Some(offset) = corrupt {
        tracing::error!(offset, "undecodable event payload in the log");
    }
    let next_cursor = more
        .then(|| found.last().map(|(o, _)| o.to_string()))
        .flatten();
    // Raw events are personal data: every page read is in the audit log.
    let mut entry = crate::staff::entry(&principal, "pii.view", None);
    entry.after = Some(serde_json::json!({
        "route": "GET /api/v1/events",
        "query": uri.query().unwrap_or(""),
        "events": found.len(),
    }));
    state.audit(entry).await?;
    let events = crate::privacy::reveal(
        &state,
        principal.tenant,
        found.into_iter().map(|(_, e)| e).collect(),
    )
    .await?;
    Ok(Json(Page {
        events,
        next_cursor,
    }))
}
