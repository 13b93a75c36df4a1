//! The master key in Azure Key Vault or Managed HSM (Cargo feature `azure-kms`): tenant keys
//! are wrapped with the key's [`wrapkey`] operation (RSA-OAEP-256) and unwrapped with
//! [`unwrapkey`].
//!
//! RSA-OAEP has no associated data, so it is bound another way: what is wrapped is
//! `SHA-256(aad) ‖ key`, and unwrapping checks the digest. OAEP ciphertexts cannot be
//! edited into another valid one, so a wrapped key moved to another tenant does not unwrap.
//! A wrapped key names the key version that wrapped it (Key Vault needs it to unwrap), so
//! rotating the key in the vault leaves older wrapped keys readable; `livora admin
//! encryption rotate-master` then rewraps them under the newest version.
//!
//! Credentials, as Azure's client libraries find them: a service principal
//! (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`; `AZURE_AUTHORITY_HOST` for
//! sovereign clouds), or a managed identity (App Service / Container Apps through
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, otherwise the VM's instance metadata service).
//!
//! [`wrapkey`]: https://learn.microsoft.com/rest/api/keyvault/keys/wrap-key/wrap-key
//! [`unwrapkey`]: https://learn.microsoft.com/rest/api/keyvault/keys/unwrap-key/unwrap-key

use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::crypto::{CryptoError, Kms};
use crate::kms_http::{self, TokenAnswer, TokenCache, failed};

/// Tags a wrapped key as Azure Key Vault's.
const TAG: &[u8] = b"azure:";
/// The Key Vault REST API version used.
pub const API_VERSION: &str = "7.4";
/// The wrapping algorithm.
pub const ALGORITHM: &str = "RSA-OAEP-256";
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const AUTHORITY: &str = "https://login.microsoftonline.com";
const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Where access tokens come from.
pub enum AzureCredentials {
    /// A service principal's client secret (OAuth 2.0 client credentials grant).
    ClientSecret {
        authority: String,
        tenant_id: String,
        client_id: String,
        client_secret: String,
    },
    /// A managed identity: App Service / Container Apps (`header` set) or the VM's instance
    /// metadata service; `client_id` picks a user-assigned identity.
    ManagedIdentity {
        endpoint: String,
        header: Option<String>,
        client_id: Option<String>,
    },
}

impl AzureCredentials {
    /// The credentials the environment names: a service principal when `AZURE_CLIENT_SECRET`
    /// is set, otherwise a managed identity.
    pub fn from_env() -> Result<Self, CryptoError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(client_secret) = var("AZURE_CLIENT_SECRET") {
            let need = |name: &str| {
                var(name)
                    .ok_or_else(|| failed(format!("AZURE_CLIENT_SECRET is set but {name} is not")))
            };
            let authority = var("AZURE_AUTHORITY_HOST").unwrap_or_else(|| AUTHORITY.to_owned());
            return Ok(Self::ClientSecret {
                authority: kms_http::endpoint(&authority, "AZURE_AUTHORITY_HOST")?,
                tenant_id: need("AZURE_TENANT_ID")?,
                client_id: need("AZURE_CLIENT_ID")?,
                client_secret,
            });
        }
        let client_id = var("AZURE_CLIENT_ID");
        Ok(match (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
            (Some(endpoint), Some(header)) => Self::ManagedIdentity {
                endpoint,
                header: Some(header),
                client_id,
            },
            _ => Self::ManagedIdentity {
                endpoint: IMDS.to_owned(),
                header: None,
                client_id,
            },
        })
    }

    async fn token(
        &self,
        http: &reqwest::Client,
        resource: &str,
    ) -> Result<TokenAnswer, CryptoError> {
        match self {
            Self::ClientSecret {
                authority,
                tenant_id,
                client_id,
                client_secret,
            } => {
                let url = format!("{authority}/{tenant_id}/oauth2/v2.0/token");
                let scope = format!("{resource}/.default");
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.as_str()),
                    ("scope", scope.as_str()),
                ];
                kms_http::call(http.post(url).form(&form), "Azure token").await
            }
            Self::ManagedIdentity {
                endpoint,
                header,
                client_id,
            } => {
                let mut req = match header {
                    Some(h) => http
                        .get(endpoint)
                        .query(&[("api-version", "2019-08-01")])
                        .header("X-IDENTITY-HEADER", h),
                    None => http
                        .get(endpoint)
                        .query(&[("api-version", "2018-02-01")])
                        .header("Metadata", "true"),
                };
                req = req.query(&[("resource", resource)]);
                if let Some(id) = client_id {
                    req = req.query(&[("client_id", id)]);
                }
                kms_http::call(req, "Azure managed identity token").await
            }
        }
    }
}

