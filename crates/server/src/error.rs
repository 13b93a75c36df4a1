//! API errors: one table from error code to HTTP status, and the JSON body every error has.
//!
//! Bodies are `{"code": "...", "message": "..."}` plus optional details; the message never
//! carries internal error text (that is logged with the request id instead).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use livora_model::ItemErrorCode;
use serde_json::{Map, Value, json};

/// Every error code the API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidJson,
    InvalidGzip,
    EmptyBody,
    EmptyBatch,
    InvalidItems,
    /// A single message was refused; the code is the item's (`missing_event` …).
    Item(ItemErrorCode),
    InvalidQuery,
    Unauthorized,
    InvalidWriteKey,
    BodyTooLarge,
    EventTooLarge,
    TooManyEvents,
    UnsupportedMediaType,
    UnsupportedEncoding,
    NotFound,
    MethodNotAllowed,
    LogUnavailable,
    AnalyticsDisabled,
    RateLimited,
    Timeout,
    Internal,
    InvalidRequest,
    Forbidden,
    InvalidCredentials,
    /// A new password that is too easy to guess (common, breached, or the account's own
    /// email or name); the message says why.
    WeakPassword,
    InvalidToken,
    AccountLocked,
    Conflict,
    AuditBroken,
    /// A segment definition that cannot be used; `path` names the part.
    InvalidDefinition,
    /// The event log no longer holds what an operation must replay.
    HistoryUnavailable,
    /// The profiles service is still reading the event log after a start.
    NotReady,
    /// A tracking or unsubscribe link that was altered or not made here.
    InvalidLink,
    /// A provider's callback whose signature does not check.
    InvalidSignature,
    /// A message provider refused or failed (a test send).
    ProviderFailed,
    /// A template would build a value or an output over the render limits.
    TemplateTooLarge,
    /// A condition compares personal data (a trait or property `[privacy]` protects)
    /// without the `pii.view` permission; `path` and `field` name it.
    PiiCondition,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidGzip => "invalid_gzip",
            Self::EmptyBody => "empty_body",
            Self::EmptyBatch => "empty_batch",
            Self::InvalidItems => "invalid_items",
            Self::Item(code) => code.as_str(),
            Self::InvalidQuery => "invalid_query",
            Self::Unauthorized => "unauthorized",
            Self::InvalidWriteKey => "invalid_write_key",
            Self::BodyTooLarge => "body_too_large",
            Self::EventTooLarge => "event_too_large",
            Self::TooManyEvents => "too_many_events",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::LogUnavailable => "log_unavailable",
            Self::AnalyticsDisabled => "analytics_disabled",
            Self::RateLimited => "rate_limited",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
            Self::InvalidRequest => "invalid_request",
            Self::Forbidden => "forbidden",
            Self::InvalidCredentials => "invalid_credentials",
            Self::WeakPassword => "weak_password",
            Self::InvalidToken => "invalid_token",
            Self::AccountLocked => "account_locked",
            Self::Conflict => "conflict",
            Self::AuditBroken => "audit_broken",
            Self::InvalidDefinition => "invalid_definition",
            Self::HistoryUnavailable => "history_unavailable",
            Self::NotReady => "not_ready",
            Self::InvalidLink => "invalid_link",
            Self::InvalidSignature => "invalid_signature",
            Self::ProviderFailed => "provider_failed",
            Self::TemplateTooLarge => "template_too_large",
            Self::PiiCondition => "pii_condition",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidJson
            | Self::InvalidGzip
            | Self::EmptyBody
            | Self::EmptyBatch
            | Self::InvalidItems
            | Self::Item(_)
            | Self::InvalidQuery
            | Self::InvalidRequest
            | Self::WeakPassword
            | Self::InvalidDefinition
            | Self::TemplateTooLarge
            | Self::InvalidLink => StatusCode::BAD_REQUEST,
            Self::Unauthorized
            | Self::InvalidWriteKey
            | Self::InvalidCredentials
            | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::InvalidSignature | Self::PiiCondition => StatusCode::FORBIDDEN,
            Self::Conflict | Self::HistoryUnavailable => StatusCode::CONFLICT,
            Self::BodyTooLarge | Self::EventTooLarge | Self::TooManyEvents => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::UnsupportedMediaType | Self::UnsupportedEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::LogUnavailable | Self::AnalyticsDisabled | Self::Timeout | Self::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited | Self::AccountLocked => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal | Self::AuditBroken => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ProviderFailed => StatusCode::BAD_GATEWAY,
        }
    }
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub details: Map<String, Value>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// A 500 whose cause is logged, not shown.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(Code::Internal, "internal error; see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code.as_str()));
        body.insert("message".into(), json!(self.message));
        body.extend(self.details);
        (self.code.status(), Json(Value::Object(body))).into_response()
    }
}

impl From<livora_store::Error> for ApiError {
    fn from(e: livora_store::Error) -> Self {
        match e {
            livora_store::Error::Invalid { field, message } => {
                Self::new(Code::InvalidRequest, message).with("field", field)
            }
            livora_store::Error::WeakPassword(m) => {
                Self::new(Code::WeakPassword, m).with("field", "password")
            }
            livora_store::Error::Conflict(m) => Self::new(Code::Conflict, m),
            livora_store::Error::NotFound(m) => {
                Self::new(Code::NotFound, format!("not found: {m}"))
            }
            e => Self::internal(&e),
        }
    }
}
