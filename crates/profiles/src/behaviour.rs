//! What behavioural conditions need to remember of a person: for each *selector* (an event
//! name with property filters, and for keyed conditions the property whose value links two
//! events), the times (and keys) of the person's matching events.
//!
//! Hits are kept sorted, so they merge when persons merge, and a person's hits are the same
//! whatever order the events arrived in.

use crate::sorted_map::SortedMap;

use livora_model::segment::PropertyFilter;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::compare;

/// An event name, its property filters, and the property that keys it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selector {
    pub event: String,
    pub filters: Vec<PropertyFilter>,
    pub key: Option<String>,
}

impl Selector {
    /// Whether an event named `name` with `props` matches; with a key, the key's value.
    pub fn select(&self, name: &str, props: &Map<String, Value>, at: i64) -> Option<Hit> {
        if name != self.event
            || !self
                .filters
                .iter()
                .all(|f| compare::matches(props.get(&f.property), f.op, &f.value, at))
        {
            return None;
        }
        let key = match &self.key {
            None => None,
            Some(k) => Some(match props.get(k)? {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            }),
        };
        Some(Hit { at, key })
    }
}

/// One matching event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hit {
    /// Event time, Unix seconds.
    pub at: i64,
    pub key: Option<String>,
}

/// A person's hits, per selector index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hits(SortedMap<u32, Vec<Hit>>);

impl Hits {
    pub fn add(&mut self, selector: u32, hit: Hit) {
        let list = self.0.entry(selector).or_default();
        let i = list.partition_point(|h| *h <= hit);
        list.insert(i, hit);
    }

    pub fn of(&self, selector: u32) -> &[Hit] {
        self.0.get(&selector).map_or(&[], Vec::as_slice)
    }

    pub fn merge(&mut self, other: &Hits) {
        for (s, list) in &other.0 {
            for h in list {
                self.add(*s, h.clone());
            }
        }
    }

    /// Forgets the hits of selectors no definition uses any more; `true` if any went.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) -> bool {
        let before = self.0.len();
        self.0.retain(|s, _| keep(*s));
        self.0.len() != before
    }

    /// Estimated heap bytes (see [`crate::heap`]).
    pub fn heap_bytes(&self) -> usize {
        crate::heap::vec::<(u32, Vec<Hit>)>(self.0.len())
            + self
                .0
                .values()
                .map(|l| {
                    l.capacity() * size_of::<Hit>()
                        + l.iter()
                            .filter_map(|h| h.key.as_ref())
                            .map(String::capacity)
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}
