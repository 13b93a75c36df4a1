//! The Segment-compatible ingestion endpoints: `/v1/{track,identify,page,screen,group,alias}`
//! for one message, `/v1/batch` and `/v1/import` for many.
//!
//! A request is answered only after its events are durable in the log. In a batch, good items
//! are kept even when others are refused (as Segment does): the answer is then 400
//! `invalid_items` with `accepted` and, per refused item, its `index`, `code` and `message`.
//! Limits (413) and envelope errors (400 `invalid_json`) refuse the whole request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use chrono::Utc;
use livora_log::NewRecord;
use livora_model::ingest::{self, Envelope, RawMessage};
use livora_model::{Event, EventType, ItemError};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::basic_username;
use crate::body;
use crate::error::{ApiError, Code};

/// What normalisation may add to an event (`receivedAt`, corrected `timestamp`, a generated
/// `messageId`, `context.ip` …) on top of the client's bytes before the per-event limit bites.
const NORMALISATION_ALLOWANCE: usize = 1024;

/// Handler for the single-message endpoints.
pub async fn single(
    kind: EventType,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let result = async {
        body::check_content_type(&headers)?;
        let limit = state.ingest.max_event_bytes;
        let bytes = body::read(&headers, body, limit).await?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            ApiError::new(Code::InvalidJson, format!("body is not valid UTF-8: {e}"))
        })?;
        let header_key = check_header_key(&state, &headers).await?;
        let parsed = ingest::parse_item(text);
        if parsed.is_err()
            && let Err(e) = serde_json::from_str::<&serde_json::value::RawValue>(text)
        {
            return Err(ApiError::new(
                Code::InvalidJson,
                format!("body is not valid JSON: {e}"),
            ));
        }
        // The body's key counts even when another field is bad (400, not 401).
        let body_key = match &parsed {
            Ok(m) => m.write_key.clone(),
            Err(_) => ingest::write_key_of(text),
        };
        let key = state
            .keys
            .write_key(header_key.or(body_key).as_deref())
            .await?;
        let message = parsed.map_err(|e| ApiError::new(Code::Item(e.code), e.message))?;
        let ip = client_ip(&state, &headers, peer);
        let env = Envelope {
            received_at: Utc::now(),
            client_ip: Some(&ip),
            future_tolerance: state.ingest.future_tolerance(),
            sent_at: None,
            context: None,
            integrations: None,
        };
        let items = vec![Ok(message)];
        store(&state, key.tenant_id, items, Some(kind), &env).await
    }
    .await;
    finish(result, started)
}

/// Handler for `/v1/batch` and `/v1/import`.
pub async fn batch(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let result = async {
        body::check_content_type(&headers)?;
        let opts = &state.ingest;
        let header_key = check_header_key(&state, &headers).await?;
        let bytes = body::read(&headers, body, opts.max_batch_bytes).await?;
        let envelope = ingest::parse_batch(&bytes).map_err(|e| {
            ApiError::new(
                Code::InvalidJson,
                format!("body is not a batch object with a `batch` array: {e}"),
            )
        })?;
        let key = header_key.or_else(|| envelope.write_key.clone());
        let key = state.keys.write_key(key.as_deref()).await?;
        let n = envelope.batch.len();
        if n == 0 {
            return Err(ApiError::new(Code::EmptyBatch, "`batch` has no items"));
        }
        if n > opts.max_batch_events {
            return Err(ApiError::new(
                Code::TooManyEvents,
                format!(
                    "batch has {n} events; the limit is {} per batch",
                    opts.max_batch_events
                ),
            )
            .with("limit_events", opts.max_batch_events));
        }
        if let Some((index, raw)) = envelope
            .batch
            .iter()
            .enumerate()
            .find(|(_, raw)| raw.get().len() > opts.max_event_bytes)
        {
            return Err(ApiError::new(
                Code::EventTooLarge,
                format!(
                    "batch item {index} has {} bytes; the limit is {} bytes per event",
                    raw.get().len(),
                    opts.max_event_bytes
                ),
            )
            .with("index", index)
            .with("limit_bytes", opts.max_event_bytes));
        }
        let items = envelope
            .batch
            .iter()
            .map(|raw| ingest::parse_item(raw.get()))
            .collect();
        let ip = client_ip(&state, &headers, peer);
        let env = Envelope {
            received_at: Utc::now(),
            client_ip: Some(&ip),
            future_tolerance: opts.future_tolerance(),
            sent_at: envelope.sent_at.as_deref(),
            context: envelope.context.as_ref(),
            integrations: envelope.integrations.as_ref(),
        };
        store(&state, key.tenant_id, items, None, &env).await
    }
    .await;
    finish(result, started)
}

