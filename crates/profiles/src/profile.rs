//! The profiles of one tenant: the identity graph, each person's traits and computed
//! attributes, and groups (B2B accounts), kept up to date event by event.
//!
//! [`Profiles::apply`] takes events in log order. Personal fields must arrive decrypted
//! (the caller holds the keys): emails and phone numbers are identifiers, compared by value.

use std::borrow::Cow;
use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use livora_model::{Event, EventType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::behaviour::{Hits, Selector};
use crate::computed::{Computed, ORDER_COMPLETED, ORDER_REFUNDED};
use crate::identity::{
    ANONYMOUS_ID, Cause, EMAIL, Identifier, IdentityGraph, MergeRules, Observation, PHONE,
    PersonId, USER_ID, UnmergeError,
};
use crate::people::{Budget, People, Stored};
use crate::traits::{Stamp, Traits};

/// One person's profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub traits: Traits,
    pub computed: Computed,
    /// Ids of the groups (accounts) the person belongs to.
    pub groups: BTreeSet<String>,
    /// Matching events of the behavioural conditions in use.
    pub hits: Hits,
    /// The models' latest predictions ([`livora_model::segment::PREDICTIONS`]), set by
    /// training rather than by events; last, so that older snapshots read as none.
    #[serde(default)]
    pub predictions: crate::sorted_map::SortedMap<String, f64>,
}

impl Profile {
    fn merge(&mut self, other: Profile) {
        self.traits.merge(&other.traits);
        self.computed.merge(&other.computed);
        self.groups.extend(other.groups);
        self.hits.merge(&other.hits);
        // The next training predicts for the merged person; until then, keep what is known.
        for (k, v) in other.predictions {
            self.predictions.entry(k).or_insert(v);
        }
    }

    /// Estimated heap bytes it holds (see [`crate::heap`]), not counting itself.
    pub fn heap_bytes(&self) -> usize {
        self.traits.heap_bytes()
            + self.computed.heap_bytes()
            + crate::heap::btree::<String, ()>(self.groups.len())
            + self.groups.iter().map(String::capacity).sum::<usize>()
            + self.hits.heap_bytes()
            + crate::heap::vec::<(String, f64)>(self.predictions.len())
            + self.predictions.keys().map(String::capacity).sum::<usize>()
    }
}

/// A group (a B2B account): its traits and members.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub traits: Traits,
    pub members: BTreeSet<PersonId>,
}

/// What one event did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub person: Option<PersonId>,
    /// Persons merged into `person` by the event (they no longer exist).
    pub absorbed: Vec<PersonId>,
    /// What the event changed of the person, so segments that read none of it can be
    /// skipped.
    pub touched: Touched,
}

/// What one event changed of its person's profile, besides the attributes every event
/// changes (events, first and last seen, sessions, active days).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Touched {
    /// A new person, or a merge: anything may have changed.
    pub everything: bool,
    pub traits: bool,
    /// Orders, refunds and what derives from them.
    pub orders: bool,
    /// The person holds an identifier it did not hold before.
    pub identifiers: bool,
    /// The selectors the event matched.
    pub hits: Vec<u32>,
}

/// Profiles of one tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profiles {
    graph: IdentityGraph,
    /// Hot ones shared with a [frozen](Profiles::frozen) copy until changed; cold ones
    /// encoded (see [`People`]).
    people: People,
    groups: HashMap<String, Group>,
    /// What behavioural conditions select, by index (`None`: no longer used).
    #[serde(with = "crate::snapshot::as_json")]
    selectors: Vec<Option<Selector>>,
}

fn object(raw: Option<&serde_json::value::RawValue>) -> Map<String, Value> {
    raw.and_then(|r| serde_json::from_str::<Map<String, Value>>(r.get()).ok())
        .unwrap_or_default()
}

/// The revenue of an order or refund: `revenue`, else `total` (as the analytics engine).
fn revenue(props: &Map<String, Value>) -> Option<f64> {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    props
        .get("revenue")
        .and_then(num)
        .or_else(|| props.get("total").and_then(num))
        .filter(|r| r.is_finite())
}

