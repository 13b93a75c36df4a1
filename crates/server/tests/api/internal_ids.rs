//! The message ids Livora gives its own events (`Segment Entered` announcements, workflow
//! traits, engagement) live in a namespace (`lv-…`) the public write key cannot write: a
//! client that predicts an announcement's id and sends it first must not make the real one
//! a duplicate, nor stop the workflows it starts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{admin_app, call};

#[tokio::test]
async fn a_predicted_announcement_id_does_not_suppress_the_announcement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({"id": "pros", "name": "Pros",
            "condition": {"trait": {"name": "plan", "op": "equals", "value": "pro"}}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"id": "welcome", "name": "Welcome", "definition": {
            "trigger": {"segment_entered": "pros"},
            "steps": [{"id": "mark", "update_trait": {"name": "welcomed", "value": true}}]}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(&app, "POST", "/api/v1/workflows/welcome/enable", None).await;
    assert_eq!(s, 200, "{v}");

    // The attacker sends, with the public write key, every id the announcement of the
    // next person to enter can have: `lv-seg-<segment>-<person>-1-<unix second>000000`
    // for the first profile numbers and the next seconds.
    let now = chrono::Utc::now().timestamp();
    let mut refused = 0;
    let mut predicted = Vec::new();
    for person in 0..3 {
        for second in now - 1..now + 8 {
            let id = format!("lv-seg-pros-{person}-1-{second}000000");
            predicted.push(id.clone());
            let (s, v) = app
                .post(
                    "/v1/track",
                    json!({"userId": "eve", "event": "Ping", "messageId": id}).to_string(),
                )
                .await;
            if s == 400 {
                assert_eq!(v["code"], "reserved_message_id", "{v}");
                refused += 1;
            }
        }
    }
    let (s, v) = app
        .post(
            "/v1/identify",
            json!({"userId": "ann", "traits": {"plan": "pro"}}).to_string(),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // The real announcement is in the log, and the workflow it starts ran.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = app.all_events().await;
        let entered = events
            .iter()
            .find(|e| e["event"] == "Segment Entered" && e["userId"] == "ann");
        let (_, ann) = call(&app, "GET", "/api/v1/people/ann", None).await;
        if let Some(e) = entered
            && ann["traits"]["welcomed"] == Value::Bool(true)
        {
            // The attack aimed right: the real announcement has one of the ids sent first.
            let id = e["messageId"].as_str().expect("id");
            assert!(predicted.iter().any(|p| p == id), "{id} not predicted");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "suppressed: announced {}, welcomed {}",
            entered.is_some(),
            ann["traits"]["welcomed"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused, 27, "every id in Livora's namespace is refused");
    // A client's own ids (even ones that look alike elsewhere) are kept as they are.
    let (s, v) = app
        .post(
            "/v1/track",
            json!({"userId": "eve", "event": "Ping", "messageId": "my-lv-seg-1"}).to_string(),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}
