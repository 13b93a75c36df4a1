//! Crash safety of the column store: SIGKILL the server at random moments while clients send
//! events spread over four days, with a seal every few dozen events (or every second) and a
//! compaction whenever a day has two files, so kills land in seals and compactions. After the
//! last restart the column store holds every stored event exactly once, day by day against
//! the log, both once it has caught up and after a restart from its segments; and every
//! Parquet file under `events/` is one the manifest names (other engines read that tree, so a
//! file left by a cut-short compaction would count its events twice there). Kills also land
//! in the writes of the column image; the last restart maps every row from it, and one
//! without it reads the same from the segments.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, admin_json, all_events, create_tenant, wait_sealed};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const CLIENTS: usize = 2;
const KILLS: usize = 8;
const EVENTS_PER_BATCH: usize = 10;
const ENV: [(&str, &str); 6] = [
    ("LIVORA__ANALYTICS__SEAL_ROWS", "30"),
    ("LIVORA__ANALYTICS__SEAL_INTERVAL_SECS", "1"),
    ("LIVORA__ANALYTICS__COMPACT_FILES", "2"),
    ("LIVORA__ANALYTICS__SPILL_MIN_KB", "1"),
    ("LIVORA__ANALYTICS__PROFILES", "false"),
    ("LIVORA__AUTOMATION__ENABLED", "false"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_seals_and_compactions_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = create_tenant(dir.path());
    let seed: u64 = rand::rng().random();
    eprintln!("column crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = || Server::start_with(dir.path(), &[], &ENV);
    let mut server = start();
    let url = Arc::new(Mutex::new(server.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, stop) = (url.clone(), stop.clone());
        let key = tenant.write_key.clone();
        clients.push(tokio::spawn(async move {
            let http = common::contract::client(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client"),
            );
            let mut seq = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"batch": (0..EVENTS_PER_BATCH).map(|i| json!({
                    "type": "track", "event": "Crash Test", "userId": format!("user-{c}-{}", i % 5),
                    "messageId": format!("c{c}-b{seq}-e{i}"),
                    // Four days, interleaved: later batches bring late events to sealed days.
                    "timestamp": format!("2026-03-0{}T10:{:02}:{:02}Z", 1 + (seq + i) % 4, seq % 60, i),
                    "properties": {"client": c, "batch": seq}
                })).collect::<Vec<_>>()})
                .to_string();
                common::send_until_acked(&http, &url, &key, &body).await;
                seq += 1;
            }
        }));
    }
    for round in 0..KILLS {
        let wait = rng.random_range(300..1_200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        eprintln!("round {round}: killed after {wait} ms");
        server = start();
        *url.lock().expect("lock") = server.url.clone();
    }
    common::finish_clients(&stop, clients).await;
    assert!(server.terminate().success(), "clean exit on SIGTERM");
    let records = admin_json(dir.path(), &["log", "verify"])["records"]
        .as_u64()
        .expect("records");
    assert!(records > 200, "enough traffic to mean something: {records}");

    // Caught up and sealed: what the log holds, day by day, once each.
    let server = start();
    let http = common::http();
    let manifest = dir.path().join("columns/manifest.json");
    let m = wait_sealed(&manifest, records, &dir.path().join("server.log"));
    let stored = all_events(&http, &server.url, &tenant.secret_key).await;
    assert_eq!(stored.len() as u64, records);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in &stored {
        let day = e["timestamp"].as_str().expect("timestamp")[..10].to_owned();
        *want.entry(day).or_default() += 1;
    }
    let got = counts_by_day(&http, &server.url, &tenant.secret_key).await;
    assert_eq!(got, want, "column store against the log");
    let compacted = m["tenants"][&tenant.id]["segments"]
        .as_array()
        .expect("segments")
        .len();
    eprintln!("{records} events; {compacted} segment files after compaction");
    // A compaction may still be between its file and its manifest: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while parquet_files(&dir.path().join("columns/events")) != named_files(&manifest)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        parquet_files(&dir.path().join("columns/events")),
        named_files(&manifest),
        "every Parquet file under events/ is named by the manifest"
    );
    // Nothing is hot, so no seal is due: the last seal's compactions end within moments,
    // each writing the image after its manifest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(server.terminate().success());

    // Restarted: every sealed row mapped from the column image, the same answer.
    let server = start();
    assert_eq!(
        counts_by_day(&http, &server.url, &tenant.secret_key).await,
        want,
        "after a restart from the image"
    );
    assert_eq!(
        image_rows(&http, &server.url).await,
        records,
        "every row from the image"
    );
    server.kill9();

    // Without the image, from the segments: the same answer.
    std::fs::remove_dir_all(dir.path().join("columns-cache")).expect("remove the image");
    let server = start();
    assert_eq!(
        counts_by_day(&http, &server.url, &tenant.secret_key).await,
        want,
        "after a restart from the segments"
    );
    assert_eq!(image_rows(&http, &server.url).await, 0);
    server.kill9();
}

/// The `livora_columnar_image_rows` gauge: rows the column store mapped from its image.
async fn image_rows(http: &common::Http, url: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("livora_columnar_image_rows "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or_else(
            || panic!("no livora_columnar_image_rows in:\n{text}"),
            |v| v as u64,
        )
}

/// Events per day of the `Crash Test` trend.
async fn counts_by_day(http: &common::Http, url: &str, secret: &str) -> BTreeMap<String, u64> {
    let q = json!({"kind": "trends", "event": {"event": "Crash Test"}, "interval": "day",
        "metric": {"kind": "count"},
        "from": "2026-03-01T00:00:00Z", "to": "2026-03-05T00:00:00Z"});
    let v = common::query(http, url, secret, &q).await;
    let buckets = v["buckets"].as_array().expect("buckets");
    let values = v["series"][0]["values"].as_array().expect("values");
    buckets
        .iter()
        .zip(values)
        .filter_map(|(b, v)| Some((b.as_str()?[..10].to_owned(), v.as_f64()? as u64)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The `.parquet` files under `dir`, relative to its parent (`columns/`).
fn parquet_files(dir: &Path) -> BTreeSet<String> {
    let root = dir.parent().expect("columns dir");
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let rel = path.strip_prefix(root).expect("under columns");
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn named_files(manifest: &Path) -> BTreeSet<String> {
    let m: Value =
        serde_json::from_slice(&std::fs::read(manifest).expect("manifest")).expect("json");
    m["tenants"]
        .as_object()
        .expect("tenants")
        .values()
        .flat_map(|t| t["segments"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["path"].as_str().map(str::to_owned))
        .collect()
}
