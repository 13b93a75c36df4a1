//! The email channel against a real SMTP server (PyPI `aiosmtpd`, installed by
//! `scripts/test-deps.sh`, started here on 127.0.0.1 and stopped at the end), which keeps
//! every message it receives in a maildir that the test reads back.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use livora_automation::outbox::{Channel, Outgoing, SendError};
use livora_channels::smtp::{Smtp, SmtpSettings};
use livora_model::TenantId;
use serde_json::json;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Installs (idempotently) the test dependencies; returns the Python that has aiosmtpd.
fn python() -> PathBuf {
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
        "installing the test dependencies failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    deps.join("venv/bin/python")
}

struct SmtpServer {
    child: Child,
    port: u16,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_smtp(maildir: &Path) -> SmtpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new(python())
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start aiosmtpd");
    let mut server = SmtpServer { child, port };
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("aiosmtpd exited ({status}) before listening on 127.0.0.1:{port}");
        }
        assert!(
            Instant::now() < until,
            "aiosmtpd did not listen on 127.0.0.1:{port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.port = port;
    server
}

fn messages(maildir: &Path) -> Vec<String> {
    std::fs::read_dir(maildir.join("new"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("mail");
    let server = start_smtp(&maildir);
    let smtp = Smtp::new(
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: server.port,
            security: "none".into(),
            username: None,
            password: None,
            from: "Shop <hello@shop.test>".into(),
        },
        std::sync::Arc::new(
            livora_channels::egress::Egress::allowing(["127.0.0.1"]).expect("list"),
        ),
    )
    .expect("settings");
    let m = Outgoing {
        key: "j-cart-00ab/remind".into(),
        tenant: TenantId(uuid::Uuid::nil()),
        person: "u:ada".into(),
        to: "ada@example.test".into(),
        content:
            json!({"subject": "Your Lamp is waiting", "body": "Hi Ada, your cart is still there.",
            "html": "<p>Hi Ada, your cart is <b>still there</b>.</p>"})
            .as_object()
            .cloned()
            .expect("object"),
    };
    let id = smtp.send(&m).await.expect("sent");
    assert_eq!(id.as_deref(), Some("<j-cart-00ab.remind@livora>"));
    let until = Instant::now() + Duration::from_secs(10);
    let mut got = messages(&maildir);
    while got.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = messages(&maildir);
    }
    assert_eq!(got.len(), 1, "one message in the maildir");
    let mail = &got[0];
    for needle in [
        "From: Shop <hello@shop.test>",
        "To: ada@example.test",
        "Subject: Your Lamp is waiting",
        "Message-ID: <j-cart-00ab.remind@livora>",
        "X-Livora-Key: j-cart-00ab/remind",
        "multipart/alternative",
        "Hi Ada, your cart is still there.",
        "<b>still there</b>",
    ] {
        assert!(mail.contains(needle), "{needle:?} in\n{mail}");
    }
    // A bad address is not worth retrying.
    let bad = Outgoing {
        to: "not an address".into(),
        ..m.clone()
    };
    assert!(matches!(
        smtp.send(&bad).await,
        Err(SendError::Permanent(_))
    ));
    drop(server);
    // Nobody listening any more: worth retrying.
    assert!(matches!(smtp.send(&m).await, Err(SendError::Transient(_))));
}

#[tokio::test]
async fn smtp_hosts_that_are_internal_are_refused_unless_allowed() {
    let settings = |host: &str| SmtpSettings {
        host: host.into(),
        port: 2525,
        security: "none".into(),
        username: None,
        password: None,
        from: "Shop <hello@shop.test>".into(),
    };
    let open = std::sync::Arc::new(livora_channels::egress::Egress::default());
    for host in ["127.0.0.1", "169.254.169.254", "10.0.0.1", "[::1]"] {
        assert!(Smtp::new(settings(host), open.clone()).is_err(), "{host}");
    }
    // A name is checked where it resolves, at each send, before connecting.
    let smtp = Smtp::new(settings("localhost"), open).expect("settings");
    let m = Outgoing {
        key: "k".into(),
        tenant: TenantId(uuid::Uuid::nil()),
        person: "u:ada".into(),
        to: "ada@example.test".into(),
        content: json!({"subject": "s", "body": "b"})
            .as_object()
            .cloned()
            .expect("object"),
    };
    match smtp.send(&m).await {
        Err(SendError::Permanent(why)) => assert!(why.contains("refused"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
