//! `livora bench automation`: the automation engine's three targets (issue 6).
//!
//! 1. **Timers**: `--timers` journeys each waiting on a one-day delay, in the runtime
//!    (persons are made up from their ids, so only the runtime's own memory grows): memory
//!    per waiting journey (process RSS growth), then the day passes and every timer fires,
//!    each deciding a message (a template rendered): timers fired per second, and the same
//!    including writing the decided messages to the outbox (SQLite, batches of 10,000).
//! 2. **Trigger latency**: a real event log, the profiles service and the automation service
//!    following it (as in a node), while a writer appends `--rate` events per second (product
//!    views, carts and, one in ten, an order) for persons identified beforehand. An order
//!    starts a receipt workflow whose first step sends: the latency is from the
//!    acknowledgement of the order (its append is durable) to the commit of the receipt in
//!    the outbox.
//! 3. **Outbox throughput**: `--messages` marketing emails waiting in the outbox, sent
//!    through the delivery policy (consents, frequency caps, address-level consents) with
//!    open and click tracking added (a link rewritten, a pixel, the unsubscribe link) to an
//!    in-process provider that records idempotency keys, and again to a local HTTP provider
//!    (webhooks to 127.0.0.1): messages per second.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_automation::outbox::{Channel, FixedRoutes, Outgoing, Retry, Route, SendError, Sender};
use livora_automation::people::{People, Person};
use livora_automation::policy::Policy;
use livora_automation::runtime::{Effect, Runtime, Version};
use livora_automation::service::{AutomationService, PlainSink, outbox_row};
use livora_log::{EventLog, LogOptions, NewRecord};
use livora_model::workflow::Workflow;
use livora_model::{Event, TenantId};
use livora_store::automation::{AutomationCommit, AutomationStore, OutboxStatus};
use livora_store::{MetadataStore, NewTenant, SqliteStore};
use serde_json::{Value, json};

use crate::bench_profiles::{median, percentile};

#[derive(clap::Args, Clone)]
pub struct AutomationBench {
    /// Journeys waiting on timers in the timer phase.
    #[arg(long, default_value_t = 1_000_000)]
    timers: usize,
    /// Events per second offered in the trigger-latency phase.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Measured seconds of the trigger-latency phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Messages in the outbox phase.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Runs of each phase; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// One timer run, in this process, printed as JSON (the benchmark runs each timer run
    /// in a fresh process, so the memory one run freed does not hide the next one's).
    #[arg(long, hide = true)]
    timers_only: bool,
}

fn tenant() -> TenantId {
    TenantId(uuid::Uuid::from_u128(0xB3C4))
}

/// Persons made up from their keys: `u:p7` has the email `p7@bench.test`.
struct MadeUp;

fn made_up(key: &str) -> Person {
    let id = key.trim_start_matches("u:");
    Person {
        keys: vec![key.to_owned()],
        traits: json!({"email": format!("{id}@bench.test"), "first_name": id})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..Person::default()
    }
}

impl People for MadeUp {
    fn of_event(&self, _tenant: TenantId, e: &Event) -> Option<Person> {
        e.user_id.as_deref().map(|u| made_up(&format!("u:{u}")))
    }

    fn by_key(&self, _tenant: TenantId, key: &str) -> Option<Person> {
        Some(made_up(key))
    }

    fn audience(&self, _tenant: TenantId, _segment: Option<&str>) -> Vec<Person> {
        Vec::new()
    }
}

fn event(v: Value) -> anyhow::Result<Event> {
    Ok(serde_json::from_value(v)?)
}

struct TimerRun {
    rss_bytes_per_timer: f64,
    start_per_sec: f64,
    fire_per_sec: f64,
    fire_and_commit_per_sec: f64,
}

