//! The master key in Google Cloud KMS (Cargo feature `gcp-kms`): tenant keys are wrapped with
//! [`cryptoKeys.encrypt`] and unwrapped with [`cryptoKeys.decrypt`], the associated data going
//! as `additionalAuthenticatedData` (KMS binds it to the ciphertext). Requests and answers
//! carry CRC32C checksums, verified both ways as Google recommends. KMS picks the key's
//! primary version to encrypt and reads the version from the ciphertext to decrypt, so key
//! rotation inside KMS needs nothing here.
//!
//! Credentials, as Google's client libraries find them: a service-account key file (a JWT
//! signed with its key, exchanged at its `token_uri`), an `authorized_user` file (what
//! `gcloud auth application-default login` writes), or the metadata server of the VM or
//! container (`GCE_METADATA_HOST` overrides its address).
//!
//! [`cryptoKeys.encrypt`]: https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt
//! [`cryptoKeys.decrypt`]: https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/decrypt

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::crypto::{CryptoError, Kms};
use crate::kms_http::{self, TokenAnswer, TokenCache, failed};

/// Tags a wrapped key as GCP KMS's.
const TAG: &[u8] = b"gcp:";
/// The OAuth scope of Cloud KMS.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
/// The public Cloud KMS endpoint.
pub const ENDPOINT: &str = "https://cloudkms.googleapis.com";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where access tokens come from.
pub enum GcpCredentials {
    /// A service-account key: a self-signed JWT exchanged for a token at `token_uri`.
    ServiceAccount {
        email: String,
        key: Box<jsonwebtoken::EncodingKey>,
        key_id: Option<String>,
        token_uri: String,
    },
    /// A user's refresh token (`gcloud auth application-default login`).
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    /// The metadata server, at `http://<host>`.
    Metadata { host: String },
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    token_uri: Option<String>,
}

const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

impl GcpCredentials {
    /// Credentials from a key file (`service_account` or `authorized_user`).
    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| failed(format!("{}: not a credentials file: {e}", path.display())))?;
        let need = |v: Option<String>, field: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| failed(format!("{}: no {field}", path.display())))
        };
        let token_uri =
            kms_http::endpoint(file.token_uri.as_deref().unwrap_or(TOKEN_URI), "token_uri")?;
        match file.kind.as_str() {
            "service_account" => {
                let pem = need(file.private_key, "private_key")?;
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| failed(format!("{}: private_key: {e}", path.display())))?;
                Ok(Self::ServiceAccount {
                    email: need(file.client_email, "client_email")?,
                    key: Box::new(key),
                    key_id: file.private_key_id,
                    token_uri,
                })
            }
            "authorized_user" => Ok(Self::AuthorizedUser {
                client_id: need(file.client_id, "client_id")?,
                client_secret: need(file.client_secret, "client_secret")?,
                refresh_token: need(file.refresh_token, "refresh_token")?,
                token_uri,
            }),
            other => Err(failed(format!(
                "{}: credentials of type {other:?} are not supported (use service_account or authorized_user)",
                path.display()
            ))),
        }
    }

    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's
    /// well-known file, then the metadata server.
    pub fn from_env() -> Result<Self, CryptoError> {
        if let Ok(path) = std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
            return Self::from_file(Path::new(&path));
        }
        if let Ok(home) = std::env::var("HOME") {
            let path =
                PathBuf::from(home).join(".config/gcloud/application_default_credentials.json");
            if path.exists() {
                return Self::from_file(&path);
            }
        }
        let host = std::env::var("GCE_METADATA_HOST")
            .unwrap_or_else(|_| "metadata.google.internal".to_owned());
        Ok(Self::Metadata { host })
    }

    async fn token(&self, http: &reqwest::Client) -> Result<TokenAnswer, CryptoError> {
        match self {
            Self::ServiceAccount {
                email,
                key,
                key_id,
                token_uri,
            } => {
                let now = chrono::Utc::now().timestamp();
                let claims = json!({
                    "iss": email, "scope": SCOPE, "aud": token_uri,
                    "iat": now, "exp": now + 3600,
                });
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                header.kid = key_id.clone();
                let assertion = jsonwebtoken::encode(&header, &claims, key).map_err(failed)?;
                let form = [
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ];
                kms_http::call(http.post(token_uri).form(&form), "GCP token").await
            }
            Self::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.as_str()),
                    ("refresh_token", refresh_token.as_str()),
                ];
                kms_http::call(http.post(token_uri).form(&form), "GCP token").await
            }
            Self::Metadata { host } => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                );
                let req = http
                    .get(url)
                    .query(&[("scopes", SCOPE)])
                    .header("Metadata-Flavor", "Google");
                kms_http::call(req, "GCP metadata token").await
            }
        }
    }
}

/// A Cloud KMS symmetric key (`projects/…/locations/…/keyRings/…/cryptoKeys/…`) that wraps
/// tenant keys.
pub struct GcpKms {
    http: reqwest::Client,
    endpoint: String,
    key: String,
    credentials: GcpCredentials,
    tokens: TokenCache,
}

