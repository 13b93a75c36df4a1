//! `livora bench profiles`: the profiles engine with 20 segments of mixed kinds.
//!
//! 1. **Engine**: generated shop data (per profile: an `identify` with email, plan and
//!    country, product views, a cart, and for most an order, over 90 days) applied to one
//!    tenant's engine with the 20 segments installed: profile updates per second (one
//!    thread, as the service runs), the time to recompute all 20 segments over every profile
//!    from scratch, and memory per profile (the engine's own estimate and the process RSS),
//!    all decoded or under `--memory-limit-mb` (cold profiles encoded, see
//!    [`livora_profiles::people`]).
//! 2. **Lag**: a real event log and the profiles service following it, while a writer
//!    appends events at each of `--rates` per second (batches of 100, each durable before
//!    the next is due): product views of `--background` profiles already in their segments,
//!    and one event in 50 a new profile's first big order, which enters segments. The lag is
//!    from the acknowledgement of the event (the append returned: durable) to the service's
//!    announcement of the membership change it caused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use livora_log::{EventLog, LogOptions, NewRecord};
use livora_model::Event;
use livora_profiles::MergeRules;
use livora_profiles::people::Budget;
use livora_profiles::segments::{Engine, Rule, Spec};
use livora_store::profiles::SegmentRecord;
use serde_json::{Value, json};

#[derive(clap::Args, Clone)]
pub struct ProfilesBench {
    /// Profiles in the engine phase.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Runs of the engine phase; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Events per second offered in the lag phase, one measurement per rate.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,50000,100000,150000,250000"
    )]
    rates: Vec<u64>,
    /// Measured seconds of the lag phase, per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Profiles already in the segments when the lag is measured (they get the background
    /// events).
    #[arg(long, default_value_t = 100_000)]
    background: u64,
    /// Seconds between the profiles' snapshot rounds in the lag phase (0: none), so that
    /// the lag includes them (a node's default is 300 s).
    #[arg(long, default_value_t = 5)]
    snapshot_secs: u64,
    /// Memory (MiB) the engine phase's profiles may take decoded, as
    /// `[analytics] profiles_memory_limit_mb` (0: all decoded).
    #[arg(long, default_value_t = 0)]
    memory_limit_mb: usize,
    /// Where the cold profiles' scratch files go (default: the system's temporary
    /// directory).
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

const T0: i64 = 1_790_000_000;

