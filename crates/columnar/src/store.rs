//! The column store as a consumer of the event log.
//!
//! Events land in each tenant's hot, in-memory part. When the hot part reaches
//! [`ColumnOptions::seal_rows`] rows (all tenants together), or its oldest row has waited
//! [`ColumnOptions::seal_interval`], the follower seals it: between two batches it puts the
//! hot rows in segment order (UTC day, person, time) and notes the log offset they reach;
//! then, on a task of its own while the follower goes on applying, they are written as one
//! Parquet file per tenant and day plus a persons snapshot, then the manifest (with that
//! offset), and marked sealed. When that task has finished, the follower commits the
//! `columnar` consumer's offset so the log may drop what is sealed. One seal runs at a time;
//! rows applied meanwhile stay hot for the next. Encoding copies the rows a piece at a time
//! under the table's read lock and compresses outside it, so appends and queries wait
//! milliseconds, not the whole seal.
//!
//! On start, the manifest's segments are loaded (not rebuilt from the log) and the follower
//! resumes from the manifest's offset. The Parquet segments are the source of truth; the
//! query cache is built from them at start: the kernels read one set of columns whether a row
//! is hot or sealed, and skip sealed chunks outside a query's time range by their statistics.
//! Large columns live in memory-mapped spill files ([`ColumnOptions::spill`]), whose pages
//! [`ColumnStore::trim`] drops to keep the process under [`ColumnOptions::memory_limit`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use livora_log::{Consumer, EventLog, Record};
use livora_model::TenantId;

use crate::Error;
use crate::column::Spill;
use crate::image;
use crate::segment;
use crate::storage::{self, Manifest, SegmentMeta, SegmentStore, TenantManifest};
use crate::table::Table;

/// How often [`ColumnStore::watch_memory`] checks the process's resident size.
pub const WATCH_EVERY: Duration = Duration::from_millis(50);
/// How often while a query holds a [`Reservation`]: a scan faults in file pages at 1-2 GB/s
/// here, so 50 ms between checks let a query take the process ~60 MB over the limit.
pub const WATCH_QUERIES_EVERY: Duration = Duration::from_millis(10);

/// The log consumer name whose committed offset holds log retention back until sealed.
pub const CONSUMER: &str = "columnar";

/// How and when the column store seals.
#[derive(Debug, Clone)]
pub struct ColumnOptions {
    /// Where sealed segments go; `None` keeps everything in memory (rebuilt from the log
    /// on every start, so history is bounded by log retention).
    pub segments: Option<SegmentStore>,
    /// Seal when this many rows are hot, across tenants.
    pub seal_rows: usize,
    /// Seal when the oldest hot row has waited this long.
    pub seal_interval: Duration,
    /// After a seal, the files of one tenant's UTC day are merged into one once there are
    /// this many (small seals and late events add files to a day).
    pub compact_files: usize,
    /// Where large columns go (memory-mapped scratch files; see [`Spill`]); `None` keeps
    /// every column on the heap.
    pub spill: Option<Arc<Spill>>,
    /// The process's resident size the store keeps under by dropping the pages of its
    /// spilled columns (they stay in the page cache and on disk; queries read them back).
    /// `None`: no limit. The heap part (hot columns under the spill threshold, dictionaries,
    /// persons) is not evictable: a limit below it only logs a warning.
    pub memory_limit: Option<u64>,
}

impl Default for ColumnOptions {
    fn default() -> Self {
        Self {
            segments: None,
            seal_rows: 1_000_000,
            seal_interval: Duration::from_secs(300),
            compact_files: 8,
            spill: None,
            memory_limit: None,
        }
    }
}

/// Every tenant's table, fed from the log.
pub struct ColumnStore {
    tables: RwLock<HashMap<TenantId, Arc<RwLock<Table>>>>,
    /// One past the last log offset applied.
    applied: AtomicU64,
    opts: ColumnOptions,
    /// What is sealed (the follower is its only writer).
    manifest: Mutex<Manifest>,
    /// When the hot part got its first row since the last seal.
    hot_since: Mutex<Option<Instant>>,
    /// Per-tenant retention in days ([`ColumnStore::set_retention`]).
    retention: Mutex<HashMap<TenantId, u32>>,
    /// A retention changed: expire at the follower's next turn.
    expire_due: std::sync::atomic::AtomicBool,
    /// What [`ColumnStore::trim`] remembers between calls.
    trim_state: Mutex<TrimState>,
    /// Rows the last open took from the tables' images instead of their segments.
    from_image: AtomicU64,
}

/// [`ColumnStore::trim`]'s memory: when it last warned, and when it may evict again after an
/// eviction that could not bring the process under the limit; and the heap the running
/// queries reserved ([`ColumnStore::reserve`]).
#[derive(Debug, Default)]
struct TrimState {
    warned: Option<Instant>,
    backoff_until: Option<Instant>,
    /// Evictions so far.
    evictions: u64,
    /// Bytes of heap the running queries said they would take, and how many hold some.
    reserved: u64,
    queries: usize,
    /// The process's anonymous resident bytes when the first of them started: what they
    /// have taken so far is the growth since, and only the rest still needs room.
    anon_at_start: u64,
}

impl TrimState {
    /// The reserved heap not allocated yet, with the process's anonymous resident bytes now.
    fn headroom(&self, anon: u64) -> u64 {
        self.reserved
            .saturating_sub(anon.saturating_sub(self.anon_at_start))
    }
}

/// Room made for a query's heap under the memory limit ([`ColumnStore::reserve`]), given back
/// when dropped.
#[must_use = "the room is given back when this is dropped"]
pub struct Reservation {
    store: Weak<ColumnStore>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // An empty reservation (no limit, or nothing asked for) was never counted.
        if self.bytes == 0 {
            return;
        }
        if let Some(store) = self.store.upgrade() {
            let mut state = lock(&store.trim_state);
            state.reserved = state.reserved.saturating_sub(self.bytes);
            state.queries = state.queries.saturating_sub(1);
        }
    }
}

impl Default for ColumnStore {
    fn default() -> Self {
        Self::with_options(ColumnOptions::default())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ColumnStore {
    /// A memory-only store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn with_options(opts: ColumnOptions) -> Self {
        Self {
            tables: RwLock::default(),
            applied: AtomicU64::new(0),
            opts,
            manifest: Mutex::default(),
            hot_since: Mutex::default(),
            retention: Mutex::default(),
            expire_due: std::sync::atomic::AtomicBool::new(false),
            trim_state: Mutex::default(),
            from_image: AtomicU64::new(0),
        }
    }

    /// Keeps `tenant`'s events for `days` (`None`: for ever). Sealed files whose newest event
    /// is older are deleted by the follower (at once after a change, then hourly), and the
    /// tenant's table is reloaded without them.
    pub fn set_retention(&self, tenant: TenantId, days: Option<u32>) {
        let mut r = lock(&self.retention);
        let changed = match days {
            Some(d) => r.insert(tenant, d) != Some(d),
            None => r.remove(&tenant).is_some(),
        };
        if changed {
            self.expire_due.store(true, Ordering::Release);
        }
    }

    /// Deletes the sealed files of every tenant with a retention whose newest event is older
    /// than it, and reloads those tenants' tables without them; returns how many files.
    /// Runs on the follower, between seals (the manifest's only writer): hot rows are sealed
    /// first, so the reloaded table holds every row that remains.
    pub async fn expire(
        &self,
        consumer: Option<&mut Consumer>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, Error> {
        let Some(segments) = self.opts.segments.clone() else {
            return Ok(0);
        };
        let retention = lock(&self.retention).clone();
        let cutoff = |days: u32| now.timestamp_micros() - i64::from(days) * 86_400_000_000;
        let expired = |m: &Manifest| {
            retention.iter().any(|(t, d)| {
                m.tenants
                    .get(&t.0)
                    .is_some_and(|tm| tm.segments.iter().any(|s| s.max_ts < cutoff(*d)))
            })
        };
        if !expired(&self.manifest()) {
            return Ok(0);
        }
        if self.hot_rows() > 0 {
            self.seal(consumer).await?;
        }
        let mut manifest = self.manifest();
        let mut gone = Vec::new();
        let mut reload = Vec::new();
        for (tenant, days) in &retention {
            if let Some(tm) = manifest.tenants.get_mut(&tenant.0) {
                let before = tm.segments.len();
                tm.segments.retain(|m| {
                    let keep = m.max_ts >= cutoff(*days);
                    if !keep {
                        gone.push(m.path.clone());
                    }
                    keep
                });
                if tm.segments.len() != before {
                    reload.push((*tenant, tm.clone()));
                }
            }
        }
        segments.put_manifest(&manifest).await?;
        *lock(&self.manifest) = manifest;
        for (tenant, tm) in reload {
            let table = Arc::new(RwLock::new(
                // Not from the image: the live table holds its files.
                load_tenant(
                    &segments,
                    tenant,
                    &tm,
                    self.opts.spill.clone(),
                    self.opts.memory_limit,
                    false,
                )
                .await?
                .0,
            ));
            let t2 = table.clone();
            tokio::task::spawn_blocking(move || extend_by_person(&t2))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?;
            self.tables
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tenant, table);
        }
        for p in &gone {
            if let Err(e) = segments.delete(p).await {
                tracing::warn!(path = %p, error = %e, "could not delete an expired segment");
            }
        }
        tracing::info!(
            files = gone.len(),
            "expired column segments past tenant retention"
        );
        Ok(gone.len())
    }

    /// Opens a store, loading what its segment store holds.
    pub async fn open(opts: ColumnOptions) -> Result<Arc<Self>, Error> {
        let store = Self::with_options(opts);
        let Some(segments) = store.opts.segments.clone() else {
            return Ok(Arc::new(store));
        };
        let Some(manifest) = segments.manifest().await? else {
            // No segments: whatever images the cache holds are of nothing (a store deleted
            // and started again must not find them matching its first segments' names).
            if let Some(spill) = store.opts.spill.as_ref().filter(|s| s.is_named()) {
                let swept =
                    image::remove_others(spill, &Default::default()).and_then(|()| spill.sweep());
                if let Err(e) = swept {
                    tracing::warn!(error = %e, "could not clear the column cache");
                }
            }
            return Ok(Arc::new(store));
        };
        let started = Instant::now();
        let mut rows = 0;
        for (tenant, tm) in &manifest.tenants {
            let (table, from_image) = load_tenant(
                &segments,
                TenantId(*tenant),
                tm,
                store.opts.spill.clone(),
                store.opts.memory_limit,
                true,
            )
            .await?;
            store
                .from_image
                .fetch_add(from_image as u64, Ordering::Relaxed);
            rows += table.len();
            store
                .tables
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(TenantId(*tenant), Arc::new(RwLock::new(table)));
            store.trim();
        }
        store.remove_orphans(&segments, &manifest).await;
        if let Some(spill) = store.opts.spill.as_ref().filter(|s| s.is_named()) {
            let tenants = manifest.tenants.keys().copied().collect();
            if let Err(e) = image::remove_others(spill, &tenants) {
                tracing::warn!(error = %e, "could not remove the images of tenants without segments");
            }
            match spill.sweep() {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "removed column files no image names"),
                Err(e) => tracing::warn!(error = %e, "could not sweep the column files"),
            }
        }
        tracing::info!(
            segments = %format!("{segments:?}"),
            offset = manifest.offset,
            rows,
            from_image = store.rows_from_image(),
            tenants = manifest.tenants.len(),
            ms = started.elapsed().as_millis() as u64,
            "column store loaded sealed segments"
        );
        store.applied.store(manifest.offset, Ordering::Release);
        *lock(&store.manifest) = manifest;
        Ok(Arc::new(store))
    }