async fn timer_run(n: usize) -> anyhow::Result<TimerRun> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("livora.db")).await?;
    let t0 = DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap_or_default();
    let mut rt = Runtime::new();
    rt.add_version(Version {
        tenant: tenant(),
        workflow: "welcome".into(),
        version: 1,
        definition: Workflow::parse(&json!({
            "trigger": {"event": {"name": "Signed Up"}},
            "steps": [
                {"id": "wait", "delay": {"days": 1}},
                {"id": "hello", "send": {"channel": "email", "category": "transactional",
                    "template": {"subject": "Welcome, {{ traits.first_name }}", "body": "Glad you are here."}}}
            ]
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    });
    rt.set_live(tenant(), "welcome", Some(1));
    let people = MadeUp;
    let rss_before = crate::bench::rss_mb(std::process::id(), "VmRSS:");
    let started = Instant::now();
    for i in 0..n {
        let e = event(
            json!({"type": "track", "userId": format!("p{i}"), "event": "Signed Up",
            "messageId": format!("m{i}"), "timestamp": t0.to_rfc3339(), "receivedAt": t0.to_rfc3339(),
            "properties": {"plan": "pro"}}),
        )?;
        rt.on_event(tenant(), &e, &people, t0);
    }
    let start_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        rt.timer_count() == n,
        "{} timers for {n} journeys",
        rt.timer_count()
    );
    let rss_after = crate::bench::rss_mb(std::process::id(), "VmRSS:");
    let later = t0 + chrono::Duration::days(1);
    // As the service does: 10,000 timers at a time, each batch's messages committed.
    let (mut fire_secs, mut commit_secs, mut decided) = (0.0, 0.0, 0);
    loop {
        let fired = Instant::now();
        let changes = rt.advance_up_to(later, &people, 10_000);
        fire_secs += fired.elapsed().as_secs_f64();
        let messages: Vec<_> = changes
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(m) => Some(outbox_row(m)),
                _ => None,
            })
            .collect();
        if messages.is_empty() {
            break;
        }
        decided += messages.len();
        let committed = Instant::now();
        store
            .commit(AutomationCommit {
                messages,
                ..AutomationCommit::default()
            })
            .await?;
        commit_secs += committed.elapsed().as_secs_f64();
    }
    anyhow::ensure!(decided == n, "{decided} messages for {n} timers");
    drop(rt);
    Ok(TimerRun {
        rss_bytes_per_timer: (rss_after - rss_before) * 1_048_576.0 / n as f64,
        start_per_sec: n as f64 / start_secs,
        fire_per_sec: n as f64 / fire_secs,
        fire_and_commit_per_sec: n as f64 / (fire_secs + commit_secs),
    })
}

struct LatencyRun {
    orders: usize,
    p50_ms: f64,
    p99_ms: f64,
    achieved: f64,
}

fn record(n: u64, v: Value) -> NewRecord {
    NewRecord {
        tenant: tenant().0,
        id: format!("m{n}"),
        payload: v.to_string().into_bytes(),
    }
}

