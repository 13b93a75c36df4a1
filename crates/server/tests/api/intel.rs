//! Models over HTTP: a shop's events ingested, the models trained on demand, every person's
//! predictions, recommendations, similar items and forecasts read back; versions recorded,
//! a new one judged against the one in use, and an older one put back.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use crate::helpers::{TestApp, admin_app, call};

/// 240 persons over 150 days up to yesterday: every third is a regular (active a third of
/// the days, opens emails at 9); the others stop after a while.
fn shop() -> Vec<Value> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let today = Utc::now().date_naive();
    let mut events = Vec::new();
    for i in 0..240u32 {
        let regular = i % 3 == 0;
        let start = rng.random_range(0..60i64);
        let stop = if regular {
            150
        } else {
            start + rng.random_range(10..90)
        };
        for d in start..stop.min(150) {
            if rng.random::<f64>() > if regular { 0.35 } else { 0.15 } {
                continue;
            }
            let day = today - chrono::Days::new((150 - d) as u64);
            let at = |h: u32| format!("{day}T{h:02}:{:02}:00Z", i % 60);
            let product = format!("sku-{}", (i % 8) * 4 + rng.random_range(0..4));
            let n = events.len();
            events.push(json!({"type": "track", "event": "Product Viewed", "userId": format!("p{i}"),
                "properties": {"product_id": product}, "timestamp": at(12), "messageId": format!("m{n}")}));
            if rng.random::<f64>() < 0.3 {
                events.push(json!({"type": "track", "event": "Order Completed", "userId": format!("p{i}"),
                    "properties": {"revenue": 20 + (i % 5) * 10, "order_id": format!("o{n}"),
                        "products": [
                            {"product_id": product, "category": format!("cat-{}", i % 3), "price": 15, "quantity": 1},
                            {"product_id": format!("sku-{}", (i % 8) * 4), "category": format!("cat-{}", i % 3), "price": 5, "quantity": 1}
                        ]},
                    "timestamp": at(13), "messageId": format!("m{n}b")}));
            }
            if rng.random::<f64>() < 0.3 {
                events.push(
                    json!({"type": "track", "event": "Email Opened", "userId": format!("p{i}"),
                    "timestamp": at(if regular { 9 } else { 20 }), "messageId": format!("m{n}c")}),
                );
            }
        }
    }
    events
}

/// Asks for a training (202 and a job), then follows the job until it has finished.
async fn train_job(app: &TestApp, body: Value) -> Value {
    let (status, job) = call(app, "POST", "/api/v1/models/train", Some(body)).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("a job id").to_owned();
    wait_job(app, &id).await
}

