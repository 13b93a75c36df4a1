//! Rate limits and request timeouts, in front of every route but the operational ones.
//!
//! Two token buckets per request (GCRA, the `governor` crate): one per credential (the
//! write key or secret key as sent, hashed; "no credential" is one bucket) and one per client
//! address (the peer, or the first `X-Forwarded-For` hop when `ingest.trust_forwarded_for`).
//! Ingestion and the read APIs have their own rates. A request over either limit is answered
//! 429 `rate_limited` with `Retry-After` (whole seconds, at least 1) before any handler runs.
//! Browsers may call the read API only from the origins in `api_cors_origins`.
//! A request still running after `request_timeout_secs` is answered 503 `timeout`; its
//! handler is dropped (an ingestion batch whose events became durable meanwhile stays
//! durable, and the client's retry is deduplicated by `messageId`).

use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiError, Code};

/// Rate limits and timeouts (`[limits]` in `livora.toml`). Rates are requests per second,
/// with bursts of twice that; `0` turns a limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOptions {
    /// Ingestion (`/v1/*`) requests per second per write key.
    pub ingest_per_key: u32,
    /// Ingestion requests per second per client address.
    pub ingest_per_ip: u32,
    /// Read API (`/api/v1/*`) requests per second per secret key.
    pub api_per_key: u32,
    /// Read API requests per second per client address.
    pub api_per_ip: u32,
    /// Sign-in and token requests (`/api/v1/auth/*` but sign-out) per minute per client
    /// address, with bursts of the same size; on top of the per-account lockout.
    pub login_per_ip_per_minute: u32,
    /// Longest a request may run, in seconds.
    pub request_timeout_secs: u64,
    /// Origins (`https://app.example.com`) whose pages may call the read API from a browser.
    /// Default: none. Ingestion is open to every origin: write keys are public by design.
    pub api_cors_origins: Vec<String>,
}

impl Default for LimitOptions {
    fn default() -> Self {
        Self {
            // A batch carries up to 2,500 events: 10,000 batches/s is far above what one
            // node ingests, so only a runaway client meets it.
            ingest_per_key: 10_000,
            ingest_per_ip: 10_000,
            api_per_key: 200,
            api_per_ip: 400,
            login_per_ip_per_minute: 20,
            request_timeout_secs: 30,
            api_cors_origins: Vec::new(),
        }
    }
}

/// An entry of `limits.api_cors_origins` that cannot be an `Origin` header value.
#[derive(Debug, thiserror::Error)]
#[error("limits.api_cors_origins: {0:?} is not a valid origin")]
pub struct BadOrigin(pub String);

/// Which rates a route is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ingest,
    Api,
    Login,
}

/// The buckets of one class.
struct Buckets {
    by_key: Option<DefaultKeyedRateLimiter<u64>>,
    by_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

fn limiter<K: Hash + Eq + Clone>(per_second: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// The rate limiters of a server.
pub struct Limits {
    ingest: Buckets,
    api: Buckets,
    login: Buckets,
    timeout: Duration,
    /// The read API's CORS policy.
    pub api_cors: tower_http::cors::CorsLayer,
    /// Hashes credentials so that the limiter's map never holds a secret.
    hasher: std::collections::hash_map::RandomState,
}

impl Limits {
    /// The limiters for `o`; an invalid CORS origin is refused.
    pub fn new(o: &LimitOptions) -> Result<Self, BadOrigin> {
        Ok(Self {
            api_cors: api_cors(o)?,
            ingest: Buckets {
                by_key: limiter(o.ingest_per_key),
                by_ip: limiter(o.ingest_per_ip),
            },
            api: Buckets {
                by_key: limiter(o.api_per_key),
                by_ip: limiter(o.api_per_ip),
            },
            login: Buckets {
                by_key: None,
                by_ip: NonZeroU32::new(o.login_per_ip_per_minute)
                    .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            },
            timeout: Duration::from_secs(o.request_timeout_secs.max(1)),
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    /// How long the caller must wait, if a limit is reached.
    fn check(&self, class: Class, credential: Option<&[u8]>, ip: IpAddr) -> Option<Duration> {
        let b = match class {
            Class::Ingest => &self.ingest,
            Class::Api => &self.api,
            Class::Login => &self.login,
        };
        let clock = DefaultClock::default();
        let key = self.hasher.hash_one(credential);
        let by_key = b.by_key.as_ref().and_then(|l| l.check_key(&key).err());
        let by_ip = b.by_ip.as_ref().and_then(|l| l.check_key(&ip).err());
        by_key
            .into_iter()
            .chain(by_ip)
            .map(|n| n.wait_time_from(clock.now()))
            .max()
    }

    /// Forgets buckets that are full again (idle keys and addresses), so the maps stay small.
    pub fn forget_idle(&self) {
        for b in [&self.ingest, &self.api, &self.login] {
            if let Some(l) = &b.by_key {
                l.retain_recent();
                l.shrink_to_fit();
            }
            if let Some(l) = &b.by_ip {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }
}

/// The middleware: rate limits, then the handler under the timeout.
pub async fn enforce(
    State((state, class)): State<(Arc<AppState>, Class)>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
    let ip = crate::ingest::client_ip(&state, req.headers(), peer)
        .parse()
        .unwrap_or(peer.ip());
    let credential = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if let Some(wait) = state.limits.check(class, credential, ip) {
        metrics::counter!("livora_http_rate_limited_total", "class" => match class {
            Class::Ingest => "ingest",
            Class::Api => "api",
            Class::Login => "login",
        })
        .increment(1);
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = ApiError::new(
            Code::RateLimited,
            format!("too many requests; retry in {secs} s"),
        )
        .with("retry_after_seconds", secs)
        .into_response();
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        return response;
    }
    let timeout = state.limits.timeout;
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            Code::Timeout,
            format!(
                "the request took longer than {} s; retry it",
                timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

/// The CORS layer of the read API: the configured origins only (none by default), with the
/// `Authorization` and `Content-Type` headers.
pub fn api_cors(o: &LimitOptions) -> Result<tower_http::cors::CorsLayer, BadOrigin> {
    use axum::http::{Method, header};
    let origins = o
        .api_cors_origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin.trim_end_matches('/'))
                .map_err(|_| BadOrigin(origin.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_credential_and_address_has_its_own_bucket() {
        let limits = Limits::new(&LimitOptions {
            api_per_key: 2,
            api_per_ip: 100,
            ..LimitOptions::default()
        })
        .expect("limits");
        let ip: IpAddr = [127, 0, 0, 1].into();
        // A burst of twice the rate, then a wait.
        for _ in 0..4 {
            assert_eq!(limits.check(Class::Api, Some(b"Bearer a"), ip), None);
        }
        let wait = limits
            .check(Class::Api, Some(b"Bearer a"), ip)
            .expect("limited");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(limits.check(Class::Api, Some(b"Bearer b"), ip), None);
        assert_eq!(
            limits.check(Class::Ingest, Some(b"Bearer a"), ip),
            None,
            "ingestion has its own rates"
        );
        let off = Limits::new(&LimitOptions {
            api_per_key: 0,
            api_per_ip: 0,
            ..LimitOptions::default()
        })
        .expect("limits");
        assert!(
            Limits::new(&LimitOptions {
                api_cors_origins: vec!["bad\norigin".into()],
                ..LimitOptions::default()
            })
            .is_err()
        );
        for _ in 0..1_000 {
            assert_eq!(off.check(Class::Api, None, ip), None);
        }
    }
}
