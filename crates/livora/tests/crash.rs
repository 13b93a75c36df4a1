//! Crash safety: SIGKILL the server at random moments while clients send batches; every
//! acknowledged event must be stored exactly once, and the log must read cleanly.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, admin_json, all_events, create_tenant};
use rand::{Rng, SeedableRng};
use serde_json::json;

const CLIENTS: usize = 4;
const KILLS: usize = 12;
const EVENTS_PER_BATCH: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = create_tenant(dir.path());
    let seed: u64 = rand::rng().random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let url = Arc::new(Mutex::new(String::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    // 1 MB segments, so segments roll (and crashes land around rolls) during the test.
    let start = || Server::start_with(dir.path(), &[], &[("LIVORA__LOG__SEGMENT_MB", "1")]);
    let mut server = start();
    *url.lock().expect("lock") = server.url.clone();

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, stop, acked) = (url.clone(), stop.clone(), acked.clone());
        let key = tenant.write_key.clone();
        clients.push(tokio::spawn(async move {
            let http = common::contract::client(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client"),
            );
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..EVENTS_PER_BATCH)
                    .map(|i| format!("c{c}-b{seq}-e{i}"))
                    .collect();
                let body = json!({"batch": ids.iter().map(|id| json!({
                    "type": "track", "event": "Crash Test", "userId": format!("user-{c}"),
                    "messageId": id, "properties": {"client": c, "batch": seq}
                })).collect::<Vec<_>>()})
                .to_string();
                common::send_until_acked(&http, &url, &key, &body).await;
                acked.lock().expect("lock").extend(ids.iter().cloned());
                seq += 1;
            }
        }));
    }

    for round in 0..KILLS {
        let wait = rng.random_range(150..700);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        let n = acked.lock().expect("lock").len();
        eprintln!("round {round}: killed after {wait} ms, {n} events acknowledged so far");
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
        server = start();
        *url.lock().expect("lock") = server.url.clone();
    }
    common::finish_clients(&stop, clients).await;
    let status = server.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status}");

    let report = admin_json(dir.path(), &["log", "verify"]);
    eprintln!("log verify: {report}");

    assert!(
        report["segments"].as_u64() > Some(5),
        "segments rolled: {report}"
    );
    let server = start();
    let http = common::http();
    let stored = all_events(&http, &server.url, &tenant.secret_key).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in &stored {
        *counts
            .entry(e["messageId"].as_str().expect("id"))
            .or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "stored more than once: {dupes:?}");
    let acked = acked.lock().expect("lock").clone();
    let acked_set: HashSet<&str> = acked.iter().map(String::as_str).collect();
    assert_eq!(acked_set.len(), acked.len(), "an id was acknowledged twice");
    let missing: Vec<_> = acked_set
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        acked.len() > 1000,
        "enough traffic to mean something: {}",
        acked.len()
    );
    assert_eq!(
        report["records"].as_u64(),
        Some(stored.len() as u64),
        "log holds exactly what is read back"
    );
    server.kill9();
}
