//! Real-time segments and smart tags: membership kept up to date as events arrive and as
//! time passes.
//!
//! Every condition is a function of a person's profile and of the time. On each event the
//! [`Engine`] re-evaluates that person's segments and reports who entered or left. Each
//! condition also knows the next instant at which its answer can change with no new event
//! (a 30-day window that an order leaves, a "no order for 30 days" that turns true, a cart
//! that becomes abandoned); the engine keeps one timer per person at the earliest of those,
//! and [`Engine::advance`] fires them in time order, each evaluated *at its own instant*.
//! The clock is injected (every call takes `now`), so tests never sleep, and a transition
//! carries the exact instant at which it happened.
//!
//! Smart tags are segments too (flagged as tags, referred to by name); manual segments are
//! lists of identifiers. [`Engine::recompute`] evaluates everything from scratch: the
//! incremental membership always equals it (a property test checks this on random streams).
//!
//! Memberships are held twice: per segment (the member sets, for listing and counting) and
//! per person (one bit per segment next to the person's timer), so that an event looks at
//! one entry instead of one set per segment. Both change together; a property test checks
//! that they agree after every step, and a snapshot holds only the sets.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use livora_model::Event;
use livora_model::segment::{Comparison, Condition, Count, CountOp, Definition, LastOp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::behaviour::{Hit, Selector};
use crate::compare::{self, DAY};
use crate::identity::{Identifier, IdentityGraph, PersonId, UnmergeError};
use crate::profile::{Applied, Parsed, Profile, Profiles, Touched};
use crate::{MergeRules, PersonSet, Table};

/// What a segment holds: the persons matching a condition, or a fixed list of identifiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    Condition(Definition),
    Manual(BTreeSet<Identifier>),
}

/// A segment (or a smart tag) as defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The segment id; a tag's name.
    pub id: String,
    pub tag: bool,
    pub rule: Rule,
}

/// Entering or leaving a segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub segment: String,
    pub tag: bool,
    pub person: PersonId,
    pub entered: bool,
    pub at: DateTime<Utc>,
}

impl Transition {
    /// The event to append to the log: `Segment Entered` / `Segment Exited` (or `Tag
    /// Added` / `Tag Removed`).
    pub fn event_name(&self) -> &'static str {
        match (self.tag, self.entered) {
            (false, true) => "Segment Entered",
            (false, false) => "Segment Exited",
            (true, true) => "Tag Added",
            (true, false) => "Tag Removed",
        }
    }

    pub fn properties(&self) -> Value {
        if self.tag {
            json!({"tag": self.segment})
        } else {
            json!({"segment_id": self.segment})
        }
    }
}

/// Why a segment cannot be saved or removed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SegmentError {
    #[error("{path}: no segment {id:?}")]
    UnknownSegment { path: String, id: String },
    #[error("{path}: no tag {name:?}")]
    UnknownTag { path: String, name: String },
    #[error("{path}: {id:?} would depend on itself")]
    Cycle { path: String, id: String },
    #[error("{0:?} is used by {1:?}")]
    InUse(String, String),
    #[error("no segment {0:?}")]
    NotFound(String),
}

/// A condition compiled against the engine's selectors and segment order.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Trait(Comparison),
    Computed(Comparison),
    Performed {
        sel: u32,
        count: Count,
        within: Option<i64>,
        between: Option<(i64, i64)>,
    },
    Last {
        sel: u32,
        op: LastOp,
        secs: i64,
    },
    NotFollowed {
        first: u32,
        then: u32,
        wait: i64,
        lookback: i64,
    },
    /// Another segment, by position in the evaluation order.
    Segment(usize),
    Manual(HashSet<Identifier>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Compiled {
    spec: Spec,
    node: Node,
    deps: Deps,
}

/// Computed attributes that only orders and refunds change.
const ORDER_ATTRIBUTES: [&str; 7] = [
    "orders",
    "revenue",
    "average_order_value",
    "first_order_at",
    "last_order_at",
    "days_since_last_order",
    "purchase_frequency",
];

/// What a segment's answer reads, so that an event that changed none of it skips the
/// segment (its answer, and the instants at which it can change, stay as they were).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Deps {
    /// Something every event changes (activity attributes such as `last_seen`).
    every_event: bool,
    traits: bool,
    orders: bool,
    identifiers: bool,
    selectors: Vec<u32>,
    /// Segments referred to, by position in the evaluation order.
    segments: Vec<usize>,
}

impl Deps {
    fn of(node: &Node) -> Self {
        let mut d = Deps::default();
        d.add(node);
        d.selectors.sort_unstable();
        d.selectors.dedup();
        d
    }

    fn add(&mut self, node: &Node) {
        match node {
            Node::And(l) | Node::Or(l) => l.iter().for_each(|n| self.add(n)),
            Node::Not(n) => self.add(n),
            Node::Trait(_) => self.traits = true,
            Node::Computed(c) if ORDER_ATTRIBUTES.contains(&c.name.as_str()) => self.orders = true,
            // Predictions change only when training sets them, which re-evaluates the person.
            Node::Computed(c) if livora_model::segment::PREDICTIONS.contains(&c.name.as_str()) => {}
            Node::Computed(_) => self.every_event = true,
            Node::Performed { sel, .. } | Node::Last { sel, .. } => self.selectors.push(*sel),
            Node::NotFollowed { first, then, .. } => self.selectors.extend([*first, *then]),
            Node::Segment(i) => self.segments.push(*i),
            Node::Manual(_) => self.identifiers = true,
        }
    }

    /// Whether `touched` (and the segments whose answer just changed) reach this segment.
    fn reached_by(&self, touched: &Touched, changed: &[bool]) -> bool {
        self.every_event
            || (self.traits && touched.traits)
            || (self.orders && touched.orders)
            || (self.identifiers && touched.identifiers)
            || self.selectors.iter().any(|s| touched.hits.contains(s))
            || self
                .segments
                .iter()
                .any(|&i| changed.get(i).copied().unwrap_or(true))
    }
}

/// One tenant's profiles, segments and memberships.
///
/// Who is in a segment is held once, as a bit in each person's [`PersonState`]; the engine
/// keeps only each segment's count. A snapshot still writes each segment's members (see
/// [`Engine`]'s `Serialize`), which [`Engine::reindex`] turns back into bits.
#[derive(Deserialize)]
pub struct Engine {
    profiles: Profiles,
    #[serde(with = "crate::snapshot::as_json")]
    specs: Vec<Spec>,
    /// In evaluation order (dependencies first).
    #[serde(with = "crate::snapshot::as_json")]
    compiled: Vec<Compiled>,
    members: Members,
    /// Daily sizes, aligned with `compiled`.
    sizes: Vec<Vec<(i64, u64)>>,
    timers: BTreeSet<(i64, PersonId)>,
    /// Per person: its timer, and the segments it is in (the only record of who is in a
    /// segment). A snapshot holds the timers here (as a map to the instant) and the
    /// memberships in `members`; [`Engine::reindex`] puts them back together.
    #[serde(with = "timers_only")]
    state_of: Table<PersonId, PersonState>,
    /// Selectors whose hits hold every past event.
    backfilled: BTreeSet<u32>,
    now: i64,
}

/// What the engine keeps about one person besides the profile (see `Engine::state_of`):
/// 24 bytes, as every person with a membership or a timer has one.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonState {
    /// Bit `i`: in `compiled[i]`, for the first 64.
    low: u64,
    /// The bits past the first 64 (an engine with more segments), word by word (a thin
    /// pointer: most engines have fewer).
    #[allow(clippy::box_collection)]
    high: Option<Box<Vec<u64>>>,
    /// The timer's instant, [`NO_TIMER`] for none.
    timer: i64,
}

/// [`PersonState::timer`] of a person without a timer (an instant this early is kept as
/// one later, which is as due at any time).
const NO_TIMER: i64 = i64::MIN;

impl Default for PersonState {
    fn default() -> Self {
        Self {
            low: 0,
            high: None,
            timer: NO_TIMER,
        }
    }
}

impl PersonState {
    fn is_in(&self, i: usize) -> bool {
        let w = match i / 64 {
            0 => Some(self.low),
            n => self.high.as_ref().and_then(|h| h.get(n - 1).copied()),
        };
        w.is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    fn set(&mut self, i: usize, on: bool) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let w = if word == 0 {
            &mut self.low
        } else {
            if !on && self.high.as_ref().is_none_or(|h| h.len() < word) {
                return;
            }
            let high = self.high.get_or_insert_with(Default::default);
            if high.len() < word {
                high.resize(word, 0);
            }
            &mut high[word - 1]
        };
        if on {
            *w |= bit;
        } else {
            *w &= !bit;
        }
    }

    /// Forgets every membership.
    fn clear_bits(&mut self) {
        self.low = 0;
        self.high = None;
    }

    fn timer(&self) -> Option<i64> {
        (self.timer != NO_TIMER).then_some(self.timer)
    }

