//! Profiles survive a restart after the log's retention deleted the events they were built
//! from: the service reads its snapshot back (encrypted under the tenant key), then the log
//! after it. Un-merge, which needs every event, is refused once they are gone, and an
//! erasure forgets the person's personal data in place.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use livora_log::{EventLog, LogOptions, NewRecord};
use livora_model::clock::SystemClock;
use livora_model::{Currency, TenantId};
use livora_profiles::MergeRules;
use livora_profiles::identity::{EMAIL, Identifier, USER_ID};
use livora_profiles::service::{ProfileService, ServiceError, spec_of};
use livora_profiles::snapshot::{CONSUMER, Snapshots};
use livora_store::crypto::{Keyring, LocalKms};
use livora_store::profiles::SegmentRecord;
use livora_store::{MetadataStore, NewTenant, SqliteStore};
use serde_json::{Value, json};

fn log_options(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir.join("log"));
    // Small segments, and retention that deletes whatever every consumer has passed.
    o.segment_bytes = 4096;
    o.retention = Duration::ZERO;
    o.dedupe_window = Duration::ZERO;
    o.fsync = false;
    o
}

fn record(tenant: TenantId, n: u32, v: Value) -> NewRecord {
    let mut v = v;
    let m = v.as_object_mut().expect("object");
    let now = chrono::Utc::now().to_rfc3339();
    m.insert("messageId".into(), json!(format!("m{n}")));
    m.insert("timestamp".into(), json!(now));
    m.insert("receivedAt".into(), json!(now));
    NewRecord {
        tenant: tenant.0,
        id: format!("m{n}"),
        payload: v.to_string().into_bytes(),
    }
}

fn order(tenant: TenantId, n: u32, user: &str) -> NewRecord {
    record(
        tenant,
        n,
        json!({"type": "track", "userId": user, "event": "Order Completed",
            "properties": {"revenue": 10, "padding": "x".repeat(600)}}),
    )
}

struct Node {
    service: Arc<ProfileService>,
    follower: tokio::task::JoinHandle<()>,
}

/// A profiles service following `log`; snapshots in `snapshots/profiles` when given.
fn start_with(
    store: &Arc<dyn MetadataStore>,
    keyring: Option<&Arc<Keyring>>,
    log: &EventLog,
    snapshots: Option<&Path>,
) -> Node {
    let service = ProfileService::new(
        store.clone(),
        keyring.cloned(),
        Arc::new(SystemClock),
        MergeRules::default(),
        snapshots.map(|dir| Snapshots {
            dir: dir.join("profiles"),
            every: Duration::from_secs(3600),
        }),
    );
    let follower = tokio::spawn(service.clone().follow(log.clone()));
    Node { service, follower }
}

