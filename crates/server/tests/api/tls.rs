//! TLS termination: HTTPS with a certificate from PEM files, handshakes that do not block
//! each other, and plain HTTP refused on the TLS port.

use std::sync::Arc;
use std::time::Duration;

use livora_server::{AuthOptions, IngestOptions, LimitOptions};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_app_inner;

async fn https(
    addr: &str,
    roots: Arc<rustls::RootCertStore>,
    request: String,
) -> std::io::Result<String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(request.as_bytes()).await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn https_is_served_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write");
    let config = livora_server::tls::load(&cert_path, &key_path).expect("tls config");
    assert!(
        livora_server::tls::load(&key_path, &cert_path).is_err(),
        "swapped files refused"
    );
    let app = spawn_app_inner(
        dir.path(),
        IngestOptions::default(),
        &LimitOptions::default(),
        AuthOptions::default(),
        Some(config),
    )
    .await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .expect("root");
    let roots = Arc::new(roots);
    // A client that connects and says nothing does not hold up the next one.
    let _silent = TcpStream::connect(&addr).await.expect("connect");
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        https(
            &addr,
            roots.clone(),
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into(),
        ),
    )
    .await
    .expect("not blocked by the silent client")
    .expect("https");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Handlers that need the client address work over TLS.
    let body = r#"{"event":"Secure","userId":"u"}"#;
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", app.write_key))
    };
    let request = format!(
        "POST /v1/track HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = https(&addr, roots, request).await.expect("https");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = app.http.get(format!("{}/healthz", app.url)).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));
    app.stop().await;
}