async fn latency_run(b: &AutomationBench) -> anyhow::Result<LatencyRun> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("livora.db")).await?);
    let tenant = store
        .create_tenant(NewTenant {
            name: "Bench".into(),
            time_zone: "UTC".into(),
            currency: livora_model::Currency::parse("USD").map_err(anyhow::Error::msg)?,
        })
        .await?
        .id;
    let log_dir = dir.path().join("log");
    let log =
        tokio::task::spawn_blocking(move || EventLog::open(LogOptions::new(log_dir))).await??;
    let dyn_store: Arc<dyn MetadataStore> = store.clone();
    let profiles = livora_profiles::service::ProfileService::new(
        dyn_store.clone(),
        None,
        Arc::new(livora_model::clock::SystemClock),
        livora_profiles::MergeRules::default(),
        None,
    );
    let profiles_follower = tokio::spawn(profiles.clone().follow(log.clone()));
    // People identified beforehand (with an email).
    const PEOPLE: u64 = 10_000;
    let now = livora_model::time::format(&Utc::now());
    let ids: Vec<NewRecord> = (0..PEOPLE)
        .map(|i| {
            let mut r = record(
                i,
                json!({"type": "identify", "userId": format!("p{i}"), "messageId": format!("m{i}"),
                "traits": {"email": format!("p{i}@bench.test"), "first_name": format!("P{i}")},
                "timestamp": now, "receivedAt": now}),
            );
            r.tenant = tenant.0;
            r
        })
        .collect();
    for chunk in ids.chunks(1000) {
        log.append(chunk.to_vec()).await?;
    }
    while profiles.applied() < log.end_offset() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let receipt = json!({
        "trigger": {"event": {"name": "Order Completed"}},
        "reentry": "always",
        "steps": [{"id": "receipt", "send": {"channel": "email", "category": "transactional",
            "template": {"subject": "Your order {{ event.properties.order_id }}", "body": "Thank you, {{ traits.first_name }}."}}}]
    });
    let cart = json!({
        "trigger": {"event": {"name": "Product Added"}},
        "goal": {"event": "Order Completed"},
        "steps": [
            {"id": "wait", "wait_for": {"event": "Order Completed", "timeout_minutes": 60}},
            {"id": "remind", "send": {"channel": "email", "template": {"subject": "Still there?", "body": "."}}}
        ]
    });
    for (id, def) in [("receipt", &receipt), ("cart", &cart)] {
        store
            .add_workflow_version(tenant, id, id, "", &def.to_string(), "bench")
            .await?;
        store.set_enabled_version(tenant, id, Some(1)).await?;
    }
    let svc = AutomationService::new(
        dyn_store,
        None,
        Arc::new(livora_model::clock::SystemClock),
        profiles.clone(),
        Arc::new(PlainSink(log.clone())),
    );
    svc.load().await?;
    let follower = tokio::spawn(svc.clone().follow(log.clone()));
    while svc.applied() < log.end_offset() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    svc.take_lags();
    // The writer: batches of 10 at the offered rate, not waiting for earlier ones.
    let batch = 10u64;
    let interval = Duration::from_secs_f64(batch as f64 / b.rate.max(1) as f64);
    let deadline = Instant::now() + Duration::from_secs(b.seconds);
    let mut next = Instant::now();
    let mut n = PEOPLE;
    let mut in_flight = Vec::new();
    while Instant::now() < deadline {
        let now = livora_model::time::format(&Utc::now());
        let records: Vec<NewRecord> = (0..batch)
            .map(|_| {
                n += 1;
                let user = format!("p{}", n % PEOPLE);
                let v = match n % 10 {
                    0 => json!({"type": "track", "userId": user, "event": "Order Completed", "messageId": format!("m{n}"),
                        "properties": {"order_id": format!("o{n}"), "revenue": 42}, "timestamp": now, "receivedAt": now}),
                    1..=3 => json!({"type": "track", "userId": user, "event": "Product Added", "messageId": format!("m{n}"),
                        "properties": {"product_id": format!("sku{}", n % 50)}, "timestamp": now, "receivedAt": now}),
                    _ => json!({"type": "track", "userId": user, "event": "Product Viewed", "messageId": format!("m{n}"),
                        "properties": {"product_id": format!("sku{}", n % 50)}, "timestamp": now, "receivedAt": now}),
                };
                let mut r = record(n, v);
                r.tenant = tenant.0;
                r
            })
            .collect();
        if let Ok(pending) = log.submit(records) {
            in_flight.push(tokio::spawn(async move {
                let out = pending.await;
                (out, Utc::now().timestamp_micros())
            }));
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let mut acks = std::collections::HashMap::new();
    let mut appended = 0usize;
    for task in in_flight {
        if let Ok((Ok(out), ack)) = task.await {
            appended += out.written();
            acks.extend(out.offsets.iter().flatten().map(|o| (*o, ack)));
        }
    }
    let end = log.end_offset();
    let until = Instant::now() + Duration::from_secs(60);
    while svc.applied() < end && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lags: Vec<i64> = svc
        .take_lags()
        .into_iter()
        .filter_map(|(o, at)| acks.get(&o).map(|ack| (at - ack).max(0)))
        .collect();
    follower.abort();
    profiles_follower.abort();
    log.close();
    Ok(LatencyRun {
        orders: lags.len(),
        p50_ms: percentile(&mut lags, 0.5) / 1000.0,
        p99_ms: percentile(&mut lags, 0.99) / 1000.0,
        achieved: appended as f64 / b.seconds as f64,
    })
}

/// An in-process provider: records each idempotency key, answers at once.
#[derive(Default)]
struct Recorder(Mutex<HashSet<String>>);

#[async_trait]
impl Channel for Recorder {
    fn provider(&self) -> &str {
        "recorder"
    }

    async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(m.key.clone());
        Ok(None)
    }
}

/// A local HTTP provider (127.0.0.1) that records each idempotency key.
async fn http_provider() -> anyhow::Result<(String, Arc<Mutex<HashSet<String>>>)> {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let keep = keep.clone();
        async move {
            if let Some(k) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
                keep.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(k.to_owned());
            }
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/deliver"), seen))
}