/// Polls a training job until it has succeeded or failed.
async fn wait_job(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, job) = call(app, "GET", &format!("/api/v1/models/train/{id}"), None).await;
        assert_eq!(status, 200, "{job}");
        if matches!(job["state"].as_str(), Some("succeeded" | "failed")) {
            return job;
        }
        assert!(Instant::now() < deadline, "the job never finished: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A training's result (it must succeed).
async fn train(app: &TestApp) -> Value {
    let job = train_job(app, json!({})).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    job["result"].clone()
}

fn kinds(v: &Value) -> Vec<(String, u64, bool)> {
    let mut k: Vec<(String, u64, bool)> = v["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap_or("").to_owned(),
                m["version"].as_u64().unwrap_or(0),
                m["active"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn trains_scores_recommends_forecasts_and_rolls_back() {
    let dir = tempfile::tempdir().expect("dir");
    let app = admin_app(dir.path()).await;
    // Nothing is trained yet.
    let (status, v) = call(&app, "GET", "/api/v1/forecasts", None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (503, Some("not_ready")),
        "{v}"
    );
    let events = shop();
    let persons: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["userId"].as_str()).collect();
    for chunk in events.chunks(500) {
        let (status, v) = app
            .post("/v1/batch", json!({ "batch": chunk }).to_string())
            .await;
        assert_eq!(status, 200, "{v}");
    }
    // Trained once the column store holds every person.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let v = train(&app).await;
        if v["persons"] == persons.len() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the column store never held them: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ks: Vec<String> = kinds(&first).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(
        ks,
        ["churn", "clv", "forecast", "recommendations", "send_time"],
        "{first}"
    );
    assert_eq!(first["skipped"], json!([]), "{first}");

    // A regular and someone who stopped long ago.
    let (status, regular) = call(&app, "GET", "/api/v1/people/p0/predictions", None).await;
    assert_eq!(status, 200, "{regular}");
    let lapsed = (1..240)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("p{i}"))
        .next()
        .expect("one");
    let (_, other) = call(
        &app,
        "GET",
        &format!("/api/v1/people/{lapsed}/predictions"),
        None,
    )
    .await;
    let risk = |v: &Value| v["churn_risk"].as_f64().expect("a churn risk");
    assert!(risk(&regular) < risk(&other), "{regular} {other}");
    assert_eq!(regular["churn_reasons"].as_array().map(Vec::len), Some(3));
    assert!(
        regular["clv_12m"].as_f64().expect("a value") > 0.0,
        "{regular}"
    );
    assert_eq!(regular["best_send_time"]["hour"], 9, "{regular}");
    let (status, v) = call(&app, "GET", "/api/v1/people/nobody/predictions", None).await;
    assert_eq!(status, 404, "{v}");

    // The predictions are on the profile, and segments test them.
    let (status, profile) = call(&app, "GET", &format!("/api/v1/people/{lapsed}"), None).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(
        profile["predictions"]["churn_risk"], other["churn_risk"],
        "{profile}"
    );
    let (status, seg) = call(
        &app,
        "POST",
        "/api/v1/segments",
        Some(json!({"name": "At risk", "condition": {"computed": {"name": "churn_risk", "op": "gt", "value": 0.5}}})),
    )
    .await;
    assert_eq!(status, 201, "{seg}");
    let id = seg["id"].as_str().expect("an id").to_owned();
    let (status, members) =
        call(&app, "GET", &format!("/api/v1/segments/{id}/members"), None).await;
    assert_eq!(status, 200, "{members}");
    let risky = (0..240)
        .map(|i| format!("p{i}"))
        .filter(|p| persons.contains(p.as_str()))
        .count();
    assert!(risky > 0, "{members}");
    assert!(
        members.to_string().contains(&lapsed) == (risk(&other) > 0.5),
        "{members}"
    );

    // Features and scores for outside tools.
    let resp = app
        .http
        .get(format!("{}/api/v1/models/features", app.url))
        .bearer_auth(&app.secret_key)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.expect("body");
    assert_eq!(&bytes[..4], b"PAR1");

    // Recommendations and similar items.
    let (status, recs) = call(
        &app,
        "GET",
        "/api/v1/people/p0/recommendations?limit=5",
        None,
    )
    .await;
    assert_eq!(status, 200, "{recs}");
    let items = recs["items"].as_array().expect("items");
    assert!(!items.is_empty() && items.len() <= 5, "{recs}");
    // The same recommendations in a message template (cross-selling).
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows/preview",
        Some(json!({"person": "p0", "template": {
            "body": "{% for r in recommendations[:5] %}{{ r.item }} {% endfor %}"}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let listed: String = items
        .iter()
        .map(|r| format!("{} ", r["item"].as_str().expect("an item")))
        .collect();
    assert_eq!(v["content"]["body"].as_str(), Some(listed.as_str()), "{v}");
    let (status, sim) = call(&app, "GET", "/api/v1/items/sku-0/similar", None).await;
    assert_eq!(status, 200, "{sim}");
    assert!(
        !sim["similar"].as_array().expect("similar").is_empty(),
        "{sim}"
    );
    assert!(
        !sim["bought_together"]
            .as_array()
            .expect("together")
            .is_empty(),
        "{sim}"
    );

    // Forecasts with intervals.
    let (status, f) = call(
        &app,
        "GET",
        "/api/v1/forecasts?metric=revenue&interval=day",
        None,
    )
    .await;
    assert_eq!(status, 200, "{f}");
    let series = f["series"].as_array().expect("series");
    assert_eq!(series.len(), 1, "{f}");
    let points = series[0]["points"].as_array().expect("points");
    assert_eq!(points.len(), 30);
    for p in points {
        let (lo, v, hi) = (
            p["lower"].as_f64(),
            p["value"].as_f64(),
            p["upper"].as_f64(),
        );
        assert!(lo <= v && v <= hi, "{p}");
    }
    let (status, f) = call(
        &app,
        "GET",
        "/api/v1/forecasts?category=cat-1&metric=orders",
        None,
    )
    .await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["series"][0]["category"], "cat-1", "{f}");
    assert_eq!(f["series"].as_array().map(Vec::len), Some(1), "{f}");
    let (status, v) = call(&app, "GET", "/api/v1/forecasts?metric=profit", None).await;
    assert_eq!((status, v["field"].as_str()), (400, Some("metric")), "{v}");
    let (status, v) = call(&app, "GET", "/api/v1/models?kind=magic", None).await;
    assert_eq!((status, v["field"].as_str()), (400, Some("kind")), "{v}");

    // The churn summary the overview shows agrees with every person's own prediction.
    let (status, summary) = call(&app, "GET", "/api/v1/predictions/summary", None).await;
    assert_eq!(status, 200, "{summary}");
    let mut risks = Vec::new();
    for p in &persons {
        let (_, v) = call(
            &app,
            "GET",
            &format!("/api/v1/people/{p}/predictions"),
            None,
        )
        .await;
        risks.extend(v["churn_risk"].as_f64());
    }
    let churn = &summary["churn"];
    assert_eq!(churn["scored"], risks.len(), "{summary}");
    assert_eq!(
        churn["at_risk"],
        risks.iter().filter(|r| **r >= 0.5).count(),
        "{summary}"
    );
    assert_eq!(churn["threshold"], 0.5);
    let mean = risks.iter().sum::<f64>() / risks.len() as f64;
    assert!(
        churn["mean_risk"]
            .as_f64()
            .is_some_and(|m| (m - mean).abs() < 1e-9),
        "{summary}"
    );
    let (_, strict) = call(
        &app,
        "GET",
        "/api/v1/predictions/summary?threshold=0.9",
        None,
    )
    .await;
    assert_eq!(
        strict["churn"]["at_risk"],
        risks.iter().filter(|r| **r >= 0.9).count(),
        "{strict}"
    );
    for bad in ["threshold=0", "threshold=1.5", "threshold=high", "limit=3"] {
        let (status, v) = call(
            &app,
            "GET",
            &format!("/api/v1/predictions/summary?{bad}"),
            None,
        )
        .await;
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}: {v}"
        );
    }

    // A second training is judged against the version in use, on the same holdout.
    let second = train(&app).await;
    let churn = second["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["kind"] == "churn")
        .expect("churn")
        .clone();
    let version = churn["version"].as_u64().expect("version");
    assert!(version >= 2, "{churn}");
    assert!(churn["metrics"]["previous_score"].is_number(), "{churn}");
    assert!(
        churn["note"]
            .as_str()
            .expect("note")
            .contains("version in use"),
        "{churn}"
    );
    // Put the first version back.
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/models/churn/activate",
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, listed) = call(&app, "GET", "/api/v1/models?kind=churn", None).await;
    let active: Vec<(String, u64, bool)> = kinds(&listed).into_iter().filter(|k| k.2).collect();
    assert_eq!(active, [("churn".to_owned(), 1, true)], "{listed}");
    let (_, again) = call(&app, "GET", "/api/v1/people/p0/predictions", None).await;
    assert!(again["churn_risk"].is_number(), "{again}");
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/models/churn/activate",
        Some(json!({"version": 99})),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/models/forecast/activate",
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!((status, v["field"].as_str()), (400, Some("kind")), "{v}");
    let (_, before) = call(&app, "GET", "/api/v1/models", None).await;
    let (_, forecast) = call(&app, "GET", "/api/v1/forecasts?metric=orders", None).await;
    app.stop().await;

    // After a restart, the versions in use serve again once the column store has caught
    // up, without a training (no new version).
    let app = admin_app(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        let (status, v) = call(
            &app,
            "GET",
            "/api/v1/people/p0/recommendations?limit=5",
            None,
        )
        .await;
        if status == 200 {
            break v;
        }
        // The profiles catch up too.
        assert!(v["code"] == "not_ready" || v["code"] == "not_found", "{v}");
        assert!(Instant::now() < deadline, "never restored: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(back["items"], recs["items"], "{back}");
    let (_, after) = call(&app, "GET", "/api/v1/models", None).await;
    assert_eq!(after["models"], before["models"]);
    let (_, f) = call(&app, "GET", "/api/v1/forecasts?metric=orders", None).await;
    assert_eq!(f["series"], forecast["series"]);
    let (_, again_after) = call(&app, "GET", "/api/v1/people/p0/predictions", None).await;
    assert_eq!(
        again_after["churn_risk"], again["churn_risk"],
        "{again_after}"
    );
    app.stop().await;
}

fn ticket(user: &str, text: &str, n: usize) -> Value {
    json!({"type": "track", "event": "Ticket Created", "userId": user,
        "properties": {"text": text}, "messageId": format!("t{n}")})
}

/// A tenant's labelled texts train its own classifier, judged against the rules by
/// cross-validation; texts that arrive are labelled by it, so a workflow can start on a
/// negative one; an event's own sentiment is kept.
#[tokio::test]
async fn a_tenants_examples_label_the_texts_that_arrive() {
    let dir = tempfile::tempdir().expect("dir");
    let app = admin_app(dir.path()).await;
    let put = |body: Value| call(&app, "PUT", "/api/v1/models/sentiment/examples", Some(body));
    let late = [
        "still waiting for my parcel",
        "parcel has no tracking number",
        "order still not shipped",
        "waiting two weeks for the order",
        "no tracking and no reply",
        "where is my order",
        "the parcel is still not here",
        "my order was not shipped yet",
    ];
    let fine = [
        "arrived a day early",
        "the parcel came today",
        "colours exactly as pictured",
        "will order again",
        "arrived early and well packed",
        "the order came today",
        "exactly as pictured",
        "packed well and came early",
    ];
    let mut examples: Vec<Value> = Vec::new();
    for (a, b) in late.iter().zip(fine) {
        examples.push(json!({"text": a, "label": "negative"}));
        examples.push(json!({"text": b, "label": "positive"}));
    }
    // Bad input names its part; nothing is recorded.
    let mut wrong = examples.clone();
    wrong[3]["label"] = json!("angry");
    let (status, v) = put(json!({ "examples": wrong })).await;
    assert_eq!(
        (status, v["field"].as_str()),
        (400, Some("examples[3].label")),
        "{v}"
    );
    let (status, v) = put(json!({"examples": examples[..4]})).await;
    assert_eq!(
        (status, v["field"].as_str()),
        (400, Some("examples")),
        "{v}"
    );
    let one: Vec<Value> = examples
        .iter()
        .filter(|e| e["label"] == "negative")
        .cloned()
        .collect();
    let twice = [one.clone(), one].concat();
    let (status, v) = put(json!({ "examples": twice })).await;
    assert_eq!(
        (status, v["field"].as_str()),
        (400, Some("examples")),
        "{v}"
    );
    let (status, v) = put(json!({"examples": "no"})).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (_, v) = call(&app, "GET", "/api/v1/models?kind=sentiment", None).await;
    assert_eq!(v["models"], json!([]), "{v}");

    // Without a classifier the rules judge: "still waiting" is neutral to them.
    let (status, v) = app
        .post(
            "/v1/batch",
            json!({"batch": [ticket("ann", "still waiting on the parcel", 1)]}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // A workflow for unhappy customers.
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/workflows",
        Some(json!({"id": "care", "name": "Care",
        "definition": {
            "trigger": {"event": {"name": "Ticket Created",
                "where": [{"property": "sentiment_label", "op": "equals", "value": "negative"}]}},
            "steps": [{"id": "flag", "update_trait": {"name": "needs_care", "value": true}}]
        }})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = call(&app, "POST", "/api/v1/workflows/care/enable", None).await;
    assert_eq!(status, 200, "{v}");
    let (status, model) = put(json!({ "examples": examples })).await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(
        (model["kind"].as_str(), model["active"].as_bool()),
        (Some("sentiment"), Some(true)),
        "{model}"
    );
    let m = &model["metrics"];
    assert!(
        m["accuracy"].as_f64() > m["rules_accuracy"].as_f64(),
        "{model}"
    );
    assert_eq!(m["examples"], 16);
    let (status, v) = app
        .post("/v1/batch", json!({"batch": [
            ticket("bob", "still waiting on the parcel", 2),
            {"type": "track", "event": "Ticket Created", "userId": "cat", "messageId": "t3",
                "properties": {"text": "still waiting on the parcel", "sentiment_label": "positive"}}
        ]}).to_string())
        .await;
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        // The tickets (the workflow's own trait update is an event too).
        let events: Vec<Value> = app
            .all_events()
            .await
            .into_iter()
            .filter(|e| e["event"] == "Ticket Created")
            .collect();
        if events.len() == 3 {
            break events;
        }
        assert!(Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let label = |user: &str| {
        events
            .iter()
            .find(|e| e["userId"] == user)
            .map(|e| {
                (
                    e["properties"]["sentiment_label"].clone(),
                    e["properties"]["sentiment"].clone(),
                )
            })
            .expect("the event")
    };
    assert_eq!(label("ann").0, "neutral");
    assert_eq!(label("bob").0, "negative");
    assert!(label("bob").1.as_f64() < Some(0.0));
    // The sender's own judgement is kept.
    assert_eq!(label("cat"), (json!("positive"), Value::Null));
    // Only the negative ticket started the workflow.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = call(&app, "GET", "/api/v1/people/bob/journeys", None).await;
        if v["journeys"][0]["outcome"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for other in ["ann", "cat"] {
        let (_, v) = call(
            &app,
            "GET",
            &format!("/api/v1/people/{other}/journeys"),
            None,
        )
        .await;
        assert_eq!(v["journeys"], json!([]), "{other}: {v}");
    }
    app.stop().await;
}

/// Training is a job: 202 at once with its id, a status route, one running per tenant
/// (a second waits), and as of the log when asked for: what was ingested just before is in.
#[tokio::test]
async fn training_is_a_job_queued_per_tenant_as_of_the_request() {
    let dir = tempfile::tempdir().expect("dir");
    let app = admin_app(dir.path()).await;
    let events = shop();
    let persons: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["userId"].as_str()).collect();
    for chunk in events.chunks(500) {
        let (status, v) = app
            .post("/v1/batch", json!({ "batch": chunk }).to_string())
            .await;
        assert_eq!(status, 200, "{v}");
    }
    // Asked for right after the last ingest, twice at once.
    let end = app.log.end_offset();
    let asked = Instant::now();
    let (first, second) = tokio::join!(
        call(&app, "POST", "/api/v1/models/train", Some(json!({}))),
        call(
            &app,
            "POST",
            "/api/v1/models/train",
            Some(json!({"window_days": 365, "horizon_days": 30}))
        ),
    );
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    for (status, job) in [&first, &second] {
        assert_eq!(*status, 202, "{job}");
        assert!(
            matches!(job["state"].as_str(), Some("queued" | "running")),
            "{job}"
        );
        assert!(
            job["as_of_offset"].as_u64().expect("offset") >= end,
            "{job}"
        );
    }
    let (a, b) = (
        first.1["id"].as_str().expect("id"),
        second.1["id"].as_str().expect("id"),
    );
    assert_ne!(a, b);
    let (a, b) = (wait_job(&app, a).await, wait_job(&app, b).await);
    for job in [&a, &b] {
        assert_eq!(job["state"], "succeeded", "{job}");
        // Every person ingested before the request is in it, without waiting first.
        assert_eq!(job["result"]["persons"], persons.len(), "{job}");
    }
    // One at a time for the tenant: whichever started second started after the other ended.
    let at = |j: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(j[k].as_str().expect("a time")).expect("rfc 3339")
    };
    let (early, late) = if at(&a, "started_at") <= at(&b, "started_at") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(
        at(late, "started_at") >= at(early, "finished_at"),
        "{a} {b}"
    );
    // Each was trained with what it asked for.
    let clv_holdout = |j: &Value| {
        j["result"]["models"]
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["kind"] == "clv")
            .map(|m| m["metrics"]["holdout_days"].clone())
    };
    assert_eq!(
        (
            b["result"]["window_days"].clone(),
            b["result"]["horizon_days"].clone()
        ),
        (json!(365), json!(30)),
        "{b}"
    );
    assert_eq!(clv_holdout(&b), Some(json!(30)), "{b}");
    assert_eq!(
        (a["result"]["window_days"].clone(), clv_holdout(&a)),
        (json!(730), Some(json!(90))),
        "{a}"
    );
    // A job of another id, or another tenant's, is not found.
    let (status, v) = call(&app, "GET", "/api/v1/models/train/nope", None).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let other = app
        .store
        .create_tenant(livora_store::NewTenant {
            name: "Other".into(),
            time_zone: "UTC".into(),
            currency: livora_model::Currency::parse("EUR").expect("currency"),
        })
        .await
        .expect("tenant");
    let other = app
        .store
        .create_key_scoped(other.id, &[livora_store::Scope::Admin])
        .await
        .expect("key")
        .secret;
    let resp = app
        .http
        .get(format!(
            "{}/api/v1/models/train/{}",
            app.url,
            a["id"].as_str().expect("id")
        ))
        .bearer_auth(&other)
        .send()
        .await
        .expect("request");
    let (status, v) = crate::helpers::decode(resp).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    // Bad options are refused and name their field.
    for (body, field) in [
        (json!({"window_days": 10}), "window_days"),
        (json!({"horizon_days": 0}), "horizon_days"),
        (
            json!({"window_days": 100, "horizon_days": 90}),
            "horizon_days",
        ),
    ] {
        let (status, v) = call(&app, "POST", "/api/v1/models/train", Some(body.clone())).await;
        assert_eq!(
            (status, v["code"].as_str(), v["field"].as_str()),
            (400, Some("invalid_request"), Some(field)),
            "{body}: {v}"
        );
    }
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/models/train",
        Some(json!({"days": 3})),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    app.stop().await;
}

/// The most examples of the longest text fit in the body the route takes; one more
/// example is refused by count, not by size.
#[tokio::test]
async fn sentiment_examples_at_the_limit_are_taken() {
    let dir = tempfile::tempdir().expect("dir");
    let app = admin_app(dir.path()).await;
    let text = |i: usize, good: bool| {
        let word = if good { "lovely " } else { "broken " };
        let mut t = format!("{i} ");
        while t.len() + word.len() <= 1_000 {
            t.push_str(word);
        }
        t
    };
    let mut examples: Vec<Value> = (0..10_000)
        .map(|i| {
            let good = i % 2 == 0;
            json!({"text": text(i, good), "label": if good { "positive" } else { "negative" }})
        })
        .collect();
    let body = json!({ "examples": examples });
    assert!(body.to_string().len() > 2 * 1024 * 1024);
    let (status, v) = call(&app, "PUT", "/api/v1/models/sentiment/examples", Some(body)).await;
    assert_eq!(status, 200, "{v}");
    examples.push(json!({"text": "one more", "label": "neutral"}));
    let (status, v) = call(
        &app,
        "PUT",
        "/api/v1/models/sentiment/examples",
        Some(json!({ "examples": examples })),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str(), v["field"].as_str()),
        (400, Some("invalid_request"), Some("examples")),
        "{v}"
    );
    app.stop().await;
}