    /// Deletes the segment and persons files the manifest does not name: what a seal or a
    /// compaction cut short (by a crash) wrote before its manifest, and deletions that failed.
    /// Other engines read the `events/` tree directly, so a leftover file would count its
    /// events twice there. Runs at open, before anything is sealed: this node is the only
    /// writer of its segment store. Failures are logged, not fatal.
    async fn remove_orphans(&self, segments: &SegmentStore, manifest: &Manifest) {
        let named: std::collections::HashSet<&str> = manifest
            .tenants
            .values()
            .flat_map(|tm| {
                tm.segments
                    .iter()
                    .map(|s| s.path.as_str())
                    .chain(std::iter::once(tm.persons.as_str()))
            })
            .collect();
        let mut removed = 0usize;
        for dir in ["events", "persons"] {
            let listed = match segments.list(dir).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, dir, "cannot list column segments to tidy");
                    continue;
                }
            };
            for path in listed.iter().filter(|p| !named.contains(p.as_str())) {
                match segments.delete(path).await {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(error = %e, path, "cannot delete an orphan segment"),
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed column segment files the manifest does not name (left by a crash)"
            );
        }
    }

    /// Applies records read from the log (in offset order), taking each tenant's lock once
    /// per run of its records.
    pub fn apply(&self, records: &[Record]) {
        let mut late = 0;
        for run in records.chunk_by(|a, b| a.tenant == b.tenant) {
            let table = self.table_or_new(TenantId(run[0].tenant));
            let mut t = table.write().unwrap_or_else(|e| e.into_inner());
            let late_before = t.late;
            for r in run {
                if let Err(e) = t.push_json(&r.payload) {
                    tracing::error!(offset = r.offset, error = %e, "undecodable event in the log");
                }
            }
            late += t.late - late_before;
            drop(t);
            if let Some(last) = run.last() {
                self.applied.store(last.offset + 1, Ordering::Release);
            }
        }
        if late > 0 {
            metrics::counter!("livora_columnar_late_events_total").increment(late);
        }
        if !records.is_empty() {
            lock(&self.hot_since).get_or_insert_with(Instant::now);
        }
    }

    /// Adds events that are not in the log (stored events' JSON) to `tenant`'s hot rows,
    /// for `livora demo generate --sealed`, which writes histories too large for the log
    /// straight into sealed segments. The applied offset does not move, so a seal records
    /// the same log offset as before: the log's records after it are still applied.
    pub fn import(&self, tenant: TenantId, events: &[Vec<u8>]) -> Result<(), Error> {
        let table = self.table_or_new(tenant);
        let mut t = table.write().unwrap_or_else(|e| e.into_inner());
        for (i, json) in events.iter().enumerate() {
            t.push_json(json)
                .map_err(|e| Error::Segment(format!("imported event {i}: {e}")))?;
        }
        Ok(())
    }

    /// The tenant's table, made (empty) if it has none yet.
    fn table_or_new(&self, tenant: TenantId) -> Arc<RwLock<Table>> {
        self.table(tenant).unwrap_or_else(|| {
            self.tables
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(tenant)
                .or_insert_with(|| {
                    Arc::new(RwLock::new(Table::with_spill(self.opts.spill.clone())))
                })
                .clone()
        })
    }

    /// One past the last log offset applied: a query sees every event below it.
    /// Rows [`ColumnStore::open`] read from the tables' images (see [`image`]) rather than
    /// decoding their segments.
    pub fn rows_from_image(&self) -> u64 {
        self.from_image.load(Ordering::Relaxed)
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The log offset below which everything is sealed (0 for a memory-only store).
    pub fn sealed_offset(&self) -> u64 {
        lock(&self.manifest).offset
    }

    /// A copy of the manifest (what is sealed).
    pub fn manifest(&self) -> Manifest {
        lock(&self.manifest).clone()
    }

    /// The tenant's table, if it has events.
    pub fn table(&self, tenant: TenantId) -> Option<Arc<RwLock<Table>>> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .cloned()
    }

    fn all_tables(&self) -> Vec<(TenantId, Arc<RwLock<Table>>)> {
        let mut v: Vec<_> = self
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        v.sort_by_key(|(k, _)| k.0);
        v
    }

    /// Rows not yet sealed, across tenants.
    pub fn hot_rows(&self) -> usize {
        self.all_tables()
            .iter()
            .map(|(_, t)| Self::read(t).hot_len())
            .sum()
    }

    fn seal_due(&self) -> bool {
        if self.opts.segments.is_none() {
            return false;
        }
        let hot = self.hot_rows();
        hot > 0
            && (hot >= self.opts.seal_rows
                || lock(&self.hot_since).is_some_and(|t| t.elapsed() >= self.opts.seal_interval))
    }

    /// Seals every tenant's hot rows (see the module doc) and commits `consumer` to the
    /// sealed offset. Must not run concurrently with [`ColumnStore::apply`] or another seal:
    /// the follower calls them. Returns the number of rows sealed.
    pub async fn seal(&self, consumer: Option<&mut Consumer>) -> Result<usize, Error> {
        let Some(job) = self.begin_seal() else {
            return Ok(0);
        };
        let (rows, offset) = self.write_seal(job).await?;
        if let Some(c) = consumer {
            c.commit(offset)?;
        }
        Ok(rows)
    }

    /// The first, quick part of a seal, on the follower between two batches: puts each
    /// tenant's hot rows in segment order and notes the log offset they reach. `None` when
    /// segments are not kept.
    fn begin_seal(&self) -> Option<SealJob> {
        self.opts.segments.as_ref()?;
        let offset = self.applied();
        let seq = lock(&self.manifest).seq + 1;
        let since = lock(&self.hot_since).take();
        let mut tenants = Vec::new();
        for (tenant, table) in self.all_tables() {
            let mut t = table.write().unwrap_or_else(|e| e.into_inner());
            if t.hot_len() == 0 {
                continue;
            }
            let days = t.order_hot();
            let late = t.late;
            drop(t);
            tenants.push(SealTenant {
                tenant,
                table,
                days,
                late,
            });
        }
        Some(SealJob {
            offset,
            seq,
            since,
            tenants,
        })
    }

    /// The rest of a seal: encodes and writes the files, then the manifest, marks the rows
    /// sealed and extends the person-ordered projection. It can run beside the follower,
    /// which goes on applying (rows it appends are past the ones sealed; encoding takes the
    /// read lock a piece at a time). Returns the rows sealed and the offset to commit.
    async fn write_seal(&self, job: SealJob) -> Result<(usize, u64), Error> {
        let since = job.since;
        let result = self.write_seal_inner(job).await;
        if result.is_err() {
            // The rows stay hot (and in the log): the next seal takes them again.
            let mut hot = lock(&self.hot_since);
            *hot = since.or(*hot).or_else(|| Some(Instant::now()));
        }
        result
    }

    async fn write_seal_inner(&self, job: SealJob) -> Result<(usize, u64), Error> {
        let Some(segments) = self.opts.segments.clone() else {
            return Ok((0, job.offset));
        };
        let started = Instant::now();
        let seq = job.seq;
        let mut manifest = self.manifest();
        let mut sealed_rows = 0;
        let mut staged = Vec::new();
        let mut old_persons = Vec::new();
        for st in job.tenants {
            let (table, days) = (st.table.clone(), st.days.clone());
            let tenant = st.tenant;
            let encoded =
                tokio::task::spawn_blocking(move || encode_days(&table, tenant, seq, &days))
                    .await
                    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
            let mut files = Vec::with_capacity(encoded.files.len());
            for (meta, bytes) in encoded.files {
                segments.put(&meta.path, bytes).await?;
                sealed_rows += meta.rows as usize;
                files.push(meta);
            }
            let persons_path = storage::persons_path(tenant.0, seq);
            segments.put(&persons_path, encoded.persons).await?;
            let tm = manifest.tenants.entry(tenant.0).or_default();
            if !tm.persons.is_empty() {
                old_persons.push(std::mem::take(&mut tm.persons));
            }
            tm.persons = persons_path;
            tm.person_count = encoded.person_count;
            tm.late_events = st.late;
            let sources: Vec<image::Source> = files.iter().map(image::Source::from).collect();
            tm.segments.extend(files);
            staged.push((tenant, st.table, st.days, sources));
        }
        manifest.offset = job.offset;
        manifest.seq = seq;
        segments.put_manifest(&manifest).await?;
        // Durable: now the rows count as sealed, and the log may let them go.
        let mut sealed_tables = Vec::with_capacity(staged.len());
        for (tenant, table, days, sources) in staged {
            let mut t = table.write().unwrap_or_else(|e| e.into_inner());
            t.mark_sealed(&days);
            t.sources.extend(sources);
            drop(t);
            sealed_tables.push((tenant, table));
        }
        *lock(&self.manifest) = manifest;
        // The person-ordered projection takes in the new rows: built beside queries, swapped
        // in; then the image names the new rows.
        for (tenant, table) in sealed_tables {
            let t2 = table.clone();
            tokio::task::spawn_blocking(move || extend_by_person(&t2))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?;
            write_image(table, tenant, self.opts.spill.clone()).await;
        }
        for p in old_persons {
            if let Err(e) = segments.delete(&p).await {
                tracing::warn!(path = %p, error = %e, "could not delete an old persons snapshot");
            }
        }
        metrics::counter!("livora_columnar_sealed_rows_total").increment(sealed_rows as u64);
        tracing::info!(
            rows = sealed_rows,
            offset = job.offset,
            seq,
            ms = started.elapsed().as_millis() as u64,
            "sealed column segments"
        );
        Ok((sealed_rows, job.offset))
    }

    /// Merges the files of one tenant's UTC day, once it has at least `min_files`, into one
    /// file sorted by (person, time); returns how many files were merged (0: no day has
    /// that many). Crash-safe as a seal is: the merged file is written first, then the
    /// manifest naming it instead of the files it replaces (one atomic put), and only then
    /// are those deleted. A crash before the manifest leaves an unnamed file; after it,
    /// unnamed old files; neither is ever loaded, so no row is lost or doubled. The tables in
    /// memory do not change (the same rows, already sealed). Must not run beside a seal or
    /// an expiry: the follower's seal task runs it after its seal.
    pub async fn compact(&self, min_files: usize) -> Result<usize, Error> {
        const DAY: i64 = 86_400_000_000;
        let Some(segments) = self.opts.segments.clone() else {
            return Ok(0);
        };
        let mut manifest = self.manifest();
        let pick = manifest.tenants.iter().find_map(|(tenant, tm)| {
            let mut days: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
            for (i, m) in tm.segments.iter().enumerate() {
                days.entry(m.min_ts.div_euclid(DAY)).or_default().push(i);
            }
            days.into_iter()
                .find(|(_, files)| files.len() >= min_files.max(2))
                .map(|(day, files)| (*tenant, day, files))
        });
        let Some((tenant, day, files)) = pick else {
            return Ok(0);
        };
        let started = Instant::now();
        let tm = &manifest.tenants[&tenant];
        let persons = segments.get(&tm.persons).await?;
        let mut parts = Vec::with_capacity(files.len());
        for &i in &files {
            let meta = tm.segments[i].clone();
            parts.push((segments.get(&meta.path).await?, meta));
        }
        let seq = manifest.seq + 1;
        let persons_path = tm.persons.clone();
        let spill = self.opts.spill.clone();
        let merged = tokio::task::spawn_blocking(move || -> Result<(SegmentMeta, Bytes), Error> {
            let mut t = Table {
                persons: segment::decode_persons(persons).map_err(|e| e.in_file(&persons_path))?,
                ..Table::with_spill(spill)
            };
            for (bytes, meta) in parts {
                let n = segment::decode_events(bytes, &mut t).map_err(|e| e.in_file(&meta.path))?;
                if n as u64 != meta.rows {
                    return Err(Error::Segment(format!(
                        "{}: {n} rows, the manifest says {}",
                        meta.path, meta.rows
                    )));
                }
            }
            let ranges = t.order_hot();
            if ranges.len() != 1 {
                return Err(Error::Segment(format!(
                    "files of one day hold {} days",
                    ranges.len()
                )));
            }
            let bytes = segment::encode_events(&t, 0..t.len())?;
            let (min_ts, max_ts) =
                t.ts.iter()
                    .fold((i64::MAX, i64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            let meta = SegmentMeta {
                path: storage::events_path(tenant, day * DAY, seq, 0),
                rows: t.len() as u64,
                bytes: bytes.len() as u64,
                min_ts,
                max_ts,
            };
            Ok((meta, Bytes::from(bytes)))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        let (meta, bytes) = merged;
        segments.put(&meta.path, bytes).await?;
        let tm = manifest.tenants.entry(tenant).or_default();
        let old: Vec<String> = files.iter().map(|&i| tm.segments[i].path.clone()).collect();
        // The merged file takes the place of the first it replaces (the load order).
        let first = files[0];
        let mut kept = Vec::with_capacity(tm.segments.len() + 1 - files.len());
        for (i, m) in std::mem::take(&mut tm.segments).into_iter().enumerate() {
            if i == first {
                kept.push(meta.clone());
            } else if !files.contains(&i) {
                kept.push(m);
            }
        }
        tm.segments = kept;
        manifest.seq = seq;
        segments.put_manifest(&manifest).await?;
        *lock(&self.manifest) = manifest;
        // The rows of the files merged are where they were in the table: its image now
        // names them by the merged file (one source per part), so a restart still maps them.
        if let Some(table) = self.table(TenantId(tenant)) {
            for s in &mut table.write().unwrap_or_else(|e| e.into_inner()).sources {
                if old.contains(&s.path) {
                    s.path = meta.path.clone();
                }
            }
            write_image(table, TenantId(tenant), self.opts.spill.clone()).await;
        }
        for p in &old {
            if let Err(e) = segments.delete(p).await {
                tracing::warn!(path = %p, error = %e, "could not delete a compacted segment");
            }
        }
        metrics::counter!("livora_columnar_compacted_files_total").increment(old.len() as u64);
        tracing::info!(
            files = old.len(),
            rows = meta.rows,
            path = %meta.path,
            ms = started.elapsed().as_millis() as u64,
            "compacted column segments"
        );
        Ok(old.len())
    }

    /// Follows the log until the task is dropped: from the sealed offset (holding log
    /// retention back through the `columnar` consumer) when segments are kept, else from
    /// offset 0 with a plain reader (the memory-only store is rebuilt on every start).
    pub async fn follow(self: Arc<Self>, log: EventLog) {
        if let Err(e) = self.clone().follow_inner(log).await {
            tracing::error!(error = %e, "column store stopped following the log");
        }
    }

    async fn follow_inner(self: Arc<Self>, log: EventLog) -> Result<(), Error> {
        let durable = self.opts.segments.is_some();
        let mut consumer = if durable {
            Some(log.consumer(CONSUMER)?)
        } else {
            None
        };
        let start = self.sealed_offset();
        if start > log.end_offset() {
            return Err(Error::Segment(format!(
                "the sealed segments reach log offset {start} but the log ends at {}: \
                 the log was replaced; move the segments away or restore the log",
                log.end_offset()
            )));
        }
        // A seal's offset is committed by the follower after the seal ends: a stop in between
        // leaves the consumer behind the manifest, which is durable; catch up now.
        if let Some(c) = consumer.as_mut()
            && c.committed() < start
        {
            c.commit(start)?;
        }
        let mut reader = log.reader(start)?;
        if reader.position() > start {
            tracing::warn!(
                from = start,
                to = reader.position(),
                "events were dropped by log retention before they were sealed"
            );
        }
        let _watch = self.watch_memory();
        let mut changes = log.subscribe();
        let mut last_expiry = Instant::now();
        let mut last_trim = Instant::now();
        // The seal running beside the follower, if any, and when the next may start.
        let mut sealing: Option<tokio::task::JoinHandle<Result<(usize, u64), Error>>> = None;
        let mut next_seal = Instant::now();
        loop {
            let batch = match reader.next_batch(10_000) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "column store read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                // Idle: wait for new records, or for the seal in flight to end (its offset is
                // committed at once).
                let wait = tokio::time::timeout(Duration::from_secs(1), changes.changed());
                let ended = match sealing.as_mut() {
                    Some(running) => tokio::select! {
                        done = running => Some(done),
                        _ = wait => None,
                    },
                    None => {
                        let _ = wait.await;
                        None
                    }
                };
                if let Some(done) = ended {
                    sealing = None;
                    if !sealed(done, consumer.as_mut()) {
                        next_seal = Instant::now() + Duration::from_secs(5);
                    }
                }
            } else {
                let store = self.clone();
                let _ = tokio::task::spawn_blocking(move || store.apply(&batch)).await;
            }
            if sealing.as_ref().is_some_and(|h| h.is_finished())
                && let Some(done) = sealing.take()
                && !sealed(done.await, consumer.as_mut())
            {
                next_seal = Instant::now() + Duration::from_secs(5);
            }
            if sealing.is_none()
                && Instant::now() >= next_seal
                && self.seal_due()
                && let Some(job) = self.begin_seal()
            {
                let store = self.clone();
                sealing = Some(tokio::spawn(async move {
                    let sealed = store.write_seal(job).await?;
                    // Compaction writes the manifest too: it runs here, after the seal and
                    // before the next, so the manifest has one writer at a time.
                    let min_files = store.opts.compact_files.max(2);
                    loop {
                        match store.compact(min_files).await {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "compacting column segments failed");
                                break;
                            }
                        }
                    }
                    Ok(sealed)
                }));
            }
            if last_trim.elapsed() >= Duration::from_millis(250) {
                last_trim = Instant::now();
                self.trim();
            }
            if self.expire_due.swap(false, Ordering::AcqRel)
                || last_expiry.elapsed() >= Duration::from_secs(3600)
            {
                last_expiry = Instant::now();
                // Expiry seals and rewrites the manifest itself: the seal in flight ends first.
                if let Some(done) = sealing.take() {
                    sealed(done.await, consumer.as_mut());
                }
                if let Err(e) = self.expire(consumer.as_mut(), chrono::Utc::now()).await {
                    tracing::error!(error = %e, "expiring column segments failed");
                    self.expire_due.store(true, Ordering::Release);
                }
            }
        }
    }

    /// With a memory limit, starts a thread that calls [`ColumnStore::trim`] every
    /// [`WATCH_EVERY`] (every [`WATCH_QUERIES_EVERY`] while a query runs), so the pages a long
    /// query reads are given back while it runs rather than at the follower's next turn
    /// (which waits for a batch to apply, or up to a second when idle): at 100 M events a query peaked 1.3-2.6 GB over a 2.5 GB limit without it.
    /// The thread ends once the store is dropped. `None` without a limit.
    pub fn watch_memory(self: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        self.opts.memory_limit?;
        self.opts.spill.as_ref()?;
        let store = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("livora-columns-trim".into())
            .spawn(move || {
                let mut every = WATCH_EVERY;
                loop {
                    std::thread::sleep(every);
                    let Some(store) = store.upgrade() else {
                        return;
                    };
                    store.trim();
                    every = if lock(&store.trim_state).queries > 0 {
                        WATCH_QUERIES_EVERY
                    } else {
                        WATCH_EVERY
                    };
                }
            });
        match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the column store's memory watch");
                None
            }
        }
    }

    /// Makes room under [`ColumnOptions::memory_limit`] for `bytes` of heap a query is about
    /// to take (its per-person state and partial results, which no eviction can reach; see
    /// `livora_analytics::Query::heap_estimate`): evicts now if the process plus what the
    /// query will allocate is over the limit, and until the returned reservation is dropped
    /// [`ColumnStore::trim`] keeps the part not allocated yet free. Without a limit it does
    /// nothing. At 100 M events the queries' heap took the process 140-280 MB over a
    /// 2.5 GB limit before this: the watch can only evict after the fact, 50 ms late.
    ///
    /// Call it holding no table's lock: an eviction read-locks every table.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let store = Arc::downgrade(self);
        if self.opts.memory_limit.is_none() || self.opts.spill.is_none() || bytes == 0 {
            return Reservation { store, bytes: 0 };
        }
        {
            let mut state = lock(&self.trim_state);
            if state.queries == 0 {
                state.reserved = 0;
                state.anon_at_start = resident().map_or(0, |r| r.anon);
            }
            state.queries += 1;
            state.reserved += bytes;
        }
        let reservation = Reservation { store, bytes };
        self.trim();
        reservation
    }

    /// Keeps the process under [`ColumnOptions::memory_limit`]: when its resident size is
    /// over, drops the resident pages of every spilled column (all tenants; the next query
    /// faults back what it reads, from the page cache while the kernel keeps it). Returns
    /// whether it evicted. [`ColumnStore::watch_memory`] calls it every 50 ms (10 while a
    /// query runs) and the follower every quarter second (which also sets the
    /// `livora_columnar_rows` and `livora_columnar_mapped_bytes` gauges). While queries hold
    /// [reservations](ColumnStore::reserve), "over" counts the part of them not allocated yet
    /// and a 32nd of the limit for the pages a query faults in before the next check.
    ///
    /// When an eviction leaves the process over the limit (the heap alone is over it), the
    /// next waits five seconds: evicting again at once would only make queries read their
    /// pages back over and over.
    pub fn trim(&self) -> bool {
        let rows: usize = self
            .all_tables()
            .iter()
            .map(|(_, t)| Self::read(t).len())
            .sum();
        metrics::gauge!("livora_columnar_rows").set(rows as f64);
        let Some(spill) = &self.opts.spill else {
            return false;
        };
        metrics::gauge!("livora_columnar_mapped_bytes").set(spill.mapped_bytes() as f64);
        let Some(limit) = self.opts.memory_limit else {
            return false;
        };
        let Some(now) = resident() else {
            return false;
        };
        let mut state = lock(&self.trim_state);
        // While a query runs, also the pages it may fault in before the next check
        // ([`WATCH_QUERIES_EVERY`]): a 32nd of the limit.
        let faulting = if state.queries > 0 { limit / 32 } else { 0 };
        let before = now.total + state.headroom(now.anon) + faulting;
        if before <= limit || state.backoff_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        for (_, table) in self.all_tables() {
            Self::read(&table).evict();
        }
        state.evictions += 1;
        metrics::counter!("livora_columnar_evictions_total").increment(1);
        // Over with every spilled column evicted: the heap alone is over the limit. (Over
        // only with what queries reserved, the next checks evict what they read meanwhile.)
        let after = resident().map_or(now.total, |r| r.total);
        if after > limit {
            state.backoff_until = Some(Instant::now() + Duration::from_secs(5));
            if state
                .warned
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(600))
            {
                state.warned = Some(Instant::now());
                let heap: usize = self
                    .all_tables()
                    .iter()
                    .map(|(_, t)| Self::read(t).heap_bytes())
                    .sum();
                tracing::warn!(
                    limit_mb = limit >> 20,
                    resident_mb = after >> 20,
                    column_store_heap_mb = heap >> 20,
                    "the process stays over [analytics] memory_limit_mb with every spilled \
                     column evicted: the rest is heap (the column store's dictionaries, \
                     persons and hot rows, and the other services); raise the limit"
                );
            }
        } else {
            state.backoff_until = None;
            tracing::debug!(
                before_mb = before >> 20,
                after_mb = after >> 20,
                "evicted spilled columns to stay under memory_limit"
            );
        }
        true
    }

    /// Read access to a tenant's table (for tests and kernels).
    pub fn read(table: &RwLock<Table>) -> RwLockReadGuard<'_, Table> {
        table.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A seal begun by [`ColumnStore::begin_seal`].
