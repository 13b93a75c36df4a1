//! A local HTTP server that records every request and answers as told: what the provider
//! tests check the documented request formats against.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;

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
                    });
                    tokio::time::sleep(a.delay).await;
                    (
                        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        [("content-type", "application/json")],
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
