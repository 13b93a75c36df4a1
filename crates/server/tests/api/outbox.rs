//! The outbox over HTTP: `GET /api/v1/messages` a page at a time (`next_cursor`, no silent
//! cap) and by workflow, each message with every attempt's error; `/metrics` describes and
//! counts the outbox (messages by status, calls, send latency).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, admin_app, call};

/// A local receiver on 127.0.0.1 that answers every call with `{}`.
async fn receiver() -> String {
    let app = axum::Router::new().fallback(|| async { "{}" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}

async fn sent(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = call(app, "GET", "/api/v1/messages?status=sent&limit=1000", None).await;
        if v["messages"].as_array().map_or(0, Vec::len) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {v} sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn messages_page_by_cursor_filter_by_workflow_and_metrics_describe_the_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    let url = receiver().await;
    let (status, v) = call(
        &app,
        "PUT",
        "/api/v1/channels/webhook",
        Some(json!({"provider": "webhook", "settings": {"secret": "whsec_0123456789abcdef"}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for id in ["first", "second"] {
        let definition = json!({
            "trigger": {"event": {"name": "Signed Up"}},
            "steps": [{"id": "hook", "webhook": {"url": url, "body": "{\"user\": \"{{ person }}\"}"}}]
        });
        let (status, v) = call(
            &app,
            "POST",
            "/api/v1/workflows",
            Some(json!({"id": id, "name": id, "definition": definition})),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        let (status, v) = call(
            &app,
            "POST",
            &format!("/api/v1/workflows/{id}/enable"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    let batch: Vec<Value> = (0..4)
        .map(|i| json!({"type": "track", "userId": format!("p{i}"), "event": "Signed Up"}))
        .collect();
    let (status, body) = app
        .post("/v1/batch", json!({ "batch": batch }).to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    sent(&app, 8).await;

    // Pages of three: every message once, newest first, then no cursor.
    let mut keys = Vec::new();
    let mut path = "/api/v1/messages?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let (status, v) = call(&app, "GET", &path, None).await;
        assert_eq!(status, 200, "{v}");
        pages += 1;
        let list = v["messages"].as_array().expect("messages").clone();
        assert!(list.len() <= 3);
        for m in &list {
            assert_eq!(m["errors"], json!([]), "{m}");
            keys.push(m["key"].as_str().expect("key").to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/messages?limit=3&cursor={c}"),
            None => {
                assert_eq!(v["next_cursor"], Value::Null);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((keys.len(), unique.len()), (8, 8), "{keys:?}");

    // One workflow's messages.
    let (_, v) = call(&app, "GET", "/api/v1/messages?workflow=second", None).await;
    let list = v["messages"].as_array().expect("messages");
    assert_eq!(list.len(), 4, "{v}");
    assert!(list.iter().all(|m| m["workflow"] == "second"), "{v}");

    // A cursor that is not one.
    let (status, v) = call(&app, "GET", "/api/v1/messages?cursor=%%%", None).await;
    assert_eq!((status, v["path"].as_str()), (400, Some("cursor")), "{v}");

    // The outbox on /metrics, described.
    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "# HELP livora_outbox_messages ",
        "# HELP livora_outbox_attempts_total ",
        "# HELP livora_outbox_sent_total ",
        "# HELP livora_outbox_failed_total ",
        "# HELP livora_outbox_dead_total ",
        "# HELP livora_outbox_in_flight_messages ",
        "# HELP livora_outbox_send_duration_seconds ",
        "livora_outbox_messages{status=\"sent\"}",
        "livora_outbox_messages{status=\"dead\"}",
        "livora_outbox_attempts_total{channel=\"webhook\"}",
        "livora_outbox_sent_total{channel=\"webhook\"}",
        "livora_outbox_send_duration_seconds_bucket{channel=\"webhook\"",
    ] {
        assert!(text.contains(line), "/metrics lacks {line:?}:\n{text}");
    }
}
