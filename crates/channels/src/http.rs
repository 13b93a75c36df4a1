//! What the HTTP providers share: one client with timeouts that connects only where the
//! [`Egress`] policy allows (checked on the resolved address, no redirects, no proxy from
//! the environment), and how a response maps to a result (a failed answer's body is
//! reported as a short, sanitised snippet, never in full).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::SendError;
use crate::egress::Egress;

/// At most this many characters of a failed answer's body are reported.
pub const SNIPPET: usize = 200;

/// At most this many bytes of an answer are read.
const READ_LIMIT: usize = 1 << 20;

/// A connection the egress policy refused.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0} is not a public address (allow it in [automation] egress_allow)")]
pub struct Refused(pub String);

/// Resolves names, keeping only the addresses the policy allows.
struct Guarded(Arc<Egress>);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let listed = egress.lists_host(&host);
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| listed || egress.allows_ip(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The one HTTP client of every provider: no redirects, no proxy from the environment, and
/// the guarded resolver.
///
/// # Panics
///
/// If reqwest cannot build it (its TLS backend failed to start). Falling back to a default
/// client would drop the guards, so a broken TLS backend stops the provider's construction
/// instead.
pub(crate) fn client(egress: &Arc<Egress>) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(Guarded(egress.clone())))
        .build()
        .expect("reqwest builds a client with rustls; without it no guarded client exists")
}

/// Checks a URL before it is called: `http` or `https`, and an address in it (names are
/// checked when they resolve) allowed by the policy. A refusal is final.
pub(crate) fn target(egress: &Egress, url: &str) -> Result<reqwest::Url, SendError> {
    let u =
        reqwest::Url::parse(url).map_err(|e| SendError::Permanent(format!("not a URL ({e})")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(SendError::Permanent(format!(
            "scheme {:?}: only http and https",
            u.scheme()
        )));
    }
    match u.host() {
        Some(url::Host::Ipv4(ip)) if !egress.allows_ip(ip.into()) => {
            Err(SendError::Permanent(Refused(ip.to_string()).to_string()))
        }
        Some(url::Host::Ipv6(ip)) if !egress.allows_ip(ip.into()) => {
            Err(SendError::Permanent(Refused(ip.to_string()).to_string()))
        }
        None => Err(SendError::Permanent("the URL has no host".into())),
        _ => Ok(u),
    }
}

/// A provider's endpoint setting (`base_url`): one of its documented hosts over https, or
/// a host the allowlist names (a local test server, an internal relay).
pub(crate) fn endpoint(
    egress: &Egress,
    setting: &str,
    url: &str,
    documented: &[&str],
) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{setting}: not a URL ({e})"))?;
    let listed = match u.host() {
        Some(url::Host::Domain(d)) => egress.lists_host(d),
        Some(url::Host::Ipv4(ip)) => egress.lists_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => egress.lists_ip(ip.into()),
        None => false,
    };
    let official = u.scheme() == "https"
        && u.host_str().is_some_and(|h| {
            let h = h.to_ascii_lowercase();
            documented
                .iter()
                .any(|d| h == *d || d.starts_with('.') && h.ends_with(d))
        });
    if official || (listed && matches!(u.scheme(), "http" | "https")) {
        Ok(())
    } else {
        Err(format!(
            "{setting}: https://{} (or a host named in [automation] egress_allow)",
            documented.join(", https://*")
        ))
    }
}

/// A request that did not get an answer (connection refused, timeout): worth retrying;
/// a connection the egress policy refused is final.
pub(crate) fn unreachable(e: reqwest::Error) -> SendError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<Refused>() {
            return SendError::Permanent(r.to_string());
        }
        cause = c.source();
    }
    SendError::Transient(format!("no answer: {}", e.without_url()))
}

/// At most [`SNIPPET`] characters of `text`, control characters left out.
pub fn snippet(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(SNIPPET + 1)
        .collect();
    if out.chars().count() > SNIPPET {
        out = out.chars().take(SNIPPET).collect();
        out.push('…');
    }
    out
}

/// The first [`READ_LIMIT`] bytes of an answer's body.
async fn body(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = READ_LIMIT.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= READ_LIMIT {
            break;
        }
    }
    Ok(out)
}

/// The body of a successful answer, or the error it means: 408, 429 and 5xx are worth
/// retrying; other statuses (redirects too: they are not followed) are not.
pub(crate) async fn answer(resp: reqwest::Response) -> Result<serde_json::Value, SendError> {
    let status = resp.status();
    let bytes = body(resp).await.map_err(unreachable)?;
    if status.is_success() {
        return Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null));
    }
    let mut detail = snippet(&String::from_utf8_lossy(&bytes));
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