/// Whether `name` is a full crypto key resource name.
fn valid_key_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 8
        && ["projects", "locations", "keyRings", "cryptoKeys"]
            .iter()
            .enumerate()
            .all(|(i, label)| parts[2 * i] == *label)
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptAnswer {
    ciphertext: String,
    #[serde(default)]
    ciphertext_crc32c: Option<String>,
    #[serde(default)]
    verified_plaintext_crc32c: bool,
    #[serde(default)]
    verified_additional_authenticated_data_crc32c: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptAnswer {
    plaintext: String,
    #[serde(default)]
    plaintext_crc32c: Option<String>,
}

/// A CRC32C as KMS writes it: an int64 in a JSON string.
fn crc(bytes: &[u8]) -> String {
    crc32c::crc32c(bytes).to_string()
}

impl GcpKms {
    /// A client for the crypto key `key`; `endpoint` overrides [`ENDPOINT`].
    pub fn new(
        key: &str,
        endpoint: Option<&str>,
        credentials: GcpCredentials,
    ) -> Result<Self, CryptoError> {
        if !valid_key_name(key) {
            return Err(failed(format!(
                "{key:?} is not a crypto key name (projects/P/locations/L/keyRings/R/cryptoKeys/K)"
            )));
        }
        Ok(Self {
            http: kms_http::client()?,
            endpoint: kms_http::endpoint(endpoint.unwrap_or(ENDPOINT), "GCP KMS endpoint")?,
            key: key.to_owned(),
            credentials,
            tokens: TokenCache::default(),
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        verb: &str,
        body: serde_json::Value,
    ) -> Result<T, CryptoError> {
        let token = self.tokens.get(self.credentials.token(&self.http)).await?;
        let url = format!("{}/v1/{}:{verb}", self.endpoint, self.key);
        let req = self.http.post(url).bearer_auth(token).json(&body);
        kms_http::call(req, &format!("GCP KMS {verb}")).await
    }
}

#[async_trait::async_trait]
impl Kms for GcpKms {
    fn key_id(&self) -> String {
        format!("gcp:{}", self.key)
    }

    async fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let out: EncryptAnswer = self
            .post(
                "encrypt",
                json!({
                    "plaintext": B64.encode(plaintext),
                    "plaintextCrc32c": crc(plaintext),
                    "additionalAuthenticatedData": B64.encode(aad),
                    "additionalAuthenticatedDataCrc32c": crc(aad),
                }),
            )
            .await?;
        if !out.verified_plaintext_crc32c || !out.verified_additional_authenticated_data_crc32c {
            return Err(failed(
                "GCP KMS encrypt: the request was corrupted in transit",
            ));
        }
        let ciphertext = B64
            .decode(&out.ciphertext)
            .map_err(|_| failed("GCP KMS encrypt: ciphertext is not base64"))?;
        if out.ciphertext_crc32c.as_deref() != Some(crc(&ciphertext).as_str()) {
            return Err(failed(
                "GCP KMS encrypt: the answer was corrupted in transit",
            ));
        }
        let mut wrapped = TAG.to_vec();
        wrapped.extend_from_slice(&ciphertext);
        Ok(wrapped)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let ciphertext = wrapped.strip_prefix(TAG).ok_or(CryptoError::Malformed)?;
        let out: DecryptAnswer = self
            .post(
                "decrypt",
                json!({
                    "ciphertext": B64.encode(ciphertext),
                    "ciphertextCrc32c": crc(ciphertext),
                    "additionalAuthenticatedData": B64.encode(aad),
                    "additionalAuthenticatedDataCrc32c": crc(aad),
                }),
            )
            .await?;
        let plaintext = B64
            .decode(&out.plaintext)
            .map_err(|_| failed("GCP KMS decrypt: plaintext is not base64"))?;
        if out.plaintext_crc32c.as_deref() != Some(crc(&plaintext).as_str()) {
            return Err(failed(
                "GCP KMS decrypt: the answer was corrupted in transit",
            ));
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_checked() {
        assert!(valid_key_name(
            "projects/p-1/locations/europe-west1/keyRings/r_1/cryptoKeys/k.1"
        ));
        for bad in [
            "projects/p/locations/l/keyRings/r",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "projects/p/locations/l/keyRings/r/cryptoKeys/",
            "project/p/locations/l/keyRings/r/cryptoKeys/k",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k:encrypt",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k?x=1",
        ] {
            assert!(!valid_key_name(bad), "{bad}");
        }
    }

    #[test]
    fn credentials_files_are_read_or_refused_clearly() {
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#,
        )
        .expect("test");
        assert!(matches!(
            GcpCredentials::from_file(&path),
            Ok(GcpCredentials::AuthorizedUser { token_uri, .. }) if token_uri == TOKEN_URI
        ));
        for (text, needle) in [
            (r#"{"type":"external_account"}"#, "not supported"),
            (r#"{"type":"service_account"}"#, "no private_key"),
            (
                r#"{"type":"service_account","private_key":"x","client_email":"e"}"#,
                "private_key",
            ),
            (
                r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r","token_uri":"http://evil.example/t"}"#,
                "must be https",
            ),
            ("[]", "not a credentials file"),
        ] {
            std::fs::write(&path, text).expect("test");
            let err = GcpCredentials::from_file(&path)
                .err()
                .expect(text)
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
