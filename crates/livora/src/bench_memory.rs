//! `livora bench memory`: history against a memory budget, on a real server. Writes
//! `--events` of generated shop traffic into a fresh data directory's log (`livora demo
//! generate`), starts `livora serve` with `[analytics] memory_limit_mb` and times the column
//! store's catch-up (events applied per second, from the start of the process to the whole
//! log applied); then stops it, starts it again (sealed rows mapped from the column image,
//! or decoded from Parquet where there is none, then the rest of the log applied), runs every
//! query kind through `POST /api/v1/query`, and reports the server's resident memory (VmRSS
//! after the restart and after the queries, VmHWM after the restart and over the run), the
//! spilled columns' bytes, and each query's time. Profiles, automation and model training are off:
//! this measures the column store.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::bench::{create_tenant, metric, rss_mb, spawn_serve, wait_healthy};
use crate::client::Client;

#[derive(clap::Args, Clone)]
pub struct MemoryBench {
    /// Events to generate (about).
    #[arg(long, default_value_t = 5_000_000)]
    events: usize,
    /// Size of the visitor population (default: a tenth of the events).
    #[arg(long)]
    persons: Option<u64>,
    /// Days of history.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// `[analytics] memory_limit_mb` of the server (0: none).
    #[arg(long, default_value_t = 1024)]
    memory_limit_mb: u64,
    /// Where to put the data directory (default: the system temp dir); removed after.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Generate straight into sealed segments (`demo generate --sealed`) instead of the
    /// log, for histories the disk cannot hold as a log; there is no catch-up to time.
    #[arg(long)]
    sealed: bool,
    /// Keep the data directory (its path is printed) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Measure the restart and the queries over this data directory, kept from an earlier
    /// run (`--keep`), instead of generating one: its tenant named `bench` gets new keys.
    #[arg(long, conflicts_with_all = ["work_dir", "keep"])]
    reuse: Option<PathBuf>,
    /// Before the restart, write back and drop the kernel's page cache
    /// (`/proc/sys/vm/drop_caches`, which needs root), so that the restart and each query's
    /// first run read from the disk: the cold figures.
    #[arg(long)]
    drop_caches: bool,
}

/// The end of the generated history (fixed, so runs are comparable).
const END: &str = "2026-11-30T00:00:00Z";

