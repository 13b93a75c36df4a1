//! The profiles service: follows the event log and keeps every tenant's [`Engine`] up to
//! date, announces segment changes back into the log, and answers the API.
//!
//! - State is a function of the log: on start the whole log is read again (personal fields
//!   decrypted with the [`Keyring`]), with the segment definitions and un-merges from the
//!   metadata store (an un-merge is replayed at the log offset where it happened).
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
use std::time::Duration;

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use livora_log::{EventLog, NewRecord, Record};
use livora_model::{Event, EventType, TenantId};
use livora_store::MetadataStore;
use livora_store::crypto::{Keyring, PREFIX};
use livora_store::profiles::{SegmentRecord, Unmerge};
use serde_json::{Value, json};

use crate::MergeRules;
use crate::identity::{ANONYMOUS_ID, Identifier, PersonId, USER_ID};
use crate::segments::{Engine, Rule, Spec, Transition};

/// Where the time comes from (tests inject their own).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Event names the service writes; they are announcements, not behaviour.
pub const SYSTEM_EVENTS: [&str; 4] = [
    "Segment Entered",
    "Segment Exited",
    "Tag Added",
    "Tag Removed",
];

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
    #[error("stored segment {0:?} is unreadable: {1}")]
    Corrupt(String, String),
}

