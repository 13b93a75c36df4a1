//! A small HTTP/1.1 client for the demo generator and the benchmark (loopback only).

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
    auth: String,
}

impl Client {
    /// A client for `http://addr`, sending `write_key` as the Basic username.
    pub fn new(addr: std::net::SocketAddr, write_key: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
        );
        Self {
            inner,
            base: format!("http://{addr}"),
            auth,
        }
    }

    /// The same client sending `secret` as a Bearer token (for the read and query APIs).
    pub fn with_bearer(&self, secret: &str) -> Self {
        Self {
            auth: format!("Bearer {secret}"),
            ..self.clone()
        }
    }

    /// POSTs a JSON body; returns the status and the response body.
    pub async fn post(&self, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let req = Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("authorization", &self.auth)
            .body(Full::new(body))?;
        let resp = self.inner.request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// GETs a path; returns the status and the body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Bytes)> {
        let req = Request::get(format!("{}{path}", self.base)).body(Full::new(Bytes::new()))?;
        let resp = self.inner.request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
