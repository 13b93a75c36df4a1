//! A local HTTP server that records every request and answers as told: what the provider
//! tests check the documented request formats against.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use livora_channels::egress::Egress;

/// The egress policy for tests: local receivers are internal, so they are allowed
/// explicitly, as `[automation] egress_allow = ["127.0.0.1"]` would.
pub fn egress() -> Arc<Egress> {
    Arc::new(Egress::allowing(["127.0.0.1"]).expect("allowlist"))
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How to answer: a status and body (JSON text), after a delay.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    /// A `Location` header (a redirect).
    pub location: Option<String>,
}

#[derive(Clone, Default)]
pub struct Provider {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Answers to give, first one first; the last one repeats.
    pub answers: Arc<Mutex<Vec<Answer>>>,
}

impl Provider {
    pub fn answer(&self, status: u16, body: &str) {
        self.answer_after(status, body, Duration::ZERO);
    }

    pub fn answer_after(&self, status: u16, body: &str, delay: Duration) {
        self.answers.lock().expect("lock").push(Answer {
            status,
            body: body.into(),
            delay,
            location: None,
        });
    }

    /// Answers `status` with a `Location: location` header.
    pub fn redirect(&self, status: u16, location: &str) {
        self.answers.lock().expect("lock").push(Answer {
            status,
            body: String::new(),
            delay: Duration::ZERO,
            location: Some(location.into()),
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Starts the server on 127.0.0.1; returns its base URL.
    pub async fn start(&self) -> String {
        let me = self.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    me.seen.lock().expect("lock").push(Seen {
                        method: method.to_string(),
                        path: uri.to_string(),
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let answer = {
                        let mut a = me.answers.lock().expect("lock");
                        if a.len() > 1 {
                            Some(a.remove(0))
                        } else {
                            a.first().cloned()
                        }
                    };
                    let a = answer.unwrap_or(Answer {
                        status: 200,
                        body: "{}".into(),
                        delay: Duration::ZERO,
                        location: None,
                    });
                    tokio::time::sleep(a.delay).await;
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        "content-type",
                        axum::http::HeaderValue::from_static("application/json"),
                    );
                    if let Some(l) = a.location.as_deref().and_then(|l| l.parse().ok()) {
                        headers.insert("location", l);
                    }
                    (
                        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        headers,
                        a.body,
                    )
                        .into_response()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}
