//! What the intel crate's tests share: the Python of `scripts/test-deps.sh`.

/// The Python of `scripts/test-deps.sh` (installed idempotently first); `what` names the
/// packages the calling test needs, for the failure message.
pub fn python(what: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let deps = std::env::var("LIVORA_TEST_DEPS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".cache/test-deps"));
    let out = std::process::Command::new(root.join("scripts/test-deps.sh"))
        .env("LIVORA_TEST_DEPS", &deps)
        .output()
        .expect("run scripts/test-deps.sh");
    assert!(
        out.status.success(),
        "installing the test dependencies ({what}) failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    deps.join("venv/bin/python")
}
