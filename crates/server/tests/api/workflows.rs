//! Workflows over HTTP, end to end: channels configured through the API (credentials never
//! shown), a workflow created, enabled, triggered by ingested events and by the API, its
//! signed webhook received by a local server, its trait update visible on the profile, the
//! outbox and the journeys readable; versions, pausing and deletion.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::{TestApp, admin_app, call, decode, owner_token};

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

/// The app with a secret key that may read and administer (the tests' caller).
/// The tenant's webhook channel, and a local receiver for its calls.
async fn webhook_channel(app: &TestApp) -> (String, Received) {
    let (url, received) = receiver().await;
    let (status, v) = call(
        app,
        "PUT",
        "/api/v1/channels/webhook",
        Some(json!({"provider": "webhook", "settings": {"secret": SECRET}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    (url, received)
}

/// Waits until the receiver has had `n` calls.
async fn hooks_arrive(received: &Received, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().expect("lock").len() < n {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn workflows_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
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
    hooks_arrive(&received, 1, "the webhook never came").await;
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
    hooks_arrive(&received, 2, "the API-started webhook never came").await;
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

/// A plain SMTP server on 127.0.0.1 that keeps each message's data (the test's mail
/// provider; the channel's own tests use aiosmtpd).
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let keep = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(d) = data.as_mut() {
                        if line == "." {
                            keep.lock().expect("lock").push(std::mem::take(d));
                            data = None;
                            let _ = write.write_all(b"250 queued\r\n").await;
                        } else {
                            d.push_str(line.strip_prefix('.').unwrap_or(&line));
                            d.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(answer).await;
                }
            });
        }
    });
    (port, got)
}

/// Undoes quoted-printable soft breaks and escapes (the HTML part of an email).
fn unquote(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = joined
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first URL in `text` that starts with `prefix`.
fn url_after(text: &str, prefix: &str) -> String {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in {text}"));
    text[at..]
        .split(|c: char| c == '"' || c == '\'' || c.is_whitespace() || c == '<' || c == '>')
        .next()
        .expect("url")
        .to_owned()
}

type Calls = Arc<Mutex<Vec<(String, String)>>>;

/// Twilio's and WhatsApp's APIs on 127.0.0.1: each call is kept (path, body) and answered
/// with the id the real API gives.
async fn providers() -> (String, Calls) {
    let got: Calls = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: Bytes| {
        let keep = keep.clone();
        async move {
            let path = uri.path().to_owned();
            let n = {
                let mut g = keep.lock().expect("lock");
                g.push((path.clone(), String::from_utf8_lossy(&body).into_owned()));
                g.len()
            };
            let answer = if path.contains("/Messages.json") {
                json!({"sid": format!("SM{n}"), "status": "queued"})
            } else {
                json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.{n}")}]})
            };
            (axum::http::StatusCode::CREATED, axum::Json(answer))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), got)
}

const AUTH_TOKEN: &str = "twilio-auth-token-123";
const APP_SECRET: &str = "meta-app-secret-456";

/// Signs a Twilio callback as Twilio does, and posts it.
async fn twilio_callback(app: &TestApp, params: &[(&str, &str)], good: bool) -> (u16, String) {
    let path = format!("/hooks/twilio/{}", app.tenant_id.0);
    let url = format!("{}{path}", app.url);
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let token = if good { AUTH_TOKEN } else { "wrong-token" };
    let sig = livora_channels::twilio::signature(token, &url, &owned);
    let resp = app
        .http
        .post(&url)
        .header("x-twilio-signature", sig)
        .form(&owned)
        .send()
        .await
        .expect("callback");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// Signs a WhatsApp webhook call as Meta does, and posts it.
async fn whatsapp_callback(app: &TestApp, body: &Value, secret: &str) -> (u16, Value) {
    use hmac::Mac;
    let raw = serde_json::to_vec(body).expect("json");
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(&raw);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    decode(
        app.http
            .post(format!("{}/hooks/whatsapp/{}", app.url, app.tenant_id.0))
            .header("x-hub-signature-256", format!("sha256={hex}"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .expect("webhook"),
    )
    .await
}

#[tokio::test]
async fn opens_clicks_unsubscribes_receipts_and_replies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    let (smtp_port, mails) = smtp_sink().await;
    let (api, calls) = providers().await;
    let hooks = format!("{}/hooks/twilio/{}", app.url, app.tenant_id.0);
    for (channel, config) in [
        (
            "email",
            json!({"provider": "smtp", "settings": {"host": "127.0.0.1", "port": smtp_port,
            "security": "none", "from": "Shop <hello@shop.example>"}}),
        ),
        (
            "sms",
            json!({"provider": "twilio", "settings": {"base_url": api, "account_sid": "AC1",
            "auth_token": AUTH_TOKEN, "from": "+15550009999", "status_callback": hooks}}),
        ),
        (
            "whatsapp",
            json!({"provider": "whatsapp-cloud", "settings": {"base_url": api,
            "phone_number_id": "123", "access_token": "wa-token", "app_secret": APP_SECRET,
            "verify_token": "verify-me"}}),
        ),
    ] {
        let (status, v) = call(
            &app,
            "PUT",
            &format!("/api/v1/channels/{channel}"),
            Some(config),
        )
        .await;
        assert_eq!(status, 200, "{channel}: {v}");
        assert!(!v.to_string().contains(APP_SECRET) && !v.to_string().contains("verify-me"));
    }
    let welcome = json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "steps": [
            {"id": "mail", "send": {"channel": "email", "category": "transactional", "template": {
                "subject": "Welcome {{ traits.first_name }}",
                "body": "Hi! Leave: {{ unsubscribe_url }}",
                "html": "<html><body><p>Hi {{ traits.first_name }}</p><a href=\"https://shop.example/new?a=1&amp;b=2\">New</a> <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></body></html>"}}},
            {"id": "text", "send": {"channel": "sms", "category": "transactional", "template": {"body": "Welcome!"}}}
        ]
    });
    let ping = json!({
        "trigger": {"event": {"name": "Pinged"}},
        "steps": [
            {"id": "text", "send": {"channel": "sms", "category": "transactional", "template": {"body": "Ping"}}},
            {"id": "chat", "send": {"channel": "whatsapp", "category": "transactional", "template": {
                "body": "Hi there", "template_name": "hello_world"}}}
        ]
    });
    for (id, def) in [("welcome", welcome), ("ping", ping)] {
        let (status, v) = call(
            &app,
            "POST",
            "/api/v1/workflows",
            Some(json!({"id": id, "name": id, "definition": def})),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        call(
            &app,
            "POST",
            &format!("/api/v1/workflows/{id}/enable"),
            None,
        )
        .await;
    }
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com",
            "phone": "+1 555 010 0000", "first_name": "Ann"}},
        {"type": "track", "userId": "ann", "event": "Signed Up"}
    ]});
    let (status, body) = app.post("/v1/batch", batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    eventually(&app, "/api/v1/messages?status=sent", |v| {
        v["messages"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;

    // The email as the mail server got it: links through Livora, a pixel, an unsubscribe
    // link in the body and the one-click header.
    let mail = mails.lock().expect("lock")[0].clone();
    assert!(
        mail.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{mail}"
    );
    let html = unquote(&mail);
    assert!(!html.contains("https://shop.example/new"), "{html}");
    let base = app.url.clone();
    let click = url_after(&html, &format!("{base}/t/c/"));
    let pixel = url_after(&html, &format!("{base}/t/o/"));
    let unsubscribe = url_after(&html, &format!("{base}/t/u/"));
    assert!(!html.contains("%%livora"), "the marker is replaced: {html}");

    let no_redirect = crate::contract::client(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    );
    let resp = no_redirect.get(&pixel).send().await.expect("pixel");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "image/gif");
    let resp = no_redirect.get(&click).send().await.expect("click");
    assert_eq!(resp.status().as_u16(), 302);
    assert_eq!(
        resp.headers()["location"],
        "https://shop.example/new?a=1&b=2"
    );
    // An altered token leads nowhere.
    let mut forged = click.clone();
    forged.pop();
    forged.push(if click.ends_with('A') { 'B' } else { 'A' });
    let (status, v) = decode(no_redirect.get(&forged).send().await.expect("forged")).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_link")),
        "{v}"
    );
    // Unsubscribing: a page asks, the POST acts.
    let resp = no_redirect.get(&unsubscribe).send().await.expect("page");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.text()
            .await
            .expect("html")
            .contains("<form method=\"post\"")
    );
    let resp = no_redirect
        .post(&unsubscribe)
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .expect("unsubscribe");
    assert_eq!(resp.status().as_u16(), 200);
    let (_, consents) = call(&app, "GET", "/api/v1/people/ann/consents", None).await;
    assert!(
        consents["records"].as_array().is_some_and(|r| r
            .iter()
            .any(|c| c["purpose"] == "email_marketing"
                && c["granted"] == false
                && c["source"] == "unsubscribe_link")),
        "{consents}"
    );

    // Twilio: a status callback signed with the wrong token is refused; the right one
    // marks the SMS delivered.
    let sms = calls
        .lock()
        .expect("lock")
        .iter()
        .find(|(p, _)| p.contains("/Messages.json"))
        .cloned()
        .expect("the SMS reached Twilio");
    assert!(sms.1.contains("StatusCallback="), "{}", sms.1);
    let receipt = [
        ("MessageSid", "SM1"),
        ("MessageStatus", "delivered"),
        ("AccountSid", "AC1"),
    ];
    let (status, body) = twilio_callback(&app, &receipt, false).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("invalid_signature"), "{body}");
    let (status, body) = twilio_callback(&app, &receipt, true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Response>"), "{body}");

    // WhatsApp: the subscription check, a refused forgery, then the person writes START
    // (an opt-in, and the 24-hour window opens).
    let challenge = app
        .http
        .get(format!(
            "{}/hooks/whatsapp/{}?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=c123",
            app.url, app.tenant_id.0
        ))
        .send()
        .await
        .expect("check");
    assert_eq!(challenge.status().as_u16(), 200);
    assert_eq!(challenge.text().await.expect("body"), "c123");
    let (status, _) = decode(
        app.http
            .get(format!(
                "{}/hooks/whatsapp/{}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=c",
                app.url, app.tenant_id.0
            ))
            .send()
            .await
            .expect("check"),
    )
    .await;
    assert_eq!(status, 403);
    let now = chrono::Utc::now().timestamp().to_string();
    let start = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "messages": [{"from": "15550100000", "id": "wamid.in1", "timestamp": now,
            "type": "text", "text": {"body": "START"}}]}}]}]});
    let (status, _) = whatsapp_callback(&app, &start, "not-the-secret").await;
    assert_eq!(status, 403);
    let (status, v) = whatsapp_callback(&app, &start, APP_SECRET).await;
    assert_eq!(status, 200, "{v}");

    // SMS: the person replies STOP; the next SMS is blocked, the WhatsApp message goes as
    // free text inside the window.
    let stop = [
        ("From", "+15550100000"),
        ("To", "+15550009999"),
        ("Body", "Stop"),
        ("MessageSid", "SMin"),
    ];
    let (status, body) = twilio_callback(&app, &stop, true).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(
            "/v1/track",
            json!({"userId": "ann", "event": "Pinged"}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let blocked = eventually(&app, "/api/v1/messages?status=blocked", |v| {
        v["messages"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await;
    assert_eq!(blocked["messages"][0]["channel"], "sms", "{blocked}");
    assert_eq!(
        blocked["messages"][0]["reason"], "opted out of sms",
        "{blocked}"
    );
    eventually(&app, "/api/v1/messages?status=sent", |v| {
        v["messages"].as_array().is_some_and(|m| m.len() == 3)
    })
    .await;
    let chat = calls
        .lock()
        .expect("lock")
        .iter()
        .find(|(p, _)| p.ends_with("/123/messages"))
        .cloned()
        .expect("the WhatsApp message reached the API");
    let chat: Value = serde_json::from_str(&chat.1).expect("json");
    assert_eq!(chat["type"], "text", "inside the window: {chat}");
    assert_eq!(chat["text"]["body"], "Hi there");
    // WhatsApp reports it read.
    let read = json!({"entry": [{"changes": [{"value": {"statuses": [
        {"id": "wamid.3", "status": "read", "timestamp": now, "recipient_id": "15550100000"}]}}]}]});
    let wamid = calls.lock().expect("lock").len();
    let read = serde_json::from_str::<Value>(
        &read
            .to_string()
            .replace("wamid.3", &format!("wamid.{wamid}")),
    )
    .expect("json");
    let (status, _) = whatsapp_callback(&app, &read, APP_SECRET).await;
    assert_eq!(status, 200);

    // Measurement, per step and in all.
    let m = eventually(&app, "/api/v1/workflows/welcome/metrics", |m| {
        m["steps"]["mail"]["clicked"] == 1
    })
    .await;
    let mail = &m["steps"]["mail"];
    assert_eq!(
        (
            &mail["sent"],
            &mail["opened"],
            &mail["clicked"],
            &mail["unsubscribed"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1)),
        "{m}"
    );
    assert_eq!(m["steps"]["text"]["delivered"], 1, "{m}");
    assert_eq!(m["engagement"]["opened"], 1, "{m}");
    let (_, m) = call(&app, "GET", "/api/v1/workflows/ping/metrics", None).await;
    assert_eq!(m["steps"]["chat"]["opened"], 1, "{m}");
    assert_eq!(m["steps"]["chat"]["delivered"], 1, "{m}");
    assert_eq!(m["steps"]["text"]["blocked"], 1, "{m}");

    // The engagement is in the person's events, for goals and segments.
    eventually(&app, "/api/v1/people/ann/timeline", |v| {
        let s = v.to_string();
        [
            "Email Opened",
            "Email Link Clicked",
            "Unsubscribed",
            "Message Received",
            // Scored as it arrived.
            "sentiment_label",
        ]
        .iter()
        .all(|e| s.contains(e))
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn backtests_previews_and_test_sends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    // January's history: Ann leaves her cart, Bob orders within the hour.
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com", "first_name": "Ann"},
            "timestamp": "2026-01-09T09:00:00Z"},
        {"type": "identify", "userId": "bob", "traits": {"email": "bob@example.com", "first_name": "Bob"},
            "timestamp": "2026-01-09T09:00:00Z"},
        {"type": "track", "userId": "ann", "event": "Product Added",
            "properties": {"cart_id": "c1", "name": "Lamp"}, "timestamp": "2026-01-10T10:00:00Z"},
        {"type": "track", "userId": "bob", "event": "Product Added",
            "properties": {"cart_id": "c2", "name": "Rug"}, "timestamp": "2026-01-11T10:00:00Z"},
        {"type": "track", "userId": "bob", "event": "Order Completed",
            "properties": {"cart_id": "c2"}, "timestamp": "2026-01-11T10:20:00Z"},
        {"type": "track", "userId": "ann", "event": "Product Added",
            "properties": {"cart_id": "c3"}, "timestamp": "2026-03-01T10:00:00Z"}
    ]});
    let (status, body) = app.post("/v1/batch", batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    eventually(&app, "/api/v1/people/bob", |v| {
        v["traits"]["first_name"] == "Bob"
    })
    .await;
    let cart = |minutes: u32| {
        json!({
            "trigger": {"event": {"name": "Product Added"}},
            "goal": {"event": "Order Completed", "same": ["cart_id"]},
            "steps": [
                {"id": "wait", "wait_for": {"event": "Order Completed", "same": ["cart_id"], "timeout_minutes": minutes}},
                {"id": "remind", "send": {"channel": "email", "template": {
                    "subject": "{{ traits.first_name }}, your {{ event.properties.name }} is waiting", "body": "."}}}
            ]
        })
    };
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"id": "cart", "name": "Cart", "definition": cart(60)})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    // The saved version over January: one reminder, to Ann, an hour after her cart.
    let range = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"});
    let (status, r) = call(
        &app,
        "POST",
        "/api/v1/workflows/cart/backtest",
        Some(range.clone()),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["version"], 1, "{r}");
    assert_eq!(r["events"], 5, "{r}"); // the identifies too
    assert_eq!(r["journeys"]["entered"], 2, "{r}");
    assert_eq!(r["journeys"]["converted"], 1, "{r}");
    assert_eq!(r["message_count"], 1, "{r}");
    let m = &r["messages"][0];
    assert_eq!(
        (
            m["person"].as_str(),
            m["step"].as_str(),
            m["outcome"].as_str()
        ),
        (Some("u:ann"), Some("remind"), Some("send")),
        "{r}"
    );
    assert_eq!(m["at"], "2026-01-10T11:00:00Z", "{r}");
    assert_eq!(m["content"]["subject"], "Ann, your Lamp is waiting");
    // A draft with a longer wait: Bob's order would still come in time.
    let mut draft = range.clone();
    draft["definition"] = cart(180);
    let (status, r) = call(&app, "POST", "/api/v1/workflows/cart/backtest", Some(draft)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["version"], Value::Null);
    assert_eq!(r["messages"][0]["at"], "2026-01-10T13:00:00Z", "{r}");
    // Nothing was sent or stored.
    let (_, v) = call(&app, "GET", "/api/v1/messages", None).await;
    assert_eq!(v["messages"], json!([]));
    // Bad ranges and bodies name their part.
    for (body, path) in [
        (
            json!({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
            "to",
        ),
        (
            json!({"from": "yesterday", "to": "2026-01-01T00:00:00Z"}),
            "from",
        ),
        (
            json!({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
            "to",
        ),
        (
            json!({"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "version": 1, "definition": cart(5)}),
            "definition",
        ),
    ] {
        let (status, v) = call(&app, "POST", "/api/v1/workflows/cart/backtest", Some(body)).await;
        assert_eq!((status, v["path"].as_str()), (400, Some(path)), "{v}");
    }
    let (status, _) = call(&app, "POST", "/api/v1/workflows/nope/backtest", Some(range)).await;
    assert_eq!(status, 404);

    // Preview with a real person's data: a template, or a saved step.
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows/preview",
        Some(json!({"template": {"subject": "Hi {{ traits.first_name }}", "body": "{{ event.properties.name }}"},
            "person": "ann", "event": {"event": "Product Added", "properties": {"name": "Lamp"}}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"], json!({"subject": "Hi Ann", "body": "Lamp"}));
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows/preview",
        Some(json!({"workflow": "cart", "step": "remind", "person": "u:bob"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"]["subject"], "Bob, your  is waiting");
    for (body, code, status_expected) in [
        (
            json!({"template": {"subject": "{{ oops"}, "person": "ann"}),
            "invalid_definition",
            400,
        ),
        (
            json!({"template": {"subject": "x"}, "person": "nobody"}),
            "not_found",
            404,
        ),
        (
            json!({"workflow": "cart", "step": "wait", "person": "ann"}),
            "not_found",
            404,
        ),
        (json!({"person": "ann"}), "invalid_request", 400),
        // A render may not build values or output over its limits (issue 22: 1.3 GB).
        (
            json!({"template": {"body": "{% set a = \"x\" * 100000000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c|length }}"}, "person": "ann"}),
            "template_too_large",
            400,
        ),
    ] {
        let (status, v) = call(&app, "POST", "/api/v1/workflows/preview", Some(body)).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (status_expected, Some(code)),
            "{v}"
        );
    }

    // A test send through the configured provider, once; a provider that fails says so.
    let (hook_url, received) = webhook_channel(&app).await;
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/channels/webhook/test",
        Some(json!({"to": hook_url, "template": {"body": "{\"hello\": \"{{ traits.first_name }}\"}"}, "person": "ann"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["provider"], "webhook");
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, "{\"hello\": \"Ann\"}");
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/channels/webhook/test",
        Some(
            json!({"to": "http://127.0.0.1:9/closed", "template": {"body": "x"}, "person": "ann"}),
        ),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (502, Some("provider_failed")),
        "{v}"
    );
    // Internal addresses the allowlist does not name are refused (SSRF), before any call.
    for to in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://127.0.0.2:9/",
    ] {
        let (status, v) = call(
            &app,
            "POST",
            "/api/v1/channels/webhook/test",
            Some(json!({"to": to, "template": {"body": "x"}, "person": "ann"})),
        )
        .await;
        assert_eq!(status, 502, "{v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains("refused")),
            "{to}: {v}"
        );
    }
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/channels/sms/test",
        Some(json!({"to": "+15550100000", "template": {"body": "x"}, "person": "ann"})),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_branch_on_behaviour_is_kept_as_a_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    let (hook_url, received) = webhook_channel(&app).await;
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro"}},
        {"type": "identify", "userId": "bob", "traits": {"plan": "pro"}},
        {"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": yesterday}
    ]});
    let (status, body) = app.post("/v1/batch", batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    eventually(&app, "/api/v1/people/bob", |v| v["traits"]["plan"] == "pro").await;
    let hook = |kind: &str| json!({"webhook": {"url": hook_url, "body": format!("{{\"who\": \"{{{{ person }}}}\", \"kind\": \"{kind}\"}}")}});
    let mut thanks = hook("buyer");
    thanks["id"] = json!("thanks");
    thanks["next"] = json!("end");
    let mut nudge = hook("browser");
    nudge["id"] = json!("nudge");
    let definition = json!({
        "trigger": {"event": {"name": "Visited"}},
        "steps": [
            {"id": "buyer", "branch": {"if": {"and": [
                {"trait": {"name": "plan", "op": "equals", "value": "pro"}},
                {"performed": {"event": "Order Completed", "within_days": 30}}]}, "else": "nudge"}},
            thanks, nudge,
            {"id": "end", "exit": {}}
        ]
    });
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"id": "back", "name": "Welcome back", "definition": definition})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    // The condition is a segment the profiles engine keeps.
    let seg = eventually(&app, "/api/v1/segments/wf-back-buyer", |v| v["size"] == 1).await;
    assert!(
        seg["description"]
            .as_str()
            .is_some_and(|d| d.contains("workflow back")),
        "{seg}"
    );
    call(&app, "POST", "/api/v1/workflows/back/enable", None).await;
    let batch = json!({"batch": [
        {"type": "track", "userId": "ann", "event": "Visited"},
        {"type": "track", "userId": "bob", "event": "Visited"}
    ]});
    let (status, body) = app.post("/v1/batch", batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    hooks_arrive(&received, 2, "the webhooks never came").await;
    let mut got: Vec<Value> = received
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, b)| serde_json::from_str(b).expect("json"))
        .collect();
    got.sort_by_key(|v| v["who"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        [
            json!({"who": "u:ann", "kind": "buyer"}),
            json!({"who": "u:bob", "kind": "browser"})
        ]
    );
    // Deleting the workflow deletes its segment.
    call(&app, "POST", "/api/v1/workflows/back/pause", None).await;
    let (status, v) = call(&app, "DELETE", "/api/v1/workflows/back", None).await;
    assert_eq!(status, 204, "{v}");
    let (status, _) = call(&app, "GET", "/api/v1/segments/wf-back-buyer", None).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn erasing_a_person_stops_their_journeys_and_scrubs_their_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    let (hook_url, received) = webhook_channel(&app).await;
    let definition = json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "steps": [
            {"id": "now", "webhook": {"url": hook_url, "body": "{\"hi\": \"{{ traits.first_name }}\"}"}},
            {"id": "later", "delay": {"days": 1}},
            {"id": "again", "webhook": {"url": hook_url}}
        ]
    });
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"id": "drip", "name": "Drip", "definition": definition})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    call(&app, "POST", "/api/v1/workflows/drip/enable", None).await;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"first_name": "Ann", "email": "ann@example.com"}},
        {"type": "track", "userId": "ann", "event": "Signed Up"}
    ]});
    let (status, body) = app.post("/v1/batch", batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    eventually(&app, "/api/v1/messages?status=sent", |v| {
        v["messages"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    assert_eq!(received.lock().expect("lock").len(), 1);
    let waiting = |app: &TestApp| {
        let url = format!("{}/readyz", app.url);
        let http = app.http.clone();
        async move {
            let v: Value = http
                .get(url)
                .send()
                .await
                .expect("readyz")
                .json()
                .await
                .expect("json");
            v["waiting_journeys"].as_u64()
        }
    };
    assert_eq!(waiting(&app).await, Some(1));

    let (status, v) = call(&app, "DELETE", "/api/v1/people/ann", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["journeys_erased"].as_u64(), v["messages_erased"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    // The waiting journey is gone: no timer, nothing left under her id.
    assert_eq!(waiting(&app).await, Some(0));
    let (_, v) = call(&app, "GET", "/api/v1/people/ann/journeys", None).await;
    assert_eq!(v["journeys"], json!([]), "{v}");
    let (_, v) = call(&app, "GET", "/api/v1/messages", None).await;
    let m = &v["messages"][0];
    assert_eq!(
        (m["person"].as_str(), &m["to"], &m["content"]),
        (Some("erased"), &Value::Null, &json!({})),
        "{v}"
    );
    assert!(!v.to_string().contains("Ann"), "{v}");
    // The workflow's counts stay.
    let (_, m) = call(&app, "GET", "/api/v1/workflows/drip/metrics", None).await;
    assert_eq!(m["journeys"]["entered"], 1, "{m}");
    assert_eq!(m["steps"]["now"]["sent"], 1, "{m}");
    app.stop().await;
}

/// A tenant's own delivery policy: set and cleared through `PATCH /api/v1/tenant`, checked
/// by the outbox (email marketing only to persons who opted in) and refused when wrong.
#[tokio::test]
async fn a_tenants_delivery_policy_asks_for_an_opt_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = admin_app(dir.path()).await;
    app.secret_key = owner_token(&app).await;
    let (smtp_port, mails) = smtp_sink().await;
    let (status, v) = call(
        &app,
        "PUT",
        "/api/v1/channels/email",
        Some(
            json!({"provider": "smtp", "settings": {"host": "127.0.0.1", "port": smtp_port,
            "security": "none", "from": "Shop <hello@shop.example>"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let (status, t) = call(&app, "GET", "/api/v1/tenant", None).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["delivery_policy"], Value::Null, "{t}");
    assert!(t["node_delivery_policy"].is_object(), "{t}");
    for (bad, field) in [
        (
            json!({"frequency_cap": 0, "quiet_hours": null}),
            "delivery_policy.frequency_cap",
        ),
        (
            json!({"frequency_cap": null, "quiet_hours": {"start": 8, "end": 8}}),
            "delivery_policy.quiet_hours",
        ),
        (
            json!({"frequency_cap": null, "quiet_hours": null, "opt_in": ["fax"]}),
            "delivery_policy.opt_in",
        ),
    ] {
        let (status, v) = call(
            &app,
            "PATCH",
            "/api/v1/tenant",
            Some(json!({"delivery_policy": bad})),
        )
        .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let (status, v) = call(&app, "PATCH", "/api/v1/tenant", Some(json!({}))).await;
    assert_eq!(status, 400, "nothing to change: {v}");
    let (_, t) = call(&app, "GET", "/api/v1/tenant", None).await;
    assert_eq!(
        t["delivery_policy"],
        Value::Null,
        "refused changes change nothing: {t}"
    );

    let policy = json!({"frequency_cap": 5, "quiet_hours": null, "opt_in": ["email"]});
    let (status, t) = call(
        &app,
        "PATCH",
        "/api/v1/tenant",
        Some(json!({"delivery_policy": policy})),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["delivery_policy"], policy, "{t}");
    assert_eq!(
        t["retention_days"],
        Value::Null,
        "a field left out stays as it was: {t}"
    );

    let promo = json!({
        "trigger": {"event": {"name": "Browsed"}},
        "steps": [{"id": "mail", "send": {"channel": "email", "category": "marketing",
            "template": {"subject": "Sale", "body": "20% off"}}}]
    });
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"id": "promo", "name": "Promo", "definition": promo})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    call(&app, "POST", "/api/v1/workflows/promo/enable", None).await;
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/people/bob/consents",
        Some(json!({"purpose": "email_marketing", "granted": true, "source": "signup form"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let batch = json!({"batch": [
        {"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com"}},
        {"type": "identify", "userId": "bob", "traits": {"email": "bob@example.com"}},
        {"type": "track", "userId": "ann", "event": "Browsed"},
        {"type": "track", "userId": "bob", "event": "Browsed"}
    ]});
    let (status, body) = app.post("/v1/batch", batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let blocked = eventually(&app, "/api/v1/messages?status=blocked", |v| {
        v["messages"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await;
    assert_eq!(
        blocked["messages"][0]["reason"], "no email marketing opt-in",
        "{blocked}"
    );
    eventually(&app, "/api/v1/messages?status=sent", |v| {
        v["messages"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    let mail = mails.lock().expect("lock").concat();
    assert!(
        mail.contains("bob@example.com") && !mail.contains("ann@example.com"),
        "{mail}"
    );

    let (status, t) = call(
        &app,
        "PATCH",
        "/api/v1/tenant",
        Some(json!({"delivery_policy": null})),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["delivery_policy"], Value::Null, "back to the node's: {t}");
    let (_, audit) = call(&app, "GET", "/api/v1/audit", None).await;
    assert!(
        audit.to_string().contains("tenant.delivery_policy"),
        "{audit}"
    );
}