/// The 20 segments (and tags) of the benchmark: traits, computed attributes, behaviour in
/// windows, last performed, abandoned carts, references, and combinations.
pub fn segments() -> Vec<Spec> {
    let def = |c: Value| {
        Rule::Condition(
            livora_model::segment::Definition::parse(&json!({ "condition": c }))
                .unwrap_or_else(|e| panic!("benchmark segment: {e}")),
        )
    };
    let seg = |id: &str, c: Value| Spec {
        id: id.into(),
        tag: false,
        rule: def(c),
    };
    let tag = |id: &str, c: Value| Spec {
        id: id.into(),
        tag: true,
        rule: def(c),
    };
    vec![
        seg(
            "pro",
            json!({"trait": {"name": "plan", "op": "equals", "value": "pro"}}),
        ),
        seg(
            "fr",
            json!({"trait": {"name": "country", "op": "equals", "value": "FR"}}),
        ),
        seg(
            "gmail",
            json!({"trait": {"name": "email", "op": "contains", "value": "@gmail"}}),
        ),
        seg(
            "buyers",
            json!({"computed": {"name": "orders", "op": "gte", "value": 1}}),
        ),
        seg(
            "repeat",
            json!({"computed": {"name": "orders", "op": "gte", "value": 2}}),
        ),
        seg(
            "high-value",
            json!({"computed": {"name": "revenue", "op": "gt", "value": 200}}),
        ),
        seg(
            "lapsed",
            json!({"computed": {"name": "days_since_last_order", "op": "gt", "value": 30}}),
        ),
        seg(
            "engaged",
            json!({"computed": {"name": "engagement", "op": "gte", "value": 40}}),
        ),
        seg(
            "big-order-7d",
            json!({"performed": {"event": "Order Completed",
            "where": [{"property": "revenue", "op": "gte", "value": 100}], "within_days": 7}}),
        ),
        seg(
            "viewers-3x-30d",
            json!({"performed": {"event": "Product Viewed",
            "count": {"op": "at_least", "value": 3}, "within_days": 30}}),
        ),
        seg(
            "one-view",
            json!({"performed": {"event": "Product Viewed", "count": {"op": "exactly", "value": 1}}}),
        ),
        seg(
            "seen-7d",
            json!({"last_performed": {"event": "Product Viewed", "op": "within_days", "days": 7}}),
        ),
        seg(
            "gone-60d",
            json!({"last_performed": {"event": "Product Viewed", "op": "more_than_days_ago", "days": 60}}),
        ),
        seg(
            "abandoned",
            json!({"not_followed_by": {"event": "Product Added", "key": "cart_id",
            "not_followed_by": "Order Completed", "within_minutes": 60, "lookback_days": 14}}),
        ),
        seg(
            "shoes-buyers",
            json!({"performed": {"event": "Order Completed",
            "where": [{"property": "category", "op": "equals", "value": "shoes"}]}}),
        ),
        tag(
            "vip",
            json!({"and": [{"in_segment": "repeat"}, {"in_segment": "high-value"}]}),
        ),
        tag(
            "at-risk",
            json!({"and": [{"in_segment": "buyers"}, {"in_segment": "lapsed"}, {"not": {"in_segment": "seen-7d"}}]}),
        ),
        seg(
            "pro-not-buying",
            json!({"and": [{"in_segment": "pro"}, {"not": {"in_segment": "buyers"}}]}),
        ),
        seg(
            "fr-or-gmail-vip",
            json!({"and": [{"or": [{"in_segment": "fr"}, {"in_segment": "gmail"}]}, {"tag": "vip"}]}),
        ),
        seg(
            "new-big-buyers",
            json!({"and": [{"in_segment": "big-order-7d"}, {"computed": {"name": "orders", "op": "equals", "value": 1}}]}),
        ),
    ]
}

fn at(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(T0 + secs, 0)
        .unwrap_or_default()
        .to_rfc3339()
}

fn event(v: Value) -> Event {
    serde_json::from_value::<Value>(v)
        .ok()
        .and_then(|v| serde_json::from_str(&v.to_string()).ok())
        .unwrap_or_else(|| panic!("benchmark event"))
}

fn pick<'a>(options: &[&'a str], i: u64) -> &'a str {
    options[i as usize % options.len()]
}

/// The events of profile `i` (deterministic), in time order.
fn profile_events(i: usize, now: i64) -> Vec<Event> {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let user = format!("user-{i}");
    let anon = format!("anon-{i}");
    let start = now - 90 * 86_400 + rnd(80 * 86_400) as i64;
    let mut t = start;
    let mut out = Vec::with_capacity(6);
    let domain = ["gmail.com", "example.com", "shop.fr"][rnd(3) as usize];
    out.push(event(json!({"type": "identify", "userId": user, "anonymousId": anon,
        "messageId": format!("{i}-id"), "timestamp": at(t - T0), "receivedAt": at(t - T0),
        "traits": {"email": format!("user{i}@{domain}"), "plan": pick(&["free", "pro", "team"], rnd(3)),
                   "country": pick(&["FR", "US", "DE", "IN"], rnd(4))}})));
    for k in 0..(1 + rnd(4)) {
        t += rnd(3 * 86_400) as i64;
        out.push(event(json!({"type": "track", "userId": user, "event": "Product Viewed",
            "messageId": format!("{i}-v{k}"), "timestamp": at(t - T0), "receivedAt": at(t - T0),
            "properties": {"product_id": format!("p{}", rnd(500)), "category": pick(&["shoes", "bags", "hats"], rnd(3))}})));
    }
    t += rnd(600) as i64;
    out.push(event(
        json!({"type": "track", "userId": user, "event": "Product Added",
        "messageId": format!("{i}-a"), "timestamp": at(t - T0), "receivedAt": at(t - T0),
        "properties": {"cart_id": format!("c{i}"), "price": 20 + rnd(200)}}),
    ));
    for k in 0..rnd(3) {
        t += rnd(5 * 86_400) as i64;
        out.push(event(
            json!({"type": "track", "userId": user, "event": "Order Completed",
            "messageId": format!("{i}-o{k}"), "timestamp": at(t - T0), "receivedAt": at(t - T0),
            "properties": {"cart_id": format!("c{i}"), "revenue": 10 + rnd(300),
                           "category": pick(&["shoes", "bags", "hats"], rnd(3))}}),
        ));
    }
    out
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn percentile(v: &mut [i64], p: f64) -> f64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64
}

