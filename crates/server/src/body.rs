//! Reading request bodies under a size cap, with a capped gzip decompressor.
//!
//! The body is read up to `limit` bytes and refused beyond; a gzip body is inflated through
//! `Read::take(limit + 1)`, so a gzip bomb costs at most `limit + 1` bytes of memory before it
//! is refused.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};

use crate::error::{ApiError, Code};

/// Checks the content type: JSON, `text/plain` (what browsers' beacons send) or none.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = mime.is_empty()
        || mime == "application/json"
        || mime == "text/plain"
        || (mime.starts_with("application/") && mime.ends_with("+json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::UnsupportedMediaType,
            format!("content type {mime:?} is not accepted; send application/json"),
        ))
    }
}

/// Reads the whole body (decompressing gzip) and refuses it beyond `limit` bytes.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::BodyTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
        .with("limit_bytes", limit)
    };
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    // `to_bytes` fails on the length limit, or when the client broke off (no one to answer).
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let bytes = match encoding.as_str() {
        "identity" | "" => raw,
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            // The one sanctioned decoder: its output is capped at `limit + 1` bytes.
            #[allow(clippy::disallowed_methods)]
            let mut reader = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
            reader.read_to_end(&mut out).map_err(|e| {
                ApiError::new(Code::InvalidGzip, format!("body is not valid gzip: {e}"))
            })?;
            if out.len() > limit {
                return Err(too_large());
            }
            Bytes::from(out)
        }
        other => {
            return Err(ApiError::new(
                Code::UnsupportedEncoding,
                format!("content encoding {other:?} is not accepted; use gzip or none"),
            ));
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(Code::EmptyBody, "request body is empty"));
    }
    Ok(bytes)
}
