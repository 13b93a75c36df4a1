//! The dedupe index: which (tenant, id) pairs were appended within the window, in bounded
//! memory.
//!
//! Keys are the first 96 bits of the XXH3-128 hash of tenant and id (a false match among 10^8
//! live ids has a probability near 10^-13), each with the minute it was appended. An id is
//! remembered for at least the window and at most ten minutes longer (expired entries are
//! swept every ten minutes).
//!
//! # Layout
//!
//! - **Hot**: the newest ids, in flat hash tables (16 bytes an entry) spread over [`SHARDS`]
//!   tables by the key's top bits. One table of millions of entries doubles all at once and
//!   the writer thread (every append waits for it) stalled for hundreds of milliseconds each
//!   time; a shard holds 1/256 of the entries, so its growth costs well under a millisecond.
//! - **Frozen**: when the hot tables hold half the id cap, they are handed whole (a pointer
//!   swap) to a background thread, which writes them as a **run**, and the writer starts new
//!   empty tables. Until the run is written, lookups still read the frozen tables.
//! - **Runs**: files under `<log dir>/dedupe/` (format in [`run`]): entries sorted by key with
//!   a Bloom filter in front, memory-mapped (page cache, not heap). A lookup asks each run's
//!   filter (one cache line) and binary-searches only on a "maybe".
//! - **Merging** is size-tiered, on a second background thread: when [`FANOUT`] runs fall in
//!   one size tier (tier `t` holds runs of `4^t` to `4^(t+1)` times the freeze size), they
//!   are merged into one, dropping entries past the window. A run whose newest entry is past
//!   the window is deleted at the sweep. So a lookup reads at most `3 x tiers + 2` runs.
//!
//! # Memory bound
//!
//! [`crate::LogOptions::dedupe_memory_bytes`] sets the cap on ids held in memory (hot plus the
//! frozen tables being written): `bytes / HOT_BYTES_PER_ID`, where [`HOT_BYTES_PER_ID`] = 40
//! is the worst case of a hash table entry (16 bytes and a control byte at the lowest load
//! a table reaches, 7/16, just after it doubles; about 28 bytes on average). The hot tables
//! are frozen at half the cap, and the writer waits for the previous freeze to finish before
//! it freezes again, so `hot + frozen <= cap` at every moment. Besides that: one shard's
//! entries while sorting, 64 KiB write buffers per background thread, and the run files'
//! mappings, which the kernel can evict. The one exception is a run that could not be
//! written (a full disk): its entries stay in memory, so that no duplicate passes, and an
//! error is logged.
//!
//! # Crash safety
//!
//! The log stays the source of truth. On open, [`rebuild`] deletes everything under
//! `dedupe/` and rebuilds the index from the last window of records, freezing as it goes
//! (so it respects the cap too). Runs are written under a temporary name and renamed; a run
//! file is checked whole (magic, version, CRCs, length) when it is mapped, and a file that
//! fails is never used: its entries stay in memory (freeze) or in the input runs (merge).

mod run;

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

use self::run::{Run, RunError, RunWriter};
use crate::format;
use crate::{Error, Shared};

const SWEEP_EVERY_MINUTES: u32 = 10;

/// How many tables the index is spread over.
const SHARDS: usize = 256;

/// The table of `key`: its top 8 bits, which the table hash (the low 64 bits) does not use.
fn shard_of(key: Key) -> usize {
    (key.0[2] >> 24) as usize
}

/// A 96-bit fingerprint of (tenant, id); `[u32; 3]` keeps table entries at 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key([u32; 3]);

impl std::hash::Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32));
    }
}

pub(crate) fn key(tenant: &Uuid, id: &[u8]) -> Key {
    let mut h = Xxh3::new();
    h.update(tenant.as_bytes());
    h.update(id);
    let d = h.digest128();
    Key([d as u32, (d >> 32) as u32, (d >> 64) as u32])
}

