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
