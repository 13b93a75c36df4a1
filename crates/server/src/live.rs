//! `GET /api/v1/events/live`: the tenant's events as they are appended to the log, as
//! server-sent events (the dashboard's live feed).
//!
//! Each message carries what an analytics reader may see: the call type, the event name
//! and its time — no identities, traits or properties, so the feed needs `analytics.read`,
//! not `pii.view`. The stream starts at the log's end when it opens and follows it; when
//! more than [`MOST`] of the tenant's events arrive between two reads, only the newest
//! [`MOST`] are sent (a feed to glance at, not an export). The stream ends when the node
//! begins to shut down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::access::Principal;

/// Most events sent per read of the log.
pub const MOST: usize = 50;
/// Records read from the log at a time.
const READ: usize = 2_000;

#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub timestamp: DateTime<Utc>,
}

struct Follow {
    log: livora_log::EventLog,
    tenant: uuid::Uuid,
    at: u64,
    end: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Follow {
    /// The tenant's next events once the log has grown past `at` (at most [`MOST`]).
    async fn next(&mut self) -> Option<Vec<Summary>> {
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if *self.end.borrow_and_update() <= self.at {
                tokio::select! {
                    r = self.end.changed() => r.ok()?,
                    _ = self.closing.changed() => return None,
                }
                continue;
            }
            let (log, tenant, at) = (self.log.clone(), self.tenant, self.at);
            let read = tokio::task::spawn_blocking(move || {
                let mut r = log.reader(at)?;
                let mut found = Vec::new();
                loop {
                    let batch = r.next_batch(READ)?;
                    if batch.is_empty() {
                        break;
                    }
                    found.extend(
                        batch
                            .iter()
                            .filter(|x| x.tenant == tenant)
                            .filter_map(|x| serde_json::from_slice::<Summary>(&x.payload).ok()),
                    );
                    if found.len() > MOST {
                        found.drain(..found.len() - MOST);
                    }
                }
                Ok::<_, livora_log::Error>((found, r.position()))
            })
            .await
            .ok()?;
            match read {
                Ok((found, position)) => {
                    self.at = position;
                    if !found.is_empty() {
                        return Some(found);
                    }
                }
                Err(e) => {
                    // Retention removed what the feed had not read: start again at the end.
                    tracing::debug!(error = %e, "live feed: reading the log failed");
                    self.at = self.log.end_offset();
                }
            }
        }
    }
}

/// `GET /api/v1/events/live`.
pub async fn live(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let follow = Follow {
        log: state.log.clone(),
        tenant: p.tenant.0,
        at: state.log.end_offset(),
        end: state.log.subscribe(),
        closing: state.closing.subscribe(),
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let found = f.next().await?;
        let events: Vec<Result<SseEvent, Infallible>> = found
            .iter()
            .filter_map(|s| SseEvent::default().json_data(s).ok())
            .map(Ok)
            .collect();
        Some((futures::stream::iter(events), f))
    });
    Sse::new(futures::StreamExt::flatten(stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
