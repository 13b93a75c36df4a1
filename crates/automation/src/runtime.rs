//! The workflow runtime: which events start journeys, and what each journey does next.
//!
//! [`Runtime`] is a deterministic state machine with no I/O: events ([`Runtime::on_event`])
//! and the passage of time ([`Runtime::advance`], with the time given, so tests never sleep)
//! go in; changed [`Journey`]s and [`Effect`]s (messages to send, traits to set) come out.
//! The service around it writes both, with the log offset they reflect, in one store
//! transaction, so a crash loses or repeats nothing: after a restart the journeys are read
//! back ([`Runtime::restore`]) and the log is read on from that offset.
//!
//! - A journey's id is derived from the tenant, the workflow and the event that started it,
//!   and a message's idempotency key from the journey and the step; reading an event twice
//!   starts nothing twice, and the outbox drops a message it already holds.
//! - A waiting journey is small (issue 6: a million waiting timers in at most 500 MB): a
//!   128-bit id, shared workflow and person names, the triggering event's properties as
//!   JSON text, and the positions of the steps it ran.
//! - Workflows cannot loop (validation refuses it), so each step runs at most once per
//!   journey and a journey's run ends after at most as many steps as the workflow has.
//! - Editing a workflow adds a version; a journey finishes on the version it started on.
//! - Splits and the holdout group are decided by hashing the journey (or person) id: the
//!   same input always gives the same branch.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc};
use livora_model::workflow::{Action, Category, Reentry, Trigger, Workflow};
use livora_model::{Event, TenantId};
use livora_profiles::compare;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use smallvec::SmallVec;

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
    /// It ended otherwise, and then the person reached the goal within the goal's
    /// `within_days` of entering (a conversion the workflow gets credit for).
    Converted,
}

/// A journey's id: a hash of the tenant, the workflow and what started it; `j-<32 hex>` as
/// text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JourneyId(pub u128);

impl std::fmt::Display for JourneyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "j-{:032x}", self.0)
    }
}

impl JourneyId {
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("j-")?;
        (hex.len() == 32)
            .then(|| u128::from_str_radix(hex, 16).ok().map(Self))
            .flatten()
    }
}

impl Serialize for JourneyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JourneyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("journey id {text:?}")))
    }
}

/// JSON text kept as it is, and written as JSON (not as a string).
mod raw_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        match RawValue::from_string(text.to_owned()) {
            Ok(raw) => raw.serialize(s),
            Err(_) => serde_json::Value::Null.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<str>, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(raw.get().into())
    }
}

/// A person's way through one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    pub id: JourneyId,
    pub tenant: TenantId,
    pub workflow: Arc<str>,
    pub version: u32,
    /// The key that names the person ([`Person::key`]) when the journey started.
    pub person: Arc<str>,
    /// The triggering event's properties (JSON text): what `same` compares with, and
    /// `event.properties` in templates.
    #[serde(with = "raw_json")]
    pub properties: Box<str>,
    /// The step it is at (`None` once ended).
    pub step: Option<u16>,
    /// When its timer fires (µs since the epoch): the end of a delay or a wait's timeout.
    pub wake_at: Option<i64>,
    pub entered_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    /// In the holdout group: it goes through the steps but no message is sent.
    pub holdout: bool,
    /// The positions of the steps it ran, in order.
    pub path: SmallVec<[u16; 4]>,
    /// Other keys of the person it is found by (seen on their events since it started).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<Arc<str>>,
}

impl Journey {
    pub fn is_active(&self) -> bool {
        self.ended_at.is_none()
    }

    /// Every key it is found by.
    fn all_keys(&self) -> impl Iterator<Item = &Arc<str>> {
        std::iter::once(&self.person).chain(self.keys.iter())
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
    /// Where each journey is in `journeys`.
    index: HashMap<JourneyId, usize>,
}

impl Changes {
    fn touch(&mut self, j: &Journey) {
        match self.index.get(&j.id) {
            Some(&i) => self.journeys[i] = j.clone(),
            None => {
                self.index.insert(j.id, self.journeys.len());
                self.journeys.push(j.clone());
            }
        }
    }

