//! The column store's errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("segment storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("sealed segment: {0}")]
    Segment(String),
    #[error(
        "{what} is in Livora format version {found}, and this build reads version {supported}: use a newer Livora"
    )]
    UnsupportedFormat {
        /// The file (`manifest.json`, `events file`, `persons file`).
        what: String,
        found: String,
        supported: u32,
    },
    #[error("segment storage URL {0}")]
    Url(String),
    #[error("event log: {0}")]
    Log(#[from] livora_log::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// This error, naming the file it came from (an unknown format version keeps its kind).
    pub fn in_file(self, path: &str) -> Self {
        match self {
            Error::UnsupportedFormat {
                what,
                found,
                supported,
            } => Error::UnsupportedFormat {
                what: format!("{what} {path}"),
                found,
                supported,
            },
            Error::Segment(m) => Error::Segment(format!("{path}: {m}")),
            Error::Parquet(e) => Error::Segment(format!("{path}: parquet: {e}")),
            Error::Arrow(e) => Error::Segment(format!("{path}: arrow: {e}")),
            other => other,
        }
    }
}
