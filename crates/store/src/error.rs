//! The store's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A new password that is too easy to guess (common, breached, or made of the account's
    /// own email or name); the message says why.
    #[error("weak password: {0}")]
    WeakPassword(String),
    #[error("{0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
