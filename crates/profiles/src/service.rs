//! The profiles service: follows the event log and keeps every tenant's [`Engine`] up to
//! date, announces segment changes back into the log, and answers the API.
//!
//! - State is a function of the log: on start the newest [snapshot](crate::snapshot) is
//!   read back, then the log after it (personal fields decrypted with the [`Keyring`]), with
//!   the segment definitions and un-merges from the metadata store (an un-merge is replayed
//!   at the log offset where it happened). Without a snapshot the whole log is read again.
//! - Un-merging and rebuilding a tenant replay the tenant's events from the log: once
//!   retention has deleted some of them, an un-merge is refused
//!   ([`ServiceError::HistoryGone`]) and an erasure forgets the person's personal data in
//!   place instead of rebuilding.
//! - Entering or leaving a segment appends a `Segment Entered` / `Segment Exited` (`Tag
//!   Added` / `Tag Removed`) event for the person, which automations trigger on. Message ids
//!   are derived from the transition, so the log's dedupe drops a repeat.
//! - While the log is read again at start, nothing is announced: those events are already
//!   in the log. Once the reader reaches the end, what the log announced is compared with
//!   the memberships now, and the differences (what changed while the service was down) are
//!   announced.
//! - Timers (segments that change with time) fire at least once a second.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use livora_log::{Consumer, EventLog, NewRecord, Record};
use livora_model::clock::Clock;
use livora_model::{Event, EventType, TenantId};
use livora_store::MetadataStore;
use livora_store::crypto::{Keyring, PREFIX};
use livora_store::profiles::{RulesChange, SegmentRecord, Unmerge};
use serde_json::{Value, json};

use crate::identity::{ANONYMOUS_ID, Identifier, PersonId, USER_ID};
use crate::people::Budget;
use crate::profile::Parsed;
use crate::segments::{Engine, Rule, Spec, Transition};
use crate::snapshot::{self, Announced, AnnouncedSet, Snapshots};
use crate::{MergeRules, PersonSet};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] livora_store::Error),
    #[error(transparent)]
    Log(#[from] livora_log::Error),
    #[error("{0}")]
    Segment(#[from] crate::segments::SegmentError),
    #[error("{0}")]
    Unmerge(#[from] crate::identity::UnmergeError),
    #[error("{0}")]
    Rules(#[from] crate::identity::RulesError),
    #[error("stored segment {0:?} is unreadable: {1}")]
    Corrupt(String, String),
    #[error(
        "the event log no longer holds this tenant's events before offset {0} (retention): an un-merge replays every event, so it cannot be done exactly"
    )]
    HistoryGone(u64),
    #[error("{0}; profiles are not started (nothing was overwritten): fix the cause and restart")]
    SnapshotsUnusable(String),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("profiles are still reading the event log; try again in a moment")]
    NotReady,
}

/// One tenant's engine, and what the log has announced of its memberships.
pub struct TenantState {
    pub engine: Engine,
    /// One past the last log offset applied to this tenant.
    pub applied: u64,
    announced: Announced,
    /// The log offset from which every event of the tenant was applied (0: all of them).
    history_from: u64,
    /// Changed since its last snapshot.
    dirty: bool,
}

pub struct ProfileService {
    store: Arc<dyn MetadataStore>,
    keyring: Option<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
    rules: MergeRules,
    tenants: RwLock<HashMap<TenantId, Arc<Mutex<TenantState>>>>,
    /// One past the last log offset applied.
    applied: AtomicU64,
    /// Set once the log has been read up to where it ended at start.
    caught_up: AtomicBool,
    /// For each announced transition an event caused: the event's log offset, and when the
    /// announcement was made (µs since the Unix epoch). `None` until [`ProfileService::take_lags`]
    /// is first called: a server that never asks keeps none (they would grow for ever).
    lags: Mutex<Option<Vec<(u64, i64)>>>,
    snapshots: Option<Snapshots>,
    /// `history_from` of tenants first seen by this process.
    history_from: AtomicU64,
    /// A snapshot round is wanted now (after a save, delete, un-merge or erasure).
    snapshot_soon: AtomicBool,
    /// Set by [`ProfileService::stop`]: the follower writes a last round and returns.
    stopping: AtomicBool,
    /// Held by the follower while it queues announcements, and by an erasure's snapshot
    /// while it waits for those queued to be in the log and takes the tenant's state.
    writing: tokio::sync::Mutex<()>,
    /// Held from taking the states of a snapshot to the end of writing them, so that files
    /// are written in the order their states were taken.
    files: Arc<tokio::sync::Mutex<()>>,
    /// Tenants read back from a snapshot, with the offset it reflects.
    restored: Mutex<HashMap<TenantId, u64>>,
    /// Stored segments a snapshot did not hold, installed once the log is caught up.
    pending: Mutex<Vec<(TenantId, Spec)>>,
    /// The threads that parse the follower's batches (built when the follower starts, or
    /// first needed; `None` if they could not be started: batches are then parsed on the
    /// follower's thread).
    decoder: std::sync::OnceLock<Option<rayon::ThreadPool>>,
    /// How many batches of announcements the follower has queued, and (below) how many of
    /// them the log has answered: an erasure's snapshot waits until they meet.
    submitted: AtomicU64,
    durable: tokio::sync::watch::Sender<u64>,
    /// Why the follower stopped, if it stopped on an error (it then does not start again).
    failure: Mutex<Option<String>>,
    /// The memory every tenant's profiles share (unset: all decoded).
    budget: std::sync::OnceLock<Arc<Budget>>,
}

/// The decoder's threads, at the priority of the thread that starts them: the follower
/// starts them first thing, so they run at its priority (nice 10 in a node: parsing for
/// profiles must not take the cores from acknowledging events, nor wait behind them while
/// the follower waits for it).
fn decoder_pool() -> Option<rayon::ThreadPool> {
    // SAFETY: getpriority and setpriority take no pointers and only read or change the
    // scheduling weight of the calling thread (on Linux, `who = 0` with PRIO_PROCESS is the
    // calling thread); a failure leaves the priority as it was.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("livora-profiles-decode-{i}"))
        .start_handler(move |_| {
            #[cfg(target_os = "linux")]
            #[allow(unsafe_code)]
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            }
        })
        .build()
        .map_err(|e| tracing::warn!(error = %e, "profiles decode threads not started"))
        .ok()
}

/// Runs `f` on a thread of its own at the lowest CPU priority (nice 19), and answers what
/// it returns (`None` if the thread could not start or panicked). Encoding a snapshot is
/// background work: it must not take the cores from following the log or acknowledging
/// events (zstd's worker thread, started from it, inherits the priority).
async fn in_background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("livora-profiles-snapshot".into())
        .spawn(move || {
            // SAFETY: setpriority takes no pointers and only changes the scheduling weight
            // of the calling thread (`who = 0`); a failure leaves the priority as it was.
            #[cfg(target_os = "linux")]
            #[allow(unsafe_code)]
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            }
            let _ = tx.send(f());
        })
        .ok()?;
    rx.await.ok()
}

fn lock(m: &Mutex<TenantState>) -> MutexGuard<'_, TenantState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stored rule as the engine takes it; manual lists are decrypted by the caller.
pub fn spec_of(record: &SegmentRecord, rule_json: &str) -> Result<Spec, ServiceError> {
    let bad = |e: String| ServiceError::Corrupt(record.id.clone(), e);
    let v: Value = serde_json::from_str(rule_json).map_err(|e| bad(e.to_string()))?;
    let rule = if let Some(list) = v.get("manual") {
        let ids: BTreeSet<Identifier> =
            serde_json::from_value(list.clone()).map_err(|e| bad(e.to_string()))?;
        Rule::Manual(ids)
    } else {
        Rule::Condition(
            livora_model::segment::Definition::parse(&v).map_err(|e| bad(e.to_string()))?,
        )
    };
    Ok(Spec {
        id: record.id.clone(),
        tag: record.tag,
        rule,
    })
}

