//! Livora's HTTP server. Only this crate knows HTTP.
//!
//! - [`AppState`] holds the event log, the metadata store, the key and session caches, the
//!   audit log and the options.
//! - [`app`] builds the axum [`Router`] from [`ROUTES`], where every route declares what it
//!   needs ([`Need`]: a write key, a signed-in staff member or key with a permission, or
//!   nothing); [`access`] resolves the caller and checks the permission before any handler
//!   runs. Routes: ingestion (`/v1/*`, [`ingest`]), the read API (`/api/v1/events`,
//!   `/api/v1/query`), staff accounts and tenant administration ([`staff`]) and operations
//!   ([`ops`]).
//! - [`limits`]: rate limits per credential and per client address, and request timeouts.
//! - [`serve`] runs the router until the shutdown future resolves, then lets in-flight requests
//!   finish and stops the log writer after their events are durable.

pub mod access;
mod auth;
mod body;
pub mod dashboard;
pub mod dashboards;
mod engagement;
pub mod error;
mod events;
mod ingest;
pub mod intel;
pub mod limits;
pub mod live;
mod mask;
pub mod ops;
mod people;
pub mod privacy;
mod query;
mod segments;
pub mod staff;
pub mod tls;
mod workflows;

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
use livora_store::audit::AuditLog;
use serde::Deserialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use access::{AuthOptions, Need};
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

/// Automation settings (`[automation]` in `livora.toml`): the delivery policy and retries.
/// Channels (providers and credentials) are configured per tenant through the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutomationOptions {
    /// Run workflows (needs profiles).
    pub enabled: bool,
    /// At most this many marketing messages per person and channel a day (0: no cap).
    pub frequency_cap: u32,
    /// Quiet hours in the person's time zone, `"21-8"` (start-end hours); `""`: none.
    pub quiet_hours: String,
    /// Attempts per provider before failing over (then the dead letters).
    pub retry_attempts: u32,
    /// The first retry's delay; each next one doubles (with jitter). Counted from the
    /// failure (the provider's answer, or the send timeout).
    pub retry_base_secs: u64,
    /// How long one call to a provider may take before it counts as a failed attempt.
    pub send_timeout_secs: u64,
    /// Calls to providers in flight at once on the node, over all tenants.
    pub max_in_flight: usize,
    /// Calls to providers in flight at once for one tenant, over all its destinations, so
    /// one tenant's hung endpoints leave the other tenants their slots.
    pub max_in_flight_per_tenant: usize,
    /// Calls in flight at once to one destination (a tenant's webhook host, or a tenant's
    /// other channel), so one slow endpoint takes only so many of the sending slots.
    pub max_in_flight_per_destination: usize,
    /// Where persons and providers reach this node (`https://crm.shop.example`): links in
    /// emails (opens, clicks, unsubscribe) and providers' callbacks use it. Empty: the
    /// listening address.
    pub public_url: String,
    /// Internal targets webhooks and providers may call: CIDRs (`10.0.0.0/8`), addresses
    /// (`127.0.0.1`) or host names (`hooks.internal`). Empty (the default): only public
    /// addresses; loopback, private, link-local (cloud metadata), carrier-grade NAT and
    /// unique-local ones are refused, checked on the resolved address.
    pub egress_allow: Vec<String>,
}

impl Default for AutomationOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            frequency_cap: 2,
            quiet_hours: "21-8".into(),
            retry_attempts: 4,
            retry_base_secs: 10,
            send_timeout_secs: 30,
            max_in_flight: 64,
            max_in_flight_per_tenant: 32,
            max_in_flight_per_destination: 16,
            public_url: String::new(),
            egress_allow: Vec::new(),
        }
    }
}

impl AutomationOptions {
    /// The policy these settings give; an error names the bad setting.
    pub fn policy(&self) -> Result<livora_automation::policy::Policy, String> {
        let quiet_hours = match self.quiet_hours.trim() {
            "" => None,
            q => {
                let (a, b) = q.split_once('-').ok_or_else(|| {
                    format!("automation.quiet_hours {q:?}: start-end hours, e.g. \"21-8\"")
                })?;
                let hour = |x: &str| x.trim().parse::<u32>().ok().filter(|h| *h < 24);
                match (hour(a), hour(b)) {
                    (Some(a), Some(b)) => Some((a, b)),
                    _ => return Err(format!("automation.quiet_hours {q:?}: hours are 0-23")),
                }
            }
        };
        Ok(livora_automation::policy::Policy {
            frequency_cap: (self.frequency_cap > 0).then_some(self.frequency_cap),
            cap_window: chrono::Duration::days(1),
            quiet_hours,
            opt_in: Vec::new(),
        })
    }

