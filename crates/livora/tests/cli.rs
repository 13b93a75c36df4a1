//! The binary's commands: admin, configuration precedence, graceful shutdown, demo.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Server, admin_json, all_events, create_tenant, free_port};
use serde_json::json;

#[test]
fn admin_creates_lists_and_revokes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["admin", "--data-dir"])
        .arg(dir.path())
        .args([
            "tenant",
            "create",
            "--name",
            "Acme",
            "--time-zone",
            "Europe/Paris",
            "--currency",
            "EUR",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tenant_id:") && text.contains("lv_w_") && text.contains("lv_s_"),
        "{text}"
    );

    let t = create_tenant(dir.path());
    let tenants = admin_json(dir.path(), &["tenant", "list"]);
    assert_eq!(tenants.as_array().map(Vec::len), Some(2));
    assert_eq!(tenants[0]["time_zone"], "Europe/Paris");
    let keys = admin_json(dir.path(), &["key", "list", "--tenant", &t.id]);
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    assert!(
        !keys.to_string().contains(&t.write_key),
        "secrets are never listed"
    );
    let extra = admin_json(
        dir.path(),
        &["key", "create", "--tenant", &t.id, "--kind", "write"],
    );
    assert!(
        extra["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("lv_w_"))
    );

    let status = Command::new(BIN)
        .args(["admin", "--data-dir"])
        .arg(dir.path())
        .args(["key", "revoke", &t.write_key_id])
        .status()
        .expect("revoke");
    assert!(status.success());
    let keys = admin_json(dir.path(), &["key", "list", "--tenant", &t.id]);
    assert!(keys[0]["revoked_at"].is_string());

    for bad in [
        vec!["tenant", "create", "--name", "X", "--currency", "euro"],
        vec!["key", "create", "--tenant", "not-a-uuid", "--kind", "write"],
        vec!["key", "create", "--tenant", &t.id, "--kind", "admin"],
        vec!["key", "revoke", "key_missing"],
    ] {
        let out = Command::new(BIN)
            .args(["admin", "--data-dir"])
            .arg(dir.path())
            .args(&bad)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{bad:?} should fail");
        assert!(!out.stderr.is_empty(), "{bad:?} says why");
    }
}

/// Every administrative action above is in the hash-chained audit log, which `admin audit
/// verify` checks and `admin audit export --csv` prints; an edit is detected.
/// Runs `livora ARGS…`.
fn livora(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run livora")
}

#[test]
fn data_dir_is_accepted_anywhere_on_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let create = |args: &[&str]| {
        let out = livora(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    create(&["--data-dir", d, "admin", "tenant", "create", "--name", "A"]);
    create(&["admin", "--data-dir", d, "tenant", "create", "--name", "B"]);
    create(&["admin", "tenant", "create", "--name", "C", "--data-dir", d]);
    let out = livora(&["admin", "tenant", "list", "--json", "--data-dir", d]);
    let tenants: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<_> = tenants
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["A", "B", "C"],
        "all three in the one data directory"
    );
    // `serve --help` and `demo generate --help` know it too.
    for args in [["serve", "--help"], ["demo", "--help"]] {
        let help = String::from_utf8_lossy(&livora(&args).stdout).into_owned();
        assert!(help.contains("--data-dir"), "{args:?}: {help}");
    }
}

#[test]
fn fixed_choices_are_listed_and_checked() {
    let help = String::from_utf8_lossy(&livora(&["admin", "user", "invite", "--help"]).stdout)
        .into_owned();
    assert!(
        help.contains("owner, admin, analyst, marketer, sales, ops, viewer"),
        "{help}"
    );
    let help =
        String::from_utf8_lossy(&livora(&["admin", "key", "create", "--help"]).stdout).into_owned();
    assert!(help.contains("[possible values: write, secret]"), "{help}");
    assert!(
        help.contains("[possible values: ingest, read, admin]"),
        "{help}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let t = create_tenant(dir.path());
    for (bad, listed) in [
        (
            vec![
                "user", "invite", "--email", "a@x.test", "--tenant", &t.id, "--role", "god",
            ],
            "owner, admin, analyst, marketer, sales, ops, viewer",
        ),
        (
            vec!["key", "create", "--tenant", &t.id, "--kind", "root"],
            "write, secret",
        ),
        (
            vec![
                "key", "create", "--tenant", &t.id, "--kind", "secret", "--scopes", "read,all",
            ],
            "ingest, read, admin",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["admin", "--data-dir", d])
            .args(&bad)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?} is a usage error: {err}"
        );
        assert!(
            err.contains("invalid value") && err.contains(listed),
            "{bad:?}: {err}"
        );
    }
    let key = admin_json(
        dir.path(),
        &[
            "key",
            "create",
            "--tenant",
            &t.id,
            "--kind",
            "secret",
            "--scopes",
            "admin,read,read",
        ],
    );
    assert_eq!(key["scopes"], json!(["read", "admin"]));
}

