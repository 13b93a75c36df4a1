//! `spawn_app`: a real server on 127.0.0.1:0 over a temporary data directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use livora_log::{EventLog, LogOptions};
use livora_model::Currency;
use livora_model::TenantId;
use livora_server::{AppState, AuthOptions, IngestOptions, LimitOptions, Security};
use livora_store::{KeyKind, MetadataStore, NewTenant, Scope, SqliteStore};
use serde_json::{Value, json};

/// The access-token secret of test servers (tests forge tokens with it and with others).
pub const TEST_JWT_SECRET: &[u8] = b"test-secret-test-secret-test-secret-0123";

/// The master key of test servers (encryption at rest is on in every API test).
pub const TEST_MASTER_KEY: [u8; 32] = [42; 32];

pub struct TestApp {
    pub url: String,
    pub write_key: String,
    pub secret_key: String,
    pub write_key_id: String,
    pub tenant_id: TenantId,
    pub data_dir: std::path::PathBuf,
    pub store: Arc<dyn MetadataStore>,
    pub log: EventLog,
    /// Every response it returns has been checked against the OpenAPI document.
    pub http: crate::contract::Http,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app(dir: &Path) -> TestApp {
    spawn_app_with(
        dir,
        IngestOptions {
            key_cache_ttl_secs: 0,
            ..IngestOptions::default()
        },
    )
    .await
}

/// Opens (or reopens) the app over `dir`; the first tenant there is reused, with new keys.
pub async fn spawn_app_with(dir: &Path, ingest: IngestOptions) -> TestApp {
    spawn_app_limited(dir, ingest, &LimitOptions::default()).await
}

/// [`spawn_app_with`], with the given rate limits.
pub async fn spawn_app_limited(
    dir: &Path,
    ingest: IngestOptions,
    limits: &LimitOptions,
) -> TestApp {
    spawn_app_full(dir, ingest, limits, AuthOptions::default()).await
}

/// [`spawn_app_limited`], with the given staff authentication settings.
pub async fn spawn_app_full(
    dir: &Path,
    ingest: IngestOptions,
    limits: &LimitOptions,
    auth: AuthOptions,
) -> TestApp {
    spawn_app_inner(dir, ingest, limits, auth, None).await
}

/// [`spawn_app_full`], serving TLS with `tls` when given.
pub async fn spawn_app_inner(
    dir: &Path,
    ingest: IngestOptions,
    limits: &LimitOptions,
    auth: AuthOptions,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> TestApp {
    let store: Arc<dyn MetadataStore> = Arc::new(
        SqliteStore::open(&dir.join("livora.db"))
            .await
            .expect("store opens"),
    );
    let tenant = match store.tenants().await.expect("tenants").into_iter().next() {
        Some(t) => t,
        None => store
            .create_tenant(NewTenant {
                name: "Test Shop".into(),
                time_zone: "UTC".into(),
                currency: Currency::parse("USD").expect("currency"),
            })
            .await
            .expect("tenant"),
    };
    let write = store
        .create_key(tenant.id, KeyKind::Write)
        .await
        .expect("key");
    let secret = store
        .create_key(tenant.id, KeyKind::Secret)
        .await
        .expect("key");
    let log_dir = dir.join("log");
    let log = tokio::task::spawn_blocking(move || EventLog::open(LogOptions::new(log_dir)))
        .await
        .expect("join")
        .expect("log opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = AppState::new(
        log.clone(),
        store.clone(),
        ingest,
        limits,
        Some(livora_columnar::ColumnStore::new()),
        Some(livora_profiles::snapshot::Options {
            snapshots: Some(livora_profiles::snapshot::Snapshots {
                dir: dir.join("profiles"),
                every: Duration::from_secs(300),
            }),
            budget: None,
        }),
        &livora_server::AutomationOptions {
            public_url: format!("{scheme}://{addr}"),
            // The tests' receivers and fake providers listen on loopback: allowed explicitly.
            egress_allow: vec!["127.0.0.1".into()],
            ..livora_server::AutomationOptions::default()
        },
        Security {
            auth,
            jwt_secret: TEST_JWT_SECRET.to_vec(),
            audit: Arc::new(
                livora_store::audit::AuditLog::open(&dir.join("audit.jsonl")).expect("audit log"),
            ),
            encryption: Some((
                Arc::new(livora_store::crypto::LocalKms::new(&TEST_MASTER_KEY, &[]).expect("kms")),
                livora_store::crypto::PiiFields::default(),
            )),
            tls,
        },
    )
    .expect("state");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(livora_server::serve(listener, state, async {
        let _ = rx.await;
    }));
    TestApp {
        url: format!("http://{addr}"),
        write_key: write.secret,
        secret_key: secret.secret,
        write_key_id: write.key.id,
        tenant_id: tenant.id,
        data_dir: dir.to_owned(),
        store,
        log,
        http: crate::contract::client(reqwest::Client::new()),
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// Graceful shutdown: in-flight requests finish, the log writer stops.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), s)
                .await
                .expect("server stops in time")
                .expect("join")
                .expect("serve ok");
        }
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .basic_auth(&self.write_key, Some(""))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        decode(resp).await
    }

    pub async fn get_events(&self, query: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/api/v1/events?{query}", self.url))
            .bearer_auth(&self.secret_key)
            .send()
            .await
            .expect("request");
        decode(resp).await
    }

    /// A secret key of a second tenant, to check that nothing crosses tenants.
    pub async fn other_tenant_secret(&self) -> String {
        let other = self
            .store
            .create_tenant(NewTenant {
                name: "Other".into(),
                time_zone: "UTC".into(),
                currency: Currency::parse("EUR").expect("currency"),
            })
            .await
            .expect("tenant");
        self.store
            .create_key(other.id, KeyKind::Secret)
            .await
            .expect("key")
            .secret
    }

    /// Every stored event of the tenant, newest first, following cursors.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let q = if cursor.is_empty() {
                "limit=1000".to_owned()
            } else {
                format!("limit=1000&cursor={cursor}")
            };
            let (status, page) = self.get_events(&q).await;
            assert_eq!(status, 200, "{page}");
            out.extend(page["events"].as_array().expect("events").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => return out,
            }
        }
    }
}

