//! What the REST-based key services (GCP KMS, Azure Key Vault) share: an HTTPS client, an
//! OAuth 2.0 access-token cache, and endpoint checks.
//!
//! Both services are two documented REST calls each (encrypt/decrypt, wrapkey/unwrapkey), so
//! they are called with `reqwest` rather than through the vendors' SDKs: those are 0.x crates
//! with large dependency trees, and they refuse plain-HTTP endpoints, which rules out testing
//! against a local server.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::crypto::CryptoError;

/// A token is renewed this long before it expires.
const EARLY: Duration = Duration::from_secs(300);

pub(crate) fn failed(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Kms(e.to_string())
}

/// The HTTP client, with timeouts: a key service that hangs must not hang startup forever.
pub(crate) fn client() -> Result<reqwest::Client, CryptoError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(failed)
}

/// `url` parsed, without a trailing slash; bearer tokens and key material only travel over
/// HTTPS, except to a loopback address (a local emulator or proxy).
pub(crate) fn endpoint(url: &str, what: &str) -> Result<String, CryptoError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| failed(format!("{what} {url:?} is not a URL: {e}")))?;
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(failed(format!(
                "{what} {url:?} must be https (plain http only to a loopback address)"
            )));
        }
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Sends `request` and decodes a JSON answer; any other status is an error that quotes the
/// service's own message.
pub(crate) async fn call<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, CryptoError> {
    let resp = request
        .send()
        .await
        .map_err(|e| failed(format!("{what}: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| failed(format!("{what}: {e}")))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(500).collect();
        return Err(failed(format!("{what}: HTTP {status}: {text}")));
    }
    serde_json::from_slice(&body).map_err(|e| failed(format!("{what}: unexpected answer: {e}")))
}

/// An OAuth 2.0 token answer. Microsoft's managed-identity endpoints send numbers as strings
/// and `expires_on` (Unix seconds) instead of `expires_in`.
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    pub access_token: String,
    #[serde(default, deserialize_with = "number")]
    pub expires_in: Option<u64>,
    #[serde(default, deserialize_with = "number")]
    pub expires_on: Option<u64>,
}

impl TokenAnswer {
    /// How long the token lives; one hour when the answer does not say.
    pub fn lifetime(&self) -> Duration {
        if let Some(s) = self.expires_in {
            return Duration::from_secs(s);
        }
        if let Some(at) = self.expires_on {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            return Duration::from_secs(at.saturating_sub(now));
        }
        Duration::from_secs(3600)
    }
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(u64),
        Text(String),
    }
    Ok(match Option::<N>::deserialize(d)? {
        None => None,
        Some(N::Int(n)) => Some(n),
        Some(N::Text(s)) => s.trim().parse().ok(),
    })
}

/// The current access token, fetched again shortly before it expires.
#[derive(Default)]
pub(crate) struct TokenCache {
    current: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl TokenCache {
    /// The cached token, or a new one from `fetch` (one fetch at a time).
    pub async fn get<F>(&self, fetch: F) -> Result<String, CryptoError>
    where
        F: Future<Output = Result<TokenAnswer, CryptoError>>,
    {
        let mut current = self.current.lock().await;
        if let Some((token, renew_at)) = current.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let answer = fetch.await?;
        let renew_at = Instant::now() + answer.lifetime().saturating_sub(EARLY);
        *current = Some((answer.access_token.clone(), renew_at));
        Ok(answer.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_unless_local() {
        assert_eq!(
            endpoint("https://cloudkms.googleapis.com/", "x").expect("test"),
            "https://cloudkms.googleapis.com"
        );
        assert!(endpoint("http://127.0.0.1:8080", "x").is_ok());
        assert!(endpoint("http://[::1]:8080", "x").is_ok());
        assert!(endpoint("http://localhost:1", "x").is_ok());
        assert!(endpoint("http://kms.example.com", "x").is_err());
        assert!(endpoint("ftp://127.0.0.1", "x").is_err());
        assert!(endpoint("not a url", "x").is_err());
    }

    #[test]
    fn token_answers_take_both_spellings() {
        let a: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"t","expires_in":3599}"#).expect("test");
        assert_eq!(a.lifetime(), Duration::from_secs(3599));
        let a: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"t","expires_in":"60"}"#).expect("test");
        assert_eq!(a.lifetime(), Duration::from_secs(60));
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("test")
            .as_secs()
            + 1000;
        let a: TokenAnswer =
            serde_json::from_str(&format!(r#"{{"access_token":"t","expires_on":"{later}"}}"#))
                .expect("test");
        assert!(a.lifetime() > Duration::from_secs(990));
    }

    #[tokio::test]
    async fn tokens_are_reused_until_close_to_expiry() {
        let cache = TokenCache::default();
        let answer = |t: &str, s: u64| TokenAnswer {
            access_token: t.into(),
            expires_in: Some(s),
            expires_on: None,
        };
        assert_eq!(
            cache
                .get(async { Ok(answer("a", 3600)) })
                .await
                .expect("test"),
            "a"
        );
        assert_eq!(
            cache
                .get(async { Ok(answer("b", 3600)) })
                .await
                .expect("test"),
            "a"
        );
        // A token that lives less than the renewal margin is fetched again every time.
        let cache = TokenCache::default();
        assert_eq!(
            cache
                .get(async { Ok(answer("a", 10)) })
                .await
                .expect("test"),
            "a"
        );
        assert_eq!(
            cache
                .get(async { Ok(answer("b", 10)) })
                .await
                .expect("test"),
            "b"
        );
    }
}