struct SealJob {
    /// Every log record below it is in the rows being sealed.
    offset: u64,
    seq: u64,
    /// When the hot part got its first row, put back if the seal fails.
    since: Option<Instant>,
    tenants: Vec<SealTenant>,
}

struct SealTenant {
    tenant: TenantId,
    table: Arc<RwLock<Table>>,
    /// The hot rows in segment order, one range per UTC day.
    days: Vec<std::ops::Range<usize>>,
    /// Late events so far, as of the offset.
    late: u64,
}

/// Commits a finished background seal's offset; false if it failed.
fn sealed(
    done: Result<Result<(usize, u64), Error>, tokio::task::JoinError>,
    consumer: Option<&mut Consumer>,
) -> bool {
    match done {
        Ok(Ok((_, offset))) => {
            if let Some(c) = consumer
                && let Err(e) = c.commit(offset)
            {
                tracing::error!(error = %e, "committing the sealed offset failed");
            }
            true
        }
        Ok(Err(e)) => {
            // The rows stay hot and the log keeps them; the next attempt retries.
            tracing::error!(error = %e, "sealing column segments failed");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "the sealing task failed");
            false
        }
    }
}

struct Encoded {
    files: Vec<(SegmentMeta, Bytes)>,
    persons: Bytes,
    person_count: u64,
}

