//! Helpers for tests that run the real `livora` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_livora");

/// The server crate's contract check: every response is checked against the OpenAPI document.
#[path = "../../../server/tests/api/contract.rs"]
pub mod contract;

pub use contract::Http;

/// An HTTP client whose responses are checked against the OpenAPI document.
pub fn http() -> Http {
    contract::client(reqwest::Client::new())
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Runs `livora admin --data-dir DIR ARGS… --json` and parses its output.
pub fn admin_json(dir: &Path, args: &[&str]) -> Value {
    admin_json_env(dir, args, &[])
}

/// [`admin_json`] with environment variables (the master key or KMS settings the server has:
/// the CLI reads the audit key with them).
pub fn admin_json_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = Command::new(BIN)
        .args(["admin", "--data-dir"])
        .arg(dir)
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
        .output()
        .expect("run livora admin");
    assert!(
        out.status.success(),
        "livora admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("admin prints JSON")
}

pub struct Tenant {
    pub id: String,
    pub write_key: String,
    pub write_key_id: String,
    pub secret_key: String,
}

pub fn create_tenant(dir: &Path) -> Tenant {
    create_tenant_env(dir, &[])
}

/// [`create_tenant`] with environment variables (see [`admin_json_env`]).
pub fn create_tenant_env(dir: &Path, env: &[(&str, &str)]) -> Tenant {
    let v = admin_json_env(dir, &["tenant", "create", "--name", "Test Shop"], env);
    Tenant {
        id: v["tenant"]["id"].as_str().expect("id").to_owned(),
        write_key: v["write_key"]["secret"].as_str().expect("write").to_owned(),
        write_key_id: v["write_key"]["id"].as_str().expect("write id").to_owned(),
        secret_key: v["secret_key"]["secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `livora serve` child process.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[], &[])
    }

    pub fn start_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("server log");
        let child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "warn")
            .env("LIVORA__INGEST__KEY_CACHE_TTL_SECS", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn livora serve");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        server.wait_healthy(dir);
        server
    }

    fn wait_healthy(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = probe::http_ok;
        while Instant::now() < deadline {
            if client(&format!("{}/healthz", self.url)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        panic!("livora serve did not become healthy; its log:\n{log}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod probe {
    /// A dependency-free readiness probe (plain HTTP/1.0 GET over loopback).
    pub fn http_ok(url: &str) -> bool {
        use std::io::{Read, Write};
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
    }
}

/// Every stored event of the tenant (newest first), following cursors.
pub async fn all_events(http: &Http, url: &str, secret: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = http
            .get(format!("{url}/api/v1/events"))
            .bearer_auth(secret)
            .query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let page: Value = req
            .send()
            .await
            .expect("read events")
            .json()
            .await
            .expect("events JSON");
        out.extend(page["events"].as_array().expect("events").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Waits until `manifest` (a file) says every one of `events` log records is sealed.
pub fn wait_sealed(manifest: &Path, events: u64, server_log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(bytes) = std::fs::read(manifest)
            && let Ok(m) = serde_json::from_slice::<Value>(&bytes)
            && m["offset"].as_u64() >= Some(events)
        {
            return m;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(server_log).unwrap_or_default();
            panic!(
                "{} never sealed {events} events; server log:\n{log}",
                manifest.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Installs (idempotently) what tests run besides Livora, with `scripts/test-deps.sh`, and
/// returns where: the Segment SDKs, DuckDB, moto and s3s-fs.
pub fn test_deps() -> PathBuf {
    let root = repo_root();
    let deps = std::env::var("LIVORA_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".cache/test-deps"));
    let out = Command::new(root.join("scripts/test-deps.sh"))
        .env("LIVORA_TEST_DEPS", &deps)
        .output()
        .expect("run scripts/test-deps.sh");
    assert!(
        out.status.success(),
        "installing the test dependencies failed (needs python3 with venv, node >= 20, cargo, and access to PyPI, npm and crates.io):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    deps
}

/// `livora serve` with the master key in a cloud KMS (`env` configures it): a personal field
/// is encrypted under keys that KMS wraps and read back decrypted, also after a restart
/// (`between_restarts` runs in between); no local master key exists; the log holds no
/// plaintext; `livora admin encryption rotate-master` rewraps through KMS.
pub async fn cloud_kms_round_trip(env: &[(&str, &str)], between_restarts: &dyn Fn()) {
    let dir = tempfile::tempdir().expect("tempdir");
    // The CLI has the server's KMS settings: it reads the audit key with them.
    let t = create_tenant_env(dir.path(), env);
    let http = http();
    for round in 0..2 {
        let server = Server::start_with(dir.path(), &[], env);
        if round == 0 {
            let resp = http
                .post(format!("{}/v1/identify", server.url))
                .basic_auth(&t.write_key, Some(""))
                .json(&serde_json::json!({"userId": "u1", "traits": {"email": "kms.person@example.com"}}))
                .send()
                .await
                .expect("identify");
            assert_eq!(resp.status(), 200);
        }
        let page: Value = http
            .get(format!("{}/api/v1/events", server.url))
            .bearer_auth(&t.secret_key)
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("json");
        assert_eq!(
            page["events"][0]["traits"]["email"], "kms.person@example.com",
            "round {round}: {page}"
        );
        assert!(server.terminate().success());
        if round == 0 {
            between_restarts();
        }
    }
    assert!(!dir.path().join("master.key").exists());
    let log = std::fs::read_dir(dir.path().join("log/segments"))
        .expect("log segments")
        .flatten()
        .map(|e| std::fs::read(e.path()).expect("read"))
        .any(|b| b.windows(22).any(|w| w == b"kms.person@example.com"));
    assert!(!log, "the email is encrypted in the log");
    let out = Command::new(BIN)
        .args(["admin", "--data-dir"])
        .arg(dir.path())
        .args(["encryption", "rotate-master"])
        .envs(env.iter().copied())
        .output()
        .expect("admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // tenant.create, 2 key.create, 2 pii.view (the reads), encryption.rotate_master
    let head = admin_json_env(dir.path(), &["audit", "verify"], env);
    assert_eq!(
        (head["entries"].as_u64(), head["keyed"].as_bool()),
        (Some(6), Some(true))
    );
    assert!(!dir.path().join("master.key").exists());
}

/// `POST /api/v1/query` with a secret key; asserts a 200 and returns the answer.
pub async fn query(http: &Http, url: &str, secret: &str, body: &Value) -> Value {
    let resp = http
        .post(format!("{url}/api/v1/query"))
        .bearer_auth(secret)
        .json(body)
        .send()
        .await
        .expect("query");
    let status = resp.status();
    let v: Value = resp.json().await.expect("query JSON");
    assert_eq!(status, 200, "{v}");
    v
}

/// Posts `body` to `/v1/batch` on the server `url` names (it changes when a test restarts the
/// server) until it is answered 200, as an SDK retries. Anything else must be a 5xx, a 429 or
/// a failed connection.
pub async fn send_until_acked(
    http: &Http,
    url: &std::sync::Mutex<String>,
    write_key: &str,
    body: &str,
) {
    loop {
        let target = url.lock().expect("lock").clone();
        let resp = http
            .post(format!("{target}/v1/batch"))
            .basic_auth(write_key, Some(""))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await;
        if matches!(&resp, Ok(r) if r.status().as_u16() == 200) {
            return;
        }
        if let Ok(r) = resp {
            let status = r.status().as_u16();
            assert!(status >= 500 || status == 429, "unexpected status {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets client tasks finish their pending batches on the last server (half a second), then
/// stops them and waits for each (at most a minute).
pub async fn finish_clients(
    stop: &std::sync::atomic::AtomicBool,
    clients: Vec<tokio::task::JoinHandle<()>>,
) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("clients finish")
            .expect("client task");
    }
}
