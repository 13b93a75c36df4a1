//! Ingestion over HTTP: the bad-input table, partial batches, dedupe, auth, gzip.

use std::io::Write;

use serde_json::{Value, json};

use crate::helpers::{decode, spawn_app};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    encoding: Option<&'static str>,
    auth: bool,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        path,
        content_type: Some("application/json"),
        encoding: None,
        auth: true,
        body: body.into(),
        status,
        code,
    }
}

fn bad_input_cases() -> Vec<Case> {
    let tiny = r#"{"type":"track","event":"e","userId":"u"}"#;
    let ten_thousand = format!(r#"{{"batch":[{}]}}"#, vec![tiny; 10_000].join(","));
    // 101 levels inside `properties`: valid JSON, but past the 100-level limit.
    let deep = format!(
        r#"{{"event":"x","userId":"u","properties":{}1{}}}"#,
        "{\"a\":".repeat(101),
        "}".repeat(101)
    );
    let batch_context_too_big = format!(
        r#"{{"context":{{"pad":"{}","more":"{}"}},"batch":[{tiny}]}}"#,
        "z".repeat(20_000),
        "z".repeat(20_000)
    );
    let big_props = format!(
        r#"{{"event":"x","userId":"u","properties":{{"s":"{}"}}}}"#,
        "x".repeat(33 * 1024)
    );
    let big_item_batch = format!(
        r#"{{"batch":[{tiny},{{"type":"track","event":"x","userId":"u","properties":{{"s":"{}"}}}}]}}"#,
        "x".repeat(33 * 1024)
    );
    let huge_batch = format!(
        r#"{{"batch":[{}]}}"#,
        vec![
            format!(
                r#"{{"type":"track","event":"e","userId":"u","properties":{{"s":"{}"}}}}"#,
                "y".repeat(1000)
            );
            600
        ]
        .join(",")
    );
    let mut invalid_utf8 = br#"{"event":"x","userId":"u","properties":{"s":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#""}}"#);
    let mut invalid_utf8_batch = br#"{"batch":[{"type":"track","event":""#.to_vec();
    invalid_utf8_batch.extend_from_slice(&[0xc3, 0x28]);
    invalid_utf8_batch.extend_from_slice(br#"","userId":"u"}]}"#);
    let bomb = gzip(&vec![b' '; 50 << 20]);

    let mut cases = vec![
        case(
            "invalid json",
            "/v1/batch",
            r#"{"batch":[{"type":"#,
            400,
            "invalid_json",
        ),
        case(
            "invalid json single",
            "/v1/track",
            "{nope",
            400,
            "invalid_json",
        ),
        case(
            "batch is not an array",
            "/v1/batch",
            r#"{"batch":{}}"#,
            400,
            "invalid_json",
        ),
        case(
            "body is an array",
            "/v1/batch",
            "[1,2]",
            400,
            "invalid_json",
        ),
        case("empty body", "/v1/batch", "", 400, "empty_body"),
        case("blank body", "/v1/track", "  \n", 400, "empty_body"),
        case(
            "empty batch",
            "/v1/batch",
            r#"{"batch":[]}"#,
            400,
            "empty_batch",
        ),
        case(
            "invalid utf-8",
            "/v1/track",
            invalid_utf8,
            400,
            "invalid_json",
        ),
        case(
            "invalid utf-8 in batch",
            "/v1/batch",
            invalid_utf8_batch,
            400,
            "invalid_json",
        ),
        case(
            "deep nesting",
            "/v1/track",
            deep.clone(),
            400,
            "invalid_field",
        ),
        case(
            "deep nesting in batch",
            "/v1/batch",
            format!(
                r#"{{"batch":[{}]}}"#,
                deep.replace(r#"{"event""#, r#"{"type":"track","event""#)
            ),
            400,
            "invalid_items",
        ),
        case(
            "number out of range",
            "/v1/track",
            r#"{"event":"x","userId":"u","properties":{"p":1e999}}"#,
            400,
            "invalid_field",
        ),
        case(
            "lone surrogate",
            "/v1/track",
            r#"{"event":"x","userId":"u","properties":{"s":"\ud800"}}"#,
            400,
            "invalid_field",
        ),
        case(
            "lone surrogate in batch",
            "/v1/batch",
            r#"{"batch":[{"type":"track","event":"x","userId":"u","traits":{"s":"\udc00"}}]}"#,
            400,
            "invalid_items",
        ),
        case(
            "batch context makes events too large",
            "/v1/batch",
            batch_context_too_big,
            413,
            "event_too_large",
        ),
        case(
            "bad field with the key in the body",
            "/v1/track",
            r#"{"event":5,"userId":"u","writeKey":"KEY"}"#,
            400,
            "invalid_field",
        ),
        case(
            "no identity",
            "/v1/track",
            r#"{"event":"x"}"#,
            400,
            "missing_identity",
        ),
        case(
            "python null anonymousId and no userId",
            "/v1/identify",
            r#"{"anonymousId":null,"traits":{}}"#,
            400,
            "missing_identity",
        ),
        case(
            "track without event",
            "/v1/track",
            r#"{"userId":"u"}"#,
            400,
            "missing_event",
        ),
        case(
            "group without groupId",
            "/v1/group",
            r#"{"userId":"u"}"#,
            400,
            "missing_group_id",
        ),
        case(
            "alias without previousId",
            "/v1/alias",
            r#"{"userId":"u"}"#,
            400,
            "missing_previous_id",
        ),
        case(
            "an event name only Livora writes",
            "/v1/track",
            r#"{"event":"Segment Entered","userId":"u","properties":{"segment_id":"vip"}}"#,
            400,
            "reserved_event",
        ),
        case(
            "wrong type of userId",
            "/v1/track",
            r#"{"event":"x","userId":["u"]}"#,
            400,
            "invalid_field",
        ),
        case(
            "wrong type of properties",
            "/v1/track",
            r#"{"event":"x","userId":"u","properties":"p"}"#,
            400,
            "invalid_field",
        ),
        case("not an object", "/v1/track", "42", 400, "not_an_object"),
        case(
            "bad timestamp",
            "/v1/track",
            r#"{"event":"x","userId":"u","timestamp":"soon"}"#,
            400,
            "invalid_timestamp",
        ),
        case(
            "unknown type in batch",
            "/v1/batch",
            r#"{"batch":[{"type":"purchase","userId":"u"}]}"#,
            400,
            "invalid_items",
        ),
        case(
            "10,000 tiny events",
            "/v1/batch",
            ten_thousand,
            413,
            "too_many_events",
        ),
        case(
            "event over 32 KB",
            "/v1/track",
            big_props,
            413,
            "body_too_large",
        ),
        case(
            "batch item over 32 KB",
            "/v1/batch",
            big_item_batch,
            413,
            "event_too_large",
        ),
        case(
            "batch over 500 KB",
            "/v1/batch",
            huge_batch,
            413,
            "body_too_large",
        ),
        case(
            "wrong content type",
            "/v1/batch",
            r#"{"batch":[]}"#,
            415,
            "unsupported_media_type",
        ),
        case(
            "unknown encoding",
            "/v1/track",
            r#"{"event":"x","userId":"u"}"#,
            415,
            "unsupported_encoding",
        ),
        case(
            "not gzip",
            "/v1/track",
            r#"{"event":"x","userId":"u"}"#,
            400,
            "invalid_gzip",
        ),
        case("gzip bomb", "/v1/batch", bomb, 413, "body_too_large"),
        case(
            "no write key",
            "/v1/track",
            r#"{"event":"x","userId":"u"}"#,
            401,
            "invalid_write_key",
        ),
        case(
            "unknown write key in body",
            "/v1/track",
            r#"{"event":"x","userId":"u","writeKey":"lv_w_nope"}"#,
            401,
            "invalid_write_key",
        ),
    ];
    for c in &mut cases {
        match c.name {
            "wrong content type" => c.content_type = Some("application/x-www-form-urlencoded"),
            "unknown encoding" => c.encoding = Some("br"),
            "not gzip" | "gzip bomb" => c.encoding = Some("gzip"),
            "no write key" | "unknown write key in body" | "bad field with the key in the body" => {
                c.auth = false
            }
            _ => {}
        }
    }
    cases
}

#[tokio::test]
async fn bad_input_gets_its_documented_status_and_code_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    for c in bad_input_cases() {
        let body = String::from_utf8(c.body.clone())
            .map(|b| {
                b.replace("\"KEY\"", &format!("\"{}\"", app.write_key))
                    .into_bytes()
            })
            .unwrap_or(c.body);
        let mut req = app.http.post(format!("{}{}", app.url, c.path)).body(body);
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(enc) = c.encoding {
            req = req.header("content-encoding", enc);
        }
        if c.auth {
            req = req.basic_auth(&app.write_key, Some(""));
        }
        let (status, body) = decode(req.send().await.expect("request")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (c.status, Some(c.code)),
            "{}: {body}",
            c.name
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            c.name
        );
    }
    // Nothing above was stored, and the server still works.
    assert!(app.all_events().await.is_empty());
    let (status, body) = app
        .post("/v1/track", r#"{"event":"ok","userId":"u"}"#)
        .await;
    assert_eq!((status, body), (200, json!({"success": true})));
    assert_eq!(app.all_events().await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_partly_bad_batch_keeps_its_good_items_and_reports_the_bad_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let body = json!({"batch": [
        {"type": "track", "event": "A", "userId": "u1", "messageId": "m-a"},
        {"type": "track", "userId": "u1"},
        {"type": "identify", "userId": "u1", "anonymousId": null, "traits": {"plan": "pro"}},
        {"type": "launch", "userId": "u1"},
        7,
    ]});
    let (status, resp) = app.post("/v1/batch", body.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(resp["code"], "invalid_items");
    assert_eq!(resp["accepted"], 2);
    let errors: Vec<(u64, &str)> = resp["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().expect("index"),
                e["code"].as_str().expect("code"),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (1, "missing_event"),
            (3, "unknown_type"),
            (4, "not_an_object")
        ]
    );
    let stored = app.all_events().await;
    let types: Vec<_> = stored
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, vec!["identify", "track"], "newest first");
    app.stop().await;
}

#[tokio::test]
async fn the_same_batch_twice_and_after_a_restart_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = json!({"batch": (0..50).map(|i| json!({
        "type": "track", "event": "Order Completed", "userId": format!("u{i}"),
        "messageId": format!("order-{i}"), "properties": {"i": i}
    })).collect::<Vec<_>>()})
    .to_string();
    let app = spawn_app(dir.path()).await;
    assert_eq!(app.post("/v1/batch", batch.clone()).await.0, 200);
    assert_eq!(
        app.post("/v1/batch", batch.clone()).await.0,
        200,
        "a retry is acknowledged"
    );
    assert_eq!(app.all_events().await.len(), 50);
    app.stop().await;

    let app = spawn_app(dir.path()).await;
    assert_eq!(app.post("/v1/batch", batch.clone()).await.0, 200);
    // Same ids from another endpoint are duplicates too; a new id is not.
    let (status, _) = app
        .post(
            "/v1/track",
            r#"{"event":"Order Completed","userId":"u1","messageId":"order-1"}"#,
        )
        .await;
    assert_eq!(status, 200);
    app.post(
        "/v1/track",
        r#"{"event":"New","userId":"u1","messageId":"order-new"}"#,
    )
    .await;
    let events = app.all_events().await;
    assert_eq!(events.len(), 51);
    let mut ids: Vec<_> = events
        .iter()
        .map(|e| e["messageId"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 51);
    app.stop().await;
}

#[tokio::test]
async fn keys_are_checked_revocation_takes_effect_and_kinds_are_not_interchangeable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let track = r#"{"event":"x","userId":"u"}"#;
    // The write key in the body works like the Basic header (the Python SDK sends both).
    let resp = app
        .http
        .post(format!("{}/v1/track", app.url))
        .body(format!(
            r#"{{"event":"x","userId":"u","writeKey":"{}"}}"#,
            app.write_key
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    // A secret key cannot ingest; a write key cannot read.
    let resp = app
        .http
        .post(format!("{}/v1/track", app.url))
        .basic_auth(&app.secret_key, Some(""))
        .body(track)
        .send()
        .await
        .expect("request");
    assert_eq!(decode(resp).await.1["code"], "invalid_write_key");
    let resp = app
        .http
        .get(format!("{}/api/v1/events", app.url))
        .bearer_auth(&app.write_key)
        .send()
        .await
        .expect("request");
    assert_eq!(
        decode(resp).await,
        (
            403,
            decode_json(
                r#"{"code":"forbidden","message":"this needs the `pii.view` permission","permission":"pii.view"}"#
            )
        )
    );
    // Revoked: 401 (this app caches keys for 0 s).
    assert!(
        app.store
            .revoke_key(None, &app.write_key_id)
            .await
            .expect("revoke")
    );
    let (status, body) = app.post("/v1/track", track).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_write_key"))
    );
    app.stop().await;
}

fn decode_json(s: &str) -> Value {
    serde_json::from_str(s).expect("json")
}

#[tokio::test]
async fn gzip_bodies_text_plain_and_normalisation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    // Client clock one hour fast; the event happened 2 s before sending.
    let now = chrono::Utc::now();
    let sent = now + chrono::Duration::hours(1);
    let ts = sent - chrono::Duration::seconds(2);
    let body = json!({
        "batch": [{"type": "track", "event": "Skewed", "userId": "u", "timestamp": ts.to_rfc3339(),
                   "context": {"locale": "fr-FR"}},
                  {"type": "page", "name": "Future", "userId": "u",
                   "timestamp": (now + chrono::Duration::days(2)).to_rfc3339()}],
        "sentAt": sent.to_rfc3339(),
        "context": {"library": {"name": "test-sdk"}, "locale": "en-US"},
        "integrations": {"All": true},
    });
    let resp = app
        .http
        .post(format!("{}/v1/batch", app.url))
        .basic_auth(&app.write_key, Some(""))
        .header("content-type", "text/plain")
        .header("content-encoding", "gzip")
        .body(gzip(body.to_string().as_bytes()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let events = app.all_events().await;
    let skewed = events
        .iter()
        .find(|e| e["event"] == "Skewed")
        .expect("stored");
    let stored_ts: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(skewed["timestamp"].clone()).expect("time");
    let received: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(skewed["receivedAt"].clone()).expect("time");
    assert_eq!(received - stored_ts, chrono::Duration::seconds(2));
    assert_eq!(skewed["context"]["locale"], "fr-FR", "item context wins");
    assert_eq!(
        skewed["context"]["library"]["name"], "test-sdk",
        "batch context merged"
    );
    assert_eq!(skewed["context"]["ip"], "127.0.0.1");
    assert_eq!(skewed["integrations"]["All"], true);
    assert!(
        skewed["messageId"].as_str().is_some_and(|m| m.len() == 36),
        "generated id"
    );
    let future = events
        .iter()
        .find(|e| e["name"] == "Future")
        .expect("stored");
    assert_eq!(future["timestampClamped"], true);
    assert_eq!(future["timestamp"], future["receivedAt"]);
    app.stop().await;
}
