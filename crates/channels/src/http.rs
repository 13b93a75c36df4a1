//! What the HTTP providers share: one client with timeouts, and how a response maps to a
//! result.

use std::time::Duration;

use crate::SendError;

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default()
}

/// A request that did not get an answer (connection refused, timeout): worth retrying.
pub(crate) fn unreachable(e: reqwest::Error) -> SendError {
    SendError::Transient(format!("no answer: {e}"))
}

/// The body of a successful answer, or the error it means: 408, 429 and 5xx are worth
/// retrying; other statuses are not.
pub(crate) async fn answer(resp: reqwest::Response) -> Result<serde_json::Value, SendError> {
    let status = resp.status();
    let text = resp.text().await.map_err(unreachable)?;
    if status.is_success() {
        return Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null));
    }
    let mut detail: String = text.chars().take(300).collect();
    if detail.is_empty() {
        detail = status.canonical_reason().unwrap_or("").to_owned();
    }
    let why = format!("HTTP {}: {detail}", status.as_u16());
    if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        Err(SendError::Transient(why))
    } else {
        Err(SendError::Permanent(why))
    }
}
