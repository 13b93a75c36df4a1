//! The automation service: follows the event log, runs the [`Runtime`], and writes what it
//! decided (journeys, new messages for the outbox, and the log offset they reflect) in one
//! store transaction.
//!
//! - The offset lives in the metadata store beside the journeys, not in a log consumer
//!   file: state and offset move together, so a crash neither skips an event nor applies
//!   one twice. Timers that fired but were not committed fire again after a restart; the
//!   journey and message keys are the same, so the outbox keeps one message.
//! - An event is read only once the profiles reflect it ([`People::ready`]), so conditions
//!   and templates see the profile with that event applied.
//! - Traits set by workflows are appended to the log as `identify` events through an
//!   [`EventSink`] (which encrypts personal fields as ingestion does), before the commit;
//!   their message ids are the step's key, so doing it again changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_log::{EventLog, Record};
use livora_model::clock::Clock;
use livora_model::workflow::Workflow;
use livora_model::{Event, EventType, TenantId};
use livora_store::MetadataStore;
use livora_store::automation::{AutomationCommit, JourneyRow, OutboxRow, OutboxStatus};
use livora_store::crypto::{Keyring, PREFIX};
use serde_json::json;

use crate::people::People;
use crate::runtime::{Changes, Effect, Journey, Message, Runtime, Version};

/// The name the service's offset is stored under.
pub const CONSUMER: &str = "automation";

/// Records read at a time.
const BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    #[error(transparent)]
    Store(#[from] livora_store::Error),
    #[error(transparent)]
    Log(#[from] livora_log::Error),
    #[error("stored {0} is unreadable: {1}")]
    Corrupt(String, String),
    #[error("appending events failed: {0}")]
    Sink(String),
}

/// Where events written by workflows go (the event log, through the same protection as
/// ingestion).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Appends `events`, Livora's own: their ids are put in its namespace
    /// ([`livora_model::internal_id`]), which clients cannot write, so none can be
    /// suppressed by a client that sent a predicted id first.
    async fn append(&self, tenant: TenantId, events: Vec<Event>) -> Result<(), String>;
}

/// Appends events to the log as they are (no encryption at rest), their ids in Livora's
/// own namespace ([`livora_model::internal_id`]).
pub struct PlainSink(pub EventLog);

