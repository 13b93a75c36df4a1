//! The automation service over a real event log and a real store, with an injected clock:
//! the abandoned cart sends once after the timeout and never when the order comes in time,
//! across a restart of the service (journeys, timers and the log offset read back from the
//! store), with nothing sent twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use livora_automation::people::{Directory, Person};
use livora_automation::service::{AutomationService, PlainSink};
use livora_log::{EventLog, LogOptions, NewRecord};
use livora_model::TenantId;
use livora_model::clock::ManualClock;
use livora_store::automation::{AutomationStore, OutboxStatus};
use livora_store::{MetadataStore, NewTenant, SqliteStore};
use serde_json::{Value, json};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 3, 10, 0, 0)
        .single()
        .expect("time")
}

fn record(tenant: TenantId, v: Value) -> NewRecord {
    let mut v = v;
    v["timestamp"] = json!(t0().to_rfc3339());
    v["receivedAt"] = json!(t0().to_rfc3339());
    NewRecord {
        tenant: tenant.0,
        id: v["messageId"].as_str().expect("id").to_owned(),
        payload: v.to_string().into_bytes(),
    }
}

fn person(user: &str) -> Person {
    Person {
        keys: vec![format!("u:{user}")],
        traits: json!({"email": format!("{user}@example.test"), "first_name": user})
            .as_object()
            .cloned()
            .expect("object"),
        ..Person::default()
    }
}

async fn start(
    store: Arc<SqliteStore>,
    log: &EventLog,
    clock: Arc<ManualClock>,
    people: Arc<Directory>,
) -> (Arc<AutomationService>, tokio::task::JoinHandle<()>) {
    let svc = AutomationService::new(store, None, clock, people, Arc::new(PlainSink(log.clone())));
    svc.load().await.expect("load");
    let follower = tokio::spawn(svc.clone().follow(log.clone()));
    (svc, follower)
}

/// Polls `f` for up to 20 s: generous, since a loaded machine (a build's writeback makes
/// the log's fsyncs slow) once took more than the 4 s this used to allow.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..2000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abandoned_cart_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("livora.db"))
            .await
            .expect("store"),
    );
    let tenant = store
        .create_tenant(NewTenant {
            name: "Shop".into(),
            time_zone: "UTC".into(),
            currency: livora_model::Currency::parse("EUR").expect("currency"),
        })
        .await
        .expect("tenant")
        .id;
    let log_dir = dir.path().join("log");
    let log = EventLog::open(LogOptions::new(log_dir)).expect("log");
    let clock = Arc::new(ManualClock::new(t0()));
    let mut dir_people = Directory::default();
    for u in ["ada", "bob"] {
        dir_people.put(tenant, person(u));
    }
    let people = Arc::new(dir_people);
    let definition = json!({
        "trigger": {"event": {"name": "Product Added"}},
        "goal": {"event": "Order Completed", "same": ["cart_id"]},
        "steps": [
            {"id": "wait", "wait_for": {"event": "Order Completed", "same": ["cart_id"], "timeout_minutes": 60}},
            {"id": "remind", "send": {"channel": "email", "category": "transactional",
                "template": {"subject": "Your {{ event.properties.name }}", "body": "Hi {{ traits.first_name }}"}}}
        ]
    });
    let text = definition.to_string();
    store
        .add_workflow_version(tenant, "cart", "Cart", "", &text, "test")
        .await
        .expect("workflow");
    store
        .set_enabled_version(tenant, "cart", Some(1))
        .await
        .expect("enable");

    let (svc, follower) = start(store.clone(), &log, clock.clone(), people.clone()).await;
    // The service starts at the end of the log: what comes next counts. It has started once
    // it has written that place (`applied` is 0 = the empty log's end before it even ran, so
    // waiting on it let the events below come first and be skipped as the past: a flake
    // under load).
    until("the follower started", async || {
        store
            .automation_offset(livora_automation::service::CONSUMER)
            .await
            .expect("offset")
            .is_some()
    })
    .await;
    log.append(vec![
        record(
            tenant,
            json!({"type": "track", "userId": "ada", "event": "Product Added", "messageId": "a1",
            "properties": {"cart_id": "c-ada", "name": "Lamp"}}),
        ),
        record(
            tenant,
            json!({"type": "track", "userId": "bob", "event": "Product Added", "messageId": "b1",
            "properties": {"cart_id": "c-bob", "name": "Rug"}}),
        ),
    ])
    .await
    .expect("append");
    until("two journeys wait", async || {
        svc.with_runtime(|rt| rt.timer_count()) == 2
    })
    .await;
    // Bob orders in time.
    log.append(vec![record(
        tenant,
        json!({"type": "track", "userId": "bob", "event": "Order Completed",
        "messageId": "b2", "properties": {"cart_id": "c-bob"}}),
    )])
    .await
    .expect("append");
    until("bob's journey ended", async || {
        svc.with_runtime(|rt| rt.timer_count()) == 1
    })
    .await;

    // A crash: the service goes away with ada's timer pending, after its state reached the
    // store (the runtime drops bob's timer before the commit that says so is written; a crash
    // in between is the replay case below, not this one).
    until("bob's order is committed", async || {
        store
            .automation_offset(livora_automation::service::CONSUMER)
            .await
            .expect("offset")
            == Some(log.end_offset())
    })
    .await;
    follower.abort();
    let _ = follower.await;
    drop(svc);
    let (svc, follower) = start(store.clone(), &log, clock.clone(), people.clone()).await;
    assert_eq!(
        svc.with_runtime(|rt| rt.timer_count()),
        1,
        "the timer is read back"
    );
    // Nothing yet: 59 minutes.
    clock.set(t0() + chrono::Duration::minutes(59));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        store
            .messages(tenant, None, 10)
            .await
            .expect("outbox")
            .is_empty()
    );
    clock.set(t0() + chrono::Duration::minutes(61));
    until("the reminder is in the outbox", async || {
        !store
            .messages(tenant, None, 10)
            .await
            .expect("outbox")
            .is_empty()
    })
    .await;
    let out = store.messages(tenant, None, 10).await.expect("outbox");
    assert_eq!(out.len(), 1, "ada only");
    assert_eq!(out[0].person, "u:ada");
    assert_eq!(out[0].status, OutboxStatus::Pending);
    let m: Value = serde_json::from_str(&out[0].message).expect("message");
    assert_eq!(m["content"]["subject"], "Your Lamp");
    assert_eq!(m["to"], "ada@example.test");

    // Restart again, with the offset before the events (as if the last commit was lost):
    // reading them again changes nothing.
    follower.abort();
    let _ = follower.await;
    store
        .commit(livora_store::automation::AutomationCommit {
            offset: Some((livora_automation::service::CONSUMER.into(), 0)),
            ..Default::default()
        })
        .await
        .expect("rewind");
    let (svc, follower) = start(store.clone(), &log, clock.clone(), people.clone()).await;
    until("read again", async || svc.applied() == log.end_offset()).await;
    clock.set(t0() + chrono::Duration::hours(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store
            .messages(tenant, None, 10)
            .await
            .expect("outbox")
            .len(),
        1,
        "nothing twice"
    );
    follower.abort();
}