/// Encodes a tenant's ordered hot rows, one file per day, with a persons snapshot; reads the
/// table a piece at a time, so the follower appending to it is not held up.
fn encode_days(
    table: &RwLock<Table>,
    tenant: TenantId,
    seq: u64,
    days: &[std::ops::Range<usize>],
) -> Result<Encoded, Error> {
    let mut files = Vec::with_capacity(days.len());
    for (n, r) in days.iter().enumerate() {
        let bytes = segment::encode_events_shared(table, r.clone())?;
        let (min_ts, max_ts) = ColumnStore::read(table).ts[r.clone()]
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let day_start = min_ts.div_euclid(86_400_000_000) * 86_400_000_000;
        let meta = SegmentMeta {
            path: storage::events_path(tenant.0, day_start, seq, n),
            rows: r.len() as u64,
            bytes: bytes.len() as u64,
            min_ts,
            max_ts,
        };
        files.push((meta, Bytes::from(bytes)));
    }
    let (persons, person_count) = segment::encode_persons_shared(table)?;
    Ok(Encoded {
        files,
        persons: Bytes::from(persons),
        person_count,
    })
}

/// Extends the table's person-ordered projection to its sealed rows, reading under the read
/// lock and swapping under the write lock.
/// The process's resident set in bytes (Linux `/proc/self/status`, `VmRSS`), if readable.
pub fn resident_bytes() -> Option<u64> {
    resident().map(|r| r.total)
}

/// The process's resident bytes: all of them, and the anonymous part (the heap, as opposed
/// to mapped files).
#[derive(Debug, Clone, Copy)]
struct Resident {
    total: u64,
    anon: u64,
}

/// Linux `/proc/self/status` (`VmRSS`, `RssAnon`), if readable.
fn resident() -> Option<Resident> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    Some(Resident {
        total: kb("VmRSS:")? * 1024,
        anon: kb("RssAnon:").unwrap_or(0) * 1024,
    })
}

fn extend_by_person(table: &RwLock<Table>) {
    let extended = {
        let t = ColumnStore::read(table);
        t.by_person.extended(&t)
    };
    table.write().unwrap_or_else(|e| e.into_inner()).by_person = extended;
}

/// Writes the table's image (see [`image`]) when its spill directory names its files: taken
/// under the write lock, written without it.
async fn write_image(table: Arc<RwLock<Table>>, tenant: TenantId, spill: Option<Arc<Spill>>) {
    let Some(spill) = spill.filter(|s| s.is_named()) else {
        return;
    };
    let done = tokio::task::spawn_blocking(move || {
        let pending = image::collect(
            &mut table.write().unwrap_or_else(|e| e.into_inner()),
            tenant.0,
        );
        if let Some(w) = finish_image(pending, &spill, tenant) {
            table.write().unwrap_or_else(|e| e.into_inner()).image = w;
        }
    })
    .await;
    if let Err(e) = done {
        tracing::error!(error = %e, "the column image task failed");
    }
}

/// Writes what [`image::collect`] took and returns what the dictionary files now hold. A
/// failure withdraws the image (the next start decodes the segments) and is logged: the
/// image is a cache, the segments are already durable.
fn finish_image(
    pending: Result<image::Pending, image::ImageError>,
    spill: &Spill,
    tenant: TenantId,
) -> Option<image::Written> {
    let started = Instant::now();
    match pending.and_then(|p| image::finish(p, spill)) {
        Ok(w) => {
            tracing::debug!(tenant = %tenant.0, ms = started.elapsed().as_millis() as u64, "wrote the column image");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant.0, error = %e, "could not write the column image");
            image::remove(spill, tenant.0);
            None
        }
    }
}

