//! The Livora format version of the column store's files, and the check every reader makes.
//!
//! - Parquet files (events and persons, [`crate::segment`]) carry it as the key-value
//!   metadata [`KEY`] = [`VERSION`]; a file without the key was written before the key
//!   existed and is version 1.
//! - `manifest.json` ([`crate::storage`]) carries it as its `version` field.
//!
//! A file of a version this build does not know is refused with
//! [`Error::UnsupportedFormat`]; it is never read as if it were the current one.

use parquet::file::metadata::{KeyValue, ParquetMetaData};

use crate::Error;

/// The Parquet key-value metadata key holding the format version.
pub const KEY: &str = "livora:format";
/// The version of the Parquet files this build writes and reads.
pub const VERSION: u32 = 1;

/// The key-value metadata every Parquet file is written with.
pub(crate) fn key_value() -> KeyValue {
    KeyValue::new(KEY.to_owned(), VERSION.to_string())
}

/// Refuses a Parquet file of another format version; `what` names the file in the error.
pub(crate) fn check(meta: &ParquetMetaData, what: &str) -> Result<(), Error> {
    let found = meta
        .file_metadata()
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == KEY))
        .map(|kv| kv.value.as_deref().unwrap_or(""));
    match found {
        None => Ok(()),
        Some(v) if v.parse::<u32>() == Ok(VERSION) => Ok(()),
        Some(v) => Err(Error::UnsupportedFormat {
            what: what.to_owned(),
            found: v.to_owned(),
            supported: VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{RecordBatch, StringArray, UInt32Array};
    use arrow_schema::{DataType, Field, Schema};
    use bytes::Bytes;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::segment::decode_persons;

    /// A persons file of one person, with `version` as its `livora:format` (`None`: no key).
    fn persons_file(version: Option<&str>) -> Bytes {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt32, false),
            Field::new("key", DataType::Utf8, false),
            Field::new("parent", DataType::UInt32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt32Array::from(vec![0])),
                Arc::new(StringArray::from(vec!["u:alice"])),
                Arc::new(UInt32Array::from(vec![0])),
            ],
        )
        .expect("batch");
        let props = WriterProperties::builder()
            .set_key_value_metadata(
                version.map(|v| vec![KeyValue::new(KEY.to_owned(), v.to_owned())]),
            )
            .build();
        let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props)).expect("writer");
        w.write(&batch).expect("write");
        Bytes::from(w.into_inner().expect("close"))
    }

    #[test]
    fn files_without_the_key_are_version_1_and_unknown_versions_are_refused() {
        for ok in [None, Some("1")] {
            let p = decode_persons(persons_file(ok)).expect("version 1");
            assert_eq!(p.describe(0), Some((true, "alice")));
        }
        for bad in ["2", "", "one"] {
            match decode_persons(persons_file(Some(bad))) {
                Err(Error::UnsupportedFormat {
                    what,
                    found,
                    supported: 1,
                }) => assert_eq!((what.as_str(), found.as_str()), ("persons file", bad)),
                other => panic!("{bad:?}: expected a format error, got {:?}", other.err()),
            }
        }
    }
}
