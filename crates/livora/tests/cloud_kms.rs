//! The master key in Google Cloud KMS and Azure Key Vault (features `gcp-kms`, `azure-kms`).
//!
//! Neither vendor ships a local emulator, so each test starts, on 127.0.0.1, a server that
//! speaks the documented REST protocol and checks what it is sent: paths, API versions,
//! bearer tokens it issued itself, the OAuth grants (a service account's RS256 assertion is
//! verified with its public key), the field encodings and CRC32C checksums. It encrypts
//! for real (AES-256-GCM under a key only it holds), so a wrong associated data, key or
//! version fails as it would in the cloud.
//! Run with `cargo test -p livora --features gcp-kms,azure-kms --test cloud_kms`.
#![cfg(all(feature = "gcp-kms", feature = "azure-kms"))]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use livora_store::crypto::{CryptoError, Kms};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Serves `app(url)` on a free loopback port, on its own thread and runtime (so a test that
/// blocks waiting for a child process does not starve it), and returns the URL.
fn serve(app: impl FnOnce(&str) -> Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = app(&url);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, router).await.expect("serve");
        });
    });
    url
}

/// AES-256-GCM with a random nonce in front, under a fresh random key.
struct Sealer(Aes256Gcm);

impl Sealer {
    fn new() -> Self {
        let key: [u8; 32] = rand::random();
        Self(Aes256Gcm::new_from_slice(&key).expect("key"))
    }

    fn seal(&self, msg: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let mut out = nonce.to_vec();
        out.extend(
            self.0
                .encrypt(Nonce::from_slice(&nonce), Payload { msg, aad })
                .expect("seal"),
        );
        out
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let (nonce, msg) = sealed.split_at_checked(12)?;
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg, aad })
            .ok()
    }
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    B64URL.encode(bytes)
}

/// The bearer token of `headers`, if the server issued it.
fn bearer_ok(headers: &HeaderMap, issued: &Mutex<HashSet<String>>) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| issued.lock().expect("lock").contains(t))
}

fn form(body: &str) -> std::collections::HashMap<String, String> {
    serde_urlencoded::from_str(body).expect("a form body")
}

fn unwrap_err(r: Result<Vec<u8>, CryptoError>) -> String {
    r.expect_err("an error").to_string()
}

mod gcp {
    use super::*;

    pub const KEY: &str = "projects/livora-test/locations/global/keyRings/livora/cryptoKeys/master";
    pub const EMAIL: &str = "livora@livora-test.iam.gserviceaccount.com";
    pub const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";

    /// Cloud KMS, Google's OAuth token endpoint and the metadata server, in one.
    pub struct Fake {
        url: String,
        public_key: jsonwebtoken::DecodingKey,
        key: Sealer,
        pub issued: Mutex<HashSet<String>>,
        pub grants: Mutex<Vec<String>>,
    }

    type S = State<Arc<Fake>>;

    fn error(status: StatusCode, message: &str) -> Response {
        let name = match status {
            StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            _ => "INVALID_ARGUMENT",
        };
        let body = json!({"error": {"code": status.as_u16(), "message": message, "status": name}});
        (status, axum::Json(body)).into_response()
    }

    fn issue(fake: &Fake, grant: &str) -> Response {
        let token = random_token();
        fake.issued.lock().expect("lock").insert(token.clone());
        fake.grants.lock().expect("lock").push(grant.to_owned());
        axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
            .into_response()
    }