    /// How many calls to providers run at once, and how long one may take.
    pub fn limits(&self) -> livora_automation::outbox::Limits {
        livora_automation::outbox::Limits {
            in_flight: self.max_in_flight.clamp(1, 10_000),
            per_tenant: self.max_in_flight_per_tenant.clamp(1, 10_000),
            per_destination: self.max_in_flight_per_destination.clamp(1, 10_000),
            send_timeout: std::time::Duration::from_secs(self.send_timeout_secs.clamp(1, 3_600)),
        }
    }

    pub fn retry(&self) -> livora_automation::outbox::Retry {
        livora_automation::outbox::Retry {
            attempts: self.retry_attempts.max(1),
            base: chrono::Duration::seconds(self.retry_base_secs.clamp(1, 86_400) as i64),
        }
    }
}

/// The oldest event time `tenant` keeps (its retention), if it has one.
pub(crate) async fn retention_cutoff(
    state: &AppState,
    tenant: livora_model::TenantId,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    Ok(state
        .store
        .tenant(tenant)
        .await?
        .and_then(|t| cutoff_of(&t)))
}

/// The oldest event time a tenant keeps, if it has a retention.
pub(crate) fn cutoff_of(t: &livora_store::Tenant) -> Option<chrono::DateTime<chrono::Utc>> {
    t.retention_days
        .map(|d| chrono::Utc::now() - chrono::Duration::days(i64::from(d)))
}

