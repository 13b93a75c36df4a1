//! The dashboard: the web app built from `web/` (`scripts/web.sh build` writes it to
//! `crates/server/dashboard`), embedded in the binary and served at `/` — so one binary is
//! still the whole product.
//!
//! Hashed assets (`/assets/…`) are cached for a year; every other `GET` that is not an API
//! path gets `index.html`, whose router shows the page (`/funnels`, `/people/u:ann` …).
//! API paths that match no route still answer the JSON `not_found`.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Code};

#[derive(rust_embed::RustEmbed)]
#[folder = "dashboard/"]
struct Assets;

/// Paths that belong to the APIs, never to the dashboard.
const API_PREFIXES: [&str; 5] = ["/api/", "/v1/", "/t/", "/hooks/", "/batch"];

/// What the browser may do with the dashboard's pages: scripts, styles and connections to
/// this origin only (ECharts and React set inline styles), no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(path: &str, immutable: bool) -> Option<Response> {
    let file = Assets::get(path)?;
    let mut r = Response::new(Body::from(file.data.into_owned()));
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(file.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    Some(r)
}

/// The router's fallback: the dashboard for pages and assets, `not_found` for the rest.
pub async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let api = API_PREFIXES.iter().any(|p| path.starts_with(p));
    if !api && (method == Method::GET || method == Method::HEAD) {
        let file = path.trim_start_matches('/');
        if let Some(r) = file.strip_prefix("assets/").and_then(|_| asset(file, true)) {
            return r;
        }
        if !file.starts_with("assets/")
            && let Some(r) = asset("index.html", false)
        {
            return r;
        }
    }
    ApiError::new(Code::NotFound, "no such route").into_response()
}
