//! The log's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt log at {path} byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error(
        "{path} is in format version {found} of the {what}, and this build reads version {supported}: use a newer Livora"
    )]
    UnsupportedFormat {
        path: PathBuf,
        /// What kind of file (`log segment`, `consumer offset`).
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("record too large: {0} bytes")]
    RecordTooLarge(usize),
    #[error("invalid consumer name {0:?}: use letters, digits, '-', '_' and '.'")]
    InvalidConsumerName(String),
    #[error("invalid log configuration: {0}")]
    Config(String),
    #[error("the log writer failed earlier; restart to recover the tail")]
    Failed,
    #[error("the log in {0} is in use by another process")]
    Locked(PathBuf),
    #[error("the log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