/// Hands every tenant's retention to the column store (at start, then every minute, so a
/// change made with `livora admin` reaches a running server).
async fn sync_retention(state: &AppState) {
    let Some(columns) = &state.columns else {
        return;
    };
    match state.store.tenants().await {
        Ok(tenants) => {
            for t in tenants {
                columns.set_retention(t.id, t.retention_days);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read tenant retention"),
    }
}

/// The security settings a server starts with.
pub struct Security {
    pub auth: access::AuthOptions,
    /// The HS256 secret of access tokens (at least 32 bytes).
    pub jwt_secret: Vec<u8>,
    pub audit: Arc<AuditLog>,
    /// The master key service and the personal fields to encrypt; `None` turns encryption
    /// at rest off.
    pub encryption: Option<(
        Arc<dyn livora_store::crypto::Kms>,
        livora_store::crypto::PiiFields,
    )>,
    /// Terminate TLS with this configuration ([`tls::load`]); `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Why a server's state cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Origin(#[from] limits::BadOrigin),
    #[error(transparent)]
    Secret(#[from] access::WeakSecret),
    #[error("{0}")]
    Automation(String),
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
    /// Signs and checks staff access tokens.
    pub jwt: access::Jwt,
    pub auth: access::AuthOptions,
    pub sessions: access::SessionCache,
    /// The hash-chained audit log (shared with `livora admin`).
    pub audit: Arc<AuditLog>,
    /// Encryption at rest of personal fields; `None` when `[privacy] encryption = false`.
    pub protection: Option<privacy::Protection>,
    /// Names people in the audit log when there is no `protection` to seal the name.
    pub subject_tags: livora_store::crypto::SubjectTagger,
    /// Profiles, identity and segments, fed from the log by [`serve`]; `None` on an
    /// ingest-only node.
    pub profiles: Option<Arc<livora_profiles::service::ProfileService>>,
    /// Workflows and journeys, fed from the log by [`serve`] once profiles are there; `None`
    /// on an ingest-only node.
    pub automation: Option<Arc<livora_automation::service::AutomationService>>,
    /// Sends the outbox (started by [`serve`] with the automation service).
    pub sender: Option<Arc<livora_automation::outbox::Sender>>,
    /// Every tenant's channel providers (read by [`serve`] at start).
    pub channels: Option<Arc<livora_channels::config::Directory>>,
    /// Signs and checks tracking and unsubscribe links; hashes addresses.
    pub tracker: Arc<livora_automation::tracking::Tracker>,
    /// Appends the events the node writes itself (workflows' traits, engagement).
    pub sink: Arc<workflows::LogSink>,
    /// Where this node is reached from outside (`[automation] public_url`): tracking links
    /// point there, and providers' callbacks are signed for it.
    pub public_url: Option<String>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The tenants' models and their training schedule.
    pub intel: Arc<intel::IntelState>,
    /// Cleared when shutdown begins, so `/readyz` turns away new traffic.
    pub ready: AtomicBool,
    /// Set when shutdown begins: streams that would not end by themselves (the live feed)
    /// end then, so the graceful shutdown does not wait for them.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        log: EventLog,
        store: Arc<dyn MetadataStore>,
        ingest: IngestOptions,
        limits: &LimitOptions,
        columns: Option<Arc<ColumnStore>>,
        profiles: Option<livora_profiles::snapshot::Options>,
        automation: &AutomationOptions,
        security: Security,
    ) -> Result<Arc<Self>, StateError> {
        let ttl = Duration::from_secs(ingest.key_cache_ttl_secs);
        let protection = security
            .encryption
            .map(|(kms, fields)| privacy::Protection {
                keyring: Arc::new(livora_store::crypto::Keyring::new(store.clone(), kms)),
                fields,
            });
        let profiles = profiles.filter(|_| columns.is_some()).map(|opts| {
            let svc = livora_profiles::service::ProfileService::new(
                store.clone(),
                protection.as_ref().map(|p| p.keyring.clone()),
                Arc::new(livora_model::clock::SystemClock),
                livora_profiles::MergeRules::default(),
                opts.snapshots,
            );
            if let Some(budget) = opts.budget {
                svc.set_budget(budget);
            }
            svc
        });
        let keyring = protection.as_ref().map(|p| p.keyring.clone());
        let public_url = Some(
            automation
                .public_url
                .trim()
                .trim_end_matches('/')
                .to_owned(),
        )
        .filter(|u| !u.is_empty());
        let tracker = Arc::new(livora_automation::tracking::Tracker::new(
            &security.jwt_secret,
            public_url.clone(),
        ));
        // Events the node writes itself (workflows' traits, engagement), protected as
        // ingestion protects them.
        let sink = Arc::new(workflows::LogSink::new(log.clone(), protection.as_ref()));
        let intel = Arc::new(intel::IntelState::default());
        let (automation, sender, channels) = match &profiles {
            Some(people) if automation.enabled => {
                let policy = automation.policy().map_err(StateError::Automation)?;
                let svc = livora_automation::service::AutomationService::new(
                    store.clone(),
                    keyring.clone(),
                    Arc::new(livora_model::clock::SystemClock),
                    Arc::new(intel::WithModels {
                        profiles: people.clone(),
                        intel: intel.clone(),
                    }),
                    sink.clone(),
                );
                let egress = livora_channels::egress::Egress::allowing(&automation.egress_allow)
                    .map_err(|e| StateError::Automation(format!("automation.{e}")))?;
                let channels = livora_channels::config::Directory::new(
                    store.clone(),
                    keyring.clone(),
                    Arc::new(egress),
                );
                let sender = Arc::new(
                    livora_automation::outbox::Sender::new(
                        store.clone(),
                        Arc::new(livora_model::clock::SystemClock),
                        channels.clone(),
                        policy,
                        automation.retry(),
                    )
                    .with_limits(automation.limits())
                    .with_tracker(tracker.clone()),
                );
                (Some(svc), Some(sender), Some(channels))
            }
            _ => (None, None, None),
        };
        Ok(Arc::new(Self {
            log,
            columns,
            profiles,
            automation,
            sender,
            channels,
            tracker,
            sink,
            public_url,
            subject_tags: livora_store::crypto::SubjectTagger::new(&security.jwt_secret),
            jwt: access::Jwt::new(&security.jwt_secret)?,
            auth: security.auth,
            sessions: access::SessionCache::new(ttl),
            audit: security.audit,
            protection,
            tls: security.tls,
            keys: KeyCache::new(store.clone(), ttl),
            store,
            ingest,
            limits: limits::Limits::new(limits)?,
            ready: AtomicBool::new(true),
            closing: tokio::sync::watch::Sender::new(false),
            intel,
        }))
    }
}

use livora_store::Permission as P;

/// Every route: method, path, and what it needs of the caller. [`app`] builds the router from
/// this table (a route cannot exist without its [`Need`]); tests check it against the OpenAPI
/// document and call every route with every kind of credential.
pub const ROUTES: &[(&str, &str, Need)] = &[
    ("POST", "/v1/track", Need::WriteKey),
    ("POST", "/v1/identify", Need::WriteKey),
    ("POST", "/v1/page", Need::WriteKey),
    ("POST", "/v1/screen", Need::WriteKey),
    ("POST", "/v1/group", Need::WriteKey),
    ("POST", "/v1/alias", Need::WriteKey),
    ("POST", "/v1/batch", Need::WriteKey),
    ("POST", "/v1/import", Need::WriteKey),
    ("GET", "/api/v1/events", Need::Permission(P::ViewPii)),
    (
        "GET",
        "/api/v1/dashboards",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "POST",
        "/api/v1/dashboards",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "PUT",
        "/api/v1/dashboards/{id}",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "DELETE",
        "/api/v1/dashboards/{id}",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "GET",
        "/api/v1/events/live",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "GET",
        "/api/v1/events/definitions",
        Need::Permission(P::ReadAnalytics),
    ),
    ("POST", "/api/v1/query", Need::Permission(P::ReadAnalytics)),
    ("POST", "/api/v1/auth/login", Need::Login),
    ("POST", "/api/v1/auth/refresh", Need::Login),
    ("POST", "/api/v1/auth/accept-invitation", Need::Login),
    ("POST", "/api/v1/auth/reset-password", Need::Login),
    ("POST", "/api/v1/auth/logout", Need::Authenticated),
    ("GET", "/api/v1/me", Need::Authenticated),
    ("GET", "/api/v1/members", Need::Permission(P::ManageMembers)),
    (
        "POST",
        "/api/v1/members",
        Need::Permission(P::ManageMembers),
    ),
    (
        "PATCH",
        "/api/v1/members/{user_id}",
        Need::Permission(P::ManageMembers),
    ),
    (
        "DELETE",
        "/api/v1/members/{user_id}",
        Need::Permission(P::ManageMembers),
    ),
    ("GET", "/api/v1/keys", Need::Permission(P::ManageKeys)),
    ("POST", "/api/v1/keys", Need::Permission(P::ManageKeys)),
    (
        "DELETE",
        "/api/v1/keys/{key_id}",
        Need::Permission(P::ManageKeys),
    ),
    ("GET", "/api/v1/audit", Need::Permission(P::ReadAudit)),
    ("GET", "/api/v1/tenant", Need::Authenticated),
    ("PATCH", "/api/v1/tenant", Need::Permission(P::ManageTenant)),
    (
        "GET",
        "/api/v1/people/{id}/export",
        Need::Permission(P::ExportData),
    ),
    (
        "DELETE",
        "/api/v1/people/{id}",
        Need::Permission(P::ErasePerson),
    ),
    (
        "GET",
        "/api/v1/people/{id}/consents",
        Need::Permission(P::ViewPii),
    ),
    (
        "POST",
        "/api/v1/people/{id}/consents",
        Need::Permission(P::ManageConsent),
    ),
    // Masked without `pii.view` (see `people`).
    ("GET", "/api/v1/people", Need::Permission(P::ReadAnalytics)),
    (
        "GET",
        "/api/v1/people/{id}/predictions",
        Need::Permission(P::ViewPii),
    ),
    (
        "GET",
        "/api/v1/people/{id}/recommendations",
        Need::Permission(P::ViewPii),
    ),
    (
        "GET",
        "/api/v1/items/{id}/similar",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "GET",
        "/api/v1/forecasts",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "GET",
        "/api/v1/predictions/summary",
        Need::Permission(P::ReadAnalytics),
    ),
    ("GET", "/api/v1/models", Need::Permission(P::ReadAnalytics)),
    (
        "GET",
        "/api/v1/models/features",
        Need::Permission(P::ExportData),
    ),
    (
        "POST",
        "/api/v1/models/train",
        Need::Permission(P::ManageModels),
    ),
    (
        "GET",
        "/api/v1/models/train/{job_id}",
        Need::Permission(P::ManageModels),
    ),
    (
        "POST",
        "/api/v1/models/{kind}/activate",
        Need::Permission(P::ManageModels),
    ),
    (
        "PUT",
        "/api/v1/models/sentiment/examples",
        Need::Permission(P::ManageModels),
    ),
    (
        "GET",
        "/api/v1/people/{id}",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "GET",
        "/api/v1/people/{id}/timeline",
        Need::Permission(P::ViewPii),
    ),
    (
        "POST",
        "/api/v1/people/{id}/unmerge",
        Need::Permission(P::EditPeople),
    ),
    ("GET", "/api/v1/groups", Need::Permission(P::ViewPii)),
    ("GET", "/api/v1/groups/{id}", Need::Permission(P::ViewPii)),
    (
        "GET",
        "/api/v1/identity/rules",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "PUT",
        "/api/v1/identity/rules",
        Need::Permission(P::ManageTenant),
    ),
    (
        "GET",
        "/api/v1/segments",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "POST",
        "/api/v1/segments",
        Need::Permission(P::EditSegments),
    ),
    (
        "POST",
        "/api/v1/segments/preview",
        Need::Permission(P::EditSegments),
    ),
    (
        "GET",
        "/api/v1/segments/{id}",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "PATCH",
        "/api/v1/segments/{id}",
        Need::Permission(P::EditSegments),
    ),
    (
        "DELETE",
        "/api/v1/segments/{id}",
        Need::Permission(P::EditSegments),
    ),
    (
        "GET",
        "/api/v1/segments/{id}/members",
        Need::Permission(P::ViewPii),
    ),
    (
        "GET",
        "/api/v1/segments/{id}/members.csv",
        Need::Permission(P::ExportData),
    ),
    ("GET", "/api/v1/tags", Need::Permission(P::ReadAnalytics)),
    ("POST", "/api/v1/tags", Need::Permission(P::EditSegments)),
    (
        "PATCH",
        "/api/v1/tags/{id}",
        Need::Permission(P::EditSegments),
    ),
    (
        "DELETE",
        "/api/v1/tags/{id}",
        Need::Permission(P::EditSegments),
    ),
    (
        "GET",
        "/api/v1/workflows",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "POST",
        "/api/v1/workflows",
        Need::Permission(P::EditWorkflows),
    ),
    (
        "GET",
        "/api/v1/workflows/{id}",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "PUT",
        "/api/v1/workflows/{id}",
        Need::Permission(P::EditWorkflows),
    ),
    (
        "DELETE",
        "/api/v1/workflows/{id}",
        Need::Permission(P::EditWorkflows),
    ),
    (
        "GET",
        "/api/v1/workflows/{id}/versions",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "GET",
        "/api/v1/workflows/{id}/metrics",
        Need::Permission(P::ReadAnalytics),
    ),
    (
        "POST",
        "/api/v1/workflows/{id}/enable",
        Need::Permission(P::EnableWorkflows),
    ),
    (
        "POST",
        "/api/v1/workflows/{id}/pause",
        Need::Permission(P::EnableWorkflows),
    ),
    (
        "POST",
        "/api/v1/workflows/{id}/trigger",
        Need::Permission(P::EnableWorkflows),
    ),
    (
        "POST",
        "/api/v1/workflows/{id}/backtest",
        Need::Permission(P::EditWorkflows),
    ),
    (
        "POST",
        "/api/v1/workflows/preview",
        Need::Permission(P::EditWorkflows),
    ),
    (
        "POST",
        "/api/v1/channels/{channel}/test",
        Need::Permission(P::EditWorkflows),
    ),
    (
        "GET",
        "/api/v1/people/{id}/journeys",
        Need::Permission(P::ViewPii),
    ),
    ("GET", "/api/v1/messages", Need::Permission(P::ViewPii)),
    (
        "GET",
        "/api/v1/channels",
        Need::Permission(P::ManageChannels),
    ),
    (
        "PUT",
        "/api/v1/channels/{channel}",
        Need::Permission(P::ManageChannels),
    ),
    (
        "DELETE",
        "/api/v1/channels/{channel}",
        Need::Permission(P::ManageChannels),
    ),
    ("GET", "/t/o/{token}", Need::Signed),
    ("GET", "/t/c/{token}", Need::Signed),
    ("GET", "/t/u/{token}", Need::Signed),
    ("POST", "/t/u/{token}", Need::Signed),
    ("POST", "/hooks/twilio/{tenant}", Need::Signed),
    ("GET", "/hooks/whatsapp/{tenant}", Need::Signed),
    ("POST", "/hooks/whatsapp/{tenant}", Need::Signed),
    ("GET", "/healthz", Need::Public),
    ("GET", "/readyz", Need::Public),
    ("GET", "/metrics", Need::Public),
    ("GET", "/api/openapi.json", Need::Public),
];

type Handler = axum::routing::MethodRouter<Arc<AppState>>;

/// The handler of a route in [`ROUTES`].
fn handler(method: &str, path: &str) -> Handler {
    use axum::routing::{delete, patch, put};
    let single = |kind: EventType| post(move |s, c, h, b| ingest::single(kind, s, c, h, b));
    match (method, path) {
        ("POST", "/v1/track") => single(EventType::Track),
        ("POST", "/v1/identify") => single(EventType::Identify),
        ("POST", "/v1/page") => single(EventType::Page),
        ("POST", "/v1/screen") => single(EventType::Screen),
        ("POST", "/v1/group") => single(EventType::Group),
        ("POST", "/v1/alias") => single(EventType::Alias),
        ("POST", "/v1/batch" | "/v1/import") => post(ingest::batch),
        ("GET", "/api/v1/events") => get(events::list),
        ("GET", "/api/v1/events/live") => get(live::live),
        ("GET", "/api/v1/events/definitions") => get(query::definitions),
        ("GET", "/api/v1/dashboards") => get(dashboards::list),
        ("POST", "/api/v1/dashboards") => post(dashboards::create),
        ("PUT", "/api/v1/dashboards/{id}") => put(dashboards::update),
        ("DELETE", "/api/v1/dashboards/{id}") => delete(dashboards::delete),
        ("POST", "/api/v1/query") => post(query::run),
        ("POST", "/api/v1/auth/login") => post(staff::login),
        ("POST", "/api/v1/auth/refresh") => post(staff::refresh),
        ("POST", "/api/v1/auth/accept-invitation") => post(staff::accept_invitation),
        ("POST", "/api/v1/auth/reset-password") => post(staff::reset_password),
        ("POST", "/api/v1/auth/logout") => post(staff::logout),
        ("GET", "/api/v1/me") => get(staff::me),
        ("GET", "/api/v1/members") => get(staff::members),
        ("POST", "/api/v1/members") => post(staff::invite),
        ("PATCH", "/api/v1/members/{user_id}") => patch(staff::set_role),
        ("DELETE", "/api/v1/members/{user_id}") => delete(staff::remove_member),
        ("GET", "/api/v1/keys") => get(staff::keys),
        ("POST", "/api/v1/keys") => post(staff::create_key),
        ("DELETE", "/api/v1/keys/{key_id}") => delete(staff::revoke_key),
        ("GET", "/api/v1/audit") => get(staff::audit_log),
        ("GET", "/api/v1/tenant") => get(staff::tenant),
        ("PATCH", "/api/v1/tenant") => patch(staff::update_tenant),
        ("GET", "/api/v1/people/{id}/export") => get(privacy::export),
        ("DELETE", "/api/v1/people/{id}") => delete(privacy::erase),
        ("GET", "/api/v1/people/{id}/consents") => get(privacy::consents),
        ("POST", "/api/v1/people/{id}/consents") => post(privacy::record_consent),
        ("GET", "/api/v1/people") => get(people::list),
        ("GET", "/api/v1/people/{id}/predictions") => get(intel::predictions),
        ("GET", "/api/v1/people/{id}/recommendations") => get(intel::recommendations),
        ("GET", "/api/v1/items/{id}/similar") => get(intel::similar),
        ("GET", "/api/v1/forecasts") => get(intel::forecasts),
        ("GET", "/api/v1/predictions/summary") => get(intel::summary),
        ("GET", "/api/v1/models") => get(intel::list),
        ("GET", "/api/v1/models/features") => get(intel::features),
        ("POST", "/api/v1/models/train") => post(intel::train_now),
        ("GET", "/api/v1/models/train/{job_id}") => get(intel::train_job),
        ("POST", "/api/v1/models/{kind}/activate") => post(intel::activate),
        ("PUT", "/api/v1/models/sentiment/examples") => put(intel::sentiment_examples).layer(
            axum::extract::DefaultBodyLimit::max(intel::EXAMPLES_BODY_BYTES),
        ),
        ("GET", "/api/v1/people/{id}") => get(people::get_person),
        ("GET", "/api/v1/people/{id}/timeline") => get(people::timeline),
        ("POST", "/api/v1/people/{id}/unmerge") => post(people::unmerge),
        ("GET", "/api/v1/groups") => get(people::groups),
        ("GET", "/api/v1/groups/{id}") => get(people::group),
        ("GET", "/api/v1/identity/rules") => get(people::merge_rules),
        ("PUT", "/api/v1/identity/rules") => put(people::set_merge_rules),
        ("GET", "/api/v1/segments") => get(segments::list_segments),
        ("POST", "/api/v1/segments") => post(segments::create_segment),
        ("POST", "/api/v1/segments/preview") => post(segments::preview),
        ("GET", "/api/v1/segments/{id}") => get(segments::get_segment),
        ("PATCH", "/api/v1/segments/{id}") => patch(segments::update_segment),
        ("DELETE", "/api/v1/segments/{id}") => delete(segments::delete_segment),
        ("GET", "/api/v1/segments/{id}/members") => get(segments::members),
        ("GET", "/api/v1/segments/{id}/members.csv") => get(segments::members_csv),
        ("GET", "/api/v1/tags") => get(segments::list_tags),
        ("POST", "/api/v1/tags") => post(segments::create_tag),
        ("PATCH", "/api/v1/tags/{id}") => patch(segments::update_tag),
        ("DELETE", "/api/v1/tags/{id}") => delete(segments::delete_tag),
        ("GET", "/api/v1/workflows") => get(workflows::list),
        ("POST", "/api/v1/workflows") => post(workflows::create),
        ("GET", "/api/v1/workflows/{id}") => get(workflows::get),
        ("PUT", "/api/v1/workflows/{id}") => put(workflows::update),
        ("DELETE", "/api/v1/workflows/{id}") => delete(workflows::delete),
        ("GET", "/api/v1/workflows/{id}/versions") => get(workflows::versions),
        ("GET", "/api/v1/workflows/{id}/metrics") => get(workflows::metrics),
        ("POST", "/api/v1/workflows/{id}/enable") => post(workflows::enable),
        ("POST", "/api/v1/workflows/{id}/pause") => post(workflows::pause),
        ("POST", "/api/v1/workflows/{id}/trigger") => post(workflows::trigger),
        ("POST", "/api/v1/workflows/{id}/backtest") => post(workflows::backtest),
        ("POST", "/api/v1/workflows/preview") => post(workflows::preview),
        ("POST", "/api/v1/channels/{channel}/test") => post(workflows::test_send),
        ("GET", "/api/v1/people/{id}/journeys") => get(workflows::person_journeys),
        ("GET", "/api/v1/messages") => get(workflows::messages),
        ("GET", "/api/v1/channels") => get(workflows::list_channels),
        ("PUT", "/api/v1/channels/{channel}") => put(workflows::put_channel),
        ("DELETE", "/api/v1/channels/{channel}") => delete(workflows::delete_channel),
        ("GET", "/t/o/{token}") => get(engagement::open),
        ("GET", "/t/c/{token}") => get(engagement::click),
        ("GET", "/t/u/{token}") => get(engagement::unsubscribe_page),
        ("POST", "/t/u/{token}") => post(engagement::unsubscribe),
        ("POST", "/hooks/twilio/{tenant}") => post(engagement::twilio),
        ("GET", "/hooks/whatsapp/{tenant}") => get(engagement::whatsapp_subscribe),
        ("POST", "/hooks/whatsapp/{tenant}") => post(engagement::whatsapp),
        ("GET", "/healthz") => get(ops::healthz),
        ("GET", "/readyz") => get(ops::readyz),
        ("GET", "/metrics") => get(ops::metrics),
        ("GET", "/api/openapi.json") => get(ops::openapi),
        _ => unreachable!("ROUTES lists a route without a handler: {method} {path}"),
    }
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
    // key is public by design). The other APIs are open to the configured origins only.
    let mut ingestion = Router::new();
    let mut api = Router::new();
    let mut login = Router::new();
    let mut public = Router::new();
    let mut signed = Router::new();
    let mut with_options = std::collections::HashSet::new();
    for &(method, path, need) in ROUTES {
        let guarded = handler(method, path).route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), need),
            access::authorize,
        ));
        let group = match need {
            Need::WriteKey => &mut ingestion,
            Need::Login => &mut login,
            Need::Public => &mut public,
            Need::Signed => &mut signed,
            Need::Authenticated | Need::Permission(_) => &mut api,
        };
        *group = std::mem::take(group).route(path, guarded);
        if !matches!(need, Need::Public | Need::Signed) && with_options.insert(path) {
            *group = std::mem::take(group).route(path, axum::routing::options(preflight));
        }
    }
    let limited = |router: Router<Arc<AppState>>, class| {
        router.layer(axum::middleware::from_fn_with_state(
            (state.clone(), class),
            limits::enforce,
        ))
    };
    let ingestion = limited(ingestion, limits::Class::Ingest).layer(CorsLayer::permissive());
    let api = limited(api, limits::Class::Api).layer(state.limits.api_cors.clone());
    let login = limited(login, limits::Class::Login).layer(state.limits.api_cors.clone());
    // Links in emails and providers' callbacks: limited by address like ingestion.
    let signed = limited(signed, limits::Class::Ingest);
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(ingestion)
        .merge(api)
        .merge(login)
        .merge(public)
        .merge(signed)
        .fallback(dashboard::fallback)
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
    sync_retention(&state).await;
    let retention = tokio::spawn(retention_loop(state.clone()));
    let models = tokio::spawn(intel::schedule_loop(state.clone()));
    let columns = state
        .columns
        .clone()
        .map(|c| tokio::spawn(c.follow(state.log.clone())));
    let profiles = state
        .profiles
        .clone()
        .map(|p| background_follower(p, state.log.clone()))
        .transpose()?;
    let automation = state.automation.clone().map(|svc| {
        let (log, channels, sender) = (
            state.log.clone(),
            state.channels.clone(),
            state.sender.clone(),
        );
        tokio::spawn(async move {
            if let Some(c) = &channels
                && let Err(e) = c.load().await
            {
                tracing::error!(error = %e, "cannot read the channels");
            }
            if let Err(e) = svc.load().await {
                tracing::error!(error = %e, "cannot read the workflows; automation is stopped");
                svc.fail(e.to_string());
                return;
            }
            if let Some(sender) = sender {
                tokio::spawn(sender.run(svc.outbox_changed()));
            }
            svc.follow(log).await;
        })
    });
    let ready_state = state.clone();
    let router = app(state.clone());
    let make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = async move {
        shutdown.await;
        ready_state.ready.store(false, Ordering::Release);
        ready_state.closing.send_replace(true);
        tracing::info!("shutting down: finishing in-flight requests");
    };
    let result = match state.tls.clone() {
        None => {
            axum::serve(listener, make_service)
                .with_graceful_shutdown(graceful)
                .await
        }
        Some(config) => {
            use axum::serve::ListenerExt;
            // `tap_io` gives the TLS listener axum's `ConnectInfo<SocketAddr>`.
            let tls = tls::TlsListener::new(listener, config)?.tap_io(|_| {});
            axum::serve(tls, make_service)
                .with_graceful_shutdown(graceful)
                .await
        }
    };
    retention.abort();
    models.abort();
    if let Some(a) = automation {
        a.abort();
    }
    if let Some(c) = columns {
        c.abort();
    }
    if let Some((stop, thread)) = profiles {
        let _ = stop.send(());
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    let log = state.log.clone();
    let _ = tokio::task::spawn_blocking(move || log.close()).await;
    tracing::info!("event log closed");
    result
}

