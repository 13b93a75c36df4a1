//! Every route is declared once, documented in the OpenAPI document, and answers.

use std::collections::BTreeSet;

use livora_server::{Need, ROUTES};
use serde_json::Value;

use crate::helpers::{decode, spawn_app};

#[test]
fn openapi_documents_exactly_the_routes() {
    let doc: Value = serde_json::from_str(livora_server::ops::OPENAPI).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let declared: BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, declared);
    // The documented security and permission match the declared need.
    for (method, path, need) in ROUTES {
        let op = &doc["paths"][path][method.to_lowercase()];
        let scheme = op["security"][0]
            .as_object()
            .and_then(|s| s.keys().next().cloned());
        let (expected, permission) = match need {
            Need::Public | Need::Login | Need::Signed => (None, None),
            Need::WriteKey => (Some("writeKeyBasic".to_owned()), Some("events.ingest")),
            Need::Authenticated => (Some("bearer".to_owned()), None),
            Need::Permission(p) => (Some("bearer".to_owned()), Some(p.as_str())),
        };
        assert_eq!(scheme, expected, "{method} {path}");
        assert_eq!(op["x-permission"].as_str(), permission, "{method} {path}");
    }
}

#[tokio::test]
async fn every_route_answers_and_refuses_without_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    for (method, path, need) in ROUTES {
        let url = format!("{}{path}", app.url);
        let req = match *method {
            "GET" => app.http.get(&url),
            "PATCH" => app.http.patch(&url).body("{}"),
            "PUT" => app.http.put(&url).body("{}"),
            "DELETE" => app.http.delete(&url),
            _ if path.ends_with("batch") || path.ends_with("import") => app
                .http
                .post(&url)
                .body(r#"{"batch":[{"type":"track","event":"x","userId":"u"}]}"#),
            _ => app
                .http
                .post(&url)
                .body(r#"{"event":"x","userId":"u","groupId":"g","previousId":"p"}"#),
        };
        let resp = req.send().await.expect("request");
        assert!(resp.headers().contains_key("x-request-id"), "{path}");
        let (status, body) = decode(resp).await;
        match need {
            Need::Public => assert_eq!(status, 200, "{path}: {body}"),
            // Sign-in routes answer a body they cannot use with 400 or 401.
            Need::Login => assert!([400, 401].contains(&status), "{path}: {body}"),
            // Tracking links and callbacks are checked by what signs them.
            Need::Signed => assert!(
                [400, 403].contains(&status) && body["code"].is_string(),
                "{method} {path}: {status} {body}"
            ),
            _ => assert_eq!(status, 401, "{method} {path} without a key: {body}"),
        }
    }
    let (status, body) = decode(
        app.http
            .get(format!("{}/api/v1/nope", app.url))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = decode(
        app.http
            .get(format!("{}/v1/track", app.url))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    app.stop().await;
}

#[tokio::test]
async fn operations_endpoints_report_health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    app.post("/v1/track", r#"{"event":"x","userId":"u"}"#).await;
    app.post("/v1/track", r#"{"event":"y","userId":"u"}"#).await;
    app.post("/v1/track", r#"{"userId":"u"}"#).await;
    // A consumer that has processed one of the two events lags by one.
    let mut consumer = app.log.consumer("test-consumer").expect("consumer");
    consumer.commit(1).expect("commit");
    let (status, body) = decode(
        app.http
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    assert!(
        matches!(body["profiles"].as_str(), Some("ok" | "catching_up")),
        "{body}"
    );
    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    for name in [
        "livora_events_accepted_total",
        "livora_events_rejected_total{reason=\"missing_event\"}",
        "livora_ingest_request_seconds_bucket",
        "livora_log_fsync_seconds_bucket",
        "livora_log_written_bytes_total",
        "livora_log_end_offset",
        "livora_consumer_lag_events{consumer=\"test-consumer\"} 1",
        "livora_consumer_committed_offset{consumer=\"test-consumer\"} 1",
        "# HELP livora_consumer_lag_events",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    app.stop().await;
}

/// The value of the gauge `name{consumer="…"}` in a metrics text.
fn gauge(text: &str, name: &str, consumer: &str) -> Option<u64> {
    let prefix = format!("{name}{{consumer=\"{consumer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[tokio::test]
async fn consumer_lag_counts_from_what_is_applied_not_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    for i in 0..20 {
        let (status, body) = app
            .post(
                "/v1/track",
                format!(r#"{{"event":"e{i}","userId":"u{i}"}}"#),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let end = app.log.end_offset();
    // Wait until the column store and profiles have applied the whole log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = app
            .http
            .get(format!("{}/metrics", app.url))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text");
        let applied = |c| gauge(&text, "livora_consumer_applied_offset", c);
        if applied("columnar") >= Some(end) && applied("profiles") >= Some(end) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "consumers did not catch up to {end}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Caught up: no lag, although profiles commit only at their next snapshot (every
    // 300 s here), so the committed offset still trails.
    for consumer in ["columnar", "profiles"] {
        assert_eq!(
            gauge(&text, "livora_consumer_lag_events", consumer),
            Some(0),
            "{consumer}:\n{text}"
        );
    }
    let committed = gauge(&text, "livora_consumer_committed_offset", "profiles");
    assert!(
        committed.is_some_and(|c| c < end),
        "{committed:?} of {end}:\n{text}"
    );
    for help in [
        "# HELP livora_consumer_applied_offset",
        "# HELP livora_consumer_committed_offset",
        "# HELP livora_consumer_lag_events",
    ] {
        assert!(text.contains(help), "metrics lack {help}:\n{text}");
    }
    assert!(!text.contains("livora_log_consumer_lag"), "{text}");
    app.stop().await;
}
