//! `POST /api/v1/query` over real HTTP: funnels over live data, errors, tenant scope; the
//! event names and property keys in use (`GET /api/v1/events/definitions`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, call, decode, spawn_app};

async fn query(app: &TestApp, body: &Value) -> (u16, Value) {
    let resp = app
        .http
        .post(format!("{}/api/v1/query", app.url))
        .bearer_auth(&app.secret_key)
        .json(body)
        .send()
        .await
        .expect("request");
    decode(resp).await
}

/// Queries until the column store has applied `events` log records.
async fn query_when_applied(app: &TestApp, body: &Value, events: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = query(app, body).await;
        assert_eq!(status, 200, "{answer}");
        if answer["log_offset"].as_u64() >= Some(events) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "column store did not catch up: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn funnel_over_live_events_with_identity_merges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let batch = json!({"batch": [
        {"type": "track", "event": "Product Viewed", "anonymousId": "a1", "timestamp": "2026-03-01T10:00:00Z", "properties": {"category": "Shoes"}},
        {"type": "track", "event": "Product Added", "anonymousId": "a1", "timestamp": "2026-03-01T10:05:00Z"},
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "timestamp": "2026-03-01T10:06:00Z"},
        {"type": "track", "event": "Order Completed", "userId": "u1", "timestamp": "2026-03-01T10:10:00Z", "properties": {"total": 99.5}},
        {"type": "track", "event": "Product Viewed", "anonymousId": "a2", "timestamp": "2026-03-01T11:00:00Z", "properties": {"category": "Hats"}},
        {"type": "track", "event": "Product Added", "anonymousId": "a2", "timestamp": "2026-03-09T11:00:00Z"},
    ]});
    assert_eq!(app.post("/v1/batch", batch.to_string()).await.0, 200);
    let funnel = json!({
        "kind": "funnel", "from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z",
        "window_seconds": 7 * 86400,
        "steps": [{"event": "Product Viewed"}, {"event": "Product Added"}, {"event": "Order Completed"}]
    });
    let answer = query_when_applied(&app, &funnel, 6).await;
    assert_eq!(answer["kind"], "funnel");
    let counts: Vec<_> = answer["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["count"].clone())
        .collect();
    assert_eq!(counts, vec![json!(2), json!(1), json!(1)], "{answer}");
    assert_eq!(answer["steps"][2]["median_seconds"], json!(600.0));
    assert_eq!(answer["steps"][1]["conversion_rate"], json!(0.5));

    let mut who = funnel.clone();
    who["persons"] = json!({"step": 2, "status": "converted"});
    let answer = query_when_applied(&app, &who, 6).await;
    assert_eq!(answer["persons_total"], 1);
    assert_eq!(
        answer["persons"],
        json!([{"user_ids": ["u1"], "anonymous_ids": ["a1"]}])
    );

    let mut filtered = funnel.clone();
    filtered["steps"][0]["filters"] =
        json!([{"property": "category", "op": "eq", "value": "Hats"}]);
    filtered["order"] = json!("any");
    let answer = query_when_applied(&app, &filtered, 6).await;
    let counts: Vec<_> = answer["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["count"].clone())
        .collect();
    assert_eq!(
        counts,
        vec![json!(2), json!(1), json!(0)],
        "any order, Hats filter: {answer}"
    );

    for (bad, needle) in [
        (
            json!({"kind": "funnel", "from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z", "window_seconds": 60, "steps": []}),
            "steps",
        ),
        (
            json!({"kind": "funnel", "from": "2026-04-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "window_seconds": 60, "steps": [{"event": "a"}, {"event": "b"}]}),
            "before",
        ),
        (
            json!({"kind": "funnel", "from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z", "window_seconds": 0, "steps": [{"event": "a"}, {"event": "b"}]}),
            "window",
        ),
        (json!({"kind": "cohort"}), "unknown variant"),
        (json!({"kind": "funnel", "colour": "red"}), "unknown field"),
    ] {
        let (status, body) = query(&app, &bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{bad}: {body}"
        );
    }

    // Another tenant sees an empty funnel.
    let other_secret = app.other_tenant_secret().await;
    let resp = app
        .http
        .post(format!("{}/api/v1/query", app.url))
        .bearer_auth(&other_secret)
        .json(&funnel)
        .send()
        .await
        .expect("request");
    let (status, body) = decode(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body["steps"][0]["count"], 0);
    app.stop().await;
}

#[tokio::test]
async fn weekly_retention_in_the_tenant_time_zone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    // The test tenant is in UTC. Weeks start on Monday 2026-03-02.
    let batch = json!({"batch": [
        {"type": "track", "event": "Signed Up", "userId": "a", "timestamp": "2026-03-02T10:00:00Z"},
        {"type": "track", "event": "Order Completed", "userId": "a", "timestamp": "2026-03-10T10:00:00Z"},
        {"type": "track", "event": "Order Completed", "userId": "a", "timestamp": "2026-03-24T10:00:00Z"},
        {"type": "track", "event": "Signed Up", "userId": "b", "timestamp": "2026-03-04T10:00:00Z"},
        {"type": "track", "event": "Signed Up", "userId": "c", "timestamp": "2026-03-11T10:00:00Z"},
        {"type": "track", "event": "Order Completed", "userId": "c", "timestamp": "2026-03-12T10:00:00Z"},
        {"type": "track", "event": "Order Completed", "userId": "c", "timestamp": "2026-03-18T10:00:00Z"},
    ]});
    assert_eq!(app.post("/v1/batch", batch.to_string()).await.0, 200);
    let q = json!({
        "kind": "retention", "period": "week", "periods": 4, "from": "2026-03-04T00:00:00Z",
        "start_event": {"event": "Signed Up"}, "return_event": {"event": "Order Completed"}
    });
    let answer = query_when_applied(&app, &q, 7).await;
    assert_eq!(answer["kind"], "retention");
    let cohorts = answer["cohorts"].as_array().expect("cohorts");
    assert_eq!(cohorts.len(), 4);
    assert_eq!(cohorts[0]["start"], "2026-03-02T00:00:00Z");
    assert_eq!(cohorts[0]["counts"], json!([2, 1, 0, 1]), "{answer}");
    assert_eq!(cohorts[0]["percentages"], json!([1.0, 0.5, 0.0, 0.5]));
    assert_eq!(cohorts[1]["counts"], json!([1, 1, 0]), "{answer}");
    assert_eq!(cohorts[3]["counts"], json!([0]));

    let mut bad = q.clone();
    bad["periods"] = json!(0);
    let (status, body) = query(&app, &bad).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn daily_revenue_by_category_with_the_previous_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let batch = json!({"batch": [
        {"type": "track", "event": "Order Completed", "userId": "a", "timestamp": "2026-05-01T10:00:00Z", "properties": {"category": "Shoes", "revenue": 100}},
        {"type": "track", "event": "Order Completed", "userId": "b", "timestamp": "2026-05-01T11:00:00Z", "properties": {"category": "Hats", "revenue": 20}},
        {"type": "track", "event": "Order Completed", "userId": "a", "timestamp": "2026-05-02T09:00:00Z", "properties": {"category": "Shoes", "revenue": 50.5}},
        {"type": "track", "event": "Order Completed", "userId": "c", "timestamp": "2026-04-30T09:00:00Z", "properties": {"category": "Shoes", "revenue": 7}},
    ]});
    assert_eq!(app.post("/v1/batch", batch.to_string()).await.0, 200);
    let q = json!({
        "kind": "trends", "event": {"event": "Order Completed"},
        "metric": {"kind": "sum", "property": "revenue"}, "interval": "day",
        "from": "2026-05-01T00:00:00Z", "to": "2026-05-03T00:00:00Z",
        "breakdown": {"property": "category"}, "compare_previous": true
    });
    let answer = query_when_applied(&app, &q, 4).await;
    assert_eq!(answer["kind"], "trends");
    assert_eq!(
        answer["buckets"],
        json!(["2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z"])
    );
    assert_eq!(
        answer["series"],
        json!([
            {"breakdown": "Shoes", "values": [100.0, 50.5], "total": 150.5},
            {"breakdown": "Hats", "values": [20.0, 0.0], "total": 20.0},
        ]),
        "{answer}"
    );
    assert_eq!(
        answer["previous"]["buckets"],
        json!(["2026-04-29T00:00:00Z", "2026-04-30T00:00:00Z"])
    );
    assert_eq!(answer["previous"]["series"][0]["values"], json!([0.0, 7.0]));

    let mut bad = q.clone();
    bad["metric"] = json!({"kind": "median"});
    let (status, body) = query(&app, &bad).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn paths_after_an_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let batch = json!({"batch": [
        {"type": "track", "event": "Product Added", "userId": "a", "timestamp": "2026-05-01T10:00:00Z"},
        {"type": "track", "event": "Checkout Started", "userId": "a", "timestamp": "2026-05-01T10:01:00Z"},
        {"type": "track", "event": "Order Completed", "userId": "a", "timestamp": "2026-05-01T10:02:00Z"},
        {"type": "track", "event": "Product Added", "userId": "b", "timestamp": "2026-05-01T11:00:00Z"},
        {"type": "page", "name": "Home", "userId": "b", "timestamp": "2026-05-01T11:01:00Z"},
    ]});
    assert_eq!(app.post("/v1/batch", batch.to_string()).await.0, 200);
    let q = json!({
        "kind": "paths", "event": {"event": "Product Added"}, "depth": 2,
        "from": "2026-05-01T00:00:00Z", "to": "2026-05-02T00:00:00Z"
    });
    let answer = query_when_applied(&app, &q, 5).await;
    assert_eq!(answer["occurrences"], 2);
    assert_eq!(
        answer["edges"],
        json!([
            {"depth": 1, "from": "Product Added", "to": "$page", "count": 1},
            {"depth": 1, "from": "Product Added", "to": "Checkout Started", "count": 1},
            {"depth": 2, "from": "Checkout Started", "to": "Order Completed", "count": 1},
        ]),
        "{answer}"
    );
    app.stop().await;
}

#[tokio::test]
async fn commerce_stickiness_lifecycle_and_person_properties_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "a", "timestamp": "2026-05-01T08:00:00Z", "traits": {"plan": "pro"}},
        {"type": "track", "event": "Product Viewed", "userId": "a", "timestamp": "2026-05-01T09:00:00Z", "properties": {"category": "Shoes"}},
        {"type": "track", "event": "Product Added", "userId": "a", "timestamp": "2026-05-01T09:05:00Z", "properties": {"category": "Shoes"}},
        {"type": "track", "event": "Order Completed", "userId": "a", "timestamp": "2026-05-01T09:10:00Z", "properties": {"category": "Shoes", "revenue": 100}},
        {"type": "track", "event": "Order Completed", "userId": "a", "timestamp": "2026-05-03T09:10:00Z", "properties": {"category": "Hats", "total": 40}},
        {"type": "track", "event": "Order Refunded", "userId": "a", "timestamp": "2026-05-03T10:00:00Z", "properties": {"total": 40}},
        {"type": "track", "event": "Product Viewed", "userId": "b", "timestamp": "2026-05-02T09:00:00Z", "properties": {"category": "Hats"}},
        {"type": "track", "event": "Order Completed", "userId": "b", "timestamp": "2026-05-02T09:30:00Z", "properties": {"category": "Hats", "revenue": 20}},
    ]});
    assert_eq!(app.post("/v1/batch", batch.to_string()).await.0, 200);
    let range = json!({"from": "2026-05-01T00:00:00Z", "to": "2026-05-04T00:00:00Z"});
    let with = |extra: Value| {
        let mut q = range.clone();
        q.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        q
    };

    let c = query_when_applied(&app, &with(json!({"kind": "commerce"})), 8).await;
    assert_eq!(c["kind"], "commerce", "{c}");
    assert_eq!(c["revenue"], json!([100.0, 20.0, 40.0]), "{c}");
    assert_eq!(c["net_revenue"], json!([100.0, 20.0, 0.0]));
    assert_eq!(c["totals"]["orders"], 3);
    assert_eq!(c["totals"]["customers"], 2);
    assert_eq!(c["totals"]["conversion_rate"], 1.0);
    assert_eq!(c["purchase_frequency"][0], json!([1, 1]));
    assert_eq!(c["purchase_frequency"][1], json!([2, 1]));
    assert_eq!(c["products"][0]["value"], "Shoes");
    assert_eq!(c["products"][0]["revenue"], 100.0);
    assert_eq!(c["lifetime_value"]["customers"], 2);
    assert_eq!(c["lifetime_value"]["average"], 60.0);

    let s = query_when_applied(
        &app,
        &with(
            json!({"kind": "stickiness", "interval": "day", "event": {"event": "Order Completed"}}),
        ),
        8,
    )
    .await;
    assert_eq!(s["persons"], json!([1, 1, 0]), "{s}");

    let l = query_when_applied(
        &app,
        &with(
            json!({"kind": "lifecycle", "interval": "day", "event": {"event": "Order Completed"}}),
        ),
        8,
    )
    .await;
    assert_eq!(l["new"], json!([1, 1, 0]), "{l}");
    assert_eq!(l["resurrecting"], json!([0, 0, 1]), "{l}");
    assert_eq!(l["dormant"], json!([0, 1, 1]), "{l}");

    // Revenue of persons on the pro plan, per hour, broken down by plan.
    let t = query_when_applied(
        &app,
        &with(json!({"kind": "trends", "interval": "hour",
            "event": {"event": "Order Completed", "filters": [{"property": "plan", "source": "person", "op": "eq", "value": "pro"}]},
            "metric": {"kind": "percentile", "property": "revenue", "percentile": 50},
            "breakdown": {"property": "plan", "source": "person"}})),
        8,
    )
    .await;
    assert_eq!(t["buckets"].as_array().map(Vec::len), Some(72), "{t}");
    assert_eq!(t["series"][0]["breakdown"], "pro");
    assert_eq!(
        t["series"][0]["total"], 100.0,
        "only a's order with `revenue`"
    );

    for (bad, needle) in [
        (
            with(json!({"kind": "commerce", "products_limit": 0})),
            "products_limit",
        ),
        (
            with(
                json!({"kind": "trends", "interval": "hour", "event": {"event": "x"}, "metric": {"kind": "percentile", "property": "v", "percentile": 101}}),
            ),
            "percentile",
        ),
        (
            with(json!({"kind": "stickiness", "interval": "fortnight", "event": {"event": "x"}})),
            "unknown variant",
        ),
        (
            json!({"kind": "lifecycle", "interval": "day", "event": {"event": "x"}, "from": "2026-05-04T00:00:00Z", "to": "2026-05-01T00:00:00Z"}),
            "before",
        ),
        (
            with(
                json!({"kind": "funnel", "window_seconds": 60, "order": "any", "steps": [{"event": "a"}, {"event": "b"}], "exclusions": [{"event": "x", "from_step": 0, "to_step": 1}]}),
            ),
            "exclusion",
        ),
    ] {
        let (status, body) = query(&app, &bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{bad}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_event_names_in_use_most_used_first_with_the_property_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    let ago = |days: i64| (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339();
    let batch = json!({"batch": [
        {"type": "track", "event": "Product Viewed", "userId": "a", "timestamp": ago(1), "properties": {"category": "Shoes", "price": 30}},
        {"type": "track", "event": "Product Viewed", "userId": "b", "timestamp": ago(2), "properties": {"category": "Hats"}},
        {"type": "track", "event": "Order Completed", "userId": "a", "timestamp": ago(3), "properties": {"revenue": 30, "gift": true}},
        {"type": "page", "name": "Home", "anonymousId": "x", "timestamp": ago(4)},
        {"type": "identify", "userId": "a", "timestamp": ago(5), "traits": {"plan": "pro"}},
        {"type": "track", "event": "Signed Up", "userId": "a", "timestamp": ago(60)},
    ]});
    assert_eq!(app.post("/v1/batch", batch.to_string()).await.0, 200);
    // The column store follows the log: until it has the six events.
    let q = json!({"kind": "trends", "event": {"event": "Signed Up"}, "metric": {"kind": "count"},
        "interval": "day", "from": ago(90), "to": ago(0)});
    query_when_applied(&app, &q, 6).await;
    let (status, body) = call(&app, "GET", "/api/v1/events/definitions", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["days"], 30);
    let names: Vec<(&str, u64)> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or(""),
                e["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("Product Viewed", 2),
            ("$identify", 1),
            ("$page", 1),
            ("Order Completed", 1)
        ],
        "the last 30 days, most used first, ties by name: {body}"
    );
    assert!(
        body["events"][0]["last_seen"]
            .as_str()
            .is_some_and(|t| t.starts_with(&ago(1)[..10])),
        "{body}"
    );
    let types = |key: &str| {
        body["properties"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == key))
            .map(|p| p["types"].clone())
    };
    assert_eq!(types("category"), Some(json!(["string"])));
    assert_eq!(types("price"), Some(json!(["number"])));
    assert_eq!(types("gift"), Some(json!(["string"])), "booleans are text");
    assert_eq!(types("plan"), Some(json!(["string"])), "traits too");
    // Further back, the older event too.
    let (_, all) = call(&app, "GET", "/api/v1/events/definitions?days=90", None).await;
    assert!(
        all["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["name"] == "Signed Up")),
        "{all}"
    );
    for bad in ["days=0", "days=9999", "days=soon", "since=3"] {
        let (status, body) = call(
            &app,
            "GET",
            &format!("/api/v1/events/definitions?{bad}"),
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}: {body}"
        );
    }
    // Another tenant's names are not listed.
    let other = app.other_tenant_secret().await;
    let resp = app
        .http
        .get(format!("{}/api/v1/events/definitions", app.url))
        .bearer_auth(&other)
        .send()
        .await
        .expect("request");
    let (status, body) = decode(resp).await;
    assert_eq!((status, body["events"].clone()), (200, json!([])), "{body}");
    app.stop().await;
}
