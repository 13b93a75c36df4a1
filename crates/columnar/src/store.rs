//! The column store as a consumer of the event log.
//!
//! Events land in each tenant's hot, in-memory part. When the hot part reaches
//! [`ColumnOptions::seal_rows`] rows (all tenants together), or its oldest row has waited
//! [`ColumnOptions::seal_interval`], the follower seals it: the hot rows are put in segment
//! order (UTC day, person, time), written as one Parquet file per tenant and day plus a
//! persons snapshot, then the manifest (with the log offset everything below is sealed),
//! then the `columnar` consumer's offset is committed so the log may drop what is sealed.
//!
//! On start, the manifest's segments are loaded (not rebuilt from the log) and the follower
//! resumes from the manifest's offset. Sealed rows stay in memory as the query cache: the
//! kernels read one set of columns whether a row is hot or sealed, and skip sealed chunks
//! outside a query's time range by their statistics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use livora_log::{Consumer, EventLog, Record};
use livora_model::TenantId;

use crate::Error;
use crate::segment;
use crate::storage::{self, Manifest, SegmentMeta, SegmentStore, TenantManifest};
use crate::table::Table;

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
}

impl Default for ColumnOptions {
    fn default() -> Self {
        Self {
            segments: None,
            seal_rows: 1_000_000,
            seal_interval: Duration::from_secs(300),
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
            let table = Arc::new(RwLock::new(load_tenant(&segments, &tm).await?));
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
            return Ok(Arc::new(store));
        };
        let started = Instant::now();
        let mut rows = 0;
        for (tenant, tm) in &manifest.tenants {
            let table = load_tenant(&segments, tm).await?;
            rows += table.len();
            store
                .tables
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(TenantId(*tenant), Arc::new(RwLock::new(table)));
        }
        tracing::info!(
            segments = %format!("{segments:?}"),
            offset = manifest.offset,
            rows,
            tenants = manifest.tenants.len(),
            ms = started.elapsed().as_millis() as u64,
            "column store loaded sealed segments"
        );
        store.applied.store(manifest.offset, Ordering::Release);
        *lock(&store.manifest) = manifest;
        Ok(Arc::new(store))
    }