/// The name computed attributes count an event under: the event name of a `track`, the
/// call type otherwise.
pub fn event_name(e: &Event) -> &str {
    match (e.kind, e.event.as_deref()) {
        (EventType::Track, Some(name)) => name,
        (kind, _) => kind.as_str(),
    }
}

fn text<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// An event's `traits` and `properties`, parsed once.
pub struct Parsed {
    pub traits: Map<String, Value>,
    pub props: Map<String, Value>,
}

impl Parsed {
    pub fn of(e: &Event) -> Self {
        Self {
            traits: object(e.traits.as_deref()),
            props: object(e.properties.as_deref()),
        }
    }
}

/// The identifiers an event carries (see the crate doc for where each comes from).
pub fn identifiers(e: &Event, rules: &MergeRules) -> Vec<Identifier> {
    identifiers_in(e, &Parsed::of(e), rules)
}

fn identifiers_in(e: &Event, parsed: &Parsed, rules: &MergeRules) -> Vec<Identifier> {
    let mut out = Vec::new();
    let mut push = |kind: &str, value: Option<&str>| {
        if let Some(i) = value.and_then(|v| Identifier::new(kind, v, rules)) {
            out.push(i);
        }
    };
    push(USER_ID, e.user_id.as_deref());
    push(ANONYMOUS_ID, e.anonymous_id.as_deref());
    if e.kind == EventType::Alias {
        push(ANONYMOUS_ID, e.previous_id.as_deref());
    }
    if e.kind == EventType::Identify {
        push(EMAIL, text(&parsed.traits, "email"));
        push(PHONE, text(&parsed.traits, "phone"));
    }
    if let Some(Value::Object(ct)) = e.context.get("traits") {
        push(EMAIL, text(ct, "email"));
        push(PHONE, text(ct, "phone"));
    }
    if e.kind == EventType::Track {
        let props = &parsed.props;
        match e.event.as_deref() {
            Some("$identify") => {
                push(USER_ID, text(props, "distinct_id"));
                push(ANONYMOUS_ID, text(props, "$anon_distinct_id"));
            }
            Some("$create_alias") => push(ANONYMOUS_ID, text(props, "alias")),
            _ => {}
        }
    }
    // Segment's `context.externalIds`: [{"id": "...", "type": "..."}].
    if let Some(Value::Array(ids)) = e.context.get("externalIds") {
        for x in ids {
            let (Some(id), Some(kind)) = (
                x.get("id").and_then(Value::as_str),
                x.get("type").and_then(Value::as_str),
            ) else {
                continue;
            };
            let kind = match kind {
                "user_id" | "userId" => USER_ID,
                "anonymous_id" | "anonymousId" => ANONYMOUS_ID,
                "email" => EMAIL,
                "phone" => PHONE,
                other => other,
            };
            let valid = !kind.is_empty()
                && kind.len() <= 64
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
            if valid {
                push(kind, Some(id));
            }
        }
    }
    out
}

fn cause_of(e: &Event) -> Cause {
    Cause {
        call: match e.kind {
            EventType::Track => e.event.clone().unwrap_or_default(),
            kind => kind.as_str().to_owned(),
        },
        message_id: e.message_id.clone(),
    }
}

impl Profiles {
    pub fn new(rules: MergeRules) -> Self {
        Self {
            graph: IdentityGraph::new(rules),
            people: People::default(),
            groups: HashMap::new(),
            selectors: Vec::new(),
        }
    }

    /// The index of `selector`, added if new; `true` when it is new (its hits must then be
    /// backfilled from past events with [`Profiles::backfill`]).
    pub fn selector(&mut self, selector: Selector) -> (u32, bool) {
        if let Some(i) = self
            .selectors
            .iter()
            .position(|s| s.as_ref() == Some(&selector))
        {
            return (i as u32, false);
        }
        let i = match self.selectors.iter().position(Option::is_none) {
            Some(free) => {
                self.selectors[free] = Some(selector);
                free
            }
            None => {
                self.selectors.push(Some(selector));
                self.selectors.len() - 1
            }
        };
        (i as u32, true)
    }

