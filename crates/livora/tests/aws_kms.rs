//! The master key in AWS KMS (feature `aws-kms`), against a local KMS: moto's server,
//! installed from PyPI by `scripts/test-deps.sh` and started on 127.0.0.1 by this test.
//! Run with `cargo test -p livora --features aws-kms --test aws_kms`.
#![cfg(feature = "aws-kms")]

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::test_deps;
use livora_store::crypto::Kms;
use livora_store::kms_aws::{AwsKms, aws_config, aws_sdk_kms};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> (Moto, String) {
    let deps = test_deps();
    let port = common::free_port();
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

/// What the AWS SDK reads from the environment, for a local KMS.
const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_can_live_in_aws_kms() {
    let (_moto, endpoint) = start_moto();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "livora-test",
        ))
        .load()
        .await;
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

    let mut env: Vec<(&str, &str)> = AWS_ENV.to_vec();
    env.extend([
        ("LIVORA__PRIVACY__KMS", "aws"),
        ("LIVORA__PRIVACY__AWS_KMS_KEY_ID", key.as_str()),
        ("LIVORA__PRIVACY__AWS_KMS_ENDPOINT", endpoint.as_str()),
    ]);
    common::cloud_kms_round_trip(&env, &|| {}).await;
}
