//! The read-back API: filters, pagination, tenant isolation.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn filters_and_pages_are_scoped_to_the_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let batch: Vec<_> = (0..25)
        .map(|i| {
            json!({"type": if i % 5 == 0 { "identify" } else { "track" },
                   "event": format!("E{}", i % 3), "userId": format!("u{}", i % 2),
                   "timestamp": format!("2026-01-01T00:00:{i:02}Z"), "messageId": format!("m{i}")})
        })
        .collect();
    assert_eq!(
        app.post("/v1/batch", json!({"batch": batch}).to_string())
            .await
            .0,
        200
    );

    let (status, page) = app.get_events("limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(page["events"].as_array().expect("events").len(), 10);
    assert_eq!(page["events"][0]["messageId"], "m24", "newest first");
    assert_eq!(app.all_events().await.len(), 25);

    let (_, page) = app.get_events("type=identify").await;
    assert_eq!(page["events"].as_array().expect("events").len(), 5);
    assert_eq!(page["next_cursor"], serde_json::Value::Null);
    let (_, page) = app.get_events("type=track&event=E1&user_id=u1").await;
    let ids: Vec<_> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["messageId"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!("m19"), json!("m13"), json!("m7"), json!("m1")]
    );
    let (_, page) = app
        .get_events("since=2026-01-01T00:00:10Z&until=2026-01-01T00:00:12Z")
        .await;
    assert_eq!(page["events"].as_array().expect("events").len(), 2);

    for bad in [
        "limit=0",
        "limit=5000",
        "type=purchase",
        "since=yesterday",
        "cursor=abc",
        "colour=red",
    ] {
        let (status, body) = app.get_events(bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }

    // Another tenant sees nothing of this one.
    let other_secret = app.other_tenant_secret().await;
    let resp = app
        .http
        .get(format!("{}/api/v1/events", app.url))
        .bearer_auth(&other_secret)
        .send()
        .await
        .expect("request");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["events"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn events_come_back_as_the_exact_text_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let props = r#"{"zeta":1,"alpha":123456789012345678901234567890,"price":1.10}"#;
    let body = format!(r#"{{"event":"Exact","userId":"u","properties":{props}}}"#);
    assert_eq!(app.post("/v1/track", body).await.0, 200);
    let text = app
        .http
        .get(format!("{}/api/v1/events", app.url))
        .bearer_auth(&app.secret_key)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(text.contains(props), "{text}");
    app.stop().await;
}