#[async_trait]
impl EventSink for PlainSink {
    async fn append(&self, tenant: TenantId, mut events: Vec<Event>) -> Result<(), String> {
        for e in &mut events {
            e.message_id = livora_model::internal_id(&e.message_id);
        }
        let records = events
            .iter()
            .map(|e| {
                Ok(livora_log::NewRecord {
                    tenant: tenant.0,
                    id: e.message_id.clone(),
                    payload: serde_json::to_vec(e).map_err(|e| e.to_string())?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.0
            .append(records)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

pub struct AutomationService {
    store: Arc<dyn MetadataStore>,
    keyring: Option<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
    people: Arc<dyn People>,
    sink: Arc<dyn EventSink>,
    runtime: Mutex<Runtime>,
    /// One past the last log offset applied.
    applied: AtomicU64,
    /// Wakes the sender when messages were added.
    outbox_changed: Arc<tokio::sync::Notify>,
    /// Wakes the follower (a workflow was saved, enabled or triggered).
    poke: tokio::sync::Notify,
    /// For each message an event caused: the event's log offset and when the message was
    /// committed to the outbox (µs since the Unix epoch). `None` until
    /// [`AutomationService::take_lags`] is first called: a server that never asks keeps none.
    lags: Mutex<Option<Vec<(u64, i64)>>>,
    failure: Mutex<Option<String>>,
    /// When an offset alone was last written.
    offset_written: Mutex<std::time::Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn journey_row(j: &Journey) -> JourneyRow {
    JourneyRow {
        id: j.id.to_string(),
        tenant: j.tenant,
        workflow: j.workflow.to_string(),
        person: j.person.to_string(),
        active: j.is_active(),
        entered_at: j.entered_at,
        state: serde_json::to_string(j).unwrap_or_default(),
    }
}

/// A decided message as an outbox row (in the dead letters at once when it cannot be sent).
pub fn outbox_row(m: &Message) -> OutboxRow {
    OutboxRow {
        key: m.key.clone(),
        tenant: m.tenant,
        workflow: m.workflow.clone(),
        person: m.person.clone(),
        channel: m.channel.clone(),
        category: match m.category {
            livora_model::workflow::Category::Marketing => "marketing".into(),
            livora_model::workflow::Category::Transactional => "transactional".into(),
        },
        status: if m.error.is_some() {
            OutboxStatus::Dead
        } else {
            OutboxStatus::Pending
        },
        attempts: 0,
        due_at: m.decided_at,
        created_at: m.decided_at,
        updated_at: m.decided_at,
        reason: m.error.clone(),
        provider: None,
        provider_id: None,
        message: serde_json::to_string(m).unwrap_or_default(),
        errors: Vec::new(),
    }
}

/// The `identify` that sets a trait for a workflow step.
fn identify(
    person: &str,
    name: &str,
    value: &serde_json::Value,
    key: &str,
    now: DateTime<Utc>,
) -> Option<Event> {
    let mut v = json!({"type": "identify", "messageId": key, "traits": {name: value},
        "timestamp": now.to_rfc3339(), "receivedAt": now.to_rfc3339(),
        "context": {"library": {"name": "livora-automation"}}});
    match person.split_once(':')? {
        ("u", id) => v["userId"] = json!(id),
        ("a", id) => v["anonymousId"] = json!(id),
        _ => return None,
    }
    serde_json::from_value(v).ok()
}

impl AutomationService {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        keyring: Option<Arc<Keyring>>,
        clock: Arc<dyn Clock>,
        people: Arc<dyn People>,
        sink: Arc<dyn EventSink>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            keyring,
            clock,
            people,
            sink,
            runtime: Mutex::new(Runtime::new()),
            applied: AtomicU64::new(0),
            outbox_changed: Arc::new(tokio::sync::Notify::new()),
            poke: tokio::sync::Notify::new(),
            lags: Mutex::new(None),
            failure: Mutex::new(None),
            offset_written: Mutex::new(std::time::Instant::now()),
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Notified when messages were added to the outbox (the [`crate::outbox::Sender`]
    /// waits on it).
    pub fn outbox_changed(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_changed.clone()
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// One past the last log offset applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Records why the service cannot run.
    pub fn fail(&self, why: String) {
        *lock(&self.failure) = Some(why);
    }

    /// Why the follower stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// `(log offset of the causing event, outbox commit time in µs)` of the messages
    /// committed since the last call. The first call starts the recording (and returns
    /// nothing).
    pub fn take_lags(&self) -> Vec<(u64, i64)> {
        lock(&self.lags).replace(Vec::new()).unwrap_or_default()
    }

    /// Runs `f` on the runtime (read access for the API).
    pub fn with_runtime<R>(&self, f: impl FnOnce(&Runtime) -> R) -> R {
        f(&lock(&self.runtime))
    }

    /// Reads workflows, tenant time zones and journeys back from the store.
    pub async fn load(&self) -> Result<(), AutomationError> {
        let tenants = self.store.tenants().await?;
        let workflows = self.store.all_workflows().await?;
        let mut versions = Vec::new();
        for (tenant, w) in &workflows {
            for v in self.store.workflow_versions(*tenant, &w.id).await? {
                let json: serde_json::Value = serde_json::from_str(&v.definition).map_err(|e| {
                    AutomationError::Corrupt(format!("workflow {:?}", w.id), e.to_string())
                })?;
                let definition = Workflow::parse(&json).map_err(|e| {
                    AutomationError::Corrupt(format!("workflow {:?}", w.id), e.to_string())
                })?;
                versions.push(Version {
                    tenant: *tenant,
                    workflow: w.id.clone(),
                    version: v.version,
                    definition,
                });
            }
        }
        let mut journeys = Vec::new();
        for row in self.store.journeys_to_restore().await? {
            let j: Journey = serde_json::from_str(&row.state).map_err(|e| {
                AutomationError::Corrupt(format!("journey {:?}", row.id), e.to_string())
            })?;
            journeys.push(j);
        }
        let mut rt = lock(&self.runtime);
        for t in tenants {
            if let Ok(tz) = t.time_zone.parse() {
                rt.set_time_zone(t.id, tz);
            }
        }
        for v in versions {
            rt.add_version(v);
        }
        for (tenant, w) in &workflows {
            rt.set_live(*tenant, &w.id, w.enabled_version);
        }
        rt.restore(journeys);
        Ok(())
    }

    /// Installs a version saved in the store (and makes it live when `live`).
    pub fn install(&self, v: Version, live: Option<Option<u32>>) {
        let (tenant, id) = (v.tenant, v.workflow.clone());
        let mut rt = lock(&self.runtime);
        rt.add_version(v);
        if let Some(live) = live {
            rt.set_live(tenant, &id, live);
        }
        drop(rt);
        self.poke.notify_one();
    }

    /// Makes `version` live (`None`: pauses the workflow).
    pub fn set_live(&self, tenant: TenantId, workflow: &str, version: Option<u32>) {
        lock(&self.runtime).set_live(tenant, workflow, version);
    }

    /// Sets a tenant's time zone (delays until a local time fall back on it).
    pub fn set_time_zone(&self, tenant: TenantId, tz: chrono_tz::Tz) {
        lock(&self.runtime).set_time_zone(tenant, tz);
    }

    async fn decode(&self, r: &Record) -> Option<Event> {
        let text = std::str::from_utf8(&r.payload).ok()?;
        match &self.keyring {
            Some(k) if text.contains(PREFIX) => {
                match k.decrypt_text(TenantId(r.tenant), text).await {
                    Ok((t, _)) => serde_json::from_str(&t).ok(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot decrypt an event for automation");
                        None
                    }
                }
            }
            _ => serde_json::from_str(text).ok(),
        }
    }

    /// Writes what changed: traits first (appended to the log), then journeys, messages
    /// and the offset in one transaction.
    async fn commit(
        &self,
        changes: Changes,
        offset: Option<u64>,
        causes: &[(u64, usize)],
    ) -> Result<(), AutomationError> {
        let now = self.now();
        let mut traits: Vec<(TenantId, Event)> = Vec::new();
        let mut messages = Vec::new();
        for e in &changes.effects {
            match e {
                Effect::Send(m) => messages.push(outbox_row(m)),
                Effect::SetTrait {
                    tenant,
                    person,
                    name,
                    value,
                    key,
                } => {
                    if let Some(ev) = identify(person, name, value, key, now) {
                        traits.push((*tenant, ev));
                    }
                }
                Effect::HeldOut { .. } => {}
            }
        }
        // Grouped by tenant, in order.
        let mut i = 0;
        while i < traits.len() {
            let tenant = traits[i].0;
            let mut batch = Vec::new();
            while i < traits.len() && traits[i].0 == tenant {
                batch.push(traits[i].1.clone());
                i += 1;
            }
            self.sink
                .append(tenant, batch)
                .await
                .map_err(AutomationError::Sink)?;
        }
        let any_message = !messages.is_empty();
        if changes.journeys.is_empty() && messages.is_empty() {
            // Nothing but the offset: written at most once a second (reading those events
            // again after a crash changes nothing), so a quiet stream does not cost an fsync
            // per batch.
            let due = {
                let mut last = lock(&self.offset_written);
                let due = offset.is_some() && last.elapsed() >= Duration::from_secs(1);
                if due {
                    *last = std::time::Instant::now();
                }
                due
            };
            if !due {
                return Ok(());
            }
        }
        self.store
            .commit(AutomationCommit {
                journeys: changes.journeys.iter().map(journey_row).collect(),
                messages,
                offset: offset.map(|o| (CONSUMER.to_owned(), o)),
            })
            .await?;
        if any_message {
            let at = Utc::now().timestamp_micros();
            if let Some(lags) = lock(&self.lags).as_mut() {
                for (o, n) in causes {
                    lags.extend(std::iter::repeat_n((*o, at), *n));
                }
            }
            self.outbox_changed.notify_one();
        }
        Ok(())
    }

    /// Fires due timers and commits what they did, 10,000 at a time.
    pub async fn tick(&self) -> Result<(), AutomationError> {
        const AT_ONCE: usize = 10_000;
        let now = self.now();
        loop {
            let changes = lock(&self.runtime).advance_up_to(now, self.people.as_ref(), AT_ONCE);
            let more = changes.journeys.len() >= AT_ONCE;
            self.commit(changes, None, &[]).await?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Starts a journey through the API: `person` is a key (`u:…` / `a:…`); `seed` makes a
    /// retried call start nothing twice. `Ok(None)`: no such person, or nothing started
    /// (paused workflow, re-entry rule).
    pub async fn trigger(
        &self,
        tenant: TenantId,
        workflow: &str,
        person: &str,
        data: serde_json::Value,
        seed: &str,
    ) -> Result<Option<Journey>, AutomationError> {
        let Some(p) = self.people.by_key(tenant, person) else {
            return Ok(None);
        };
        // A journey this key started before, even one that has ended, is not started again.
        let id = crate::runtime::journey_id(tenant, workflow, seed);
        if self.store.journey(&id.to_string()).await?.is_some() {
            return Ok(None);
        }
        let now = self.now();
        let changes = lock(&self.runtime).trigger(
            tenant,
            workflow,
            &p,
            data,
            seed,
            self.people.as_ref(),
            now,
        );
        let started = changes.journeys.first().cloned();
        self.commit(changes, None, &[]).await?;
        Ok(started)
    }

    /// Applies one batch of records; returns the offset after it.
    async fn apply(&self, batch: &[Record]) -> Result<u64, AutomationError> {
        let Some(last) = batch.last() else {
            return Ok(self.applied());
        };
        // The profiles first.
        while !self.people.ready(last.offset) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut all = Changes::default();
        let mut causes = Vec::new();
        for r in batch {
            let Some(e) = self.decode(r).await else {
                continue;
            };
            if e.kind != EventType::Track {
                continue;
            }
            let now = self.now();
            let c = lock(&self.runtime).on_event(TenantId(r.tenant), &e, self.people.as_ref(), now);
            let sends = c
                .effects
                .iter()
                .filter(|e| matches!(e, Effect::Send(_)))
                .count();
            if sends > 0 {
                causes.push((r.offset, sends));
            }
            all.absorb(c);
        }
        let next = last.offset + 1;
        self.commit(all, Some(next), &causes).await?;
        Ok(next)
    }

    /// Forgets persons (erasure) by their keys: their running journeys stop, and the store
    /// keeps no journey or message that names them or says what was sent to them (pending
    /// messages are cancelled). Returns (journeys, messages) changed in the store.
    pub async fn erase(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> Result<(u64, u64), AutomationError> {
        lock(&self.runtime).forget(tenant, keys);
        Ok(self.store.erase_automation(tenant, keys).await?)
    }

    /// Runs `workflow` over the tenant's events between `from` and `to` as the log holds    /// Runs `workflow` over the tenant's events between `from` and `to` as the log holds
    /// them now, and reports what it would have sent ([`crate::backtest`]); sends nothing,
    /// stores nothing. Keeps the first `limit` messages of the report.
    pub async fn backtest(
        &self,
        log: &EventLog,
        tenant: TenantId,
        workflow: Workflow,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        policy: &crate::policy::Policy,
        limit: usize,
    ) -> Result<crate::backtest::Report, AutomationError> {
        let zone = lock(&self.runtime).time_zone(tenant);
        let mut run =
            crate::backtest::Backtest::new(tenant, workflow, zone, self.people.as_ref(), from, to);
        let end = log.end_offset();
        let mut reader = log.reader(log.start_offset())?;
        'read: loop {
            let batch = reader.next_batch(BATCH)?;
            if batch.is_empty() {
                break;
            }
            for r in &batch {
                if r.offset >= end {
                    break 'read;
                }
                if r.tenant != tenant.0 {
                    continue;
                }
                if let Some(e) = self.decode(r).await {
                    run.event(tenant, &e);
                }
            }
            tokio::task::yield_now().await;
        }
        let decided = run.finish();
        let mut consents: HashMap<String, Vec<livora_store::Consent>> = HashMap::new();
        for c in self.store.consents(tenant, &decided.persons()).await? {
            consents.entry(c.subject.clone()).or_default().push(c);
        }
        Ok(decided.judge(policy, &consents, limit))
    }

    /// Follows the log from the stored offset for ever, firing timers as they come due.
    pub async fn follow(self: Arc<Self>, log: EventLog) {
        if let Err(e) = self.follow_inner(&log).await {
            tracing::error!(error = %e, "the automation service stopped");
            *lock(&self.failure) = Some(e.to_string());
        }
    }

    async fn follow_inner(&self, log: &EventLog) -> Result<(), AutomationError> {
        let start = match self.store.automation_offset(CONSUMER).await? {
            Some(o) => o.max(log.start_offset()),
            // A new node: workflows react to what comes from now on, not to the past. The
            // place is written at once, so a restart goes on from there.
            None => {
                let end = log.end_offset();
                self.store
                    .commit(AutomationCommit {
                        offset: Some((CONSUMER.to_owned(), end)),
                        ..AutomationCommit::default()
                    })
                    .await?;
                end
            }
        };
        self.applied.store(start, Ordering::Release);
        let mut reader = log.reader(start)?;
        let mut notify = log.subscribe();
        loop {
            let batch = reader.next_batch(BATCH)?;
            if !batch.is_empty() {
                let next = self.apply(&batch).await?;
                self.applied.store(next, Ordering::Release);
            }
            self.tick().await?;
            if batch.len() < BATCH {
                let wait = lock(&self.runtime)
                    .next_wake()
                    .map(|t| (t - self.now()).to_std().unwrap_or_default())
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                tokio::select! {
                    _ = notify.changed() => {}
                    _ = self.poke.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