/// Loads a tenant's sealed segments into a table: from its image (see [`image`]) for the
/// segments that holds when `use_image`, the rest from Parquet, then writes the image again.
/// With a memory limit, the columns spilled so
/// far are evicted whenever the process is over it after a segment (and after the projection
/// is built): the pages a load writes count as resident, so without this a restart over a
/// long history peaked far above the limit (8.4 GB under 2.5 GB at 100 M events).
async fn load_tenant(
    segments: &SegmentStore,
    tenant: TenantId,
    tm: &TenantManifest,
    spill: Option<Arc<Spill>>,
    memory_limit: Option<u64>,
    use_image: bool,
) -> Result<(Table, usize), Error> {
    let trim = |table: &Table| {
        if let (Some(limit), Some(_)) = (memory_limit, &table.spill)
            && resident_bytes().is_some_and(|r| r > limit)
        {
            table.evict();
        }
    };
    let persons = segments.get(&tm.persons).await?;
    let mut table = Table {
        persons: segment::decode_persons(persons).map_err(|e| e.in_file(&tm.persons))?,
        late: tm.late_events,
        ..Table::with_spill(spill.clone())
    };
    let named = spill.clone().filter(|s| s.is_named());
    let held = match (&named, use_image) {
        (Some(s), true) => image::load(s, tenant.0, &tm.segments, &mut table),
        (Some(s), false) => {
            image::remove(s, tenant.0);
            Vec::new()
        }
        _ => Vec::new(),
    };
    let from_image = table.sealed;
    trim(&table);
    let rest = tm
        .segments
        .iter()
        .enumerate()
        .filter(|(i, _)| !held.get(*i).copied().unwrap_or(false))
        .map(|(_, seg)| seg);
    for seg in rest {
        let bytes = segments.get(&seg.path).await?;
        let start = table.len();
        table = tokio::task::spawn_blocking(move || -> Result<Table, Error> {
            segment::decode_events(bytes, &mut table)?;
            Ok(table)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
        .map_err(|e| e.in_file(&seg.path))?;
        let rows = table.len() - start;
        if rows as u64 != seg.rows {
            return Err(Error::Segment(format!(
                "{}: {} rows, the manifest says {}",
                seg.path, rows, seg.rows
            )));
        }
        let loaded = start..table.len();
        table.mark_sealed(std::slice::from_ref(&loaded));
        table.sources.push(image::Source::from(seg));
        trim(&table);
    }
    let table = tokio::task::spawn_blocking(move || {
        table.by_person = table.by_person.extended(&table);
        if let Some(spill) = &named {
            let pending = image::collect(&mut table, tenant.0);
            if let Some(w) = finish_image(pending, spill, tenant) {
                table.image = w;
            }
        }
        table
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    trim(&table);
    Ok((table, from_image))
}

#[cfg(test)]
mod tests {
    use super::*;
    use livora_log::Uuid;
    use livora_model::PersonKey;
    use proptest::prelude::*;

    /// One event as the tests describe it: (user, anonymous, event, time in s, props).
    type Ev = (
        Option<String>,
        Option<String>,
        String,
        i64,
        Vec<(String, serde_json::Value)>,
    );

    fn record(offset: u64, tenant: Uuid, e: &Ev) -> Record {
        let (user, anon, name, secs, props) = e;
        let ts = chrono::DateTime::from_timestamp(*secs, 0).expect("time");
        let mut v = serde_json::json!({
            "type": if name == "$identify" { "identify" } else { "track" },
            "timestamp": ts.to_rfc3339(),
            "receivedAt": ts.to_rfc3339(),
            "messageId": format!("m{offset}"),
        });
        if name != "$identify" {
            v["event"] = name.clone().into();
        }
        let bag = if name == "$identify" {
            "traits"
        } else {
            "properties"
        };
        v[bag] = serde_json::Value::Object(props.iter().cloned().collect());
        if let Some(u) = user {
            v["userId"] = u.clone().into();
        }
        if let Some(a) = anon {
            v["anonymousId"] = a.clone().into();
        }
        Record {
            offset,
            appended_at_us: 0,
            tenant,
            id: format!("m{offset}"),
            payload: serde_json::to_vec(&v).expect("json"),
        }
    }

    /// Row `row`'s properties as `key=value`, sorted (strings quoted).
    fn props(t: &Table, row: usize) -> Vec<String> {
        let mut props: Vec<String> = Vec::new();
        for k in t.strings.keys() {
            if let Some(v) = t.str_at(*k, row) {
                props.push(format!("{}={v:?}", t.keys.value(*k).expect("key")));
            }
        }
        for k in t.numbers.keys() {
            if let Some(v) = t.num_at(*k, row) {
                props.push(format!("{}={v}", t.keys.value(*k).expect("key")));
            }
        }
        props.sort();
        props
    }

    /// Every row as (canonical person's sorted keys, ts, name, sorted properties): what must
    /// survive sealing, reordering and reloading.
    fn rows(t: &Table) -> Vec<(Vec<String>, i64, String, Vec<String>)> {
        let redirects = t.persons.redirects();
        let mut members: HashMap<u32, Vec<String>> = HashMap::new();
        for (id, root) in redirects.iter().enumerate() {
            let (user, key) = t.persons.describe(id as u32).expect("person");
            members.entry(*root).or_default().push(if user {
                PersonKey::user(key).into_string()
            } else {
                PersonKey::anonymous(key).into_string()
            });
        }
        for m in members.values_mut() {
            m.sort();
        }
        let mut out: Vec<_> = (0..t.len())
            .map(|row| {
                let props = props(t, row);
                let root = redirects[t.person[row] as usize];
                (
                    members[&root].clone(),
                    t.ts[row],
                    t.names.value(t.name[row]).expect("name").to_owned(),
                    props,
                )
            })
            .collect();
        out.sort();
        out
    }

    /// A store sealing into `dir`, whose columns past 256 bytes live in spill files (so the
    /// tests below run the mapped path through seals, compaction and reloads).
    fn sealed_store(dir: &std::path::Path) -> ColumnOptions {
        ColumnOptions {
            segments: Some(SegmentStore::local(dir).expect("store")),
            spill: Some(Spill::named(dir.join("cache"), 256).expect("spill")),
            ..ColumnOptions::default()
        }
    }

    fn check_segment_order(t: &Table) {
        for c in &t.chunks {
            let rows = c.rows.clone();
            assert!(
                rows.clone()
                    .zip(rows.clone().skip(1))
                    .all(|(a, b)| (t.person[a], t.ts[a]) <= (t.person[b], t.ts[b])),
                "a sealed chunk is sorted by (person, time)"
            );
            let day = |r: usize| t.ts[r].div_euclid(86_400_000_000);
            assert!(
                rows.clone().all(|r| day(r) == day(c.rows.start)),
                "one day per chunk"
            );
            assert!(
                rows.clone()
                    .all(|r| (c.min_ts..=c.max_ts).contains(&t.ts[r]))
            );
        }
    }

    fn ev(user: Option<&str>, anon: Option<&str>, name: &str, secs: i64) -> Ev {
        (
            user.map(str::to_owned),
            anon.map(str::to_owned),
            name.to_owned(),
            secs,
            vec![
                ("plan".into(), serde_json::json!("pro")),
                ("price".into(), serde_json::json!(secs as f64 / 7.0)),
            ],
        )
    }

    #[tokio::test]
    async fn a_store_over_its_memory_limit_evicts_spilled_columns_and_reads_them_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::from_u128(9);
        let records: Vec<_> = (0..5_000u64)
            .map(|i| {
                let who = format!("p{}", i % 97);
                let e = ev(
                    Some(&who),
                    None,
                    "Viewed",
                    86_400 * (i as i64 % 5) + i as i64,
                );
                record(i, tenant, &e)
            })
            .collect();
        let open = |limit: Option<u64>| {
            let mut opts = sealed_store(dir.path());
            opts.memory_limit = limit;
            ColumnStore::with_options(opts)
        };
        let store = open(Some(1));
        store.apply(&records[..3_000]);
        store.seal(None).await.expect("seal");
        store.apply(&records[3_000..]);
        let table = store.table(TenantId(tenant)).expect("table");
        let before = rows(&ColumnStore::read(&table));
        assert!(
            ColumnStore::read(&table).mapped_bytes() > 0,
            "columns spilled"
        );
        assert!(store.trim(), "a 1-byte limit is always exceeded: evict");
        assert_eq!(
            rows(&ColumnStore::read(&table)),
            before,
            "evicted columns read back the same, sealed and hot"
        );
        store.apply(&[record(5_000, tenant, &ev(Some("late"), None, "Viewed", 3))]);
        store.seal(None).await.expect("seal after eviction");
        assert_eq!(ColumnStore::read(&table).len(), 5_001);
        // Reopened under the same limit, the load evicts after every segment and the
        // projection; the columns it goes on appending to read back the same.
        let expected = rows(&ColumnStore::read(&table));
        drop((table, store));
        let mut opts = sealed_store(dir.path());
        opts.memory_limit = Some(1);
        let reopened = ColumnStore::open(opts).await.expect("reopen");
        let table = reopened.table(TenantId(tenant)).expect("table");
        assert_eq!(
            rows(&ColumnStore::read(&table)),
            expected,
            "a load evicting as it goes reads back what was sealed"
        );
        // No limit, or one far above the process: nothing to do.
        assert!(!open(None).trim());
        assert!(!open(Some(u64::MAX)).trim());
    }

    #[tokio::test]
    async fn a_query_reserving_more_than_the_limit_leaves_evicts_before_it_runs() {
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::from_u128(10);
        let records: Vec<_> = (0..3_000u64)
            .map(|i| {
                let who = format!("p{}", i % 97);
                record(i, tenant, &ev(Some(&who), None, "Viewed", i as i64))
            })
            .collect();
        let resident = resident_bytes().expect("/proc/self/status");
        let mut opts = sealed_store(dir.path());
        // Far above the process: only a reservation can bring it over.
        opts.memory_limit = Some(resident + (1 << 30));
        let store = Arc::new(ColumnStore::with_options(opts));
        store.apply(&records);
        store.seal(None).await.expect("seal");
        assert!(!store.trim(), "under the limit: nothing to evict");
        let small = store.reserve(1 << 20);
        assert!(!store.trim(), "a small query fits under the limit");
        assert_eq!(lock(&store.trim_state).reserved, 1 << 20);
        drop(store.reserve(0));
        assert_eq!(
            lock(&store.trim_state).queries,
            1,
            "an empty reservation was never counted, and is not taken off when dropped"
        );
        assert_eq!(lock(&store.trim_state).evictions, 0);
        let large = store.reserve(2 << 30);
        let state = lock(&store.trim_state);
        assert_eq!(
            state.evictions, 1,
            "2 GB reserved under a limit 1 GB above the process: evicted at once"
        );
        assert!(
            state.backoff_until.is_none(),
            "the process itself is under the limit: the next checks evict again"
        );
        drop(state);
        assert!(
            store.trim(),
            "the query's pages are evicted as it reads them"
        );
        drop((small, large));
        let state = lock(&store.trim_state);
        assert_eq!((state.reserved, state.queries), (0, 0), "given back");
        drop(state);
        // Without a limit a reservation is nothing.
        let unlimited = Arc::new(ColumnStore::with_options(sealed_store(dir.path())));
        let r = unlimited.reserve(u64::MAX);
        assert_eq!(lock(&unlimited.trim_state).reserved, 0);
        drop(r);
    }

    #[test]
    fn what_a_query_allocated_is_taken_off_its_reservation() {
        let state = TrimState {
            reserved: 100,
            queries: 1,
            anon_at_start: 1_000,
            ..TrimState::default()
        };
        assert_eq!(state.headroom(1_000), 100);
        assert_eq!(state.headroom(1_060), 40);
        assert_eq!(state.headroom(1_200), 0);
        assert_eq!(
            state.headroom(900),
            100,
            "the heap shrank meanwhile: all of it"
        );
    }

    #[tokio::test]
    async fn sealed_segments_reload_without_the_log_and_late_events_are_placed() {
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::from_u128(7);
        let day = 86_400;
        let store = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        let first = [
            ev(None, Some("anon-1"), "Viewed", 10 * day + 5),
            ev(Some("alice"), Some("anon-1"), "Signed Up", 11 * day + 1),
            ev(Some("bob"), None, "Viewed", 11 * day + 2),
            ev(Some("bob"), None, "Viewed", 10 * day + 9),
        ];
        let records: Vec<_> = first
            .iter()
            .enumerate()
            .map(|(i, e)| record(i as u64, tenant, e))
            .collect();
        store.apply(&records);
        assert_eq!(store.seal(None).await.expect("seal"), 4);
        let m = store.manifest();
        assert_eq!(m.offset, 4);
        assert_eq!(m.tenants[&tenant].segments.len(), 2, "one file per day");
        // A late event (day 10 < watermark day 11) and a merge of bob into alice.
        let late = ev(None, Some("anon-2"), "Viewed", 10 * day + 7);
        let mut merge = ev(Some("alice"), None, "$alias", 12 * day);
        merge.4.clear();
        let mut alias = record(5, tenant, &merge);
        alias.payload = serde_json::to_vec(&serde_json::json!({
            "type": "alias", "previousId": "bob", "userId": "alice",
            "timestamp": "1970-01-13T00:00:00Z", "receivedAt": "1970-01-13T00:00:00Z"
        }))
        .expect("json");
        store.apply(&[record(4, tenant, &late), alias]);
        let table = store.table(TenantId(tenant)).expect("table");
        assert_eq!(ColumnStore::read(&table).late, 1);
        let before = rows(&ColumnStore::read(&table));
        store.seal(None).await.expect("seal");
        let after_seal = rows(&ColumnStore::read(&table));
        assert_eq!(before, after_seal, "sealing only reorders");
        check_segment_order(&ColumnStore::read(&table));
        let day10: Vec<_> = store.manifest().tenants[&tenant]
            .segments
            .iter()
            .filter(|s| s.path.contains("date=1970-01-11"))
            .map(|s| s.rows)
            .collect();
        assert_eq!(
            day10,
            vec![2, 1],
            "the late event went to its own day's partition"
        );

        // A new store over the same directory: loaded from Parquet, nothing from a log.
        let again = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(again.applied(), 6, "resumes after the sealed offset");
        let t2 = again.table(TenantId(tenant)).expect("table");
        let t2 = ColumnStore::read(&t2);
        assert_eq!(rows(&t2), before);
        assert_eq!(t2.late, 1, "the late count survives");
        assert_eq!(t2.sealed, t2.len());
        check_segment_order(&t2);
        let r = t2.persons.redirects();
        let alice = t2.persons.get(true, "alice").expect("alice");
        let bob = t2.persons.get(true, "bob").expect("bob");
        assert_eq!(r[alice as usize], r[bob as usize], "merges survive");
        // Time statistics skip what a range cannot match.
        let ranges = t2.ranges_within(12 * day * 1_000_000, 13 * day * 1_000_000);
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 1);
    }

    /// A seal runs beside the follower: rows applied after it began (new persons, merges and
    /// late events among them) stay hot, queries see every row throughout, the manifest
    /// reaches only the offset the seal began at, and the next seal takes the rest.
    #[tokio::test]
    async fn rows_applied_during_a_seal_stay_hot_for_the_next() {
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::from_u128(11);
        let day = 86_400;
        let store = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        let first: Vec<_> = (0..50)
            .map(|i| {
                let user = format!("u{}", i % 7);
                record(
                    i,
                    tenant,
                    &ev(Some(&user), None, "Viewed", 3 * day + i as i64 * 600),
                )
            })
            .collect();
        store.apply(&first);
        let job = store.begin_seal().expect("a job");
        assert_eq!(job.offset, 50);
        // Applied while the seal is written: a new person, a merge, a late event.
        let mut during = vec![
            record(
                50,
                tenant,
                &ev(Some("new"), Some("anon-9"), "Signed Up", 4 * day),
            ),
            record(51, tenant, &ev(None, Some("anon-9"), "Viewed", 2 * day)),
        ];
        let mut alias = record(52, tenant, &ev(Some("u1"), None, "$alias", 4 * day + 5));
        alias.payload = serde_json::to_vec(&serde_json::json!({
            "type": "alias", "previousId": "u2", "userId": "u1",
            "timestamp": "1970-01-05T00:00:05Z", "receivedAt": "1970-01-05T00:00:05Z"
        }))
        .expect("json");
        during.push(alias);
        store.apply(&during);
        let table = store.table(TenantId(tenant)).expect("table");
        let all = rows(&ColumnStore::read(&table));
        let (n, offset) = store.write_seal(job).await.expect("seal");
        assert_eq!((n, offset), (50, 50));
        {
            let t = ColumnStore::read(&table);
            assert_eq!((t.sealed, t.len()), (50, 53), "the new rows stay hot");
            assert_eq!(rows(&t), all, "queries see every row");
            check_segment_order(&t);
        }
        assert_eq!(store.manifest().offset, 50);
        assert_eq!(store.hot_rows(), 3);
        assert_eq!(store.seal(None).await.expect("seal"), 3);
        assert_eq!(store.manifest().offset, 53);
        let again = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("reopen");
        let t2 = again.table(TenantId(tenant)).expect("table");
        let t2 = ColumnStore::read(&t2);
        assert_eq!(rows(&t2), all);
        let r = t2.persons.redirects();
        let (u1, u2) = (
            t2.persons.get(true, "u1").expect("u1"),
            t2.persons.get(true, "u2").expect("u2"),
        );
        assert_eq!(r[u1 as usize], r[u2 as usize], "the merge survives");
    }

    /// A damaged events file is an error that names it, not a panic or a shorter table.
    #[tokio::test]
    async fn a_damaged_segment_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::from_u128(12);
        let store = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        store.apply(&[record(0, tenant, &ev(Some("u"), None, "A", 100))]);
        store.seal(None).await.expect("seal");
        let path = store.manifest().tenants[&tenant].segments[0].path.clone();
        std::fs::write(dir.path().join(&path), b"not parquet").expect("write");
        // Without its image, the table is read from the segments again.
        drop(store);
        std::fs::remove_dir_all(dir.path().join("cache")).expect("no image");
        let err = ColumnStore::open(sealed_store(dir.path()))
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(&path), "{err}");
    }

    /// A compaction cut short before its manifest (the merged file written, not named) or
    /// after it (the old files not yet deleted) loses and doubles nothing on reload.
    #[tokio::test]
    async fn a_compaction_cut_short_loses_and_doubles_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::from_u128(13);
        let day = 86_400;
        let store = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        for i in 0..4u64 {
            let user = format!("u{}", i % 2);
            store.apply(&[record(
                i,
                tenant,
                &ev(Some(&user), None, "A", 5 * day + i as i64),
            )]);
            store.seal(None).await.expect("seal");
        }
        let table = store.table(TenantId(tenant)).expect("table");
        let all = rows(&ColumnStore::read(&table));
        let before = store.manifest();
        assert_eq!(before.tenants[&tenant].segments.len(), 4);
        let copy = |from: &std::path::Path, to: &std::path::Path| {
            for m in &before.tenants[&tenant].segments {
                let (a, b) = (from.join(&m.path), to.join(&m.path));
                std::fs::create_dir_all(b.parent().expect("dir")).expect("mkdir");
                std::fs::copy(a, b).expect("copy");
            }
            std::fs::copy(from.join(storage::MANIFEST), to.join("old-manifest.json"))
                .expect("copy");
        };
        let saved = tempfile::tempdir().expect("tmp");
        copy(dir.path(), saved.path());
        assert_eq!(store.compact(4).await.expect("compact"), 4);
        assert_eq!(store.compact(4).await.expect("compact"), 0, "nothing left");
        let after = store.manifest();
        assert_eq!(after.tenants[&tenant].segments.len(), 1);
        assert_eq!(rows(&ColumnStore::read(&table)), all);
        let reload = || async {
            let again = ColumnStore::open(sealed_store(dir.path()))
                .await
                .expect("reopen");
            let t = again.table(TenantId(tenant)).expect("table");
            let t = ColumnStore::read(&t);
            check_segment_order(&t);
            rows(&t)
        };
        assert_eq!(reload().await, all, "compacted");
        let put_back_old_files = || {
            for m in &before.tenants[&tenant].segments {
                let to = dir.path().join(&m.path);
                std::fs::create_dir_all(to.parent().expect("dir")).expect("mkdir");
                std::fs::copy(saved.path().join(&m.path), to).expect("copy");
            }
        };
        let exists = |m: &SegmentMeta| dir.path().join(&m.path).exists();
        // Killed after the manifest, before the deletes: the old files are back, unnamed.
        put_back_old_files();
        assert_eq!(reload().await, all, "old files left over");
        assert!(
            !before.tenants[&tenant].segments.iter().any(exists),
            "files the manifest does not name are removed at open (other engines read the tree)"
        );
        // Killed before the manifest: the merged file exists, the old manifest names the rest.
        put_back_old_files();
        std::fs::copy(
            saved.path().join("old-manifest.json"),
            dir.path().join(storage::MANIFEST),
        )
        .expect("copy");
        assert_eq!(reload().await, all, "merged file left over");
        assert!(
            !exists(&after.tenants[&tenant].segments[0]),
            "merged file removed"
        );
        assert!(before.tenants[&tenant].segments.iter().all(exists));
    }

    #[tokio::test]
    async fn a_seal_interrupted_before_its_manifest_leaves_the_old_state() {
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::from_u128(9);
        let store = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        store.apply(&[record(0, tenant, &ev(Some("u"), None, "A", 100))]);
        store.seal(None).await.expect("seal");
        // Files of a seal that never wrote its manifest.
        std::fs::create_dir_all(dir.path().join("events/tenant=x/date=1970-01-01")).expect("mkdir");
        std::fs::write(
            dir.path()
                .join("events/tenant=x/date=1970-01-01/99.parquet"),
            b"junk",
        )
        .expect("write");
        let again = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(again.applied(), 1);
        assert_eq!(
            again
                .table(TenantId(tenant))
                .map(|t| ColumnStore::read(&t).len()),
            Some(1)
        );
        // A damaged manifest is an error, not an empty store.
        std::fs::write(dir.path().join(storage::MANIFEST), b"{").expect("write");
        assert!(ColumnStore::open(sealed_store(dir.path())).await.is_err());
    }

    fn arb_events() -> impl Strategy<Value = Vec<(u8, u8, u8, i64, bool)>> {
        // (user or anon id, kind: 0 anon / 1 user / 2 both, event, time in hours, seal after)
        proptest::collection::vec(
            (
                0u8..12,
                0u8..3,
                0u8..4,
                0i64..24 * 6,
                proptest::bool::weighted(0.1),
            ),
            1..120,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the arrival order, merges and seal points: sealed + reloaded rows equal
        /// the events applied, chunks are sorted by (person, time) within a UTC day, and late
        /// events are exactly those older than the newest sealed event when they arrived.
        #[test]
        fn seal_and_reload_keep_every_event(events in arb_events()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async {
                let dir = tempfile::tempdir().expect("tmp");
                let tenant = Uuid::from_u128(1);
                let store = ColumnStore::open(sealed_store(dir.path())).await.expect("open");
                let (mut watermark, mut late) = (i64::MIN, 0u64);
                let mut pending_max = i64::MIN;
                for (i, (id, kind, name, hours, seal)) in events.iter().enumerate() {
                    let secs = hours * 3600 + (i as i64 % 7);
                    let (user, anon) = match kind {
                        0 => (None, Some(format!("a{id}"))),
                        1 => (Some(format!("u{id}")), None),
                        _ => (Some(format!("u{id}")), Some(format!("a{}", id / 2))),
                    };
                    let e: Ev = (user, anon, format!("E{name}"), secs, if *name == 0 {
                        // A key only some events have: columns of different lengths.
                        vec![("n".into(), serde_json::json!(i)), ("rare".into(), serde_json::json!("x"))]
                    } else {
                        vec![("n".into(), serde_json::json!(i))]
                    });
                    if secs * 1_000_000 < watermark {
                        late += 1;
                    }
                    pending_max = pending_max.max(secs * 1_000_000);
                    store.apply(&[record(i as u64, tenant, &e)]);
                    if *seal {
                        store.seal(None).await.expect("seal");
                        watermark = watermark.max(pending_max);
                    }
                }
                let table = store.table(TenantId(tenant)).expect("table");
                let live = rows(&ColumnStore::read(&table));
                assert_eq!(live.len(), events.len());
                assert_eq!(ColumnStore::read(&table).late, late);
                store.seal(None).await.expect("seal");
                check_segment_order(&ColumnStore::read(&table));
                let again = ColumnStore::open(sealed_store(dir.path())).await.expect("reopen");
                {
                    let t2 = again.table(TenantId(tenant)).expect("table");
                    let t2 = ColumnStore::read(&t2);
                    assert_eq!(rows(&t2), live);
                    assert_eq!(t2.late, late);
                    assert_eq!(t2.persons.redirects(), ColumnStore::read(&table).persons.redirects());
                }
                // Compaction down to one file a day changes no row, in memory or reloaded.
                while store.compact(2).await.expect("compact") > 0 {}
                let files = store.manifest().tenants[&tenant].segments.clone();
                let mut days: Vec<i64> = files.iter().map(|m| m.min_ts.div_euclid(86_400_000_000)).collect();
                days.dedup();
                assert_eq!(days.len(), files.len(), "one file a day");
                assert_eq!(rows(&ColumnStore::read(&table)), live);
                let again = ColumnStore::open(sealed_store(dir.path())).await.expect("reopen");
                let t3 = again.table(TenantId(tenant)).expect("table");
                let t3 = ColumnStore::read(&t3);
                assert_eq!(rows(&t3), live);
                check_segment_order(&t3);
                assert_eq!(t3.late, late);
            });
        }
    }

    /// What queries read of a table, in values rather than ids and row numbers: every row
    /// (person's canonical key, time, name, properties, line items), sorted; and the
    /// projection's entries (time, name) by canonical person, each list in the projection's
    /// order. Checks on the way that the projection and the chunks agree with the rows.
    type View = (Vec<String>, Vec<(String, Vec<(i64, String)>)>);

    fn view(t: &Table) -> View {
        let redirects = t.persons.redirects();
        let key = |p: u32| {
            let (user, id) = t.persons.describe(redirects[p as usize]).expect("person");
            if user {
                PersonKey::user(id).into_string()
            } else {
                PersonKey::anonymous(id).into_string()
            }
        };
        let name = |n: u32| t.names.value(n).expect("name").to_owned();
        let mut rows: Vec<String> = (0..t.len())
            .map(|row| {
                format!(
                    "{} | {} | {} | {} | {}",
                    key(t.person[row]),
                    t.ts[row],
                    name(t.name[row]),
                    props(t, row).join(" "),
                    t.lines_json(row).unwrap_or_default()
                )
            })
            .collect();
        rows.sort();
        // Chunks: contiguous over the sealed rows, bounds and names true of their rows.
        let mut next = 0;
        for c in &t.chunks {
            assert_eq!(c.rows.start, next, "chunks are contiguous");
            next = c.rows.end;
            for r in c.rows.clone() {
                assert!(c.min_ts <= t.ts[r] && t.ts[r] <= c.max_ts);
                assert!(c.has_any(&[t.name[r]]));
            }
        }
        assert_eq!(next, t.sealed, "chunks cover the sealed rows");
        assert_eq!(
            t.by_person.covered(),
            t.sealed,
            "the projection covers them"
        );
        // Each person's (time, name) pairs: the order of rows with the same time depends on the
        // order the segments were loaded in (sealed order from an image, the manifest's from
        // Parquet), so ties are compared by name.
        let mut by: std::collections::BTreeMap<String, Vec<(i64, String, u32)>> =
            Default::default();
        for run in &t.by_person.runs {
            for g in 0..run.groups() {
                for i in run.entries(g) {
                    let row = run.row[i] as usize;
                    assert!(run.rows.contains(&row));
                    assert_eq!((run.ts[i], run.name[i]), (t.ts[row], t.name[row]));
                    assert_eq!(key(g as u32), key(t.person[row]));
                    by.entry(key(g as u32)).or_default().push((
                        run.ts[i],
                        name(run.name[i]),
                        run.row[i],
                    ));
                }
            }
        }
        let by = by
            .into_iter()
            .map(|(k, mut v)| {
                v.sort();
                (k, v.into_iter().map(|(ts, n, _)| (ts, n)).collect())
            })
            .collect();
        (rows, by)
    }

    /// One generated event as `arb_events` describes it; every fourth has line items.
    fn generated(i: usize, id: u8, kind: u8, name: u8, hours: i64) -> Ev {
        let secs = hours * 3600 + (i as i64 % 7);
        let (user, anon) = match kind {
            0 => (None, Some(format!("a{id}"))),
            1 => (Some(format!("u{id}")), None),
            _ => (Some(format!("u{id}")), Some(format!("a{}", id / 2))),
        };
        let mut props = vec![("n".to_owned(), serde_json::json!(i))];
        if name == 0 {
            props.push(("rare".into(), serde_json::json!(format!("r{id}"))));
        }
        if i % 4 == 3 {
            props.push((
                "products".into(),
                serde_json::json!([{"sku": format!("s{id}"), "price": i}, {"sku": "x"}]),
            ));
        }
        (user, anon, format!("E{name}"), secs, props)
    }

    /// Property columns of every width (1-byte codes, 2-byte codes, plain values, some
    /// widened after a seal wrote them to the image), and one that starts late, read back
    /// from the image as they were.
    #[tokio::test]
    async fn an_image_holds_property_columns_of_every_width() {
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::from_u128(1);
        let store = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        let event = |i: usize| -> Ev {
            let mut props = vec![
                ("few".to_owned(), serde_json::json!(format!("f{}", i % 3))),
                ("some".to_owned(), serde_json::json!(i % 1000)),
                ("all".to_owned(), serde_json::json!(format!("v{i}"))),
            ];
            // A key that appears late: its presence words start at its first value.
            if i >= 60_000 && i.is_multiple_of(3) {
                props.push(("late".to_owned(), serde_json::json!(i % 5)));
            }
            (
                Some(format!("u{}", i % 50)),
                None,
                "E".to_owned(),
                i as i64,
                props,
            )
        };
        // Sealed while "some" and "all" still have 1-byte codes, then widened past the seal.
        for i in 0..200 {
            store.apply(&[record(i as u64, tenant, &event(i))]);
        }
        store.seal(None).await.expect("seal");
        for i in 200..70_000 {
            store.apply(&[record(i as u64, tenant, &event(i))]);
        }
        store.seal(None).await.expect("seal");
        let live = {
            let t = store.table(TenantId(tenant)).expect("table");
            let t = ColumnStore::read(&t);
            let width = |k: &str| {
                t.strings
                    .get(&t.keys.get(k).expect("key"))
                    .map(|c| c.width())
            };
            assert_eq!(width("few"), Some(1));
            assert_eq!(width("all"), Some(4));
            let some = t.keys.get("some").expect("key");
            assert_eq!(t.numbers.get(&some).map(|c| c.width()), Some(2));
            view(&t)
        };
        drop(store);
        let a = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(a.rows_from_image(), 70_000, "every row from the image");
        let t = a.table(TenantId(tenant)).expect("table");
        assert_eq!(view(&ColumnStore::read(&t)), live);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// A restart maps the image its store wrote instead of decoding the segments, and
        /// reads the same table: after seals, merges, late events and line items, with a
        /// compaction between seals (its merged files then name the rows of the files they
        /// replaced), and again after more events sealed over the loaded image.
        /// Without the image the segments give the same table.
        #[test]
        fn a_restart_from_the_image_reads_what_the_segments_hold(
            events in arb_events(),
            compact_at in 0usize..160,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async {
                let dir = tempfile::tempdir().expect("tmp");
                let tenant = Uuid::from_u128(1);
                let store = ColumnStore::open(sealed_store(dir.path())).await.expect("open");
                for (i, (id, kind, name, hours, seal)) in events.iter().enumerate() {
                    store.apply(&[record(i as u64, tenant, &generated(i, *id, *kind, *name, *hours))]);
                    if *seal {
                        store.seal(None).await.expect("seal");
                    }
                    if i == compact_at {
                        while store.compact(2).await.expect("compact") > 0 {}
                    }
                }
                store.seal(None).await.expect("seal");
                let (live, sealed) = {
                    let t = store.table(TenantId(tenant)).expect("table");
                    let t = ColumnStore::read(&t);
                    (view(&t), t.sealed)
                };
                drop(store);

                let a = ColumnStore::open(sealed_store(dir.path())).await.expect("reopen");
                assert_eq!(a.rows_from_image(), sealed as u64, "every row from the image");
                let t = a.table(TenantId(tenant)).expect("table");
                assert_eq!(view(&ColumnStore::read(&t)), live);
                // More events over the loaded image: a merge, a late event, new keys.
                let more = [
                    (Some("u1".to_owned()), Some("a7".to_owned()), "$identify".to_owned(), 3600, vec![("plan".to_owned(), serde_json::json!("pro"))]),
                    (None, Some("a9".to_owned()), "E1".to_owned(), 1, vec![("late".to_owned(), serde_json::json!(true))]),
                    (Some("u2".to_owned()), None, "E9".to_owned(), 24 * 7 * 3600, vec![("products".to_owned(), serde_json::json!([{"sku": "z", "price": 1.5}]))]),
                ];
                let base = events.len() as u64;
                for (j, e) in more.iter().enumerate() {
                    a.apply(&[record(base + j as u64, tenant, e)]);
                }
                a.seal(None).await.expect("seal");
                let live2 = view(&ColumnStore::read(&t));
                let sealed2 = ColumnStore::read(&t).sealed;
                drop(t);
                drop(a);

                let b = ColumnStore::open(sealed_store(dir.path())).await.expect("reopen");
                assert_eq!(b.rows_from_image(), sealed2 as u64, "the image written after the load serves every row");
                let t = b.table(TenantId(tenant)).expect("table");
                assert_eq!(view(&ColumnStore::read(&t)), live2);
                drop(t);
                drop(b);

                std::fs::remove_dir_all(dir.path().join("cache")).expect("drop the image");
                let c = ColumnStore::open(sealed_store(dir.path())).await.expect("reopen");
                assert_eq!(c.rows_from_image(), 0);
                let t = c.table(TenantId(tenant)).expect("table");
                assert_eq!(view(&ColumnStore::read(&t)), live2);
            });
        }
    }

    /// The `.col` files in a spill directory, by id.
    fn column_files(dir: &std::path::Path) -> std::collections::BTreeSet<u64> {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| {
                let name = e.expect("entry").file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".col")?, 16).ok()
            })
            .collect()
    }

    /// A damaged image (its description cut short, a column file gone, a column shorter than
    /// its rows, chunks missing) is dropped with a warning and the tenant is read from its segments; the image written then serves the
    /// next start. Files no image names do not pile up across restarts.
    #[tokio::test]
    async fn a_damaged_image_is_dropped_and_the_segments_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = dir.path().join("cache");
        let tenant = Uuid::from_u128(5);
        let store = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        for i in 0..300u64 {
            let e = generated(
                i as usize,
                (i % 13) as u8,
                (i % 3) as u8,
                (i % 4) as u8,
                (i % 50) as i64,
            );
            store.apply(&[record(i, tenant, &e)]);
            if i % 60 == 59 {
                store.seal(None).await.expect("seal");
            }
        }
        let live = view(&ColumnStore::read(
            &store.table(TenantId(tenant)).expect("table"),
        ));
        drop(store);
        let named = image::files_named(&cache, tenant).expect("an image");
        assert_eq!(
            column_files(&cache),
            named.iter().copied().collect(),
            "only the image's files are left"
        );

        let meta = cache.join(format!("{tenant}.image.json"));
        let text = std::fs::read(&meta).expect("meta");
        std::fs::write(&meta, &text[..text.len() / 2]).expect("cut");
        let a = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(a.rows_from_image(), 0);
        assert_eq!(
            view(&ColumnStore::read(&a.table(TenantId(tenant)).expect("t"))),
            live
        );
        drop(a);
        let named = image::files_named(&cache, tenant).expect("a new image");
        assert_eq!(
            column_files(&cache),
            named.iter().copied().collect(),
            "the old image's files are gone"
        );

        let gone = *named.iter().next().expect("a file");
        std::fs::remove_file(cache.join(format!("{gone:016x}.col"))).expect("remove");
        let b = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(b.rows_from_image(), 0);
        assert_eq!(
            view(&ColumnStore::read(&b.table(TenantId(tenant)).expect("t"))),
            live
        );
        drop(b);

        // Columns shorter than the rows the description claims (the kernels would index
        // past them), or chunks that leave rows out: not used.
        for field in ["person", "chunks"] {
            let mut m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&meta).expect("meta")).expect("json");
            if field == "person" {
                m["person"]["len"] = 1.into();
            } else {
                m["chunks"].as_array_mut().expect("chunks").remove(0);
            }
            std::fs::write(&meta, serde_json::to_vec(&m).expect("json")).expect("write");
            let d = ColumnStore::open(sealed_store(dir.path()))
                .await
                .expect("reopen");
            assert_eq!(d.rows_from_image(), 0, "{field}");
            let t = d.table(TenantId(tenant)).expect("t");
            assert_eq!(view(&ColumnStore::read(&t)), live);
        }

        let c = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(c.rows_from_image(), 300);
        assert_eq!(
            view(&ColumnStore::read(&c.table(TenantId(tenant)).expect("t"))),
            live
        );
    }

    /// A store started over a cache whose segments are gone (deleted, or never written)
    /// finds no image in it: a new history sealing files of the same names must not be
    /// read through the old one's image.
    #[tokio::test]
    async fn images_without_their_segments_are_cleared() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = dir.path().join("cache");
        let tenant = Uuid::from_u128(6);
        let store = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        store.apply(&[record(0, tenant, &ev(Some("u"), None, "A", 100))]);
        store.seal(None).await.expect("seal");
        drop(store);
        assert!(image::files_named(&cache, tenant).is_some());
        for gone in ["manifest.json", "events", "persons"] {
            let path = dir.path().join(gone);
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
        let again = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        assert!(image::files_named(&cache, tenant).is_none());
        assert!(column_files(&cache).is_empty());
        again.apply(&[record(0, tenant, &ev(Some("v"), None, "B", 100))]);
        again.seal(None).await.expect("seal");
        drop(again);
        let third = ColumnStore::open(sealed_store(dir.path()))
            .await
            .expect("open");
        assert_eq!(third.rows_from_image(), 1);
        let t = third.table(TenantId(tenant)).expect("table");
        assert_eq!(rows(&ColumnStore::read(&t))[0].2, "B");
    }

    /// With a limit, the memory watch trims on its own (here: over a 1-byte limit, so it
    /// evicts and backs off), and its thread ends once the store is dropped; without a
    /// limit there is none.
    #[test]
    fn the_memory_watch_trims_while_the_store_lives_and_ends_with_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let spill = Spill::new(dir.path(), 256).expect("spill");
        let unlimited = Arc::new(ColumnStore::with_options(ColumnOptions {
            spill: Some(spill.clone()),
            ..ColumnOptions::default()
        }));
        assert!(unlimited.watch_memory().is_none());
        let store = Arc::new(ColumnStore::with_options(ColumnOptions {
            spill: Some(spill),
            memory_limit: Some(1),
            ..ColumnOptions::default()
        }));
        let watch = store.watch_memory().expect("a limit starts the watch");
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&store.trim_state).backoff_until.is_none() && Instant::now() < deadline {
            std::thread::sleep(WATCH_EVERY);
        }
        assert!(
            lock(&store.trim_state).backoff_until.is_some(),
            "the watch evicted, and the process stays over a 1-byte limit"
        );
        drop(store);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !watch.is_finished() && Instant::now() < deadline {
            std::thread::sleep(WATCH_EVERY);
        }
        assert!(watch.is_finished(), "the watch ends with the store");
    }
}