    /// Applies records read from the log (in offset order), taking each tenant's lock once
    /// per run of its records.
    pub fn apply(&self, records: &[Record]) {
        let mut late = 0;
        for run in records.chunk_by(|a, b| a.tenant == b.tenant) {
            let tenant = TenantId(run[0].tenant);
            let table = self.table(tenant).unwrap_or_else(|| {
                self.tables
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(tenant)
                    .or_default()
                    .clone()
            });
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

    /// One past the last log offset applied: a query sees every event below it.
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
    /// sealed offset. Must not run concurrently with [`ColumnStore::apply`]: the follower
    /// calls both. Returns the number of rows sealed.
    pub async fn seal(&self, consumer: Option<&mut Consumer>) -> Result<usize, Error> {
        let Some(segments) = self.opts.segments.clone() else {
            return Ok(0);
        };
        let started = Instant::now();
        let offset = self.applied();
        let mut manifest = self.manifest();
        let seq = manifest.seq + 1;
        let mut sealed_rows = 0;
        let mut staged = Vec::new();
        let mut old_persons = Vec::new();
        for (tenant, table) in self.all_tables() {
            if Self::read(&table).hot_len() == 0 {
                continue;
            }
            let t2 = table.clone();
            let encoded = tokio::task::spawn_blocking(move || encode_hot(&t2, tenant, seq))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
            let mut files = Vec::with_capacity(encoded.days.len());
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
            tm.late_events = encoded.late;
            tm.segments.extend(files);
            staged.push((table, encoded.days));
        }
        manifest.offset = offset;
        manifest.seq = seq;
        segments.put_manifest(&manifest).await?;
        // Durable: now the rows count as sealed, and the log may let them go.
        let mut sealed_tables = Vec::with_capacity(staged.len());
        for (table, days) in staged {
            table
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .mark_sealed(&days);
            sealed_tables.push(table);
        }
        *lock(&self.manifest) = manifest;
        *lock(&self.hot_since) = None;
        if let Some(c) = consumer {
            c.commit(offset)?;
        }
        // The person-ordered projection takes in the new rows: built beside queries, swapped in.
        for table in sealed_tables {
            tokio::task::spawn_blocking(move || extend_by_person(&table))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        }
        for p in old_persons {
            if let Err(e) = segments.delete(&p).await {
                tracing::warn!(path = %p, error = %e, "could not delete an old persons snapshot");
            }
        }
        metrics::counter!("livora_columnar_sealed_rows_total").increment(sealed_rows as u64);
        tracing::info!(
            rows = sealed_rows,
            offset,
            seq,
            ms = started.elapsed().as_millis() as u64,
            "sealed column segments"
        );
        Ok(sealed_rows)
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
        let mut reader = log.reader(start)?;
        if reader.position() > start {
            tracing::warn!(
                from = start,
                to = reader.position(),
                "events were dropped by log retention before they were sealed"
            );
        }
        let mut changes = log.subscribe();
        let mut last_expiry = Instant::now();
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
                let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
            } else {
                let store = self.clone();
                let _ = tokio::task::spawn_blocking(move || store.apply(&batch)).await;
            }
            if self.seal_due()
                && let Err(e) = self.seal(consumer.as_mut()).await
            {
                // The rows stay hot and the log keeps them; the next attempt retries.
                tracing::error!(error = %e, "sealing column segments failed");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            if self.expire_due.swap(false, Ordering::AcqRel)
                || last_expiry.elapsed() >= Duration::from_secs(3600)
            {
                last_expiry = Instant::now();
                if let Err(e) = self.expire(consumer.as_mut(), chrono::Utc::now()).await {
                    tracing::error!(error = %e, "expiring column segments failed");
                    self.expire_due.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Read access to a tenant's table (for tests and kernels).
    pub fn read(table: &RwLock<Table>) -> RwLockReadGuard<'_, Table> {
        table.read().unwrap_or_else(|e| e.into_inner())
    }
}

struct Encoded {
    days: Vec<std::ops::Range<usize>>,
    files: Vec<(SegmentMeta, Bytes)>,
    persons: Bytes,
    person_count: u64,
    late: u64,
}

/// Orders a tenant's hot rows and encodes them, one file per day, with a persons snapshot.
fn encode_hot(table: &RwLock<Table>, tenant: TenantId, seq: u64) -> Result<Encoded, Error> {
    let days = table.write().unwrap_or_else(|e| e.into_inner()).order_hot();
    let t = ColumnStore::read(table);
    let mut files = Vec::with_capacity(days.len());
    for (n, r) in days.iter().enumerate() {
        let bytes = segment::encode_events(&t, r.clone())?;
        let (min_ts, max_ts) = t.ts[r.clone()]
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
    Ok(Encoded {
        files,
        persons: Bytes::from(segment::encode_persons(&t.persons)?),
        person_count: t.persons.len() as u64,
        late: t.late,
        days,
    })
}

/// Extends the table's person-ordered projection to its sealed rows, reading under the read
/// lock and swapping under the write lock.
fn extend_by_person(table: &RwLock<Table>) {
    let extended = {
        let t = ColumnStore::read(table);
        t.by_person.extended(&t)
    };
    table.write().unwrap_or_else(|e| e.into_inner()).by_person = extended;
}

async fn load_tenant(segments: &SegmentStore, tm: &TenantManifest) -> Result<Table, Error> {
    let persons = segments.get(&tm.persons).await?;
    let mut table = Table {
        persons: segment::decode_persons(persons)?,
        late: tm.late_events,
        ..Table::default()
    };
    for seg in &tm.segments {
        let bytes = segments.get(&seg.path).await?;
        let start = table.len();
        table = tokio::task::spawn_blocking(move || -> Result<Table, Error> {
            segment::decode_events(bytes, &mut table)?;
            Ok(table)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        let rows = table.len() - start;
        if rows as u64 != seg.rows {
            return Err(Error::Segment(format!(
                "{}: {} rows, the manifest says {}",
                seg.path, rows, seg.rows
            )));
        }
        let loaded = start..table.len();
        table.mark_sealed(std::slice::from_ref(&loaded));
    }
    let table = tokio::task::spawn_blocking(move || {
        table.by_person = table.by_person.extended(&table);
        table
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use livora_log::Uuid;
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

    /// Every row as (canonical person's sorted keys, ts, name, sorted properties): what must
    /// survive sealing, reordering and reloading.
    fn rows(t: &Table) -> Vec<(Vec<String>, i64, String, Vec<String>)> {
        let redirects = t.persons.redirects();
        let mut members: HashMap<u32, Vec<String>> = HashMap::new();
        for (id, root) in redirects.iter().enumerate() {
            let (user, key) = t.persons.describe(id as u32).expect("person");
            members
                .entry(*root)
                .or_default()
                .push(format!("{}{key}", if user { "u:" } else { "a:" }));
        }
        for m in members.values_mut() {
            m.sort();
        }
        let mut out: Vec<_> = (0..t.len())
            .map(|row| {
                let mut props: Vec<String> = Vec::new();
                for (k, _) in t.strings.iter() {
                    if let Some(v) = t.str_at(*k, row) {
                        props.push(format!("{}={v:?}", t.keys.value(*k).expect("key")));
                    }
                }
                for (k, _) in t.numbers.iter() {
                    if let Some(v) = t.num_at(*k, row) {
                        props.push(format!("{}={v}", t.keys.value(*k).expect("key")));
                    }
                }
                props.sort();
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

    fn sealed_store(dir: &std::path::Path) -> ColumnOptions {
        ColumnOptions {
            segments: Some(SegmentStore::local(dir).expect("store")),
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
                let t2 = again.table(TenantId(tenant)).expect("table");
                let t2 = ColumnStore::read(&t2);
                assert_eq!(rows(&t2), live);
                assert_eq!(t2.late, late);
                assert_eq!(t2.persons.redirects(), ColumnStore::read(&table).persons.redirects());
            });
        }
    }
}
