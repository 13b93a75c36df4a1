//! Per-tenant data retention through the real binary: an owner sets it, the sealed files of
//! older days are deleted from the data directory, no answer includes older events, and a
//! restart does not bring them back. Another tenant keeps its data.

mod common;

use std::time::{Duration, Instant};

use common::{Server, admin_json, create_tenant, wait_sealed};
use serde_json::{Value, json};

const ENV: [(&str, &str); 3] = [
    ("LIVORA__ANALYTICS__SEAL_ROWS", "20"),
    ("LIVORA__ANALYTICS__SEAL_INTERVAL_SECS", "1"),
    ("RUST_LOG", "info"),
];

fn batch(days_ago: i64, n: usize, tag: &str) -> Vec<Value> {
    let at = chrono::Utc::now() - chrono::Duration::days(days_ago);
    (0..n)
        .map(|i| {
            json!({"type": "track", "event": "Order Completed", "userId": format!("{tag}-{i}"),
                   "timestamp": at.to_rfc3339(), "properties": {"revenue": 1}})
        })
        .collect()
}

async fn count(http: &common::Http, url: &str, key: &str) -> u64 {
    let q = json!({
        "kind": "trends", "event": {"event": "Order Completed"}, "metric": {"kind": "count"},
        "interval": "month",
        "from": (chrono::Utc::now() - chrono::Duration::days(60)).to_rfc3339(),
        "to": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
    });
    let v: Value = http
        .post(format!("{url}/api/v1/query"))
        .bearer_auth(key)
        .json(&q)
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    v["series"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["total"].as_f64()).sum::<f64>() as u64)
        .unwrap_or_else(|| panic!("no series in {v}"))
}

fn old_files(dir: &std::path::Path, tenant: &str, day: &str) -> usize {
    let d = dir.join(format!("columns/events/tenant={tenant}/date={day}"));
    std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_older_events_everywhere_for_that_tenant_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = create_tenant(dir.path());
    let other = create_tenant(dir.path());
    let invite = admin_json(
        dir.path(),
        &[
            "user",
            "invite",
            "--email",
            "owner@example.com",
            "--tenant",
            &t.id,
            "--role",
            "owner",
        ],
    );
    let server = Server::start_with(dir.path(), &[], &ENV);
    let http = common::http();
    let session: Value = http
        .post(format!("{}/api/v1/auth/accept-invitation", server.url))
        .json(&json!({"token": invite["invitation_token"], "password": "owner password 1"}))
        .send()
        .await
        .expect("accept")
        .json()
        .await
        .expect("json");
    let owner = session["access_token"].as_str().expect("token").to_owned();
    let mut sent = 0;
    for (key, tag) in [(&t.write_key, "t"), (&other.write_key, "o")] {
        let mut events = batch(20, 30, tag);
        events.extend(batch(0, 30, tag));
        sent += events.len();
        let resp = http
            .post(format!("{}/v1/batch", server.url))
            .basic_auth(key, Some(""))
            .json(&json!({"batch": events}))
            .send()
            .await
            .expect("batch");
        assert_eq!(resp.status(), 200);
    }
    let manifest = dir.path().join("columns/manifest.json");
    wait_sealed(&manifest, sent as u64, &dir.path().join("server.log"));
    let old_day = (chrono::Utc::now() - chrono::Duration::days(20))
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        old_files(dir.path(), &t.id, &old_day) > 0,
        "the old day is sealed"
    );
    assert_eq!(count(&http, &server.url, &t.secret_key).await, 60);

    // A read key may not change retention; the owner may.
    let patch = |key: &str, body: Value| {
        http.patch(format!("{}/api/v1/tenant", server.url))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    assert_eq!(
        patch(&t.secret_key, json!({"retention_days": 7}))
            .await
            .expect("patch")
            .status(),
        403
    );
    assert_eq!(
        patch(&owner, json!({"retention_days": 0}))
            .await
            .expect("patch")
            .status(),
        400
    );
    let resp = patch(&owner, json!({"retention_days": 7}))
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["retention_days"], 7);
    // Raw events past the retention are out of every answer at once.
    let page: Value = http
        .get(format!("{}/api/v1/events?limit=1000", server.url))
        .bearer_auth(&t.secret_key)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(30));
    // The sealed files of the old day go from disk; the other tenant keeps its own.
    let deadline = Instant::now() + Duration::from_secs(15);
    while old_files(dir.path(), &t.id, &old_day) > 0 {
        assert!(Instant::now() < deadline, "old segments were not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(old_files(dir.path(), &other.id, &old_day) > 0);
    // The tenant's table was reloaded without them: queries no longer count them, even a
    // monthly trend whose period starts before the retention.
    assert_eq!(count(&http, &server.url, &t.secret_key).await, 30);
    assert_eq!(count(&http, &server.url, &other.secret_key).await, 60);
    assert!(server.terminate().success());
    // After a restart the old rows are not loaded again: even with retention lifted, they
    // are gone.
    let server = Server::start_with(dir.path(), &[], &ENV);
    let session: Value = http
        .post(format!("{}/api/v1/auth/login", server.url))
        .json(&json!({"email": "owner@example.com", "password": "owner password 1"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let owner = session["access_token"].as_str().expect("token").to_owned();
    let resp = http
        .patch(format!("{}/api/v1/tenant", server.url))
        .bearer_auth(&owner)
        .json(&json!({"retention_days": null}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    assert_eq!(count(&http, &server.url, &t.secret_key).await, 30);
    assert_eq!(count(&http, &server.url, &other.secret_key).await, 60);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("\"action\":\"tenant.retention\""));
}
