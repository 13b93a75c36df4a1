//! The official Segment SDKs (PyPI `segment-analytics-python`, npm `@segment/analytics-node`)
//! send every call type to a running `livora serve`; each call is read back with its fields.
//!
//! The SDKs are installed by `scripts/test-deps.sh` (idempotent) into `.cache/test-deps`.

mod common;

use std::process::Command;

use common::{Server, all_events, create_tenant, repo_root, test_deps};
use serde_json::Value;

fn run_sdk(program: &str, script: &str, url: &str, key: &str, run: &str, gzip: bool) -> Vec<Value> {
    let deps = test_deps();
    let program = if program == "python" {
        deps.join("venv/bin/python").to_string_lossy().into_owned()
    } else {
        program.to_owned()
    };
    let out = Command::new(&program)
        .arg(repo_root().join(script))
        .env("LIVORA_URL", url)
        .env("LIVORA_WRITE_KEY", key)
        .env("RUN_ID", run)
        .env("LIVORA_TEST_DEPS", &deps)
        .env("LIVORA_SDK_GZIP", if gzip { "1" } else { "0" })
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints what it sent as JSON")
}

fn check_read_back(sent: &[Value], stored: &[Value]) {
    let mut types: Vec<&str> = Vec::new();
    for s in sent {
        let id = s["messageId"].as_str().expect("sent messageId");
        let e = stored
            .iter()
            .find(|e| e["messageId"] == id)
            .unwrap_or_else(|| panic!("{} call {id} was not stored", s["type"]));
        for field in [
            "type",
            "userId",
            "anonymousId",
            "event",
            "name",
            "category",
            "groupId",
            "previousId",
            "properties",
            "traits",
        ] {
            if !s[field].is_null() {
                assert_eq!(e[field], s[field], "{field} of {} call {id}", s["type"]);
            }
        }
        assert_eq!(e["originalTimestamp"], s["timestamp"], "timestamp as sent");
        assert_eq!(e["context"]["ip"], "127.0.0.1");
        types.push(s["type"].as_str().expect("type"));
    }
    for t in ["identify", "track", "page", "screen", "group", "alias"] {
        assert!(types.contains(&t), "the SDK sent a {t} call");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_segment_sdks_are_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = create_tenant(dir.path());
    let server = Server::start(dir.path());
    let http = common::http();

    let (url, key) = (server.url.clone(), tenant.write_key.clone());
    let sent = tokio::task::spawn_blocking(move || {
        vec![
            run_sdk(
                "python",
                "tests/sdk/send_python.py",
                &url,
                &key,
                "plain",
                false,
            ),
            run_sdk(
                "python",
                "tests/sdk/send_python.py",
                &url,
                &key,
                "gzip",
                true,
            ),
            run_sdk("node", "tests/sdk/send_node.mjs", &url, &key, "n1", false),
        ]
    })
    .await
    .expect("sdk runs");
    let stored = all_events(&http, &server.url, &tenant.secret_key).await;
    for batch in &sent {
        check_read_back(batch, &stored);
    }
    let total: usize = sent.iter().map(Vec::len).sum();
    assert_eq!(stored.len(), total, "nothing stored twice, nothing extra");
    let libs: Vec<_> = stored
        .iter()
        .map(|e| e["context"]["library"]["name"].clone())
        .collect();
    assert!(libs.iter().any(|l| l == "analytics-python"));
    assert!(libs.iter().any(|l| l == "@segment/analytics-node"));
}
