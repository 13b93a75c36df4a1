//! Sealed column segments through the real binary: events are sealed into Parquet, read back
//! by DuckDB (a reader that is not ours), loaded on restart instead of rebuilt from the log,
//! and kept in an S3-protocol server (s3s-fs, which checks request signatures) when
//! `[analytics] segments_url` says so.
//!
//! DuckDB and s3s-fs are installed by `scripts/test-deps.sh` (idempotent).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Server, create_tenant, free_port, query, test_deps, wait_sealed};
use serde_json::{Value, json};

/// 90 events of 10 people over three days, with a string and a number property.
fn events() -> Vec<Value> {
    let names = ["Product Viewed", "Product Added", "Order Completed"];
    (0..90)
        .map(|i| {
            json!({
                "type": "track",
                "event": names[i % 3],
                "userId": format!("user-{}", i % 10),
                "timestamp": format!("2026-03-0{}T10:{:02}:{:02}Z", 1 + (i / 30), i % 60, i % 7),
                "properties": {"sku": format!("S{}", i % 4), "price": i as f64 + 0.5, "nested": {"x": 1}},
            })
        })
        .collect()
}

async fn send(http: &common::Http, url: &str, write_key: &str, events: &[Value]) {
    let resp = http
        .post(format!("{url}/v1/batch"))
        .basic_auth(write_key, Some(""))
        .json(&json!({ "batch": events }))
        .send()
        .await
        .expect("send batch");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

fn trends() -> Value {
    json!({
        "kind": "trends", "from": "2026-03-01T00:00:00Z", "to": "2026-03-04T00:00:00Z",
        "interval": "day", "event": {"event": "Order Completed"},
        "metric": {"kind": "sum", "property": "price"},
        "breakdown": {"property": "sku"}
    })
}

/// The answer without the fields that say when it was computed.
fn stable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("log_offset");
        o.remove("took_ms");
    }
    v
}

const SEAL_FAST: [(&str, &str); 3] = [
    ("LIVORA__ANALYTICS__SEAL_ROWS", "40"),
    ("LIVORA__ANALYTICS__SEAL_INTERVAL_SECS", "1"),
    ("RUST_LOG", "info"),
];

#[tokio::test(flavor = "multi_thread")]
async fn sealed_segments_are_parquet_that_duckdb_reads_and_restarts_load_them() {
    let deps = test_deps();
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = create_tenant(dir.path());
    let http = common::http();
    let server = Server::start_with(dir.path(), &[], &SEAL_FAST);
    let sent = events();
    send(&http, &server.url, &tenant.write_key, &sent).await;
    let manifest = dir.path().join("columns/manifest.json");
    let m = wait_sealed(&manifest, 90, &dir.path().join("server.log"));
    let segments = m["tenants"][&tenant.id]["segments"]
        .as_array()
        .expect("segments");
    assert!(segments.len() >= 3, "one file per day at least: {m}");
    let before = stable(query(&http, &server.url, &tenant.secret_key, &trends()).await);
    assert_eq!(
        before["series"].as_array().map(Vec::len),
        Some(4),
        "four SKUs: {before}"
    );
    assert!(server.terminate().success());

    // DuckDB reads the files, with `tenant` and `date` from the Hive-style paths.
    let script = r#"
import duckdb, json, sys
rows = duckdb.sql(f"""
  SELECT tenant, CAST(date AS VARCHAR), event, epoch_us(ts), person, user_id, anonymous_id,
         "properties.sku", "properties.price"
  FROM read_parquet('{sys.argv[1]}/events/**/*.parquet', hive_partitioning = true)
""").fetchall()
meta = duckdb.sql(f"""
  SELECT DISTINCT compression FROM parquet_metadata('{sys.argv[1]}/events/**/*.parquet')
""").fetchall()
print(json.dumps({"rows": [[str(c) if c is not None else None for c in r] for r in rows], "meta": [[str(c) for c in m] for m in meta]}))
"#;
    let out = Command::new(deps.join("venv/bin/python"))
        .args(["-c", script])
        .arg(dir.path().join("columns"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("duckdb JSON");
    let mut got_rows: Vec<Vec<Value>> = got["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").clone())
        .collect();
    got_rows.sort_by_key(|r| r[3].as_str().map(str::to_owned));
    let mut want: Vec<Vec<Value>> = sent
        .iter()
        .map(|e| {
            let ts = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().expect("ts"))
                .expect("ts");
            vec![
                json!(tenant.id),
                json!(ts.format("%Y-%m-%d").to_string()),
                e["event"].clone(),
                json!(ts.timestamp_micros().to_string()),
                Value::Null, // person: checked below
                e["userId"].clone(),
                Value::Null,
                e["properties"]["sku"].clone(),
                json!(format!(
                    "{}",
                    e["properties"]["price"].as_f64().expect("price")
                )),
            ]
        })
        .collect();
    want.sort_by_key(|r| r[3].as_str().map(str::to_owned));
    for r in &mut got_rows {
        assert!(
            r[4].as_str().is_some_and(|p| p.parse::<u32>().is_ok()),
            "person id: {r:?}"
        );
        r[4] = Value::Null;
    }
    assert_eq!(got_rows, want, "DuckDB reads back every event");
    assert_eq!(
        got["meta"],
        json!([["ZSTD"]]),
        "every column is zstd-compressed"
    );

    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("profiles/MANIFEST")).expect("a profiles snapshot"),
    )
    .expect("manifest");
    assert_eq!(manifest["offset"], 90, "{manifest}");

    // Restart: the sealed rows are loaded from Parquet, not re-read from the log.
    std::fs::write(dir.path().join("server.log"), b"").expect("truncate log");
    let server = Server::start_with(dir.path(), &[], &SEAL_FAST);
    let after = stable(query(&http, &server.url, &tenant.secret_key, &trends()).await);
    assert_eq!(after, before, "same answer after a restart");
    let log = std::fs::read_to_string(dir.path().join("server.log")).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("column store loaded sealed segments")
                && l.contains("\"rows\":90")
                && l.contains("\"offset\":90")),
        "the restart loaded 90 sealed rows and resumed at offset 90:\n{log}"
    );
    // Profiles wrote a last snapshot when the server stopped: the restart reads it back
    // and nothing of the log again.
    let mut log = log;
    for _ in 0..100 {
        if log.contains("profiles read back") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = std::fs::read_to_string(dir.path().join("server.log")).expect("log");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("profiles read back from their snapshots")
                && l.contains("\"offset\":90")),
        "profiles resumed from their snapshot at offset 90:\n{log}"
    );
    drop(server);
    let committed = std::fs::read_to_string(dir.path().join("log/consumers/columnar.offset"))
        .expect("the column store holds the log through the `columnar` consumer");
    assert_eq!(committed.trim(), "90", "committed up to the sealed offset");
}

