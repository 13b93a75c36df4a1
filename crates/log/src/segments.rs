//! The set of segment files: listing, tail recovery on open, creation and retention.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use crate::format::{self, DecodeError};
use crate::{Error, LogOptions};

/// The segment files, by base offset. Readers take a snapshot; the writer adds, retention
/// removes.
pub(crate) struct Segments {
    dir: PathBuf,
    files: RwLock<BTreeMap<u64, PathBuf>>,
}

/// The writable tail found on open.
pub(crate) struct Recovered {
    pub next_offset: u64,
    pub active_base: u64,
    pub active: File,
    pub active_len: u64,
}

impl Segments {
    pub fn open(opts: &LogOptions) -> Result<(Self, Recovered), Error> {
        let dir = opts.dir.join("segments");
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        fs::create_dir_all(opts.dir.join("consumers")).map_err(Error::io(&opts.dir))?;
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let name = entry.file_name();
            if let Some(base) = name.to_str().and_then(format::parse_segment_name) {
                files.insert(base, entry.path());
            }
        }
        let segments = Segments {
            dir: dir.clone(),
            files: RwLock::new(files),
        };
        let last = segments.last();
        let recovered = match last {
            None => {
                let (active, active_len) = segments.create(0)?;
                Recovered {
                    next_offset: 0,
                    active_base: 0,
                    active,
                    active_len,
                }
            }
            Some((base, path)) => recover_tail(base, &path, opts.max_torn_bytes)?,
        };
        Ok((segments, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the segment starting at `base`, durable (file and directory synced).
    pub fn create(&self, base: u64) -> Result<(File, u64), Error> {
        let path = self.dir.join(format::segment_name(base));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        f.write_all(&format::header(base))
            .map_err(Error::io(&path))?;
        f.sync_all().map_err(Error::io(&path))?;
        sync_dir(&self.dir)?;
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base, path);
        Ok((f, format::HEADER_LEN as u64))
    }

    /// All segments, oldest first.
    pub fn snapshot(&self) -> Vec<(u64, PathBuf)> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(b, p)| (*b, p.clone()))
            .collect()
    }

    pub fn first_base(&self) -> Option<u64> {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        files.keys().next().copied()
    }

    fn last(&self) -> Option<(u64, PathBuf)> {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        files.iter().next_back().map(|(b, p)| (*b, p.clone()))
    }

    /// Deletes the oldest segments whose every record is older than `retention` and below
    /// `min_committed`. The newest segment is never deleted.
    pub fn delete_expired(&self, retention: Duration, min_committed: u64) -> Result<usize, Error> {
        let snapshot = self.snapshot();
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut deleted = 0;
        for pair in snapshot.windows(2) {
            let (base, path) = &pair[0];
            let end = pair[1].0;
            let modified = fs::metadata(path)
                .and_then(|m| m.modified())
                .map_err(Error::io(path))?;
            if end > min_committed || modified > cutoff {
                break;
            }
            fs::remove_file(path).map_err(Error::io(path))?;
            self.files
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(base);
            deleted += 1;
            tracing::info!(segment = %path.display(), "log segment deleted by retention");
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }
}

/// Validates the newest segment record by record and truncates a torn or corrupt tail.
fn recover_tail(base: u64, path: &Path, max_torn: u64) -> Result<Recovered, Error> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(Error::io(path))?;
    let header = format::parse_header(&bytes);
    if let Err(format::HeaderError::Version(v)) = header {
        // A newer build's segment: never taken for a torn header and rewritten.
        return Err(crate::reader::unsupported_segment(path, v));
    }
    if header != Ok(base) {
        // The crash came while the segment was being created: nothing was acknowledged in it.
        if bytes.len() > format::HEADER_LEN + max_torn as usize {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                position: 0,
                reason: "bad segment header".into(),
            });
        }
        tracing::warn!(segment = %path.display(), "rewriting the header of a torn new segment");
        f.set_len(0).map_err(Error::io(path))?;
        f.seek(SeekFrom::Start(0)).map_err(Error::io(path))?;
        f.write_all(&format::header(base))
            .map_err(Error::io(path))?;
        f.sync_all().map_err(Error::io(path))?;
        return Ok(Recovered {
            next_offset: base,
            active_base: base,
            active: f,
            active_len: format::HEADER_LEN as u64,
        });
    }
    let mut pos = format::HEADER_LEN;
    let mut next = base;
    let mut reason = None;
    while pos < bytes.len() {
        match format::decode(&bytes[pos..]) {
            Ok(r) if r.offset == next => {
                pos += r.size;
                next += 1;
            }
            Ok(_) => {
                reason = Some("offset out of sequence");
                break;
            }
            Err(DecodeError::Short) => {
                reason = Some("torn record");
                break;
            }
            Err(DecodeError::Invalid(why)) => {
                reason = Some(why);
                break;
            }
        }
    }
    if let Some(reason) = reason {
        let cut = bytes.len() - pos;
        if let Some(later) = later_valid_record(&bytes, pos, next) {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                position: pos as u64,
                reason: format!(
                    "{reason}, but a valid record follows at byte {later}: damage, not a torn write"
                ),
            });
        }
        if cut as u64 > max_torn {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                position: pos as u64,
                reason: format!("{reason}, and {cut} bytes follow: too many for a torn write"),
            });
        }
        tracing::warn!(
            segment = %path.display(),
            position = pos,
            bytes = cut,
            reason,
            "truncating the torn tail of the log"
        );
        metrics::counter!("livora_log_torn_tail_bytes_total").increment(cut as u64);
        f.set_len(pos as u64).map_err(Error::io(path))?;
    }
    // What a killed process wrote but never synced is still in the page cache: make it durable
    // before anything (a retry answered as a duplicate) relies on it.
    f.sync_all().map_err(Error::io(path))?;
    f.seek(SeekFrom::Start(pos as u64))
        .map_err(Error::io(path))?;
    Ok(Recovered {
        next_offset: next,
        active_base: base,
        active: f,
        active_len: pos as u64,
    })
}

/// The position of a valid record with an offset at or after `next` somewhere after `from`.
/// A torn write leaves only garbage after the cut; a valid record there means the bytes at
/// `from` were damaged in place.
fn later_valid_record(bytes: &[u8], from: usize, next: u64) -> Option<usize> {
    (from + 1
        ..bytes
            .len()
            .saturating_sub(format::FRAME_LEN + format::FIXED_LEN))
        .find(|&p| {
            let offset = u64::from_le_bytes(bytes[p + 8..p + 16].try_into().unwrap_or_default());
            (next..next.saturating_add(1 << 32)).contains(&offset)
                && format::decode(&bytes[p..]).is_ok_and(|r| r.offset == offset)
        })
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}
