//! Crash test of the automation engine: thousands of journeys waiting on timers, messages
//! in flight to a slow local provider, and the real `livora serve` killed with SIGKILL again
//! and again. After every restart and at the end, each expected message reached the
//! provider, and the provider (which records idempotency keys, as real ones do) accepted
//! each exactly once; no message went to anyone else. The outbox, read a page at a time,
//! shows every message sent, each with at least as many attempts as the provider got calls
//! for it (an attempt is recorded before its call, so a re-send after a kill counts).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::{Server, admin_json, create_tenant};
use serde_json::{Value, json};

/// What the provider saw: accepted keys (first time) and repeats (a retry after a crash,
/// dropped by key).
#[derive(Default)]
struct Seen {
    accepted: HashMap<String, String>,
    repeats: usize,
    /// Calls by key, counted when they arrive (also those a kill cut short).
    calls: HashMap<String, u32>,
}

async fn slow_provider() -> (String, Arc<Mutex<Seen>>) {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let keep = keep.clone();
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            *keep
                .lock()
                .expect("lock")
                .calls
                .entry(key.clone())
                .or_default() += 1;
            // Slow: messages are in flight when the node is killed.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let mut s = keep.lock().expect("lock");
            match s.accepted.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => s.repeats += 1,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(String::from_utf8_lossy(&body).into_owned());
                }
            }
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
    (format!("http://{addr}/deliver"), seen)
}

/// The server, allowed to call the local provider (an internal address).
fn start(dir: &std::path::Path) -> Server {
    Server::start_with(
        dir,
        &[],
        &[("LIVORA__AUTOMATION__EGRESS_ALLOW", "127.0.0.1")],
    )
}

async fn api(
    http: &common::Http,
    server: &Server,
    key: &str,
    method: &str,
    path: &str,
    body: Value,
) -> Value {
    let url = format!("{}{path}", server.url);
    let req = match method {
        "PUT" => http.put(url),
        _ => http.post(url),
    };
    let resp = req
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_or_sent_twice_across_sigkills() {
    const PEOPLE: usize = 2000;
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = create_tenant(dir.path());
    let admin = admin_json(
        dir.path(),
        &[
            "key",
            "create",
            "--tenant",
            &tenant.id,
            "--kind",
            "secret",
            "--scopes",
            "read,admin",
        ],
    );
    let admin_key = admin["secret"].as_str().expect("admin key").to_owned();
    let (url, seen) = slow_provider().await;
    let http = common::http();
    let mut server = start(dir.path());

    api(
        &http,
        &server,
        &admin_key,
        "PUT",
        "/api/v1/channels/webhook",
        json!({"provider": "webhook", "settings": {"secret": "crash-test-secret-0123"}}),
    )
    .await;
    api(
        &http,
        &server,
        &admin_key,
        "POST",
        "/api/v1/workflows",
        json!({
            "id": "welcome", "name": "Welcome",
            "definition": {
                "trigger": {"event": {"name": "Signed Up"}},
                "steps": [
                    {"id": "wait", "delay": {"seconds": 4}},
                    {"id": "hook", "webhook": {"url": url, "body": "{\"to\": \"{{ person }}\"}"}}
                ]
            }
        }),
    )
    .await;
    api(
        &http,
        &server,
        &admin_key,
        "POST",
        "/api/v1/workflows/welcome/enable",
        json!({}),
    )
    .await;

    // Sign-ups in batches, with kills in between and while timers wait and messages fly.
    let mut kills = 0;
    for chunk in 0..4 {
        let batch: Vec<Value> = (chunk * PEOPLE / 4..(chunk + 1) * PEOPLE / 4)
            .map(|i| json!({"type": "track", "userId": format!("p{i}"), "event": "Signed Up"}))
            .collect();
        let resp = http
            .post(format!("{}/v1/batch", server.url))
            .basic_auth(&tenant.write_key, Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .await
            .expect("ingest");
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        // Let some journeys start, some timers fire and some messages leave, then kill.
        tokio::time::sleep(Duration::from_millis(1500 + 700 * chunk as u64)).await;
        server.kill9();
        kills += 1;
        server = start(dir.path());
    }
    // Two more kills while the last timers fire.
    for wait in [2500, 1800] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        kills += 1;
        server = start(dir.path());
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = seen.lock().expect("lock").accepted.len();
        if n >= PEOPLE {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {PEOPLE} messages arrived after {kills} kills; server log:\n{}",
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a straggler time to show up twice, if one would.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (accepted, repeats, calls) = {
        let s = seen.lock().expect("lock");
        (s.accepted.clone(), s.repeats, s.calls.clone())
    };
    assert_eq!(
        accepted.len(),
        PEOPLE,
        "each person's message once, and no other"
    );
    let mut to: Vec<String> = accepted
        .values()
        .map(|b| {
            serde_json::from_str::<Value>(b).expect("json")["to"]
                .as_str()
                .expect("to")
                .to_owned()
        })
        .collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), PEOPLE, "one message per person");
    eprintln!(
        "{PEOPLE} messages delivered once each across {kills} SIGKILLs ({} repeats dropped by idempotency key)",
        repeats
    );
    // The outbox agrees: every message sent (read a page at a time), none dead, and each
    // with at least as many attempts as calls arrived for it.
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut cursor = String::new();
    loop {
        let out: Value = http
            .get(format!(
                "{}/api/v1/messages?status=sent&limit=1000&cursor={cursor}",
                server.url
            ))
            .bearer_auth(&admin_key)
            .send()
            .await
            .expect("outbox")
            .json()
            .await
            .expect("json");
        for m in out["messages"].as_array().expect("messages") {
            sent.insert(
                m["key"].as_str().expect("key").to_owned(),
                m["attempts"].as_u64().expect("attempts"),
            );
        }
        match out["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(sent.len(), PEOPLE, "every message in the outbox as sent");
    let mut resent = 0;
    for (key, n) in &calls {
        let attempts = sent.get(key).copied().unwrap_or(0);
        assert!(
            attempts >= u64::from(*n),
            "{key}: {n} calls arrived but the outbox shows {attempts} attempts"
        );
        resent += usize::from(*n > 1);
    }
    eprintln!("{resent} messages were called more than once, each counted as attempts");
    let dead: Value = http
        .get(format!("{}/api/v1/messages?status=dead", server.url))
        .bearer_auth(&admin_key)
        .send()
        .await
        .expect("outbox")
        .json()
        .await
        .expect("json");
    assert_eq!(dead["messages"], json!([]));
    server.kill9();
}
