//! API key generation and hashing.
//!
//! A key is `lv_<kind>_<32 base64url characters>` (192 random bits). Such a key cannot be
//! guessed, so a fast hash (SHA-256) is the right tool to store it; slow password hashes are for
//! human-chosen secrets.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ApiKey;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Ingestion only (`/v1/*`); safe to embed in a web page or an app.
    Write,
    /// Read APIs (`/api/v1/*`); keep on servers.
    Secret,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Secret => "secret",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "write" => Some(Self::Write),
            "secret" => Some(Self::Secret),
            _ => None,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Write => "lv_w_",
            Self::Secret => "lv_s_",
        }
    }
}

/// A key just created: the only time its secret text exists outside the client.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    #[serde(flatten)]
    pub key: ApiKey,
    pub secret: String,
}

/// A fresh random key of `kind`.
pub fn generate(kind: KeyKind) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{}{}",
        kind.tag(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a key.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The shown prefix of a key (its tag and four characters).
pub fn prefix(secret: &str) -> String {
    secret.chars().take(9).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_tagged_and_hash_stably() {
        let a = generate(KeyKind::Write);
        let b = generate(KeyKind::Write);
        assert_ne!(a, b);
        assert!(a.starts_with("lv_w_") && a.len() == 37, "{a}");
        assert!(generate(KeyKind::Secret).starts_with("lv_s_"));
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
    }
}
