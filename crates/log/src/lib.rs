//! Livora's durable event log: the single source of truth every other component reads.
//!
//! - [`EventLog`] is a cheap-to-clone handle. [`EventLog::append`] hands records to one writer
//!   thread, which gathers every request waiting at that moment into one group, writes it,
//!   `fdatasync`s, and only then answers: an `Ok` means the records are on disk.
//! - Records live in segment files (`<base offset>.log`, see [`format`]); each record carries a
//!   CRC-32C, its offset, its append time, its tenant and its id. On open, a torn or corrupt tail
//!   of the newest segment is truncated ([`LogOptions::max_torn_bytes`] bounds how much may be
//!   cut before the log refuses to open instead).
//! - Records are deduplicated by (tenant, id) over a window: the writer keeps a compact index of
//!   recent ids ([`dedupe`]) and rebuilds it from the log on open, so a retry after a crash or a
//!   restart is still recognised. Its memory is bounded ([`LogOptions::dedupe_memory_bytes`]):
//!   the newest ids are in hash tables, older ones in sorted run files under `dedupe/` with a
//!   Bloom filter in front, memory-mapped and merged in the background. Run files are scratch,
//!   rebuilt from the log on open.
//! - [`Consumer`]s are named readers with a committed offset, stored in `consumers/NAME.offset`;
//!   they read files on their own and never slow the writer.
//! - [`EventLog::enforce_retention`] deletes whole segments older than the retention once every
//!   consumer has committed past them.
//!
//! The log knows a record's bytes, tenant, id and append time, and nothing about what an event
//! means. The segment format, the group-commit writer and the dedupe index are hand-written:
//! they are the ingestion hot path.

mod consumer;
mod dedupe;
mod error;
pub mod format;
mod reader;
mod segments;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub use consumer::Consumer;
pub use error::Error;
pub use reader::{LogReader, VerifyReport};
use segments::Segments;
pub use uuid::Uuid;

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Directory holding `segments/`, `consumers/` and `dedupe/`.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it is this large.
    pub segment_bytes: u64,
    /// Segments whose newest record is older than this are deleted once every consumer has
    /// passed them. Must be at least `dedupe_window`.
    pub retention: Duration,
    /// Records whose (tenant, id) was appended within this window are dropped as duplicates.
    pub dedupe_window: Duration,
    /// Heap the dedupe index may use for the ids of the window, whatever the ingest rate:
    /// `dedupe_memory_bytes / 40` ids at most stay in memory (default 64 MiB: 1.6M ids), the
    /// rest are in sorted, filtered run files under `dedupe/`, memory-mapped (see [`dedupe`]).
    /// `usize::MAX` keeps every id in memory.
    pub dedupe_memory_bytes: usize,
    /// `false` skips `fdatasync` (tests and benchmarks of the non-durable path only).
    pub fsync: bool,
    /// The most bytes the writer gathers into one group commit.
    pub max_group_bytes: usize,
    /// Refuse to open (instead of truncating) when a corrupt tail is longer than this: more
    /// than one unsynced group cannot be a torn write, so it is damage to look at. (A valid
    /// record found after the damage also refuses, whatever the length.)
    pub max_torn_bytes: u64,
}

impl LogOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            retention: Duration::from_secs(7 * 86_400),
            dedupe_window: Duration::from_secs(86_400),
            dedupe_memory_bytes: 64 << 20,
            fsync: true,
            max_group_bytes: 16 << 20,
            max_torn_bytes: 16 << 20,
        }
    }
}

/// A record to append.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub tenant: Uuid,
    /// The dedupe key within the tenant (a Segment `messageId`). At most 65,535 bytes.
    pub id: String,
    pub payload: Vec<u8>,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    /// Append time, microseconds since the Unix epoch.
    pub appended_at_us: i64,
    pub tenant: Uuid,
    pub id: String,
    pub payload: Vec<u8>,
}

/// What [`EventLog::append`] did with each record, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// `Some(offset)` for a record written, `None` for a duplicate that was dropped.
    pub offsets: Vec<Option<u64>>,
}

impl AppendOutcome {
    pub fn written(&self) -> usize {
        self.offsets.iter().filter(|o| o.is_some()).count()
    }
    pub fn duplicates(&self) -> usize {
        self.offsets.len() - self.written()
    }
}

/// State shared by the writer, readers and handles.
struct Shared {
    opts: LogOptions,
    /// Held for the life of the log: a second process opening the same directory is refused.
    _lock: std::fs::File,
    segments: Segments,
    /// One past the last durable offset; readers never read at or beyond it.
    durable_end: AtomicU64,
    /// Set when a write or sync failed: the tail is unknown until a restart recovers it.
    failed: AtomicBool,
    notify: tokio::sync::watch::Sender<u64>,
}