struct EngineRun {
    events: usize,
    updates_per_sec: f64,
    recompute_secs: f64,
    heap_bytes_per_profile: f64,
    rss_bytes_per_profile: f64,
    members: Vec<(String, usize)>,
    /// Taking the frozen copy of the engine: the pause of a snapshot round (the follower
    /// waits for this alone).
    freeze_secs: f64,
    /// Encoding and compressing the frozen copy (on another thread, while the engine goes
    /// on).
    snapshot_secs: f64,
    /// Profile updates per second on existing profiles, without a snapshot being written
    /// and while one is (the engine then copies each profile it changes first).
    updates_idle_per_sec: f64,
    updates_during_snapshot_per_sec: f64,
    snapshot_bytes: usize,
    /// Decoding it back (what a restart does).
    restore_secs: f64,
    /// The full recompute again, on the engine read back (laid out in memory as after a
    /// restart, not as built event by event).
    recompute_restored_secs: f64,
    /// Profiles decoded at the end of the build, and bytes of the cold ones' encodings.
    hot: usize,
    encoded_bytes_per_profile: f64,
    /// RSS growth with the read-back engine alone, over the process before the build (an
    /// upper bound: the allocator may still hold some of the dropped engine).
    rss_restored_bytes_per_profile: f64,
}