pub async fn run(b: MemoryBench) -> anyhow::Result<()> {
    let persons = b.persons.unwrap_or(b.events as u64 / 10).max(1);
    let (dir, key, secret) = match &b.reuse {
        Some(dir) => {
            let (key, secret) = new_keys(dir)?;
            (dir.clone(), key, secret)
        }
        None => {
            let work = b.work_dir.clone().unwrap_or_else(std::env::temp_dir);
            let dir = work.join(format!("livora-memory-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir)?;
            let (key, secret) = generate(&b, &dir, persons)?;
            (dir, key, secret)
        }
    };
    let _cleanup = (b.reuse.is_none() && !b.keep).then(|| RemoveOnDrop(dir.clone()));
    if b.keep {
        eprintln!("data directory kept: {}", dir.display());
    }
    let sealed = b.sealed || b.reuse.is_some();
    // A reused directory's population is what generated it: unknown here unless given.
    let persons = (b.reuse.is_none() || b.persons.is_some()).then_some(persons);
    measure(&b, &dir, &key, &secret, persons, sealed).await
}

/// A tenant in `dir` and its history from `demo generate`; returns the write and secret keys.
fn generate(
    b: &MemoryBench,
    dir: &std::path::Path,
    persons: u64,
) -> anyhow::Result<(String, String)> {
    let (tenant, key, secret) = create_tenant(dir)?;
    let exe = std::env::current_exe().context("cannot find the livora binary")?;
    let generated = Instant::now();
    let out = Command::new(&exe)
        .args(["demo", "generate", "--data-dir"])
        .arg(dir)
        .args(["--tenant", &tenant, "--end", END])
        .args(["--events", &b.events.to_string()])
        .args(["--persons", &persons.to_string()])
        .args(["--days", &b.days.to_string()])
        .args(b.sealed.then_some("--sealed"))
        .output()
        .context("cannot run livora demo generate")?;
    if !out.status.success() {
        bail!(
            "demo generate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "generated {} events in {:.0} s",
        b.events,
        generated.elapsed().as_secs_f64()
    );
    Ok((key, secret))
}

/// New write and secret keys for the tenant named `bench` in `dir`.
fn new_keys(dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    let admin = |args: &[&str]| -> anyhow::Result<Value> {
        let exe = std::env::current_exe().context("cannot find the livora binary")?;
        let out = Command::new(&exe)
            .args(["admin", "--data-dir"])
            .arg(dir)
            .args(args)
            .output()
            .context("cannot run livora admin")?;
        if !out.status.success() {
            bail!("livora admin: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let tenants = admin(&["tenant", "list", "--json"])?;
    let tenant = tenants
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "bench"))
        .and_then(|t| t["id"].as_str())
        .with_context(|| format!("no tenant named bench in {}", dir.display()))?
        .to_owned();
    let key = |kind: &str| -> anyhow::Result<String> {
        let k = admin(&[
            "key", "create", "--tenant", &tenant, "--kind", kind, "--json",
        ])?;
        k["secret"]
            .as_str()
            .map(str::to_owned)
            .context("no secret in the admin output")
    };
    Ok((key("write")?, key("secret")?))
}

async fn measure(
    b: &MemoryBench,
    dir: &std::path::Path,
    key: &str,
    secret: &str,
    persons: Option<u64>,
    sealed: bool,
) -> anyhow::Result<()> {
    let limit = b.memory_limit_mb.to_string();
    let envs = [
        ("LIVORA__ANALYTICS__PROFILES", "false"),
        ("LIVORA__AUTOMATION__ENABLED", "false"),
        ("LIVORA__INTEL__RETRAIN_HOURS", "0"),
        ("LIVORA__ANALYTICS__MEMORY_LIMIT_MB", limit.as_str()),
    ];

    // 1. Catch-up from the log (none with `--sealed`).
    let (mut catch_up_s, mut catch_up_hwm_mb) = (None, None);
    if !sealed {
        let started = Instant::now();
        let (mut child, addr) = spawn_serve(dir, &envs)?;
        let pid = child.id();
        wait_healthy(addr, key, Duration::from_secs(600)).await?;
        caught_up(addr, key, Duration::from_secs(3600)).await?;
        catch_up_s = Some(started.elapsed().as_secs_f64());
        catch_up_hwm_mb = Some(rss_mb(pid, "VmHWM:"));
        stop(&mut child);
    }

    // 2. Restart: sealed rows from the column image (or Parquet), then the log's unsealed tail.
    if b.drop_caches {
        drop_page_cache()?;
    }
    let restarted = Instant::now();
    let (mut child, addr) = spawn_serve(dir, &envs)?;
    let pid = child.id();
    wait_healthy(addr, key, Duration::from_secs(600)).await?;
    caught_up(addr, key, Duration::from_secs(3600)).await?;
    let restart_s = restarted.elapsed().as_secs_f64();

    let loaded_rss_mb = rss_mb(pid, "VmRSS:");
    let loaded_anon_mb = rss_mb(pid, "RssAnon:");
    let restart_hwm_mb = rss_mb(pid, "VmHWM:");
    let api = Client::new(addr, key).with_bearer(secret);
    // Each kind twice: the first run after the restart, and again at once (warm).
    let mut times = serde_json::Map::new();
    for (name, q) in queries(b.days) {
        let mut runs = Vec::new();
        let sampler = Sampler::start(pid);
        for _ in 0..2 {
            let t = Instant::now();
            let (status, body) = api
                .post("/api/v1/query", Bytes::from(q.to_string()))
                .await?;
            if status != 200 {
                bail!("{name}: {status} {}", String::from_utf8_lossy(&body));
            }
            runs.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // The process's peak so far (which kind raised it), and the largest resident size
        // seen while this kind ran, with its heap and file parts.
        let peak_mb = rss_mb(pid, "VmHWM:");
        let seen = sampler.stop();
        times.insert(
            name.into(),
            json!({"first": runs[0], "warm": runs[1], "peak_rss_mb": peak_mb,
                "sampled_max_rss_mb": seen.total, "its_anon_mb": seen.anon,
                "its_file_mb": seen.file}),
        );
    }
    // The store checks its budget every quarter second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rss_after_mb = rss_mb(pid, "VmRSS:");
    let anon_after_mb = rss_mb(pid, "RssAnon:");
    let file_after_mb = rss_mb(pid, "RssFile:");
    let hwm_mb = rss_mb(pid, "VmHWM:");
    let metrics = Client::new(addr, key).get("/metrics").await?.1;
    let metrics = String::from_utf8_lossy(&metrics);
    let end = metric(&metrics, "livora_columnar_rows").max(1.0) as u64;
    let mapped = metric(&metrics, "livora_columnar_mapped_bytes");
    let evictions = metric(&metrics, "livora_columnar_evictions_total");
    let image_rows = metric(&metrics, "livora_columnar_image_rows");
    stop(&mut child);
    let columns_bytes = dir_bytes(&dir.join("columns"), false);
    let cache_disk = dir_bytes(&dir.join("columns-cache"), true);
    let by_part: serde_json::Map<String, serde_json::Value> =
        livora_columnar::image::breakdown(&dir.join("columns-cache"))
            .unwrap_or_default()
            .into_iter()
            .map(|(part, bytes)| (part.to_owned(), json!(bytes as f64 / end as f64)))
            .collect();
    let summary = json!({
        "events": end,
        "persons": persons,
        "memory_limit_mb": b.memory_limit_mb,
        "catch_up_seconds": catch_up_s,
        "catch_up_events_per_second": catch_up_s.map(|s| end as f64 / s),
        "catch_up_peak_rss_mb": catch_up_hwm_mb,
        "restart_seconds": restart_s,
        "rss_after_restart_mb": loaded_rss_mb,
        // Heap (anonymous) part of it: what eviction cannot drop.
        "rss_anon_after_restart_mb": loaded_anon_mb,
        "rss_after_queries_mb": rss_after_mb,
        "rss_anon_after_queries_mb": anon_after_mb,
        "rss_file_after_queries_mb": file_after_mb,
        "peak_rss_mb": hwm_mb,
        "restart_peak_rss_mb": restart_hwm_mb,
        "mapped_bytes_per_event": mapped / end as f64,
        "segment_bytes_per_event": columns_bytes as f64 / end as f64,
        // The column image (the columns' files as allocated on the disk, dictionaries and
        // descriptions), and the rows the restart took from it.
        "image_disk_bytes_per_event": cache_disk as f64 / end as f64,
        // What the image's rows take, by part (see `livora_columnar::image::breakdown`).
        "image_bytes_per_event_by_part": by_part,
        "rows_from_image": image_rows,
        "cold": b.drop_caches,
        "evictions": evictions,
        "query_ms": times,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Waits until the column store has applied the whole log.
async fn caught_up(addr: std::net::SocketAddr, key: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = Client::new(addr, key);
    let started = Instant::now();
    while started.elapsed() < timeout {
        let text = client.get("/metrics").await?.1;
        let text = String::from_utf8_lossy(&text);
        let end = metric(&text, "livora_log_end_offset");
        let applied = metric(
            &text,
            "livora_consumer_applied_offset{consumer=\"columnar\"}",
        );
        // An empty log (`--sealed`) has nothing to catch up with once the server answers.
        if text.contains("livora_log_end_offset") && applied >= end {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("the column store did not catch up with the log")
}

/// Every query kind over the whole generated range.
fn queries(days: u32) -> Vec<(&'static str, Value)> {
    let to: chrono::DateTime<chrono::Utc> = END.parse().unwrap_or_default();
    let from = to - chrono::Duration::days(i64::from(days));
    let range = json!({"from": from.to_rfc3339(), "to": to.to_rfc3339()});
    let with = |q: Value| {
        let mut q = q;
        if let (Some(o), Some(r)) = (q.as_object_mut(), range.as_object()) {
            o.extend(r.clone());
        }
        q
    };
    let steps = crate::bench_analytics::STEPS;
    vec![
        (
            "funnel",
            with(json!({"kind": "funnel", "window_seconds": 7 * 86_400,
                "steps": steps.iter().map(|s| json!({"event": s})).collect::<Vec<_>>()})),
        ),
        (
            "retention",
            json!({"kind": "retention", "period": "week", "periods": 8,
                "from": (to - chrono::Duration::weeks(8)).to_rfc3339(),
                "start_event": {"event": steps[0]}, "return_event": {"event": steps[3]}}),
        ),
        (
            "trends",
            with(
                json!({"kind": "trends", "event": {"event": steps[3]}, "interval": "day",
                "metric": {"kind": "sum", "property": "revenue"},
                "breakdown": {"property": "category"}}),
            ),
        ),
        (
            "paths",
            with(json!({"kind": "paths", "event": {"event": steps[1]}, "depth": 3})),
        ),
        (
            "stickiness",
            with(json!({"kind": "stickiness", "interval": "week", "event": {"event": steps[0]}})),
        ),
        (
            "lifecycle",
            with(json!({"kind": "lifecycle", "interval": "week", "event": {"event": steps[0]}})),
        ),
        ("commerce", with(json!({"kind": "commerce"}))),
    ]
}

/// The largest resident size seen, and its anonymous (heap) and file parts, in MB.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    total: f64,
    anon: f64,
    file: f64,
}

/// Reads a process's resident size every 2 ms on a thread, keeping the largest.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Seen>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                let mut seen = Seen::default();
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                    let mb = |key: &str| {
                        status.as_deref().ok().and_then(|s| {
                            let line = s.lines().find(|l| l.starts_with(key))?;
                            line.split_whitespace().nth(1)?.parse::<f64>().ok()
                        })
                    };
                    let kb_to_mb = |kb: Option<f64>| kb.unwrap_or(0.0) / 1024.0;
                    let (anon, file) = (kb_to_mb(mb("RssAnon:")), kb_to_mb(mb("RssFile:")));
                    if anon + file > seen.total {
                        seen = Seen {
                            total: anon + file,
                            anon,
                            file,
                        };
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                seen
            })
            .ok();
        Self { stop, handle }
    }

    fn stop(mut self) -> Seen {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

fn stop(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Bytes of the files under `dir`: their lengths, or with `allocated` the blocks they take
/// on the disk (the column files are sparse past their rows).
fn dir_bytes(dir: &std::path::Path, allocated: bool) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path(), allocated),
            Ok(m) if allocated => m.blocks() * 512,
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Writes dirty pages back and drops the page cache, dentries and inodes.
fn drop_page_cache() -> anyhow::Result<()> {
    let synced = Command::new("sync").status().context("running sync")?;
    if !synced.success() {
        bail!("sync failed: {synced}");
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3").context(
        "--drop-caches writes /proc/sys/vm/drop_caches, which needs root (and a writable /proc/sys)",
    )
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
