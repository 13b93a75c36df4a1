//! The AWS KMS master key (feature `aws-kms`) against a local KMS: moto's server, installed
//! from PyPI by `scripts/test-deps.sh`, started on 127.0.0.1 by this test.
#![cfg(feature = "aws-kms")]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livora_model::Currency;
use livora_store::crypto::{Keyring, Kms};
use livora_store::kms_aws::{AwsKms, aws_config, aws_sdk_kms};
use livora_store::{MetadataStore, NewTenant, SqliteStore};
use serde_json::Value;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn test_deps() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let deps = std::env::var("LIVORA_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".cache/test-deps"));
    let out = Command::new(root.join("scripts/test-deps.sh"))
        .env("LIVORA_TEST_DEPS", &deps)
        .output()
        .expect("run scripts/test-deps.sh");
    assert!(
        out.status.success(),
        "installing the test dependencies failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    deps
}

fn start_moto() -> (Moto, String) {
    let deps = test_deps();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let child = Command::new(deps.join("venv/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts (installed by scripts/test-deps.sh)");
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (moto, format!("http://127.0.0.1:{port}"))
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "livora-test",
        ))
        .load()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_keys_are_wrapped_by_aws_kms() {
    let (_moto, endpoint) = start_moto();
    let config = sdk_config(&endpoint).await;
    let key = aws_sdk_kms::Client::new(&config)
        .create_key()
        .send()
        .await
        .expect("create a KMS key")
        .key_metadata
        .expect("metadata")
        .key_id;
    let kms = AwsKms::from_config(&config, &key);
    assert_eq!(kms.key_id(), format!("aws:{key}"));
    let wrapped = kms.wrap(b"tenant key bytes", b"aad-1").await.expect("wrap");
    assert!(wrapped.starts_with(b"aws:"));
    assert_eq!(
        kms.unwrap(&wrapped, b"aad-1").await.expect("unwrap"),
        b"tenant key bytes"
    );
    assert!(
        kms.unwrap(&wrapped, b"aad-2").await.is_err(),
        "the encryption context binds the associated data"
    );

    // A keyring over AWS KMS: a subject's field encrypted by one process is read by another.
    let store: Arc<dyn MetadataStore> = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let tenant = store
        .create_tenant(NewTenant {
            name: "t".into(),
            time_zone: "UTC".into(),
            currency: Currency::parse("USD").expect("usd"),
        })
        .await
        .expect("tenant")
        .id;
    let ring = Arc::new(Keyring::new(store.clone(), Arc::new(kms)));
    let keys = ring
        .subject_keys(tenant, &["u:ann".to_owned()])
        .await
        .expect("keys");
    let text = format!(
        r#"{{"traits":{{"email":{}}}}}"#,
        keys["u:ann"].encrypt(&Value::from("ann@example.com"))
    );
    let other = Keyring::new(store, Arc::new(AwsKms::from_config(&config, &key)));
    assert_eq!(
        other.decrypt_text(tenant, &text).await.expect("decrypt").0,
        r#"{"traits":{"email":"ann@example.com"}}"#
    );
}
