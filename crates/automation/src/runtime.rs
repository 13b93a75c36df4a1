//! The workflow runtime: which events start journeys, and what each journey does next.
//!
//! [`Runtime`] is a deterministic state machine with no I/O: events ([`Runtime::on_event`])
//! and the passage of time ([`Runtime::advance`], with the time given, so tests never sleep)
//! go in; changed [`Journey`]s and [`Effect`]s (messages to send, traits to set) come out.
//! The service around it writes both, with the log offset they reflect, in one store
//! transaction, so a crash loses or repeats nothing: after a restart the journeys are read
//! back ([`Runtime::restore`]) and the log is read on from that offset.
//!
//! - A journey's id is derived from the workflow and the event that started it, and a
//!   message's idempotency key from the journey and the step; reading an event twice starts
//!   nothing twice, and the outbox drops a message it already holds.
//! - Workflows cannot loop (validation refuses it), so each step runs at most once per
//!   journey and a journey's run ends after at most as many steps as the workflow has.
//! - Editing a workflow adds a version; a journey finishes on the version it started on.
//! - Splits and the holdout group are decided by hashing the journey (or person) id: the
//!   same input always gives the same branch.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc};
use livora_model::workflow::{Action, Category, Reentry, Trigger, Workflow};
use livora_model::{Event, TenantId};
use livora_profiles::compare;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::people::{People, Person};
use crate::template;

/// One version of a workflow, as the runtime runs it.
#[derive(Debug, Clone)]
pub struct Version {
    pub tenant: TenantId,
    pub workflow: String,
    pub version: u32,
    pub definition: Workflow,
}

/// Why a journey ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran to its last step or an `exit`.
    Completed,
    /// The person reached the goal.
    Goal,
    /// The awaited event came and the wait led to the end.
    Event,
}

/// A person's way through one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    /// `j-<workflow>-<hash of the tenant, the triggering event and the person>`.
    pub id: String,
    pub tenant: TenantId,
    pub workflow: String,
    pub version: u32,
    /// The key that names the person ([`Person::key`]) when the journey started.
    pub person: String,
    /// The triggering event: `{"event", "properties", "timestamp", "message_id"}`.
    pub trigger: Value,
    /// The step it is at (`None` once ended).
    pub step: Option<usize>,
    /// When its timer fires (µs since the epoch): the end of a delay or a wait's timeout.
    pub wake_at: Option<i64>,
    pub entered_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    /// In the holdout group: it goes through the steps but no message is sent.
    pub holdout: bool,
    /// The ids of the steps it ran, in order.
    pub path: Vec<String>,
    /// The person's keys it is found by (those they had when it started, and any seen on
    /// their events since).
    #[serde(default)]
    pub keys: Vec<String>,
}

impl Journey {
    pub fn is_active(&self) -> bool {
        self.ended_at.is_none()
    }
}

/// A message decided by a journey, for the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `<journey id>/<step id>`: the outbox holds one message per key, and providers are
    /// given it as the idempotency key.
    pub key: String,
    pub tenant: TenantId,
    pub workflow: String,
    pub version: u32,
    pub journey: String,
    pub step: String,
    pub person: String,
    pub channel: String,
    pub category: Category,
    pub subscription: Option<String>,
    /// The address (email, phone, push token or URL), when the profile has one.
    pub to: Option<String>,
    /// The rendered parts (`subject`, `body`, …).
    pub content: Map<String, Value>,
    /// The person's time zone (for quiet hours).
    pub time_zone: Option<String>,
    pub decided_at: DateTime<Utc>,
    /// Why it cannot be sent, when that is known already (no address, a template error):
    /// it goes straight to the dead letters.
    pub error: Option<String>,
}

/// What a journey asks the service to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(Message),
    /// Set a trait on the person (the service appends an `identify` with `key` as its
    /// message id, so doing it twice changes nothing).
    SetTrait {
        tenant: TenantId,
        person: String,
        name: String,
        value: Value,
        key: String,
    },
    /// A step was skipped for the holdout group (counted, never sent).
    HeldOut {
        journey: String,
        step: String,
    },
}

/// What one call changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Journeys started, moved on or ended (their state now).
    pub journeys: Vec<Journey>,
    pub effects: Vec<Effect>,
}

impl Changes {
    fn touch(&mut self, j: &Journey) {
        match self.journeys.iter_mut().find(|x| x.id == j.id) {
            Some(x) => *x = j.clone(),
            None => self.journeys.push(j.clone()),
        }
    }
}