/// A key in a vault that wraps tenant keys.
pub struct AzureKms {
    http: reqwest::Client,
    vault: String,
    name: String,
    resource: String,
    credentials: AzureCredentials,
    tokens: TokenCache,
}

#[derive(Deserialize)]
struct KeyAnswer {
    key: JsonWebKey,
}

#[derive(Deserialize)]
struct JsonWebKey {
    kid: String,
    #[serde(default)]
    key_ops: Vec<String>,
}

#[derive(Deserialize)]
struct OperationAnswer {
    kid: String,
    value: String,
}

/// The version at the end of a key id (`https://<vault>/keys/<name>/<version>`), checked to
/// belong to `name`.
fn version_of<'a>(kid: &'a str, name: &str) -> Result<&'a str, CryptoError> {
    let mut parts = kid.trim_end_matches('/').rsplit('/');
    let version = parts.next().unwrap_or_default();
    let key_name = parts.next().unwrap_or_default();
    let keys = parts.next().unwrap_or_default();
    if keys != "keys" || key_name != name || !valid_segment(version) {
        return Err(failed(format!(
            "Key Vault answered with key id {kid:?}, not a version of {name:?}"
        )));
    }
    Ok(version)
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 127 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn digest(aad: &[u8]) -> [u8; 32] {
    Sha256::digest(aad).into()
}

impl AzureKms {
    /// A client for the key `name` in the vault at `vault_url`
    /// (`https://<vault>.vault.azure.net` or `https://<hsm>.managedhsm.azure.net`).
    pub fn new(
        vault_url: &str,
        name: &str,
        credentials: AzureCredentials,
    ) -> Result<Self, CryptoError> {
        let vault = kms_http::endpoint(vault_url, "Key Vault URL")?;
        if !valid_segment(name) {
            return Err(failed(format!(
                "{name:?} is not a Key Vault key name (letters, digits and dashes)"
            )));
        }
        let resource = if vault.contains(".managedhsm.") {
            "https://managedhsm.azure.net"
        } else {
            "https://vault.azure.net"
        };
        Ok(Self {
            http: kms_http::client()?,
            vault,
            name: name.to_owned(),
            resource: resource.to_owned(),
            credentials,
            tokens: TokenCache::default(),
        })
    }

    async fn token(&self) -> Result<String, CryptoError> {
        self.tokens
            .get(self.credentials.token(&self.http, &self.resource))
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/keys/{}{path}", self.vault, self.name)
    }

    /// The key's current version, which wraps new keys.
    async fn current_version(&self) -> Result<String, CryptoError> {
        let req = self
            .http
            .get(self.url(""))
            .query(&[("api-version", API_VERSION)])
            .bearer_auth(self.token().await?);
        let answer: KeyAnswer = kms_http::call(req, "Key Vault get key").await?;
        if !answer.key.key_ops.is_empty() && !answer.key.key_ops.iter().any(|o| o == "wrapKey") {
            return Err(failed(format!(
                "the Key Vault key {} does not allow wrapKey",
                self.name
            )));
        }
        Ok(version_of(&answer.key.kid, &self.name)?.to_owned())
    }