/// Messages per second through the policy and the outbox, to `channel`.
async fn outbox_run(n: usize, http: bool) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("livora.db")).await?);
    let tenant = store
        .create_tenant(NewTenant {
            name: "Bench".into(),
            time_zone: "UTC".into(),
            currency: livora_model::Currency::parse("USD").map_err(anyhow::Error::msg)?,
        })
        .await?
        .id;
    let now = Utc::now();
    let (channel, to, provider): (&str, Option<String>, Arc<dyn Channel>) = if http {
        let (url, _) = http_provider().await?;
        (
            "webhook",
            Some(url),
            // The local receiver is internal: allowed explicitly.
            Arc::new(livora_channels::webhook::Webhook::with_egress(
                b"bench-secret-0123456789",
                Arc::new(
                    livora_channels::egress::Egress::allowing(["127.0.0.1"])
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                ),
            )),
        )
    } else {
        ("email", None, Arc::new(Recorder::default()))
    };
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let m = livora_automation::runtime::Message {
            key: format!("j{i}/hello"),
            tenant,
            workflow: "news".into(),
            version: 1,
            journey: format!("j{i}"),
            step: "hello".into(),
            person: format!("u:p{i}"),
            channel: channel.into(),
            category: livora_model::workflow::Category::Marketing,
            subscription: Some("newsletter".into()),
            to: Some(to.clone().unwrap_or_else(|| format!("p{i}@bench.test"))),
            content: if http {
                json!({"subject": "News", "body": format!("{{\"hello\": \"p{i}\"}}")})
            } else {
                // Tracked as in a real send: the link rewritten, a pixel, the unsubscribe link.
                json!({"subject": "News", "body": "News",
                    "html": format!("<html><body><p>News for p{i}</p><a href=\"https://shop.example/p/{i}\">See</a> \
                        <a href=\"{}\">Unsubscribe</a></body></html>", livora_automation::tracking::UNSUBSCRIBE_MARKER)})
            }
            .as_object()
            .cloned()
            .unwrap_or_default(),
            time_zone: Some("UTC".into()),
            decided_at: now,
            error: None,
        };
        rows.push(outbox_row(&m));
    }
    for chunk in rows.chunks(10_000) {
        store
            .commit(AutomationCommit {
                messages: chunk.to_vec(),
                ..AutomationCommit::default()
            })
            .await?;
    }
    let routes = std::collections::HashMap::from([(
        channel.to_owned(),
        Route {
            primary: provider,
            secondary: None,
            per_second: None,
        },
    )]);
    let dyn_store: Arc<dyn MetadataStore> = store.clone();
    let sender = Arc::new(
        Sender::new(
            dyn_store,
            Arc::new(livora_model::clock::SystemClock),
            Arc::new(FixedRoutes(routes)),
            Policy {
                quiet_hours: None,
                ..Policy::default()
            },
            Retry::default(),
        )
        // One destination here: as many calls to it as the node allows.
        .with_limits(livora_automation::outbox::Limits {
            in_flight: 64,
            per_tenant: 64,
            per_destination: 64,
            ..livora_automation::outbox::Limits::default()
        })
        .with_tracker(Arc::new(livora_automation::tracking::Tracker::new(
            b"bench-jwt-secret-0123456789abcdef0123",
            Some("https://crm.bench.test".into()),
        ))),
    );
    let started = Instant::now();
    let mut total = 0;
    loop {
        let k = sender.send_due().await?;
        if k == 0 {
            break;
        }
        total += k;
    }
    let secs = started.elapsed().as_secs_f64();
    let sent = store
        .messages(tenant, Some(OutboxStatus::Sent), 1)
        .await?
        .len();
    anyhow::ensure!(
        total == n && sent == 1,
        "{total} of {n} messages went through"
    );
    Ok(n as f64 / secs)
}