pub(crate) fn minute_of_us(us: i64) -> u32 {
    (us.max(0) / 60_000_000) as u32
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The keys are already uniform hashes: use their low 64 bits as the table hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Worst-case heap bytes of one id in the hot tables (see the module doc).
pub(crate) const HOT_BYTES_PER_ID: usize = 40;

/// How many runs of one size tier are merged together.
const FANOUT: usize = 4;

/// After a failed merge, the next is tried this much later.
const MERGE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

fn new_shards() -> Vec<HashMap<Key, u32, KeyHasher>> {
    (0..SHARDS)
        .map(|_| HashMap::with_hasher(KeyHasher(0)))
        .collect()
}

/// Hot tables handed to the freezer thread, still read by lookups until their run is mapped.
struct Frozen {
    id: u64,
    shards: Vec<HashMap<Key, u32, KeyHasher>>,
    len: usize,
    max_minute: u32,
}

impl Frozen {
    fn get(&self, key: Key) -> Option<u32> {
        self.shards[shard_of(key)].get(&key).copied()
    }
}

enum FreezeMsg {
    Freeze(Arc<Frozen>),
    /// Tables whose run is mapped: freeing 256 tables is the freezer's work, not the
    /// writer's. Queued before any later freeze, so they are freed before it starts.
    Release(Arc<Frozen>),
}

enum MergeMsg {
    Merge(MergeJob),
    /// Runs the index no longer reads: unmapping a large run takes milliseconds, which the
    /// writer should not spend.
    Release(Vec<Arc<Run>>),
}

struct MergeJob {
    id: u64,
    inputs: Vec<Arc<Run>>,
    minute: u32,
    window_minutes: u32,
}

enum Done {
    Frozen {
        id: u64,
        result: Result<Run, RunError>,
    },
    Merged {
        inputs: Vec<u64>,
        result: Result<Option<Run>, RunError>,
    },
}

/// The two background threads: one writes frozen tables as runs, one merges runs. Merges can
/// be long; freezes never wait behind them.
struct Background {
    freeze_tx: Option<mpsc::Sender<FreezeMsg>>,
    merge_tx: Option<mpsc::Sender<MergeMsg>>,
    done_rx: mpsc::Receiver<Done>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    fn spawn(dir: &Path) -> std::io::Result<Background> {
        let (freeze_tx, freeze_rx) = mpsc::channel::<FreezeMsg>();
        let (merge_tx, merge_rx) = mpsc::channel::<MergeMsg>();
        let (done_tx, done_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let freezer = {
            let (dir, done_tx) = (dir.to_owned(), done_tx.clone());
            std::thread::Builder::new()
                .name("livora-log-dedupe-freeze".into())
                .spawn(move || {
                    while let Ok(msg) = freeze_rx.recv() {
                        let frozen = match msg {
                            FreezeMsg::Freeze(frozen) => frozen,
                            FreezeMsg::Release(frozen) => {
                                drop(frozen);
                                continue;
                            }
                        };
                        let id = frozen.id;
                        let result = write_frozen(&frozen, &dir);
                        drop(frozen);
                        if done_tx.send(Done::Frozen { id, result }).is_err() {
                            break;
                        }
                    }
                })?
        };
        let merger = {
            let (dir, stop) = (dir.to_owned(), stop.clone());
            std::thread::Builder::new()
                .name("livora-log-dedupe-merge".into())
                .spawn(move || {
                    while let Ok(msg) = merge_rx.recv() {
                        let job = match msg {
                            MergeMsg::Merge(job) => job,
                            MergeMsg::Release(runs) => {
                                drop(runs);
                                continue;
                            }
                        };
                        let inputs = job.inputs.iter().map(|r| r.id).collect();
                        let result = merge(&job, &dir, &stop);
                        drop(job);
                        if done_tx.send(Done::Merged { inputs, result }).is_err() {
                            break;
                        }
                    }
                })?
        };
        Ok(Background {
            freeze_tx: Some(freeze_tx),
            merge_tx: Some(merge_tx),
            done_rx,
            stop,
            threads: vec![freezer, merger],
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.freeze_tx = None;
        self.merge_tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.run"))
}

/// Writes frozen tables as a run: shard by shard (a shard's keys share their top 8 bits, so
/// shards in order and each sorted are the whole in key order).
fn write_frozen(frozen: &Frozen, dir: &Path) -> Result<Run, RunError> {
    let mut w = RunWriter::create(&run_path(dir, frozen.id), frozen.len as u64)?;
    let mut buf: Vec<(Key, u32)> = Vec::new();
    let mut pushed = Ok(());
    for shard in &frozen.shards {
        buf.clear();
        buf.extend(shard.iter().map(|(k, m)| (*k, *m)));
        buf.sort_unstable_by_key(|(k, _)| run::order(*k));
        pushed = buf.iter().try_for_each(|(k, m)| w.push(*k, *m));
        if pushed.is_err() {
            break;
        }
    }
    match pushed {
        Ok(()) => w.finish(frozen.id),
        Err(e) => {
            w.abandon();
            Err(e)
        }
    }
}

/// Merges runs into one, keeping each key's newest minute and dropping entries past the
/// window; deletes the inputs' files once the output is in place. `Ok(None)`: all expired.
fn merge(job: &MergeJob, dir: &Path, stop: &AtomicBool) -> Result<Option<Run>, RunError> {
    let max: u64 = job.inputs.iter().map(|r| r.count).sum();
    let mut w = RunWriter::create(&run_path(dir, job.id), max)?;
    let mut iters: Vec<_> = job.inputs.iter().map(|r| r.iter().peekable()).collect();
    let window = u64::from(job.window_minutes);
    let mut pushed = Ok(());
    let mut n = 0u64;
    while let Some(next) = iters
        .iter_mut()
        .filter_map(|it| it.peek().map(|(k, _)| run::order(*k)))
        .min()
    {
        let mut newest: Option<(Key, u32)> = None;
        for it in &mut iters {
            if let Some((k, m)) = it.next_if(|(k, _)| run::order(*k) == next) {
                newest = Some((k, newest.map_or(m, |(_, n)| n.max(m))));
            }
        }
        if let Some((k, m)) = newest
            && u64::from(m) + window >= u64::from(job.minute)
        {
            pushed = w.push(k, m);
            if pushed.is_err() {
                break;
            }
        }
        n += 1;
        if n.is_multiple_of(1 << 16) && stop.load(Ordering::Acquire) {
            pushed = Err(RunError::Invalid {
                path: run_path(dir, job.id),
                reason: "merge stopped: the log is closing",
            });
            break;
        }
    }
    if let Err(e) = pushed {
        w.abandon();
        return Err(e);
    }
    let out = if w.count() == 0 {
        w.abandon();
        None
    } else {
        Some(w.finish(job.id)?)
    };
    for r in &job.inputs {
        let _ = std::fs::remove_file(&r.path);
    }
    Ok(out)
}

/// Deletes everything in `dir` (run files are scratch), creating it if needed.
fn clear_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let path = entry.map_err(Error::io(dir))?.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(Error::io(&path))?;
    }
    Ok(())
}

pub(crate) struct DedupeIndex {
    /// [`SHARDS`] tables, chosen by the key's top 8 bits (the table hash uses the low 64).
    hot: Vec<HashMap<Key, u32, KeyHasher>>,
    hot_len: usize,
    hot_max_minute: u32,
    /// Frozen tables: the one being written (`freezing`), and any whose write failed.
    frozen: Vec<Arc<Frozen>>,
    freezing: Option<u64>,
    runs: Vec<Arc<Run>>,
    merging: bool,
    merge_failed: Option<Instant>,
    /// Started at the first freeze.
    background: Option<Background>,
    /// The threads could not be started: ids stay in memory (logged once).
    no_background: bool,
    dir: PathBuf,
    next_id: u64,
    window_minutes: u32,
    /// Hot tables are frozen at this many ids (half the cap).
    freeze_at: usize,
    minute: u32,
    last_sweep: u32,
    stats: Stats,
}

/// Counts for tests and measurements.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub freezes: u64,
    pub merges: u64,
    /// Times the writer waited for the previous freeze before freezing again.
    pub freeze_waits: u64,
    pub freeze_wait: Duration,
    /// The longest the writer spent handing over hot tables or applying a finished run.
    pub worst_handover: Duration,
}

impl DedupeIndex {
    /// An empty index keeping ids for `window`, with at most `memory_bytes /
    /// HOT_BYTES_PER_ID` of them in memory (at least 2); its runs go to `dir`, which is
    /// emptied first.
    pub fn new(window: Duration, memory_bytes: usize, dir: &Path) -> Result<Self, Error> {
        clear_dir(dir)?;
        let cap = (memory_bytes / HOT_BYTES_PER_ID).max(2);
        Ok(Self {
            hot: new_shards(),
            hot_len: 0,
            hot_max_minute: 0,
            frozen: Vec::new(),
            freezing: None,
            runs: Vec::new(),
            merging: false,
            merge_failed: None,
            background: None,
            no_background: false,
            dir: dir.to_owned(),
            next_id: 1,
            window_minutes: u32::try_from(window.as_secs().div_ceil(60)).unwrap_or(u32::MAX),
            freeze_at: cap / 2,
            minute: 0,
            last_sweep: 0,
            stats: Stats::default(),
        })
    }

    fn live(&self, appended: u32, minute: u32) -> bool {
        u64::from(appended) + u64::from(self.window_minutes) >= u64::from(minute)
    }

    /// Whether `key` was appended within the window before `minute`.
    pub fn contains(&self, key: Key, minute: u32) -> bool {
        if self.hot[shard_of(key)]
            .get(&key)
            .is_some_and(|m| self.live(*m, minute))
        {
            return true;
        }
        if self
            .frozen
            .iter()
            .any(|f| f.get(key).is_some_and(|m| self.live(m, minute)))
        {
            return true;
        }
        self.runs.iter().any(|r| {
            self.live(r.max_minute, minute) && r.get(key).is_some_and(|m| self.live(m, minute))
        })
    }

    pub fn insert(&mut self, key: Key, minute: u32) {
        if self.hot[shard_of(key)].insert(key, minute).is_none() {
            self.hot_len += 1;
        }
        self.hot_max_minute = self.hot_max_minute.max(minute);
        if self.hot_len >= self.freeze_at {
            self.freeze();
        }
    }

    /// Hands the hot tables to the freezer thread, after waiting for the previous freeze.
    fn freeze(&mut self) {
        if self.no_background {
            return;
        }
        if self.freezing.is_some() {
            let t = Instant::now();
            while self.freezing.is_some() {
                if !self.wait_one() {
                    break;
                }
            }
            self.stats.freeze_waits += 1;
            self.stats.freeze_wait += t.elapsed();
            metrics::counter!("livora_log_dedupe_freeze_waits_total").increment(1);
            metrics::histogram!("livora_log_dedupe_freeze_wait_seconds")
                .record(t.elapsed().as_secs_f64());
        }
        if self.background.is_none() {
            match Background::spawn(&self.dir) {
                Ok(b) => self.background = Some(b),
                Err(e) => {
                    tracing::error!(error = %e, "dedupe threads not started: ids stay in memory");
                    self.no_background = true;
                    return;
                }
            }
        }
        let started = Instant::now();
        let id = self.next_id;
        self.next_id += 1;
        let frozen = Arc::new(Frozen {
            id,
            shards: std::mem::replace(&mut self.hot, new_shards()),
            len: std::mem::take(&mut self.hot_len),
            max_minute: std::mem::take(&mut self.hot_max_minute),
        });
        self.frozen.push(frozen.clone());
        let sent = self
            .background
            .as_ref()
            .and_then(|b| b.freeze_tx.as_ref())
            .is_some_and(|tx| tx.send(FreezeMsg::Freeze(frozen)).is_ok());
        if sent {
            self.freezing = Some(id);
            self.stats.freezes += 1;
        } else {
            tracing::error!("dedupe freezer thread gone: ids stay in memory");
        }
        self.stats.worst_handover = self.stats.worst_handover.max(started.elapsed());
    }

    /// Waits for one background result and applies it; `false` if the threads are gone.
    fn wait_one(&mut self) -> bool {
        let done = match &self.background {
            Some(b) => b.done_rx.recv(),
            None => return false,
        };
        match done {
            Ok(done) => {
                self.apply(done);
                true
            }
            Err(_) => {
                // Both threads gone: nothing is in flight any more.
                self.freezing = None;
                self.merging = false;
                false
            }
        }
    }

    fn apply(&mut self, done: Done) {
        let started = Instant::now();
        self.apply_done(done);
        self.stats.worst_handover = self.stats.worst_handover.max(started.elapsed());
    }

    fn apply_done(&mut self, done: Done) {
        match done {
            Done::Frozen { id, result } => {
                if self.freezing == Some(id) {
                    self.freezing = None;
                }
                match result {
                    Ok(run) => {
                        self.runs.push(Arc::new(run));
                        if let Some(at) = self.frozen.iter().position(|f| f.id == id) {
                            let frozen = self.frozen.remove(at);
                            if let Some(tx) =
                                self.background.as_ref().and_then(|b| b.freeze_tx.as_ref())
                            {
                                // On failure the tables come back in the error and are freed here.
                                let _ = tx.send(FreezeMsg::Release(frozen));
                            }
                        }
                    }
                    Err(e) => {
                        metrics::counter!("livora_log_dedupe_run_errors_total").increment(1);
                        tracing::error!(error = %e, "dedupe run not written: its ids stay in memory");
                    }
                }
            }
            Done::Merged { inputs, result } => {
                self.merging = false;
                match result {
                    Ok(out) => {
                        let (gone, kept) = std::mem::take(&mut self.runs)
                            .into_iter()
                            .partition(|r| inputs.contains(&r.id));
                        self.runs = kept;
                        self.release(gone);
                        self.runs.extend(out.map(Arc::new));
                        self.stats.merges += 1;
                    }
                    Err(e) => {
                        self.merge_failed = Some(Instant::now());
                        metrics::counter!("livora_log_dedupe_run_errors_total").increment(1);
                        tracing::warn!(error = %e, "dedupe runs not merged: the inputs stay");
                    }
                }
            }
        }
        metrics::gauge!("livora_log_dedupe_runs").set(self.runs.len() as f64);
        self.maybe_merge();
    }

    /// Starts a merge when [`FANOUT`] runs share a size tier and none is running.
    fn maybe_merge(&mut self) {
        if self.merging || self.merge_failed.is_some_and(|t| t.elapsed() < MERGE_RETRY) {
            return;
        }
        let Some(tx) = self.background.as_ref().and_then(|b| b.merge_tx.as_ref()) else {
            return;
        };
        let base = self.freeze_at.max(1) as u64;
        let tier = |r: &Run| (r.count / base).max(1).ilog(FANOUT as u64);
        let mut tiers: Vec<u32> = self.runs.iter().map(|r| tier(r)).collect();
        tiers.sort_unstable();
        let Some(t) = tiers
            .chunk_by(|a, b| a == b)
            .find(|c| c.len() >= FANOUT)
            .map(|c| c[0])
        else {
            return;
        };
        let inputs: Vec<Arc<Run>> = self
            .runs
            .iter()
            .filter(|r| tier(r) == t)
            .take(FANOUT)
            .cloned()
            .collect();
        let job = MergeJob {
            id: self.next_id,
            inputs,
            minute: self.minute,
            window_minutes: self.window_minutes,
        };
        self.next_id += 1;
        if tx.send(MergeMsg::Merge(job)).is_ok() {
            self.merging = true;
        }
    }

    /// Hands runs no longer read to the merge thread to unmap.
    fn release(&self, runs: Vec<Arc<Run>>) {
        if runs.is_empty() {
            return;
        }
        if let Some(tx) = self.background.as_ref().and_then(|b| b.merge_tx.as_ref()) {
            // On failure the runs come back in the error and are unmapped here.
            let _ = tx.send(MergeMsg::Release(runs));
        }
    }

    /// Applies finished background work, and forgets keys older than the window at most
    /// every ten minutes. Called by the writer before each group.
    pub fn tick(&mut self, minute: u32) {
        self.minute = self.minute.max(minute);
        while let Some(done) = self
            .background
            .as_ref()
            .and_then(|b| b.done_rx.try_recv().ok())
        {
            self.apply(done);
        }
        if minute < self.last_sweep + SWEEP_EVERY_MINUTES {
            return;
        }
        self.last_sweep = minute;
        let window = u64::from(self.window_minutes);
        let live = |m: u32| u64::from(m) + window >= u64::from(minute);
        for shard in &mut self.hot {
            shard.retain(|_, m| live(*m));
        }
        self.hot_len = self.hot.iter().map(HashMap::len).sum();
        let freezing = self.freezing;
        self.frozen
            .retain(|f| Some(f.id) == freezing || live(f.max_minute));
        let (kept, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut self.runs)
            .into_iter()
            .partition(|r| live(r.max_minute));
        self.runs = kept;
        for r in &expired {
            let _ = std::fs::remove_file(&r.path);
        }
        self.release(expired);
        metrics::gauge!("livora_log_dedupe_runs").set(self.runs.len() as f64);
        self.maybe_merge();
    }

    /// Ids in the index, in memory and in runs (a key may be counted twice across runs).
    pub fn len(&self) -> usize {
        self.in_memory_ids() + self.runs.iter().map(|r| r.count as usize).sum::<usize>()
    }

    /// Ids held in memory: the hot tables and the frozen ones.
    pub fn in_memory_ids(&self) -> usize {
        self.hot_len + self.frozen.iter().map(|f| f.len).sum::<usize>()
    }

    /// Heap bytes of the tables (hot and frozen).
    pub fn heap_bytes(&self) -> usize {
        let tables = |t: &[HashMap<Key, u32, KeyHasher>]| {
            t.iter().map(HashMap::allocation_size).sum::<usize>()
        };
        tables(&self.hot) + self.frozen.iter().map(|f| tables(&f.shards)).sum::<usize>()
    }

    /// The most ids [`Self::in_memory_ids`] reaches while every run is written.
    #[cfg(test)]
    pub fn cap(&self) -> usize {
        self.freeze_at * 2
    }

    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    pub fn run_bytes(&self) -> usize {
        self.runs.iter().map(|r| r.file_len()).sum()
    }

    #[cfg(test)]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Waits until no freeze or merge is running (and no merge is due).
    #[cfg(test)]
    pub fn settle(&mut self) {
        while (self.freezing.is_some() || self.merging) && self.wait_one() {}
    }
}

/// Rebuilds the index from the records of the last window, freezing runs as it goes.
pub(crate) fn rebuild(shared: &Shared) -> Result<DedupeIndex, Error> {
    let opts = &shared.opts;
    let window = opts.dedupe_window;
    let mut index = DedupeIndex::new(window, opts.dedupe_memory_bytes, &opts.dir.join("dedupe"))?;
    let now = now_us();
    let from_us = now - window.as_micros() as i64;
    let cutoff = SystemTime::now().checked_sub(window).unwrap_or(UNIX_EPOCH);
    let end = shared
        .durable_end
        .load(std::sync::atomic::Ordering::Acquire);
    for (_, path) in shared.segments.snapshot() {
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(Error::io(&path))?;
        if modified < cutoff {
            continue;
        }
        crate::reader::for_each_in_file(&path, end, |r: &format::RecordRef<'_>| {
            if r.appended_at_us >= from_us {
                index.insert(key(&r.tenant, r.id), minute_of_us(r.appended_at_us));
            }
        })?;
    }
    index.tick(minute_of_us(now));
    tracing::info!(
        ids = index.len(),
        in_memory = index.in_memory_ids(),
        heap_bytes = index.heap_bytes(),
        runs = index.runs(),
        run_bytes = index.run_bytes(),
        "dedupe index rebuilt from the log"
    );
    Ok(index)
}

#[cfg(test)]
mod tests;