/// An event as the runtime matches it.
struct Occurrence {
    name: String,
    properties: Map<String, Value>,
    message_id: String,
    timestamp: DateTime<Utc>,
}

impl Occurrence {
    fn of(e: &Event) -> Self {
        let properties = e
            .properties
            .as_ref()
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default();
        Self {
            name: e.event.clone().unwrap_or_default(),
            properties,
            message_id: e.message_id.clone(),
            timestamp: e.timestamp,
        }
    }

    fn value(&self) -> Value {
        json!({
            "event": self.name,
            "properties": self.properties,
            "timestamp": self.timestamp.to_rfc3339(),
            "message_id": self.message_id,
        })
    }
}

fn filters_match(
    filters: &[livora_model::segment::PropertyFilter],
    props: &Map<String, Value>,
    now: i64,
) -> bool {
    filters
        .iter()
        .all(|f| compare::matches(props.get(&f.property), f.op, &f.value, now))
}

/// Whether `props` has the same value as the triggering event for every name in `same`.
fn same_as_trigger(same: &[String], props: &Map<String, Value>, trigger: &Value) -> bool {
    same.iter()
        .all(|k| match (props.get(k), trigger["properties"].get(k)) {
            (Some(a), Some(b)) => !a.is_null() && a == b,
            _ => false,
        })
}

/// The id of the journey of a tenant's `workflow` that `seed` (the triggering event and
/// person, or an API call's idempotency key) starts.
pub fn journey_id(tenant: TenantId, workflow: &str, seed: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_128(format!("{}|{workflow}|{seed}", tenant.0).as_bytes());
    format!("j-{workflow}-{h:032x}")
}

/// A number in 0..100 from a text: the holdout group and splits.
fn bucket(text: &str, modulo: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes()) % modulo.max(1)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The next instant at `hour:minute` local time on one of `days` (Monday = 0), strictly
/// after `now`.
pub fn next_local_time(
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    (hour, minute): (u32, u32),
    days: &[u32],
) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&tz).date_naive();
    let time = NaiveTime::from_hms_opt(hour, minute, 0)?;
    for ahead in 0..8 {
        let date = local + Duration::days(ahead);
        if !days.contains(&date.weekday().num_days_from_monday()) {
            continue;
        }
        // A time skipped by a daylight-saving change moves on by an hour.
        let at = match tz.from_local_datetime(&date.and_time(time)) {
            chrono::LocalResult::Single(t) => t,
            chrono::LocalResult::Ambiguous(t, _) => t,
            chrono::LocalResult::None => {
                match tz.from_local_datetime(&(date.and_time(time) + Duration::hours(1))) {
                    chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t,
                    chrono::LocalResult::None => continue,
                }
            }
        };
        let at = at.with_timezone(&Utc);
        if at > now {
            return Some(at);
        }
    }
    None
}

/// Every tenant's workflows and active journeys, with their timers.
#[derive(Default)]
pub struct Runtime {
    /// Versions by (tenant, workflow id), oldest first.
    versions: HashMap<(TenantId, String), Vec<Version>>,
    /// The version new journeys start on (absent: the workflow is paused).
    live: HashMap<(TenantId, String), u32>,
    /// Active journeys by id.
    journeys: HashMap<String, Journey>,
    /// Active journeys by (tenant, person key), for every key the person had when the
    /// journey started or was last seen.
    by_person: HashMap<(TenantId, String), BTreeSet<String>>,
    /// The last journey of each (tenant, workflow, person): when it started, and whether
    /// it is still running (re-entry rules).
    last: HashMap<(TenantId, String, String), (DateTime<Utc>, bool)>,
    /// (wake time in µs, journey id).
    timers: BTreeSet<(i64, String)>,
    /// Tenant time zones (UTC when absent).
    zones: HashMap<TenantId, chrono_tz::Tz>,
    /// The next run (µs) of each live scheduled workflow; set at the first
    /// [`Runtime::advance`] after it goes live, so a run missed while the node was down
    /// is not made up.
    schedules: HashMap<(TenantId, String), i64>,
}

impl Runtime {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_time_zone(&mut self, tenant: TenantId, tz: chrono_tz::Tz) {
        self.zones.insert(tenant, tz);
    }

