//! Personal data at rest, through the real binary: with encryption on, no personal field is
//! in plaintext anywhere in the data directory (log, Parquet segments, database, audit log,
//! server log); erasure destroys a person's keys, so their events stop decrypting, also after
//! a restart; export returns everything held about a person.

mod common;

use std::path::Path;

use common::{Server, admin_json, create_tenant, wait_sealed};
use serde_json::{Value, json};

const MASTER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const ANN: [&str; 3] = [
    "ann.secret@example.com",
    "+33 6 12 34 56 78",
    "Annabel Quux",
];
const BOB: [&str; 3] = ["bob.hidden@example.org", "+1 202 555 0147", "Robertino Zed"];
/// Nested personal data: `properties.customer.email` and `context.traits.email` (built in),
/// `properties.shipping.recipient` (configured in `[privacy] pii_paths`).
const ANN_NESTED: [&str; 3] = [
    "ann.customer@example.com",
    "ann.context@example.com",
    "Annabel Shipto",
];
const BOB_NESTED: [&str; 3] = [
    "bob.customer@example.org",
    "bob.context@example.org",
    "Robertino Shipto",
];
const CONFIG: &str = "[privacy]\npii_paths = [\"properties.shipping.recipient\"]\n";

/// `livora serve` flags: the configuration file (written by [`config`]).
fn config(dir: &Path) -> Vec<String> {
    let path = dir.join("livora.toml");
    std::fs::write(&path, CONFIG).expect("config");
    vec!["--config".into(), path.display().to_string()]
}
const IP: &str = "198.51.100.23";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LIVORA__ANALYTICS__SEAL_ROWS", "20"),
        ("LIVORA__ANALYTICS__SEAL_INTERVAL_SECS", "1"),
        ("LIVORA_MASTER_KEY", MASTER_KEY),
        ("RUST_LOG", "info"),
    ]
}