fn start(
    store: &Arc<dyn MetadataStore>,
    keyring: &Arc<Keyring>,
    log: &EventLog,
    dir: &Path,
) -> Node {
    start_with(store, Some(keyring), log, Some(dir))
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn settle(node: &Node, log: &EventLog) {
    let end = log.end_offset();
    until("the service to apply the log", || {
        node.service.caught_up() && node.service.applied() >= end
    })
    .await;
}

async fn snapshot(node: &Node, log: &EventLog) {
    settle(node, log).await;
    let end = node.service.applied();
    node.service.request_snapshot();
    until("the snapshot round to commit", || {
        log.consumer_offsets()
            .expect("offsets")
            .iter()
            .any(|(name, o)| name == CONSUMER && *o >= end)
    })
    .await;
}

fn person_traits(node: &Node, tenant: TenantId, user: &str) -> Option<(Value, u64)> {
    let t = node.service.tenant(tenant);
    let st = t.lock().expect("lock");
    let id = Identifier::new(USER_ID, user, &MergeRules::default())?;
    let person = st.engine.profiles().graph().person_of(&id)?;
    let (_, p) = st.engine.profiles().get(person)?;
    Some((Value::Object(p.traits.to_json()), p.computed.orders))
}

fn ada(node: &Node, tenant: TenantId) -> Option<livora_profiles::PersonId> {
    let t = node.service.tenant(tenant);
    let st = t.lock().expect("lock");
    let id = Identifier::new(USER_ID, "ada", &MergeRules::default())?;
    st.engine.profiles().graph().person_of(&id)
}

async fn tenant_and_keyring(
    store: &Arc<dyn MetadataStore>,
    master: u8,
) -> (TenantId, Arc<Keyring>) {
    let tenant = store
        .create_tenant(NewTenant {
            name: "Shop".into(),
            time_zone: "UTC".into(),
            currency: Currency::parse("USD").expect("currency"),
        })
        .await
        .expect("tenant")
        .id;
    let kms = Arc::new(LocalKms::new(&[master; 32], &[]).expect("kms"));
    (tenant, Arc::new(Keyring::new(store.clone(), kms)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_outlive_the_log_through_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn MetadataStore> = Arc::new(
        SqliteStore::open(&dir.path().join("livora.db"))
            .await
            .expect("store"),
    );
    let (tenant, keyring) = tenant_and_keyring(&store, 7).await;
    let log = EventLog::open(log_options(dir.path())).expect("log");

    let node = start(&store, &keyring, &log, dir.path());
    // A segment of buyers, saved while the service runs.
    let rule = json!({"condition": {"computed": {"name": "orders", "op": "gte", "value": 2}}});
    let now = chrono::Utc::now();
    let seg = SegmentRecord {
        id: "buyers".into(),
        tag: false,
        name: "Buyers".into(),
        description: String::new(),
        rule: rule.to_string(),
        created_by: "test".into(),
        created_at: now,
        updated_at: now,
    };
    settle(&node, &log).await;
    let spec = spec_of(&seg, &seg.rule).expect("spec");
    node.service
        .save(&log, tenant, seg, spec)
        .await
        .expect("saved");
    log.append(vec![
        record(
            tenant,
            1,
            json!({"type": "identify", "anonymousId": "anon-1", "userId": "ada",
                "traits": {"email": "ada@example.com", "plan": "pro"}}),
        ),
        // A second device, then an alias merges it into ada: merge 1.
        record(
            tenant,
            20,
            json!({"type": "page", "anonymousId": "anon-2", "name": "Home"}),
        ),
        record(
            tenant,
            2,
            json!({"type": "alias", "userId": "ada", "previousId": "anon-2"}),
        ),
    ])
    .await
    .expect("append");
    for n in 3..8 {
        log.append(vec![order(tenant, n, "ada")])
            .await
            .expect("append");
    }
    snapshot(&node, &log).await;
    let file = std::fs::read(dir.path().join("profiles").join(format!("{tenant}.snap")))
        .expect("a snapshot file");
    assert_eq!(&file[..4], b"LVPS");
    assert_eq!(file[5], 1, "sealed under the tenant key");
    assert!(
        !file.windows(15).any(|w| w == b"ada@example.com"),
        "no plaintext email"
    );

    // Retention deletes what the snapshot holds.
    let deleted = log.enforce_retention().expect("retention");
    assert!(deleted > 0, "the log's old segments go");
    assert!(log.start_offset() > 0);
    node.follower.abort();
    let _ = node.follower.await;

    // A restart reads the snapshot back, then the log after it.
    log.append(vec![order(tenant, 8, "ada")])
        .await
        .expect("append");
    let node = start(&store, &keyring, &log, dir.path());
    settle(&node, &log).await;
    let (traits, orders) = person_traits(&node, tenant, "ada").expect("ada is known");
    assert_eq!(traits["plan"], "pro", "{traits}");
    assert_eq!(traits["email"], "ada@example.com");
    assert_eq!(orders, 6, "5 orders from before the retention, 1 after");
    {
        let person = ada(&node, tenant).expect("ada");
        let t = node.service.tenant(tenant);
        let st = t.lock().expect("lock");
        assert!(
            st.engine
                .members("buyers", false)
                .expect("the segment survived")
                .contains(person)
        );
        assert!(
            !st.engine.profiles().graph().log().is_empty(),
            "merge log kept"
        );
    }
    // Un-merge replays every event: refused now that the log lost some.
    assert!(!node.service.history_complete(&log, tenant));
    let err = node
        .service
        .unmerge(&log, tenant, 1, "test")
        .await
        .expect_err("refused");
    assert!(matches!(err, ServiceError::HistoryGone(_)), "{err}");

    // An erasure forgets the personal data in place, and the next snapshot too.
    node.service
        .erase(&log, tenant, ada(&node, tenant))
        .await
        .expect("erased");
    let (traits, orders) = person_traits(&node, tenant, "ada").expect("ada's behaviour stays");
    assert_eq!(traits, json!({}), "traits forgotten");
    assert_eq!(orders, 6);
    let email = Identifier::new(EMAIL, "ada@example.com", &MergeRules::default()).expect("id");
    {
        let t = node.service.tenant(tenant);
        let st = t.lock().expect("lock");
        assert_eq!(st.engine.profiles().graph().person_of(&email), None);
    }
    // No round in between (a crash right after the answer): the erasure wrote its own.
    node.follower.abort();
    let _ = node.follower.await;
    let node = start(&store, &keyring, &log, dir.path());
    settle(&node, &log).await;
    let (traits, _) = person_traits(&node, tenant, "ada").expect("ada");
    assert_eq!(traits, json!({}), "the erasure reached the snapshot");
    node.follower.abort();
    let _ = node.follower.await;

    // A snapshot that cannot be read, once the log no longer holds what it replaced: the
    // service refuses to start and overwrites nothing.
    let path = dir.path().join("profiles").join(format!("{tenant}.snap"));
    let mut bytes = std::fs::read(&path).expect("file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let node = start(&store, &keyring, &log, dir.path());
    tokio::time::timeout(Duration::from_secs(30), node.follower)
        .await
        .expect("the follower stops")
        .expect("joins");
    assert!(!node.service.caught_up());
    let why = node.service.failure().expect("the failure is kept");
    assert!(why.contains("unreadable"), "{why}");
    assert_eq!(std::fs::read(&path).expect("file"), bytes, "left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_snapshot_falls_back_to_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn MetadataStore> = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let (tenant, keyring) = tenant_and_keyring(&store, 9).await;
    let mut opts = log_options(dir.path());
    opts.retention = Duration::from_secs(86_400);
    let log = EventLog::open(opts).expect("log");
    let node = start(&store, &keyring, &log, dir.path());
    for n in 1..4 {
        log.append(vec![order(tenant, n, "bob")])
            .await
            .expect("append");
    }
    snapshot(&node, &log).await;
    node.follower.abort();
    let _ = node.follower.await;
    // Damaged on disk: the service says so and rebuilds from the log (still whole here).
    let path = dir.path().join("profiles").join(format!("{tenant}.snap"));
    let mut bytes = std::fs::read(&path).expect("file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).expect("write");
    let node = start(&store, &keyring, &log, dir.path());
    settle(&node, &log).await;
    let (_, orders) = person_traits(&node, tenant, "bob").expect("bob");
    assert_eq!(orders, 3);
    assert!(node.service.history_complete(&log, tenant));
    node.follower.abort();
}

/// Without snapshots, a restart reads the whole log again: a merge-rule change is replayed
/// at the offset where it was made, so persons come out as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_rule_changes_replay_at_their_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn MetadataStore> = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let (tenant, _) = tenant_and_keyring(&store, 3).await;
    let log = EventLog::open(log_options(dir.path())).expect("log");
    let start = || start_with(&store, None, &log, None);
    let identify = |n, user: &str, device: &str| {
        record(
            tenant,
            n,
            json!({"type": "identify", "userId": user, "anonymousId": device}),
        )
    };
    let users_of = |node: &Node, user: &str| -> usize {
        let t = node.service.tenant(tenant);
        let st = t.lock().expect("lock");
        let id = Identifier::new(USER_ID, user, &MergeRules::default()).expect("id");
        let person = st.engine.profiles().graph().person_of(&id).expect("person");
        st.engine
            .profiles()
            .graph()
            .identifiers(person)
            .map_or(0, |ids| ids.iter().filter(|i| i.kind() == USER_ID).count())
    };
    let node = start();
    log.append(vec![identify(1, "u1", "dev-a"), identify(2, "u2", "dev-a")])
        .await
        .expect("append");
    settle(&node, &log).await;
    let mut rules = MergeRules::default();
    rules.limits.insert(USER_ID.into(), 2);
    node.service
        .set_rules(tenant, rules, "test")
        .await
        .expect("rules");
    log.append(vec![identify(3, "u3", "dev-b"), identify(4, "u4", "dev-b")])
        .await
        .expect("append");
    settle(&node, &log).await;
    assert_eq!((users_of(&node, "u1"), users_of(&node, "u3")), (1, 2));
    node.follower.abort();
    let _ = node.follower.await;
    let node = start();
    settle(&node, &log).await;
    assert_eq!(
        (users_of(&node, "u1"), users_of(&node, "u3")),
        (1, 2),
        "the same persons after reading the log again"
    );
    node.follower.abort();
}

/// With encryption at rest, stored definitions are sealed; a restart (here without
/// snapshots, so everything comes from the store and the log) reads them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_definitions_load_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn MetadataStore> = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let (tenant, keyring) = tenant_and_keyring(&store, 5).await;
    let log = EventLog::open(log_options(dir.path())).expect("log");
    let start = || start_with(&store, Some(&keyring), &log, None);
    let node = start();
    settle(&node, &log).await;
    let rule = json!({"condition": {"trait": {"name": "email", "op": "equals", "value": "ceo@example.com"}}});
    let def = livora_model::segment::Definition::parse(&rule).expect("valid");
    let spec = livora_profiles::segments::Spec {
        id: "ceo".into(),
        tag: false,
        rule: livora_profiles::segments::Rule::Condition(def),
    };
    let now = chrono::Utc::now();
    let record = SegmentRecord {
        id: "ceo".into(),
        tag: false,
        name: "CEO".into(),
        description: String::new(),
        rule: node
            .service
            .stored_rule(tenant, "ceo", false, &spec.rule)
            .await
            .expect("sealed"),
        created_by: "test".into(),
        created_at: now,
        updated_at: now,
    };
    assert!(!record.rule.contains("ceo@example.com"), "{}", record.rule);
    node.service
        .save(&log, tenant, record, spec)
        .await
        .expect("saved");
    log.append(vec![record_of(tenant)]).await.expect("append");
    settle(&node, &log).await;
    node.follower.abort();
    let _ = node.follower.await;
    let node = start();
    settle(&node, &log).await;
    let t = node.service.tenant(tenant);
    let st = t.lock().expect("lock");
    assert_eq!(
        st.engine.members("ceo", false).map(|m| m.len()),
        Some(1),
        "the definition came back and holds the CEO"
    );
    drop(st);
    node.follower.abort();
}

fn record_of(tenant: TenantId) -> NewRecord {
    record(
        tenant,
        1,
        json!({"type": "identify", "userId": "boss", "traits": {"email": "ceo@example.com"}}),
    )
}
