//! Outgoing webhooks: the rendered body is POSTed as JSON to the step's URL, signed with
//! HMAC-SHA256 over `<timestamp>.<body>` with the tenant's webhook secret.
//!
//! Headers: `X-Livora-Signature: t=<unix seconds>,v1=<hex digest>` (a receiver recomputes
//! the digest and rejects old timestamps, against replays) and `Idempotency-Key: <key>`.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http::{answer, client, unreachable};
use crate::{Channel, Outgoing, SendError, part};

pub struct Webhook {
    secret: Vec<u8>,
    client: reqwest::Client,
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
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
            client: client(),
        }
    }
}

#[async_trait]
impl Channel for Webhook {
    fn provider(&self) -> &str {
        "webhook"
    }

    async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError> {
        let body = part(m, "body")?;
        let now = chrono::Utc::now().timestamp();
        let resp = self
            .client
            .post(&m.to)
            .header("content-type", "application/json")
            .header("idempotency-key", &m.key)
            .header("x-livora-signature", signature(&self.secret, now, body))
            .body(body.to_owned())
            .send()
            .await
            .map_err(unreachable)?;
        answer(resp).await.map(|_| None)
    }
}
