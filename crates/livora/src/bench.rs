//! `livora bench ingest`: sustained durable ingestion through HTTP, side by side with the
//! machine's limit for the same work without HTTP.
//!
//! Each run starts `livora serve` as a child process on a fresh data directory (fsync on),
//! drives `/v1/batch` with batches of typical e-commerce events over concurrent connections,
//! and reads the server's idle and peak RSS from `/proc`. Then, in this process, it measures the
//! limit: the same payloads parsed and normalised by the same code, encoded as log records and
//! appended to a file with the fsync cadence the server showed (batches per fsync).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::Utc;
use clap::Subcommand;
use serde_json::json;

use crate::client::Client;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable events/s through HTTP vs. the same work without HTTP.
    Ingest(IngestBench),
    /// A funnel and a retention query over generated shop data (bench/analytics.sh compares
    /// the answers and the times with DuckDB and chDB on the same data).
    Analytics(crate::bench_analytics::AnalyticsBench),
    /// Profiles and 20 real-time segments: update throughput, full recompute time, memory
    /// per profile, and the lag from append to segment change while ingesting.
    Profiles(crate::bench_profiles::ProfilesBench),
    /// Workflows: memory and firing rate of waiting timers, trigger latency from ingest to
    /// outbox, and messages per second through the policy and the outbox.
    Automation(crate::bench_automation::AutomationBench),
    /// Models: lifetime-value fit time and scoring throughput, churn training, and every
    /// quality measure beside its baseline (CDNOW, AirPassengers, a generated shop).
    Intel(crate::bench_intel::IntelBench),
    /// History against a memory budget on a real server: catch-up from the log, restart,
    /// every query kind, resident memory.
    Memory(crate::bench_memory::MemoryBench),
}

#[derive(clap::Args, Clone)]
pub struct IngestBench {
    /// Measured seconds per run (after one second of warm-up).
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where to put the data directories (default: the system temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Run the server as an ingest-only node (`[analytics] enabled = false`): no column store
    /// following the log.
    #[arg(long)]
    ingest_only: bool,
    /// A full node without profiles and segments (`[analytics] profiles = false`).
    #[arg(long)]
    no_profiles: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(b) => ingest(b).await,
        BenchCommand::Analytics(b) => {
            tokio::task::spawn_blocking(move || crate::bench_analytics::run(&b)).await?
        }
        BenchCommand::Profiles(b) => crate::bench_profiles::run(b).await,
        BenchCommand::Memory(b) => crate::bench_memory::run(b).await,
        BenchCommand::Automation(b) => crate::bench_automation::run(b).await,
        BenchCommand::Intel(b) => {
            tokio::task::spawn_blocking(move || crate::bench_intel::run(&b)).await?
        }
    }
}

#[derive(Debug, Clone, Default)]
struct RunResult {
    http_eps: f64,
    p50_ms: f64,
    p99_ms: f64,
    idle_rss_mb: f64,
    peak_rss_mb: f64,
    batches_per_fsync: f64,
    limit_eps: f64,
    /// Ingest-to-queryable lag of probe events (full node only).
    lag_p50_ms: f64,
    lag_p99_ms: f64,
}