fn engine_run(n: usize, budget: Option<Arc<Budget>>) -> EngineRun {
    let now_secs = T0 + 100 * 86_400;
    let now = DateTime::<Utc>::from_timestamp(now_secs, 0).unwrap_or_default();
    let rss_before = crate::bench::rss_mb(std::process::id(), "VmRSS:");
    let mut engine = Engine::new(MergeRules::default());
    engine.set_budget(budget.clone());
    for s in segments() {
        engine
            .upsert(s, [], now)
            .unwrap_or_else(|e| panic!("benchmark segment: {e}"));
    }
    let mut applied = 0usize;
    let mut busy = Duration::ZERO;
    let chunk = 20_000;
    for start in (0..n).step_by(chunk) {
        let events: Vec<Event> = (start..(start + chunk).min(n))
            .flat_map(|i| profile_events(i, now_secs))
            .collect();
        let t = Instant::now();
        for e in &events {
            engine.apply(e, now);
        }
        busy += t.elapsed();
        applied += events.len();
    }
    let t = Instant::now();
    std::hint::black_box(engine.recompute(now));
    let recompute_secs = t.elapsed().as_secs_f64();
    let rss_after = crate::bench::rss_mb(std::process::id(), "VmRSS:");
    let hot = engine.profiles().hot();
    let encoded = budget.as_ref().map_or(0, |b| b.cold_bytes());
    // Existing profiles get their events again: once with no snapshot being written, once
    // while one is.
    let again = |engine: &mut Engine, from: usize| {
        let events: Vec<Event> = (from..(from + n / 5).min(n))
            .flat_map(|i| profile_events(i, now_secs))
            .collect();
        let t = Instant::now();
        for e in &events {
            engine.apply(e, now);
        }
        events.len() as f64 / t.elapsed().as_secs_f64().max(1e-9)
    };
    let updates_idle_per_sec = again(&mut engine, 0);
    // What the snapshot must give back (the pass above changed some memberships).
    let members = engine.recompute(now);
    let t = Instant::now();
    let frozen = livora_profiles::snapshot::Frozen::new(
        livora_model::TenantId::generate(),
        0,
        0,
        &engine,
        &Default::default(),
    );
    let freeze_secs = t.elapsed().as_secs_f64();
    let writer = std::thread::spawn(move || {
        let t = Instant::now();
        let packed = frozen.encode().unwrap_or_else(|e| panic!("snapshot: {e}"));
        (packed, t.elapsed().as_secs_f64())
    });
    let updates_during_snapshot_per_sec = again(&mut engine, n / 2);
    let (packed, snapshot_secs) = writer
        .join()
        .unwrap_or_else(|_| panic!("the snapshot writer panicked"));
    // What the read-back engine is checked against; the engine then goes, so that the
    // process holds the read-back engine alone, as after a restart.
    let people = engine.profiles().len().max(1) as f64;
    let names: Vec<(String, usize)> = engine
        .membership()
        .into_iter()
        .zip(&members)
        .map(|(((id, _), _), m)| (id, m.len()))
        .collect();
    let heap_bytes_per_profile = engine.heap_bytes() as f64 / people;
    let len = engine.profiles().len();
    drop(engine);
    let t = Instant::now();
    let back = livora_profiles::people::reading_with(budget, || {
        livora_profiles::snapshot::decode(std::path::Path::new("bench"), &packed)
    })
    .unwrap_or_else(|e| panic!("snapshot: {e}"));
    let restore_secs = t.elapsed().as_secs_f64();
    assert_eq!(back.engine.profiles().len(), len);
    let t = Instant::now();
    let again = back.engine.recompute(now);
    let recompute_restored_secs = t.elapsed().as_secs_f64();
    assert!(
        again == members,
        "the read-back engine recomputes other members"
    );
    let rss_restored = crate::bench::rss_mb(std::process::id(), "VmRSS:");
    drop(back);
    EngineRun {
        events: applied,
        updates_per_sec: applied as f64 / busy.as_secs_f64().max(1e-9),
        recompute_secs,
        heap_bytes_per_profile,
        rss_bytes_per_profile: (rss_after - rss_before).max(0.0) * 1_048_576.0 / people,
        rss_restored_bytes_per_profile: (rss_restored - rss_before).max(0.0) * 1_048_576.0 / people,
        members: names,
        freeze_secs,
        snapshot_secs,
        updates_idle_per_sec,
        updates_during_snapshot_per_sec,
        snapshot_bytes: packed.len(),
        restore_secs,
        recompute_restored_secs,
        hot,
        encoded_bytes_per_profile: encoded as f64 / people,
    }
}

struct LagRun {
    rate: u64,
    achieved: f64,
    offered: u64,
    appended: u64,
    transitions: usize,
    p50_ms: f64,
    p99_ms: f64,
    behind: u64,
}

