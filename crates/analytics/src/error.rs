//! Query errors: every one is the caller's fault and says what to change.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid query: {0}")]
    Invalid(String),
}
