//! Workflows over HTTP, end to end: channels configured through the API (credentials never
//! shown), a workflow created, enabled, triggered by ingested events and by the API, its
//! signed webhook received by a local server, its trait update visible on the profile, the
//! outbox and the journeys readable; versions, pausing and deletion.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use livora_store::Scope;

use crate::helpers::{TestApp, decode, spawn_app};

async fn call(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", app.url);
    let req = match method {
        "GET" => app.http.get(url),
        "POST" => app.http.post(url),
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

async fn eventually(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = call(app, "GET", path, None).await;
        if status == 200 && done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A local webhook receiver on 127.0.0.1.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let keep = keep.clone();
        async move {
            keep.lock()
                .expect("lock")
                .push((headers, String::from_utf8_lossy(&body).into_owned()));
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hooks/welcome"), got)
}

const SECRET: &str = "whsec_0123456789abcdef";

#[tokio::test]
async fn workflows_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = spawn_app(dir.path()).await;
    app.secret_key = app
        .store
        .create_key_scoped(app.tenant_id, &[Scope::Read, Scope::Admin])
        .await
        .expect("key")
        .secret;
    let (hook_url, received) = receiver().await;

    // Channels: checked, stored, never echoed.
    let (status, v) = call(
        &app,
        "PUT",
        "/api/v1/channels/webhook",
        Some(json!({"provider": "webhook", "settings": {"secret": SECRET}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(!v.to_string().contains(SECRET), "{v}");
    let (_, v) = call(&app, "GET", "/api/v1/channels", None).await;
    assert_eq!(v["channels"]["webhook"]["settings"]["secret"], "(set)");
    let (status, v) = call(
        &app,
        "PUT",
        "/api/v1/channels/email",
        Some(json!({"provider": "twilio", "settings": {}})),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (status, _) = call(
        &app,
        "PUT",
        "/api/v1/channels/fax",
        Some(json!({"provider": "x", "settings": {}})),
    )
    .await;
    assert_eq!(status, 404);
    let audit = app.store.channels(app.tenant_id).await.expect("channels");
    assert!(audit[0].sealed, "stored sealed");
    assert!(!String::from_utf8_lossy(&audit[0].config).contains(SECRET));

    // An invalid definition names the offending part.
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"name": "Bad", "definition": {
            "trigger": {"event": {"name": "Signed Up"}},
            "steps": [{"id": "w", "wait_for": {"event": "x", "timeout_minutes": 0}}]
        }})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], "invalid_definition");
    assert_eq!(v["path"], "definition.steps[0].wait_for.timeout_minutes");
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"name": "Bad", "definition": {
            "trigger": {"event": {"name": "Signed Up"}},
            "steps": [{"id": "w", "webhook": {"url": "http://x", "body": "{{ unclosed"}}]
        }})),
    )
    .await;
    assert_eq!(
        (status, v["path"].as_str()),
        (400, Some("definition.steps[0].webhook.body")),
        "{v}"
    );

    // A workflow: paused when created, then enabled.
    let definition = json!({
        "trigger": {"event": {"name": "Signed Up", "where": [{"property": "source", "op": "equals", "value": "ads"}]}},
        "steps": [
            {"id": "hook", "webhook": {"url": hook_url, "body": "{\"user\": \"{{ person }}\", \"plan\": \"{{ traits.plan }}\"}"}},
            {"id": "mark", "update_trait": {"name": "welcomed", "value": true}}
        ]
    });
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"id": "welcome", "name": "Welcome", "definition": definition})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["latest_version"].as_u64()),
        (Some("paused"), Some(1))
    );
    let (status, v) = call(&app, "POST", "/api/v1/workflows/welcome/enable", None).await;
    assert_eq!(
        (status, v["enabled_version"].as_u64()),
        (200, Some(1)),
        "{v}"
    );

    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com", "plan": "pro"}},
        {"type": "track", "userId": "ann", "event": "Signed Up", "properties": {"source": "ads"}},
        {"type": "identify", "userId": "bob", "traits": {"plan": "free"}},
        {"type": "track", "userId": "bob", "event": "Signed Up", "properties": {"source": "organic"}}
    ]});
    let (status, body) = app.post("/v1/batch", batch.to_string()).await;
    assert_eq!(status, 200, "{body}");

    // The webhook arrives once, signed, with the idempotency key.
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().expect("lock").is_empty() {
        assert!(Instant::now() < deadline, "the webhook never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = eventually(&app, "/api/v1/messages?status=sent", |v| {
        v["messages"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await;
    assert_eq!(
        sent["messages"].as_array().map(Vec::len),
        Some(1),
        "only ann's sign-up matched"
    );
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    let body: Value = serde_json::from_str(body).expect("json body");
    assert_eq!(body, json!({"user": "u:ann", "plan": "pro"}));
    let sig = headers
        .get("x-livora-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signed");
    assert!(livora_channels::webhook::verify(
        SECRET.as_bytes(),
        sig,
        &got[0].1,
        chrono::Utc::now().timestamp(),
        300
    ));
    assert_eq!(
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()),
        sent["messages"][0]["key"].as_str()
    );

    // The trait the workflow set reaches the profile; the journey ended.
    eventually(&app, "/api/v1/people/ann", |v| {
        v["traits"]["welcomed"] == json!(true)
    })
    .await;
    let (_, v) = call(&app, "GET", "/api/v1/people/ann/journeys", None).await;
    assert_eq!(v["journeys"][0]["outcome"], "completed", "{v}");
    assert_eq!(v["journeys"][0]["path"], json!(["hook", "mark"]));
    let (_, v) = call(&app, "GET", "/api/v1/people/bob/journeys", None).await;
    assert_eq!(v["journeys"], json!([]));

    // Measurement: one journey entered, completed; per step what ran and what was sent.
    let (status, m) = call(&app, "GET", "/api/v1/workflows/welcome/metrics", None).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["journeys"]["entered"], 1, "{m}");
    assert_eq!(m["journeys"]["completed"], 1, "{m}");
    assert_eq!(m["steps"]["hook"]["entered"], 1, "{m}");
    assert_eq!(m["steps"]["hook"]["sent"], 1, "{m}");
    assert_eq!(m["steps"]["mark"]["entered"], 1, "{m}");

    // Editing makes a version; the enabled workflow moves to it.
    let (status, v) = call(
        &app,
        "PUT",
        "/api/v1/workflows/welcome",
        Some(json!({"definition": definition, "name": "Welcome v2"})),
    )
    .await;
    assert_eq!(
        (
            status,
            v["latest_version"].as_u64(),
            v["enabled_version"].as_u64()
        ),
        (200, Some(2), Some(2)),
        "{v}"
    );
    let (_, v) = call(&app, "GET", "/api/v1/workflows/welcome/versions", None).await;
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(2));

    // Started through the API; the same idempotency key starts nothing twice.
    let api_flow = json!({"trigger": {"api": {}},
        "steps": [{"id": "hook", "webhook": {"url": hook_url}}]});
    let (status, _) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"id": "api-flow", "name": "API", "definition": api_flow})),
    )
    .await;
    assert_eq!(status, 201);
    let trigger = json!({"user_id": "ann", "data": {"order": "A-1"}, "idempotency_key": "req-1"});
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows/api-flow/trigger",
        Some(trigger.clone()),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("conflict")),
        "paused: {v}"
    );
    call(&app, "POST", "/api/v1/workflows/api-flow/enable", None).await;
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows/api-flow/trigger",
        Some(trigger.clone()),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let (status, _) = call(
        &app,
        "POST",
        "/api/v1/workflows/api-flow/trigger",
        Some(trigger),
    )
    .await;
    assert_eq!(status, 404, "the same key again");
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().expect("lock").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the API-started webhook never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body: Value = serde_json::from_str(&received.lock().expect("lock")[1].1).expect("json");
    assert_eq!(body["event"]["properties"]["order"], "A-1", "{body}");

    // Deleting needs a paused workflow.
    let (status, _) = call(&app, "DELETE", "/api/v1/workflows/welcome", None).await;
    assert_eq!(status, 409);
    call(&app, "POST", "/api/v1/workflows/welcome/pause", None).await;
    let (status, _) = call(&app, "DELETE", "/api/v1/workflows/welcome", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, "GET", "/api/v1/workflows/welcome", None).await;
    assert_eq!(status, 404);
    let (_, v) = call(&app, "GET", "/api/v1/messages?status=nonsense", None).await;
    assert_eq!(v["code"], "invalid_request");
    app.stop().await;
}
