//! API key lookups: write keys (HTTP Basic username, or `writeKey` in the body) for
//! ingestion; secret keys (`Authorization: Bearer`) are resolved by [`crate::access`].
//!
//! Lookups are cached for `key_cache_ttl` (default 5 s), so a revoked key stops working within
//! that time without a database round trip on every request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use livora_store::{ApiKey, KeyKind, MetadataStore};

use crate::error::{ApiError, Code};

const MAX_CACHED: usize = 10_000;

pub struct KeyCache {
    store: Arc<dyn MetadataStore>,
    ttl: Duration,
    entries: RwLock<HashMap<String, (Option<ApiKey>, Instant)>>,
}

impl KeyCache {
    pub fn new(store: Arc<dyn MetadataStore>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    async fn lookup(&self, secret: &str) -> Result<Option<ApiKey>, ApiError> {
        {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            if let Some((key, at)) = entries.get(secret)
                && at.elapsed() < self.ttl
            {
                return Ok(key.clone());
            }
        }
        let key = self.store.find_key(secret).await?;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        entries.insert(secret.to_owned(), (key.clone(), Instant::now()));
        Ok(key)
    }

    /// Any active key, by its secret text (the read APIs check its scopes).
    pub async fn any_key(&self, secret: &str) -> Result<Option<ApiKey>, ApiError> {
        self.lookup(secret).await
    }

    /// Forgets every cached lookup (after a revocation on this node).
    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Resolves a write key for ingestion.
    pub async fn write_key(&self, secret: Option<&str>) -> Result<ApiKey, ApiError> {
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return Err(ApiError::new(
                Code::InvalidWriteKey,
                "no write key: send it as the HTTP Basic username or as `writeKey` in the body",
            ));
        };
        match self.lookup(secret).await? {
            Some(k) if k.kind == KeyKind::Write => Ok(k),
            Some(_) => Err(ApiError::new(
                Code::InvalidWriteKey,
                "a secret key cannot ingest events; use a write key",
            )),
            None => Err(ApiError::new(
                Code::InvalidWriteKey,
                "unknown or revoked write key",
            )),
        }
    }
}

/// The username of an `Authorization: Basic` header (the Segment SDKs' way to send the key).
pub fn basic_username(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = strip_scheme(value, "basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(
        text.split_once(':')
            .map_or(text.as_str(), |(u, _)| u)
            .to_owned(),
    )
}

/// The credentials after an auth scheme; scheme names are case-insensitive (RFC 9110).
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (name, rest) = value.trim().split_once(' ')?;
    name.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_username_is_the_key() {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode("lv_w_abc:");
        h.insert(AUTHORIZATION, format!("Basic {v}").parse().expect("header"));
        assert_eq!(basic_username(&h).as_deref(), Some("lv_w_abc"));
        h.insert(AUTHORIZATION, format!("basic {v}").parse().expect("header"));
        assert_eq!(
            basic_username(&h).as_deref(),
            Some("lv_w_abc"),
            "scheme is case-insensitive"
        );
        h.insert(AUTHORIZATION, "Basic !!!".parse().expect("header"));
        assert_eq!(basic_username(&h), None);
    }
}