/// Handle to the embedded log. Clone freely; [`EventLog::close`] stops the writer.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
    writer: writer::Handle,
}

impl EventLog {
    /// Opens (or creates) the log in `opts.dir`: recovers the tail, rebuilds the dedupe index
    /// and starts the writer thread.
    pub fn open(opts: LogOptions) -> Result<Self, Error> {
        if opts.retention < opts.dedupe_window {
            return Err(Error::Config(
                "log retention must be at least the dedupe window".into(),
            ));
        }
        std::fs::create_dir_all(&opts.dir).map_err(Error::io(&opts.dir))?;
        let lock_path = opts.dir.join("LOCK");
        let lock = std::fs::File::create(&lock_path).map_err(Error::io(&lock_path))?;
        lock.try_lock()
            .map_err(|_| Error::Locked(opts.dir.clone()))?;
        let (segments, recovered) = Segments::open(&opts)?;
        let next_offset = recovered.next_offset;
        let (notify, _) = tokio::sync::watch::channel(next_offset);
        let shared = Arc::new(Shared {
            opts,
            _lock: lock,
            segments,
            durable_end: AtomicU64::new(next_offset),
            failed: AtomicBool::new(false),
            notify,
        });
        let index = dedupe::rebuild(&shared)?;
        let writer = writer::spawn(shared.clone(), recovered, index)?;
        Ok(Self { shared, writer })
    }

    /// Appends records durably. Returns once they are on disk (or were dropped as duplicates).
    /// Records of one call get consecutive offsets, in order.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<AppendOutcome, Error> {
        self.submit(records)?.await
    }

    /// Queues records for appending now, without waiting: requests are appended in the order
    /// they were submitted (or appended), whoever waits for them. The returned future
    /// resolves as [`EventLog::append`] does, once they are durable; dropping it does not
    /// withdraw them.
    pub fn submit(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<impl Future<Output = Result<AppendOutcome, Error>> + Send + 'static, Error> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(Error::Failed);
        }
        let reply = self.writer.submit(records)?;
        Ok(async move { reply.await.map_err(|_| Error::Closed)? })
    }

    /// One past the newest durable offset (the offset the next record will get).
    pub fn end_offset(&self) -> u64 {
        self.shared.durable_end.load(Ordering::Acquire)
    }

    /// The oldest offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.shared
            .segments
            .first_base()
            .unwrap_or(self.end_offset())
    }

    /// `false` once a write failed; appends are refused until a restart recovers the tail.
    pub fn is_healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire)
    }

    /// A receiver that changes whenever the durable end moves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.notify.subscribe()
    }

    /// A reader positioned at `offset` (clamped to what is stored).
    pub fn reader(&self, offset: u64) -> Result<LogReader, Error> {
        LogReader::new(self.shared.clone(), offset)
    }

    /// Visits records from the newest backwards, starting below `before` (exclusive), until `f`
    /// returns `false`.
    pub fn scan_backwards(
        &self,
        before: Option<u64>,
        f: impl FnMut(&Record) -> bool,
    ) -> Result<(), Error> {
        reader::scan_backwards(&self.shared, before, f)
    }

    /// Opens the named consumer at its committed offset. A new consumer starts at the oldest
    /// stored offset and is registered at once, so retention keeps what it has not read.
    pub fn consumer(&self, name: &str) -> Result<Consumer, Error> {
        Consumer::open(self.shared.clone(), name)
    }

    /// Forgets a consumer (one that will not read again), so retention no longer waits for
    /// it. Returns whether it existed.
    pub fn remove_consumer(&self, name: &str) -> Result<bool, Error> {
        let path = self
            .shared
            .opts
            .dir
            .join("consumers")
            .join(format!("{name}.offset"));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    /// Committed offsets of every consumer that ever committed, by name.
    pub fn consumer_offsets(&self) -> Result<Vec<(String, u64)>, Error> {
        consumer::list(&self.shared.opts.dir)
    }

    /// Reads every record of every segment, checking CRCs and offset continuity.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        reader::verify(&self.shared)
    }

    /// Deletes segments past the retention that every consumer has passed. Returns how many.
    pub fn enforce_retention(&self) -> Result<usize, Error> {
        let min_committed = self
            .consumer_offsets()?
            .into_iter()
            .map(|(_, o)| o)
            .min()
            .unwrap_or(u64::MAX);
        self.shared
            .segments
            .delete_expired(self.shared.opts.retention, min_committed)
    }

    /// Stops the writer after the requests already queued are durable.
    pub fn close(&self) {
        self.writer.close();
    }
}

#[cfg(test)]
mod tests;
