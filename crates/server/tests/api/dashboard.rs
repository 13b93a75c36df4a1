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

/// Custom dashboards: kept per owner, shared within the tenant, changed only by their
/// owner, checked on the way in.
#[tokio::test]
async fn dashboards_are_saved_shared_and_changed_only_by_their_owner() {
    use crate::helpers::call;
    let dir = tempfile::tempdir().expect("dir");
    let app = admin_app(dir.path()).await;
    let widget = json!({"id": "rev", "title": "Revenue", "kind": "trends",
        "query": {"kind": "trends", "event": {"event": "Order Completed"}, "interval": "day"}});
    let (status, d) = call(&app, "POST", "/api/v1/dashboards", Some(json!({
        "name": "Morning", "widgets": [widget], "layout": [{"i": "rev", "x": 0, "y": 0, "w": 6, "h": 4}]
    }))).await;
    assert_eq!(status, 201, "{d}");
    let id = d["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        (d["mine"].as_bool(), d["shared"].as_bool()),
        (Some(true), Some(false))
    );
    // Moved on the grid, and read back so.
    let moved = json!([{"i": "rev", "x": 6, "y": 2, "w": 6, "h": 4}]);
    let (status, v) = call(
        &app,
        "PUT",
        &format!("/api/v1/dashboards/{id}"),
        Some(json!({"layout": moved})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, list) = call(&app, "GET", "/api/v1/dashboards", None).await;
    assert_eq!(list["dashboards"][0]["layout"], moved, "{list}");
    assert_eq!(list["dashboards"][0]["widgets"][0]["title"], "Revenue");
    // Bad input names its part and changes nothing.
    for (body, field) in [
        (
            json!({"widgets": [{"id": "x", "title": "X", "kind": "pie", "query": {}}]}),
            "widgets[0].kind",
        ),
        (
            json!({"widgets": [{"id": "x", "title": "X", "kind": "kpi"}]}),
            "widgets[0].query",
        ),
        (
            json!({"layout": [{"i": "rev", "x": -1, "y": 0, "w": 6, "h": 4}]}),
            "layout[0]",
        ),
        (json!({"name": " "}), "name"),
    ] {
        let (status, v) = call(&app, "PUT", &format!("/api/v1/dashboards/{id}"), Some(body)).await;
        assert_eq!((status, v["field"].as_str()), (400, Some(field)), "{v}");
    }
    let (status, v) = call(
        &app,
        "PUT",
        &format!("/api/v1/dashboards/{id}"),
        Some(json!({"colour": "red"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (_, again) = call(&app, "GET", "/api/v1/dashboards", None).await;
    assert_eq!(again["dashboards"][0]["layout"], moved);
    // Another caller of the tenant: sees it once shared, cannot change or delete it.
    let other = app
        .store
        .create_key_scoped(app.tenant_id, &[livora_store::Scope::Read])
        .await
        .expect("key")
        .secret;
    let as_other = |method: &str, path: String, body: Option<serde_json::Value>| {
        let mut r = app
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", app.url),
            )
            .bearer_auth(&other);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let (_, theirs) = decode(
        as_other("GET", "/api/v1/dashboards".into(), None)
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(theirs["dashboards"], json!([]));
    let (status, _) = decode(
        as_other(
            "PUT",
            format!("/api/v1/dashboards/{id}"),
            Some(json!({"name": "Mine"})),
        )
        .await
        .expect("request"),
    )
    .await;
    assert_eq!(status, 404, "a private dashboard is not there for others");
    call(
        &app,
        "PUT",
        &format!("/api/v1/dashboards/{id}"),
        Some(json!({"shared": true})),
    )
    .await;
    let (_, theirs) = decode(
        as_other("GET", "/api/v1/dashboards".into(), None)
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (
            theirs["dashboards"][0]["id"].as_str(),
            theirs["dashboards"][0]["mine"].as_bool()
        ),
        (Some(id.as_str()), Some(false))
    );
    let (status, v) = decode(
        as_other("DELETE", format!("/api/v1/dashboards/{id}"), None)
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, _) = call(&app, "DELETE", &format!("/api/v1/dashboards/{id}"), None).await;
    assert_eq!(status, 204);
    let (_, list) = call(&app, "GET", "/api/v1/dashboards", None).await;
    assert_eq!(list["dashboards"], json!([]));
    app.stop().await;
}