async fn lag_run(b: &ProfilesBench, rate: u64) -> anyhow::Result<LagRun> {
    let dir = std::env::temp_dir().join(format!("livora-bench-profiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = lag_in(b, rate, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A background event (a product view of an existing profile) or, one in 50, a probe: the
/// first big order of a new profile, which enters segments. Times as ingestion writes them
/// (`now`: [`livora_model::time::format`]). The JSON is written directly: the generator
/// shares the two cores with what it measures, so it should cost as little as it can.
fn lag_record(tenant: uuid::Uuid, n: u64, background: u64, now: &str) -> NewRecord {
    let payload = if n.is_multiple_of(50) {
        format!(
            r#"{{"type":"track","userId":"probe-{n}","event":"Order Completed","messageId":"m{n}","timestamp":"{now}","receivedAt":"{now}","properties":{{"revenue":150,"cart_id":"c{n}"}}}}"#
        )
    } else {
        format!(
            r#"{{"type":"track","userId":"bg-{}","event":"Product Viewed","messageId":"m{n}","timestamp":"{now}","receivedAt":"{now}","properties":{{"product_id":"p{}"}}}}"#,
            n % background.max(1),
            n % 300
        )
    };
    NewRecord {
        tenant,
        id: format!("m{n}"),
        payload: payload.into_bytes(),
    }
}

async fn lag_in(b: &ProfilesBench, rate: u64, dir: &std::path::Path) -> anyhow::Result<LagRun> {
    let store: Arc<dyn livora_store::MetadataStore> =
        Arc::new(livora_store::SqliteStore::open(&dir.join("livora.db")).await?);
    let tenant = store
        .create_tenant(livora_store::NewTenant {
            name: "Bench".into(),
            time_zone: "UTC".into(),
            currency: livora_model::Currency::parse("USD").map_err(anyhow::Error::msg)?,
        })
        .await?
        .id;
    let log_dir = dir.join("log");
    let log =
        tokio::task::spawn_blocking(move || EventLog::open(LogOptions::new(log_dir))).await??;
    let snapshots = (b.snapshot_secs > 0).then(|| livora_profiles::snapshot::Snapshots {
        dir: dir.join("snapshots"),
        every: Duration::from_secs(b.snapshot_secs),
    });
    let service = livora_profiles::service::ProfileService::new(
        store.clone(),
        None,
        Arc::new(livora_model::clock::SystemClock),
        MergeRules::default(),
        snapshots,
    );
    let follower = tokio::spawn(service.clone().follow(log.clone()));
    while !service.caught_up() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in segments() {
        let now = Utc::now();
        let record = SegmentRecord {
            id: s.id.clone(),
            tag: s.tag,
            name: s.id.clone(),
            description: String::new(),
            rule: service.stored_rule(tenant, &s.id, s.tag, &s.rule).await?,
            created_by: "bench".into(),
            created_at: now,
            updated_at: now,
        };
        service.save(&log, tenant, record, s).await?;
    }
    // Warm-up: four views per background profile, so views no longer change memberships.
    let now = livora_model::time::format(&Utc::now());
    let mut n = 0u64;
    let warm: Vec<NewRecord> = (0..b.background * 4)
        .filter_map(|_| {
            n += 1;
            (!n.is_multiple_of(50)).then(|| lag_record(tenant.0, n, b.background, &now))
        })
        .collect();
    for chunk in warm.chunks(1000) {
        log.append(chunk.to_vec()).await?;
    }
    // Wait until the service has read everything, its own announcements included.
    let mut quiet_since = Instant::now();
    loop {
        if service.applied() < log.end_offset() {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.take_lags();
    // The writer: batches of 100 at the offered rate.
    let batch = 100u64;
    let interval = Duration::from_secs_f64(batch as f64 / rate.max(1) as f64);
    let deadline = Instant::now() + Duration::from_secs(b.seconds);
    let mut next = Instant::now();
    let mut appended = 0u64;
    let mut offered = 0u64;
    let mut in_flight = Vec::new();
    while Instant::now() < deadline {
        let now = livora_model::time::format(&Utc::now());
        let records: Vec<NewRecord> = (0..batch)
            .map(|_| {
                n += 1;
                lag_record(tenant.0, n, b.background, &now)
            })
            .collect();
        offered += batch;
        // Submitted without waiting for the previous batches, as concurrent clients would:
        // the log commits what is queued together. Each batch's acknowledgement time is
        // taken when its append is durable.
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
    // When each record was acknowledged (durable), by log offset.
    let mut acks: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
    for task in in_flight {
        if let Ok((Ok(out), ack)) = task.await {
            appended += out.written() as u64;
            acks.extend(out.offsets.iter().flatten().map(|o| (*o, ack)));
        }
    }
    let elapsed = b.seconds as f64;
    // Let the service catch up (at most 60 s), then collect.
    let end = log.end_offset();
    let until = Instant::now() + Duration::from_secs(60);
    while service.applied() < end && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let behind = end.saturating_sub(service.applied());
    // From the acknowledgement of the event to the announcement of the change it caused.
    let mut lags: Vec<i64> = service
        .take_lags()
        .into_iter()
        .filter_map(|(offset, at)| acks.get(&offset).map(|ack| (at - ack).max(0)))
        .collect();
    follower.abort();
    log.close();
    Ok(LagRun {
        rate,
        achieved: appended as f64 / elapsed,
        offered,
        appended,
        transitions: lags.len(),
        p50_ms: percentile(&mut lags, 0.5) / 1000.0,
        p99_ms: percentile(&mut lags, 0.99) / 1000.0,
        behind,
    })
}

pub async fn run(b: ProfilesBench) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    let budget = match b.memory_limit_mb {
        0 => None,
        mb => Some(Budget::new(
            mb << 20,
            b.work_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .join("livora-bench-profiles-scratch"),
        )?),
    };
    for i in 0..b.runs.max(1) {
        let n = b.profiles;
        let budget = budget.clone();
        let r = tokio::task::spawn_blocking(move || engine_run(n, budget)).await?;
        eprintln!(
            "run {}: {} decoded, {:.0} B/profile encoded, {:.0} B/profile RSS read back; {} events, {:.0} profile updates/s, recompute {:.3} s ({:.3} s read back), {:.0} B/profile (heap estimate), {:.0} B/profile (RSS), snapshot: pause {:.3} s, written in {:.2} s ({:.0} MB) while updates ran at {:.0}/s ({:.0}/s without), read back {:.2} s",
            i + 1,
            r.hot,
            r.encoded_bytes_per_profile,
            r.rss_restored_bytes_per_profile,
            r.events,
            r.updates_per_sec,
            r.recompute_secs,
            r.recompute_restored_secs,
            r.heap_bytes_per_profile,
            r.rss_bytes_per_profile,
            r.freeze_secs,
            r.snapshot_secs,
            r.snapshot_bytes as f64 / 1e6,
            r.updates_during_snapshot_per_sec,
            r.updates_idle_per_sec,
            r.restore_secs
        );
        runs.push(r);
    }
    let mut lags = Vec::new();
    for &rate in &b.rates {
        let lag = lag_run(&b, rate).await?;
        eprintln!(
            "lag at {} ev/s offered ({:.0} appended/s): {} transitions, p50 {:.1} ms, p99 {:.1} ms, {} records behind at the end",
            lag.rate, lag.achieved, lag.transitions, lag.p50_ms, lag.p99_ms, lag.behind
        );
        lags.push(lag);
    }
    let mut ups: Vec<f64> = runs.iter().map(|r| r.updates_per_sec).collect();
    let mut rec: Vec<f64> = runs.iter().map(|r| r.recompute_secs).collect();
    let mut rec_back: Vec<f64> = runs.iter().map(|r| r.recompute_restored_secs).collect();
    let mut heap: Vec<f64> = runs.iter().map(|r| r.heap_bytes_per_profile).collect();
    let mut rss: Vec<f64> = runs.iter().map(|r| r.rss_bytes_per_profile).collect();
    let mut snap: Vec<f64> = runs.iter().map(|r| r.snapshot_secs).collect();
    let mut restore: Vec<f64> = runs.iter().map(|r| r.restore_secs).collect();
    let mut freeze: Vec<f64> = runs.iter().map(|r| r.freeze_secs).collect();
    let mut idle: Vec<f64> = runs.iter().map(|r| r.updates_idle_per_sec).collect();
    let mut during: Vec<f64> = runs
        .iter()
        .map(|r| r.updates_during_snapshot_per_sec)
        .collect();
    let mut encoded: Vec<f64> = runs.iter().map(|r| r.encoded_bytes_per_profile).collect();
    let mut rss_back: Vec<f64> = runs
        .iter()
        .map(|r| r.rss_restored_bytes_per_profile)
        .collect();
    let out = json!({
        "memory_limit_mb": b.memory_limit_mb,
        "decoded_profiles": runs.first().map(|r| r.hot),
        "encoded_bytes_per_profile": median(&mut encoded),
        "rss_restored_bytes_per_profile": median(&mut rss_back),
        "snapshot_pause_secs": median(&mut freeze),
        "snapshot_secs": median(&mut snap),
        "updates_idle_per_sec": median(&mut idle),
        "updates_during_snapshot_per_sec": median(&mut during),
        "snapshot_bytes": runs.first().map(|r| r.snapshot_bytes),
        "restore_secs": median(&mut restore),
        "profiles": b.profiles,
        "events": runs.first().map(|r| r.events),
        "segments": segments().len(),
        "profile_updates_per_sec": median(&mut ups),
        "recompute_secs": median(&mut rec),
        "recompute_restored_secs": median(&mut rec_back),
        "heap_bytes_per_profile": median(&mut heap),
        "rss_bytes_per_profile": median(&mut rss),
        "members": runs.first().map(|r| r.members.iter().map(|(k, v)| json!({"segment": k, "members": v})).collect::<Vec<_>>()),
        "lag": lags.iter().map(|l| json!({"rate": l.rate, "appended_per_sec": l.achieved,
            "offered_events": l.offered, "appended_events": l.appended, "transitions": l.transitions,
            "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "records_behind": l.behind})).collect::<Vec<_>>(),
    });
    if b.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "profiles {}: {:.0} updates/s, recompute of {} segments {:.3} s ({:.3} s read back), {:.0} B/profile (heap), {:.0} B/profile (RSS)",
            b.profiles,
            out["profile_updates_per_sec"].as_f64().unwrap_or(0.0),
            segments().len(),
            out["recompute_secs"].as_f64().unwrap_or(0.0),
            out["recompute_restored_secs"].as_f64().unwrap_or(0.0),
            out["heap_bytes_per_profile"].as_f64().unwrap_or(0.0),
            out["rss_bytes_per_profile"].as_f64().unwrap_or(0.0),
        );
        println!(
            "snapshot of every profile: pause {:.3} s, written in {:.2} s, {:.0} MB (updates {:.0}/s meanwhile, {:.0}/s without); read back {:.2} s",
            out["snapshot_pause_secs"].as_f64().unwrap_or(0.0),
            out["snapshot_secs"].as_f64().unwrap_or(0.0),
            out["snapshot_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            out["updates_during_snapshot_per_sec"]
                .as_f64()
                .unwrap_or(0.0),
            out["updates_idle_per_sec"].as_f64().unwrap_or(0.0),
            out["restore_secs"].as_f64().unwrap_or(0.0),
        );
        for l in &lags {
            println!(
                "lag at {} ev/s: p50 {:.1} ms, p99 {:.1} ms ({} transitions)",
                l.rate, l.p50_ms, l.p99_ms, l.transitions
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_segments_are_valid_and_the_data_reaches_them() {
        let r = engine_run(2_000, None);
        assert_eq!(r.members.len(), 20);
        for (id, n) in &r.members {
            assert!(
                *n > 0,
                "segment {id} is empty: the benchmark would measure nothing"
            );
        }
    }

    #[test]
    fn the_lag_records_are_events() {
        let now = livora_model::time::format(&Utc::now());
        for n in [49, 50] {
            let r = lag_record(uuid::Uuid::nil(), n, 10, &now);
            let e: Event = serde_json::from_slice(&r.payload).expect("an event");
            assert_eq!(e.message_id, r.id);
            let props: Value =
                serde_json::from_str(e.properties.expect("properties").get()).expect("properties");
            if n == 50 {
                assert_eq!(e.user_id.as_deref(), Some("probe-50"));
                assert_eq!(props["revenue"], 150);
            } else {
                assert_eq!(e.user_id.as_deref(), Some("bg-9"));
                assert_eq!(props["product_id"], "p49");
            }
        }
    }
}