/// One tenant's engine, and what the log has announced of its memberships.
pub struct TenantState {
    pub engine: Engine,
    /// One past the last log offset applied to this tenant.
    pub applied: u64,
    announced: HashMap<(String, bool), HashSet<PersonId>>,
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
    /// announcement was made (µs since the Unix epoch).
    lags: Mutex<Vec<(u64, i64)>>,
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
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            keyring,
            clock,
            rules,
            tenants: RwLock::new(HashMap::new()),
            applied: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            lags: Mutex::new(Vec::new()),
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
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
    /// announced since the last call.
    pub fn take_lags(&self) -> Vec<(u64, i64)> {
        std::mem::take(&mut *self.lags.lock().unwrap_or_else(|e| e.into_inner()))
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
                    engine: Engine::new(self.rules.clone()),
                    applied: 0,
                    announced: HashMap::new(),
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

    /// The JSON text to store for a rule: a manual list's identifiers are encrypted (under a
    /// key of the segment's own) when encryption at rest is on.
    pub async fn stored_rule(
        &self,
        tenant: TenantId,
        id: &str,
        tag: bool,
        rule: &Rule,
    ) -> Result<String, ServiceError> {
        match rule {
            Rule::Condition(def) => Ok(serde_json::to_string(def).unwrap_or_default()),
            Rule::Manual(ids) => {
                let list = serde_json::to_value(ids).unwrap_or_default();
                let Some(k) = &self.keyring else {
                    return Ok(json!({"manual": list}).to_string());
                };
                // `decrypt_text` decrypts values under `properties`: keep the list there.
                let subject = format!("s:{}{id}", if tag { "tag:" } else { "" });
                let keys = k
                    .subject_keys(tenant, std::slice::from_ref(&subject))
                    .await?;
                let key = keys.get(&subject).ok_or_else(|| {
                    ServiceError::Corrupt(id.to_owned(), "no key for the list".into())
                })?;
                Ok(json!({"properties": {"manual": key.encrypt(&list)}}).to_string())
            }
        }
    }

    /// Loads the stored definitions into the engines (at start, before the log is read).
    pub async fn load(&self) -> Result<(), ServiceError> {
        let now = self.now();
        let mut by_tenant: HashMap<TenantId, Vec<Spec>> = HashMap::new();
        for (tenant, record) in self.store.all_segments().await? {
            // One unreadable definition must not stop the others (or other tenants).
            let spec = match self.rule_text(tenant, &record).await {
                Ok(mut text) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&text)
                        && let Some(inner) = v.pointer("/properties/manual")
                    {
                        text = json!({"manual": inner}).to_string();
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
        for (tenant, specs) in by_tenant {
            let t = self.tenant(tenant);
            install_all(&mut lock(&t).engine, specs, now);
        }
        Ok(())
    }

    async fn decrypt(&self, tenant: TenantId, payload: &[u8]) -> Option<Event> {
        let text = std::str::from_utf8(payload).ok()?;
        let text = match &self.keyring {
            Some(k) if text.contains(PREFIX) => match k.decrypt_text(tenant, text).await {
                Ok((t, _)) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot decrypt an event for profiles");
                    return None;
                }
            },
            _ => text.to_owned(),
        };
        serde_json::from_str(&text).ok()
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
        let rules = self.rules.clone();
        let (before, after) = self
            .with_events(log, tenant, |state, records, upto| {
                let mut engine = Engine::new(rules.clone());
                install_all(&mut engine, state.engine.specs().to_vec(), now);
                let mut pending = unmerges.iter().filter(|u| u.log_offset <= upto).peekable();
                let mut events: Vec<Event> = Vec::with_capacity(records.len());
                for (offset, e) in records {
                    while let Some(u) = pending.next_if(|u| u.log_offset <= *offset) {
                        if let Err(err) = engine.unmerge(u.merge_id, &events, now) {
                            tracing::warn!(error = %err, merge = u.merge_id, "stored un-merge does not apply");
                        }
                    }
                    engine.apply(e, now);
                    events.push(e.clone());
                }
                for u in pending {
                    if let Err(err) = engine.unmerge(u.merge_id, &events, now) {
                        tracing::warn!(error = %err, merge = u.merge_id, "stored un-merge does not apply");
                    }
                }
                let before = state.engine.membership();
                state.engine = engine;
                (before, state.engine.membership())
            })
            .await?;
        if self.caught_up() {
            self.announce(log, diff(tenant, &before, &after, now)).await;
        }
        Ok(())
    }

    /// Applies one record (in log order).
    async fn apply(
        &self,
        record: &Record,
        announce: bool,
    ) -> Vec<(TenantId, Transition, Option<u64>)> {
        let tenant = TenantId(record.tenant);
        let Some(event) = self.decrypt(tenant, &record.payload).await else {
            return Vec::new();
        };
        let t = self.tenant(tenant);
        let mut state = lock(&t);
        state.applied = record.offset + 1;
        if is_system(&event) {
            note_announcement(&mut state, &event);
            return Vec::new();
        }
        let (applied, transitions) = state.engine.apply(&event, self.now());
        // Persons merged away no longer exist: nothing more is announced for them.
        for gone in &applied.absorbed {
            for set in state.announced.values_mut() {
                set.remove(gone);
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

    /// Appends announcements for `transitions` to the log.
    pub async fn announce(
        &self,
        log: &EventLog,
        transitions: Vec<(TenantId, Transition, Option<u64>)>,
    ) {
        if transitions.is_empty() {
            return;
        }
        let mut records = Vec::with_capacity(transitions.len());
        let now = Utc::now();
        for (tenant, tr, cause) in &transitions {
            let t = self.tenant(*tenant);
            let mut state = lock(&t);
            let set = state
                .announced
                .entry((tr.segment.clone(), tr.tag))
                .or_default();
            if tr.entered {
                set.insert(tr.person);
            } else {
                set.remove(&tr.person);
            }
            let ids = state
                .engine
                .profiles()
                .graph()
                .identifiers(tr.person)
                .cloned()
                .unwrap_or_default();
            drop(state);
            let Some(event) = announcement(tr, &ids, now) else {
                continue;
            };
            if let Some(offset) = cause {
                self.lags
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((*offset, now.timestamp_micros()));
            }
            records.push(NewRecord {
                tenant: tenant.0,
                id: event.message_id.clone(),
                payload: serde_json::to_vec(&event).unwrap_or_default(),
            });
        }
        if let Err(e) = log.append(records).await {
            tracing::error!(error = %e, "cannot append segment announcements");
        }
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
            for ((id, tag), members) in membership {
                let said = state
                    .announced
                    .get(&(id.clone(), tag))
                    .cloned()
                    .unwrap_or_default();
                for &p in members.difference(&said) {
                    out.push((tenant, transition(&id, tag, p, true, now), None));
                }
                for &p in said.difference(&members) {
                    out.push((tenant, transition(&id, tag, p, false, now), None));
                }
                seen.insert((id, tag));
            }
            // Segments deleted since: their members left.
            for ((id, tag), said) in &state.announced {
                if !seen.contains(&(id.clone(), *tag)) {
                    for &p in said {
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
        }
    }

    async fn follow_inner(self: Arc<Self>, log: EventLog) -> Result<(), ServiceError> {
        self.load().await?;
        let mut unmerges: BTreeMap<u64, Vec<Unmerge>> = BTreeMap::new();
        for u in self.store.unmerges().await? {
            unmerges.entry(u.log_offset).or_default().push(u);
        }
        let start_end = log.end_offset();
        let mut reader = log.reader(0)?;
        let mut changes = log.subscribe();
        loop {
            // Small batches: their announcements go out when the batch is done.
            let batch = match reader.next_batch(1000) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "profiles read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                if !self.caught_up() && reader.position() >= start_end {
                    self.replay_unmerges(&log, &mut unmerges, u64::MAX).await;
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
            let mut out = Vec::new();
            for record in &batch {
                if !self.caught_up() {
                    self.replay_unmerges(&log, &mut unmerges, record.offset)
                        .await;
                    if record.offset >= start_end {
                        self.catch_up(&log).await;
                        self.caught_up.store(true, Ordering::Release);
                    }
                }
                out.extend(self.apply(record, self.caught_up()).await);
                self.applied.store(record.offset + 1, Ordering::Release);
            }
            self.announce(&log, out).await;
        }
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
                let events = match self.tenant_events(log, u.tenant, u.log_offset).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot replay an un-merge");
                        continue;
                    }
                };
                let t = self.tenant(u.tenant);
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
            for tr in lock(&t).engine.advance(now) {
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
        let now = self.now();
        let caught_up = self.caught_up();
        let (before, after) = self
            .with_events(log, tenant, |state, records, _| {
                let before = state.engine.membership();
                let events = records.iter().map(|(_, e)| e);
                state.engine.upsert(spec.clone(), events, now)?;
                Ok::<_, ServiceError>((before, state.engine.membership()))
            })
            .await??;
        self.store.save_segment(tenant, &record).await?;
        if caught_up {
            self.announce(log, diff(tenant, &before, &after, now)).await;
        }
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
            (before, state.engine.membership())
        };
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
        let now = self.now();
        let (upto, transitions) = self
            .with_events(log, tenant, |state, records, upto| {
                let events: Vec<Event> = records.iter().map(|(_, e)| e.clone()).collect();
                Ok::<_, ServiceError>((upto, state.engine.unmerge(merge_id, &events, now)?))
            })
            .await??;
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
    before: &[((String, bool), HashSet<PersonId>)],
    after: &[((String, bool), HashSet<PersonId>)],
    at: DateTime<Utc>,
) -> Vec<(TenantId, Transition, Option<u64>)> {
    let old: HashMap<&(String, bool), &HashSet<PersonId>> =
        before.iter().map(|(k, v)| (k, v)).collect();
    let new: HashMap<&(String, bool), &HashSet<PersonId>> =
        after.iter().map(|(k, v)| (k, v)).collect();
    let empty = HashSet::new();
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
        set.remove(&person);
    }
}

/// The event announcing a transition, for the person's user id (else anonymous id).
fn announcement(tr: &Transition, ids: &BTreeSet<Identifier>, now: DateTime<Utc>) -> Option<Event> {
    let first = |kind: &str| ids.iter().find(|i| i.kind == kind).map(|i| i.value.clone());
    let user_id = first(USER_ID);
    let anonymous_id = if user_id.is_none() {
        Some(first(ANONYMOUS_ID).unwrap_or_else(|| format!("$person:{}", tr.person)))
    } else {
        None
    };
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
    let raw = serde_json::value::RawValue::from_string(props.to_string()).ok()?;
    Some(Event {
        kind: EventType::Track,
        message_id,
        user_id,
        anonymous_id,
        event: Some(tr.event_name().to_owned()),
        name: None,
        category: None,
        group_id: None,
        previous_id: None,
        properties: Some(raw),
        traits: None,
        context: serde_json::Map::from_iter([("library".to_owned(), json!({"name": LIBRARY}))]),
        integrations: serde_json::Map::new(),
        timestamp: tr.at,
        original_timestamp: None,
        sent_at: None,
        received_at: now,
        timestamp_clamped: false,
    })
}

/// Whether an event is one of the service's own announcements.
fn is_system(e: &Event) -> bool {
    e.kind == EventType::Track
        && SYSTEM_EVENTS.contains(&e.event.as_deref().unwrap_or_default())
        && e.message_id.starts_with("lv-")
        && e.context
            .get("library")
            .and_then(|l| l.get("name"))
            .and_then(Value::as_str)
            == Some(LIBRARY)
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