    /// Adds what `other` changed (a journey changed by both: its later state).
    pub fn absorb(&mut self, other: Changes) {
        for j in &other.journeys {
            self.touch(j);
        }
        self.effects.extend(other.effects);
    }
}

/// An event as the runtime matches it.
struct Occurrence {
    name: String,
    properties: Map<String, Value>,
    /// The properties as JSON text, as journeys keep them.
    text: String,
    message_id: String,
}

impl Occurrence {
    fn of(e: &Event) -> Self {
        let text = e
            .properties
            .as_ref()
            .map_or_else(|| "{}".to_owned(), |p| p.get().to_owned());
        let properties = serde_json::from_str(&text).unwrap_or_default();
        let text = if matches!(serde_json::from_str::<Value>(&text), Ok(Value::Object(_))) {
            text
        } else {
            "{}".to_owned()
        };
        Self {
            name: e.event.clone().unwrap_or_default(),
            properties,
            text,
            message_id: e.message_id.clone(),
        }
    }
}

/// The name templates see as `event.event` for a journey started by `trigger`.
fn trigger_name(trigger: &Trigger) -> &str {
    match trigger {
        Trigger::Event(m) => &m.name,
        Trigger::SegmentEntered(_) => "Segment Entered",
        Trigger::SegmentExited(_) => "Segment Exited",
        Trigger::TagAdded(_) => "Tag Added",
        Trigger::TagRemoved(_) => "Tag Removed",
        Trigger::Schedule(_) => "Scheduled",
        Trigger::Api(_) => "API Triggered",
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

/// Whether an event is the awaited one: its name, its property filters, and the same values
/// as the triggering event for `same` (goals, waits and conversions alike).
fn awaited(
    (name, filters, same): (&str, &[livora_model::segment::PropertyFilter], &[String]),
    occ: &Occurrence,
    trigger: &str,
    now: i64,
) -> bool {
    name == occ.name
        && filters_match(filters, &occ.properties, now)
        && same_as_trigger(same, &occ.properties, trigger)
}

/// A goal as [`awaited`] reads it.
fn goal_parts(
    g: &livora_model::workflow::Goal,
) -> (&str, &[livora_model::segment::PropertyFilter], &[String]) {
    (&g.event, &g.filters, &g.same)
}

/// Whether `props` has the same value as the triggering event's for every name in `same`.
fn same_as_trigger(same: &[String], props: &Map<String, Value>, trigger: &str) -> bool {
    if same.is_empty() {
        return true;
    }
    let Ok(trigger) = serde_json::from_str::<Map<String, Value>>(trigger) else {
        return false;
    };
    same.iter().all(|k| match (props.get(k), trigger.get(k)) {
        (Some(a), Some(b)) => !a.is_null() && a == b,
        _ => false,
    })
}

/// The id of the journey of a tenant's `workflow` that `seed` (the triggering event and
/// person, or an API call's idempotency key) starts.
pub fn journey_id(tenant: TenantId, workflow: &str, seed: &str) -> JourneyId {
    JourneyId(xxhash_rust::xxh3::xxh3_128(
        format!("{}|{workflow}|{seed}", tenant.0).as_bytes(),
    ))
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

/// Active journeys in one vector (slots are reused), found by id through a small table: a
/// million waiting journeys then cost one `Journey` each plus a few bytes, where a hash
/// table of journeys would hold up to twice as many slots as journeys right after it grows.
#[derive(Default)]
struct Slab {
    items: Vec<Option<Journey>>,
    free: Vec<u32>,
    slots: hashbrown::HashMap<JourneyId, u32>,
}

impl Slab {
    fn insert(&mut self, id: JourneyId, j: Journey) -> u32 {
        if let Some(&s) = self.slots.get(&id) {
            self.items[s as usize] = Some(j);
            return s;
        }
        let s = match self.free.pop() {
            Some(s) => {
                self.items[s as usize] = Some(j);
                s
            }
            None => {
                self.items.push(Some(j));
                (self.items.len() - 1) as u32
            }
        };
        self.slots.insert(id, s);
        s
    }

    fn slot(&self, id: &JourneyId) -> Option<u32> {
        self.slots.get(id).copied()
    }

    fn at(&self, slot: u32) -> Option<&Journey> {
        self.items.get(slot as usize).and_then(Option::as_ref)
    }

    fn get(&self, id: &JourneyId) -> Option<&Journey> {
        self.at(self.slot(id)?)
    }

    fn get_mut(&mut self, id: &JourneyId) -> Option<&mut Journey> {
        let s = self.slot(id)?;
        self.items.get_mut(s as usize).and_then(Option::as_mut)
    }

    fn contains_key(&self, id: &JourneyId) -> bool {
        self.slots.contains_key(id)
    }

    fn remove(&mut self, id: &JourneyId) -> Option<Journey> {
        let s = self.slots.remove(id)?;
        self.free.push(s);
        self.items.get_mut(s as usize).and_then(Option::take)
    }

    fn values(&self) -> impl Iterator<Item = &Journey> {
        self.items.iter().flatten()
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// The slots of active journeys by a hash of (tenant, person key). Two keys with the same
/// hash share a list; lookups check each journey's own keys.
#[derive(Default)]
struct PersonIndex(hashbrown::HashMap<u64, SmallVec<[u32; 2]>>);

fn person_hash(tenant: TenantId, key: &str) -> u64 {
    let (hi, lo) = tenant.0.as_u64_pair();
    xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), hi ^ lo.rotate_left(17))
}

impl PersonIndex {
    fn add(&mut self, tenant: TenantId, key: &str, slot: u32) {
        let list = self.0.entry(person_hash(tenant, key)).or_default();
        if !list.contains(&slot) {
            list.push(slot);
        }
    }

    fn remove(&mut self, tenant: TenantId, key: &str, slot: u32) {
        let h = person_hash(tenant, key);
        if let Some(list) = self.0.get_mut(&h) {
            list.retain(|s| *s != slot);
            if list.is_empty() {
                self.0.remove(&h);
            }
        }
    }

    fn get(&self, tenant: TenantId, key: &str) -> &[u32] {
        self.0
            .get(&person_hash(tenant, key))
            .map_or(&[], |l| l.as_slice())
    }
}

/// A workflow version as the runtime keeps it (shared, so a journey's step needs no copy).
struct Live {
    version: u32,
    workflow: Arc<str>,
    definition: Arc<Workflow>,
}

/// Every tenant's workflows and active journeys, with their timers.
#[derive(Default)]
pub struct Runtime {
    /// Versions by (tenant, workflow id), oldest first.
    versions: HashMap<(TenantId, String), Vec<Live>>,
    /// The version new journeys start on (absent: the workflow is paused).
    live: HashMap<(TenantId, String), u32>,
    /// Active journeys.
    journeys: Slab,
    /// Active journeys by (tenant, person key), for every key they are found by.
    by_person: PersonIndex,
    /// When the newest ended journey of each (tenant, workflow, person) started (re-entry
    /// rules; running journeys are found through `by_person`).
    ended: HashMap<(TenantId, Arc<str>, Arc<str>), DateTime<Utc>>,
    /// (wake time in µs, journey).
    timers: BTreeSet<(i64, JourneyId)>,
    /// Tenant time zones (UTC when absent).
    zones: HashMap<TenantId, chrono_tz::Tz>,
    /// The next run (µs) of each live scheduled workflow; set at the first
    /// [`Runtime::advance`] after it goes live, so a run missed while the node was down
    /// is not made up.
    schedules: HashMap<(TenantId, String), i64>,
    /// Ended journeys whose workflow has a goal and whose goal window is still open: a
    /// goal event now is a conversion after the journey ([`Outcome::Converted`]).
    converting: Converting,
}

/// Ended journeys that may still convert, found by the person's keys, dropped when their
/// goal window closes.
#[derive(Default)]
struct Converting {
    journeys: HashMap<JourneyId, Journey>,
    by_person: HashMap<u64, SmallVec<[JourneyId; 1]>>,
    /// (end of the goal window in µs, journey).
    deadlines: BTreeSet<(i64, JourneyId)>,
}

impl Converting {
    fn add(&mut self, j: Journey, deadline: i64) {
        for k in j.all_keys() {
            let list = self.by_person.entry(person_hash(j.tenant, k)).or_default();
            if !list.contains(&j.id) {
                list.push(j.id);
            }
        }
        self.deadlines.insert((deadline, j.id));
        self.journeys.insert(j.id, j);
    }

    fn remove(&mut self, id: JourneyId) -> Option<Journey> {
        let j = self.journeys.remove(&id)?;
        for k in j.all_keys() {
            let h = person_hash(j.tenant, k);
            if let Some(list) = self.by_person.get_mut(&h) {
                list.retain(|x| *x != id);
                if list.is_empty() {
                    self.by_person.remove(&h);
                }
            }
        }
        Some(j)
    }

    /// The journeys found by any of `keys`.
    fn of(&self, tenant: TenantId, keys: &[String]) -> Vec<JourneyId> {
        let mut ids: Vec<JourneyId> = keys
            .iter()
            .filter_map(|k| self.by_person.get(&person_hash(tenant, k)))
            .flatten()
            .copied()
            .filter(|id| {
                self.journeys.get(id).is_some_and(|j| {
                    j.tenant == tenant && j.all_keys().any(|x| keys.iter().any(|k| **x == **k))
                })
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Drops the journeys whose window closed by `now` (µs).
    fn expire(&mut self, now: i64) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, id));
            self.remove(id);
        }
    }
}

impl Runtime {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_time_zone(&mut self, tenant: TenantId, tz: chrono_tz::Tz) {
        self.zones.insert(tenant, tz);
    }

    /// A tenant's time zone (UTC unless set).
    pub fn time_zone(&self, tenant: TenantId) -> chrono_tz::Tz {
        self.zones.get(&tenant).copied().unwrap_or(chrono_tz::UTC)
    }

    /// Adds a version (versions are kept: journeys finish on the one they started on).
    pub fn add_version(&mut self, v: Version) {
        let list = self
            .versions
            .entry((v.tenant, v.workflow.clone()))
            .or_default();
        list.retain(|x| x.version != v.version);
        let workflow = list
            .first()
            .map_or_else(|| Arc::from(v.workflow.as_str()), |x| x.workflow.clone());
        list.push(Live {
            version: v.version,
            workflow,
            definition: Arc::new(v.definition),
        });
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

    fn version(&self, tenant: TenantId, workflow: &str, version: u32) -> Option<&Live> {
        self.versions
            .get(&(tenant, workflow.to_owned()))?
            .iter()
            .find(|v| v.version == version)
    }

    /// A version's definition.
    pub fn definition(
        &self,
        tenant: TenantId,
        workflow: &str,
        version: u32,
    ) -> Option<Arc<Workflow>> {
        self.version(tenant, workflow, version)
            .map(|v| v.definition.clone())
    }

    /// Puts back journeys read from the store, active or ended (ended ones only feed the
    /// re-entry rules).
    pub fn restore(&mut self, journeys: impl IntoIterator<Item = Journey>) {
        for mut j in journeys {
            if let Some(w) = self
                .version(j.tenant, &j.workflow, j.version)
                .map(|v| v.workflow.clone())
            {
                j.workflow = w;
            }
            if !j.is_active() {
                let key = (j.tenant, j.workflow.clone(), j.person.clone());
                let newer = self.ended.get(&key).is_none_or(|at| *at <= j.entered_at);
                if newer {
                    self.ended.insert(key, j.entered_at);
                }
                self.watch_conversion(j);
                continue;
            }
            if let Some(w) = j.wake_at {
                self.timers.insert((w, j.id));
            }
            let keys: Vec<Arc<str>> = j.all_keys().cloned().collect();
            let tenant = j.tenant;
            let slot = self.journeys.insert(j.id, j);
            for k in keys {
                self.by_person.add(tenant, &k, slot);
            }
        }
    }

    /// Active journeys.
    pub fn active(&self) -> impl Iterator<Item = &Journey> {
        self.journeys.values()
    }

    pub fn journey(&self, id: JourneyId) -> Option<&Journey> {
        self.journeys.get(&id)
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
                let trigger = json!({"run": run.to_rfc3339()}).to_string();
                let seed = format!("cron|{at}|{}", person.key());
                self.start(tenant, &wf, version, &person, trigger, &seed, now, changes);
            }
            match next_after(now) {
                Some(n) => self.schedules.insert(key, n),
                None => self.schedules.remove(&key),
            };
        }
    }

    /// Finds journey `id` by each of `keys` from now on.
    fn index(&mut self, tenant: TenantId, id: JourneyId, keys: &[String]) {
        let Some(slot) = self.journeys.slot(&id) else {
            return;
        };
        for k in keys {
            let Some(j) = self.journeys.get_mut(&id) else {
                return;
            };
            if *j.person == **k || j.keys.iter().any(|x| **x == **k) {
                continue;
            }
            j.keys.push(Arc::from(k.as_str()));
            self.by_person.add(tenant, k, slot);
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
        self.convert(tenant, &person, &occ, now, &mut changes);
        self.advance_journeys(tenant, &person, &occ, now, &mut changes);
        self.start_journeys(tenant, &person, &occ, now, &mut changes);
        changes
    }

    /// Keeps an ended journey that may still convert: its workflow has a goal, it did not
    /// reach it, and the goal window is open.
    fn watch_conversion(&mut self, j: Journey) {
        if matches!(j.outcome, Some(Outcome::Goal | Outcome::Converted)) {
            return;
        }
        let Some(goal) = self
            .definition(j.tenant, &j.workflow, j.version)
            .and_then(|d| d.goal.clone())
        else {
            return;
        };
        let deadline = micros(j.entered_at + Duration::days(i64::from(goal.within_days)));
        if j.ended_at.is_some_and(|e| micros(e) < deadline) {
            self.converting.add(j, deadline);
        }
    }

    /// Ended journeys of the person whose goal this event is: converted after the end.
    fn convert(
        &mut self,
        tenant: TenantId,
        person: &Person,
        occ: &Occurrence,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        if self.converting.journeys.is_empty() {
            return;
        }
        self.converting.expire(micros(now));
        let secs = now.timestamp();
        for id in self.converting.of(tenant, &person.keys) {
            let Some(j) = self.converting.journeys.get(&id) else {
                continue;
            };
            let Some(def) = self.definition(tenant, &j.workflow, j.version) else {
                continue;
            };
            let hit = def
                .goal
                .as_ref()
                .is_some_and(|g| awaited(goal_parts(g), occ, &j.properties, secs));
            if hit && let Some(mut j) = self.converting.remove(id) {
                j.outcome = Some(Outcome::Converted);
                changes.touch(&j);
            }
        }
    }

    /// The active journeys of a person, by any of their keys.
    fn ids_of(&self, tenant: TenantId, keys: &[String]) -> Vec<JourneyId> {
        let mut ids: Vec<JourneyId> = Vec::new();
        for k in keys {
            for &slot in self.by_person.get(tenant, k) {
                let Some(j) = self.journeys.at(slot) else {
                    continue;
                };
                let found = j.tenant == tenant && j.all_keys().any(|x| **x == **k);
                if found && !ids.contains(&j.id) {
                    ids.push(j.id);
                }
            }
        }
        ids.sort();
        ids
    }

    fn advance_journeys(
        &mut self,
        tenant: TenantId,
        person: &Person,
        occ: &Occurrence,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let secs = now.timestamp();
        for id in self.ids_of(tenant, &person.keys) {
            let Some(j) = self.journeys.get(&id) else {
                continue;
            };
            let (workflow, version, step) = (j.workflow.clone(), j.version, j.step);
            let properties = j.properties.clone();
            // A person seen under a new key (they signed in): find the journey by it too.
            if person
                .keys
                .iter()
                .any(|k| *j.person != **k && !j.keys.iter().any(|x| **x == **k))
            {
                self.index(tenant, id, &person.keys);
            }
            let Some(def) = self.definition(tenant, &workflow, version) else {
                continue;
            };
            if let Some(goal) = &def.goal
                && awaited(goal_parts(goal), occ, &properties, secs)
            {
                self.end(id, Outcome::Goal, now, changes);
                continue;
            }
            let Some(i) = step.map(usize::from) else {
                continue;
            };
            if let Action::WaitFor(w) = &def.steps[i].action
                && awaited((&w.event, &w.filters, &w.same), occ, &properties, secs)
            {
                let next = w.on_event.as_deref().and_then(|t| def.position(t));
                self.move_to(id, next, Outcome::Event, person, &def, now, changes);
            }
        }
    }

    fn start_journeys(
        &mut self,
        tenant: TenantId,
        person: &Person,
        occ: &Occurrence,
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
            let is = |name: &str, key: &str, value: &str| {
                occ.name == name && occ.properties.get(key).and_then(Value::as_str) == Some(value)
            };
            let hit = match &v.definition.trigger {
                Trigger::Event(m) => {
                    m.name == occ.name && filters_match(&m.filters, &occ.properties, secs)
                }
                Trigger::SegmentEntered(s) => is("Segment Entered", "segment_id", s),
                Trigger::SegmentExited(s) => is("Segment Exited", "segment_id", s),
                Trigger::TagAdded(s) => is("Tag Added", "tag", s),
                Trigger::TagRemoved(s) => is("Tag Removed", "tag", s),
                Trigger::Schedule(_) | Trigger::Api(_) => false,
            };
            if hit {
                starting.push((wf.clone(), *version));
            }
        }
        starting.sort();
        for (wf, version) in starting {
            let seed = format!("{}|{}", occ.message_id, person.key());
            self.start(
                tenant,
                &wf,
                version,
                person,
                occ.text.clone(),
                &seed,
                now,
                changes,
            );
        }
    }

    /// Starts a journey of `workflow` for `person` through the API: `seed` names the
    /// occurrence (the same seed never starts two journeys); `data` (an object) is what
    /// templates see as `event.properties`.
    #[allow(clippy::too_many_arguments)]
    pub fn trigger(
        &mut self,
        tenant: TenantId,
        workflow: &str,
        person: &Person,
        data: Value,
        seed: &str,
        _people: &dyn People,
        now: DateTime<Utc>,
    ) -> Changes {
        let mut changes = Changes::default();
        if let Some(version) = self.live.get(&(tenant, workflow.to_owned())).copied() {
            let data = if data.is_object() { data } else { json!({}) };
            self.start(
                tenant,
                workflow,
                version,
                person,
                data.to_string(),
                seed,
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
        workflow: &Arc<str>,
        rule: Reentry,
        person: &Person,
        now: DateTime<Utc>,
    ) -> bool {
        if rule == Reentry::Always {
            return true;
        }
        let running = self
            .ids_of(tenant, &person.keys)
            .iter()
            .filter_map(|id| self.journeys.get(id))
            .any(|j| j.workflow == *workflow);
        let ended = person
            .keys
            .iter()
            .filter_map(|k| {
                self.ended
                    .get(&(tenant, workflow.clone(), Arc::from(k.as_str())))
            })
            .max()
            .copied();
        match rule {
            Reentry::Always => true,
            Reentry::Once => !running && ended.is_none(),
            Reentry::AfterExit => !running,
            Reentry::AfterDays(d) => {
                !running && ended.is_none_or(|at| now - at >= Duration::days(i64::from(d)))
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
        properties: String,
        seed: &str,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let Some((wf, def)) = self
            .version(tenant, workflow, version)
            .map(|v| (v.workflow.clone(), v.definition.clone()))
        else {
            return;
        };
        let id = journey_id(tenant, workflow, seed);
        if self.journeys.contains_key(&id) || !self.may_enter(tenant, &wf, def.reentry, person, now)
        {
            return;
        }
        let holdout = def.holdout_percent > 0
            && bucket(&format!("{workflow}|{}", person.key()), 100)
                < u64::from(def.holdout_percent);
        let key: Arc<str> = Arc::from(person.key());
        let j = Journey {
            id,
            tenant,
            workflow: wf,
            version,
            person: key.clone(),
            properties: properties.into_boxed_str(),
            step: Some(0),
            wake_at: None,
            entered_at: now,
            ended_at: None,
            outcome: None,
            holdout,
            path: SmallVec::new(),
            keys: Vec::new(),
        };
        let slot = self.journeys.insert(id, j);
        self.by_person.add(tenant, &key, slot);
        self.index(tenant, id, &person.keys);
        self.run(id, person, &def, now, changes);
    }

    /// Moves a journey to step `next` (`None`: ends it with `outcome`) and runs on.
    #[allow(clippy::too_many_arguments)]
    fn move_to(
        &mut self,
        id: JourneyId,
        next: Option<usize>,
        outcome: Outcome,
        person: &Person,
        def: &Workflow,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let Some(j) = self.journeys.get_mut(&id) else {
            return;
        };
        if let Some(w) = j.wake_at.take() {
            self.timers.remove(&(w, id));
        }
        match next {
            None => self.end(id, outcome, now, changes),
            Some(n) => {
                j.step = u16::try_from(n).ok();
                self.run(id, person, def, now, changes);
            }
        }
    }

    /// Takes an active journey out: from the journeys, the person index and the timers.
    fn detach(&mut self, id: JourneyId) -> Option<Journey> {
        let slot = self.journeys.slot(&id)?;
        let mut j = self.journeys.remove(&id)?;
        for k in j.all_keys() {
            self.by_person.remove(j.tenant, k, slot);
        }
        if let Some(w) = j.wake_at.take() {
            self.timers.remove(&(w, id));
        }
        Some(j)
    }

    fn end(&mut self, id: JourneyId, outcome: Outcome, now: DateTime<Utc>, changes: &mut Changes) {
        let Some(mut j) = self.detach(id) else {
            return;
        };
        j.step = None;
        j.ended_at = Some(now);
        j.outcome = Some(outcome);
        let key = (j.tenant, j.workflow.clone(), j.person.clone());
        if self.ended.get(&key).is_none_or(|at| *at <= j.entered_at) {
            self.ended.insert(key, j.entered_at);
        }
        changes.touch(&j);
        self.watch_conversion(j);
    }

    /// Runs the journey's steps from where it is until it waits or ends.
    fn run(
        &mut self,
        id: JourneyId,
        person_in: &Person,
        def: &Workflow,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let Some(tenant) = self.journeys.get(&id).map(|j| j.tenant) else {
            return;
        };
        let tz = person_in
            .time_zone()
            .or_else(|| self.zones.get(&tenant).copied())
            .unwrap_or(chrono_tz::UTC);
        let event_name = trigger_name(&def.trigger);
        // The person as this run's own tag steps left them (the profile catches up later).
        let mut own: Option<Person> = None;
        // No loops: at most one pass over the steps.
        for _ in 0..=def.steps.len() {
            let person: &Person = own.as_ref().unwrap_or(person_in);
            let Some(j) = self.journeys.get_mut(&id) else {
                return;
            };
            let Some(i) = j.step.map(usize::from) else {
                return;
            };
            let Some(step) = def.steps.get(i) else {
                self.end(id, Outcome::Completed, now, changes);
                return;
            };
            j.path.push(i as u16);
            let wait_until =
                |at: DateTime<Utc>, j: &mut Journey, timers: &mut BTreeSet<(i64, JourneyId)>| {
                    j.wake_at = Some(micros(at));
                    timers.insert((micros(at), j.id));
                };
            let context = |j: &Journey| {
                let props: Value =
                    serde_json::from_str(&j.properties).unwrap_or_else(|_| json!({}));
                template::context(
                    person,
                    &json!({"event": event_name, "properties": props, "timestamp": j.entered_at.to_rfc3339()}),
                )
            };
            let next = match &step.action {
                Action::Delay(d) => {
                    wait_until(now + Duration::seconds(d.seconds()), j, &mut self.timers);
                    changes.touch(j);
                    return;
                }
                Action::DelayUntil(t) | Action::DelayUntilBestHour(t) => {
                    let days = t.days().unwrap_or_default();
                    // The person's best hour, where the models have one.
                    let best = match &step.action {
                        Action::DelayUntilBestHour(_) => person
                            .computed
                            .get("best_hour")
                            .and_then(serde_json::Value::as_f64)
                            .filter(|h| (0.0..24.0).contains(h))
                            .map(|h| (h as u32, 0)),
                        _ => None,
                    };
                    match best
                        .or_else(|| t.hour_minute())
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
                    let holds = if livora_model::workflow::is_behavioural(&b.condition) {
                        // Kept as a segment by the profiles engine, current with this event.
                        let segment = livora_model::workflow::branch_segment(&j.workflow, &step.id);
                        person.segments.contains(&segment)
                    } else {
                        person.satisfies(&b.condition, now.timestamp())
                    };
                    let target = if holds {
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
                    if j.holdout {
                        changes.effects.push(Effect::HeldOut {
                            journey: j.id.to_string(),
                            step: step.id.clone(),
                        });
                    } else {
                        let ctx = context(j);
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
                            key: format!("{}/{}", j.id, step.id),
                            tenant: j.tenant,
                            workflow: j.workflow.to_string(),
                            version: j.version,
                            journey: j.id.to_string(),
                            step: step.id.clone(),
                            person: j.person.to_string(),
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
                    if j.holdout {
                        changes.effects.push(Effect::HeldOut {
                            journey: j.id.to_string(),
                            step: step.id.clone(),
                        });
                    } else {
                        let ctx = context(j);
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
                        changes.effects.push(Effect::Send(Message {
                            key: format!("{}/{}", j.id, step.id),
                            tenant: j.tenant,
                            workflow: j.workflow.to_string(),
                            version: j.version,
                            journey: j.id.to_string(),
                            step: step.id.clone(),
                            person: j.person.to_string(),
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
                        person: j.person.to_string(),
                        name: t.name.clone(),
                        value: t.value.clone(),
                        key: format!("{}/{}", j.id, step.id),
                    });
                    def.after(i)
                }
                Action::AddTag(tag) | Action::RemoveTag(tag) => {
                    let add = matches!(step.action, Action::AddTag(_));
                    let mut tags: Vec<Value> = person
                        .traits
                        .get(TAGS_TRAIT)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let has = tags.iter().any(|t| t.as_str() == Some(tag));
                    if add != has {
                        if add {
                            tags.push(Value::String(tag.clone()));
                        } else {
                            tags.retain(|t| t.as_str() != Some(tag));
                        }
                        changes.effects.push(Effect::SetTrait {
                            tenant: j.tenant,
                            person: j.person.to_string(),
                            name: TAGS_TRAIT.into(),
                            value: Value::Array(tags.clone()),
                            key: format!("{}/{}", j.id, step.id),
                        });
                        let mut now_tagged = person.clone();
                        now_tagged
                            .traits
                            .insert(TAGS_TRAIT.into(), Value::Array(tags));
                        own = Some(now_tagged);
                    }
                    def.after(i)
                }
                Action::Exit(_) => None,
            };
            match next.and_then(|n| u16::try_from(n).ok()) {
                Some(n) => j.step = Some(n),
                None => {
                    self.end(id, Outcome::Completed, now, changes);
                    return;
                }
            }
        }
    }

    /// Fires every timer due at `now`: delays end, waits time out; scheduled workflows run.
    pub fn advance(&mut self, now: DateTime<Utc>, people: &dyn People) -> Changes {
        self.advance_up_to(now, people, usize::MAX)
    }

    /// [`Runtime::advance`], firing at most `limit` timers (the oldest first; call again
    /// for the rest), so that what one call decides stays a bounded batch.
    pub fn advance_up_to(
        &mut self,
        now: DateTime<Utc>,
        people: &dyn People,
        limit: usize,
    ) -> Changes {
        let mut changes = Changes::default();
        self.run_schedules(now, people, &mut changes);
        let due = micros(now);
        self.converting.expire(due);
        let mut fired = 0;
        while let Some(&(at, id)) = self.timers.first() {
            if at > due || fired >= limit {
                break;
            }
            fired += 1;
            self.timers.remove(&(at, id));
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
            let Some(def) = self.definition(tenant, &workflow, version) else {
                continue;
            };
            let person = people
                .by_key(tenant, &person_key)
                .unwrap_or_else(|| Person {
                    keys: vec![person_key.to_string()],
                    ..Person::default()
                });
            let Some(i) = step.map(usize::from) else {
                continue;
            };
            let next = match &def.steps[i].action {
                Action::WaitFor(w) => def.go(i, w.on_timeout.as_deref()),
                _ => def.after(i),
            };
            self.move_to(
                id,
                next,
                Outcome::Completed,
                &person,
                &def,
                now,
                &mut changes,
            );
        }
        changes
    }

    /// Forgets a person (erasure): their active journeys stop without a trace here (no
    /// timer, no re-entry record, no conversion watch). Returns how many were active.
    pub fn forget(&mut self, tenant: TenantId, keys: &[String]) -> usize {
        let ids = self.ids_of(tenant, keys);
        for id in &ids {
            self.detach(*id);
        }
        for id in self.converting.of(tenant, keys) {
            self.converting.remove(id);
        }
        self.ended
            .retain(|(t, _, person), _| *t != tenant || !keys.iter().any(|k| **k == **person));
        ids.len()
    }

    /// The active journeys of a person (by any of their keys).
    pub fn journeys_of(&self, tenant: TenantId, keys: &[String]) -> Vec<&Journey> {
        self.ids_of(tenant, keys)
            .iter()
            .filter_map(|id| self.journeys.get(id))
            .collect()
    }

    /// The number of active journeys.
    pub fn journey_count(&self) -> usize {
        self.journeys.len()
    }
}

/// The trait holding the tags workflows add (a list of names).
pub const TAGS_TRAIT: &str = "tags";

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