/// Runs the profiles service on its own thread at a lower CPU priority (nice 10): when the
/// cores are saturated, acknowledging durable events comes first and profiles catch up
/// when the load drops. Stopped by sending on the returned channel.
fn background_follower(
    profiles: Arc<livora_profiles::service::ProfileService>,
    log: EventLog,
) -> std::io::Result<(
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("livora-profiles".into())
        .spawn(move || {
            // SAFETY: setpriority takes no pointers and only changes the scheduling weight
            // of the calling thread (on Linux, `who = 0` with PRIO_PROCESS is the calling
            // thread); a failure leaves the priority as it was.
            #[cfg(target_os = "linux")]
            #[allow(unsafe_code)]
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the profiles runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let follow = profiles.clone().follow(log);
                tokio::pin!(follow);
                tokio::select! {
                    () = &mut follow => {}
                    _ = stopped => {
                        // Between batches, with a last snapshot: a restart then reads
                        // nothing twice.
                        profiles.stop();
                        if tokio::time::timeout(Duration::from_secs(60), follow).await.is_err() {
                            tracing::warn!("profiles did not stop within 60 s");
                        }
                    }
                }
            });
        })?;
    Ok((stop, thread))
}

async fn retention_loop(state: Arc<AppState>) {
    let log = state.log.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        state.limits.forget_idle();
        sync_retention(&state).await;
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.enforce_retention()).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "log retention failed"),
            Err(e) => tracing::warn!(error = %e, "log retention task failed"),
            Ok(Ok(_)) => {}
        }
    }
}