fn person_events(user: &str, anon: &str, pii: [&str; 3], nested: [&str; 3]) -> Vec<Value> {
    let ctx = json!({"ip": IP});
    let mut v = vec![
        json!({"type": "page", "anonymousId": anon, "name": "Home", "context": ctx}),
        json!({"type": "identify", "userId": user, "anonymousId": anon, "context": ctx,
               "traits": {"email": pii[0], "phone": pii[1], "name": pii[2], "plan": "pro"}}),
        json!({"type": "track", "userId": user, "event": "Order Completed", "context": ctx,
               "properties": {"revenue": 42.5, "email": pii[0], "name": "Blue T-shirt"}}),
        json!({"type": "track", "userId": user, "event": "Checkout Started",
               "context": {"ip": IP, "traits": {"email": nested[1], "plan": "pro"}},
               "properties": {"customer": {"email": nested[0], "tier": "gold"},
                              "shipping": {"recipient": nested[2], "city": "Leeds"}}}),
    ];
    for i in 0..10 {
        v.push(
            json!({"type": "track", "userId": user, "event": "Product Viewed",
                      "properties": {"product_id": format!("p{i}")}}),
        );
    }
    v
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn assert_nowhere(dir: &Path, needles: &[&str]) {
    let mut all = Vec::new();
    files(dir, &mut all);
    assert!(all.len() > 5, "the data directory has files: {all:?}");
    for f in all {
        let bytes = std::fs::read(&f).expect("read");
        for n in needles {
            let found = bytes.windows(n.len()).any(|w| w == n.as_bytes());
            assert!(!found, "{n:?} is in plaintext in {}", f.display());
        }
    }
}

async fn events(http: &common::Http, url: &str, key: &str) -> Value {
    let resp = http
        .get(format!("{url}/api/v1/events?limit=1000"))
        .bearer_auth(key)
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_encrypted_at_rest_exported_and_crypto_shredded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = create_tenant(dir.path());
    let admin = admin_json(
        dir.path(),
        &[
            "key",
            "create",
            "--tenant",
            &t.id,
            "--kind",
            "secret",
            "--scopes",
            "read,admin",
        ],
    );
    let admin_key = admin["secret"].as_str().expect("key").to_owned();
    let flags = config(dir.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_with(dir.path(), &flags, &env());
    let http = common::http();
    let mut batch = person_events("u-ann", "a-ann", ANN, ANN_NESTED);
    batch.extend(person_events("u-bob", "a-bob", BOB, BOB_NESTED));
    let resp = http
        .post(format!("{}/v1/batch", server.url))
        .basic_auth(&t.write_key, Some(""))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .expect("batch");
    assert_eq!(resp.status(), 200);
    wait_sealed(
        &dir.path().join("columns/manifest.json"),
        batch.len() as u64,
        &dir.path().join("server.log"),
    );
    // A caller with `pii.view` reads the fields decrypted.
    let text = events(&http, &server.url, &t.secret_key).await.to_string();
    for n in ANN
        .iter()
        .chain(&BOB)
        .chain(&ANN_NESTED)
        .chain(&BOB_NESTED)
        .chain([&IP])
    {
        assert!(text.contains(n), "{n} readable through the API");
    }
    // Consent, then export: everything about Ann, decrypted, and nothing about Bob.
    let resp = http
        .post(format!("{}/api/v1/people/u-ann/consents", server.url))
        .bearer_auth(&admin_key)
        .json(&json!({"purpose": "email_marketing", "granted": true, "source": "signup_form"}))
        .send()
        .await
        .expect("consent");
    assert_eq!(resp.status(), 201);
    let export: Value = http
        .get(format!("{}/api/v1/people/u-ann/export", server.url))
        .bearer_auth(&admin_key)
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    assert_eq!(
        export["events"].as_array().map(Vec::len),
        Some(14),
        "{export}"
    );
    assert_eq!(export["consents"].as_array().map(Vec::len), Some(1));
    let mut ids: Vec<&str> = export["person"]["identities"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a:a-ann", "u:u-ann"]);
    let text = export.to_string();
    assert!(ANN.iter().chain(&ANN_NESTED).all(|n| text.contains(n)) && !text.contains(BOB[0]));
    // A read key may not export or erase.
    let resp = http
        .delete(format!("{}/api/v1/people/u-ann", server.url))
        .bearer_auth(&t.secret_key)
        .send()
        .await
        .expect("erase");
    assert_eq!(resp.status(), 403);
    let erased: Value = http
        .delete(format!("{}/api/v1/people/u-ann", server.url))
        .bearer_auth(&admin_key)
        .send()
        .await
        .expect("erase")
        .json()
        .await
        .expect("json");
    assert_eq!(erased["keys_destroyed"], 2, "{erased}");
    assert_eq!(erased["consents_deleted"], 1, "{erased}");
    let check = |v: Value| {
        let text = v.to_string();
        for n in ANN.iter().chain(&ANN_NESTED) {
            assert!(!text.contains(n), "Ann's {n} still readable");
        }
        for n in BOB.iter().chain(&BOB_NESTED) {
            assert!(text.contains(n), "Bob's {n} intact");
        }
    };
    check(events(&http, &server.url, &t.secret_key).await);
    assert!(server.terminate().success());
    // Nothing personal in plaintext anywhere, Ann's or Bob's.
    let mut needles: Vec<&str> = ANN
        .iter()
        .chain(&BOB)
        .chain(&ANN_NESTED)
        .chain(&BOB_NESTED)
        .copied()
        .collect();
    needles.push(IP);
    assert_nowhere(dir.path(), &needles);
    // After a restart (keys read from the database again), Ann's fields stay unreadable.
    let server = Server::start_with(dir.path(), &flags, &env());
    check(events(&http, &server.url, &t.secret_key).await);
    let export: Value = http
        .get(format!("{}/api/v1/people/u-ann/export", server.url))
        .bearer_auth(&admin_key)
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    assert_eq!(export["consents"].as_array().map(Vec::len), Some(0));
    assert!(
        ANN.iter()
            .chain(&ANN_NESTED)
            .all(|n| !export.to_string().contains(n))
    );
    // The audit log has the export, the erasure and the consent, and its chain holds.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit");
    for a in [
        "person.export",
        "person.erase",
        "consent.record",
        "pii.view",
    ] {
        assert!(
            audit.contains(&format!("\"action\":\"{a}\"")),
            "{a} audited"
        );
    }
    assert!(server.terminate().success());
    // The CLI reads the audit key with the server's master key.
    let head = common::admin_json_env(dir.path(), &["audit", "verify"], &env());
    assert!(head["entries"].as_u64() > Some(5));
    assert_eq!(head["keyed"], true, "{head}");
}

/// Master key rotation: servers run with the new key and the old one as previous, the CLI
/// rewraps every tenant key while a server runs, then the old key can go. A tenant key
/// rotation adds a version; data under both versions stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_and_tenant_keys_rotate_while_data_stays_readable() {
    const NEW_KEY: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    let dir = tempfile::tempdir().expect("tempdir");
    let t = create_tenant(dir.path());
    let http = common::http();
    let send = |url: String, user: &'static str, email: &'static str| {
        let http = http.clone();
        let key = t.write_key.clone();
        async move {
            let resp = http
                .post(format!("{url}/v1/identify"))
                .basic_auth(&key, Some(""))
                .json(&json!({"userId": user, "traits": {"email": email}}))
                .send()
                .await
                .expect("identify");
            assert_eq!(resp.status(), 200);
        }
    };
    let old_env = [("LIVORA_MASTER_KEY", MASTER_KEY)];
    let server = Server::start_with(dir.path(), &[], &old_env);
    send(server.url.clone(), "u1", "first@example.com").await;
    assert!(server.terminate().success());
    // Rolling restart onto the new key, the old one still accepted.
    let both = [
        ("LIVORA_MASTER_KEY", NEW_KEY),
        ("LIVORA_MASTER_KEY_PREVIOUS", MASTER_KEY),
    ];
    let server = Server::start_with(dir.path(), &[], &both);
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(common::BIN)
            .args(["admin", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("admin");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["encryption", "rotate-master"], &both).contains("rewrapped 1 tenant keys"));
    assert!(run(&["encryption", "rotate-tenant", "--tenant", &t.id], &both).contains("version 2"));
    assert!(server.terminate().success());
    // The old key is gone: everything still reads, and new subjects use tenant key 2.
    let new_only = [("LIVORA_MASTER_KEY", NEW_KEY)];
    let server = Server::start_with(dir.path(), &[], &new_only);
    send(server.url.clone(), "u2", "second@example.com").await;
    let text = events(&http, &server.url, &t.secret_key).await.to_string();
    assert!(
        text.contains("first@example.com") && text.contains("second@example.com"),
        "{text}"
    );
    assert!(server.terminate().success());
    // Without any valid master key the server refuses to start (its audit key, wrapped by the
    // master key, cannot be read either), rather than lose data or run without an audit log.
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .envs(old_env.iter().copied())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("master key") && !err.contains("first@example.com"),
        "{err}"
    );
}