async fn ingest(b: IngestBench) -> anyhow::Result<()> {
    let templates = Templates::new(b.batch);
    let mut results = Vec::new();
    for i in 0..b.runs.max(1) {
        let r = one_run(&b, &templates).await?;
        eprintln!(
            "run {}: http {:.0} ev/s (p50 {:.1} ms, p99 {:.1} ms, rss idle {:.0} MB peak {:.0} MB), limit {:.0} ev/s, ratio {:.0}%",
            i + 1,
            r.http_eps,
            r.p50_ms,
            r.p99_ms,
            r.idle_rss_mb,
            r.peak_rss_mb,
            r.limit_eps,
            100.0 * r.http_eps / r.limit_eps
        );
        results.push(r);
    }
    let med = |f: fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    let summary = json!({
        "ingest_only": b.ingest_only,
        "profiles": !b.ingest_only && !b.no_profiles,
        "runs": results.len(),
        "seconds": b.seconds,
        "connections": b.connections,
        "events_per_batch": b.batch,
        "event_bytes": templates.event_bytes,
        "http_events_per_s": med(|r| r.http_eps).round(),
        "p50_batch_ms": med(|r| r.p50_ms),
        "p99_batch_ms": med(|r| r.p99_ms),
        "idle_rss_mb": med(|r| r.idle_rss_mb).round(),
        "peak_rss_mb": med(|r| r.peak_rss_mb).round(),
        "batches_per_fsync": med(|r| r.batches_per_fsync),
        "limit_events_per_s": med(|r| r.limit_eps).round(),
        "ratio_to_limit": med(|r| r.http_eps / r.limit_eps),
        "queryable_lag_p50_ms": med(|r| r.lag_p50_ms),
        "queryable_lag_p99_ms": med(|r| r.lag_p99_ms),
    });
    if b.json {
        println!("{summary:#}");
    } else {
        println!(
            "ingest benchmark{}, median of {} runs ({} s each, {} connections, {} events/batch, ~{} bytes/event)\n\
             \x20 durable through HTTP: {:.0} events/s   p50 {:.2} ms   p99 {:.2} ms\n\
             \x20 server RSS:           idle {:.0} MB   peak {:.0} MB\n\
             \x20 limit (no HTTP):      {:.0} events/s   ({:.1} batches per fsync)\n\
             \x20 HTTP / limit:         {:.0} %\n\
             \x20 ingest-to-queryable:  p50 {:.0} ms   p99 {:.0} ms (probe events under load; full node only)",
            if b.ingest_only {
                " (ingest-only node)"
            } else if b.no_profiles {
                " (column store following the log, profiles off)"
            } else {
                " (column store and profiles following the log)"
            },
            results.len(),
            b.seconds,
            b.connections,
            b.batch,
            templates.event_bytes,
            summary["http_events_per_s"].as_f64().unwrap_or(0.0),
            summary["p50_batch_ms"].as_f64().unwrap_or(0.0),
            summary["p99_batch_ms"].as_f64().unwrap_or(0.0),
            summary["idle_rss_mb"].as_f64().unwrap_or(0.0),
            summary["peak_rss_mb"].as_f64().unwrap_or(0.0),
            summary["limit_events_per_s"].as_f64().unwrap_or(0.0),
            summary["batches_per_fsync"].as_f64().unwrap_or(0.0),
            100.0 * summary["ratio_to_limit"].as_f64().unwrap_or(0.0),
            summary["queryable_lag_p50_ms"].as_f64().unwrap_or(0.0),
            summary["queryable_lag_p99_ms"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Batch bodies with fixed-width message-id slots, patched per request so no two events share
/// an id (the dedupe index must not drop them).
struct Templates {
    bodies: Vec<(Vec<u8>, Vec<usize>)>,
    event_bytes: usize,
}

const ID_DIGITS: usize = 16;
const ID_SLOT: &str = "################";

impl Templates {
    fn new(batch: usize) -> Self {
        let names = [
            ("Product Viewed", "Trail Running Shoes", "Shoes", 129.0),
            ("Product Added", "Rain Jacket", "Outerwear", 149.0),
            ("Checkout Started", "Merino T-Shirt", "Tops", 49.0),
            ("Order Completed", "Canvas Backpack", "Accessories", 79.0),
        ];
        let mut bodies = Vec::new();
        let mut event_bytes = 0;
        for t in 0..16usize {
            let ts = Utc::now().to_rfc3339();
            let items: Vec<_> = (0..batch)
                .map(|i| {
                    let (event, name, category, price) = names[(t + i) % names.len()];
                    json!({
                        "type": "track",
                        "event": event,
                        "userId": format!("user-{:06}", (t * 7919 + i * 104_729) % 1_000_000),
                        "messageId": format!("bench-{ID_SLOT}"),
                        "timestamp": ts,
                        "properties": {
                            "product_id": format!("p{:03}", i % 500), "name": name,
                            "category": category, "price": price, "quantity": 1 + i % 3,
                            "currency": "USD"
                        },
                        "context": {"library": {"name": "analytics-node", "version": "3.0.0"},
                            "locale": "en-US"}
                    })
                })
                .collect();
            event_bytes = items.iter().map(|v| v.to_string().len()).sum::<usize>() / batch.max(1);
            let body = json!({"batch": items, "sentAt": ts})
                .to_string()
                .into_bytes();
            let slots = body
                .windows(ID_DIGITS)
                .enumerate()
                .filter(|(_, w)| *w == ID_SLOT.as_bytes())
                .map(|(i, _)| i)
                .collect();
            bodies.push((body, slots));
        }
        Self {
            bodies,
            event_bytes,
        }
    }

    /// The `seq`-th batch body, with globally unique message ids.
    fn body(&self, seq: u64) -> Vec<u8> {
        let (template, slots) = &self.bodies[(seq % self.bodies.len() as u64) as usize];
        let mut body = template.clone();
        for (i, &pos) in slots.iter().enumerate() {
            let id = seq * slots.len() as u64 + i as u64;
            let digits = format!("{id:016}");
            body[pos..pos + ID_DIGITS].copy_from_slice(digits.as_bytes());
        }
        body
    }
}

struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn rss_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn start_server(
    work: &Path,
    ingest_only: bool,
    profiles: bool,
) -> anyhow::Result<(Server, std::net::SocketAddr, String, String)> {
    let dir = work.join(format!("livora-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let (_, key, secret) = create_tenant(&dir)?;
    let envs = [
        (
            "LIVORA__ANALYTICS__ENABLED",
            if ingest_only { "false" } else { "true" },
        ),
        (
            "LIVORA__ANALYTICS__PROFILES",
            if profiles { "true" } else { "false" },
        ),
    ];
    let (child, addr) = spawn_serve(&dir, &envs)?;
    let server = Server { child, dir };
    wait_healthy(addr, &key, Duration::from_secs(5)).await?;
    Ok((server, addr, key, secret))
}

/// Creates a tenant in `dir` with `livora admin`: its id, write key and secret key.
pub(crate) fn create_tenant(dir: &Path) -> anyhow::Result<(String, String, String)> {
    let exe = std::env::current_exe().context("cannot find the livora binary")?;
    let out = Command::new(&exe)
        .args(["admin", "--data-dir"])
        .arg(dir)
        .args(["tenant", "create", "--name", "bench", "--json"])
        .output()
        .context("cannot run livora admin")?;
    if !out.status.success() {
        bail!(
            "tenant create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let text = |v: &serde_json::Value, what: &str| {
        v.as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {what} in admin output"))
    };
    Ok((
        text(&created["tenant"]["id"], "tenant id")?,
        text(&created["write_key"]["secret"], "write key")?,
        text(&created["secret_key"]["secret"], "secret key")?,
    ))
}

/// Starts `livora serve` over `dir` on a free loopback port, with `envs` set (its log in
/// `dir/server.log`).
pub(crate) fn spawn_serve(
    dir: &Path,
    envs: &[(&str, &str)],
) -> anyhow::Result<(Child, std::net::SocketAddr)> {
    let exe = std::env::current_exe().context("cannot find the livora binary")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))?;
    let child = Command::new(&exe)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &addr.to_string()])
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start livora serve")?;
    Ok((child, addr))
}

/// Waits up to `timeout` for `/healthz` to answer 200.
pub(crate) async fn wait_healthy(
    addr: std::net::SocketAddr,
    key: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = Client::new(addr, key);
    let started = Instant::now();
    while started.elapsed() < timeout {
        if matches!(client.get("/healthz").await, Ok((200, _))) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the server did not become healthy; see its log")
}

pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn one_run(b: &IngestBench, templates: &Templates) -> anyhow::Result<RunResult> {
    let work = b.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let (mut server, addr, key, secret) =
        start_server(&work, b.ingest_only, !b.no_profiles).await?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss_mb = rss_mb(pid, "VmRSS:");
    let templates = Arc::new(Templates {
        bodies: templates.bodies.clone(),
        event_bytes: templates.event_bytes,
    });
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let warm_up = Duration::from_secs(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..b.connections {
        let client = Client::new(addr, &key);
        let (templates, seq, stop) = (templates.clone(), seq.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let body = Bytes::from(templates.body(n));
                let t = Instant::now();
                let ok = matches!(client.post("/v1/batch", body).await, Ok((200, _)));
                if t.duration_since(started) < warm_up {
                    continue;
                }
                if ok {
                    latencies.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(warm_up).await;
    let measured = Instant::now();
    let probe = (!b.ingest_only).then(|| {
        let client = Client::new(addr, &key);
        tokio::spawn(lag_probe(
            client.clone(),
            client.with_bearer(&secret),
            stop.clone(),
        ))
    });
    tokio::time::sleep(Duration::from_secs(b.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lags = match probe {
        Some(p) => p.await??,
        None => Vec::new(),
    };
    lags.sort_by(f64::total_cmp);
    let lag_at = |p: f64| {
        lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = measured.elapsed().as_secs_f64();
    if errors > 0 {
        bail!("{errors} batches failed during the run");
    }
    let peak_rss_mb = rss_mb(pid, "VmHWM:");
    let metrics = Client::new(addr, &key).get("/metrics").await?.1;
    let metrics = String::from_utf8_lossy(&metrics);
    let fsyncs = metric(&metrics, "livora_log_fsync_seconds_count");
    let requests = metric(&metrics, "livora_ingest_request_seconds_count");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.child.wait();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    let http_eps = latencies.len() as f64 * b.batch as f64 / elapsed;
    let batches_per_fsync = if fsyncs > 0.0 { requests / fsyncs } else { 1.0 };
    let limit_eps = limit(&templates, b.seconds, batches_per_fsync.max(1.0), &work)?;
    Ok(RunResult {
        http_eps,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        idle_rss_mb,
        peak_rss_mb,
        batches_per_fsync,
        limit_eps,
        lag_p50_ms: lag_at(0.5),
        lag_p99_ms: lag_at(0.99),
    })
}

/// Under load, sends one probe event at a time and polls the query API (every 5 ms) until it
/// counts it: the time from the acknowledged send to the first answer that includes it, in ms.
async fn lag_probe(
    ingest: Client,
    query: Client,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<f64>> {
    let mut lags = Vec::new();
    let mut sent = 0u64;
    let day = chrono::Duration::days(1);
    let q = json!({
        "kind": "trends", "event": {"event": "$lag_probe"}, "metric": {"kind": "count"},
        "interval": "day", "from": (Utc::now() - day).to_rfc3339(), "to": (Utc::now() + day).to_rfc3339()
    })
    .to_string();
    while !stop.load(Ordering::Relaxed) {
        sent += 1;
        let body = json!({"batch": [{"type": "track", "event": "$lag_probe", "userId": "probe",
            "messageId": format!("lag-probe-{sent}"), "timestamp": Utc::now().to_rfc3339()}]});
        let (status, resp) = ingest
            .post("/v1/batch", Bytes::from(body.to_string()))
            .await?;
        if status != 200 {
            bail!("probe event refused: {}", String::from_utf8_lossy(&resp));
        }
        let acked = Instant::now();
        loop {
            let (status, resp) = query.post("/api/v1/query", Bytes::from(q.clone())).await?;
            if status == 429 {
                // Over the read API's rate limit: wait, as a client should.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if status != 200 {
                bail!("probe query failed: {}", String::from_utf8_lossy(&resp));
            }
            let answer: serde_json::Value = serde_json::from_slice(&resp)?;
            if answer["series"][0]["total"].as_f64() >= Some(sent as f64) {
                lags.push(acked.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(lags);
            }
            // 200 polls a second at most: the read API's default rate per key.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(lags)
}

/// The same work without HTTP: parse + normalise + encode on every core, one writer appending
/// and syncing every `per_fsync` batches.
fn limit(templates: &Templates, seconds: u64, per_fsync: f64, work: &Path) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = work.join(format!(
        "livora-limit-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let mut file = std::fs::File::create(&path)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Deep enough that parsing never waits for an fsync, as in the server.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(1024);
    let seq = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tenant = uuid::Uuid::now_v7();
    let events = std::thread::scope(|s| -> anyhow::Result<u64> {
        for _ in 0..threads {
            let tx = tx.clone();
            let seq = &seq;
            s.spawn(move || {
                while Instant::now() < deadline {
                    let body = templates.body(seq.fetch_add(1, Ordering::Relaxed));
                    let Ok((buf, n)) = encode_batch(&body, tenant) else {
                        return;
                    };
                    if tx.send((buf, n)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut events = 0u64;
        let mut since_sync = 0.0;
        for (buf, n) in rx {
            file.write_all(&buf)?;
            events += n as u64;
            since_sync += 1.0;
            if since_sync >= per_fsync {
                file.sync_data()?;
                since_sync = 0.0;
            }
        }
        file.sync_data()?;
        Ok(events)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    sync_disk();
    Ok(events as f64 / elapsed)
}

/// Flushes all dirty pages, so one phase's write-back does not slow the next.
pub(crate) fn sync_disk() {
    let _ = Command::new("sync").status();
}

fn encode_batch(body: &[u8], tenant: uuid::Uuid) -> anyhow::Result<(Vec<u8>, usize)> {
    use livora_model::ingest;
    let envelope = ingest::parse_batch(body)?;
    let env = ingest::Envelope {
        received_at: Utc::now(),
        client_ip: Some("127.0.0.1"),
        future_tolerance: chrono::Duration::minutes(10),
        sent_at: envelope.sent_at.as_deref(),
        context: envelope.context.as_ref(),
        integrations: envelope.integrations.as_ref(),
    };
    let mut buf = Vec::with_capacity(body.len() * 2);
    let mut n = 0;
    for raw in &envelope.batch {
        let m = ingest::parse_item(raw.get())?;
        let ev = ingest::normalise(m, None, &env)?;
        let payload = serde_json::to_vec(&ev)?;
        livora_log::format::encode(&mut buf, n as u64, 0, &tenant, &ev.message_id, &payload);
        n += 1;
    }
    Ok((buf, n))
}