#[test]
fn admin_actions_are_audited_in_a_hash_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = create_tenant(dir.path());
    let admin = |args: &[&str]| {
        Command::new(BIN)
            .args(["admin", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run")
    };
    assert!(admin(&["key", "revoke", &t.write_key_id]).status.success());
    let head = admin_json(dir.path(), &["audit", "verify"]);
    // tenant.create, two key.create, key.revoke
    assert_eq!(head["entries"], 4, "{head}");
    let out = admin(&["audit", "export", "--csv"]);
    assert!(out.status.success());
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("seq,at,actor,action,tenant,target,from"),
        "{csv}"
    );
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(
        lines[1].contains("tenant.create") && lines[1].contains(&t.id),
        "{csv}"
    );
    assert!(
        lines[4].contains("key.revoke") && lines[4].contains(&t.write_key_id),
        "{csv}"
    );
    assert!(
        !csv.contains(&t.write_key),
        "secrets never reach the audit log"
    );
    // Edit the revocation into another key's: verify fails and says where.
    let path = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[3] = lines[3].replace(&t.write_key_id, "key_someone_else");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    let out = admin(&["audit", "verify"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4") && err.contains("edited"), "{err}");
    // A broken log takes no new entries: administrative commands refuse to run.
    assert!(!admin(&["key", "revoke", &t.write_key_id]).status.success());
}

/// Recomputes the audit chain from line `from` (0-based) on, as whoever can write the file
/// but has no key would after editing that line: SHA-256 of `prev`, a newline and the entry
/// without its `hash`, the scheme of unkeyed entries.
fn rehash_from(lines: &mut [String], from: usize) {
    use sha2::{Digest, Sha256};
    let field = |line: &str, name: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(line).expect("entry");
        v[name].as_str().expect("field").to_owned()
    };
    let mut prev = if from == 0 {
        "0".repeat(64)
    } else {
        field(&lines[from - 1], "hash")
    };
    for line in lines.iter_mut().skip(from) {
        let old_prev = field(line, "prev");
        let with_prev = line.replace(
            &format!("\"prev\":\"{old_prev}\""),
            &format!("\"prev\":\"{prev}\""),
        );
        let cut = with_prev.rfind(",\"hash\":").expect("hash last");
        let body = format!("{}}}", &with_prev[..cut]);
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        h.update(b"\n");
        h.update(body.as_bytes());
        let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        *line = format!("{},\"hash\":\"{hash}\"}}", &with_prev[..cut]);
        prev = hash;
    }
}

/// Issue 22: the audit chain is keyed (HMAC under a key wrapped by the master key), so an
/// edit with every later hash recomputed is found; `verify --head` finds entries cut from the
/// end, which leave a valid shorter chain.
#[test]
fn a_keyed_audit_chain_finds_recomputed_edits_and_cut_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The operator's master key, outside the data directory.
    let env = [("LIVORA_MASTER_KEY", "ab".repeat(32))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = common::create_tenant_env(dir.path(), &env);
    let admin = |args: &[&str]| {
        Command::new(BIN)
            .args(["admin", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run")
    };
    assert!(admin(&["key", "revoke", &t.write_key_id]).status.success());
    let head = common::admin_json_env(dir.path(), &["audit", "verify"], &env);
    assert_eq!(
        (head["entries"].as_u64(), head["keyed"].as_bool()),
        (Some(4), Some(true)),
        "{head}"
    );
    let exported = format!(
        "{}:{}",
        head["entries"],
        head["head"].as_str().expect("head")
    );
    assert!(dir.path().join("audit.key").exists());
    let path = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&path).expect("read");
    let out = admin(&["audit", "verify", "--head", &exported]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The revocation edited into another key's, every later hash recomputed.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[3] = lines[3].replace(&t.write_key_id, "key_someone_else");
    rehash_from(&mut lines, 3);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    let out = admin(&["audit", "verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 4"),
        "a recomputed edit: {err}"
    );
    // The same with the format version dropped (rewritten as unkeyed entries).
    let mut lines: Vec<String> = text.lines().map(|l| l.replace(",\"v\":2", "")).collect();
    lines[3] = lines[3].replace(&t.write_key_id, "key_someone_else");
    rehash_from(&mut lines, 0);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    assert!(!admin(&["audit", "verify"]).status.success(), "a downgrade");

    // The last entry cut: a valid chain by itself, but not the exported head's.
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, lines[..3].join("\n") + "\n").expect("write");
    let out = admin(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin(&["audit", "verify", "--head", &exported]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("removed from the end"),
        "{err}"
    );
    let out = admin(&["audit", "verify", "--head", "4:nothex"]);
    assert!(!out.status.success());
}

/// Deleting the audit key and rewriting the log as unkeyed (version 1) entries is not taken
/// for a log from before keying: the server and the CLI refuse to key it by themselves, and
/// only `livora admin audit key`, on the operator's word, keys an unkeyed log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_audit_key_is_not_taken_for_an_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("LIVORA_MASTER_KEY", "cd".repeat(32))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = common::create_tenant_env(dir.path(), &env);
    // The node ran and sealed a personal field (the tenant's key is wrapped by the master).
    let server = Server::start_with(dir.path(), &[], &env);
    let resp = common::http()
        .post(format!("{}/v1/identify", server.url))
        .basic_auth(&t.write_key, Some(""))
        .json(&json!({"userId": "u1", "traits": {"email": "person@example.com"}}))
        .send()
        .await
        .expect("identify");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(server.terminate().success());
    let admin = |args: &[&str]| {
        Command::new(BIN)
            .args(["admin", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run")
    };
    let head = common::admin_json_env(dir.path(), &["audit", "verify"], &env);
    assert_eq!(head["keyed"], true, "{head}");
    // The attacker: no master key, but write access to the data directory.
    let path = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(|l| l.replace(",\"v\":2", "")).collect();
    lines[1] = lines[1].replace(&t.write_key_id, "key_someone_else");
    rehash_from(&mut lines, 0);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    std::fs::remove_file(dir.path().join("audit.key")).expect("remove the key");

    let serve = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .envs(env.iter().copied())
        .output()
        .expect("serve");
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(
        !serve.status.success() && err.contains("livora admin audit key"),
        "the server keyed a log whose key was deleted: {err}"
    );
    assert!(!dir.path().join("audit.key").exists(), "no key was made");
    let out = admin(&["key", "revoke", &t.write_key_id]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("audit key"),
        "the CLI appended to it"
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        lines.join("\n") + "\n"
    );

    // The operator's explicit, one-time keying (an upgrade from before keying).
    let keyed: serde_json::Value =
        serde_json::from_slice(&admin(&["audit", "key", "--json"]).stdout).expect("json");
    assert_eq!(keyed["unkeyed_entries"], lines.len(), "{keyed}");
    let after = std::fs::read_to_string(&path).expect("read");
    let last: serde_json::Value =
        serde_json::from_str(after.lines().last().expect("entry")).expect("json");
    assert_eq!(
        (last["action"].as_str(), last["v"].as_u64()),
        (Some("audit.keyed"), Some(2))
    );
    let out = admin(&["audit", "key"]);
    assert!(!out.status.success(), "keyed once only");
    assert!(admin(&["key", "revoke", &t.write_key_id]).status.success());
    let head = common::admin_json_env(dir.path(), &["audit", "verify"], &env);
    assert_eq!(
        (head["entries"].as_u64(), head["keyed"].as_bool()),
        (Some(lines.len() as u64 + 2), Some(true)),
        "{head}"
    );
}

/// The first owner of a tenant is invited from the CLI, joins over HTTP and signs in; the
/// server and the CLI append to one audit chain; a reset token from the CLI sets a new
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_owner_is_invited_from_the_cli_and_signs_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = create_tenant(dir.path());
    let invite = admin_json(
        dir.path(),
        &[
            "user",
            "invite",
            "--email",
            "Boss@Example.com",
            "--tenant",
            &t.id,
            "--role",
            "owner",
        ],
    );
    let token = invite["invitation_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let server = Server::start(dir.path());
    let http = common::http();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", server.url))
            .json(&body)
            .send()
    };
    let resp = post(
        "/api/v1/auth/accept-invitation",
        json!({"token": token, "password": "a long enough secret"}),
    )
    .await
    .expect("accept");
    assert_eq!(resp.status().as_u16(), 200);
    let session: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(session["role"], "owner");
    assert_eq!(session["tenant_id"], t.id.as_str());
    let access = session["access_token"].as_str().expect("access");
    let me: serde_json::Value = http
        .get(format!("{}/api/v1/me", server.url))
        .bearer_auth(access)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["principal"]["email"], "boss@example.com");
    // The CLI appends while the server runs: one chain.
    let reset = admin_json(
        dir.path(),
        &["user", "reset", "--email", "boss@example.com"],
    );
    let resp = post(
        "/api/v1/auth/reset-password",
        json!({"token": reset["reset_token"], "password": "another long secret"}),
    )
    .await
    .expect("reset");
    assert_eq!(resp.status().as_u16(), 204);
    let resp = post(
        "/api/v1/auth/login",
        json!({"email": "boss@example.com", "password": "another long secret"}),
    )
    .await
    .expect("login");
    assert_eq!(resp.status().as_u16(), 200);
    let users = admin_json(dir.path(), &["user", "list", "--tenant", &t.id]);
    assert_eq!(users[0]["role"], "owner");
    let head = admin_json(dir.path(), &["audit", "verify"]);
    // tenant.create, 2 key.create, member.invite (by the CLI before any master key: unkeyed),
    // audit.keyed (the server's first start made the master key and the audit key),
    // member.join, auth.reset_issued, auth.password_reset, auth.login
    assert_eq!(head["entries"], 9, "{head}");
    assert_eq!(head["keyed"], true, "{head}");
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit");
    assert!(!text.contains("a long enough secret") && !text.contains(&token));
    let jwt_secret = dir.path().join("jwt.secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&jwt_secret)
            .expect("secret")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_is_refused_by_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = create_tenant(dir.path());
    let server = Server::start(dir.path());
    let http = common::http();
    let send = || {
        http.post(format!("{}/v1/track", server.url))
            .basic_auth(&t.write_key, Some(""))
            .body(r#"{"event":"x","userId":"u"}"#)
            .send()
    };
    assert_eq!(send().await.expect("send").status().as_u16(), 200);
    let status = Command::new(BIN)
        .args(["admin", "--data-dir"])
        .arg(dir.path())
        .args(["key", "revoke", &t.write_key_id])
        .status()
        .expect("revoke");
    assert!(status.success());
    assert_eq!(send().await.expect("send").status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = create_tenant(dir.path());
    let file = dir.path().join("livora.toml");
    std::fs::write(
        &file,
        "[ingest]\nmax_batch_events = 3\nmax_event_bytes = 100\n",
    )
    .expect("write");
    // The file says 3 events, the environment says 5; the flag decides the port.
    let server = Server::start_with(
        dir.path(),
        &["--config", file.to_str().expect("path")],
        &[("LIVORA__INGEST__MAX_BATCH_EVENTS", "5")],
    );
    let http = common::http();
    let batch = |n: usize| {
        json!({"batch": (0..n).map(|i| json!({"type":"track","event":"e","userId":format!("u{i}")})).collect::<Vec<_>>()}).to_string()
    };
    let post = |body: String| {
        http.post(format!("{}/v1/batch", server.url))
            .basic_auth(&t.write_key, Some(""))
            .body(body)
            .send()
    };
    assert_eq!(post(batch(5)).await.expect("send").status().as_u16(), 200);
    let resp = post(batch(6)).await.expect("send");
    assert_eq!(resp.status().as_u16(), 413);
    // From the file: 100 bytes per event.
    let big = json!({"batch": [{"type":"track","event":"e","userId":"u","properties":{"s":"x".repeat(200)}}]});
    assert_eq!(
        post(big.to_string()).await.expect("send").status().as_u16(),
        413
    );

    // A typo in the configuration is an error, not a silent default.
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("LIVORA__INGEST__MAX_BATCH_EVENT", "5")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_batch_event"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_batches_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = create_tenant(dir.path());
    let server = Server::start(dir.path());
    let http = common::http();
    // Many concurrent batches; SIGTERM arrives while they are in flight.
    let mut sends = Vec::new();
    for b in 0..40 {
        let req = http
            .post(format!("{}/v1/batch", server.url))
            .basic_auth(&t.write_key, Some(""))
            .body(json!({"batch": (0..50).map(|i| json!({"type":"track","event":"e","userId":"u","messageId":format!("b{b}-{i}")})).collect::<Vec<_>>()}).to_string());
        sends.push(tokio::spawn(req.send()));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("join");
    assert!(status.success(), "exit status {status}");
    let mut acked = 0;
    for s in sends {
        if let Ok(Ok(r)) = s.await
            && r.status().as_u16() == 200
        {
            acked += 50;
        }
    }
    let server = Server::start(dir.path());
    let stored = all_events(&http, &server.url, &t.secret_key).await;
    assert!(
        stored.len() >= acked,
        "{} stored, {acked} acknowledged",
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_keys_and_generates_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--backfill-days",
            "2",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let banner: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.trim().starts_with("Try:"))
        .collect();
    let secret = banner
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("secret key:")
                .map(|s| s.trim().to_owned())
        })
        .expect("the demo prints a secret key");
    // The dashboard's sign-ins: an owner's email and password.
    let owner: Vec<&str> = banner
        .iter()
        .find(|l| l.trim().starts_with("owner "))
        .expect("the demo prints the owner's sign-in")
        .split_whitespace()
        .collect();
    let (email, password) = (owner[1], owner[3]);
    let http = common::http();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = all_events(&http, &url, &secret).await;
        if events.len() > 500 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let login = http
        .post(format!("{url}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request");
    let signed_in = login.status();
    let page = http.get(format!("{url}/")).send().await.expect("request");
    let dashboard = page.text().await.expect("body");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(signed_in, 200, "the owner signs in");
    assert!(
        dashboard.contains(r#"<div id="root">"#),
        "the dashboard is served at /"
    );
    assert!(
        dir.path().join("demo-accounts.json").exists(),
        "the passwords are kept"
    );
    assert!(
        events.len() > 500,
        "history was generated: {}",
        events.len()
    );
    for name in ["Product Viewed", "Product Added", "Order Completed"] {
        assert!(
            events.iter().any(|e| e["event"] == name),
            "{name} in the demo data"
        );
    }
    assert!(events.iter().any(|e| e["type"] == "identify"));
}

/// `bench analytics --image DIR` keeps the sealed table as a column image and `--cold DIR`
/// maps it in a new process with the same answers; a directory holding anything else is
/// refused, not emptied.
#[test]
fn bench_analytics_keeps_an_image_that_a_cold_run_reads_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("image");
    let image_arg = image.to_str().expect("utf-8 path");
    let warm = livora(&[
        "bench",
        "analytics",
        "--events",
        "20000",
        "--runs",
        "1",
        "--image",
        image_arg,
    ]);
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let warm: serde_json::Value = serde_json::from_slice(&warm.stdout).expect("json");
    let cold = livora(&["bench", "analytics", "--cold", image_arg]);
    assert!(
        cold.status.success(),
        "{}",
        String::from_utf8_lossy(&cold.stderr)
    );
    let cold: serde_json::Value = serde_json::from_slice(&cold.stdout).expect("json");
    assert_eq!(cold["events"], warm["events"]);
    assert_eq!(cold["counts"], warm["counts"]);
    assert_eq!(cold["matrix"], warm["retention"]["matrix"]);
    assert_eq!(cold["series"], warm["trends"]["series"]);

    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("notes.txt"), "mine").expect("write");
    let refused = livora(&[
        "bench",
        "analytics",
        "--events",
        "1000",
        "--runs",
        "1",
        "--image",
        other.to_str().expect("utf-8 path"),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("notes.txt"));
    assert!(other.join("notes.txt").exists(), "nothing of it deleted");
}