    fn set_timer(&mut self, t: Option<i64>) {
        self.timer = t.map_or(NO_TIMER, |t| t.max(NO_TIMER + 1));
    }

    fn is_empty(&self) -> bool {
        self.timer().is_none()
            && self.low == 0
            && self.high.as_ref().is_none_or(|h| h.iter().all(|&w| w == 0))
    }

    /// Heap bytes past the struct itself.
    fn heap_bytes(&self) -> usize {
        self.high
            .as_ref()
            .map_or(0, |h| size_of::<Vec<u64>>() + h.capacity() * 8)
    }
}

/// `Engine::state_of` as snapshots hold it: each person's timer, as the person → instant
/// map it always was.
/// Each segment's member count, aligned with `Engine::compiled` (who is in is in the
/// persons' [`PersonState`]). Read from a snapshot as the member sets it holds, kept in
/// `loaded` until [`Engine::reindex`] turns them into bits.
#[derive(Default)]
struct Members {
    counts: Vec<u64>,
    loaded: Vec<PersonSet>,
}

impl Members {
    /// Sets to turn into bits by [`Engine::reindex`].
    fn loaded(sets: Vec<PersonSet>) -> Self {
        Self {
            counts: Vec::new(),
            loaded: sets,
        }
    }

    fn count(&mut self, i: usize, entered: bool) {
        if let Some(n) = self.counts.get_mut(i) {
            *n = if entered { *n + 1 } else { n.saturating_sub(1) };
        }
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<PersonSet>::deserialize(d).map(Members::loaded)
    }
}

/// The members of one segment: the persons whose state has its bit. Counting is O(1);
/// going through them visits every person with a membership or a timer.
#[derive(Clone, Copy)]
pub struct SegmentMembers<'a> {
    state_of: &'a Table<PersonId, PersonState>,
    i: usize,
    len: usize,
}

impl<'a> SegmentMembers<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, person: PersonId) -> bool {
        self.state_of
            .get(&person)
            .is_some_and(|st| st.is_in(self.i))
    }

    /// The members, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = PersonId> + 'a {
        let i = self.i;
        self.state_of
            .iter()
            .filter(move |(_, st)| st.is_in(i))
            .map(|(&p, _)| p)
    }
}

/// Written as the derived form would be, with `members` as each segment's member set (read
/// from the persons' bits), so snapshots keep their format.
impl Serialize for Engine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Sets<'a>(&'a Engine);
        impl Serialize for Sets<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0..self.0.compiled.len()).map(|i| Set(self.0.members_at(i))))
            }
        }
        struct Set<'a>(SegmentMembers<'a>);
        impl Serialize for Set<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                // The count is known: MessagePack writes it before the members.
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for p in self.0.iter() {
                    seq.serialize_element(&p)?;
                }
                seq.end()
            }
        }
        struct Specs<'a>(&'a [Spec]);
        impl Serialize for Specs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::snapshot::as_json::serialize(&self.0, s)
            }
        }
        struct CompiledOf<'a>(&'a [Compiled]);
        impl Serialize for CompiledOf<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::snapshot::as_json::serialize(&self.0, s)
            }
        }
        struct Timers<'a>(&'a Table<PersonId, PersonState>);
        impl Serialize for Timers<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                timers_only::serialize(self.0, s)
            }
        }
        let mut st = s.serialize_struct("Engine", 9)?;
        st.serialize_field("profiles", &self.profiles)?;
        st.serialize_field("specs", &Specs(&self.specs))?;
        st.serialize_field("compiled", &CompiledOf(&self.compiled))?;
        st.serialize_field("members", &Sets(self))?;
        st.serialize_field("sizes", &self.sizes)?;
        st.serialize_field("timers", &self.timers)?;
        st.serialize_field("state_of", &Timers(&self.state_of))?;
        st.serialize_field("backfilled", &self.backfilled)?;
        st.serialize_field("now", &self.now)?;
        st.end()
    }
}

mod timers_only {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::PersonState;
    use crate::{PersonId, Table};

    pub fn serialize<S: Serializer>(
        state: &Table<PersonId, PersonState>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        // Collected first: MessagePack writes a map's length before its entries.
        let timers: Vec<(PersonId, i64)> = state
            .iter()
            .filter_map(|(&p, st)| st.timer().map(|t| (p, t)))
            .collect();
        s.collect_map(timers)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Table<PersonId, PersonState>, D::Error> {
        let timers = Table::<PersonId, i64>::deserialize(d)?;
        Ok(timers
            .into_iter()
            .map(|(p, t)| {
                let mut st = PersonState::default();
                st.set_timer(Some(t));
                (p, st)
            })
            .collect())
    }
}

/// The count of hits in `hits` that the window admits at `t`, and when that can change.
fn window(
    hits: &[Hit],
    within: Option<i64>,
    between: Option<(i64, i64)>,
    t: i64,
) -> (usize, Option<i64>) {
    match (within, between) {
        (Some(w), _) => {
            // The window is [t - w, t], as in `last_performed` and `within_last_days`.
            let lo = hits.partition_point(|h| h.at < t - w);
            let hi = hits.partition_point(|h| h.at <= t);
            let leaves = (lo < hi).then(|| hits[lo].at + w + 1);
            let enters = hits.get(hi).map(|h| h.at);
            (hi - lo, min_opt(leaves, enters))
        }
        (None, Some((from, to))) => {
            let lo = hits.partition_point(|h| h.at < from);
            let hi = hits.partition_point(|h| h.at < to);
            (hi - lo, None)
        }
        (None, None) => (hits.len(), None),
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn count_ok(count: Count, n: usize) -> bool {
    let v = count.value as usize;
    match count.op {
        CountOp::AtLeast => n >= v,
        CountOp::AtMost => n <= v,
        CountOp::Exactly => n == v,
    }
}

/// A computed attribute's value at `t` (Unix seconds), and when a comparison with `x` can
/// change.
fn computed(profile: &Profile, name: &str, x: &Value, t: i64) -> (Option<Value>, Option<i64>) {
    let c = &profile.computed;
    let now = DateTime::from_timestamp(t, 0).unwrap_or_default();
    let secs = |d: Option<DateTime<Utc>>| d.map(|d| json!(d.timestamp()));
    let later = |cands: &[i64]| cands.iter().copied().filter(|&c| c > t).min();
    let xf = x.as_f64().unwrap_or(0.0);
    let days_since = |at: Option<DateTime<Utc>>| match at {
        None => (None, None),
        Some(at) => {
            let at = at.timestamp();
            let days = (t - at).div_euclid(DAY).max(0);
            // A threshold beyond a century changes nothing within one.
            let k = (xf.floor() as i64).clamp(-40_000, 40_000);
            (
                Some(json!(days)),
                later(&[at.saturating_add(k * DAY), at.saturating_add((k + 1) * DAY)]),
            )
        }
    };
    match name {
        "first_seen" => (secs(c.first_seen), None),
        "last_seen" => (secs(c.last_seen), None),
        "first_order_at" => (secs(c.first_order_at), None),
        "last_order_at" => (secs(c.last_order_at), None),
        "events" => (Some(json!(c.events)), None),
        "sessions" => (Some(json!(c.sessions())), None),
        "orders" => (Some(json!(c.orders)), None),
        "revenue" => (Some(json!(c.revenue - c.refunds)), None),
        "average_order_value" => (c.average_order_value().map(|v| json!(v)), None),
        "days_since_last_order" => days_since(c.last_order_at),
        "days_since_last_seen" => days_since(c.last_seen),
        "purchase_frequency" => {
            let Some(first) = c.first_order_at.map(|f| f.timestamp()) else {
                return (None, None);
            };
            let v = c.purchase_frequency(now).map(|v| json!(v));
            let mut cands = vec![first + 30 * DAY];
            if xf > 0.0 {
                let cross = first as f64 + 30.0 * DAY as f64 * c.orders as f64 / xf;
                if cross.is_finite() && cross < 1e15 {
                    cands.extend([cross.ceil() as i64, cross.ceil() as i64 + 1]);
                }
            }
            (v, later(&cands))
        }
        p if livora_model::segment::PREDICTIONS.contains(&p) => {
            (profile.predictions.get(p).map(|v| json!(v)), None)
        }
        "engagement" => {
            let Some(last) = c.last_seen.map(|l| l.timestamp()) else {
                return (Some(json!(0.0)), None);
            };
            let v = c.engagement(now);
            let mut cands = vec![(t.div_euclid(DAY) + 1) * DAY];
            let freq = 50.0 * (1.0 + c.active_days_30(now) as f64).ln() / 31f64.ln();
            let rest = xf - freq;
            if rest > 0.0 && rest <= 50.0 {
                let cross = last as f64 + 14.0 * DAY as f64 * (50.0 / rest).log2();
                if cross.is_finite() && cross < 1e15 {
                    cands.extend([cross.ceil() as i64, cross.ceil() as i64 + 1]);
                }
            }
            (Some(json!(v)), later(&cands))
        }
        _ => (None, None),
    }
}

struct Ctx<'a> {
    profile: &'a Profile,
    /// The person's identifiers, looked up only by a manual list.
    graph: &'a IdentityGraph,
    person: PersonId,
    t: i64,
    results: &'a [bool],
}

impl Node {
    /// The answer at `ctx.t`, and the first later instant at which it can change (a
    /// segment reference adds none: the referenced segment's own instant counts).
    fn eval(&self, ctx: &Ctx) -> (bool, Option<i64>) {
        let p = ctx.profile;
        let t = ctx.t;
        match self {
            Node::And(list) | Node::Or(list) => {
                let and = matches!(self, Node::And(_));
                let mut next = None;
                let mut acc = and;
                for n in list {
                    let (v, c) = n.eval(ctx);
                    next = min_opt(next, c);
                    acc = if and { acc && v } else { acc || v };
                }
                (acc, next)
            }
            Node::Not(n) => {
                let (v, c) = n.eval(ctx);
                (!v, c)
            }
            Node::Trait(c) => {
                let v = p.traits.get(&c.name);
                (
                    compare::matches(v, c.op, &c.value, t),
                    compare::next_change(v, c.op, &c.value, t),
                )
            }
            Node::Computed(c) => {
                let (v, change) = computed(p, &c.name, &c.value, t);
                let own = compare::next_change(v.as_ref(), c.op, &c.value, t);
                (
                    compare::matches(v.as_ref(), c.op, &c.value, t),
                    min_opt(change, own),
                )
            }
            Node::Performed {
                sel,
                count,
                within,
                between,
            } => {
                let (n, change) = window(p.hits.of(*sel), *within, *between, t);
                (count_ok(*count, n), change)
            }
            Node::Last { sel, op, secs } => match p.hits.of(*sel).last() {
                None => (false, None),
                Some(h) => {
                    let within = t - h.at <= *secs;
                    let v = match op {
                        LastOp::WithinDays => within,
                        LastOp::MoreThanDaysAgo => !within,
                    };
                    let flip = h.at + secs + 1;
                    (v, (flip > t).then_some(flip))
                }
            },
            Node::NotFollowed {
                first,
                then,
                wait,
                lookback,
            } => {
                let firsts = p.hits.of(*first);
                let thens = p.hits.of(*then);
                let start = firsts.partition_point(|h| h.at < t - lookback);
                let mut any = false;
                let mut next: Option<i64> = None;
                for h in &firsts[start..] {
                    let followed_at = thens
                        .iter()
                        .filter(|f| f.key == h.key && f.at >= h.at)
                        .map(|f| f.at)
                        .min();
                    let followed_by_now = followed_at.is_some_and(|f| f <= t);
                    if h.at + wait <= t && !followed_by_now {
                        any = true;
                    }
                    for c in [
                        Some(h.at + wait),
                        Some(h.at + lookback + 1),
                        followed_at,
                        Some(h.at),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if c > t {
                            next = min_opt(next, Some(c));
                        }
                    }
                }
                (any, next)
            }
            Node::Segment(i) => (ctx.results.get(*i).copied().unwrap_or(false), None),
            Node::Manual(ids) => (
                ctx.graph
                    .identifiers(ctx.person)
                    .is_some_and(|mine| mine.iter().any(|i| ids.contains(i))),
                None,
            ),
        }
    }
}

fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY)
}