    /// Adds a version (versions are kept: journeys finish on the one they started on).
    pub fn add_version(&mut self, v: Version) {
        let list = self
            .versions
            .entry((v.tenant, v.workflow.clone()))
            .or_default();
        list.retain(|x| x.version != v.version);
        list.push(v);
        list.sort_by_key(|x| x.version);
    }

    /// Starts new journeys on `version` of the workflow (`None`: pauses it; running
    /// journeys go on).
    pub fn set_live(&mut self, tenant: TenantId, workflow: &str, version: Option<u32>) {
        match version {
            Some(v) => self.live.insert((tenant, workflow.to_owned()), v),
            None => self.live.remove(&(tenant, workflow.to_owned())),
        };
    }

    fn version(&self, tenant: TenantId, workflow: &str, version: u32) -> Option<&Version> {
        self.versions
            .get(&(tenant, workflow.to_owned()))?
            .iter()
            .find(|v| v.version == version)
    }

    /// Puts back journeys read from the store, active or ended (ended ones only feed the
    /// re-entry rules).
    pub fn restore(&mut self, journeys: impl IntoIterator<Item = Journey>) {
        for j in journeys {
            let last = (j.tenant, j.workflow.clone(), j.person.clone());
            let newer = self
                .last
                .get(&last)
                .is_none_or(|(at, _)| *at <= j.entered_at);
            if newer {
                self.last.insert(last, (j.entered_at, j.is_active()));
            }
            if j.is_active() {
                if let Some(w) = j.wake_at {
                    self.timers.insert((w, j.id.clone()));
                }
                let (id, tenant, mut keys) = (j.id.clone(), j.tenant, j.keys.clone());
                if !keys.contains(&j.person) {
                    keys.push(j.person.clone());
                }
                self.journeys.insert(id.clone(), j);
                self.index(tenant, &id, &keys);
            }
        }
    }

    /// Active journeys.
    pub fn active(&self) -> impl Iterator<Item = &Journey> {
        self.journeys.values()
    }

    pub fn journey(&self, id: &str) -> Option<&Journey> {
        self.journeys.get(id)
    }

