//! Reading the log: sequential readers for consumers, backward scans, full verification.
//!
//! Readers open segment files on their own and stop at the durable end, so they never see a
//! record the writer has not yet synced and never take a lock the writer needs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::format::{self, DecodeError, RecordRef};
use crate::{Error, Record, Shared};

/// Summary of [`crate::EventLog::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub first_offset: u64,
    pub end_offset: u64,
}

/// Calls `f` for every record of the segment file at `path` with an offset below `end`.
pub(crate) fn for_each_in_file(
    path: &Path,
    end: u64,
    mut f: impl FnMut(&RecordRef<'_>),
) -> Result<u64, Error> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let mut count = 0;
    walk(path, &bytes, end, |r| {
        f(r);
        count += 1;
    })?;
    Ok(count)
}

/// Decodes the records of a segment's bytes in order, stopping at `end` or the end of the
/// bytes. Returns the offset after the last record visited.
fn walk(
    path: &Path,
    bytes: &[u8],
    end: u64,
    mut f: impl FnMut(&RecordRef<'_>),
) -> Result<u64, Error> {
    let corrupt = |position: usize, reason: &str| Error::Corrupt {
        path: path.to_owned(),
        position: position as u64,
        reason: reason.to_owned(),
    };
    let base = format::parse_header(bytes).map_err(|e| match e {
        format::HeaderError::Invalid => corrupt(0, "bad segment header"),
        format::HeaderError::Version(v) => unsupported_segment(path, v),
    })?;
    let mut pos = format::HEADER_LEN;
    let mut next = base;
    while pos < bytes.len() && next < end {
        match format::decode(&bytes[pos..]) {
            Ok(r) if r.offset == next => {
                f(&r);
                pos += r.size;
                next += 1;
            }
            Ok(_) => return Err(corrupt(pos, "offset out of sequence")),
            Err(DecodeError::Short) => return Err(corrupt(pos, "truncated record")),
            Err(DecodeError::Invalid(why)) => return Err(corrupt(pos, why)),
        }
    }
    Ok(next)
}

/// A segment of another format version.
pub(crate) fn unsupported_segment(path: &Path, found: u8) -> Error {
    Error::UnsupportedFormat {
        path: path.to_owned(),
        what: "log segment",
        found: found.into(),
        supported: format::VERSION.into(),
    }
}

pub(crate) fn scan_backwards(
    shared: &Shared,
    before: Option<u64>,
    mut f: impl FnMut(&Record) -> bool,
) -> Result<(), Error> {
    let end = shared.durable_end.load(Ordering::Acquire);
    let limit = before.map_or(end, |b| b.min(end));
    for (base, path) in shared.segments.snapshot().into_iter().rev() {
        if base >= limit {
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // Deleted by retention while we scanned: everything older is gone too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let mut positions = Vec::new();
        let mut pos = format::HEADER_LEN;
        walk(&path, &bytes, limit, |r| {
            positions.push(pos);
            pos += r.size;
        })?;
        for &p in positions.iter().rev() {
            let r = format::decode(&bytes[p..]).map_err(|_| Error::Corrupt {
                path: path.clone(),
                position: p as u64,
                reason: "record changed while reading".into(),
            })?;
            if !f(&r.to_owned()) {
                return Ok(());
            }
        }
    }
    Ok(())
}

pub(crate) fn verify(shared: &Shared) -> Result<VerifyReport, Error> {
    let end = shared.durable_end.load(Ordering::Acquire);
    let segments = shared.segments.snapshot();
    let mut report = VerifyReport {
        first_offset: segments.first().map_or(end, |s| s.0),
        end_offset: end,
        ..VerifyReport::default()
    };
    let mut expected = report.first_offset;
    for (base, path) in &segments {
        if *base != expected {
            return Err(Error::Corrupt {
                path: path.clone(),
                position: 0,
                reason: format!("segment starts at offset {base}, expected {expected}"),
            });
        }
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        report.bytes += bytes.len() as u64;
        let mut records = 0;
        expected = walk(path, &bytes, u64::MAX, |_| records += 1)?;
        report.records += records;
        report.segments += 1;
    }
    if expected != end {
        return Err(Error::Corrupt {
            path: shared.segments.dir().to_owned(),
            position: 0,
            reason: format!("log ends at offset {expected}, expected {end}"),
        });
    }
    Ok(report)
}

/// A sequential reader from an offset to the durable end; used by [`crate::Consumer`].
pub struct LogReader {
    shared: Arc<Shared>,
    next: u64,
    file: Option<(PathBuf, File)>,
    buf: Vec<u8>,
    start: usize,
}

const READ_CHUNK: usize = 1 << 20;

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, offset: u64) -> Result<Self, Error> {
        let first = shared.segments.first_base().unwrap_or(0);
        let mut reader = Self {
            shared,
            next: offset.max(first),
            file: None,
            buf: Vec::new(),
            start: 0,
        };
        reader.seek_to(reader.next)?;
        Ok(reader)
    }

    /// The offset of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    fn seek_to(&mut self, offset: u64) -> Result<(), Error> {
        let end = self.shared.durable_end.load(Ordering::Acquire);
        let Some((base, path)) = self
            .shared
            .segments
            .snapshot()
            .into_iter()
            .rev()
            .find(|(b, _)| *b <= offset)
        else {
            return Ok(());
        };
        let mut file = File::open(&path).map_err(Error::io(&path))?;
        file.seek(SeekFrom::Start(format::HEADER_LEN as u64))
            .map_err(Error::io(&path))?;
        self.file = Some((path, file));
        self.buf.clear();
        self.start = 0;
        self.next = base;
        while self.next < offset.min(end) {
            if self.next_record()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Reads up to `max` records; an empty result means the reader is at the durable end.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.next_record()? {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }

    fn next_record(&mut self) -> Result<Option<Record>, Error> {
        let end = self.shared.durable_end.load(Ordering::Acquire);
        if self.next >= end {
            return Ok(None);
        }
        if self.file.is_none() {
            self.seek_to(self.next)?;
        }
        loop {
            let Some((path, file)) = self.file.as_mut() else {
                return Ok(None);
            };
            match format::decode(&self.buf[self.start..]) {
                Ok(r) if r.offset == self.next => {
                    let rec = r.to_owned();
                    self.start += r.size;
                    self.next += 1;
                    return Ok(Some(rec));
                }
                Ok(r) => {
                    return Err(Error::Corrupt {
                        path: path.clone(),
                        position: 0,
                        reason: format!("found offset {} where {} was due", r.offset, self.next),
                    });
                }
                Err(DecodeError::Invalid(why)) => {
                    return Err(Error::Corrupt {
                        path: path.clone(),
                        position: 0,
                        reason: why.to_owned(),
                    });
                }
                Err(DecodeError::Short) => {}
            }
            // Need more bytes: compact, then read.
            self.buf.drain(..self.start);
            self.start = 0;
            let len = self.buf.len();
            self.buf.resize(len + READ_CHUNK, 0);
            let n = file.read(&mut self.buf[len..]).map_err(Error::io(&*path))?;
            self.buf.truncate(len + n);
            if n == 0 {
                if !self.buf.is_empty() {
                    // A partial record at the end of a file that has been synced up to `next`:
                    // the rest is being written; try again later.
                    return Ok(None);
                }
                // End of this segment: the next record lives in the segment starting here.
                let next_path = self
                    .shared
                    .segments
                    .snapshot()
                    .into_iter()
                    .find(|(b, _)| *b == self.next)
                    .map(|(_, p)| p);
                match next_path {
                    Some(p) => {
                        let mut f = File::open(&p).map_err(Error::io(&p))?;
                        f.seek(SeekFrom::Start(format::HEADER_LEN as u64))
                            .map_err(Error::io(&p))?;
                        self.file = Some((p, f));
                    }
                    None => return Ok(None),
                }
            }
        }
    }
}