impl Engine {
    pub fn new(rules: MergeRules) -> Self {
        Self {
            profiles: Profiles::new(rules),
            specs: Vec::new(),
            compiled: Vec::new(),
            members: Members::default(),
            sizes: Vec::new(),
            timers: BTreeSet::new(),
            state_of: Table::new(),
            backfilled: BTreeSet::new(),
            now: i64::MIN,
        }
    }

    /// The tenant's merge rules from now on (see
    /// [`IdentityGraph::set_rules`](crate::identity::IdentityGraph::set_rules)).
    pub fn set_rules(&mut self, rules: MergeRules) {
        self.profiles.set_rules(rules);
    }

    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    pub fn specs(&self) -> &[Spec] {
        &self.specs
    }

    pub fn spec(&self, id: &str, tag: bool) -> Option<&Spec> {
        self.specs.iter().find(|s| s.id == id && s.tag == tag)
    }

    fn position(&self, id: &str, tag: bool) -> Option<usize> {
        self.compiled
            .iter()
            .position(|c| c.spec.id == id && c.spec.tag == tag)
    }

    /// The members of a segment (or tag).
    pub fn members(&self, id: &str, tag: bool) -> Option<SegmentMembers<'_>> {
        self.position(id, tag).map(|i| self.members_at(i))
    }

    fn members_at(&self, i: usize) -> SegmentMembers<'_> {
        SegmentMembers {
            state_of: &self.state_of,
            i,
            len: self.members.counts.get(i).copied().unwrap_or(0) as usize,
        }
    }

    /// The segments and the tags a person is in.
    pub fn memberships(&self, person: PersonId) -> (Vec<&str>, Vec<&str>) {
        let (mut segments, mut tags) = (Vec::new(), Vec::new());
        let st = self.state_of.get(&person);
        for (i, c) in self.compiled.iter().enumerate() {
            if st.is_some_and(|st| st.is_in(i)) {
                if c.spec.tag {
                    tags.push(c.spec.id.as_str());
                } else {
                    segments.push(c.spec.id.as_str());
                }
            }
        }
        segments.sort_unstable();
        tags.sort_unstable();
        (segments, tags)
    }

    /// Daily sizes of a segment: `(day start, members at the end of that day)`.
    pub fn sizes(&self, id: &str, tag: bool) -> Vec<(DateTime<Utc>, u64)> {
        self.position(id, tag)
            .and_then(|i| self.sizes.get(i))
            .map(|v| {
                v.iter()
                    .map(|(d, n)| (DateTime::from_timestamp(d * DAY, 0).unwrap_or_default(), *n))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn note_size(&mut self, i: usize, t: i64) {
        let n = self.members.counts.get(i).copied().unwrap_or(0);
        let Some(list) = self.sizes.get_mut(i) else {
            return;
        };
        let day = day_of(t);
        match list.last_mut() {
            Some((d, size)) if *d == day => *size = n,
            _ => list.push((day, n)),
        }
    }

    /// Compiles `specs` in dependency order.
    fn compile(&mut self, specs: &[Spec]) -> Result<Vec<Compiled>, SegmentError> {
        // Dependency order by depth-first search, refusing cycles.
        let index: HashMap<(String, bool), usize> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.id.clone(), s.tag), i))
            .collect();
        let deps = |s: &Spec| -> Result<Vec<usize>, SegmentError> {
            let Rule::Condition(def) = &s.rule else {
                return Ok(Vec::new());
            };
            let (segs, tags) = def.condition.references();
            let mut out = Vec::new();
            for id in segs {
                out.push(*index.get(&(id.clone(), false)).ok_or_else(|| {
                    SegmentError::UnknownSegment {
                        path: "condition".into(),
                        id: id.clone(),
                    }
                })?);
            }
            for name in tags {
                out.push(*index.get(&(name.clone(), true)).ok_or_else(|| {
                    SegmentError::UnknownTag {
                        path: "condition".into(),
                        name: name.clone(),
                    }
                })?);
            }
            Ok(out)
        };
        let mut order = Vec::new();
        let mut state = vec![0u8; specs.len()]; // 0 new, 1 visiting, 2 done
        fn visit(
            i: usize,
            specs: &[Spec],
            deps: &dyn Fn(&Spec) -> Result<Vec<usize>, SegmentError>,
            state: &mut [u8],
            order: &mut Vec<usize>,
        ) -> Result<(), SegmentError> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    return Err(SegmentError::Cycle {
                        path: "condition".into(),
                        id: specs[i].id.clone(),
                    });
                }
                _ => {}
            }
            state[i] = 1;
            for d in deps(&specs[i])? {
                visit(d, specs, deps, state, order)?;
            }
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..specs.len() {
            visit(i, specs, &deps, &mut state, &mut order)?;
        }
        let position: HashMap<(String, bool), usize> = order
            .iter()
            .enumerate()
            .map(|(pos, &i)| ((specs[i].id.clone(), specs[i].tag), pos))
            .collect();
        let mut out = Vec::new();
        for &i in &order {
            let spec = specs[i].clone();
            let node = match &spec.rule {
                Rule::Manual(ids) => Node::Manual(ids.iter().cloned().collect()),
                Rule::Condition(def) => self.node(&def.condition, &position),
            };
            let deps = Deps::of(&node);
            out.push(Compiled { spec, node, deps });
        }
        Ok(out)
    }

    fn node(&mut self, c: &Condition, position: &HashMap<(String, bool), usize>) -> Node {
        let mut sel =
            |event: &str, filters: &[livora_model::segment::PropertyFilter], key: Option<&str>| {
                self.profiles
                    .selector(Selector {
                        event: event.to_owned(),
                        filters: filters.to_vec(),
                        key: key.map(str::to_owned),
                    })
                    .0
            };
        match c {
            Condition::And(l) => Node::And(l.iter().map(|c| self.node(c, position)).collect()),
            Condition::Or(l) => Node::Or(l.iter().map(|c| self.node(c, position)).collect()),
            Condition::Not(c) => Node::Not(Box::new(self.node(c, position))),
            Condition::Trait(c) => Node::Trait(c.clone()),
            Condition::Computed(c) => Node::Computed(c.clone()),
            Condition::Performed(p) => Node::Performed {
                sel: sel(&p.event, &p.filters, None),
                count: p.count,
                within: p.within_days.map(|d| i64::from(d) * DAY),
                between: p.between.map(|b| (b.from.timestamp(), b.to.timestamp())),
            },
            Condition::LastPerformed(l) => Node::Last {
                sel: sel(&l.event, &l.filters, None),
                op: l.op,
                secs: i64::from(l.days) * DAY,
            },
            Condition::NotFollowedBy(k) => Node::NotFollowed {
                first: sel(&k.event, &[], Some(&k.key)),
                then: sel(&k.not_followed_by, &[], Some(&k.key)),
                wait: i64::from(k.within_minutes) * 60,
                lookback: i64::from(k.lookback_days) * DAY,
            },
            Condition::InSegment(id) => Node::Segment(position[&(id.clone(), false)]),
            Condition::Tag(name) => Node::Segment(position[&(name.clone(), true)]),
        }
    }

    fn selectors_of(node: &Node, out: &mut BTreeSet<u32>) {
        match node {
            Node::And(l) | Node::Or(l) => l.iter().for_each(|n| Self::selectors_of(n, out)),
            Node::Not(n) => Self::selectors_of(n, out),
            Node::Performed { sel, .. } | Node::Last { sel, .. } => {
                out.insert(*sel);
            }
            Node::NotFollowed { first, then, .. } => {
                out.extend([*first, *then]);
            }
            _ => {}
        }
    }

    /// Saves (adds or replaces) a segment or tag, backfilling what its conditions need from
    /// `events` (the tenant's events in log order), and computes its members at `now`.
    /// Saving announces no transitions: only later changes do.
    pub fn upsert<'a>(
        &mut self,
        spec: Spec,
        events: impl IntoIterator<Item = &'a Event>,
        now: DateTime<Utc>,
    ) -> Result<(), SegmentError> {
        let specs = self.with_spec(spec);
        self.install(specs, events, now)
    }

    /// The saved specs, with `spec` added or in place of the one with its id.
    fn with_spec(&self, spec: Spec) -> Vec<Spec> {
        let mut specs = self.specs.clone();
        match specs
            .iter_mut()
            .find(|s| s.id == spec.id && s.tag == spec.tag)
        {
            Some(s) => *s = spec,
            None => specs.push(spec),
        }
        specs
    }

    /// Compiles `specs` and records, from `events`, the hits of the selectors they use that
    /// no saved segment used; returns the compiled segments and every selector they use.
    /// On an error, the selectors it added are dropped again.
    fn prepare<'a>(
        &mut self,
        specs: &[Spec],
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<(Vec<Compiled>, BTreeSet<u32>), SegmentError> {
        let compiled = match self.compile(specs) {
            Ok(c) => c,
            Err(e) => {
                self.profiles.retain_selectors(&self.backfilled);
                return Err(e);
            }
        };
        let mut used = BTreeSet::new();
        for c in &compiled {
            Self::selectors_of(&c.node, &mut used);
        }
        let fresh: Vec<u32> = used.difference(&self.backfilled).copied().collect();
        if !fresh.is_empty() {
            self.profiles.backfill(&fresh, events);
        }
        Ok((compiled, used))
    }

    /// Removes a segment or tag that nothing else refers to.
    pub fn remove(&mut self, id: &str, tag: bool, now: DateTime<Utc>) -> Result<(), SegmentError> {
        if self.spec(id, tag).is_none() {
            return Err(SegmentError::NotFound(id.to_owned()));
        }
        for s in &self.specs {
            if let Rule::Condition(d) = &s.rule {
                let (segs, tags) = d.condition.references();
                let used = if tag {
                    tags.iter().any(|t| t == id)
                } else {
                    segs.iter().any(|x| x == id)
                };
                if used {
                    return Err(SegmentError::InUse(id.to_owned(), s.id.clone()));
                }
            }
        }
        let specs: Vec<Spec> = self
            .specs
            .iter()
            .filter(|s| !(s.id == id && s.tag == tag))
            .cloned()
            .collect();
        self.install(specs, std::iter::empty(), now)
    }

    fn install<'a>(
        &mut self,
        specs: Vec<Spec>,
        events: impl IntoIterator<Item = &'a Event>,
        now: DateTime<Utc>,
    ) -> Result<(), SegmentError> {
        let t = now.timestamp().max(self.now);
        let (compiled, used) = self.prepare(&specs, events)?;
        self.profiles.retain_selectors(&used);
        self.backfilled = used;
        let mut old_sizes: HashMap<(String, bool), Vec<(i64, u64)>> = self
            .compiled
            .iter()
            .zip(std::mem::take(&mut self.sizes))
            .map(|(c, v)| ((c.spec.id.clone(), c.spec.tag), v))
            .collect();
        self.sizes = compiled
            .iter()
            .map(|c| {
                old_sizes
                    .remove(&(c.spec.id.clone(), c.spec.tag))
                    .unwrap_or_default()
            })
            .collect();
        self.specs = specs;
        self.compiled = compiled;
        self.members =
            Members::loaded(self.recompute(DateTime::from_timestamp(t, 0).unwrap_or_default()));
        // Timers for everyone, as conditions changed; memberships by their new positions.
        self.timers.clear();
        self.state_of.clear();
        self.reindex();
        for i in 0..self.compiled.len() {
            self.note_size(i, t);
        }
        let people: Vec<PersonId> = self.profiles.persons().collect();
        for p in people {
            let (_, next) = self.evaluate(p, t);
            self.schedule(p, next);
        }
        self.now = self.now.max(t);
        Ok(())
    }

    /// Sets each person's memberships from the member sets `members` holds (after a
    /// recompute, or once a snapshot was read back), then drops the sets.
    /// A copy to write as a snapshot, taken in a fraction of the time writing takes (the
    /// profiles and identity sets are shared, see [`Profiles::frozen`]), so that the writing
    /// happens while the engine goes on. It serializes as this engine does, and is good for
    /// nothing else.
    pub(crate) fn frozen(&self) -> Engine {
        Engine {
            profiles: self.profiles.frozen(),
            specs: self.specs.clone(),
            compiled: self.compiled.clone(),
            members: Members {
                counts: self.members.counts.clone(),
                loaded: Vec::new(),
            },
            sizes: self.sizes.clone(),
            timers: self.timers.clone(),
            state_of: self.state_of.clone(),
            backfilled: self.backfilled.clone(),
            now: self.now,
        }
    }

    pub fn reindex(&mut self) {
        let loaded = std::mem::take(&mut self.members.loaded);
        for st in self.state_of.values_mut() {
            st.clear_bits();
        }
        self.members.counts = loaded.iter().map(|m| m.len() as u64).collect();
        for (i, m) in loaded.into_iter().enumerate() {
            for p in m {
                self.state_of.entry(p).or_default().set(i, true);
            }
        }
    }

    fn schedule(&mut self, person: PersonId, next: Option<i64>) {
        let was = self.state_of.get(&person).cloned().unwrap_or_default();
        let mut now = was.clone();
        now.set_timer(next);
        self.replace_state(person, &was, now);
    }

    /// Replaces a person's state `was` by `now`, moving its timer in `timers`; an empty
    /// state is not kept.
    fn replace_state(&mut self, person: PersonId, was: &PersonState, now: PersonState) {
        if *was == now {
            return;
        }
        if was.timer != now.timer {
            if let Some(old) = was.timer() {
                self.timers.remove(&(old, person));
            }
            if let Some(n) = now.timer() {
                self.timers.insert((n, person));
            }
        }
        if now.is_empty() {
            self.state_of.remove(&person);
        } else {
            self.state_of.insert(person, now);
        }
    }

    /// Every segment's answer for `person` at `t`, in evaluation order, and the next
    /// instant at which one can change.
    fn evaluate(&self, person: PersonId, t: i64) -> (Vec<bool>, Option<i64>) {
        self.evaluate_touched(person, t, None)
    }

    /// As [`Engine::evaluate`], but with `touched` (what an event changed, and whether the
    /// person is in each segment now) only the segments it reaches are evaluated; the
    /// others keep their current answer. The next
    /// instant is then the earliest of the person's current timer and the instants of the
    /// segments evaluated: never later than the next change (at worst a timer fires early,
    /// finds nothing changed, and is set again).
    fn evaluate_touched(
        &self,
        person: PersonId,
        t: i64,
        touched: Option<(&Touched, &PersonState)>,
    ) -> (Vec<bool>, Option<i64>) {
        let mut results = Vec::with_capacity(self.compiled.len());
        let Some((_, profile)) = self.profiles.get(person) else {
            results.resize(self.compiled.len(), false);
            return (results, None);
        };
        let next = self.evaluate_profile(person, &profile, t, touched, &mut results);
        (results, next)
    }

    /// As [`Engine::evaluate_touched`], for a profile at hand, into `results` (empty): a
    /// recompute reuses one buffer for all the persons of a chunk.
    fn evaluate_profile(
        &self,
        person: PersonId,
        profile: &Profile,
        t: i64,
        touched: Option<(&Touched, &PersonState)>,
        results: &mut Vec<bool>,
    ) -> Option<i64> {
        let n = self.compiled.len();
        let graph = self.profiles.graph();
        let mut changed = Vec::with_capacity(touched.map_or(0, |_| n));
        let mut next = touched.and_then(|(_, st)| st.timer());
        for (i, c) in self.compiled.iter().enumerate() {
            // Only an event's re-evaluation compares with the current members (a whole
            // evaluation, as in a recompute, has no use for them).
            let was_in = touched.is_some_and(|(_, st)| st.is_in(i));
            if let Some((tc, _)) = touched
                && !c.deps.reached_by(tc, &changed)
            {
                results.push(was_in);
                changed.push(false);
                continue;
            }
            let ctx = Ctx {
                profile,
                graph,
                person,
                t,
                results,
            };
            let (v, at) = c.node.eval(&ctx);
            next = min_opt(next, at);
            results.push(v);
            if touched.is_some() {
                changed.push(v != was_in);
            }
        }
        next
    }

    /// Re-evaluates one person at `t` (with `touched`, only what an event changed):
    /// transitions, and the person's next timer.
    fn refresh(
        &mut self,
        person: PersonId,
        t: i64,
        touched: Option<&Touched>,
        out: &mut Vec<Transition>,
    ) {
        // One look at the person's memberships, for the evaluation and the transitions.
        let was = self.state_of.get(&person).cloned().unwrap_or_default();
        let (results, next) = self.evaluate_touched(person, t, touched.map(|tc| (tc, &was)));
        let at = DateTime::from_timestamp(t, 0).unwrap_or_default();
        let mut now = was.clone();
        for (i, now_in) in results.into_iter().enumerate() {
            if was.is_in(i) == now_in {
                continue;
            }
            now.set(i, now_in);
            self.members.count(i, now_in);
            self.note_size(i, t);
            let spec = &self.compiled[i].spec;
            out.push(Transition {
                segment: spec.id.clone(),
                tag: spec.tag,
                person,
                entered: now_in,
                at,
            });
        }
        now.set_timer(next);
        self.replace_state(person, &was, now);
    }

    /// Lets time pass up to `now`: every timer due fires at its own instant, in order.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Transition> {
        let now = now.timestamp();
        let mut out = Vec::new();
        while let Some(&(t, person)) = self.timers.first() {
            if t > now {
                break;
            }
            // Its timer is `t`: taken off here, so the loop moves on.
            self.schedule(person, None);
            self.refresh(person, t, None, &mut out);
        }
        self.now = self.now.max(now);
        out
    }

    /// Applies one event at `now`: the timers due first, then the event's person.
    pub fn apply(&mut self, e: &Event, now: DateTime<Utc>) -> (Applied, Vec<Transition>) {
        self.apply_parsed(e, &Parsed::of(e), now)
    }

    /// As [`Engine::apply`], with the event's traits and properties parsed already.
    pub fn apply_parsed(
        &mut self,
        e: &Event,
        parsed: &Parsed,
        now: DateTime<Utc>,
    ) -> (Applied, Vec<Transition>) {
        let mut out = self.advance(now);
        let applied = self.profiles.apply_parsed(e, parsed);
        for gone in &applied.absorbed {
            self.forget(*gone);
        }
        if let Some(p) = applied.person {
            let touched = (!applied.touched.everything).then_some(&applied.touched);
            self.refresh(p, self.now, touched, &mut out);
        }
        (applied, out)
    }

    /// Sets persons' predictions (`PREDICTIONS` names) and re-evaluates those whose
    /// predictions changed.
    pub fn set_predictions(
        &mut self,
        updates: impl IntoIterator<Item = (PersonId, BTreeMap<String, f64>)>,
        now: DateTime<Utc>,
    ) -> Vec<Transition> {
        let mut out = self.advance(now);
        for (person, values) in updates {
            let Some((p, _)) = self.profiles.get(person) else {
                continue;
            };
            if self.profiles.set_predictions(p, values) {
                self.refresh(p, self.now, None, &mut out);
            }
        }
        out
    }

    /// Drops a person that no longer exists (merged away) from every segment, silently: the
    /// person that absorbed it carries on.
    fn forget(&mut self, person: PersonId) {
        let Some(st) = self.state_of.remove(&person) else {
            return;
        };
        for i in 0..self.compiled.len() {
            if st.is_in(i) {
                self.members.count(i, false);
                self.note_size(i, self.now);
            }
        }
        if let Some(t) = st.timer() {
            self.timers.remove(&(t, person));
        }
    }

    /// Undoes merge `merge_id` (see [`Profiles::unmerge`]) and re-evaluates the persons it
    /// separates; `events` are the tenant's events in log order.
    pub fn unmerge(
        &mut self,
        merge_id: u64,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, UnmergeError> {
        // Refused before any timer fires, so no transition is lost to the error.
        self.profiles.graph().can_unmerge(merge_id)?;
        let mut out = self.advance(now);
        let rebuilt = self.profiles.unmerge(merge_id, events)?;
        let gone: Vec<PersonId> = self
            .state_of
            .keys()
            .copied()
            .filter(|p| self.profiles.get(*p).is_none_or(|(q, _)| q != *p))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for p in gone {
            self.forget(p);
        }
        for p in rebuilt {
            self.refresh(p, self.now, None, &mut out);
        }
        Ok(out)
    }

    /// Forgets what is personal about `person` (see [`Profiles::erase_personal`]) and
    /// re-evaluates it.
    pub fn erase_personal(&mut self, person: PersonId, now: DateTime<Utc>) -> Vec<Transition> {
        let mut out = self.advance(now);
        self.profiles.erase_personal(person);
        if self.profiles.get(person).is_some() {
            self.refresh(person, self.now, None, &mut out);
        }
        out
    }

    /// Every segment's members at `now`, evaluated from scratch, in evaluation order.
    ///
    /// Persons are split into chunks evaluated on every core (rayon); each chunk's members
    /// are merged at the end.
    pub fn recompute(&self, now: DateTime<Utc>) -> Vec<PersonSet> {
        use rayon::prelude::*;
        let t = now.timestamp();
        let n = self.compiled.len();
        self.profiles
            .in_memory_order()
            .par_chunks(4096)
            .map(|chunk| {
                let mut out = vec![Vec::new(); n];
                let mut results = Vec::with_capacity(n);
                for &(p, stored) in chunk {
                    results.clear();
                    self.evaluate_profile(p, &stored.load(), t, None, &mut results);
                    for (i, &v) in results.iter().enumerate() {
                        if v {
                            out[i].push(p);
                        }
                    }
                }
                out
            })
            .fold(
                || vec![PersonSet::new(); n],
                |mut acc, part| {
                    for (set, list) in acc.iter_mut().zip(part) {
                        set.extend(list);
                    }
                    acc
                },
            )
            .reduce(
                || vec![PersonSet::new(); n],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        if x.len() < y.len() {
                            let small = std::mem::replace(x, y);
                            x.extend(small);
                        } else {
                            x.extend(y);
                        }
                    }
                    a
                },
            )
    }

    /// The members every segment has now, by (id, tag), to compare with [`Engine::recompute`].
    pub fn membership(&self) -> Vec<((String, bool), PersonSet)> {
        self.compiled
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let set = self.members_at(i).iter().collect();
                ((c.spec.id.clone(), c.spec.tag), set)
            })
            .collect()
    }

    /// How many persons a definition would hold at `now`, and up to `sample` of them
    /// (smallest ids first), without saving it. Its behavioural conditions see only the
    /// events that saved segments already track, plus `events` for the others.
    pub fn preview<'a>(
        &mut self,
        spec: Spec,
        events: impl IntoIterator<Item = &'a Event>,
        now: DateTime<Utc>,
        sample: usize,
    ) -> Result<(usize, Vec<PersonId>), SegmentError> {
        let (id, tag) = (spec.id.clone(), spec.tag);
        let specs = self.with_spec(spec);
        let (compiled, _) = self.prepare(&specs, events)?;
        let pos = compiled
            .iter()
            .position(|c| c.spec.id == id && c.spec.tag == tag)
            .unwrap_or_default();
        let t = now.timestamp();
        let mut hits: Vec<PersonId> = Vec::new();
        for (p, profile) in self.profiles.people() {
            let mut results = Vec::with_capacity(pos + 1);
            for c in &compiled[..=pos] {
                let ctx = Ctx {
                    profile: &profile,
                    graph: self.profiles.graph(),
                    person: p,
                    t,
                    results: &results,
                };
                results.push(c.node.eval(&ctx).0);
            }
            if results[pos] {
                hits.push(p);
            }
        }
        // Hits of selectors only the preview used go again.
        self.profiles.retain_selectors(&self.backfilled);
        hits.sort_unstable();
        let count = hits.len();
        hits.truncate(sample);
        Ok((count, hits))
    }

    /// When the next timer is due, if any.
    pub fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.timers
            .first()
            .and_then(|(t, _)| DateTime::from_timestamp(*t, 0))
    }

    /// Puts the profiles under a memory budget (`None`: all decoded); see
    /// [`crate::people`].
    pub fn set_budget(&mut self, budget: Option<std::sync::Arc<crate::people::Budget>>) {
        self.profiles.set_budget(budget);
    }

    /// Moves decoded profiles to cold while the memory budget is over (see
    /// [`crate::people::People::enforce`]).
    pub fn trim_profiles(&mut self) {
        self.profiles.trim();
    }

    /// Estimated heap bytes (see [`crate::heap`]): profiles, identity graph, memberships
    /// and timers. `tests/heap.rs` checks it against the allocator.
    pub fn heap_bytes(&self) -> usize {
        use crate::heap;
        self.profiles.heap_bytes()
            + self.members.counts.capacity() * 8
            + heap::btree::<(i64, PersonId), ()>(self.timers.len())
            + heap::table::<PersonId, PersonState>(self.state_of.capacity())
            + self
                .state_of
                .values()
                .map(PersonState::heap_bytes)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000;

    #[test]
    fn a_person_state_holds_any_number_of_segments_and_a_timer() {
        assert_eq!(std::mem::size_of::<PersonState>(), 24);
        let mut st = PersonState::default();
        assert!(st.is_empty());
        for i in [3, 63, 64, 130] {
            st.set(i, true);
        }
        st.set(200, false);
        let mut none = PersonState::default();
        none.set(70, false);
        assert_eq!(none, PersonState::default(), "nothing kept to clear a bit");
        assert_eq!(
            st.high.as_ref().map(|h| h.len()),
            Some(2),
            "not grown to clear a bit"
        );
        let on: Vec<usize> = (0..256).filter(|&i| st.is_in(i)).collect();
        assert_eq!(on, [3, 63, 64, 130]);
        for i in [3, 63, 64, 130] {
            st.set(i, false);
        }
        assert!(st.is_empty());
        st.set_timer(Some(i64::MIN));
        assert_eq!(
            st.timer(),
            Some(i64::MIN + 1),
            "the earliest instant stays a timer"
        );
        assert!(!st.is_empty());
        st.set_timer(None);
        assert!(st.is_empty());
        st.set(1, true);
        st.clear_bits();
        assert!(st.is_empty());
    }

    impl Engine {
        /// Each person's state agrees with the members and the timers.
        fn check_state(&self) {
            assert!(self.members.loaded.is_empty(), "member sets reindexed");
            assert_eq!(self.members.counts.len(), self.compiled.len());
            for (i, &n) in self.members.counts.iter().enumerate() {
                let held = self.state_of.values().filter(|st| st.is_in(i)).count();
                assert_eq!(held as u64, n, "the count of segment {i}");
            }
            for (p, st) in self.state_of.iter() {
                assert!(!st.is_empty(), "{p} kept empty");
                if let Some(t) = st.timer() {
                    assert!(self.timers.contains(&(t, *p)), "{p}'s timer");
                }
            }
            let timed = self
                .state_of
                .values()
                .filter(|st| st.timer().is_some())
                .count();
            assert_eq!(timed, self.timers.len(), "one timer per person");
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(T0 + secs, 0).expect("time")
    }

    fn event(v: Value, n: u32, secs: i64) -> Event {
        let mut v = v;
        let m = v.as_object_mut().expect("object");
        m.insert("messageId".into(), json!(format!("m{n}")));
        m.insert("timestamp".into(), json!(at(secs).to_rfc3339()));
        m.insert("receivedAt".into(), json!(at(secs).to_rfc3339()));
        serde_json::from_str(&v.to_string()).expect("an event")
    }

    fn spec(id: &str, condition: Value) -> Spec {
        Spec {
            id: id.into(),
            tag: false,
            rule: Rule::Condition(
                Definition::parse(&json!({ "condition": condition })).expect("valid"),
            ),
        }
    }

    fn track(user: &str, name: &str, props: Value, n: u32, secs: i64) -> Event {
        event(
            json!({"type": "track", "userId": user, "event": name, "properties": props}),
            n,
            secs,
        )
    }

    fn summary(ts: &[Transition]) -> Vec<(String, bool, i64)> {
        ts.iter()
            .map(|t| (t.segment.clone(), t.entered, t.at.timestamp() - T0))
            .collect()
    }

    #[test]
    fn predictions_move_persons_between_segments_and_survive_a_snapshot() {
        let mut e = Engine::new(MergeRules::default());
        e.upsert(
            spec(
                "at-risk",
                json!({"computed": {"name": "churn_risk", "op": "gt", "value": 0.5}}),
            ),
            [],
            at(0),
        )
        .expect("saved");
        e.apply(&track("u1", "Product Viewed", json!({}), 1, 0), at(0));
        let p = e.profiles().people().next().expect("a person").0;
        let risky = BTreeMap::from([("churn_risk".to_owned(), 0.8)]);
        let ts = e.set_predictions([(p, risky.clone())], at(10));
        assert_eq!(summary(&ts), [("at-risk".to_owned(), true, 10)]);
        // The same again changes nothing; an event does not re-evaluate it either.
        assert!(e.set_predictions([(p, risky)], at(11)).is_empty());
        let (_, ts) = e.apply(&track("u1", "Product Viewed", json!({}), 2, 12), at(12));
        assert!(ts.is_empty());
        let packed = crate::snapshot::encode(&crate::snapshot::BodyRef {
            tenant: livora_model::TenantId::generate(),
            applied: 0,
            history_from: 0,
            engine: &e,
            announced: &HashMap::new(),
        })
        .expect("encodes");
        let back = crate::snapshot::decode(std::path::Path::new("p.snap"), &packed)
            .expect("decodes")
            .engine;
        let (_, prof) = back.profiles().get(p).expect("the person");
        assert_eq!(prof.predictions.get("churn_risk"), Some(&0.8));
        let ts = e.set_predictions(
            [(p, BTreeMap::from([("churn_risk".to_owned(), 0.1)]))],
            at(20),
        );
        assert_eq!(summary(&ts), [("at-risk".to_owned(), false, 20)]);
    }

    #[test]
    fn no_order_for_30_days_turns_true_once_at_the_right_instant() {
        let mut e = Engine::new(MergeRules::default());
        e.upsert(
            spec(
                "lapsed",
                json!({"computed": {"name": "days_since_last_order", "op": "gte", "value": 30}}),
            ),
            [],
            at(0),
        )
        .expect("saved");
        let (_, ts) = e.apply(
            &track("u1", "Order Completed", json!({"revenue": 10}), 1, 0),
            at(0),
        );
        assert!(ts.is_empty());
        assert!(e.advance(at(30 * DAY - 1)).is_empty());
        let ts = e.advance(at(30 * DAY + 5000));
        assert_eq!(summary(&ts), [("lapsed".to_owned(), true, 30 * DAY)]);
        assert!(e.advance(at(400 * DAY)).is_empty(), "exactly once");
        // A new order takes the person out, at the event's arrival.
        let (_, ts) = e.apply(
            &track("u1", "Order Completed", json!({}), 2, 401 * DAY),
            at(401 * DAY),
        );
        assert_eq!(summary(&ts), [("lapsed".to_owned(), false, 401 * DAY)]);
    }

    /// What must survive a snapshot: persons, profiles, memberships, timers, and how the
    /// engine goes on from there.
    #[test]
    fn an_engine_read_back_from_a_snapshot_goes_on_the_same() {
        use crate::snapshot::decode;
        let mut e = Engine::new(MergeRules::default());
        let cart = json!({"not_followed_by": {"event": "Product Added", "key": "cart_id",
            "not_followed_by": "Order Completed", "within_minutes": 60}});
        e.upsert(spec("abandoned", cart), [], at(0)).expect("saved");
        e.upsert(
            spec(
                "pro",
                json!({"trait": {"name": "plan", "op": "equals", "value": "pro"}}),
            ),
            [],
            at(0),
        )
        .expect("saved");
        e.upsert(
            Spec {
                id: "vip".into(),
                tag: true,
                rule: Rule::Condition(
                    Definition::parse(&json!({"condition": {"in_segment": "pro"}})).expect("valid"),
                ),
            },
            [],
            at(0),
        )
        .expect("saved");
        let identify = |anon: &str, user: &str, plan: &str, n, secs| {
            event(
                json!({"type": "identify", "anonymousId": anon, "userId": user,
                    "traits": {"plan": plan, "email": format!("{user}@example.com")}}),
                n,
                secs,
            )
        };
        e.apply(&identify("a1", "u1", "pro", 1, 0), at(0));
        e.apply(
            &track("u1", "Product Added", json!({"cart_id": "c1"}), 2, 10),
            at(10),
        );
        e.apply(&identify("a2", "u2", "free", 3, 20), at(20));
        // A trait set to null stays set (to null), apart from one never set.
        e.apply(
            &event(
                json!({"type": "identify", "userId": "u2", "traits": {"nickname": null}}),
                7,
                25,
            ),
            at(25),
        );
        let tenant = livora_model::TenantId::generate();
        let packed = crate::snapshot::encode(&crate::snapshot::BodyRef {
            tenant,
            applied: 3,
            history_from: 0,
            engine: &e,
            announced: &HashMap::new(),
        })
        .expect("encodes");
        // What a snapshot round writes: a frozen copy, encoded after the engine moved on.
        let frozen = crate::snapshot::Frozen::new(tenant, 3, 0, &e, &HashMap::new());
        let body = decode(std::path::Path::new("test.snap"), &packed).expect("decodes");
        let mut back = body.engine;
        assert_eq!(body.applied, 3);
        back.check_state();
        assert_eq!(back.state_of, e.state_of);
        assert_eq!(back.membership(), e.membership());
        assert_eq!(back.next_timer(), e.next_timer());
        assert_eq!(
            back.profiles().graph().partition(),
            e.profiles().graph().partition()
        );
        assert_eq!(back.profiles().graph().log(), e.profiles().graph().log());
        let people = sorted_people;
        assert_eq!(people(&back), people(&e));
        // The same future on both: an alias merging u2 into u1, a timer, an order.
        let later = [
            event(
                json!({"type": "alias", "userId": "u1", "previousId": "a2"}),
                4,
                30,
            ),
            track("u2", "Product Added", json!({"cart_id": "c2"}), 5, 40),
            identify("a2", "u2", "pro", 6, 50),
        ];
        for (i, ev) in later.iter().enumerate() {
            let now = at(30 + 10 * i as i64);
            assert_eq!(back.apply(ev, now), e.apply(ev, now));
        }
        assert_eq!(back.advance(at(DAY)), e.advance(at(DAY)));
        assert!(!e.members("abandoned", false).expect("a segment").is_empty());
        assert_eq!(back.membership(), e.membership());
        assert_eq!(people(&back), people(&e));
        // The frozen copy still holds the state before `later`, identifier index included.
        let old = decode(std::path::Path::new("test.snap"), &packed).expect("decodes");
        let thawed = decode(
            std::path::Path::new("frozen.snap"),
            &frozen.encode().expect("encodes"),
        )
        .expect("decodes");
        let (old, thawed) = (old.engine, thawed.engine);
        assert_ne!(people(&old), people(&e));
        assert_eq!(people(&thawed), people(&old));
        assert_eq!(thawed.state_of, old.state_of);
        assert_eq!(thawed.membership(), old.membership());
        assert_eq!(thawed.next_timer(), old.next_timer());
        assert_eq!(
            thawed.profiles().graph().log(),
            old.profiles().graph().log()
        );
        let partition = old.profiles().graph().partition();
        assert_eq!(thawed.profiles().graph().partition(), partition);
        for i in partition.iter().flatten() {
            let g = |x: &Engine| x.profiles().graph().person_of(i);
            assert!(g(&old).is_some());
            assert_eq!(g(&thawed), g(&old), "{i:?}");
        }
    }

    #[test]
    fn abandoned_cart_enters_after_the_wait_and_leaves_on_the_order() {
        let mut e = Engine::new(MergeRules::default());
        let cond = json!({"not_followed_by": {"event": "Product Added", "key": "cart_id",
            "not_followed_by": "Order Completed", "within_minutes": 60}});
        e.upsert(spec("abandoned", cond), [], at(0)).expect("saved");
        e.apply(
            &track("u1", "Product Added", json!({"cart_id": "c1"}), 1, 0),
            at(0),
        );
        // Another cart's order does not count.
        e.apply(
            &track("u1", "Order Completed", json!({"cart_id": "c0"}), 2, 100),
            at(100),
        );
        assert!(e.advance(at(3599)).is_empty());
        assert_eq!(
            summary(&e.advance(at(3600))),
            [("abandoned".to_owned(), true, 3600)]
        );
        let (_, ts) = e.apply(
            &track("u1", "Order Completed", json!({"cart_id": "c1"}), 3, 4000),
            at(4000),
        );
        assert_eq!(summary(&ts), [("abandoned".to_owned(), false, 4000)]);
        // A cart ordered within the hour never enters.
        e.apply(
            &track("u2", "Product Added", json!({"cart_id": "c2"}), 4, 5000),
            at(5000),
        );
        e.apply(
            &track("u2", "Order Completed", json!({"cart_id": "c2"}), 5, 5100),
            at(5100),
        );
        assert!(
            e.advance(at(100 * DAY))
                .iter()
                .all(|t| t.person != 2 || t.segment != "abandoned")
        );
        assert_eq!(e.members("abandoned", false).map(|m| m.len()), Some(0));
    }

    #[test]
    fn windows_references_tags_and_manual_lists() {
        let mut e = Engine::new(MergeRules::default());
        e.upsert(
            spec(
                "recent-buyer",
                json!({"performed": {"event": "Order Completed",
                "where": [{"property": "revenue", "op": "gte", "value": 50}], "within_days": 7}}),
            ),
            [],
            at(0),
        )
        .expect("saved");
        e.upsert(
            Spec {
                id: "vip".into(),
                tag: true,
                rule: Rule::Condition(
                    Definition::parse(&json!({"condition": {"and": [
                        {"in_segment": "recent-buyer"},
                        {"trait": {"name": "plan", "op": "equals", "value": "pro"}}
                    ]}}))
                    .expect("valid"),
                ),
            },
            [],
            at(0),
        )
        .expect("saved");
        e.upsert(
            spec(
                "vip-or-listed",
                json!({"or": [{"tag": "vip"}, {"in_segment": "listed"}]}),
            ),
            [],
            at(0),
        )
        .expect_err("listed does not exist yet");
        e.upsert(
            Spec {
                id: "listed".into(),
                tag: false,
                rule: Rule::Manual(BTreeSet::from([Identifier::raw(
                    "email",
                    "bob@example.com",
                )
                .unwrap_or_else(|| panic!("test identifier"))])),
            },
            [],
            at(0),
        )
        .expect("saved");
        e.upsert(
            spec(
                "vip-or-listed",
                json!({"or": [{"tag": "vip"}, {"in_segment": "listed"}]}),
            ),
            [],
            at(0),
        )
        .expect("saved");
        let (a, _) = e.apply(
            &event(
                json!({"type": "identify", "userId": "ann", "traits": {"plan": "pro"}}),
                1,
                0,
            ),
            at(0),
        );
        let ann = a.person.expect("ann");
        let (_, ts) = e.apply(
            &track("ann", "Order Completed", json!({"revenue": 20}), 2, 10),
            at(10),
        );
        assert!(ts.is_empty(), "below the filter");
        let (_, ts) = e.apply(
            &track("ann", "Order Completed", json!({"revenue": 80}), 3, 20),
            at(20),
        );
        assert_eq!(
            summary(&ts),
            [
                ("recent-buyer".to_owned(), true, 20),
                ("vip".to_owned(), true, 20),
                ("vip-or-listed".to_owned(), true, 20)
            ]
        );
        assert_eq!(ts[1].event_name(), "Tag Added");
        assert_eq!(
            e.memberships(ann),
            (vec!["recent-buyer", "vip-or-listed"], vec!["vip"])
        );
        // The order leaves the 7-day window: everything that depended on it goes.
        let ts = e.advance(at(30 * DAY));
        assert_eq!(
            summary(&ts),
            [
                ("recent-buyer".to_owned(), false, 7 * DAY + 21),
                ("vip".to_owned(), false, 7 * DAY + 21),
                ("vip-or-listed".to_owned(), false, 7 * DAY + 21)
            ]
        );
        let (b, ts) = e.apply(
            &event(json!({"type": "identify", "userId": "bob", "traits": {"email": "Bob@example.com"}}), 4, 40 * DAY),
            at(40 * DAY),
        );
        assert_eq!(summary(&ts).len(), 2, "listed by email: {ts:?}");
        assert_eq!(
            e.memberships(b.person.expect("bob")).0,
            vec!["listed", "vip-or-listed"]
        );
        // In use: cannot be removed; cycles are refused.
        assert!(matches!(
            e.remove("listed", false, at(40 * DAY)),
            Err(SegmentError::InUse(..))
        ));
        let cyclic = spec("recent-buyer", json!({"in_segment": "vip-or-listed"}));
        assert!(matches!(
            e.upsert(cyclic, [], at(40 * DAY)),
            Err(SegmentError::Cycle { .. })
        ));
        e.remove("vip-or-listed", false, at(40 * DAY))
            .expect("removed");
        e.remove("listed", false, at(40 * DAY)).expect("removed");
        assert_eq!(e.specs().len(), 2);
        let sizes = e.sizes("recent-buyer", false);
        assert_eq!(sizes.first().map(|s| s.1), Some(1), "{sizes:?}");
        assert_eq!(sizes.last().map(|s| s.1), Some(0));
    }

    #[test]
    fn saving_backfills_from_past_events_and_preview_matches() {
        let events: Vec<Event> = (0..6)
            .map(|i| {
                track(
                    &format!("u{}", i % 3),
                    "Viewed",
                    json!({"n": i}),
                    i,
                    i64::from(i) * 60,
                )
            })
            .collect();
        let mut e = Engine::new(MergeRules::default());
        for ev in &events {
            e.apply(ev, at(400));
        }
        let s = spec(
            "viewers",
            json!({"performed": {"event": "Viewed", "count": {"op": "exactly", "value": 2}}}),
        );
        let (count, sample) = e.preview(s.clone(), &events, at(400), 2).expect("preview");
        assert_eq!((count, sample.len()), (3, 2));
        assert!(e.specs().is_empty(), "a preview saves nothing");
        e.upsert(s, &events, at(400)).expect("saved");
        assert_eq!(e.members("viewers", false).map(|m| m.len()), Some(3));
        let bad = spec("x", json!({"in_segment": "nope"}));
        assert!(matches!(
            e.preview(bad, &events, at(400), 1),
            Err(SegmentError::UnknownSegment { .. })
        ));
    }

    fn definitions() -> Vec<Spec> {
        vec![
            spec(
                "buyers-7d",
                json!({"performed": {"event": "Order Completed", "count": {"op": "at_least", "value": 2}, "within_days": 7}}),
            ),
            spec(
                "at-most-1-view",
                json!({"performed": {"event": "Viewed", "count": {"op": "at_most", "value": 1}, "within_days": 3}}),
            ),
            spec(
                "lapsed",
                json!({"computed": {"name": "days_since_last_order", "op": "gt", "value": 5}}),
            ),
            spec(
                "seen-2d",
                json!({"last_performed": {"event": "Viewed", "op": "within_days", "days": 2}}),
            ),
            spec(
                "abandoned",
                json!({"not_followed_by": {"event": "Product Added", "key": "cart",
                "not_followed_by": "Order Completed", "within_minutes": 120, "lookback_days": 4}}),
            ),
            spec(
                "pro-recent",
                json!({"and": [{"trait": {"name": "plan", "op": "equals", "value": "pro"}},
                {"not": {"in_segment": "lapsed"}}]}),
            ),
            spec(
                "engaged",
                json!({"computed": {"name": "engagement", "op": "gte", "value": 40}}),
            ),
            spec(
                "frequent",
                json!({"computed": {"name": "purchase_frequency", "op": "gte", "value": 1.5}}),
            ),
            spec(
                "signup-recent",
                json!({"trait": {"name": "signup", "op": "within_last_days", "value": 3}}),
            ),
            Spec {
                id: "list".into(),
                tag: false,
                rule: Rule::Manual(
                    [
                        (crate::identity::USER_ID, "u1"),
                        (crate::identity::ANONYMOUS_ID, "a2"),
                    ]
                    .iter()
                    .filter_map(|(k, v)| Identifier::new(k, v, &MergeRules::default()))
                    .collect(),
                ),
            },
            spec(
                "listed-pro",
                json!({"and": [{"in_segment": "list"},
                {"trait": {"name": "plan", "op": "equals", "value": "pro"}}]}),
            ),
        ]
    }

    /// Random steps: an event (some user, device, kind, cart, time near the clock) or a
    /// jump of the clock.
    fn steps() -> impl Strategy<Value = Vec<(u8, u8, u8, u8, u32)>> {
        prop::collection::vec((0u8..8, 0u8..4, 0u8..3, 0u8..3, 0u32..200_000), 1..60)
    }

    /// The event of a step (`None`: the clock jumps).
    fn step_event(
        n: u32,
        (kind, user, anon, cart, dt): (u8, u8, u8, u8, u32),
        clock: i64,
    ) -> Option<Event> {
        let u = format!("u{user}");
        let a = format!("a{anon}");
        // Events may be late (up to a day behind the clock).
        let when = clock - i64::from(dt % 86_400);
        match kind {
            0 => Some(track(
                &u,
                "Order Completed",
                json!({"cart": format!("c{cart}"), "revenue": 10}),
                n,
                when,
            )),
            1 => Some(event(
                json!({"type": "track", "anonymousId": a, "event": "Viewed"}),
                n,
                when,
            )),
            2 => Some(event(
                json!({"type": "track", "anonymousId": a, "event": "Product Added",
                "properties": {"cart": format!("c{cart}")}}),
                n,
                when,
            )),
            3 => Some(event(
                json!({"type": "identify", "userId": u, "anonymousId": a,
                "traits": {"plan": if cart == 0 { "pro" } else { "free" },
                           "signup": at(when).to_rfc3339()}}),
                n,
                when,
            )),
            4 => Some(track(
                &u,
                "Plan Changed",
                json!({"$set": {"plan": if cart == 0 { "free" } else { "pro" }}}),
                n,
                when,
            )),
            _ => None,
        }
    }

    fn sorted_people(x: &Engine) -> Vec<(PersonId, Profile)> {
        let mut v: Vec<(PersonId, Profile)> = x
            .profiles()
            .people()
            .map(|(p, q)| (p, q.into_owned()))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn incremental_membership_equals_recomputation(steps in steps()) {
            let mut e = Engine::new(MergeRules::default());
            for s in definitions() {
                e.upsert(s, [], at(0)).expect("saved");
            }
            let mut clock = 0i64;
            for (n, &step) in steps.iter().enumerate() {
                let n = n as u32;
                let ev = step_event(n, step, clock);
                let dt = step.4;
                match ev {
                    Some(ev) => {
                        e.apply(&ev, at(clock));
                    }
                    None => {
                        clock += i64::from(dt) * 7;
                        e.advance(at(clock));
                    }
                }
                let full = e.recompute(at(clock));
                let inc: Vec<PersonSet> = e.membership().into_iter().map(|(_, m)| m).collect();
                prop_assert_eq!(inc, full, "step {}", n);
                e.check_state();
            }
        }

        /// An engine whose profiles go cold under a memory budget (all but the one in use
        /// at a zero budget, some at a small one) answers as one with every profile decoded:
        /// the same transitions, members, profiles and recomputation, across snapshots
        /// read back under the budget and a segment saved late (a backfill over cold
        /// profiles).
        #[test]
        fn a_memory_budget_changes_no_answer(steps in steps(), limit in prop_oneof![Just(0usize), Just(3000)]) {
            let budget = crate::people::Budget::new(limit, std::env::temp_dir().join("livora-engine-tests"))
                .expect("budget");
            let mut plain = Engine::new(MergeRules::default());
            let mut tight = Engine::new(MergeRules::default());
            tight.set_budget(Some(budget.clone()));
            let defs = definitions();
            let (early, late) = defs.split_at(defs.len() / 2);
            for s in early {
                plain.upsert(s.clone(), [], at(0)).expect("saved");
                tight.upsert(s.clone(), [], at(0)).expect("saved");
            }
            let mut clock = 0i64;
            let mut past: Vec<Event> = Vec::new();
            for (n, &step) in steps.iter().enumerate() {
                let n = n as u32;
                match step_event(n, step, clock) {
                    Some(ev) => {
                        prop_assert_eq!(plain.apply(&ev, at(clock)), tight.apply(&ev, at(clock)), "step {}", n);
                        past.push(ev);
                    }
                    None => {
                        clock += i64::from(step.4) * 7;
                        prop_assert_eq!(plain.advance(at(clock)), tight.advance(at(clock)));
                    }
                }
                if n % 7 == 3 {
                    let packed = crate::snapshot::encode(&crate::snapshot::BodyRef {
                        tenant: livora_model::TenantId::generate(),
                        applied: 0,
                        history_from: 0,
                        engine: &tight.frozen(),
                        announced: &HashMap::new(),
                    }).expect("encodes");
                    tight = crate::people::reading_with(Some(budget.clone()), || {
                        crate::snapshot::decode(std::path::Path::new("t.snap"), &packed).expect("decodes")
                    }).engine;
                }
                if n == 10 {
                    for s in late {
                        plain.upsert(s.clone(), &past, at(clock)).expect("saved");
                        tight.upsert(s.clone(), &past, at(clock)).expect("saved");
                    }
                }
                prop_assert_eq!(plain.membership(), tight.membership(), "step {}", n);
                prop_assert_eq!(sorted_people(&plain), sorted_people(&tight), "step {}", n);
                if limit == 0 {
                    prop_assert!(tight.profiles().hot() <= 1, "{} decoded", tight.profiles().hot());
                }
            }
            prop_assert_eq!(plain.recompute(at(clock)), tight.recompute(at(clock)));
        }
    }
}
