//! Livora's HTTP server. Only this crate knows HTTP.
//!
//! - [`AppState`] holds the event log, the metadata store, the key cache and the options.
//! - [`app`] builds the axum [`Router`]: ingestion (`/v1/*`, [`ingest`]), the read API
//!   (`/api/v1/events`, [`events`]) and operations ([`ops`]); [`ROUTES`] lists every route
//!   with its auth, and a test checks it against the OpenAPI document.
//! - [`limits`]: rate limits per credential and per client address, and request timeouts.
//! - [`serve`] runs the router until the shutdown future resolves, then lets in-flight requests
//!   finish and stops the log writer after their events are durable.

mod auth;
mod body;
pub mod error;
mod events;
mod ingest;
pub mod limits;
pub mod ops;
mod query;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use livora_columnar::ColumnStore;
use livora_log::EventLog;
use livora_model::EventType;
use livora_store::MetadataStore;
use serde::Deserialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use auth::KeyCache;
use error::{ApiError, Code};
pub use limits::LimitOptions;

/// Ingestion settings (`[ingest]` in `livora.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestOptions {
    /// Largest single event, in bytes (Segment: 32 KB).
    pub max_event_bytes: usize,
    /// Largest batch body after decompression, in bytes (Segment: 500 KB).
    pub max_batch_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Timestamps further than this in the future (after skew correction) are clamped.
    pub future_tolerance_secs: u64,
    /// How long a key lookup is cached; a revoked key works for at most this long.
    pub key_cache_ttl_secs: u64,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_batch_events: 2_500,
            future_tolerance_secs: 600,
            key_cache_ttl_secs: 5,
            trust_forwarded_for: false,
        }
    }
}

impl IngestOptions {
    pub fn future_tolerance(&self) -> chrono::Duration {
        // Capped at 100 years: beyond that, every timestamp is "not in the future" anyway.
        chrono::Duration::seconds(self.future_tolerance_secs.min(100 * 365 * 86_400) as i64)
    }
}

/// What every handler shares.
pub struct AppState {
    pub log: EventLog,
    /// The column store the query API reads, fed from the log by [`serve`]; `None` on an
    /// ingest-only node (`[analytics] enabled = false`).
    pub columns: Option<Arc<ColumnStore>>,
    pub store: Arc<dyn MetadataStore>,
    pub ingest: IngestOptions,
    pub keys: KeyCache,
    pub limits: limits::Limits,
    /// Cleared when shutdown begins, so `/readyz` turns away new traffic.
    pub ready: AtomicBool,
}

impl AppState {
    pub fn new(
        log: EventLog,
        store: Arc<dyn MetadataStore>,
        ingest: IngestOptions,
        limits: &LimitOptions,
        columns: Option<Arc<ColumnStore>>,
    ) -> Result<Arc<Self>, limits::BadOrigin> {
        let ttl = Duration::from_secs(ingest.key_cache_ttl_secs);
        Ok(Arc::new(Self {
            log,
            columns,
            keys: KeyCache::new(store.clone(), ttl),
            store,
            ingest,
            limits: limits::Limits::new(limits)?,
            ready: AtomicBool::new(true),
        }))
    }
}

/// How a route authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    WriteKey,
    SecretKey,
}

/// Every route: method, path, auth. Kept in step with [`app`] and `openapi.json` by tests.
pub const ROUTES: &[(&str, &str, Auth)] = &[
    ("POST", "/v1/track", Auth::WriteKey),
    ("POST", "/v1/identify", Auth::WriteKey),
    ("POST", "/v1/page", Auth::WriteKey),
    ("POST", "/v1/screen", Auth::WriteKey),
    ("POST", "/v1/group", Auth::WriteKey),
    ("POST", "/v1/alias", Auth::WriteKey),
    ("POST", "/v1/batch", Auth::WriteKey),
    ("POST", "/v1/import", Auth::WriteKey),
    ("GET", "/api/v1/events", Auth::SecretKey),
    ("POST", "/api/v1/query", Auth::SecretKey),
    ("GET", "/healthz", Auth::None),
    ("GET", "/readyz", Auth::None),
    ("GET", "/metrics", Auth::None),
    ("GET", "/api/openapi.json", Auth::None),
];

macro_rules! single {
    ($kind:expr) => {
        post(|s, c, h, b| ingest::single($kind, s, c, h, b)).options(preflight)
    };
}

/// `OPTIONS` on a CORS route: the route's CORS layer answers browsers' preflight requests
/// before this runs; the method must exist for the request to reach that layer.
async fn preflight() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// The application router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn app(state: Arc<AppState>) -> Router {
    ops::metrics_handle();
    // Browsers post from the customer's own site: ingestion is open to every origin (the write
    // key is public by design). Read APIs are not.
    let ingestion = Router::new()
        .route("/v1/track", single!(EventType::Track))
        .route("/v1/identify", single!(EventType::Identify))
        .route("/v1/page", single!(EventType::Page))
        .route("/v1/screen", single!(EventType::Screen))
        .route("/v1/group", single!(EventType::Group))
        .route("/v1/alias", single!(EventType::Alias))
        .route("/v1/batch", post(ingest::batch).options(preflight))
        .route("/v1/import", post(ingest::batch).options(preflight))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), limits::Class::Ingest),
            limits::enforce,
        ))
        .layer(CorsLayer::permissive());
    let api = Router::new()
        .route("/api/v1/events", get(events::list).options(preflight))
        .route("/api/v1/query", post(query::run).options(preflight))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), limits::Class::Api),
            limits::enforce,
        ))
        .layer(state.limits.api_cors.clone());
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(ingestion)
        .merge(api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(ops::openapi))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Code::MethodNotAllowed, "method not allowed on this route")
        })
        .with_state(state)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
                })
                // One access-log line per request, carrying the span's request id.
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        // A bug must still answer in JSON (and the log has the panic message).
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(Code::Internal, "internal error; see the server log").into_response()
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Serves `state` on `listener` until `shutdown` resolves; then finishes in-flight requests,
/// and stops the log writer once their events are durable.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let retention = tokio::spawn(retention_loop(state.clone()));
    let columns = state
        .columns
        .clone()
        .map(|c| tokio::spawn(c.follow(state.log.clone())));
    let ready_state = state.clone();
    let router = app(state.clone());
    let result = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        ready_state.ready.store(false, Ordering::Release);
        tracing::info!("shutting down: finishing in-flight requests");
    })
    .await;
    retention.abort();
    if let Some(c) = columns {
        c.abort();
    }
    let log = state.log.clone();
    let _ = tokio::task::spawn_blocking(move || log.close()).await;
    tracing::info!("event log closed");
    result
}

async fn retention_loop(state: Arc<AppState>) {
    let log = state.log.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        state.limits.forget_idle();
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.enforce_retention()).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "log retention failed"),
            Err(e) => tracing::warn!(error = %e, "log retention task failed"),
            Ok(Ok(_)) => {}
        }
    }
}