impl ProfileService {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        keyring: Option<Arc<Keyring>>,
        clock: Arc<dyn Clock>,
        rules: MergeRules,
        snapshots: Option<Snapshots>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            keyring,
            clock,
            rules,
            tenants: RwLock::new(HashMap::new()),
            applied: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            lags: Mutex::new(None),
            snapshots,
            history_from: AtomicU64::new(0),
            snapshot_soon: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            writing: tokio::sync::Mutex::new(()),
            files: Arc::new(tokio::sync::Mutex::new(())),
            restored: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            decoder: std::sync::OnceLock::new(),
            submitted: AtomicU64::new(0),
            durable: tokio::sync::watch::Sender::new(0),
            failure: Mutex::new(None),
            budget: std::sync::OnceLock::new(),
        })
    }

    /// Puts every tenant's profiles under `budget` (see [`crate::people`]); set before the
    /// service starts (a second call is ignored).
    pub fn set_budget(&self, budget: Arc<Budget>) {
        let _ = self.budget.set(budget);
    }

    /// The profiles' memory budget, if any.
    pub fn budget(&self) -> Option<Arc<Budget>> {
        self.budget.get().cloned()
    }

    /// Brings the profiles of every tenant under the budget when it is over: a tenant
    /// evicts its own profiles as it promotes others, so one that went quiet holding many
    /// decoded profiles would otherwise keep them while the busy ones evict all of theirs.
    fn trim_profiles(&self) {
        let Some(budget) = self.budget.get() else {
            return;
        };
        if budget.hot_bytes() <= budget.limit() {
            return;
        }
        let tenants: Vec<Arc<Mutex<TenantState>>> = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for t in tenants {
            if budget.hot_bytes() <= budget.limit() {
                break;
            }
            lock(&t).engine.trim_profiles();
        }
    }

    fn new_engine(&self, rules: MergeRules) -> Engine {
        let mut engine = Engine::new(rules);
        engine.set_budget(self.budget());
        engine
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Asks the follower to stop between batches, after a last snapshot round (when
    /// snapshots are on and it has caught up), so that the next start reads nothing twice.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Asks for a snapshot round as soon as the follower is between batches.
    pub fn request_snapshot(&self) {
        self.snapshot_soon.store(true, Ordering::Release);
    }

    /// Why the follower stopped on an error (`None`: it runs, or stopped as asked).
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the log has been read up to where it ended at start.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// One past the last log offset applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// `(log offset of the causing event, announcement time in µs)` of the transitions
    /// announced since the last call. The first call starts the recording (and returns
    /// nothing).
    pub fn take_lags(&self) -> Vec<(u64, i64)> {
        let mut lags = self.lags.lock().unwrap_or_else(|e| e.into_inner());
        lags.replace(Vec::new()).unwrap_or_default()
    }

    /// A tenant's state (created empty on first use).
    pub fn tenant(&self, tenant: TenantId) -> Arc<Mutex<TenantState>> {
        if let Some(t) = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
        {
            return t.clone();
        }
        let mut all = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        all.entry(tenant)
            .or_insert_with(|| {
                Arc::new(Mutex::new(TenantState {
                    engine: self.new_engine(self.rules.clone()),
                    applied: 0,
                    announced: HashMap::new(),
                    // First seen after catching up: every event of it is still to come.
                    history_from: if self.caught_up() {
                        self.applied()
                    } else {
                        self.history_from.load(Ordering::Acquire)
                    },
                    dirty: true,
                }))
            })
            .clone()
    }

    fn all_tenants(&self) -> Vec<(TenantId, Arc<Mutex<TenantState>>)> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// The rule text of a stored segment, decrypted.
    pub async fn rule_text(
        &self,
        tenant: TenantId,
        record: &SegmentRecord,
    ) -> Result<String, ServiceError> {
        match &self.keyring {
            Some(k) if record.rule.contains(PREFIX) => {
                Ok(k.decrypt_text(tenant, &record.rule).await?.0)
            }
            _ => Ok(record.rule.clone()),
        }
    }

    /// The JSON text to store for a rule. With encryption at rest, a manual list's
    /// identifiers and a condition (which may compare a trait with an email or a phone
    /// number) are encrypted under a key of the segment's own.
    pub async fn stored_rule(
        &self,
        tenant: TenantId,
        id: &str,
        tag: bool,
        rule: &Rule,
    ) -> Result<String, ServiceError> {
        let (field, plain) = match rule {
            Rule::Condition(def) => ("definition", serde_json::to_value(def).unwrap_or_default()),
            Rule::Manual(ids) => ("manual", serde_json::to_value(ids).unwrap_or_default()),
        };
        let Some(k) = &self.keyring else {
            return Ok(match rule {
                Rule::Condition(_) => plain.to_string(),
                Rule::Manual(_) => json!({"manual": plain}).to_string(),
            });
        };
        // `decrypt_text` decrypts values under `properties`: keep the rule there.
        let subject = format!("s:{}{id}", if tag { "tag:" } else { "" });
        let keys = k
            .subject_keys(tenant, std::slice::from_ref(&subject))
            .await?;
        let key = keys
            .get(&subject)
            .ok_or_else(|| ServiceError::Corrupt(id.to_owned(), "no key for the rule".into()))?;
        Ok(json!({"properties": {field: key.encrypt(&plain)}}).to_string())
    }

    /// Loads the stored definitions into the engines (at start, before the log is read).
    pub async fn load(&self) -> Result<(), ServiceError> {
        let now = self.now();
        let mut by_tenant: HashMap<TenantId, Vec<Spec>> = HashMap::new();
        // What is stored, readable or not: a segment that cannot be read now is not deleted.
        let mut stored_ids: HashMap<TenantId, HashSet<(String, bool)>> = HashMap::new();
        for (tenant, record) in self.store.all_segments().await? {
            stored_ids
                .entry(tenant)
                .or_default()
                .insert((record.id.clone(), record.tag));
            // One unreadable definition must not stop the others (or other tenants).
            let spec = match self.rule_text(tenant, &record).await {
                Ok(mut text) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        if let Some(inner) = v.pointer("/properties/manual") {
                            text = json!({"manual": inner}).to_string();
                        } else if let Some(inner) = v.pointer("/properties/definition") {
                            text = inner.to_string();
                        }
                    }
                    spec_of(&record, &text)
                }
                Err(e) => Err(e),
            };
            match spec {
                Ok(spec) => by_tenant.entry(tenant).or_default().push(spec),
                Err(e) => {
                    tracing::error!(tenant = %tenant, segment = %record.id, error = %e, "skipping a stored segment")
                }
            }
        }
        let restored = self
            .restored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (tenant, specs) in by_tenant.iter() {
            if !restored.contains_key(tenant) {
                let t = self.tenant(*tenant);
                install_all(&mut lock(&t).engine, specs.clone(), now);
            }
        }
        // A snapshot holds the segments as they were: those saved since are installed
        // (with a backfill) once the log is caught up; those deleted since go now.
        for tenant in restored.keys() {
            let stored = by_tenant.get(tenant).cloned().unwrap_or_default();
            let t = self.tenant(*tenant);
            let mut state = lock(&t);
            let held = state.engine.specs().to_vec();
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for s in &stored {
                if !held.contains(s) {
                    pending.push((*tenant, s.clone()));
                }
            }
            let ids = stored_ids.get(tenant);
            let mut gone: Vec<&Spec> = held
                .iter()
                .filter(|h| ids.is_none_or(|ids| !ids.contains(&(h.id.clone(), h.tag))))
                .collect();
            // One that another refers to goes after it.
            for _ in 0..=gone.len() {
                gone.retain(|s| state.engine.remove(&s.id, s.tag, now).is_err());
            }
            if !gone.is_empty() {
                state.dirty = true;
            }
        }
        Ok(())
    }

    /// Whether the log still holds every event of `tenant` (un-merges and rebuilds replay
    /// them).
    pub fn history_complete(&self, log: &EventLog, tenant: TenantId) -> bool {
        let t = self.tenant(tenant);
        let from = lock(&t).history_from;
        log.start_offset() <= from
    }

    /// Reads the newest snapshot round back; returns the log offset to follow from.
    ///
    /// A tenant whose snapshot cannot be read (after two more tries: a KMS may be briefly
    /// out of reach) is rebuilt from the log while the log still holds everything. Once it
    /// no longer does, the service refuses to start ([`ServiceError::SnapshotsUnusable`])
    /// rather than rebuild from part of the history and write that over the snapshots.
    async fn restore(&self, log: &EventLog) -> Result<u64, ServiceError> {
        let start = log.start_offset();
        self.history_from.store(start, Ordering::Release);
        let Some(s) = &self.snapshots else {
            return Ok(start);
        };
        let whole_log = start == 0;
        let unusable = |why: String| {
            if whole_log {
                tracing::error!(%why, "reading the whole event log again for profiles");
                Ok(0)
            } else {
                Err(ServiceError::SnapshotsUnusable(why))
            }
        };
        let manifest = match snapshot::read_manifest(&s.dir) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(start),
            Err(e) => return unusable(format!("the profiles snapshot manifest: {e}")),
        };
        if manifest.offset > log.end_offset() {
            return unusable(format!(
                "the profiles snapshots (offset {}) are newer than the event log (end {}): was the log replaced?",
                manifest.offset,
                log.end_offset()
            ));
        }
        if manifest.offset < start {
            tracing::error!(
                snapshot = manifest.offset,
                log_start = start,
                "the event log no longer holds the records right after the profiles snapshots; profiles miss them"
            );
        }
        let mut bodies = Vec::with_capacity(manifest.tenants.len());
        let mut failed = Vec::new();
        for &tenant in &manifest.tenants {
            let mut tries = 0;
            loop {
                match self.read_snapshot(&s.dir, tenant).await {
                    Ok(b) if b.tenant == tenant => bodies.push(b),
                    Ok(_) => failed.push(format!("tenant {tenant}: the file holds another tenant")),
                    Err(e) if tries < 2 => {
                        tries += 1;
                        tracing::warn!(tenant = %tenant, error = %e, "a profiles snapshot is unreadable; trying again");
                        tokio::time::sleep(Duration::from_secs(tries)).await;
                        continue;
                    }
                    Err(e) => failed.push(format!("tenant {tenant}: {e}")),
                }
                break;
            }
        }
        let from = if failed.is_empty() {
            manifest.offset.max(start)
        } else {
            let why = format!("profiles snapshots unreadable ({})", failed.join("; "));
            if !whole_log {
                return Err(ServiceError::SnapshotsUnusable(format!(
                    "{why}, and the event log no longer holds everything before them"
                )));
            }
            tracing::error!(%why, "those tenants are rebuilt from the whole event log");
            0
        };
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        let mut restored = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        for b in bodies {
            restored.insert(b.tenant, b.applied);
            tenants.insert(
                b.tenant,
                Arc::new(Mutex::new(TenantState {
                    engine: b.engine,
                    applied: b.applied,
                    announced: b.announced,
                    history_from: b.history_from,
                    dirty: false,
                })),
            );
        }
        // A tenant first seen from here on has no event before `from`.
        self.history_from.store(from, Ordering::Release);
        tracing::info!(
            tenants = restored.len(),
            offset = manifest.offset,
            "profiles read back from their snapshots"
        );
        Ok(from)
    }

    async fn read_snapshot(
        &self,
        dir: &std::path::Path,
        tenant: TenantId,
    ) -> Result<snapshot::Body, snapshot::SnapshotError> {
        let path = snapshot::tenant_path(dir, tenant);
        let bytes = snapshot::read(&path)?;
        let (body, encrypted) = snapshot::unframe(&path, &bytes)?;
        let budget = self.budget();
        if !encrypted {
            return crate::people::reading_with(budget, || snapshot::decode(&path, body));
        }
        let Some(k) = &self.keyring else {
            return Err(snapshot::SnapshotError::NeedsKey(path));
        };
        let plain = k.open_blob(tenant, snapshot::LABEL, body).await?;
        crate::people::reading_with(budget, || snapshot::decode(&path, &plain))
    }

    /// Takes the state of every tenant changed since its last snapshot (the part of a
    /// round the follower waits for: milliseconds, see [`snapshot::Frozen`]) and writes it
    /// on a task of its own: the files, then the manifest. The task answers the round's
    /// offset, which the follower commits for the log's retention once it is done. Runs
    /// between batches of the follower, so every tenant reflects every record before the
    /// offset.
    async fn start_round(self: &Arc<Self>) -> Option<Round> {
        let s = self.snapshots.clone()?;
        let files = self.files.clone().lock_owned().await;
        let offset = self.applied();
        let started = Instant::now();
        let mut tenants = Vec::new();
        let mut frozen = Vec::new();
        for (tenant, t) in self.all_tenants() {
            tenants.push(tenant);
            if let Some(f) = Self::freeze(&s.dir, tenant, &t, offset, false) {
                frozen.push((f, t));
            }
        }
        let held = started.elapsed();
        tenants.sort_unstable();
        let keyring = self.keyring.clone();
        let task = tokio::spawn(async move {
            let _files = files;
            let written = frozen.len();
            let mut frozen = frozen.into_iter();
            while let Some((f, t)) = frozen.next() {
                if let Err(e) = Self::write_frozen(&s.dir, keyring.clone(), f).await {
                    // Not written: their next round writes them.
                    lock(&t).dirty = true;
                    frozen.for_each(|(_, t)| lock(&t).dirty = true);
                    return Err(e);
                }
            }
            snapshot::write_manifest(
                &s.dir,
                &snapshot::Manifest {
                    offset,
                    tenants: tenants.clone(),
                },
            )?;
            snapshot::remove_others(&s.dir, &tenants);
            if written > 0 {
                tracing::info!(
                    tenants = written,
                    offset,
                    held_ms = held.as_millis() as u64,
                    ms = started.elapsed().as_millis() as u64,
                    "profiles snapshot written"
                );
            }
            Ok(offset)
        });
        Some(Round(task))
    }

    /// The state of one tenant to write, when it changed since its last snapshot (or
    /// `force`). `floor`: every record of the tenant below it is applied. The caller holds
    /// `files` until it is written.
    fn freeze(
        dir: &std::path::Path,
        tenant: TenantId,
        t: &Arc<Mutex<TenantState>>,
        floor: u64,
        force: bool,
    ) -> Option<snapshot::Frozen> {
        let mut state = lock(t);
        // An un-merge or a rules change from now on is recorded after `floor`.
        state.applied = state.applied.max(floor);
        if !force && !state.dirty && snapshot::tenant_path(dir, tenant).exists() {
            return None;
        }
        state.dirty = false;
        Some(snapshot::Frozen::new(
            tenant,
            state.applied,
            state.history_from,
            &state.engine,
            &state.announced,
        ))
    }

    /// Encodes (in the background, see [`in_background`]), seals and writes one tenant's
    /// file.
    async fn write_frozen(
        dir: &std::path::Path,
        keyring: Option<Arc<Keyring>>,
        frozen: snapshot::Frozen,
    ) -> Result<(), snapshot::SnapshotError> {
        let tenant = frozen.tenant;
        let path = snapshot::tenant_path(dir, tenant);
        let packed = in_background(move || frozen.encode())
            .await
            .ok_or_else(|| {
                snapshot::SnapshotError::Encode(tenant, "the encoding thread failed".into())
            })??;
        let bytes = match &keyring {
            Some(k) => snapshot::frame(&k.seal_blob(tenant, snapshot::LABEL, &packed).await?, true),
            None => snapshot::frame(&packed, false),
        };
        drop(packed);
        tokio::task::spawn_blocking(move || snapshot::write_atomic(&path, &bytes))
            .await
            .map_err(|e| snapshot::SnapshotError::Encode(tenant, e.to_string()))?
    }

    /// Writes a tenant's snapshot now (after an erasure: the old file held what was
    /// erased, sealed under the tenant key that erasing a person does not destroy).
    async fn write_tenant_now(&self, tenant: TenantId) -> Result<(), ServiceError> {
        let Some(s) = &self.snapshots else {
            return Ok(());
        };
        // After a round in progress, so that its older state does not replace this one.
        let _files = self.files.lock().await;
        let frozen = {
            let _writing = self.writing.lock().await;
            // What the tenant records as announced must be in the log: wait for the
            // follower's queued announcements (it queues no more while `writing` is held).
            let want = self.submitted.load(Ordering::Acquire);
            let mut durable = self.durable.subscribe();
            if tokio::time::timeout(Duration::from_secs(10), durable.wait_for(|d| *d >= want))
                .await
                .is_err()
            {
                tracing::warn!(
                    "segment announcements still queued; the snapshot is written anyway"
                );
            }
            let t = self.tenant(tenant);
            Self::freeze(&s.dir, tenant, &t, 0, true)
        };
        if let Some(f) = frozen {
            let t = self.tenant(tenant);
            if let Err(e) = Self::write_frozen(&s.dir, self.keyring.clone(), f).await {
                lock(&t).dirty = true;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Waits until the follower's announcements in flight are in the log.
    async fn settle(&self, in_flight: &mut Option<(u64, Appending)>) {
        if let Some((seq, f)) = in_flight.take() {
            if let Err(e) = f.await {
                tracing::error!(error = %e, "cannot append segment announcements");
            }
            // Answered, either way: nobody waits for a failed append forever.
            self.durable.send_modify(|d| *d = (*d).max(seq));
        }
    }

    /// Installs the stored segments that the snapshots did not hold, backfilled from the
    /// log (retried while one refers to another still pending).
    async fn install_pending(&self, log: &EventLog) {
        let mut pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        while !pending.is_empty() {
            let before = pending.len();
            let mut left = Vec::new();
            for (tenant, spec) in pending {
                if let Err(e) = self.install(log, tenant, spec.clone()).await {
                    left.push((tenant, spec, e));
                }
            }
            if left.len() == before {
                for (tenant, spec, e) in left {
                    tracing::error!(tenant = %tenant, segment = %spec.id, error = %e, "a stored segment cannot be installed");
                }
                return;
            }
            pending = left.into_iter().map(|(t, s, _)| (t, s)).collect();
        }
    }

    /// Installs a segment or tag in the tenant's engine, backfilled from the tenant's
    /// events, and announces what changed once the log is caught up.
    async fn install(
        &self,
        log: &EventLog,
        tenant: TenantId,
        spec: Spec,
    ) -> Result<(), ServiceError> {
        let now = self.now();
        let caught_up = self.caught_up();
        let (before, after) = self
            .with_events(log, tenant, |state, records, _| {
                let before = state.engine.membership();
                let events = records.iter().map(|(_, e)| e);
                state.engine.upsert(spec.clone(), events, now)?;
                state.dirty = true;
                Ok::<_, ServiceError>((before, state.engine.membership()))
            })
            .await??;
        self.snapshot_soon.store(true, Ordering::Release);
        if caught_up {
            self.announce(log, diff(tenant, &before, &after, now)).await;
        }
        Ok(())
    }

    /// The events of `batch`, in order (`None`: not an event), with their traits and
    /// properties parsed. Parsing is about half of the follower's work per event, so plain
    /// records are parsed on the decoder's threads, all cores; records with encrypted fields
    /// are decrypted one by one.
    async fn decode(&self, batch: &[Record]) -> Vec<Decoded> {
        let parsed = match self.decoder.get_or_init(decoder_pool) {
            Some(pool) if batch.len() > 1 => pool.install(|| self.parse_plain(batch)),
            _ => self.parse_plain(batch),
        };
        self.decrypt_rest(batch, parsed).await
    }

    /// Starts parsing `batch` on the decoder's threads, to be finished by
    /// [`ProfileService::decode_ahead_done`].
    fn decode_ahead(self: &Arc<Self>, pool: &rayon::ThreadPool, batch: Vec<Record>) -> Ahead {
        let batch = Arc::new(batch);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (me, records) = (self.clone(), batch.clone());
        pool.spawn(move || {
            // The receiver is gone only when the follower stopped.
            let _ = tx.send(me.parse_plain(&records));
        });
        Ahead { batch, parsed: rx }
    }

    async fn decode_ahead_done(&self, ahead: Ahead) -> (Arc<Vec<Record>>, Vec<Decoded>) {
        let parsed = match ahead.parsed.await {
            Ok(p) => p,
            // The job was dropped (the pool shut down): parsed here instead.
            Err(_) => self.parse_plain(&ahead.batch),
        };
        let events = self.decrypt_rest(&ahead.batch, parsed).await;
        (ahead.batch, events)
    }

    /// Parses the records that hold nothing encrypted (`None` for the others); on all the
    /// decoder's threads when called on one of them.
    fn parse_plain(&self, batch: &[Record]) -> Vec<Option<Decoded>> {
        use rayon::prelude::*;
        let plain = |r: &Record| -> Option<Decoded> {
            let Ok(text) = std::str::from_utf8(&r.payload) else {
                return Some(None);
            };
            if self.keyring.is_some() && text.contains(PREFIX) {
                return None;
            }
            Some(serde_json::from_str(text).ok().map(with_parsed))
        };
        if rayon::current_thread_index().is_some() && batch.len() > 1 {
            batch.par_iter().map(plain).collect()
        } else {
            batch.iter().map(plain).collect()
        }
    }

    /// `parsed`, with the records it left out decrypted and parsed.
    async fn decrypt_rest(&self, batch: &[Record], parsed: Vec<Option<Decoded>>) -> Vec<Decoded> {
        let mut out = Vec::with_capacity(batch.len());
        for (r, p) in batch.iter().zip(parsed) {
            out.push(match p {
                Some(e) => e,
                None => self
                    .decrypt(TenantId(r.tenant), &r.payload)
                    .await
                    .map(with_parsed),
            });
        }
        out
    }

    async fn decrypt(&self, tenant: TenantId, payload: &[u8]) -> Option<Event> {
        let text = std::str::from_utf8(payload).ok()?;
        match &self.keyring {
            Some(k) if text.contains(PREFIX) => match k.decrypt_text(tenant, text).await {
                Ok((t, _)) => serde_json::from_str(&t).ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot decrypt an event for profiles");
                    None
                }
            },
            // Nothing encrypted: parsed where it lies.
            _ => serde_json::from_str(text).ok(),
        }
    }

    /// Every event of `tenant` before log offset `upto`, decrypted, in log order (the
    /// service's own announcements left out: they are not behaviour).
    pub async fn tenant_events(
        &self,
        log: &EventLog,
        tenant: TenantId,
        upto: u64,
    ) -> Result<Vec<Event>, ServiceError> {
        Ok(self
            .tenant_records(log, tenant, 0, upto)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// The events of `tenant` in log offsets `[from, upto)`, with their offsets.
    async fn tenant_records(
        &self,
        log: &EventLog,
        tenant: TenantId,
        from: u64,
        upto: u64,
    ) -> Result<Vec<(u64, Event)>, ServiceError> {
        let mut reader = log.reader(from)?;
        let mut out = Vec::new();
        while reader.position() < upto {
            let batch = reader.next_batch(10_000)?;
            if batch.is_empty() {
                break;
            }
            for r in batch {
                if r.offset >= upto {
                    break;
                }
                if r.tenant == tenant.0
                    && let Some(e) = self.decrypt(tenant, &r.payload).await
                    && !is_system(&e)
                {
                    out.push((r.offset, e));
                }
            }
        }
        Ok(out)
    }

    /// The tenant's events up to what has been applied to it, read while the follower goes
    /// on: returns them with the offset they reach and runs `then` under the tenant's lock
    /// once nothing was applied in between (what was applied meanwhile is read too).
    async fn with_events<T>(
        &self,
        log: &EventLog,
        tenant: TenantId,
        mut then: impl FnMut(&mut TenantState, &[(u64, Event)], u64) -> T,
    ) -> Result<T, ServiceError> {
        let t = self.tenant(tenant);
        let mut read_to = 0;
        let mut records = Vec::new();
        loop {
            let upto = lock(&t).applied;
            records.extend(self.tenant_records(log, tenant, read_to, upto).await?);
            read_to = upto;
            let mut state = lock(&t);
            if state.applied == upto {
                return Ok(then(&mut state, &records, upto));
            }
        }
    }

    /// Rebuilds a tenant's profiles from the log (with its segments and un-merges), and
    /// announces what changed: after an erasure, what the log no longer reveals is gone
    /// from memory too. The tenant's follower waits while the rebuild runs.
    pub async fn rebuild_tenant(
        &self,
        log: &EventLog,
        tenant: TenantId,
    ) -> Result<(), ServiceError> {
        let now = self.now();
        let unmerges: Vec<Unmerge> = self
            .store
            .unmerges()
            .await?
            .into_iter()
            .filter(|u| u.tenant == tenant)
            .collect();
        let changes: Vec<(u64, MergeRules)> = self
            .store
            .rules_changes()
            .await?
            .into_iter()
            .filter(|c| c.tenant == tenant)
            .filter_map(|c| Some((c.log_offset, parse_rules(&c.rules).ok()?)))
            .collect();
        let rules = self.rules.clone();
        let budget = self.budget();
        let (before, after) = self
            .with_events(log, tenant, |state, records, upto| {
                // Checked again here: retention may have run while the events were read.
                if log.start_offset() > state.history_from {
                    return Err(ServiceError::HistoryGone(log.start_offset()));
                }
                let mut engine = Engine::new(rules.clone());
                engine.set_budget(budget.clone());
                install_all(&mut engine, state.engine.specs().to_vec(), now);
                let mut pending = unmerges.iter().filter(|u| u.log_offset <= upto).peekable();
                let mut rule_changes = changes.iter().peekable();
                let mut events: Vec<Event> = Vec::with_capacity(records.len());
                for (offset, e) in records {
                    while let Some((_, r)) = rule_changes.next_if(|(at, _)| at <= offset) {
                        engine.set_rules(r.clone());
                    }
                    while let Some(u) = pending.next_if(|u| u.log_offset <= *offset) {
                        if let Err(err) = engine.unmerge(u.merge_id, &events, now) {
                            tracing::warn!(error = %err, merge = u.merge_id, "stored un-merge does not apply");
                        }
                    }
                    engine.apply(e, now);
                    events.push(e.clone());
                }
                for (_, r) in rule_changes {
                    engine.set_rules(r.clone());
                }
                for u in pending {
                    if let Err(err) = engine.unmerge(u.merge_id, &events, now) {
                        tracing::warn!(error = %err, merge = u.merge_id, "stored un-merge does not apply");
                    }
                }
                let before = state.engine.membership();
                state.engine = engine;
                state.dirty = true;
                Ok((before, state.engine.membership()))
            })
            .await??;
        self.snapshot_soon.store(true, Ordering::Release);
        if self.caught_up() {
            self.announce(log, diff(tenant, &before, &after, now)).await;
        }
        Ok(())
    }

    /// Forgets what the profiles hold of an erased person's personal data: the tenant is
    /// rebuilt from the log (which no longer reveals it) while the log holds all of the
    /// tenant's events; afterwards, the person's traits and identifiers other than user
    /// and anonymous ids are dropped in place. Either way, a snapshot round follows at once.
    pub async fn erase(
        &self,
        log: &EventLog,
        tenant: TenantId,
        person: Option<PersonId>,
    ) -> Result<(), ServiceError> {
        let rebuilt = self.history_complete(log, tenant)
            && match self.rebuild_tenant(log, tenant).await {
                // Retention got there first.
                Err(ServiceError::HistoryGone(_)) => false,
                other => other.map(|()| true)?,
            };
        if !rebuilt && let Some(person) = person {
            let now = self.now();
            let t = self.tenant(tenant);
            let transitions = {
                let mut state = lock(&t);
                state.dirty = true;
                state.engine.erase_personal(person, now)
            };
            self.announce_outside(log, tenant, transitions).await;
        }
        // Durable before the answer: a crash must not bring the erased data back.
        self.write_tenant_now(tenant).await
    }

    /// Sets the models' predictions of the persons holding each set of keys (`u:…`,
    /// `a:…`), and announces the segment changes that follow. Returns how many persons
    /// were found.
    pub async fn set_predictions(
        &self,
        log: &EventLog,
        tenant: TenantId,
        updates: Vec<(Vec<String>, BTreeMap<String, f64>)>,
    ) -> usize {
        let now = self.now();
        let t = self.tenant(tenant);
        let (found, transitions) = {
            let mut state = lock(&t);
            let graph = state.engine.profiles().graph();
            let resolved: Vec<(PersonId, BTreeMap<String, f64>)> = updates
                .into_iter()
                .filter_map(|(keys, v)| {
                    keys.iter()
                        .find_map(|k| graph.person_of_key(k))
                        .map(|p| (p, v))
                })
                .collect();
            let found = resolved.len();
            state.dirty = true;
            (found, state.engine.set_predictions(resolved, now))
        };
        self.announce_outside(log, tenant, transitions).await;
        found
    }

    /// Applies one record (in log order), decoded as `event`.
    fn apply(
        &self,
        record: &Record,
        event: Option<&(Event, Parsed)>,
        announce: bool,
    ) -> Vec<(TenantId, Transition, Option<u64>)> {
        let tenant = TenantId(record.tenant);
        let Some((event, parsed)) = event else {
            return Vec::new();
        };
        let t = self.tenant(tenant);
        let mut state = lock(&t);
        if record.offset < state.applied {
            // Already in the snapshot the tenant was read back from.
            return Vec::new();
        }
        state.applied = record.offset + 1;
        state.dirty = true;
        if is_system(event) {
            note_announcement(&mut state, event);
            return Vec::new();
        }
        let (applied, transitions) = state.engine.apply_parsed(event, parsed, self.now());
        // Persons merged away no longer exist: nothing more is announced for them.
        for gone in &applied.absorbed {
            for set in state.announced.values_mut() {
                set.remove(*gone);
            }
        }
        drop(state);
        if !announce {
            return Vec::new();
        }
        transitions
            .into_iter()
            .map(|tr| (tenant, tr, Some(record.offset)))
            .collect()
    }

    /// Announces transitions that no log record caused (an erasure, new predictions), once
    /// the log has been read up to where it ended at start (before, the catch-up's diff
    /// announces them).
    async fn announce_outside(
        &self,
        log: &EventLog,
        tenant: TenantId,
        transitions: Vec<Transition>,
    ) {
        if self.caught_up() {
            let out = transitions
                .into_iter()
                .map(|tr| (tenant, tr, None))
                .collect();
            self.announce(log, out).await;
        }
    }

    /// Appends announcements for `transitions` to the log.
    pub async fn announce(
        &self,
        log: &EventLog,
        transitions: Vec<(TenantId, Transition, Option<u64>)>,
    ) {
        let records = self.announcements(transitions);
        if records.is_empty() {
            return;
        }
        if let Err(e) = log.append(records).await {
            tracing::error!(error = %e, "cannot append segment announcements");
        }
    }

    /// Records `transitions` as announced and returns the events that announce them, to
    /// append in this order. The events are written on the decoder's threads when there
    /// are many: the follower only records.
    fn announcements(
        &self,
        transitions: Vec<(TenantId, Transition, Option<u64>)>,
    ) -> Vec<NewRecord> {
        use rayon::prelude::*;
        let now = Utc::now();
        let mut todo = Vec::with_capacity(transitions.len());
        for (tenant, tr, cause) in transitions {
            let t = self.tenant(tenant);
            let mut state = lock(&t);
            let set = state
                .announced
                .entry((tr.segment.clone(), tr.tag))
                .or_default();
            if tr.entered {
                set.insert(tr.person);
            } else {
                set.remove(tr.person);
            }
            let to = addressee(state.engine.profiles().graph().identifiers(tr.person), &tr);
            drop(state);
            todo.push((tenant, tr, to, cause));
        }
        let build = |(tenant, tr, to, _): &(TenantId, Transition, Addressee, Option<u64>)| {
            let event = announcement(tr, to.clone(), now);
            NewRecord {
                tenant: tenant.0,
                id: event.message_id.clone(),
                payload: serde_json::to_vec(&event).unwrap_or_default(),
            }
        };
        let records: Vec<NewRecord> = match self.decoder.get_or_init(decoder_pool) {
            Some(pool) if todo.len() > 16 => pool.install(|| todo.par_iter().map(build).collect()),
            _ => todo.iter().map(build).collect(),
        };
        if let Some(lags) = self.lags.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let at = now.timestamp_micros();
            lags.extend(
                todo.iter()
                    .filter_map(|(_, _, _, cause)| cause.map(|o| (o, at))),
            );
        }
        records
    }

    /// Announces what changed while nobody was announcing: memberships now versus what the
    /// log says was announced.
    async fn catch_up(&self, log: &EventLog) {
        let now = self.now();
        let mut out = Vec::new();
        for (tenant, t) in self.all_tenants() {
            let mut state = lock(&t);
            let membership = state.engine.membership();
            let mut seen = HashSet::new();
            let none = AnnouncedSet::default();
            for ((id, tag), members) in membership {
                let said = state.announced.get(&(id.clone(), tag)).unwrap_or(&none);
                for &p in members.iter().filter(|p| !said.contains(**p)) {
                    out.push((tenant, transition(&id, tag, p, true, now), None));
                }
                for p in said.iter().filter(|p| !members.contains(p)) {
                    out.push((tenant, transition(&id, tag, p, false, now), None));
                }
                seen.insert((id, tag));
            }
            // Segments deleted since: their members left.
            for ((id, tag), said) in &state.announced {
                if !seen.contains(&(id.clone(), *tag)) {
                    for p in said.iter() {
                        out.push((tenant, transition(id, *tag, p, false, now), None));
                    }
                }
            }
            state.announced.retain(|k, _| seen.contains(k));
        }
        self.announce(log, out).await;
    }

    /// Follows the log until the task is dropped.
    pub async fn follow(self: Arc<Self>, log: EventLog) {
        if let Err(e) = self.clone().follow_inner(log).await {
            tracing::error!(error = %e, "profiles stopped following the log");
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        }
    }

    async fn follow_inner(self: Arc<Self>, log: EventLog) -> Result<(), ServiceError> {
        // Started here, so that they run at the follower's priority.
        self.decoder.get_or_init(decoder_pool);
        // Registered first, so that retention keeps what the snapshots do not hold.
        let mut consumer = match &self.snapshots {
            Some(_) => Some(log.consumer(snapshot::CONSUMER)?),
            None => None,
        };
        let from = self.restore(&log).await?;
        self.load().await?;
        let restored = self
            .restored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut unmerges: BTreeMap<u64, Vec<Unmerge>> = BTreeMap::new();
        for u in self.store.unmerges().await? {
            // Those a snapshot holds already are not done twice.
            if restored.get(&u.tenant).is_some_and(|&at| u.log_offset < at) {
                continue;
            }
            unmerges.entry(u.log_offset).or_default().push(u);
        }
        let mut rules: BTreeMap<u64, Vec<RulesChange>> = BTreeMap::new();
        for c in self.store.rules_changes().await? {
            if restored.get(&c.tenant).is_some_and(|&at| c.log_offset < at) {
                continue;
            }
            rules.entry(c.log_offset).or_default().push(c);
        }
        let start_end = log.end_offset();
        let mut reader = log.reader(from)?;
        self.applied.store(reader.position(), Ordering::Release);
        let mut changes = log.subscribe();
        let mut last_round = Instant::now();
        // The snapshot round being written, if any.
        let mut round: Option<Round> = None;
        // The announcements of the last batch, while the log writes them.
        let mut in_flight: Option<(u64, Appending)> = None;
        // The batch after the one being applied, while it is parsed.
        let mut ahead: Option<Ahead> = None;
        loop {
            let stopping = self.stopping.load(Ordering::Acquire);
            if stopping {
                self.settle(&mut in_flight).await;
            }
            if let Some(c) = consumer.as_mut()
                && (stopping || round.as_ref().is_some_and(|r| r.0.is_finished()))
                && let Some(r) = round.take()
            {
                r.finish(c).await;
            }
            if self.caught_up()
                && round.is_none()
                && let (Some(c), Some(s)) = (consumer.as_mut(), &self.snapshots)
                && (stopping
                    || last_round.elapsed() >= s.every
                    || self.snapshot_soon.load(Ordering::Acquire))
            {
                self.snapshot_soon.store(false, Ordering::Release);
                last_round = Instant::now();
                // A round records what was announced: that must be in the log first.
                self.settle(&mut in_flight).await;
                round = self.start_round().await;
                if stopping && let Some(r) = round.take() {
                    r.finish(c).await;
                }
            }
            if stopping {
                return Ok(());
            }
            // Small batches: their announcements go out when the batch is done.
            let (batch, events) = if let Some(a) = ahead.take() {
                self.decode_ahead_done(a).await
            } else {
                let batch = match reader.next_batch(BATCH) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "profiles read failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if !batch.is_empty() {
                    let events = self.decode(&batch).await;
                    (Arc::new(batch), events)
                } else {
                    self.settle(&mut in_flight).await;
                    if !self.caught_up() && reader.position() >= start_end {
                        self.replay_rules(&mut rules, u64::MAX);
                        self.replay_unmerges(&log, &mut unmerges, u64::MAX).await;
                        // Before the catch-up: its diff then announces their members once.
                        self.install_pending(&log).await;
                        self.catch_up(&log).await;
                        self.caught_up.store(true, Ordering::Release);
                    }
                    if self.caught_up() {
                        let out = self.tick();
                        self.announce(&log, out).await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
                    continue;
                }
            };
            // The next batch is parsed on the decoder's threads while this one is applied
            // (a failed read is tried again, and reported, in the next round).
            if let Some(pool) = self.decoder.get_or_init(decoder_pool)
                && let Ok(next) = reader.next_batch(BATCH)
                && !next.is_empty()
            {
                ahead = Some(self.decode_ahead(pool, next));
            }
            let mut out = Vec::new();
            for (record, event) in batch.iter().zip(&events) {
                if !self.caught_up() {
                    self.replay_rules(&mut rules, record.offset);
                    self.replay_unmerges(&log, &mut unmerges, record.offset)
                        .await;
                    if record.offset >= start_end {
                        self.install_pending(&log).await;
                        self.catch_up(&log).await;
                        self.caught_up.store(true, Ordering::Release);
                    }
                }
                out.extend(self.apply(record, event.as_ref(), self.caught_up()));
                self.applied.store(record.offset + 1, Ordering::Release);
            }
            self.trim_profiles();
            // Freed on the decoder's threads: a batch is many small allocations.
            match self.decoder.get() {
                Some(Some(pool)) => pool.spawn(move || drop((events, batch))),
                _ => drop((events, batch)),
            }
            // Queued now, in order; the next batch is applied while they are written.
            self.settle(&mut in_flight).await;
            let _writing = self.writing.lock().await;
            let records = self.announcements(out);
            if !records.is_empty() {
                match log.submit(records) {
                    Ok(f) => {
                        let seq = self.submitted.fetch_add(1, Ordering::AcqRel) + 1;
                        in_flight = Some((seq, Box::pin(f)));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot append segment announcements"),
                }
            }
        }
    }

    /// Applies the stored merge-rule changes recorded at or before `offset`.
    fn replay_rules(&self, pending: &mut BTreeMap<u64, Vec<RulesChange>>, offset: u64) {
        while let Some(entry) = pending.first_entry() {
            if *entry.key() > offset {
                break;
            }
            for c in entry.remove() {
                match parse_rules(&c.rules) {
                    Ok(r) => lock(&self.tenant(c.tenant)).engine.set_rules(r),
                    Err(e) => {
                        tracing::error!(tenant = %c.tenant, error = %e, "stored merge rules are unreadable")
                    }
                }
            }
        }
    }

    /// Changes a tenant's merge rules for the events that come next, and records the
    /// change (with the log offset it takes effect at) for replays.
    pub async fn set_rules(
        &self,
        tenant: TenantId,
        rules: MergeRules,
        by: &str,
    ) -> Result<(), ServiceError> {
        rules.validate()?;
        // While the log is read again, a change would be ordered among the old ones wrongly.
        if !self.caught_up() {
            return Err(ServiceError::NotReady);
        }
        let t = self.tenant(tenant);
        let (offset, before) = {
            let mut state = lock(&t);
            let before = state.engine.profiles().graph().rules().clone();
            state.engine.set_rules(rules.clone());
            state.dirty = true;
            (state.applied, before)
        };
        let change = RulesChange {
            tenant,
            log_offset: offset,
            rules: serde_json::to_string(&rules).unwrap_or_default(),
            changed_by: by.to_owned(),
            changed_at: Utc::now(),
        };
        if let Err(e) = self.store.add_rules_change(&change).await {
            // Not recorded: not in force either.
            lock(&t).engine.set_rules(before);
            return Err(e.into());
        }
        self.snapshot_soon.store(true, Ordering::Release);
        Ok(())
    }

    /// Applies the stored un-merges recorded at or before `offset`.
    async fn replay_unmerges(
        &self,
        log: &EventLog,
        pending: &mut BTreeMap<u64, Vec<Unmerge>>,
        offset: u64,
    ) {
        while let Some(entry) = pending.first_entry() {
            if *entry.key() > offset {
                break;
            }
            for u in entry.remove() {
                let t = self.tenant(u.tenant);
                let undone = lock(&t).engine.profiles().graph().undone().iter().any(
                    |r| matches!(r, crate::identity::MergeRecord::Merged { id, .. } if *id == u.merge_id),
                );
                if undone {
                    continue;
                }
                if !self.history_complete(log, u.tenant) {
                    tracing::error!(tenant = %u.tenant, merge = u.merge_id, "cannot replay an un-merge: the log no longer holds the tenant's early events");
                    continue;
                }
                let events = match self.tenant_events(log, u.tenant, u.log_offset).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot replay an un-merge");
                        continue;
                    }
                };
                let now = self.now();
                if let Err(e) = lock(&t).engine.unmerge(u.merge_id, &events, now) {
                    tracing::warn!(error = %e, merge = u.merge_id, "stored un-merge does not apply");
                }
            }
        }
    }

    /// Fires the timers due on every tenant.
    pub fn tick(&self) -> Vec<(TenantId, Transition, Option<u64>)> {
        let now = self.now();
        let mut out = Vec::new();
        for (tenant, t) in self.all_tenants() {
            let mut state = lock(&t);
            let fired = state.engine.advance(now);
            if !fired.is_empty() {
                state.dirty = true;
            }
            for tr in fired {
                out.push((tenant, tr, None));
            }
        }
        out
    }

    /// Saves a segment or tag: stores it, installs it (backfilling from the tenant's
    /// events) and announces its members.
    pub async fn save(
        &self,
        log: &EventLog,
        tenant: TenantId,
        record: SegmentRecord,
        spec: Spec,
    ) -> Result<(), ServiceError> {
        self.install(log, tenant, spec).await?;
        self.store.save_segment(tenant, &record).await?;
        Ok(())
    }

    /// Deletes a segment or tag; its members leave it.
    pub async fn delete(
        &self,
        log: &EventLog,
        tenant: TenantId,
        id: &str,
        tag: bool,
    ) -> Result<bool, ServiceError> {
        let t = self.tenant(tenant);
        let now = self.now();
        let (before, after) = {
            let mut state = lock(&t);
            let before = state.engine.membership();
            match state.engine.remove(id, tag, now) {
                Ok(()) => {}
                Err(crate::segments::SegmentError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            state.dirty = true;
            (before, state.engine.membership())
        };
        self.snapshot_soon.store(true, Ordering::Release);
        self.store.delete_segment(tenant, id, tag).await?;
        self.announce(log, diff(tenant, &before, &after, now)).await;
        Ok(true)
    }

    /// Undoes a merge, records it for replays, and announces what changed.
    pub async fn unmerge(
        &self,
        log: &EventLog,
        tenant: TenantId,
        merge_id: u64,
        by: &str,
    ) -> Result<(), ServiceError> {
        if !self.caught_up() {
            return Err(ServiceError::NotReady);
        }
        if !self.history_complete(log, tenant) {
            return Err(ServiceError::HistoryGone(log.start_offset()));
        }
        let now = self.now();
        let (upto, transitions) = self
            .with_events(log, tenant, |state, records, upto| {
                // Checked again here: retention may have run while the events were read.
                if log.start_offset() > state.history_from {
                    return Err(ServiceError::HistoryGone(log.start_offset()));
                }
                let events: Vec<Event> = records.iter().map(|(_, e)| e.clone()).collect();
                let out = state.engine.unmerge(merge_id, &events, now)?;
                state.dirty = true;
                Ok::<_, ServiceError>((upto, out))
            })
            .await??;
        self.snapshot_soon.store(true, Ordering::Release);
        self.store
            .add_unmerge(
                &Unmerge {
                    tenant,
                    merge_id,
                    log_offset: upto,
                },
                by,
            )
            .await?;
        let out = transitions
            .into_iter()
            .map(|tr| (tenant, tr, None))
            .collect();
        self.announce(log, out).await;
        Ok(())
    }
}

fn transition(
    id: &str,
    tag: bool,
    person: PersonId,
    entered: bool,
    at: DateTime<Utc>,
) -> Transition {
    Transition {
        segment: id.to_owned(),
        tag,
        person,
        entered,
        at,
    }
}

fn diff(
    tenant: TenantId,
    before: &[((String, bool), PersonSet)],
    after: &[((String, bool), PersonSet)],
    at: DateTime<Utc>,
) -> Vec<(TenantId, Transition, Option<u64>)> {
    let old: HashMap<&(String, bool), &PersonSet> = before.iter().map(|(k, v)| (k, v)).collect();
    let new: HashMap<&(String, bool), &PersonSet> = after.iter().map(|(k, v)| (k, v)).collect();
    let empty = PersonSet::new();
    let mut out = Vec::new();
    for (k, now_in) in &new {
        let was = old.get(k).copied().unwrap_or(&empty);
        for &p in now_in.difference(was) {
            out.push((tenant, transition(&k.0, k.1, p, true, at), None));
        }
        for &p in was.difference(now_in) {
            out.push((tenant, transition(&k.0, k.1, p, false, at), None));
        }
    }
    for (k, was) in &old {
        if !new.contains_key(k) {
            for &p in *was {
                out.push((tenant, transition(&k.0, k.1, p, false, at), None));
            }
        }
    }
    out
}

/// Announcements on their way into the log.
type Appending = std::pin::Pin<
    Box<dyn Future<Output = Result<livora_log::AppendOutcome, livora_log::Error>> + Send>,
>;

/// Keeps track of what the log announced, from an announcement read back.
fn note_announcement(state: &mut TenantState, e: &Event) {
    let props: Value = e
        .properties
        .as_deref()
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let Some(person) = props.get("person_id").and_then(Value::as_u64) else {
        return;
    };
    let (key, tag) = match (props.get("segment_id"), props.get("tag")) {
        (Some(Value::String(s)), _) => (s.clone(), false),
        (_, Some(Value::String(t))) => (t.clone(), true),
        _ => return,
    };
    let entered = matches!(e.event.as_deref(), Some("Segment Entered" | "Tag Added"));
    let set = state.announced.entry((key, tag)).or_default();
    if entered {
        set.insert(person);
    } else {
        set.remove(person);
    }
}

/// A record as the follower applies it: the event with its traits and properties parsed
/// (`None`: not an event).
type Decoded = Option<(Event, Parsed)>;

/// A snapshot round being written: answers its offset.
struct Round(tokio::task::JoinHandle<Result<u64, snapshot::SnapshotError>>);

impl Round {
    /// Waits for the round; commits its offset for the log's retention.
    async fn finish(self, consumer: &mut Consumer) {
        match self.0.await {
            Ok(Ok(offset)) => {
                if let Err(e) = consumer.commit(offset) {
                    tracing::warn!(error = %e, "cannot commit the profiles snapshot offset");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "profiles snapshot failed"),
            Err(e) => tracing::error!(error = %e, "profiles snapshot task failed"),
        }
    }
}

/// Records the follower reads at a time.
const BATCH: usize = 1000;

/// A batch read ahead, being parsed on the decoder's threads.
struct Ahead {
    batch: Arc<Vec<Record>>,
    parsed: tokio::sync::oneshot::Receiver<Vec<Option<Decoded>>>,
}

fn with_parsed(e: Event) -> (Event, Parsed) {
    let parsed = Parsed::of(&e);
    (e, parsed)
}

/// Who an announcement is about: `(user_id, anonymous_id)`.
type Addressee = (Option<String>, Option<String>);

/// The person's user id, else its anonymous id (else one made of the person's id).
fn addressee(ids: Option<&crate::identity::IdSet>, tr: &Transition) -> Addressee {
    let first = |kind: &str| {
        ids.into_iter()
            .flatten()
            .find(|i| i.kind() == kind)
            .map(|i| i.value().to_owned())
    };
    match first(USER_ID) {
        Some(user) => (Some(user), None),
        None => (
            None,
            Some(first(ANONYMOUS_ID).unwrap_or_else(|| format!("$person:{}", tr.person))),
        ),
    }
}

/// The event announcing a transition, for `to` (see [`addressee`]).
fn announcement(tr: &Transition, to: Addressee, now: DateTime<Utc>) -> Event {
    let (user_id, anonymous_id) = to;
    let mut props = tr.properties();
    props["person_id"] = json!(tr.person);
    let message_id = format!(
        "lv-{}-{}-{}-{}-{}",
        if tr.tag { "tag" } else { "seg" },
        tr.segment,
        tr.person,
        u8::from(tr.entered),
        tr.at.timestamp_micros()
    );
    Event {
        kind: EventType::Track,
        message_id,
        user_id,
        anonymous_id,
        event: Some(tr.event_name().to_owned()),
        name: None,
        category: None,
        group_id: None,
        previous_id: None,
        // A `Value` always serializes: the fallback is never taken.
        properties: serde_json::value::to_raw_value(&props).ok(),
        traits: None,
        context: serde_json::Map::from_iter([("library".to_owned(), json!({"name": LIBRARY}))]),
        integrations: serde_json::Map::new(),
        timestamp: tr.at,
        original_timestamp: None,
        sent_at: None,
        received_at: now,
        timestamp_clamped: false,
    }
}

/// Whether an event is one of the service's own announcements.
fn is_system(e: &Event) -> bool {
    e.kind == EventType::Track
        && livora_model::RESERVED_EVENTS.contains(&e.event.as_deref().unwrap_or_default())
        && e.message_id.starts_with("lv-")
        && e.context
            .get("library")
            .and_then(|l| l.get("name"))
            .and_then(Value::as_str)
            == Some(LIBRARY)
}

/// Stored merge rules, as the engine takes them.
pub fn parse_rules(text: &str) -> Result<MergeRules, String> {
    let rules: MergeRules = serde_json::from_str(text).map_err(|e| e.to_string())?;
    rules.validate().map_err(|e| e.to_string())?;
    Ok(rules)
}

/// The `context.library.name` of announcements.
const LIBRARY: &str = "livora-profiles";

/// Installs `specs`, retrying the ones that refer to segments installed later (stored
/// order is not dependency order).
fn install_all(engine: &mut Engine, specs: Vec<Spec>, now: DateTime<Utc>) {
    let mut pending = specs;
    for _ in 0..=pending.len() {
        pending.retain(|s| engine.upsert(s.clone(), [], now).is_err());
        if pending.is_empty() {
            return;
        }
    }
    for s in pending {
        tracing::error!(segment = %s.id, "a stored segment refers to a missing one");
    }
}
