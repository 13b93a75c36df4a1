//! The dashboard served by the node: its pages and assets from the binary, the API's paths
//! still the API's; and the live feed of events it shows.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{admin_app, decode};

#[tokio::test]
async fn serves_the_dashboard_and_leaves_api_paths_to_the_api() {
    let dir = tempfile::tempdir().expect("dir");
    let app = admin_app(dir.path()).await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.url)).send();
    // Every page of the app is its index.html; the router in the browser shows the page.
    let mut script = None;
    for path in ["/", "/funnels", "/people/u:ann"] {
        let r = get(path).await.expect("request");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "text/html", "{path}");
        assert_eq!(r.headers()["cache-control"], "no-cache");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .expect("ascii")
                .contains("default-src 'self'")
        );
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        let html = r.text().await.expect("body");
        assert!(html.contains(r#"<div id="root">"#), "{html}");
        script = html
            .split(r#"src=""#)
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(str::to_owned);
    }
    // Hashed assets, cached for good.
    let script = script.expect("index.html loads a script");
    assert!(script.starts_with("/assets/"), "{script}");
    let r = get(&script).await.expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/javascript");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .contains("immutable")
    );
    assert!(r.bytes().await.expect("body").len() > 10_000);
    // What is not there is a JSON 404, for assets and API paths alike.
    for path in ["/assets/nothing.js", "/api/v1/nothing", "/v1/nothing"] {
        let (status, v) = decode(get(path).await.expect("request")).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let (status, v) = decode(
        app.http
            .post(format!("{}/funnels", app.url))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")));
    app.stop().await;
}

#[tokio::test]
async fn the_live_feed_streams_the_tenants_events_without_personal_data() {
    let dir = tempfile::tempdir().expect("dir");
    let app = admin_app(dir.path()).await;
    // Events from before the stream opens are not sent.
    let (status, _) = app
        .post(
            "/v1/track",
            json!({"userId": "ann", "event": "Before", "properties": {"email": "ann@example.com"}})
                .to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let mut stream = app
        .http
        .get(format!("{}/api/v1/events/live", app.url))
        .bearer_auth(&app.secret_key)
        .send()
        .await
        .expect("request");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // Another tenant's events are not this tenant's feed.
    let other = app
        .store
        .create_tenant(livora_store::NewTenant {
            name: "Other".into(),
            time_zone: "UTC".into(),
            currency: livora_model::Currency::parse("EUR").expect("currency"),
        })
        .await
        .expect("tenant");
    let other_key = app
        .store
        .create_key(other.id, livora_store::KeyKind::Write)
        .await
        .expect("key");
    let r = app
        .http
        .post(format!("{}/v1/track", app.url))
        .basic_auth(&other_key.secret, Some(""))
        .json(&json!({"userId": "zed", "event": "Elsewhere"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let (status, _) = app
        .post(
            "/v1/batch",
            json!({"batch": [
                {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"email": "ann@example.com", "revenue": 10}},
                {"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com"}}
            ]})
            .to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while text.matches("data:").count() < 2 {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the events arrive in time")
            .expect("the stream reads");
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream stays open"),
        ));
    }
    let messages: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).expect("JSON"))
        .collect();
    assert_eq!(messages[0]["event"], "Order Completed", "{text}");
    assert_eq!(messages[1]["type"], "identify", "{text}");
    assert!(
        !text.contains("Before") && !text.contains("Elsewhere"),
        "{text}"
    );
    // What a reader of analytics may see: no identities, traits or properties.
    assert!(!text.contains("ann"), "{text}");
    // Without credentials: refused.
    let r = app
        .http
        .get(format!("{}/api/v1/events/live", app.url))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    // The node shuts down in time with the stream open, and the stream ends.
    app.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}
