//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/api/openapi.json`.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};

use crate::AppState;

/// The OpenAPI 3.1 document of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let latency = [
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("livora_log_group_requests".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (several apps in one test process).
        let _ = metrics::set_global_recorder(recorder);
        describe_metrics();
        livora_automation::outbox::describe_metrics();
        handle
    })
}

/// The `# HELP` line of every metric the layers below record (they know no recorder).
/// Names follow Prometheus conventions: base units (`_seconds`, `_bytes`), counters end in
/// `_total`, and one thing is counted once (log writes and duplicates by the log, events by
/// the gateway that accepted or refused them).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "livora_events_accepted_total",
        "events accepted by the ingestion API and durable in the log (duplicates excluded)"
    );
    describe_counter!(
        "livora_events_rejected_total",
        "events refused by the ingestion API, by reason (one per refused item)"
    );
    describe_counter!(
        "livora_ingest_requests_refused_total",
        "ingestion requests refused as a whole, by error code (requests with refused items are counted per item in livora_events_rejected_total)"
    );
    describe_histogram!(
        "livora_ingest_request_seconds",
        Unit::Seconds,
        "time to answer an ingestion request, by outcome"
    );
    describe_counter!(
        "livora_http_rate_limited_total",
        "requests refused by a rate limit, by class (ingest, api, login)"
    );
    describe_counter!(
        "livora_log_records_written_total",
        "records written to the event log by every writer (ingestion, imports, internal events)"
    );
    describe_counter!(
        "livora_log_duplicates_total",
        "records the event log dropped as duplicates of a message id it already holds"
    );
    describe_counter!(
        "livora_log_written_bytes_total",
        Unit::Bytes,
        "bytes written to event log segments"
    );
    describe_counter!(
        "livora_log_torn_tail_bytes_total",
        Unit::Bytes,
        "bytes of an incomplete last record cut from a log segment on open (after a crash)"
    );
    describe_histogram!(
        "livora_log_commit_seconds",
        Unit::Seconds,
        "time to write and sync one group commit of the event log"
    );
    describe_histogram!(
        "livora_log_fsync_seconds",
        Unit::Seconds,
        "time of one fsync of the event log"
    );
    describe_histogram!(
        "livora_log_group_requests",
        "append requests served by one group commit of the event log"
    );
    describe_counter!(
        "livora_columnar_sealed_rows_total",
        "rows the column store sealed into segments"
    );
    describe_counter!(
        "livora_columnar_late_events_total",
        "events older than what the column store had already sealed, placed in their own day's partition"
    );
    describe_counter!(
        "livora_columnar_compacted_files_total",
        "segment files the column store merged into one file per tenant and day"
    );
    describe_gauge!(
        "livora_columnar_rows",
        "events in the column store's tables, sealed and hot, all tenants"
    );
    describe_gauge!(
        "livora_columnar_mapped_bytes",
        Unit::Bytes,
        "bytes of memory-mapped spill files holding the column store's large columns"
    );
    describe_gauge!(
        "livora_columnar_image_rows",
        "sealed rows the column store mapped from its image at start instead of decoding Parquet, all tenants"
    );
    describe_counter!(
        "livora_columnar_evictions_total",
        "times the column store dropped its spilled columns' pages to stay under [analytics] memory_limit_mb"
    );
    describe_gauge!(
        "livora_profiles_decoded_bytes",
        Unit::Bytes,
        "estimated heap bytes of the decoded (hot) profiles, all tenants, under [analytics] profiles_memory_limit_mb"
    );
    describe_gauge!(
        "livora_profiles_encoded_bytes",
        Unit::Bytes,
        "bytes of the compact encodings of cold profiles (in memory-mapped scratch files), all tenants"
    );
    describe_counter!(
        "livora_profiles_evictions_total",
        "profiles moved from decoded to encoded to stay under [analytics] profiles_memory_limit_mb"
    );
    describe_gauge!(
        "livora_log_dedupe_runs",
        "dedupe index runs on disk (frozen ids beyond the memory cap)"
    );
    describe_counter!(
        "livora_log_dedupe_freeze_waits_total",
        "times the log writer waited for the previous dedupe freeze to finish"
    );
    describe_histogram!(
        "livora_log_dedupe_freeze_wait_seconds",
        Unit::Seconds,
        "time the log writer waited for the previous dedupe freeze to finish"
    );
    describe_counter!(
        "livora_log_dedupe_run_errors_total",
        "dedupe runs that could not be written or merged (their ids stay in memory or in the input runs)"
    );
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let log_ok = state.log.is_healthy();
    let serving = state.ready.load(Ordering::Acquire);
    let status = if log_ok && serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
        "log": if log_ok { "ok" } else { "failed" },
        "accepting": serving,
    });
    // Reported, not gating: events are still accepted and kept while profiles are down.
    if let Some(p) = &state.profiles {
        match p.failure() {
            Some(why) => {
                body["profiles"] = json!("failed");
                body["profiles_error"] = json!(why);
            }
            None if p.caught_up() => body["profiles"] = json!("ok"),
            None => body["profiles"] = json!("catching_up"),
        }
    }
    // The same for workflows: a stopped automation service is reported, not gating.
    if let Some(a) = &state.automation {
        match a.failure() {
            Some(why) => {
                body["automation"] = json!("failed");
                body["automation_error"] = json!(why);
            }
            None => {
                body["automation"] = json!("ok");
                body["waiting_journeys"] = json!(a.with_runtime(|rt| rt.timer_count()));
            }
        }
    }
    (status, Json(body))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    describe_consumer_metrics();
    let end = state.log.end_offset();
    metrics::gauge!("livora_log_end_offset").set(end as f64);
    // What each consumer in this process has applied (what queries, profiles and journeys
    // see), and what it has committed (where it resumes after a restart): the column store
    // commits when it seals and profiles when they snapshot, so committed trails applied by
    // minutes on a caught-up node. Lag is counted from applied.
    let mut applied: Vec<(&'static str, u64)> = Vec::new();
    if let Some(columns) = &state.columns {
        applied.push((livora_columnar::CONSUMER, columns.applied()));
        metrics::gauge!("livora_columnar_image_rows").set(columns.rows_from_image() as f64);
    }
    if let Some(p) = &state.profiles {
        applied.push((livora_profiles::snapshot::CONSUMER, p.applied()));
    }
    if let Some(a) = &state.automation {
        applied.push((livora_automation::service::CONSUMER, a.applied()));
    }
    let mut committed: Vec<(String, u64)> = state.log.consumer_offsets().unwrap_or_default();
    if state.automation.is_some()
        && let Ok(Some(at)) = state
            .store
            .automation_offset(livora_automation::service::CONSUMER)
            .await
    {
        committed.push((livora_automation::service::CONSUMER.to_owned(), at));
    }
    for (name, at) in &applied {
        metrics::gauge!("livora_consumer_applied_offset", "consumer" => *name).set(*at as f64);
        metrics::gauge!("livora_consumer_lag_events", "consumer" => *name)
            .set(end.saturating_sub(*at) as f64);
    }
    for (name, at) in committed {
        // A consumer outside this process is known only by what it committed.
        if !applied.iter().any(|(n, _)| *n == name) {
            metrics::gauge!("livora_consumer_lag_events", "consumer" => name.clone())
                .set(end.saturating_sub(at) as f64);
        }
        metrics::gauge!("livora_consumer_committed_offset", "consumer" => name).set(at as f64);
    }
    if let Some(b) = state.profiles.as_ref().and_then(|p| p.budget()) {
        metrics::gauge!("livora_profiles_decoded_bytes").set(b.hot_bytes() as f64);
        metrics::gauge!("livora_profiles_encoded_bytes").set(b.cold_bytes() as f64);
        metrics::counter!("livora_profiles_evictions_total").absolute(b.evictions());
    }
    // The outbox's messages by status (pending, sent, blocked, dead).
    if state.sender.is_some()
        && let Err(e) = livora_automation::outbox::observe(state.store.as_ref()).await
    {
        tracing::warn!(error = %e, "cannot count the outbox's messages");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

/// The `# HELP` lines of the log consumers' gauges (once per process).
fn describe_consumer_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics_handle();
        metrics::describe_gauge!(
            "livora_log_end_offset",
            "one past the last offset written to the event log"
        );
        metrics::describe_gauge!(
            "livora_consumer_applied_offset",
            "one past the last log offset a consumer in this process has applied (what its queries, profiles or journeys reflect)"
        );
        metrics::describe_gauge!(
            "livora_consumer_committed_offset",
            "the log offset a consumer resumes from after a restart (the column store commits when it seals, profiles when they snapshot)"
        );
        metrics::describe_gauge!(
            "livora_consumer_lag_events",
            "log records a consumer has not applied yet (end offset minus applied offset; minus committed offset for a consumer outside this process): alert on this"
        );
    });
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