/// One timer run in a fresh `livora bench automation --timers-only` process.
fn timer_run_apart(n: usize) -> anyhow::Result<TimerRun> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args([
            "bench",
            "automation",
            "--timers-only",
            "--timers",
            &n.to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the timer run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(TimerRun {
        rss_bytes_per_timer: f("rss_bytes_per_timer"),
        start_per_sec: f("start_per_sec"),
        fire_per_sec: f("fire_per_sec"),
        fire_and_commit_per_sec: f("fire_and_commit_per_sec"),
    })
}

pub async fn run(b: AutomationBench) -> anyhow::Result<()> {
    if b.timers_only {
        let r = timer_run(b.timers).await?;
        println!(
            "{}",
            json!({"rss_bytes_per_timer": r.rss_bytes_per_timer, "start_per_sec": r.start_per_sec,
                "fire_per_sec": r.fire_per_sec, "fire_and_commit_per_sec": r.fire_and_commit_per_sec})
        );
        return Ok(());
    }
    let runs = b.runs.max(1);
    let (mut mem, mut start, mut fire, mut fire_commit) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let n = b.timers;
        let r = tokio::task::spawn_blocking(move || timer_run_apart(n)).await??;
        crate::bench::sync_disk();
        eprintln!(
            "timers run {}: {:.0} B per waiting journey, {:.0} started/s, {:.0} fired/s, {:.0} fired and committed/s",
            i + 1,
            r.rss_bytes_per_timer,
            r.start_per_sec,
            r.fire_per_sec,
            r.fire_and_commit_per_sec
        );
        mem.push(r.rss_bytes_per_timer);
        start.push(r.start_per_sec);
        fire.push(r.fire_per_sec);
        fire_commit.push(r.fire_and_commit_per_sec);
    }
    let mut lat = Vec::new();
    for i in 0..runs {
        let r = latency_run(&b).await?;
        crate::bench::sync_disk();
        eprintln!(
            "trigger latency run {}: {} orders at {:.0} events/s appended: p50 {:.2} ms, p99 {:.2} ms",
            i + 1,
            r.orders,
            r.achieved,
            r.p50_ms,
            r.p99_ms
        );
        lat.push(r);
    }
    let (mut inproc, mut http) = (vec![], vec![]);
    for i in 0..runs {
        let a = outbox_run(b.messages, false).await?;
        crate::bench::sync_disk();
        let h = outbox_run(b.messages, true).await?;
        crate::bench::sync_disk();
        eprintln!(
            "outbox run {}: {a:.0} messages/s to an in-process provider, {h:.0} messages/s to a local HTTP provider",
            i + 1
        );
        inproc.push(a);
        http.push(h);
    }
    let mut p50: Vec<f64> = lat.iter().map(|r| r.p50_ms).collect();
    let mut p99: Vec<f64> = lat.iter().map(|r| r.p99_ms).collect();
    let result = json!({
        "timers": b.timers,
        "bytes_per_waiting_journey": median(&mut mem),
        "memory_mb_for_timers": median(&mut mem.clone()) * b.timers as f64 / 1_048_576.0,
        "journeys_started_per_sec": median(&mut start),
        "timers_fired_per_sec": median(&mut fire),
        "timers_fired_and_committed_per_sec": median(&mut fire_commit),
        "trigger_rate": b.rate,
        "trigger_latency_p50_ms": median(&mut p50),
        "trigger_latency_p99_ms": median(&mut p99),
        "messages": b.messages,
        "outbox_messages_per_sec_in_process": median(&mut inproc),
        "outbox_messages_per_sec_http": median(&mut http),
    });
    if b.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "automation: {} waiting timers take {:.0} MB ({:.0} B each; target 1M in <= 500 MB); they fire at {:.0}/s ({:.0}/s with the outbox commit)",
            b.timers,
            result["memory_mb_for_timers"].as_f64().unwrap_or(0.0),
            result["bytes_per_waiting_journey"].as_f64().unwrap_or(0.0),
            result["timers_fired_per_sec"].as_f64().unwrap_or(0.0),
            result["timers_fired_and_committed_per_sec"]
                .as_f64()
                .unwrap_or(0.0)
        );
        println!(
            "trigger latency at {} events/s: p50 {:.2} ms, p99 {:.2} ms (target p99 <= 20 ms)",
            b.rate,
            result["trigger_latency_p50_ms"].as_f64().unwrap_or(0.0),
            result["trigger_latency_p99_ms"].as_f64().unwrap_or(0.0)
        );
        println!(
            "outbox: {:.0} messages/s in process, {:.0} messages/s to a local HTTP provider (target >= 20,000/s)",
            result["outbox_messages_per_sec_in_process"]
                .as_f64()
                .unwrap_or(0.0),
            result["outbox_messages_per_sec_http"]
                .as_f64()
                .unwrap_or(0.0)
        );
    }
    Ok(())
}