pub async fn decode(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Calls the API with the app's secret key.
pub async fn call(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", app.url);
    let req = match method {
        "GET" => app.http.get(url),
        "POST" => app.http.post(url),
        "PATCH" => app.http.patch(url),
        "PUT" => app.http.put(url),
        "DELETE" => app.http.delete(url),
        other => panic!("method {other}"),
    };
    let req = req.bearer_auth(&app.secret_key);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    decode(req.send().await.expect("request")).await
}

/// The app, called with a key that reads and administers (segments, un-merges, exports).
pub async fn admin_app(dir: &std::path::Path) -> TestApp {
    let mut app = spawn_app(dir).await;
    app.secret_key = app
        .store
        .create_key_scoped(app.tenant_id, &[Scope::Read, Scope::Admin])
        .await
        .expect("key")
        .secret;
    app
}

/// An owner's access token in the app's tenant.
pub async fn owner_token(app: &TestApp) -> String {
    staff_token(app, "owner@shop.example", livora_store::Role::Owner).await
}

/// The access token of a new staff member of the app's tenant with `role`.
pub async fn staff_token(app: &TestApp, email: &str, role: livora_store::Role) -> String {
    let store = app.store.as_ref();
    let user = store.create_user(email, "Staff").await.expect("user");
    let hash = livora_store::accounts::hash_password("correct horse battery").expect("hash");
    store
        .set_password_hash(&user.id, &hash)
        .await
        .expect("password");
    store
        .set_role(app.tenant_id, &user.id, role)
        .await
        .expect("role");
    let (status, v) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": email, "password": "correct horse battery"}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["access_token"].as_str().expect("token").to_owned()
}
