//! Named consumers: a reader plus a committed offset that survives restarts.
//!
//! The offset lives in `consumers/NAME.offset` as decimal text (format version 1; a later
//! version starts with `v<N>:` and is refused, see [`crate::format`]), replaced atomically
//! (write a temporary file, sync, rename, sync the directory). A consumer that crashes before
//! committing reads some records again, so consumers must be idempotent (ARCHITECTURE.md).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::reader::LogReader;
use crate::segments::sync_dir;
use crate::{Error, Record, Shared};

pub struct Consumer {
    name: String,
    path: PathBuf,
    committed: u64,
    reader: LogReader,
    notify: tokio::sync::watch::Receiver<u64>,
    shared: Arc<Shared>,
}

impl Consumer {
    pub(crate) fn open(shared: Arc<Shared>, name: &str) -> Result<Self, Error> {
        let valid = !name.is_empty()
            && name.len() <= 100
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !name.starts_with('.');
        if !valid {
            return Err(Error::InvalidConsumerName(name.to_owned()));
        }
        let dir = shared.opts.dir.join("consumers");
        let path = dir.join(format!("{name}.offset"));
        let stored = read_offset(&path)?;
        let notify = shared.notify.subscribe();
        let first = shared.segments.first_base().unwrap_or(0);
        let committed = stored.unwrap_or(first);
        let reader = LogReader::new(shared.clone(), committed)?;
        let mut consumer = Self {
            name: name.to_owned(),
            path,
            committed,
            reader,
            notify,
            shared,
        };
        if stored.is_none() {
            consumer.commit(committed)?;
        }
        Ok(consumer)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The offset this consumer will resume from after a restart.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The offset of the next record [`Consumer::poll`] returns.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// Returns up to `max` records, waiting up to `wait` for new ones when at the end.
    pub async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, Error> {
        let batch = self.reader.next_batch(max)?;
        if !batch.is_empty() {
            return Ok(batch);
        }
        let _ = tokio::time::timeout(wait, self.notify.changed()).await;
        self.reader.next_batch(max)
    }

    /// Durably records that every record below `offset` is processed. `offset` may not pass
    /// the durable end.
    pub fn commit(&mut self, offset: u64) -> Result<(), Error> {
        let end = self
            .shared
            .durable_end
            .load(std::sync::atomic::Ordering::Acquire);
        if offset > end {
            return Err(Error::Config(format!(
                "consumer {} cannot commit offset {offset} past the end of the log ({end})",
                self.name
            )));
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("offset.tmp");
        let mut f = fs::File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(offset.to_string().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(Error::io(&self.path))?;
        sync_dir(dir)?;
        self.committed = offset;
        Ok(())
    }
}

/// The format version of offset files this build writes and reads.
pub(crate) const OFFSET_VERSION: u32 = 1;

fn read_offset(path: &Path) -> Result<Option<u64>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => parse_offset(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Version 1 is the offset in decimal; a later version starts with `v<N>:`.
fn parse_offset(path: &Path, text: &str) -> Result<u64, Error> {
    let text = text.trim();
    if let Some(version) = text
        .strip_prefix('v')
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(v, _)| v.parse::<u32>().ok())
        .filter(|v| *v != OFFSET_VERSION)
    {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            what: "consumer offset",
            found: version,
            supported: OFFSET_VERSION,
        });
    }
    text.parse().map_err(|_| Error::Corrupt {
        path: path.to_owned(),
        position: 0,
        reason: format!("not an offset: {text:?}"),
    })
}

/// Every committed consumer offset under `dir/consumers`.
pub(crate) fn list(dir: &Path) -> Result<Vec<(String, u64)>, Error> {
    let dir = dir.join("consumers");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
        let entry = entry.map_err(Error::io(&dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().and_then(|n| n.strip_suffix(".offset")) else {
            continue;
        };
        if let Some(offset) = read_offset(&entry.path())? {
            out.push((name.to_owned(), offset));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_version_1_are_read_and_later_versions_refused() {
        let p = Path::new("consumers/x.offset");
        assert_eq!(parse_offset(p, "1234").expect("v1"), 1234);
        assert_eq!(parse_offset(p, "7\n").expect("v1"), 7);
        assert!(matches!(
            parse_offset(p, "v2:{\"offset\":7}"),
            Err(Error::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            })
        ));
        assert!(matches!(
            parse_offset(p, "seven"),
            Err(Error::Corrupt { .. })
        ));
    }
}
