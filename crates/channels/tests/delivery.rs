//! The outbox sender with real providers (webhooks to local servers), a real store and an
//! injected clock: retries with backoff, fail-over to the secondary provider, dead letters
//! with the reason, and the delivery policy (consent, frequency caps, quiet hours) checked
//! before any provider is called.

mod local;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use livora_automation::outbox::{FixedRoutes, Limits, Retry, Route, Sender};
use livora_automation::policy::Policy;
use livora_automation::runtime::Message;
use livora_automation::service::outbox_row;
use livora_channels::webhook::Webhook;
use livora_model::TenantId;
use livora_model::clock::{Clock, ManualClock};
use livora_model::workflow::Category;
use livora_store::automation::{AutomationCommit, AutomationStore, OutboxStatus};
use livora_store::{Consent, MetadataStore, NewTenant, PrivacyStore, SqliteStore};
use serde_json::{Map, json};

use local::Provider;

/// Noon in Paris, 2026-06-03.
fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 3, 10, 0, 0)
        .single()
        .expect("time")
}

async fn setup() -> (Arc<SqliteStore>, TenantId, Arc<ManualClock>) {
    let store = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let tenant = store
        .create_tenant(NewTenant {
            name: "Shop".into(),
            time_zone: "Europe/Paris".into(),
            currency: livora_model::Currency::parse("EUR").expect("currency"),
        })
        .await
        .expect("tenant")
        .id;
    (store, tenant, Arc::new(ManualClock::new(noon())))
}

fn message(tenant: TenantId, key: &str, channel: &str, to: &str, at: DateTime<Utc>) -> Message {
    let mut content = Map::new();
    content.insert("subject".into(), json!("Hello"));
    content.insert("body".into(), json!("{\"hello\": true}"));
    Message {
        key: key.into(),
        tenant,
        workflow: "wf".into(),
        version: 1,
        journey: key.split('/').next().unwrap_or(key).into(),
        step: "s".into(),
        person: "u:ada".into(),
        channel: channel.into(),
        category: Category::Marketing,
        subscription: None,
        to: Some(to.into()),
        content,
        time_zone: Some("Europe/Paris".into()),
        decided_at: at,
        error: None,
    }
}

async fn put(store: &SqliteStore, messages: &[Message]) {
    store
        .commit(AutomationCommit {
            messages: messages.iter().map(outbox_row).collect(),
            ..AutomationCommit::default()
        })
        .await
        .expect("commit");
}

fn sender(
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    routes: HashMap<String, Route>,
) -> Arc<Sender> {
    let store: Arc<dyn MetadataStore> = store;
    Arc::new(Sender::new(
        store,
        clock,
        Arc::new(FixedRoutes(routes)),
        Policy::default(),
        Retry {
            attempts: 2,
            base: Duration::seconds(10),
        },
    ))
}

