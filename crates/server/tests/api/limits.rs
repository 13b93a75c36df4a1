//! Rate limits over real HTTP: 429 with `Retry-After` and a JSON body, before any handler
//! runs (a limited batch stores nothing), per credential and per client address.

use livora_server::{IngestOptions, LimitOptions};
use serde_json::json;

use crate::helpers::{decode, spawn_app_limited};

#[tokio::test]
async fn over_the_limit_answers_429_with_retry_after_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let limits = LimitOptions {
        ingest_per_key: 1,
        api_per_key: 1,
        ..LimitOptions::default()
    };
    let ingest = IngestOptions {
        key_cache_ttl_secs: 0,
        ..IngestOptions::default()
    };
    let app = spawn_app_limited(dir.path(), ingest, &limits).await;
    let track = |i: u32| {
        json!({"type": "track", "event": "Limited", "userId": "u", "messageId": format!("m{i}")})
            .to_string()
    };
    // A burst of twice the rate passes.
    for i in 0..2 {
        let (status, body) = app.post("/v1/track", track(i)).await;
        assert_eq!(status, 200, "{body}");
    }
    let resp = app
        .http
        .post(format!("{}/v1/track", app.url))
        .basic_auth(&app.write_key, Some(""))
        .header("content-type", "application/json")
        .body(track(2))
        .send()
        .await
        .expect("request");
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    let (status, body) = decode(resp).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(retry >= 1);
    assert_eq!(body["retry_after_seconds"], retry);

    // Another credential has its own bucket (an unknown key gets to its 401).
    let resp = app
        .http
        .post(format!("{}/v1/track", app.url))
        .basic_auth("not-a-key", Some(""))
        .body(track(3))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);

    // The read API has its own rate.
    for _ in 0..2 {
        let (status, body) = app.get_events("limit=10").await;
        assert_eq!(status, 200, "{body}");
        if status == 200 {
            let events = body["events"].as_array().expect("events");
            assert_eq!(events.len(), 2, "only the two accepted events: {body}");
        }
    }
    let (status, body) = app.get_events("limit=10").await;
    assert_eq!(status, 429, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn one_address_is_limited_across_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let limits = LimitOptions {
        api_per_ip: 1,
        ..LimitOptions::default()
    };
    let app = spawn_app_limited(dir.path(), IngestOptions::default(), &limits).await;
    let other = app.other_tenant_secret().await;
    for _ in 0..2 {
        assert_eq!(app.get_events("limit=1").await.0, 200);
    }
    let resp = app
        .http
        .get(format!("{}/api/v1/events?limit=1", app.url))
        .bearer_auth(&other)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 429, "same address, another key");
    // Operational routes are not limited.
    let resp = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    app.stop().await;
}

#[tokio::test]
async fn the_read_api_answers_browsers_from_configured_origins_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let limits = LimitOptions {
        api_cors_origins: vec!["https://crm.example.com".into()],
        ..LimitOptions::default()
    };
    let app = spawn_app_limited(dir.path(), IngestOptions::default(), &limits).await;
    let preflight = |origin: &'static str, path: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", app.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let ok = preflight("https://crm.example.com", "/api/v1/query")
        .await
        .expect("request");
    assert_eq!(allowed(&ok).as_deref(), Some("https://crm.example.com"));
    let other = preflight("https://evil.example", "/api/v1/query")
        .await
        .expect("request");
    assert_eq!(allowed(&other), None, "no CORS grant to other origins");
    // Ingestion stays open to every origin (write keys are public).
    let ingest = preflight("https://evil.example", "/v1/track")
        .await
        .expect("request");
    assert_eq!(allowed(&ingest).as_deref(), Some("*"));
    app.stop().await;
}

/// A request still running after `request_timeout_secs` is answered 503 `timeout` (here: a
/// client that sends its headers, then trickles nothing of the body it announced).
#[tokio::test]
async fn a_request_that_runs_too_long_is_answered_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = LimitOptions {
        request_timeout_secs: 1,
        ..LimitOptions::default()
    };
    let app = spawn_app_limited(dir.path(), IngestOptions::default(), &limits).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", app.write_key))
    };
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"batch\":["
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("answered before the client gave up")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    app.stop().await;
}