    /// The number of waiting timers.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// When the next timer (or scheduled run) fires.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        let timer = self.timers.first().map(|(t, _)| *t);
        let schedule = self.schedules.values().min().copied();
        [timer, schedule]
            .into_iter()
            .flatten()
            .min()
            .and_then(DateTime::from_timestamp_micros)
    }

    /// Starts the journeys of every scheduled workflow due at `now` (each member of its
    /// audience enters, with the run's time in the seed: a run never starts a person twice).
    fn run_schedules(&mut self, now: DateTime<Utc>, people: &dyn People, changes: &mut Changes) {
        let due = micros(now);
        let mut live: Vec<(TenantId, String, u32)> = Vec::new();
        for ((t, wf), v) in &self.live {
            if let Some(version) = self.version(*t, wf, *v)
                && matches!(version.definition.trigger, Trigger::Schedule(_))
            {
                live.push((*t, wf.clone(), *v));
            }
        }
        self.schedules
            .retain(|k, _| live.iter().any(|(t, w, _)| (*t, w) == (k.0, &k.1)));
        for (tenant, wf, version) in live {
            let Some(Trigger::Schedule(s)) = self
                .version(tenant, &wf, version)
                .map(|v| v.definition.trigger.clone())
            else {
                continue;
            };
            let Ok(cron) = s.parsed() else { continue };
            let tz = self.zones.get(&tenant).copied().unwrap_or(chrono_tz::UTC);
            let next_after = |t: DateTime<Utc>| {
                cron.find_next_occurrence(&t.with_timezone(&tz), false)
                    .ok()
                    .map(|n| micros(n.with_timezone(&Utc)))
            };
            let key = (tenant, wf.clone());
            let Some(&at) = self.schedules.get(&key) else {
                if let Some(n) = next_after(now) {
                    self.schedules.insert(key, n);
                }
                continue;
            };
            if at > due {
                continue;
            }
            let run = DateTime::from_timestamp_micros(at).unwrap_or(now);
            for person in people.audience(tenant, s.segment.as_deref()) {
                let trigger = json!({"event": "Scheduled", "properties": {"run": run.to_rfc3339()},
                    "timestamp": run.to_rfc3339(), "message_id": format!("cron-{at}")});
                let seed = format!("cron|{at}|{}", person.key());
                self.start(
                    tenant, &wf, version, &person, trigger, &seed, people, now, changes,
                );
            }
            match next_after(now) {
                Some(n) => self.schedules.insert(key, n),
                None => self.schedules.remove(&key),
            };
        }
    }

    /// Finds journey `id` by each of `keys` from now on.
    fn index(&mut self, tenant: TenantId, id: &str, keys: &[String]) {
        for k in keys {
            self.by_person
                .entry((tenant, k.clone()))
                .or_default()
                .insert(id.to_owned());
        }
        if let Some(j) = self.journeys.get_mut(id) {
            for k in keys {
                if !j.keys.contains(k) {
                    j.keys.push(k.clone());
                }
            }
        }
    }

    fn unindex(&mut self, j: &Journey) {
        for k in &j.keys {
            let key = (j.tenant, k.clone());
            if let Some(ids) = self.by_person.get_mut(&key) {
                ids.remove(&j.id);
                if ids.is_empty() {
                    self.by_person.remove(&key);
                }
            }
        }
    }

    /// Reacts to an event: goals and awaited events of the person's journeys first, then
    /// the triggers of live workflows.
    pub fn on_event(
        &mut self,
        tenant: TenantId,
        event: &Event,
        people: &dyn People,
        now: DateTime<Utc>,
    ) -> Changes {
        let mut changes = Changes::default();
        if event.kind != livora_model::EventType::Track {
            return changes;
        }
        let Some(person) = people.of_event(tenant, event) else {
            return changes;
        };
        let occ = Occurrence::of(event);
        self.advance_journeys(tenant, &person, &occ, people, now, &mut changes);
        self.start_journeys(tenant, &person, &occ, people, now, &mut changes);
        changes
    }

    fn advance_journeys(
        &mut self,
        tenant: TenantId,
        person: &Person,
        occ: &Occurrence,
        people: &dyn People,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let mut ids = BTreeSet::new();
        for k in &person.keys {
            if let Some(set) = self.by_person.get(&(tenant, k.clone())) {
                ids.extend(set.iter().cloned());
            }
        }
        let secs = now.timestamp();
        for id in ids {
            let Some(j) = self.journeys.get(&id) else {
                continue;
            };
            let j = j.clone();
            // A person seen under a new key (they signed in): find the journey by it too.
            if person.keys.iter().any(|k| !j.keys.contains(k)) {
                self.index(tenant, &id, &person.keys);
            }
            let Some(v) = self.version(tenant, &j.workflow, j.version) else {
                continue;
            };
            let def = v.definition.clone();
            if let Some(goal) = &def.goal
                && goal.event == occ.name
                && filters_match(&goal.filters, &occ.properties, secs)
                && same_as_trigger(&goal.same, &occ.properties, &j.trigger)
            {
                self.end(&id, Outcome::Goal, now, changes);
                continue;
            }
            let Some(i) = j.step else { continue };
            if let Action::WaitFor(w) = &def.steps[i].action
                && w.event == occ.name
                && filters_match(&w.filters, &occ.properties, secs)
                && same_as_trigger(&w.same, &occ.properties, &j.trigger)
            {
                let next = w.on_event.as_deref().and_then(|t| def.position(t));
                self.move_to(
                    &id,
                    next,
                    Outcome::Event,
                    person,
                    &def,
                    people,
                    now,
                    changes,
                );
            }
        }
    }

    fn start_journeys(
        &mut self,
        tenant: TenantId,
        person: &Person,
        occ: &Occurrence,
        people: &dyn People,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let secs = now.timestamp();
        let mut starting = Vec::new();
        for ((t, wf), version) in &self.live {
            if *t != tenant {
                continue;
            }
            let Some(v) = self.version(tenant, wf, *version) else {
                continue;
            };
            let hit = match &v.definition.trigger {
                Trigger::Event(m) => {
                    m.name == occ.name && filters_match(&m.filters, &occ.properties, secs)
                }
                Trigger::SegmentEntered(s) => {
                    occ.name == "Segment Entered"
                        && occ.properties.get("segment_id") == Some(&json!(s))
                }
                Trigger::SegmentExited(s) => {
                    occ.name == "Segment Exited"
                        && occ.properties.get("segment_id") == Some(&json!(s))
                }
                Trigger::TagAdded(s) => {
                    occ.name == "Tag Added" && occ.properties.get("tag") == Some(&json!(s))
                }
                Trigger::TagRemoved(s) => {
                    occ.name == "Tag Removed" && occ.properties.get("tag") == Some(&json!(s))
                }
                Trigger::Schedule(_) | Trigger::Api(_) => false,
            };
            if hit {
                starting.push((wf.clone(), *version));
            }
        }
        starting.sort();
        for (wf, version) in starting {
            let trigger = occ.value();
            let seed = format!("{}|{}", occ.message_id, person.key());
            self.start(
                tenant, &wf, version, person, trigger, &seed, people, now, changes,
            );
        }
    }

    /// Starts a journey of `workflow` for `person` through the API (or a schedule):
    /// `seed` names the occurrence (the same seed never starts two journeys).
    #[allow(clippy::too_many_arguments)]
    pub fn trigger(
        &mut self,
        tenant: TenantId,
        workflow: &str,
        person: &Person,
        data: Value,
        seed: &str,
        people: &dyn People,
        now: DateTime<Utc>,
    ) -> Changes {
        let mut changes = Changes::default();
        if let Some(version) = self.live.get(&(tenant, workflow.to_owned())).copied() {
            let trigger = json!({"event": "API Triggered", "properties": data,
                "timestamp": now.to_rfc3339(), "message_id": seed});
            self.start(
                tenant,
                workflow,
                version,
                person,
                trigger,
                seed,
                people,
                now,
                &mut changes,
            );
        }
        changes
    }

    /// Whether the re-entry rule lets `person` start `workflow` now.
    fn may_enter(
        &self,
        tenant: TenantId,
        workflow: &str,
        rule: Reentry,
        person: &Person,
        now: DateTime<Utc>,
    ) -> bool {
        let last = person
            .keys
            .iter()
            .filter_map(|k| self.last.get(&(tenant, workflow.to_owned(), k.clone())))
            .max_by_key(|(at, _)| *at);
        match (rule, last) {
            (_, None) | (Reentry::Always, _) => true,
            (Reentry::Once, Some(_)) => false,
            (Reentry::AfterExit, Some((_, active))) => !active,
            (Reentry::AfterDays(d), Some((at, active))) => {
                !active && now - *at >= Duration::days(i64::from(d))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        tenant: TenantId,
        workflow: &str,
        version: u32,
        person: &Person,
        trigger: Value,
        seed: &str,
        people: &dyn People,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let Some(v) = self.version(tenant, workflow, version) else {
            return;
        };
        let def = v.definition.clone();
        let id = journey_id(tenant, workflow, seed);
        if self.journeys.contains_key(&id)
            || !self.may_enter(tenant, workflow, def.reentry, person, now)
        {
            return;
        }
        let holdout = def.holdout_percent > 0
            && bucket(&format!("{workflow}|{}", person.key()), 100)
                < u64::from(def.holdout_percent);
        let j = Journey {
            id: id.clone(),
            tenant,
            workflow: workflow.to_owned(),
            version,
            person: person.key().to_owned(),
            trigger,
            step: Some(0),
            wake_at: None,
            entered_at: now,
            ended_at: None,
            outcome: None,
            holdout,
            path: Vec::new(),
            keys: Vec::new(),
        };
        self.last
            .insert((tenant, workflow.to_owned(), j.person.clone()), (now, true));
        self.journeys.insert(id.clone(), j);
        self.index(tenant, &id, &person.keys);
        self.run(&id, person, &def, people, now, changes);
    }

    /// Moves a journey to step `next` (`None`: ends it with `outcome`) and runs on.
    #[allow(clippy::too_many_arguments)]
    fn move_to(
        &mut self,
        id: &str,
        next: Option<usize>,
        outcome: Outcome,
        person: &Person,
        def: &Workflow,
        people: &dyn People,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let Some(j) = self.journeys.get_mut(id) else {
            return;
        };
        if let Some(w) = j.wake_at.take() {
            self.timers.remove(&(w, id.to_owned()));
        }
        match next {
            None => self.end(id, outcome, now, changes),
            Some(n) => {
                j.step = Some(n);
                self.run(id, person, def, people, now, changes);
            }
        }
    }

    fn end(&mut self, id: &str, outcome: Outcome, now: DateTime<Utc>, changes: &mut Changes) {
        let Some(mut j) = self.journeys.remove(id) else {
            return;
        };
        if let Some(w) = j.wake_at.take() {
            self.timers.remove(&(w, id.to_owned()));
        }
        j.step = None;
        j.ended_at = Some(now);
        j.outcome = Some(outcome);
        self.unindex(&j);
        if let Some(last) = self
            .last
            .get_mut(&(j.tenant, j.workflow.clone(), j.person.clone()))
            && last.0 == j.entered_at
        {
            last.1 = false;
        }
        changes.touch(&j);
    }

    /// Runs the journey's steps from where it is until it waits or ends.
    fn run(
        &mut self,
        id: &str,
        person: &Person,
        def: &Workflow,
        _people: &dyn People,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let Some(tenant) = self.journeys.get(id).map(|j| j.tenant) else {
            return;
        };
        let tz = person
            .time_zone()
            .or_else(|| self.zones.get(&tenant).copied())
            .unwrap_or(chrono_tz::UTC);
        // No loops: at most one pass over the steps.
        for _ in 0..=def.steps.len() {
            let Some(j) = self.journeys.get_mut(id) else {
                return;
            };
            let Some(i) = j.step else { return };
            let step = &def.steps[i];
            j.path.push(step.id.clone());
            let wait_until =
                |at: DateTime<Utc>, j: &mut Journey, timers: &mut BTreeSet<(i64, String)>| {
                    j.wake_at = Some(micros(at));
                    timers.insert((micros(at), j.id.clone()));
                };
            let next = match &step.action {
                Action::Delay(d) => {
                    wait_until(now + Duration::seconds(d.seconds()), j, &mut self.timers);
                    changes.touch(j);
                    return;
                }
                Action::DelayUntil(t) => {
                    let days = t.days().unwrap_or_default();
                    match t
                        .hour_minute()
                        .and_then(|hm| next_local_time(now, tz, hm, &days))
                    {
                        Some(at) => {
                            wait_until(at, j, &mut self.timers);
                            changes.touch(j);
                            return;
                        }
                        None => def.after(i),
                    }
                }
                Action::DelayUntilTrait(t) => {
                    let at = person
                        .traits
                        .get(&t.name)
                        .and_then(compare::time)
                        .and_then(|s| DateTime::from_timestamp(s, 0))
                        .map(|at| at + Duration::minutes(i64::from(t.offset_minutes)));
                    match at {
                        Some(at) if at > now => {
                            wait_until(at, j, &mut self.timers);
                            changes.touch(j);
                            return;
                        }
                        _ => def.after(i),
                    }
                }
                Action::WaitFor(w) => {
                    wait_until(
                        now + Duration::minutes(i64::from(w.timeout_minutes)),
                        j,
                        &mut self.timers,
                    );
                    changes.touch(j);
                    return;
                }
                Action::Branch(b) => {
                    let target = if person.satisfies(&b.condition, now.timestamp()) {
                        b.then.as_deref()
                    } else {
                        b.otherwise.as_deref()
                    };
                    def.go(i, target)
                }
                Action::Split(s) => {
                    let total: u64 = s.branches.iter().map(|b| u64::from(b.weight)).sum();
                    let mut pick = bucket(&format!("{}|{}", j.id, step.id), total);
                    let mut target = None;
                    for b in &s.branches {
                        if pick < u64::from(b.weight) {
                            target = b.next.as_deref();
                            break;
                        }
                        pick -= u64::from(b.weight);
                    }
                    def.go(i, target)
                }
                Action::Send(s) => {
                    let key = format!("{}/{}", j.id, step.id);
                    if j.holdout {
                        changes.effects.push(Effect::HeldOut {
                            journey: j.id.clone(),
                            step: step.id.clone(),
                        });
                    } else {
                        let ctx = template::context(person, &j.trigger);
                        let (content, error) = match template::render_parts(&s.template, &ctx) {
                            Ok(c) => (c, None),
                            Err(e) => (Map::new(), Some(e)),
                        };
                        let to = address(&s.channel, person);
                        let error = error.or_else(|| {
                            to.is_none()
                                .then(|| format!("the person has no {} address", s.channel))
                        });
                        changes.effects.push(Effect::Send(Message {
                            key,
                            tenant: j.tenant,
                            workflow: j.workflow.clone(),
                            version: j.version,
                            journey: j.id.clone(),
                            step: step.id.clone(),
                            person: j.person.clone(),
                            channel: s.channel.clone(),
                            category: s.category,
                            subscription: s.subscription.clone(),
                            to,
                            content,
                            time_zone: Some(tz.name().to_owned()),
                            decided_at: now,
                            error,
                        }));
                    }
                    def.after(i)
                }
                Action::Webhook(w) => {
                    let key = format!("{}/{}", j.id, step.id);
                    let ctx = template::context(person, &j.trigger);
                    let body = match &w.body {
                        Some(t) => template::render(t, &ctx),
                        None => Ok(ctx.to_string()),
                    };
                    let (content, error) = match body {
                        Ok(b) => (
                            Map::from_iter([("body".to_owned(), Value::String(b))]),
                            None,
                        ),
                        Err(e) => (Map::new(), Some(e)),
                    };
                    if j.holdout {
                        changes.effects.push(Effect::HeldOut {
                            journey: j.id.clone(),
                            step: step.id.clone(),
                        });
                    } else {
                        changes.effects.push(Effect::Send(Message {
                            key,
                            tenant: j.tenant,
                            workflow: j.workflow.clone(),
                            version: j.version,
                            journey: j.id.clone(),
                            step: step.id.clone(),
                            person: j.person.clone(),
                            channel: "webhook".into(),
                            category: Category::Transactional,
                            subscription: None,
                            to: Some(w.url.clone()),
                            content,
                            time_zone: None,
                            decided_at: now,
                            error,
                        }));
                    }
                    def.after(i)
                }
                Action::UpdateTrait(t) => {
                    changes.effects.push(Effect::SetTrait {
                        tenant: j.tenant,
                        person: j.person.clone(),
                        name: t.name.clone(),
                        value: t.value.clone(),
                        key: format!("{}/{}", j.id, step.id),
                    });
                    def.after(i)
                }
                Action::Exit(_) => None,
            };
            match next {
                Some(n) => j.step = Some(n),
                None => {
                    self.end(id, Outcome::Completed, now, changes);
                    return;
                }
            }
        }
    }

    /// Fires every timer due at `now`: delays end, waits time out.
    pub fn advance(&mut self, now: DateTime<Utc>, people: &dyn People) -> Changes {
        let mut changes = Changes::default();
        self.run_schedules(now, people, &mut changes);
        let due = micros(now);
        while let Some((at, id)) = self.timers.first().cloned() {
            if at > due {
                break;
            }
            self.timers.remove(&(at, id.clone()));
            let Some(j) = self.journeys.get_mut(&id) else {
                continue;
            };
            j.wake_at = None;
            let (tenant, person_key, workflow, version, step) = (
                j.tenant,
                j.person.clone(),
                j.workflow.clone(),
                j.version,
                j.step,
            );
            let Some(def) = self
                .version(tenant, &workflow, version)
                .map(|v| v.definition.clone())
            else {
                continue;
            };
            let person = people
                .by_key(tenant, &person_key)
                .unwrap_or_else(|| Person {
                    keys: vec![person_key.clone()],
                    ..Person::default()
                });
            let Some(i) = step else { continue };
            let next = match &def.steps[i].action {
                Action::WaitFor(w) => def.go(i, w.on_timeout.as_deref()),
                _ => def.after(i),
            };
            self.move_to(
                &id,
                next,
                Outcome::Completed,
                &person,
                &def,
                people,
                now,
                &mut changes,
            );
        }
        changes
    }

    /// Every tenant, workflow and live version (for listing).
    pub fn live_versions(&self) -> Vec<(TenantId, String, u32)> {
        let mut out: Vec<_> = self
            .live
            .iter()
            .map(|((t, w), v)| (*t, w.clone(), *v))
            .collect();
        out.sort();
        out
    }

    /// The ids of the active journeys of a person (by any of their keys).
    pub fn journeys_of(&self, tenant: TenantId, keys: &[String]) -> Vec<&Journey> {
        let mut seen = HashSet::new();
        keys.iter()
            .filter_map(|k| self.by_person.get(&(tenant, k.clone())))
            .flatten()
            .filter(|id| seen.insert((*id).clone()))
            .filter_map(|id| self.journeys.get(id))
            .collect()
    }
}

/// Where a message on `channel` goes, from the profile.
fn address(channel: &str, person: &Person) -> Option<String> {
    let t = |name: &str| {
        person
            .traits
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    match channel {
        "email" => t("email"),
        "sms" | "whatsapp" => t("phone"),
        "push" => t("push_token"),
        _ => None,
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