    async fn token(State(fake): S, body: String) -> Response {
        let f = form(&body);
        match f.get("grant_type").map(String::as_str) {
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                v.set_audience(&[format!("{}/token", fake.url)]);
                v.set_issuer(&[EMAIL]);
                let Some(assertion) = f.get("assertion") else {
                    return error(StatusCode::BAD_REQUEST, "no assertion");
                };
                let Ok(jwt) = jsonwebtoken::decode::<Value>(assertion, &fake.public_key, &v) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant: bad JWT signature or claims",
                    );
                };
                let iat = jwt.claims["iat"].as_i64().unwrap_or(0);
                let exp = jwt.claims["exp"].as_i64().unwrap_or(0);
                if jwt.claims["scope"] != SCOPE
                    || jwt.header.kid.as_deref() != Some("test-key-1")
                    || exp - iat > 3600
                {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope or bad kid or lifetime",
                    );
                }
                issue(&fake, "jwt-bearer")
            }
            Some("refresh_token") => {
                if f.get("client_id").map(String::as_str) != Some("cid")
                    || f.get("client_secret").map(String::as_str) != Some("csecret")
                    || f.get("refresh_token").map(String::as_str) != Some("rtoken")
                {
                    return error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                issue(&fake, "refresh_token")
            }
            _ => error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        }
    }

    async fn metadata(
        State(fake): S,
        headers: HeaderMap,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> Response {
        if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google")
            || q.get("scopes").map(String::as_str) != Some(SCOPE)
        {
            return error(StatusCode::FORBIDDEN, "missing Metadata-Flavor or scopes");
        }
        issue(&fake, "metadata")
    }

    fn crc(bytes: &[u8]) -> String {
        crc32c::crc32c(bytes).to_string()
    }

    /// A base64 field and whether its checksum (if sent) matches.
    fn field(body: &Value, name: &str) -> Option<(Vec<u8>, bool)> {
        let bytes = B64.decode(body[name].as_str().unwrap_or_default()).ok()?;
        let sum = &body[format!("{name}Crc32c")];
        let ok = sum.as_str() == Some(crc(&bytes).as_str());
        Some((bytes, ok))
    }

    async fn crypto(
        State(fake): S,
        axum::extract::Path(rest): axum::extract::Path<String>,
        headers: HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> Response {
        if !bearer_ok(&headers, &fake.issued) {
            return error(
                StatusCode::UNAUTHORIZED,
                "Request had invalid authentication credentials.",
            );
        }
        let Some((key, verb)) = rest.rsplit_once(':') else {
            return error(StatusCode::NOT_FOUND, "no such method");
        };
        if key != KEY {
            return error(
                StatusCode::NOT_FOUND,
                &format!("CryptoKey {key} not found."),
            );
        }
        let aad = field(&body, "additionalAuthenticatedData").unwrap_or_default();
        match verb {
            "encrypt" => {
                let Some((plaintext, verified)) = field(&body, "plaintext") else {
                    return error(StatusCode::BAD_REQUEST, "plaintext is not base64");
                };
                let ciphertext = fake.key.seal(&plaintext, &aad.0);
                axum::Json(json!({
                    "name": format!("{KEY}/cryptoKeyVersions/1"),
                    "ciphertext": B64.encode(&ciphertext),
                    "ciphertextCrc32c": crc(&ciphertext),
                    "verifiedPlaintextCrc32c": verified,
                    "verifiedAdditionalAuthenticatedDataCrc32c": aad.1,
                    "protectionLevel": "SOFTWARE",
                }))
                .into_response()
            }
            "decrypt" => {
                let Some((ciphertext, verified)) = field(&body, "ciphertext") else {
                    return error(StatusCode::BAD_REQUEST, "ciphertext is not base64");
                };
                if !verified || !aad.1 {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.",
                    );
                }
                match fake.key.open(&ciphertext, &aad.0) {
                    Some(plaintext) => axum::Json(json!({
                        "plaintext": B64.encode(&plaintext),
                        "plaintextCrc32c": crc(&plaintext),
                        "usedPrimary": true,
                        "protectionLevel": "SOFTWARE",
                    }))
                    .into_response(),
                    None => error(
                        StatusCode::BAD_REQUEST,
                        "Decryption failed: the ciphertext is invalid.",
                    ),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such method"),
        }
    }

    pub fn start() -> (String, Arc<Fake>) {
        let public = std::fs::read(fixture("gcp-test-service-account.pub.pem")).expect("pub");
        let mut out = None;
        let url = serve(|url| {
            let fake = Arc::new(Fake {
                url: url.to_owned(),
                public_key: jsonwebtoken::DecodingKey::from_rsa_pem(&public).expect("pem"),
                key: Sealer::new(),
                issued: Mutex::default(),
                grants: Mutex::default(),
            });
            out = Some(fake.clone());
            Router::new()
                .route("/token", post(token))
                .route(
                    "/computeMetadata/v1/instance/service-accounts/default/token",
                    get(metadata),
                )
                .route("/v1/{*rest}", post(crypto))
                .with_state(fake)
        });
        (url, out.expect("fake"))
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_can_live_in_gcp_kms() {
    use livora_store::kms_gcp::{GcpCredentials, GcpKms};
    let (url, fake) = gcp::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = std::fs::read_to_string(fixture("gcp-test-service-account.key.pem")).expect("pem");
    let service_account = dir.path().join("sa.json");
    std::fs::write(
        &service_account,
        json!({
            "type": "service_account", "project_id": "livora-test",
            "private_key_id": "test-key-1", "private_key": pem,
            "client_email": gcp::EMAIL, "token_uri": format!("{url}/token"),
        })
        .to_string(),
    )
    .expect("write");
    let user = dir.path().join("user.json");
    std::fs::write(
        &user,
        json!({
            "type": "authorized_user", "client_id": "cid", "client_secret": "csecret",
            "refresh_token": "rtoken", "token_uri": format!("{url}/token"),
        })
        .to_string(),
    )
    .expect("write");
    let host = url.trim_start_matches("http://").to_owned();
    let all = [
        GcpCredentials::from_file(&service_account).expect("service account"),
        GcpCredentials::from_file(&user).expect("authorized user"),
        GcpCredentials::Metadata { host },
    ];
    for credentials in all {
        let kms = GcpKms::new(gcp::KEY, Some(&url), credentials).expect("client");
        assert_eq!(kms.key_id(), format!("gcp:{}", gcp::KEY));
        let wrapped = kms.wrap(b"tenant key bytes", b"aad-1").await.expect("wrap");
        assert!(wrapped.starts_with(b"gcp:"));
        assert_eq!(
            kms.unwrap(&wrapped, b"aad-1").await.expect("unwrap"),
            b"tenant key bytes"
        );
        let err = unwrap_err(kms.unwrap(&wrapped, b"aad-2").await);
        assert!(
            err.contains("Decryption failed"),
            "the associated data is bound: {err}"
        );
        let mut tampered = wrapped.clone();
        *tampered.last_mut().expect("byte") ^= 1;
        assert!(kms.unwrap(&tampered, b"aad-1").await.is_err());
    }
    // One token per credential, reused across its five calls.
    assert_eq!(
        *fake.grants.lock().expect("lock"),
        ["jwt-bearer", "refresh_token", "metadata"]
    );

    // Another key's name reaches KMS and fails with KMS's own message.
    let other = gcp::KEY.replace("master", "other");
    let creds = GcpCredentials::from_file(&service_account).expect("creds");
    let kms = GcpKms::new(&other, Some(&url), creds).expect("client");
    let err = unwrap_err(kms.wrap(b"k", b"a").await);
    assert!(err.contains("404") && err.contains("not found"), "{err}");
    // A key that is not for this service account: the token endpoint refuses the assertion.
    let wrong = dir.path().join("wrong.json");
    let text = std::fs::read_to_string(&service_account).expect("read");
    std::fs::write(&wrong, text.replace("test-key-1", "test-key-2")).expect("write");
    let creds = GcpCredentials::from_file(&wrong).expect("creds");
    let kms = GcpKms::new(gcp::KEY, Some(&url), creds).expect("client");
    let err = unwrap_err(kms.wrap(b"k", b"a").await);
    assert!(err.contains("GCP token") && err.contains("400"), "{err}");

    let sa = service_account.to_str().expect("utf-8");
    let env = [
        ("LIVORA__PRIVACY__KMS", "gcp"),
        ("LIVORA__PRIVACY__GCP_KMS_KEY", gcp::KEY),
        ("LIVORA__PRIVACY__GCP_KMS_ENDPOINT", url.as_str()),
        ("GOOGLE_APPLICATION_CREDENTIALS", sa),
    ];
    common::cloud_kms_round_trip(&env, &|| {}).await;
}

mod azure {
    use super::*;

    pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    pub const CLIENT: &str = "livora-app";
    pub const SECRET: &str = "app-secret";
    pub const IDENTITY_HEADER: &str = "identity-header-secret";
    pub const KEY: &str = "livora-master";

    /// Key Vault, Microsoft Entra ID's token endpoint and a managed-identity endpoint.
    pub struct Fake {
        url: String,
        /// Key versions, oldest first; the last is current.
        pub versions: Mutex<Vec<(String, Arc<Sealer>)>>,
        issued: Mutex<HashSet<String>>,
        /// (operation, version) of every wrapkey/unwrapkey call.
        pub calls: Mutex<Vec<(String, String)>>,
    }

    impl Fake {
        pub fn rotate(&self) -> String {
            let version = hex(&rand::random::<[u8; 16]>());
            let mut versions = self.versions.lock().expect("lock");
            versions.push((version.clone(), Arc::new(Sealer::new())));
            version
        }

        fn kid(&self, version: &str) -> String {
            format!("{}/keys/{KEY}/{version}", self.url)
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    type S = State<Arc<Fake>>;
    type Q = Query<std::collections::HashMap<String, String>>;

    fn error(status: StatusCode, code: &str, message: &str) -> Response {
        let body = json!({"error": {"code": code, "message": message}});
        (status, axum::Json(body)).into_response()
    }

    fn issue(fake: &Fake, expires: Value) -> Response {
        let token = random_token();
        fake.issued.lock().expect("lock").insert(token.clone());
        let mut body = json!({"access_token": token, "token_type": "Bearer"});
        body.as_object_mut()
            .expect("object")
            .extend(expires.as_object().expect("object").clone());
        axum::Json(body).into_response()
    }

    async fn entra(
        State(fake): S,
        axum::extract::Path(tenant): axum::extract::Path<String>,
        body: String,
    ) -> Response {
        let f = form(&body);
        let get = |k: &str| f.get(k).map(String::as_str);
        if tenant != TENANT
            || get("grant_type") != Some("client_credentials")
            || get("client_id") != Some(CLIENT)
            || get("client_secret") != Some(SECRET)
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided.",
            );
        }
        if get("scope") != Some("https://vault.azure.net/.default") {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "AADSTS70011: The provided scope is not valid.",
            );
        }
        issue(&fake, json!({"expires_in": 3599, "ext_expires_in": 3599}))
    }

    async fn identity(State(fake): S, headers: HeaderMap, Query(q): Q) -> Response {
        let expires_on = chrono::Utc::now().timestamp() + 3600;
        if headers
            .get("x-identity-header")
            .and_then(|v| v.to_str().ok())
            != Some(IDENTITY_HEADER)
            || q.get("api-version").map(String::as_str) != Some("2019-08-01")
            || q.get("resource").map(String::as_str) != Some("https://vault.azure.net")
        {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "bad identity request",
            );
        }
        // Managed identity endpoints send numbers as strings.
        issue(
            &fake,
            json!({"expires_on": expires_on.to_string(), "resource": "https://vault.azure.net"}),
        )
    }

    fn checked(fake: &Fake, headers: &HeaderMap, q: &Q) -> Option<Response> {
        if q.get("api-version").map(String::as_str) != Some("7.4") {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "api-version missing or unsupported",
            ));
        }
        if !bearer_ok(headers, &fake.issued) {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            ));
        }
        None
    }

    async fn get_key(
        State(fake): S,
        axum::extract::Path(name): axum::extract::Path<String>,
        headers: HeaderMap,
        q: Q,
    ) -> Response {
        if let Some(refused) = checked(&fake, &headers, &q) {
            return refused;
        }
        if name != KEY {
            return error(
                StatusCode::NOT_FOUND,
                "KeyNotFound",
                &format!("A key with (name/id) {name} was not found in this key vault."),
            );
        }
        let version = fake
            .versions
            .lock()
            .expect("lock")
            .last()
            .expect("a version")
            .0
            .clone();
        axum::Json(json!({
            "key": {"kid": fake.kid(&version), "kty": "RSA", "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey"], "n": "u1", "e": "AQAB"},
            "attributes": {"enabled": true},
        }))
        .into_response()
    }

    async fn operation(
        State(fake): S,
        axum::extract::Path((name, version, op)): axum::extract::Path<(String, String, String)>,
        headers: HeaderMap,
        q: Q,
        axum::Json(body): axum::Json<Value>,
    ) -> Response {
        if let Some(refused) = checked(&fake, &headers, &q) {
            return refused;
        }
        let sealer = fake
            .versions
            .lock()
            .expect("lock")
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, s)| s.clone());
        let (true, Some(sealer)) = (name == KEY, sealer) else {
            return error(StatusCode::NOT_FOUND, "KeyNotFound", "no such key version");
        };
        if body["alg"] != "RSA-OAEP-256" {
            return error(StatusCode::BAD_REQUEST, "BadParameter", "alg");
        }
        let Ok(value) = B64URL.decode(body["value"].as_str().unwrap_or_default()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "value is not base64url",
            );
        };
        fake.calls
            .lock()
            .expect("lock")
            .push((op.clone(), version.clone()));
        let out = match op.as_str() {
            "wrapkey" => sealer.seal(&value, b""),
            "unwrapkey" => match sealer.open(&value, b"") {
                Some(v) => v,
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BadParameter",
                        "The parameter is incorrect.",
                    );
                }
            },
            _ => return error(StatusCode::NOT_FOUND, "NotFound", "no such operation"),
        };
        axum::Json(json!({"kid": fake.kid(&version), "value": B64URL.encode(out)})).into_response()
    }

    pub fn start() -> (String, Arc<Fake>) {
        let mut out = None;
        let url = serve(|url| {
            let fake = Arc::new(Fake {
                url: url.to_owned(),
                versions: Mutex::default(),
                issued: Mutex::default(),
                calls: Mutex::default(),
            });
            fake.rotate();
            out = Some(fake.clone());
            Router::new()
                .route("/{tenant}/oauth2/v2.0/token", post(entra))
                .route("/msi/token", get(identity))
                .route("/keys/{name}", get(get_key))
                .route("/keys/{name}/{version}/{op}", post(operation))
                .with_state(fake)
        });
        (url, out.expect("fake"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_can_live_in_azure_key_vault() {
    use livora_store::kms_azure::{AzureCredentials, AzureKms};
    let (url, fake) = azure::start();
    let secret = |secret: &str| AzureCredentials::ClientSecret {
        authority: url.clone(),
        tenant_id: azure::TENANT.into(),
        client_id: azure::CLIENT.into(),
        client_secret: secret.into(),
    };
    let identity = AzureCredentials::ManagedIdentity {
        endpoint: format!("{url}/msi/token"),
        header: Some(azure::IDENTITY_HEADER.into()),
        client_id: None,
    };
    let first = fake.versions.lock().expect("lock")[0].0.clone();
    let mut wrapped_before = Vec::new();
    for credentials in [secret(azure::SECRET), identity] {
        let kms = AzureKms::new(&url, azure::KEY, credentials).expect("client");
        let wrapped = kms.wrap(b"tenant key bytes", b"aad-1").await.expect("wrap");
        assert!(wrapped.starts_with(b"azure:"));
        assert_eq!(
            kms.unwrap(&wrapped, b"aad-1").await.expect("unwrap"),
            b"tenant key bytes"
        );
        assert!(
            matches!(
                kms.unwrap(&wrapped, b"aad-2").await,
                Err(CryptoError::Decrypt)
            ),
            "the associated data is bound"
        );
        wrapped_before.push(wrapped);
    }
    // A new key version in the vault: new keys are wrapped under it, older ones still unwrap
    // under theirs.
    let second = fake.rotate();
    let kms = AzureKms::new(&url, azure::KEY, secret(azure::SECRET)).expect("client");
    let wrapped = kms.wrap(b"newer", b"aad").await.expect("wrap");
    assert_eq!(
        kms.unwrap(&wrapped, b"aad").await.expect("unwrap"),
        b"newer"
    );
    assert_eq!(
        kms.unwrap(&wrapped_before[0], b"aad-1")
            .await
            .expect("old version"),
        b"tenant key bytes"
    );
    let calls = fake.calls.lock().expect("lock").clone();
    let tail: Vec<(&str, &str)> = calls[calls.len() - 3..]
        .iter()
        .map(|(o, v)| (o.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            ("wrapkey", second.as_str()),
            ("unwrapkey", second.as_str()),
            ("unwrapkey", first.as_str())
        ]
    );
    // A wrong secret, or a key the vault does not have, fail with the service's message.
    let kms = AzureKms::new(&url, azure::KEY, secret("wrong")).expect("client");
    let err = unwrap_err(kms.wrap(b"k", b"a").await);
    assert!(
        err.contains("Azure token") && err.contains("invalid_client"),
        "{err}"
    );
    let kms = AzureKms::new(&url, "missing", secret(azure::SECRET)).expect("client");
    let err = unwrap_err(kms.wrap(b"k", b"a").await);
    assert!(err.contains("KeyNotFound"), "{err}");

    let env = [
        ("LIVORA__PRIVACY__KMS", "azure"),
        ("LIVORA__PRIVACY__AZURE_KEY_VAULT_URL", url.as_str()),
        ("LIVORA__PRIVACY__AZURE_KEY_NAME", azure::KEY),
        ("AZURE_TENANT_ID", azure::TENANT),
        ("AZURE_CLIENT_ID", azure::CLIENT),
        ("AZURE_CLIENT_SECRET", azure::SECRET),
        ("AZURE_AUTHORITY_HOST", url.as_str()),
    ];
    // The key is rotated in the vault between the two runs of the server: the restarted one
    // unwraps the tenant key under the older version; rotate-master then rewraps it under
    // the newest.
    let third = std::sync::Mutex::new(String::new());
    common::cloud_kms_round_trip(&env, &|| *third.lock().expect("lock") = fake.rotate()).await;
    let third = third.into_inner().expect("lock");
    let calls = fake.calls.lock().expect("lock").clone();
    // rotate-master rewrapped (the tenant key and the audit key) under the newest version;
    // the `audit verify` after it only unwraps.
    assert!(
        calls.iter().any(|(o, v)| o == "wrapkey" && *v == third),
        "{calls:?}"
    );
    assert!(calls.iter().any(|(o, v)| o == "unwrapkey" && *v == second));
}