    async fn operate(
        &self,
        version: &str,
        operation: &str,
        value: &[u8],
    ) -> Result<OperationAnswer, CryptoError> {
        let req = self
            .http
            .post(self.url(&format!("/{version}/{operation}")))
            .query(&[("api-version", API_VERSION)])
            .bearer_auth(self.token().await?)
            .json(&json!({"alg": ALGORITHM, "value": B64URL.encode(value)}));
        let answer: OperationAnswer =
            kms_http::call(req, &format!("Key Vault {operation}")).await?;
        if version_of(&answer.kid, &self.name)? != version {
            return Err(failed(format!(
                "Key Vault {operation} answered for key {}, not version {version}",
                answer.kid
            )));
        }
        Ok(answer)
    }
}

#[async_trait::async_trait]
impl Kms for AzureKms {
    fn key_id(&self) -> String {
        format!("azure:{}/keys/{}", self.vault, self.name)
    }

    async fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let version = self.current_version().await?;
        let mut bound = digest(aad).to_vec();
        bound.extend_from_slice(plaintext);
        let answer = self.operate(&version, "wrapkey", &bound).await?;
        let ciphertext = B64URL
            .decode(answer.value.trim_end_matches('='))
            .map_err(|_| failed("Key Vault wrapkey: the value is not base64url"))?;
        // TAG ‖ version length (1 byte) ‖ version ‖ ciphertext
        let mut wrapped = TAG.to_vec();
        wrapped.push(version.len() as u8);
        wrapped.extend_from_slice(version.as_bytes());
        wrapped.extend_from_slice(&ciphertext);
        Ok(wrapped)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rest = wrapped.strip_prefix(TAG).ok_or(CryptoError::Malformed)?;
        let (&len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
        if rest.len() <= len as usize {
            return Err(CryptoError::Malformed);
        }
        let (version, ciphertext) = rest.split_at(len as usize);
        let version = std::str::from_utf8(version)
            .ok()
            .filter(|v| valid_segment(v))
            .ok_or(CryptoError::Malformed)?;
        let answer = self.operate(version, "unwrapkey", ciphertext).await?;
        let bound = B64URL
            .decode(answer.value.trim_end_matches('='))
            .map_err(|_| failed("Key Vault unwrapkey: the value is not base64url"))?;
        match bound.split_at_checked(32) {
            Some((d, key)) if d == digest(aad) => Ok(key.to_vec()),
            _ => Err(CryptoError::Decrypt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_checked() {
        assert_eq!(
            version_of("https://v.vault.azure.net/keys/master/0a1b2c", "master").expect("test"),
            "0a1b2c"
        );
        for bad in [
            "https://v.vault.azure.net/keys/other/0a1b2c",
            "https://v.vault.azure.net/secrets/master/0a1b2c",
            "https://v.vault.azure.net/keys/master/../x",
            "https://v.vault.azure.net/keys/master/a?b",
            "master",
        ] {
            assert!(version_of(bad, "master").is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn bad_settings_and_wrapped_keys_are_refused() {
        let creds = || AzureCredentials::ManagedIdentity {
            endpoint: "http://127.0.0.1:9/token".into(),
            header: None,
            client_id: None,
        };
        assert!(AzureKms::new("http://vault.example.com", "k", creds()).is_err());
        assert!(AzureKms::new("https://v.vault.azure.net", "a/b", creds()).is_err());
        let kms = AzureKms::new("https://h.managedhsm.azure.net/", "k", creds()).expect("test");
        assert_eq!(kms.resource, "https://managedhsm.azure.net");
        assert_eq!(kms.key_id(), "azure:https://h.managedhsm.azure.net/keys/k");
        for bad in [
            &b"aws:xx"[..],
            b"azure:",
            b"azure:\x05abc",
            b"azure:\x02../xyz",
        ] {
            assert!(
                matches!(kms.unwrap(bad, b"aad").await, Err(CryptoError::Malformed)),
                "{bad:?}"
            );
        }
    }
}