    /// Drops the selectors not in `used`, and their hits.
    pub fn retain_selectors(&mut self, used: &BTreeSet<u32>) {
        for (i, s) in self.selectors.iter_mut().enumerate() {
            if !used.contains(&(i as u32)) {
                *s = None;
            }
        }
        self.people
            .for_each_mut(|p| p.hits.retain(|s| used.contains(&s)));
    }

    /// Records the hits of `selectors` (new ones) from past events, in log order.
    pub fn backfill<'a>(&mut self, selectors: &[u32], events: impl IntoIterator<Item = &'a Event>) {
        for e in events {
            let Some(person) = self.attribute(e) else {
                continue;
            };
            let props = object(e.properties.as_deref());
            let name = event_name(e);
            let at = e.timestamp.timestamp();
            for &i in selectors {
                if let Some(hit) = self
                    .selectors
                    .get(i as usize)
                    .and_then(|s| s.as_ref()?.select(name, &props, at))
                {
                    self.people.entry(person).hits.add(i, hit);
                }
            }
        }
    }

    /// See [`IdentityGraph::set_rules`].
    pub fn set_rules(&mut self, rules: MergeRules) {
        self.graph.set_rules(rules);
    }

    /// A copy to write as a snapshot, taken in milliseconds (see [`IdentityGraph::frozen`]):
    /// profiles are shared, and one is copied only when it changes while the copy lives.
    pub(crate) fn frozen(&self) -> Self {
        Self {
            graph: self.graph.frozen(),
            people: self.people.frozen(),
            groups: self.groups.clone(),
            selectors: self.selectors.clone(),
        }
    }

    pub fn graph(&self) -> &IdentityGraph {
        &self.graph
    }

    /// A person's profile, following merges (`id` may name a person merged away since);
    /// decoded if it is cold.
    pub fn get(&self, id: PersonId) -> Option<(PersonId, Cow<'_, Profile>)> {
        let p = self.graph.resolve(id)?;
        Some((p, self.people.get(&p)?))
    }

    /// Every profile (cold ones decoded one at a time as the walk reaches them).
    pub fn people(&self) -> impl Iterator<Item = (PersonId, Cow<'_, Profile>)> {
        self.people.iter().map(|(p, s)| (p, s.load()))
    }

    /// Every person with a profile.
    pub fn persons(&self) -> impl Iterator<Item = PersonId> + '_ {
        self.people.ids()
    }

    /// Every profile as stored, in the order they sit in memory rather than the table's
    /// (hash) order (see [`People::in_memory_order`]).
    pub fn in_memory_order(&self) -> Vec<(PersonId, Stored<'_>)> {
        self.people.in_memory_order()
    }

    /// Puts the profiles under a memory budget (`None`: all decoded).
    pub fn set_budget(&mut self, budget: Option<std::sync::Arc<Budget>>) {
        self.people.set_budget(budget);
    }

    /// Moves decoded profiles to cold while the memory budget is over.
    pub fn trim(&mut self) {
        self.people.enforce();
    }

    /// Decoded profiles held.
    pub fn hot(&self) -> usize {
        self.people.hot()
    }

    pub fn len(&self) -> usize {
        self.people.len()
    }

    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&str, &Group)> {
        self.groups.iter().map(|(k, g)| (k.as_str(), g))
    }

    /// Applies one event: identity first, then the person's traits, computed attributes
    /// and groups.
    pub fn apply(&mut self, e: &Event) -> Applied {
        self.apply_parsed(e, &Parsed::of(e))
    }

    /// As [`Profiles::apply`], with the event's traits and properties parsed already (the
    /// service parses on other threads).
    pub fn apply_parsed(&mut self, e: &Event, parsed: &Parsed) -> Applied {
        let ids = identifiers_in(e, parsed, self.graph.rules());
        let outcome = self.graph.observe(Observation {
            identifiers: ids,
            at: e.timestamp,
            cause: cause_of(e),
        });
        let Some(person) = outcome.person else {
            self.apply_group_traits(e, parsed);
            return Applied::default();
        };
        for gone in &outcome.absorbed {
            if let Some(old) = self.people.remove(gone) {
                for g in &old.groups {
                    if let Some(group) = self.groups.get_mut(g) {
                        group.members.remove(gone);
                        group.members.insert(person);
                    }
                }
                self.people.entry(person).merge(old);
            }
        }
        // A person without a profile yet (new, or split off by an un-merge) is evaluated
        // whole.
        let fresh = !self.people.contains(&person);
        let mut touched = self.record(person, e, parsed);
        touched.everything = fresh || outcome.created || !outcome.absorbed.is_empty();
        touched.identifiers = outcome.new_identifier;
        Applied {
            person: Some(person),
            absorbed: outcome.absorbed,
            touched,
        }
    }

    fn apply_group_traits(&mut self, e: &Event, parsed: &Parsed) {
        if e.kind != EventType::Group {
            return;
        }
        let Some(gid) = e.group_id.as_deref().filter(|g| !g.trim().is_empty()) else {
            return;
        };
        let stamp = Stamp::new(e.timestamp, &e.message_id);
        self.groups
            .entry(gid.to_owned())
            .or_default()
            .traits
            .set_all(&parsed.traits, &stamp);
    }

    /// Everything an event does to its person's profile (not to the identity graph), and
    /// what of it changed.
    fn record(&mut self, person: PersonId, e: &Event, parsed: &Parsed) -> Touched {
        let stamp = Stamp::new(e.timestamp, &e.message_id);
        let props = &parsed.props;
        let name = event_name(e);
        let order = matches!(name, ORDER_COMPLETED | ORDER_REFUNDED);
        let amount = order.then(|| revenue(props)).flatten();
        let mut touched = Touched {
            orders: order,
            ..Touched::default()
        };
        // Copied first only if a snapshot still holds it.
        let profile = self.people.entry(person);
        profile.computed.record(name, e.timestamp, amount);
        let at = e.timestamp.timestamp();
        for (i, s) in self.selectors.iter().enumerate() {
            if let Some(hit) = s.as_ref().and_then(|s| s.select(name, props, at)) {
                profile.hits.add(i as u32, hit);
                touched.hits.push(i as u32);
            }
        }
        match e.kind {
            EventType::Identify => {
                touched.traits = !parsed.traits.is_empty();
                profile.traits.set_all(&parsed.traits, &stamp);
            }
            EventType::Track | EventType::Page | EventType::Screen => {
                touched.traits = ["$set", "$set_once", "$unset"]
                    .iter()
                    .any(|k| props.contains_key(*k));
                profile.traits.apply_operators(props, &stamp);
            }
            EventType::Group => {
                if let Some(gid) = e.group_id.as_deref().filter(|g| !g.trim().is_empty()) {
                    profile.groups.insert(gid.to_owned());
                    self.groups
                        .entry(gid.to_owned())
                        .or_default()
                        .members
                        .insert(person);
                }
            }
            EventType::Alias => {}
        }
        self.apply_group_traits(e, parsed);
        touched
    }

    /// The person an event belongs to in the current graph, without changing it.
    fn attribute(&self, e: &Event) -> Option<PersonId> {
        let mut ids = identifiers(e, self.graph.rules());
        let rules = self.graph.rules();
        let rank = |i: &Identifier| {
            rules
                .priority
                .iter()
                .position(|k| k == i.kind())
                .unwrap_or(rules.priority.len())
        };
        ids.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
        ids.iter().find_map(|i| self.graph.person_of(i))
    }

    /// Undoes merge `merge_id` (see [`IdentityGraph::unmerge`]) and recomputes, from
    /// `events` (every event of the tenant, in log order), the profiles of the persons whose
    /// identifiers changed. Returns those persons.
    pub fn unmerge(
        &mut self,
        merge_id: u64,
        events: &[Event],
    ) -> Result<Vec<PersonId>, UnmergeError> {
        let before: HashMap<PersonId, crate::identity::IdSet> = self
            .graph
            .persons()
            .map(|(p, ids)| (p, ids.clone()))
            .collect();
        let rules = self.graph.rules().clone();
        let observations: Vec<Observation> = events
            .iter()
            .map(|e| Observation {
                identifiers: identifiers(e, &rules),
                at: e.timestamp,
                cause: cause_of(e),
            })
            .collect();
        self.graph.unmerge(merge_id, observations)?;
        // Every person whose identifiers changed starts over; persons that no longer exist
        // go.
        let rebuild: BTreeSet<PersonId> = self
            .graph
            .persons()
            .filter(|(p, ids)| before.get(p) != Some(*ids))
            .map(|(p, _)| p)
            .collect();
        let stale = before
            .keys()
            .copied()
            .filter(|p| rebuild.contains(p) || self.graph.identifiers(*p).is_none());
        for p in stale.collect::<Vec<_>>() {
            if let Some(old) = self.people.remove(&p) {
                for g in &old.groups {
                    if let Some(group) = self.groups.get_mut(g) {
                        group.members.remove(&p);
                    }
                }
            }
        }
        for e in events {
            if let Some(p) = self.attribute(e).filter(|p| rebuild.contains(p)) {
                self.record(p, e, &Parsed::of(e));
            }
        }
        Ok(rebuild.into_iter().collect())
    }

    /// Replaces a person's predictions; `false` if the person is unknown or they are the
    /// same.
    pub fn set_predictions(
        &mut self,
        person: PersonId,
        values: std::collections::BTreeMap<String, f64>,
    ) -> bool {
        let values: crate::sorted_map::SortedMap<String, f64> = values.into_iter().collect();
        match self.people.get(&person) {
            Some(p) if p.predictions != values => {
                if let Some(p) = self.people.get_mut(person) {
                    p.predictions = values;
                }
                true
            }
            _ => false,
        }
    }

    /// Forgets what is personal about `person` after an erasure, without the events: its
    /// traits, and the identifiers other than user and anonymous ids (which the log keeps
    /// readable). Its behaviour and computed attributes stay.
    pub fn erase_personal(&mut self, person: PersonId) {
        use crate::identity::{ANONYMOUS_ID, USER_ID};
        self.graph
            .erase(person, |i| i.kind() == USER_ID || i.kind() == ANONYMOUS_ID);
        if let Some(p) = self.people.get_mut(person) {
            p.traits = Traits::default();
        }
    }

    /// Estimated heap bytes of the profiles, the identity graph and the groups (see
    /// [`crate::heap`]).
    pub fn heap_bytes(&self) -> usize {
        use crate::heap;
        let groups = heap::table::<String, Group>(self.groups.capacity())
            + self
                .groups
                .iter()
                .map(|(id, g)| {
                    id.capacity()
                        + g.traits.heap_bytes()
                        + heap::btree::<PersonId, ()>(g.members.len())
                })
                .sum::<usize>();
        self.people.heap_bytes() + self.graph.heap_bytes() + groups
    }

    /// One person's RFM scores, as [`Profiles::rfm`] gives them, without sorting and
    /// without reading every profile: from the customers' RFM keys the profile table keeps
    /// once asked (the API asks for one person at a time, under the tenant's lock).
    pub fn rfm_of(&self, person: PersonId) -> Option<crate::computed::Rfm> {
        let mine = self.people.get(&person)?.computed.rfm_key()?;
        let (n, below) = self.people.with_rfm_keys(|keys| {
            let mut below = [0usize; 3];
            for k in keys.values() {
                for ((b, x), m) in below.iter_mut().zip(k).zip(&mine) {
                    if x.total_cmp(m).is_lt() {
                        *b += 1;
                    }
                }
            }
            (keys.len(), below)
        });
        let score = |b: usize| 1 + ((b * 5) / n.max(1)).min(4) as u8;
        Some(crate::computed::Rfm {
            recency: score(below[0]),
            frequency: score(below[1]),
            monetary: score(below[2]),
        })
    }

    /// RFM scores of every person with an order.
    pub fn rfm(&self) -> HashMap<PersonId, crate::computed::Rfm> {
        let customers: Vec<(PersonId, DateTime<Utc>, u64, f64)> = self
            .people
            .iter()
            .filter_map(|(p, prof)| {
                let prof = prof.load();
                let c = &prof.computed;
                Some((p, c.last_order_at?, c.orders, c.revenue - c.refunds))
            })
            .collect();
        let input: Vec<_> = customers.iter().map(|c| (c.1, c.2, c.3)).collect();
        customers
            .iter()
            .map(|c| c.0)
            .zip(crate::computed::rfm_scores(&input))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn event(mut v: Value, n: i64) -> Event {
        let at = DateTime::from_timestamp(1_700_000_000 + n * 60, 0).expect("time");
        let m = v.as_object_mut().expect("object");
        m.insert("messageId".into(), json!(format!("m{n}")));
        m.insert("timestamp".into(), json!(at.to_rfc3339()));
        m.insert("receivedAt".into(), json!(at.to_rfc3339()));
        serde_json::from_str(&v.to_string()).expect("an event")
    }

    /// Profiles recomputed from scratch: every event recorded on the person the final graph
    /// attributes it to.
    fn recomputed(p: &Profiles, events: &[Event]) -> Vec<(PersonId, Profile)> {
        let mut fresh = Profiles {
            graph: p.graph.clone(),
            people: People::default(),
            groups: HashMap::new(),
            selectors: p.selectors.clone(),
        };
        for e in events {
            if let Some(person) = fresh.attribute(e) {
                fresh.record(person, e, &Parsed::of(e));
            }
        }
        sorted(&fresh)
    }

    fn sorted(p: &Profiles) -> Vec<(PersonId, Profile)> {
        let mut v: Vec<(PersonId, Profile)> =
            p.people().map(|(i, x)| (i, x.into_owned())).collect();
        v.sort_by_key(|x| x.0);
        for (_, prof) in &mut v {
            // Float sums in another order differ in the last bits.
            prof.computed.revenue = (prof.computed.revenue * 1e6).round() / 1e6;
        }
        v
    }

    #[test]
    fn a_customer_journey() {
        let mut p = Profiles::new(MergeRules::default());
        let events = [
            event(
                json!({"type": "page", "anonymousId": "a1", "name": "Home"}),
                0,
            ),
            event(
                json!({"type": "track", "anonymousId": "a1", "event": "Product Added",
                "properties": {"$set_once": {"first_source": "ads"}}}),
                1,
            ),
            event(
                json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
                "traits": {"email": "Ann@Example.com", "plan": "free"}}),
                2,
            ),
            event(
                json!({"type": "track", "userId": "u1", "event": "Order Completed",
                "properties": {"revenue": 40, "$set": {"plan": "pro"}}}),
                3,
            ),
            event(
                json!({"type": "track", "userId": "u1", "event": "Order Completed",
                "properties": {"total": "20.5"}}),
                4,
            ),
            event(
                json!({"type": "group", "userId": "u1", "groupId": "acme",
                "traits": {"name": "Acme", "employees": 50}}),
                5,
            ),
            // From another device, known by email only: the same person.
            event(
                json!({"type": "track", "anonymousId": "a2", "event": "Viewed",
                "context": {"traits": {"email": "ann@example.com"}}}),
                6,
            ),
        ];
        for e in &events {
            p.apply(e);
        }
        assert_eq!(p.len(), 1);
        let (id, prof) = p.people().next().expect("one person");
        assert_eq!(
            Value::Object(prof.traits.to_json()),
            json!({"email": "Ann@Example.com", "plan": "pro", "first_source": "ads"})
        );
        let c = &prof.computed;
        assert_eq!((c.events, c.orders), (7, 2));
        assert_eq!(c.revenue, 60.5);
        assert_eq!(c.average_order_value(), Some(30.25));
        assert_eq!(c.event_counts.get("page"), Some(&1));
        assert_eq!(prof.groups, BTreeSet::from(["acme".to_owned()]));
        let acme = p.group("acme").expect("group");
        assert_eq!(acme.members, BTreeSet::from([id]));
        assert_eq!(acme.traits.get("employees"), Some(&json!(50)));
        assert_eq!(
            p.graph().identifiers(id).map(|s| s.len()),
            Some(4),
            "u1, a1, a2 and the email"
        );
        assert_eq!(sorted(&p), recomputed(&p, &events));
    }

    #[test]
    fn one_persons_rfm_equals_the_tenant_wide_scores() {
        let mut p = Profiles::new(MergeRules::default());
        let mut n = 0;
        for (user, orders, revenue) in [
            ("a", 1, 10.0),
            ("b", 3, 10.0),
            ("c", 2, 500.0),
            ("d", 1, 40.0),
            ("e", 5, 5.0),
            ("f", 0, 0.0),
        ] {
            for k in 0..orders.max(1) {
                n += 1;
                let name = if orders == 0 {
                    "Page Viewed"
                } else {
                    "Order Completed"
                };
                p.apply(&event(
                    json!({"type": "track", "userId": user, "event": name,
                        "properties": {"revenue": revenue}}),
                    n * 3600 + k,
                ));
            }
        }
        let all = p.rfm();
        assert_eq!(all.len(), 5, "persons without an order have no score");
        for (id, _) in p.people() {
            assert_eq!(p.rfm_of(id), all.get(&id).copied(), "person {id}");
        }
    }

    #[test]
    fn unmerge_recomputes_both_sides() {
        let mut p = Profiles::new(MergeRules::default());
        let events = [
            event(
                json!({"type": "track", "anonymousId": "shared-kiosk", "event": "Order Completed",
                "properties": {"revenue": 5}}),
                0,
            ),
            event(
                json!({"type": "identify", "userId": "u1", "traits": {"name": "Ann"}}),
                1,
            ),
            event(
                json!({"type": "track", "userId": "u1", "event": "Order Completed",
                "properties": {"revenue": 100}}),
                2,
            ),
            // The wrong link.
            event(
                json!({"type": "alias", "userId": "u1", "previousId": "shared-kiosk"}),
                3,
            ),
            event(
                json!({"type": "track", "anonymousId": "shared-kiosk", "event": "Viewed"}),
                4,
            ),
        ];
        for e in &events {
            p.apply(e);
        }
        assert_eq!(p.len(), 1);
        let merged = p.people().next().expect("person").1.computed.revenue;
        assert_eq!(merged, 105.0);
        let merge = p.graph().log().iter().find_map(|r| match &**r {
            crate::identity::MergeRecord::Merged { id, .. } => Some(*id),
            crate::identity::MergeRecord::Refused { .. } => None,
        });
        let separated = p
            .unmerge(merge.expect("a merge"), &events)
            .expect("unmerge");
        assert_eq!(separated.len(), 2);
        assert_eq!(p.len(), 2);
        let revenue: BTreeSet<u64> = p.people().map(|(_, x)| x.computed.revenue as u64).collect();
        assert_eq!(revenue, BTreeSet::from([5, 100]));
        assert_eq!(sorted(&p), recomputed(&p, &events));
        // Events after the un-merge that link the two again change nothing.
        let later = event(
            json!({"type": "alias", "userId": "u1", "previousId": "shared-kiosk"}),
            5,
        );
        p.apply(&later);
        assert_eq!(p.len(), 2);
    }

    /// The ids of the merges made so far (what an un-merge names).
    fn merges(p: &Profiles) -> Vec<u64> {
        p.graph()
            .log()
            .iter()
            .filter_map(|r| match &**r {
                crate::identity::MergeRecord::Merged { id, .. } => Some(*id),
                crate::identity::MergeRecord::Refused { .. } => None,
            })
            .collect()
    }

    /// Random events over a few users, devices and emails.
    fn events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec((0u8..6, 0u8..4, 0u8..4, 0u8..3, 0u32..50), 1..50).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(n, (kind, u, a, e, r))| {
                    let v = match kind {
                        0 => json!({"type": "identify", "userId": format!("u{u}"), "anonymousId": format!("a{a}"),
                            "traits": {"email": format!("e{e}@x"), "t": r}}),
                        1 => json!({"type": "track", "anonymousId": format!("a{a}"), "event": "Order Completed",
                            "properties": {"revenue": r}}),
                        2 => json!({"type": "track", "userId": format!("u{u}"), "event": "Viewed",
                            "properties": {"$set": {"t": r}, "$unset": ["x"]}}),
                        3 => json!({"type": "alias", "userId": format!("u{u}"), "previousId": format!("a{a}")}),
                        4 => json!({"type": "group", "anonymousId": format!("a{a}"), "groupId": format!("g{e}"),
                            "traits": {"size": r}}),
                        _ => json!({"type": "page", "anonymousId": format!("a{a}"),
                            "context": {"traits": {"email": format!("e{e}@x")}}}),
                    };
                    // Event times out of log order, to exercise last-write-wins.
                    event(v, (n as i64 * 7919) % 101)
                })
                .collect()
        })
    }

    proptest! {
        /// One person's RFM scores, asked between events (the keys kept since the first
        /// question, read again for the persons changed since), with merges, an un-merge
        /// and profiles gone cold under a budget, are always the tenant-wide scores.
        #[test]
        fn rfm_of_follows_every_change(
            events in events(),
            asks in prop::collection::vec(any::<bool>(), 50),
            pick in any::<prop::sample::Index>(),
            limit in prop_oneof![Just(None), Just(Some(0usize)), Just(Some(2000))],
        ) {
            let mut p = Profiles::new(MergeRules::default());
            if let Some(limit) = limit {
                let dir = std::env::temp_dir().join("livora-profile-tests");
                p.set_budget(Some(crate::people::Budget::new(limit, dir).expect("budget")));
            }
            let check = |p: &Profiles| -> Result<(), TestCaseError> {
                let all = p.rfm();
                for id in p.persons() {
                    prop_assert_eq!(p.rfm_of(id), all.get(&id).copied(), "person {}", id);
                }
                Ok(())
            };
            for (e, ask) in events.iter().zip(asks.iter().cycle()) {
                p.apply(e);
                if *ask {
                    check(&p)?;
                }
            }
            check(&p)?;
            let merged = merges(&p);
            if !merged.is_empty() {
                p.unmerge(merged[pick.index(merged.len())], &events).expect("unmerge");
                check(&p)?;
            }
        }

        /// Incremental profiles, with merges as they come and an un-merge, always equal a
        /// recomputation from the final identity graph.
        #[test]
        fn incremental_equals_recomputation(events in events(), pick in any::<prop::sample::Index>()) {
            let mut p = Profiles::new(MergeRules::default());
            for e in &events {
                p.apply(e);
            }
            prop_assert_eq!(sorted(&p), recomputed(&p, &events));
            let merged = merges(&p);
            if !merged.is_empty() {
                p.unmerge(merged[pick.index(merged.len())], &events).expect("unmerge");
                prop_assert_eq!(sorted(&p), recomputed(&p, &events));
                // Group members are the persons whose profile names the group.
                for (gid, g) in p.groups() {
                    let named: BTreeSet<PersonId> =
                        p.people().filter(|(_, x)| x.groups.contains(gid)).map(|(i, _)| i).collect();
                    prop_assert_eq!(&g.members, &named);
                }
            }
        }
    }
}
