//! What the runtime needs to know of a person: who they are (their identifiers, so that a
//! journey started by an anonymous visitor follows them once they sign in), what their
//! profile says (traits, computed attributes, segments, tags), and how to reach them.
//!
//! The profiles service provides it in a node ([`People`]); tests use [`Directory`].

use std::collections::{BTreeSet, HashMap};

use livora_model::segment::Condition;
use livora_model::{Event, PersonKey, TenantId};
use livora_profiles::compare;
use serde_json::{Map, Value};

/// A person as the runtime sees them when it decides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Person {
    /// Every identifier of the person as `u:<userId>` / `a:<anonymousId>`; the first one
    /// names the person in journeys and messages (a user id when there is one).
    pub keys: Vec<String>,
    pub traits: Map<String, Value>,
    /// Computed attributes by name (`orders`, `revenue`, `last_seen` …).
    pub computed: Map<String, Value>,
    pub segments: BTreeSet<String>,
    pub tags: BTreeSet<String>,
    /// What the models recommend to the person, asked only when a message is rendered.
    pub suggestions: Suggestions,
}

/// The models' recommendations for one person, computed when asked (a message being
/// rendered), not for every event that looks the person up.
pub trait Suggest: Send + Sync {
    /// The `limit` items most worth showing the person, best first, each as
    /// `{"item", "score", "reason"}`.
    fn recommendations(&self, limit: usize) -> Vec<Value>;
}

/// A person's [`Suggest`], when the node has trained models.
#[derive(Clone, Default)]
pub struct Suggestions(Option<std::sync::Arc<dyn Suggest>>);

impl Suggestions {
    pub fn new(s: std::sync::Arc<dyn Suggest>) -> Self {
        Self(Some(s))
    }

    /// The recommendations (none without models).
    pub fn recommendations(&self, limit: usize) -> Vec<Value> {
        self.0
            .as_ref()
            .map(|s| s.recommendations(limit))
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Suggestions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Suggestions(models)"
        } else {
            "Suggestions(none)"
        })
    }
}

/// Persons are compared by what they are; where the suggestions come from does not count.
impl PartialEq for Suggestions {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Person {
    /// The key that names the person (empty for a person with no identifier).
    pub fn key(&self) -> &str {
        self.keys.first().map_or("", String::as_str)
    }

    /// The person's IANA time zone (the `timezone` trait), if it is a valid one.
    pub fn time_zone(&self) -> Option<chrono_tz::Tz> {
        self.traits
            .get("timezone")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    }

    /// Whether a branch condition holds (traits, computed attributes, segments, tags, and
    /// `and` / `or` / `not` of them). Behaviour is not known here: a branch on it reads
    /// the segment that keeps it ([`livora_model::workflow::branch_segment`]).
    pub fn satisfies(&self, c: &Condition, now: i64) -> bool {
        match c {
            Condition::And(list) => list.iter().all(|c| self.satisfies(c, now)),
            Condition::Or(list) => list.iter().any(|c| self.satisfies(c, now)),
            Condition::Not(c) => !self.satisfies(c, now),
            Condition::Trait(t) => compare::matches(self.traits.get(&t.name), t.op, &t.value, now),
            Condition::Computed(t) => {
                compare::matches(self.computed.get(&t.name), t.op, &t.value, now)
            }
            Condition::InSegment(s) => self.segments.contains(s),
            Condition::Tag(t) => {
                self.tags.contains(t)
                    || self
                        .traits
                        .get(crate::runtime::TAGS_TRAIT)
                        .and_then(Value::as_array)
                        .is_some_and(|l| l.iter().any(|x| x.as_str() == Some(t)))
            }
            Condition::Performed(_) | Condition::LastPerformed(_) | Condition::NotFollowedBy(_) => {
                false
            }
        }
    }
}

/// Where the runtime looks persons up.
pub trait People: Send + Sync {
    /// The person an event is about, as the profiles see them once that event is applied.
    fn of_event(&self, tenant: TenantId, event: &Event) -> Option<Person>;
    /// A person by one of their keys (`u:…` / `a:…`), as they are now.
    fn by_key(&self, tenant: TenantId, key: &str) -> Option<Person>;
    /// The members of a segment (everyone with a profile when `None`): a scheduled
    /// workflow's audience.
    fn audience(&self, tenant: TenantId, segment: Option<&str>) -> Vec<Person>;
    /// Whether the persons reflect the event log up to and including `offset` (the runtime
    /// waits for that before it reads the event at `offset`).
    fn ready(&self, _offset: u64) -> bool {
        true
    }
}

/// The keys of an event's sender: `u:<userId>`, `a:<anonymousId>`.
pub fn event_keys(e: &Event) -> Vec<String> {
    PersonKey::all_of(e).into_iter().map(String::from).collect()
}

/// Persons held in memory, joined by shared keys: for tests, backtests and benchmarks.
#[derive(Debug, Default)]
pub struct Directory {
    people: Vec<Person>,
    by_key: HashMap<(TenantId, String), usize>,
}

impl Directory {
    /// Adds or replaces the person holding any of `person.keys` (the keys are joined).
    pub fn put(&mut self, tenant: TenantId, person: Person) {
        let found = person
            .keys
            .iter()
            .find_map(|k| self.by_key.get(&(tenant, k.clone())).copied());
        let i = match found {
            Some(i) => {
                let mut keys = self.people[i].keys.clone();
                for k in &person.keys {
                    if !keys.contains(k) {
                        keys.push(k.clone());
                    }
                }
                keys.sort_by_key(|k| !PersonKey::is_user_key(k));
                self.people[i] = Person { keys, ..person };
                i
            }
            None => {
                self.people.push(person);
                self.people.len() - 1
            }
        };
        for k in self.people[i].keys.clone() {
            self.by_key.insert((tenant, k), i);
        }
    }

    /// Mutable access to the person with this key.
    pub fn get_mut(&mut self, tenant: TenantId, key: &str) -> Option<&mut Person> {
        let i = *self.by_key.get(&(tenant, key.to_owned()))?;
        self.people.get_mut(i)
    }
}

impl People for Directory {
    fn of_event(&self, tenant: TenantId, event: &Event) -> Option<Person> {
        event_keys(event)
            .iter()
            .find_map(|k| self.by_key(tenant, k))
    }

    fn by_key(&self, tenant: TenantId, key: &str) -> Option<Person> {
        let i = *self.by_key.get(&(tenant, key.to_owned()))?;
        self.people.get(i).cloned()
    }

    fn audience(&self, tenant: TenantId, segment: Option<&str>) -> Vec<Person> {
        let mut seen = std::collections::BTreeSet::new();
        self.by_key
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .filter(|(_, i)| seen.insert(**i))
            .filter_map(|(_, i)| self.people.get(*i))
            .filter(|p| segment.is_none_or(|s| p.segments.contains(s)))
            .cloned()
            .collect()
    }
}
