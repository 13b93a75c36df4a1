//! Outgoing webhooks: the rendered body is POSTed as JSON to the step's URL, signed with
//! HMAC-SHA256 over `<timestamp>.<body>` with the tenant's webhook secret.
//!
//! Headers: `X-Livora-Signature: t=<unix seconds>,v1=<hex digest>` (a receiver recomputes
//! the digest and rejects old timestamps, against replays) and `Idempotency-Key: <key>`.
//!
//! A webhook provider with its own `url` setting posts there instead of the step's URL:
//! as a channel's secondary provider it is the failover target when the step's URL is down.
//! The provider's id recorded for a delivered message is the origin it was delivered to
//! (`https://backup.example`; the path is left out, it may hold a token).

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use std::sync::Arc;

use crate::egress::Egress;
use crate::http::{answer, client, target, unreachable};
use crate::{Channel, ConfigError, Outgoing, SendError, part};

pub struct Webhook {
    secret: Vec<u8>,
    client: reqwest::Client,
    egress: Arc<Egress>,
    /// Where every message goes (instead of the step's URL), when set.
    url: Option<String>,
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Checks a signature header against `body` (for receivers, and tests): the digest must
/// match and the timestamp be within `tolerance_secs` of `now`.
pub fn verify(secret: &[u8], header: &str, body: &str, now: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    let expected = signature(secret, t, body);
    // Compared in full whatever the first difference (no early exit).
    let want = expected.rsplit("v1=").next().unwrap_or("");
    want.len() == v1.len()
        && want
            .bytes()
            .zip(v1.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl Webhook {
    /// A webhook that may call public addresses only.
    pub fn new(secret: &[u8]) -> Self {
        Self::with_egress(secret, Arc::new(Egress::default()))
    }

    /// A webhook that may also call what `egress` allows.
    pub fn with_egress(secret: &[u8], egress: Arc<Egress>) -> Self {
        Self {
            secret: secret.to_vec(),
            client: client(&egress),
            egress,
            url: None,
        }
    }

    /// Posts every message to `url` instead of the step's URL (a failover target).
    pub fn to_url(mut self, url: &str) -> Result<Self, ConfigError> {
        target(&self.egress, url).map_err(|e| ConfigError {
            provider: "webhook",
            message: format!("settings.url: {e}"),
        })?;
        self.url = Some(url.to_owned());
        Ok(self)
    }
}

#[async_trait]
impl Channel for Webhook {
    fn provider(&self) -> &str {
        "webhook"
    }

    async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError> {
        let body = part(m, "body")?;
        let url = target(&self.egress, self.url.as_deref().unwrap_or(&m.to))?;
        let origin = url.origin().ascii_serialization();
        let now = chrono::Utc::now().timestamp();
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", &m.key)
            .header("x-livora-signature", signature(&self.secret, now, body))
            .body(body.to_owned())
            .send()
            .await
            .map_err(unreachable)?;
        answer(resp).await.map(|_| Some(origin))
    }
}