/// The write key of a Basic header, checked before the body is judged; `None` when the key
/// is to come from the body.
async fn check_header_key(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let key = basic_username(headers);
    if key.is_some() {
        state.keys.write_key(key.as_deref()).await?;
    }
    Ok(key)
}

fn finish(
    result: Result<Json<Value>, ApiError>,
    started: Instant,
) -> Result<Json<Value>, ApiError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    metrics::histogram!("livora_ingest_request_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &result
        && e.code != Code::InvalidItems
    {
        metrics::counter!("livora_ingest_requests_refused_total", "code" => e.code.as_str())
            .increment(1);
    }
    result
}

/// Normalises the items, appends the good ones durably, and reports the bad ones.
async fn store(
    state: &AppState,
    tenant: livora_model::TenantId,
    items: Vec<Result<RawMessage, ItemError>>,
    kind: Option<EventType>,
    env: &Envelope<'_>,
) -> Result<Json<Value>, ApiError> {
    let total = items.len();
    let mut records = Vec::with_capacity(total);
    let mut errors = Vec::new();
    // Batch-level context is copied into every item: check the size of what is stored, so a
    // small request cannot make huge events.
    let max_stored = state.ingest.max_event_bytes + NORMALISATION_ALLOWANCE;
    let mut events = Vec::with_capacity(total);
    let mut indices = Vec::with_capacity(total);
    for (index, item) in items.into_iter().enumerate() {
        match item.and_then(|m| ingest::normalise(m, kind, env)) {
            Ok(mut event) => {
                state.intel.label_text(tenant, &mut event);
                events.push(event);
                indices.push(index);
            }
            Err(e) => errors.push((index, e)),
        }
    }
    // Personal fields are encrypted before anything is written.
    if let Some(p) = &state.protection {
        crate::privacy::protect(p, tenant, &mut events).await?;
    }
    for (index, event) in indices.into_iter().zip(events) {
        let r = record(tenant, &event)?;
        if r.payload.len() > max_stored {
            return Err(ApiError::new(
                Code::EventTooLarge,
                format!(
                    "item {index} is {} bytes once the batch context is merged in; the limit is {} bytes per event",
                    r.payload.len(),
                    state.ingest.max_event_bytes
                ),
            )
            .with("index", index)
            .with("limit_bytes", state.ingest.max_event_bytes));
        }
        records.push(r);
    }
    for (_, e) in &errors {
        metrics::counter!("livora_events_rejected_total", "reason" => e.code.as_str()).increment(1);
    }
    if !records.is_empty() {
        let outcome = state.log.append(records).await.map_err(|e| {
            tracing::error!(error = %e, "append to the event log failed");
            ApiError::new(
                Code::LogUnavailable,
                "the event log cannot take writes right now; retry later",
            )
        })?;
        metrics::counter!("livora_events_accepted_total").increment(outcome.written() as u64);
    }
    match (kind, errors.pop()) {
        (_, None) => Ok(Json(json!({ "success": true }))),
        // A single-message call: the item's own code is the answer.
        (Some(_), Some((_, e))) => Err(ApiError::new(Code::Item(e.code), e.message)),
        (None, Some(last)) => {
            errors.push(last);
            Err(refused(total, errors))
        }
    }
}

fn refused(total: usize, errors: Vec<(usize, ItemError)>) -> ApiError {
    let accepted = total - errors.len();
    let list: Vec<Value> = errors
        .iter()
        .map(|(index, e)| json!({ "index": index, "code": e.code, "message": e.message }))
        .collect();
    let message = format!(
        "{} of {total} items were refused; the other {accepted} were accepted",
        errors.len()
    );
    ApiError::new(Code::InvalidItems, message)
        .with("accepted", accepted)
        .with("errors", list)
}

pub(crate) fn record(tenant: livora_model::TenantId, event: &Event) -> Result<NewRecord, ApiError> {
    let payload = serde_json::to_vec(event).map_err(|e| ApiError::internal(&e))?;
    Ok(NewRecord {
        tenant: tenant.0,
        id: event.message_id.clone(),
        payload,
    })
}

pub(crate) fn client_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> String {
    if state.ingest.trust_forwarded_for
        && let Some(first) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            // The last hop is the one the trusted proxy added; earlier ones are the client's.
            .and_then(|v| v.split(',').next_back())
            .map(str::trim)
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
    {
        return first.to_owned();
    }
    peer.ip().to_string()
}