#[tokio::test]
async fn a_failing_provider_leads_to_retry_fail_over_and_a_dead_letter() {
    let (store, tenant, clock) = setup().await;
    let primary = Provider::default();
    primary.answer(503, r#"{"error": "down"}"#);
    let secondary = Provider::default();
    secondary.answer(500, r#"{"error": "also down"}"#);
    secondary.answer(200, "{}");
    let (p_url, s_url) = (primary.start().await, secondary.start().await);
    // The webhook channel sends to the message's URL; the two providers differ by the
    // address each route was configured with, so route through two webhook providers that
    // rewrite nothing: the primary gets the first two attempts, the secondary the rest.
    let routes = HashMap::from([(
        "webhook".to_owned(),
        Route {
            primary: Arc::new(Redirect(
                Webhook::with_egress(b"k", local::egress()),
                p_url.clone(),
            )),
            secondary: Some(Arc::new(Redirect(
                Webhook::with_egress(b"k", local::egress()),
                s_url.clone(),
            ))),
            per_second: None,
        },
    )]);
    let s = sender(store.clone(), clock.clone(), routes);
    put(
        &store,
        &[message(tenant, "j1/hook", "webhook", "/hook", noon())],
    )
    .await;

    assert_eq!(s.send_due().await.expect("send"), 1);
    let row = store
        .message(tenant, "j1/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!((row.status, row.attempts), (OutboxStatus::Pending, 1));
    assert!(
        row.reason.as_deref().is_some_and(|r| r.contains("503")),
        "{:?}",
        row.reason
    );
    // Backoff: 10 s ± 50 %; nothing is due before 5 s.
    let wait = row.due_at - noon();
    assert!(
        wait >= Duration::seconds(5) && wait <= Duration::seconds(15),
        "{wait}"
    );
    clock.set(noon() + Duration::seconds(4));
    assert_eq!(s.send_due().await.expect("send"), 0);
    clock.set(row.due_at);
    s.send_due().await.expect("send");
    let row = store
        .message(tenant, "j1/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.attempts, 2);
    // Attempt 3 goes to the secondary (which fails once), attempt 4 gets through.
    for _ in 0..2 {
        clock.set(row.due_at.max(clock.now()) + Duration::seconds(60));
        s.send_due().await.expect("send");
    }
    let row = store
        .message(tenant, "j1/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!((row.status, row.attempts), (OutboxStatus::Sent, 4));
    assert_eq!(primary.seen().len(), 2);
    assert_eq!(secondary.seen().len(), 2);
    for r in primary.seen().iter().chain(secondary.seen().iter()) {
        assert_eq!(
            r.header("idempotency-key"),
            Some("j1/hook"),
            "one key for every attempt"
        );
    }

    // Both down for good: a dead letter with the last reason.
    put(
        &store,
        &[message(tenant, "j2/hook", "webhook", "/hook", clock.now())],
    )
    .await;
    secondary.answers.lock().expect("lock").clear();
    secondary.answer(502, r#"{"error": "gone"}"#);
    for _ in 0..6 {
        s.send_due().await.expect("send");
        clock.set(clock.now() + Duration::minutes(10));
    }
    let row = store
        .message(tenant, "j2/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.status, OutboxStatus::Dead);
    assert!(
        row.reason.as_deref().is_some_and(|r| r.contains("502")),
        "{:?}",
        row.reason
    );
    let dead = store
        .messages(tenant, Some(OutboxStatus::Dead), 10)
        .await
        .expect("list");
    assert_eq!(dead.len(), 1);
}

/// A webhook provider that sends to its own base URL plus the message's path (so two
/// providers of one route reach two local servers).
struct Redirect(Webhook, String);

#[async_trait::async_trait]
impl livora_automation::outbox::Channel for Redirect {
    fn provider(&self) -> &str {
        "webhook"
    }

    async fn send(
        &self,
        m: &livora_automation::outbox::Outgoing,
    ) -> Result<Option<String>, livora_automation::outbox::SendError> {
        let mut m = m.clone();
        m.to = format!("{}{}", self.1, m.to);
        self.0.send(&m).await
    }
}

#[tokio::test]
async fn policy_blocks_holds_and_caps_before_any_provider_is_called() {
    let (store, tenant, clock) = setup().await;
    let provider = Provider::default();
    let url = provider.start().await;
    let routes = HashMap::from([(
        "email".to_owned(),
        Route {
            primary: Arc::new(Redirect(Webhook::with_egress(b"k", local::egress()), url)),
            secondary: None,
            per_second: Some(1000),
        },
    )]);
    let s = sender(store.clone(), clock.clone(), routes);
    // Marketing emails at noon: the cap (2 a day) stops the third and the fourth.
    put(
        &store,
        &[
            message(tenant, "a/1", "email", "/mail", noon()),
            // A third in the same batch: the cap counts what the batch already allowed.
            message(
                tenant,
                "x/1",
                "email",
                "/mail",
                noon() + Duration::seconds(1),
            ),
            message(
                tenant,
                "b/1",
                "email",
                "/mail",
                noon() + Duration::milliseconds(500),
            ),
        ],
    )
    .await;
    clock.set(noon() + Duration::seconds(1));
    s.send_due().await.expect("send");
    put(
        &store,
        &[message(
            tenant,
            "c/1",
            "email",
            "/mail",
            noon() + Duration::seconds(2),
        )],
    )
    .await;
    clock.set(noon() + Duration::seconds(2));
    s.send_due().await.expect("send");
    let status = |k: &'static str| {
        let store = store.clone();
        async move { store.message(tenant, k).await.expect("read").expect("row") }
    };
    assert_eq!(status("a/1").await.status, OutboxStatus::Sent);
    assert_eq!(status("b/1").await.status, OutboxStatus::Sent);
    assert_eq!(status("x/1").await.status, OutboxStatus::Blocked);
    let c = status("c/1").await;
    assert_eq!(c.status, OutboxStatus::Blocked);
    assert!(
        c.reason
            .as_deref()
            .is_some_and(|r| r.contains("frequency cap")),
        "{:?}",
        c.reason
    );
    assert_eq!(provider.seen().len(), 2);

    // 22:30 in Paris: held until 08:00, then sent (a new day: the cap has room again).
    let late = Utc
        .with_ymd_and_hms(2026, 6, 4, 20, 30, 0)
        .single()
        .expect("time");
    put(&store, &[message(tenant, "d/1", "email", "/mail", late)]).await;
    clock.set(late);
    s.send_due().await.expect("send");
    let d = status("d/1").await;
    assert_eq!(d.status, OutboxStatus::Pending);
    let morning = Utc
        .with_ymd_and_hms(2026, 6, 5, 6, 0, 0)
        .single()
        .expect("time");
    assert_eq!(d.due_at, morning);
    assert_eq!(provider.seen().len(), 2, "nothing sent in quiet hours");
    clock.set(morning);
    s.send_due().await.expect("send");
    assert_eq!(status("d/1").await.status, OutboxStatus::Sent);

    // An opt-out blocks, without calling the provider.
    store
        .add_consent(
            tenant,
            &Consent {
                subject: "u:ada".into(),
                purpose: "email".into(),
                granted: false,
                source: "unsubscribe_link".into(),
                recorded_at: morning,
                recorded_by: "test".into(),
            },
        )
        .await
        .expect("consent");
    put(&store, &[message(tenant, "e/1", "email", "/mail", morning)]).await;
    s.send_due().await.expect("send");
    let e = status("e/1").await;
    assert_eq!(e.status, OutboxStatus::Blocked);
    assert_eq!(e.reason.as_deref(), Some("opted out of email"));
    assert_eq!(provider.seen().len(), 3);
}

/// A sender on the real clock (for the tests that measure time as it passes).
fn real_sender(store: Arc<SqliteStore>, routes: HashMap<String, Route>, retry: Retry) -> Sender {
    let store: Arc<dyn MetadataStore> = store;
    Sender::new(
        store,
        Arc::new(livora_model::clock::SystemClock),
        Arc::new(FixedRoutes(routes)),
        Policy::default(),
        retry,
    )
}

fn webhook_route(base: &str) -> HashMap<String, Route> {
    HashMap::from([(
        "webhook".to_owned(),
        Route {
            primary: Arc::new(Redirect(
                Webhook::with_egress(b"k", local::egress()),
                base.to_owned(),
            )),
            secondary: None,
            per_second: None,
        },
    )])
}

#[tokio::test]
async fn the_backoff_counts_from_the_failure_not_from_the_batch_start() {
    let (store, tenant, _) = setup().await;
    // A receiver that answers 500 only after 2 s (as a timeout would).
    let provider = Provider::default();
    provider.answer_after(
        500,
        r#"{"error": "slow and down"}"#,
        std::time::Duration::from_secs(2),
    );
    let url = provider.start().await;
    let s = Arc::new(real_sender(
        store.clone(),
        webhook_route(&url),
        Retry {
            attempts: 3,
            base: Duration::seconds(2),
        },
    ));
    put(
        &store,
        &[message(tenant, "slow/hook", "webhook", "/slow", Utc::now())],
    )
    .await;
    s.send_due().await.expect("send");
    let failed_at = Utc::now();
    let row = store
        .message(tenant, "slow/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!((row.status, row.attempts), (OutboxStatus::Pending, 1));
    // The first backoff is 2 s ± 50 %: at least 1 s after the failure, which came 2 s
    // after the send started.
    let after_failure = row.due_at - failed_at;
    assert!(
        after_failure >= Duration::milliseconds(900),
        "retry due {after_failure} after the failure"
    );
    assert!(
        row.updated_at >= failed_at - Duration::milliseconds(500),
        "updated at the failure"
    );
}

/// Polls `check` every 20 ms for up to `within`; true as soon as it holds.
async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn plain_webhook_route() -> HashMap<String, Route> {
    HashMap::from([(
        "webhook".to_owned(),
        Route {
            primary: Arc::new(Webhook::with_egress(b"k", local::egress())),
            secondary: None,
            per_second: None,
        },
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_call_holds_up_no_other_message_and_one_destination_takes_few_slots() {
    let (store, tenant, _) = setup().await;
    // One receiver hangs for 20 s; another answers at once.
    let hung = Provider::default();
    hung.answer_after(200, "{}", std::time::Duration::from_secs(20));
    let hung_url = hung.start().await;
    let healthy = Provider::default();
    let healthy_url = healthy.start().await;
    let s = Arc::new(
        real_sender(
            store.clone(),
            plain_webhook_route(),
            Retry {
                attempts: 3,
                base: Duration::seconds(10),
            },
        )
        .with_limits(Limits {
            in_flight: 4,
            per_tenant: 4,
            per_destination: 2,
            send_timeout: std::time::Duration::from_secs(30),
        }),
    );
    let hooks: Vec<Message> = (0..3)
        .map(|i| {
            message(
                tenant,
                &format!("hang{i}/hook"),
                "webhook",
                &format!("{hung_url}/hang"),
                Utc::now(),
            )
        })
        .collect();
    put(&store, &hooks).await;
    let changed = Arc::new(tokio::sync::Notify::new());
    let running = tokio::spawn(s.clone().run(changed.clone()));
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            hung.seen().len() >= 2
        })
        .await,
        "the hung receiver was called"
    );
    // Each hanging message's attempt is recorded before its call returns.
    let flying = store
        .list_messages(tenant, &Default::default(), 10)
        .await
        .expect("list");
    assert_eq!(
        flying.iter().filter(|r| r.attempts == 1).count(),
        2,
        "{flying:?}"
    );

    // A healthy message, due now, goes out (and is marked sent) within a second while the
    // others hang.
    let started = std::time::Instant::now();
    put(
        &store,
        &[message(
            tenant,
            "fine/hook",
            "webhook",
            &format!("{healthy_url}/ok"),
            Utc::now(),
        )],
    )
    .await;
    changed.notify_one();
    let sent = eventually(std::time::Duration::from_secs(5), || {
        let store = store.clone();
        async move {
            store
                .message(tenant, "fine/hook")
                .await
                .expect("read")
                .is_some_and(|r| r.status == OutboxStatus::Sent)
        }
    })
    .await;
    let took = started.elapsed();
    assert!(sent, "the healthy message was not sent");
    assert!(
        took < std::time::Duration::from_secs(1),
        "a healthy message waited {took:?} behind a hung call"
    );
    assert_eq!(healthy.seen().len(), 1);
    // The hung destination holds two slots, not all four: the third message waits.
    assert_eq!(hung.seen().len(), 2, "at most 2 calls to one destination");
    running.abort();
}

/// A message whose attempts were made before errors were kept (no entries for them) does
/// not get its retries again once a new failure adds an entry: its last allowed attempt
/// that fails makes it a dead letter.
#[tokio::test]
async fn attempts_from_before_errors_were_kept_still_count() {
    let (store, tenant, _) = setup().await;
    let provider = Provider::default();
    provider.answer(500, "{}");
    let url = provider.start().await;
    let s = Arc::new(real_sender(
        store.clone(),
        plain_webhook_route(),
        Retry {
            attempts: 4,
            base: Duration::seconds(10),
        },
    ));
    let mut row = outbox_row(&message(
        tenant,
        "old/hook",
        "webhook",
        &format!("{url}/x"),
        Utc::now(),
    ));
    row.attempts = 3;
    store
        .commit(AutomationCommit {
            messages: vec![row],
            ..AutomationCommit::default()
        })
        .await
        .expect("commit");
    s.send_due().await.expect("send");
    let back = store
        .message(tenant, "old/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        (back.status, back.attempts),
        (OutboxStatus::Dead, 4),
        "{back:?}"
    );
    assert_eq!(provider.seen().len(), 1);
}

/// A provider that panics on its first call and accepts the later ones.
struct PanicsOnce(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl livora_automation::outbox::Channel for PanicsOnce {
    fn provider(&self) -> &str {
        "flaky"
    }

    async fn send(
        &self,
        _: &livora_automation::outbox::Outgoing,
    ) -> Result<Option<String>, livora_automation::outbox::SendError> {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("a provider bug");
        }
        Ok(Some("accepted".into()))
    }
}

/// A provider that panics during a call does not keep the message in flight forever: the
/// sender goes on, the attempt stays recorded as cut short, and the message is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_panics_does_not_keep_its_message_in_flight() {
    let (store, tenant, _) = setup().await;
    let provider = Arc::new(PanicsOnce(std::sync::atomic::AtomicUsize::new(0)));
    let routes = HashMap::from([(
        "webhook".to_owned(),
        Route {
            primary: provider.clone(),
            secondary: None,
            per_second: None,
        },
    )]);
    let s = Arc::new(real_sender(store.clone(), routes, Retry::default()));
    put(
        &store,
        &[message(
            tenant,
            "panic/hook",
            "webhook",
            "https://hooks.example/x",
            Utc::now(),
        )],
    )
    .await;
    let running = tokio::spawn(s.clone().run(Arc::new(tokio::sync::Notify::new())));
    let sent = eventually(std::time::Duration::from_secs(5), || {
        let store = store.clone();
        async move {
            store
                .message(tenant, "panic/hook")
                .await
                .expect("read")
                .is_some_and(|r| r.status == OutboxStatus::Sent)
        }
    })
    .await;
    assert!(sent, "the message stayed in flight after the panic");
    let row = store
        .message(tenant, "panic/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.attempts, 2, "{row:?}");
    assert_eq!(provider.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(
        row.errors
            .first()
            .is_some_and(|e| e.attempt == 1 && e.error.contains("node stopped")),
        "the panicked attempt stays recorded as cut short: {:?}",
        row.errors
    );
    assert!(!running.is_finished(), "the sender goes on");
    running.abort();
}

/// A tenant whose endpoints all hang takes its own share of the node's slots, not all of
/// them: another tenant's message still goes out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_hung_endpoints_leave_other_tenants_their_slots() {
    let (store, tenant, _) = setup().await;
    let other = store
        .create_tenant(NewTenant {
            name: "Other shop".into(),
            time_zone: "UTC".into(),
            currency: livora_model::Currency::parse("EUR").expect("currency"),
        })
        .await
        .expect("tenant")
        .id;
    // Three receivers (three destinations), each hanging for 20 s.
    let mut hung = Vec::new();
    let mut hooks = Vec::new();
    for d in 0..3 {
        let p = Provider::default();
        p.answer_after(200, "{}", std::time::Duration::from_secs(20));
        let url = p.start().await;
        for i in 0..2 {
            hooks.push(message(
                tenant,
                &format!("hang{d}-{i}/hook"),
                "webhook",
                &format!("{url}/hang"),
                Utc::now(),
            ));
        }
        hung.push(p);
    }
    let healthy = Provider::default();
    let healthy_url = healthy.start().await;
    // Without a tenant's limit the six hanging calls (two per destination) would fill the
    // node's six slots.
    let s = Arc::new(
        real_sender(
            store.clone(),
            plain_webhook_route(),
            Retry {
                attempts: 3,
                base: Duration::seconds(10),
            },
        )
        .with_limits(Limits {
            in_flight: 6,
            per_tenant: 3,
            per_destination: 2,
            send_timeout: std::time::Duration::from_secs(30),
        }),
    );
    put(&store, &hooks).await;
    let changed = Arc::new(tokio::sync::Notify::new());
    let running = tokio::spawn(s.clone().run(changed.clone()));
    let calls = || hung.iter().map(|p| p.seen().len()).sum::<usize>();
    assert!(
        eventually(std::time::Duration::from_secs(5), || async { calls() >= 3 }).await,
        "the hung receivers were called"
    );
    let started = std::time::Instant::now();
    put(
        &store,
        &[message(
            other,
            "fine/hook",
            "webhook",
            &format!("{healthy_url}/ok"),
            Utc::now(),
        )],
    )
    .await;
    changed.notify_one();
    let sent = eventually(std::time::Duration::from_secs(5), || {
        let store = store.clone();
        async move {
            store
                .message(other, "fine/hook")
                .await
                .expect("read")
                .is_some_and(|r| r.status == OutboxStatus::Sent)
        }
    })
    .await;
    let took = started.elapsed();
    assert!(sent, "the other tenant's message was not sent");
    assert!(
        took < std::time::Duration::from_secs(1),
        "another tenant's message waited {took:?} behind hung calls"
    );
    assert_eq!(calls(), 3, "at most 3 calls in flight for one tenant");
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_is_marked_when_its_own_call_returns() {
    let (store, tenant, _) = setup().await;
    let slow = Provider::default();
    slow.answer_after(200, "{}", std::time::Duration::from_secs(3));
    let slow_url = slow.start().await;
    let fast = Provider::default();
    let fast_url = fast.start().await;
    let s = Arc::new(real_sender(
        store.clone(),
        plain_webhook_route(),
        Retry::default(),
    ));
    put(
        &store,
        &[
            message(
                tenant,
                "slow/hook",
                "webhook",
                &format!("{slow_url}/s"),
                Utc::now(),
            ),
            message(
                tenant,
                "fast/hook",
                "webhook",
                &format!("{fast_url}/f"),
                Utc::now(),
            ),
        ],
    )
    .await;
    let batch = tokio::spawn({
        let s = s.clone();
        async move { s.send_due().await }
    });
    // The fast one is sent and recorded while the slow one's call still runs.
    let marked = eventually(std::time::Duration::from_secs(2), || {
        let store = store.clone();
        async move {
            store
                .message(tenant, "fast/hook")
                .await
                .expect("read")
                .is_some_and(|r| r.status == OutboxStatus::Sent)
        }
    })
    .await;
    assert!(
        marked,
        "the fast message was not marked before the batch ended"
    );
    let slow_row = store
        .message(tenant, "slow/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        (slow_row.status, slow_row.attempts),
        (OutboxStatus::Pending, 1),
        "the attempt is recorded before the call"
    );
    // Until its call returns it reads as cut short: a kill now leaves it counted.
    assert_eq!(slow_row.errors.len(), 1);
    assert!(slow_row.errors[0].error.contains("node stopped"));
    assert!(!batch.is_finished());
    batch.await.expect("join").expect("send");
    let slow_row = store
        .message(tenant, "slow/hook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        (slow_row.status, slow_row.attempts, slow_row.errors.len()),
        (OutboxStatus::Sent, 1, 0)
    );
}

/// Keeps what the `tracing` events of a test say.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn attempts_equal_calls_and_a_dead_letter_keeps_every_error_and_is_logged() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (store, tenant, clock) = setup().await;
    // The primary refuses for good (a 4xx); the secondary fails twice.
    let primary = Provider::default();
    primary.answer(400, r#"{"error": "bad request"}"#);
    let secondary = Provider::default();
    secondary.answer(503, r#"{"error": "down"}"#);
    secondary.answer(500, r#"{"error": "still down"}"#);
    let (p_url, s_url) = (primary.start().await, secondary.start().await);
    let routes = HashMap::from([(
        "webhook".to_owned(),
        Route {
            primary: Arc::new(Redirect(Webhook::with_egress(b"k", local::egress()), p_url)),
            secondary: Some(Arc::new(Redirect(
                Webhook::with_egress(b"k", local::egress()),
                s_url,
            ))),
            per_second: None,
        },
    )]);
    let s = sender(store.clone(), clock.clone(), routes);
    put(
        &store,
        &[message(tenant, "d/hook", "webhook", "/x", noon())],
    )
    .await;
    for _ in 0..6 {
        s.send_due().await.expect("send");
        clock.set(clock.now() + Duration::minutes(10));
    }
    let row = store
        .message(tenant, "d/hook")
        .await
        .expect("read")
        .expect("row");
    let calls = primary.seen().len() + secondary.seen().len();
    assert_eq!(row.status, OutboxStatus::Dead);
    assert_eq!(
        calls, 3,
        "one call to the primary (refused for good), two to the secondary"
    );
    assert_eq!(row.attempts as usize, calls, "attempts are the calls made");
    let errors: Vec<(u32, bool, bool, bool)> = row
        .errors
        .iter()
        .map(|e| {
            (
                e.attempt,
                e.secondary,
                e.permanent,
                e.error.contains("HTTP"),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, false, true, true),
            (2, true, false, true),
            (3, true, false, true)
        ],
        "{:?}",
        row.errors
    );
    assert!(row.errors[0].error.contains("400") && row.errors[1].error.contains("503"));
    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.contains("dead letters"))
        .unwrap_or_else(|| panic!("no dead letter log line in:\n{text}"));
    assert!(line.contains("WARN"), "{line}");
    for part in [
        "key=d/hook",
        "channel=webhook",
        &format!("tenant={tenant}"),
        "HTTP 500",
    ] {
        assert!(line.contains(part), "{part:?} missing in {line}");
    }
}