/// An s3s-fs server on a free loopback port, killed on drop.
struct S3 {
    child: Child,
    endpoint: String,
    root: tempfile::TempDir,
}

impl S3 {
    fn start(bin: &Path, key: &str, secret: &str) -> Self {
        let root = tempfile::tempdir().expect("s3 root");
        std::fs::create_dir(root.path().join("livora")).expect("bucket");
        let port = free_port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", key, "--secret-key", secret])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start s3s-fs at {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(25));
        }
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_go_to_s3_and_come_back_after_a_restart() {
    let deps = test_deps();
    let s3 = S3::start(
        &deps.join("s3s/bin/s3s-fs"),
        "livora-key",
        "livora-secret-0123",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = create_tenant(dir.path());
    let http = common::http();
    let mut env: Vec<(&str, &str)> = SEAL_FAST.to_vec();
    env.extend([
        (
            "LIVORA__ANALYTICS__SEGMENTS_URL",
            "s3://livora/prod/segments",
        ),
        ("AWS_ENDPOINT", s3.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "livora-key"),
        ("AWS_SECRET_ACCESS_KEY", "livora-secret-0123"),
    ]);
    let server = Server::start_with(dir.path(), &[], &env);
    send(&http, &server.url, &tenant.write_key, &events()).await;
    let bucket = s3.root.path().join("livora/prod/segments");
    let m = wait_sealed(
        &bucket.join("manifest.json"),
        90,
        &dir.path().join("server.log"),
    );
    for seg in m["tenants"][&tenant.id]["segments"]
        .as_array()
        .expect("segments")
    {
        let path = bucket.join(seg["path"].as_str().expect("path"));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            Some(size),
            seg["bytes"].as_u64(),
            "{} is in the bucket",
            path.display()
        );
    }
    assert!(
        !dir.path().join("columns/manifest.json").exists(),
        "nothing sealed locally"
    );
    let before = stable(query(&http, &server.url, &tenant.secret_key, &trends()).await);
    assert!(server.terminate().success());

    let server = Server::start_with(dir.path(), &[], &env);
    let after = stable(query(&http, &server.url, &tenant.secret_key, &trends()).await);
    assert_eq!(after, before, "loaded back from S3");
    drop(server);

    // s3s-fs checks signatures: a wrong secret cannot read the manifest, and the server
    // refuses to start rather than serve an empty store.
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .envs(env.iter().copied())
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("livora served with a wrong S3 secret");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(!status.success());
    assert!(
        stderr.contains("sealed column segments"),
        "the error says what failed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_generate_fills_a_tenant_and_writes_the_same_events_as_parquet() {
    let deps = test_deps();
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = create_tenant(dir.path());
    let parquet = dir.path().join("events.parquet");
    let parquet_arg = parquet.to_string_lossy().into_owned();
    let summary = demo_generate(
        dir.path(),
        &tenant.id,
        &["--events", "5000", "--persons", "400", "--days", "60"],
        &["--parquet", &parquet_arg],
    );
    let events = summary["events"].as_u64().expect("events");
    assert!(events >= 5000, "{summary}");
    assert_eq!(summary["tenant"], json!(tenant.id));

    // The server sees the generated orders and revenue.
    let http = common::http();
    let server = Server::start(dir.path());
    let q = json!({"kind": "commerce", "from": summary["from"], "to": summary["to"], "interval": "month"});
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let a = query(&http, &server.url, &tenant.secret_key, &q).await;
        if a["log_offset"].as_u64() >= Some(events) {
            break a;
        }
        assert!(Instant::now() < deadline, "never caught up: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    same_orders_and_revenue(&answer, &summary);
    assert!(
        answer["totals"]["refunds"].as_f64() > Some(0.0),
        "some orders are refunded"
    );
    assert!(
        answer["purchase_frequency"][1][1].as_u64() > Some(0),
        "repeat buyers exist"
    );
    drop(server);

    // DuckDB reads the Parquet export: the same events, orders and revenue.
    let script = r#"
import duckdb, json, sys
f = sys.argv[1]
print(json.dumps(duckdb.sql(f"""
  SELECT count(*), count(*) FILTER (event = 'Order Completed'),
         round(sum("properties.revenue") FILTER (event = 'Order Completed'), 2),
         count(DISTINCT user_id)
  FROM '{f}'""").fetchone()))
"#;
    let out = Command::new(deps.join("venv/bin/python"))
        .args(["-c", script])
        .arg(&parquet)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("duckdb JSON");
    assert_eq!(got[0].as_u64(), Some(events));
    assert_eq!(got[1], summary["orders"]);
    assert_eq!(got[2].as_f64(), summary["revenue"].as_f64());
    assert!(got[3].as_u64() > Some(10), "visitors identify: {got}");
}

#[tokio::test]
async fn demo_generate_sealed_writes_segments_that_queries_read_without_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = create_tenant(dir.path());
    let summary = demo_generate(
        dir.path(),
        &tenant.id,
        &["--events", "4000", "--persons", "300", "--days", "30"],
        &["--sealed", "--seal-every", "400"],
    );
    let events = summary["events"].as_u64().expect("events");
    assert_eq!(summary["sealed"], json!(true));
    // The number of sessions is estimated: about the events asked for.
    assert!((3400..=4600).contains(&events), "{summary}");
    // Straight into segments: the manifest holds every event, the log none.
    let m: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("columns/manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(m["offset"], json!(0), "no log record is sealed: {m}");
    let rows: u64 = m["tenants"][&tenant.id]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .filter_map(|s| s["rows"].as_u64())
        .sum();
    assert_eq!(rows, events);
    // Generated in time order and sealed at day boundaries (about ten seals here): each
    // day is written once, so there is nothing to compact.
    const DAY: i64 = 86_400_000_000;
    let mut days: Vec<(i64, i64)> = m["tenants"][&tenant.id]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            let (lo, hi) = (s["min_ts"].as_i64(), s["max_ts"].as_i64());
            (lo.expect("min_ts"), hi.expect("max_ts"))
        })
        .collect();
    days.sort_unstable();
    assert!(days.len() >= 28, "a file a day: {days:?}");
    for w in days.windows(2) {
        assert!(w[0].1 < w[1].0, "days overlap: {w:?}");
        assert!(
            w[0].0.div_euclid(DAY) < w[1].0.div_euclid(DAY),
            "a day twice: {w:?}"
        );
    }
    assert!(
        m["seq"].as_u64() > Some(5),
        "sealed more than once: {}",
        m["seq"]
    );
    assert_eq!(
        common::admin_json(dir.path(), &["log", "verify"])["records"],
        json!(0)
    );
    let http = common::http();
    let server = Server::start(dir.path());
    let q = json!({"kind": "commerce", "from": summary["from"], "to": summary["to"], "interval": "month"});
    let answer = query(&http, &server.url, &tenant.secret_key, &q).await;
    same_orders_and_revenue(&answer, &summary);
}

/// A commerce answer counts the orders and revenue `demo generate` reported.
fn same_orders_and_revenue(answer: &Value, summary: &Value) {
    assert_eq!(answer["totals"]["orders"], summary["orders"], "{answer}");
    let revenue = answer["totals"]["revenue"].as_f64().expect("revenue");
    assert!((revenue - summary["revenue"].as_f64().expect("revenue")).abs() < 0.01);
}

/// Runs `livora demo generate` into `tenant` of `dir` (history ending 2026-01-01) with `size`
/// and `extra` arguments; returns its summary.
fn demo_generate(dir: &Path, tenant: &str, size: &[&str], extra: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["demo", "generate"])
        .args(size)
        .args([
            "--end",
            "2026-01-01T00:00:00Z",
            "--tenant",
            tenant,
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .output()
        .expect("run livora demo generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("summary JSON")
}
