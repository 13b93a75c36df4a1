//! Profile traits with last-write-wins by event time.
//!
//! Each trait is a slot written by `$set` (an `identify`'s traits, a `$set` object in a
//! track's properties), `$set_once` (kept only while nothing else set the trait) or `$unset`
//! (a tombstone). The newest write by event time wins, ties broken by message id, so the
//! result does not depend on the order in which events arrive: a late event cannot undo a
//! newer one, and replaying the log in any order gives the same traits.
//! `$set_once` keeps the *earliest* `$set_once` value, and yields to any `$set`.

use crate::sorted_map::SortedMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// When a write happened, for ordering: event time, then a hash of the message id (so
/// equal times still order the same way on every replay).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// As microseconds when stored (snapshots hold millions of them).
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub at: DateTime<Utc>,
    pub tie: u64,
}

impl Stamp {
    pub fn new(at: DateTime<Utc>, message_id: &str) -> Self {
        // FNV-1a: stable across runs and Rust versions.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in message_id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Self { at, tie: h }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// `None`: unset (kept apart from a value set to `null` in every format).
    #[serde(with = "opt_value")]
    pub value: Option<Value>,
    pub stamp: Stamp,
    /// Written by `$set_once` (and not by `$set` since).
    pub once: bool,
}

/// `Option<Value>` as an enum, so that `Some(null)` does not come back as `None` from
/// formats where both are nil (MessagePack snapshots).
mod opt_value {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    #[derive(Serialize, Deserialize)]
    enum Stored<T> {
        Unset,
        Set(T),
    }

    pub fn serialize<S: Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => Stored::<&Value>::Unset.serialize(s),
            Some(x) => Stored::Set(x).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Ok(match Stored::<Value>::deserialize(d)? {
            Stored::Unset => None,
            Stored::Set(v) => Some(v),
        })
    }
}

/// The traits of a person (or of a group).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traits {
    slots: SortedMap<String, Slot>,
}

impl Traits {
    pub fn set(&mut self, key: &str, value: Value, stamp: &Stamp) {
        self.write(key, Some(value), stamp);
    }

    pub fn unset(&mut self, key: &str, stamp: &Stamp) {
        self.write(key, None, stamp);
    }

    /// A `$set` (a value) or `$unset` (none): it wins over a `$set_once` and over older
    /// writes.
    fn write(&mut self, key: &str, value: Option<Value>, stamp: &Stamp) {
        let slot = Slot {
            value,
            stamp: stamp.clone(),
            once: false,
        };
        match self.slots.get_mut(key) {
            Some(old) if !old.once && old.stamp > *stamp => {}
            Some(old) => *old = slot,
            None => {
                self.slots.insert(key.to_owned(), slot);
            }
        }
    }

    pub fn set_once(&mut self, key: &str, value: Value, stamp: &Stamp) {
        match self.slots.get_mut(key) {
            // A set_once yields to a $set or $unset; among set_once, the earliest wins.
            Some(slot) if !slot.once || slot.stamp < *stamp => {}
            Some(slot) => {
                slot.value = Some(value);
                slot.stamp = stamp.clone();
            }
            None => {
                self.slots.insert(
                    key.to_owned(),
                    Slot {
                        value: Some(value),
                        stamp: stamp.clone(),
                        once: true,
                    },
                );
            }
        }
    }

    /// Applies every `$set` of an object.
    pub fn set_all(&mut self, values: &Map<String, Value>, stamp: &Stamp) {
        for (k, v) in values {
            self.set(k, v.clone(), stamp);
        }
    }

    /// Applies the `$set`, `$set_once` and `$unset` operators of PostHog-style properties.
    pub fn apply_operators(&mut self, properties: &Map<String, Value>, stamp: &Stamp) {
        if let Some(Value::Object(set)) = properties.get("$set") {
            self.set_all(set, stamp);
        }
        if let Some(Value::Object(once)) = properties.get("$set_once") {
            for (k, v) in once {
                self.set_once(k, v.clone(), stamp);
            }
        }
        match properties.get("$unset") {
            Some(Value::Array(keys)) => {
                for k in keys.iter().filter_map(Value::as_str) {
                    self.unset(k, stamp);
                }
            }
            Some(Value::Object(keys)) => {
                for k in keys.keys() {
                    self.unset(k, stamp);
                }
            }
            _ => {}
        }
    }

    /// The current value of a trait.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.slots.get(key).and_then(|s| s.value.as_ref())
    }

    /// The traits that have a value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.slots
            .iter()
            .filter_map(|(k, s)| s.value.as_ref().map(|v| (k.as_str(), v)))
    }

    /// The traits as a JSON object.
    pub fn to_json(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }

    /// Merges another person's traits into these, slot by slot, as if every write had been
    /// applied here: the result equals applying both histories in any order.
    pub fn merge(&mut self, other: &Traits) {
        for (key, slot) in &other.slots {
            match (&slot.value, slot.once) {
                (Some(v), true) => self.set_once(key, v.clone(), &slot.stamp),
                (Some(v), false) => self.set(key, v.clone(), &slot.stamp),
                (None, _) => self.unset(key, &slot.stamp),
            }
        }
    }

    /// Estimated heap bytes (see [`crate::heap`]).
    pub fn heap_bytes(&self) -> usize {
        crate::heap::vec::<(String, Slot)>(self.slots.len())
            + self
                .slots
                .iter()
                .map(|(k, s)| k.capacity() + s.value.as_ref().map_or(0, crate::heap::json))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn stamp(t: i64, m: &str) -> Stamp {
        Stamp::new(DateTime::from_timestamp(t, 0).expect("time"), m)
    }

    #[test]
    fn newest_write_wins_whatever_the_arrival_order() {
        let mut t = Traits::default();
        t.set("plan", json!("pro"), &stamp(20, "b"));
        t.set("plan", json!("free"), &stamp(10, "a"));
        assert_eq!(t.get("plan"), Some(&json!("pro")));
        t.unset("plan", &stamp(15, "c"));
        assert_eq!(t.get("plan"), Some(&json!("pro")), "an older unset loses");
        t.unset("plan", &stamp(25, "d"));
        assert_eq!(t.get("plan"), None);
        t.set_once("plan", json!("x"), &stamp(30, "e"));
        assert_eq!(t.get("plan"), None, "set_once yields to an unset");
    }

    #[test]
    fn set_once_keeps_the_first_value_until_a_set() {
        let mut t = Traits::default();
        t.set_once("source", json!("ads"), &stamp(20, "b"));
        t.set_once("source", json!("seo"), &stamp(30, "c"));
        t.set_once("source", json!("mail"), &stamp(10, "a"));
        assert_eq!(
            t.get("source"),
            Some(&json!("mail")),
            "the earliest set_once"
        );
        t.set("source", json!("direct"), &stamp(5, "z"));
        assert_eq!(t.get("source"), Some(&json!("direct")), "any $set wins");
    }

    #[test]
    fn operators_in_properties() {
        let mut t = Traits::default();
        let props = json!({"$set": {"a": 1, "b": 2}, "$set_once": {"c": 3}, "$unset": ["b"]});
        t.apply_operators(props.as_object().expect("object"), &stamp(1, "m"));
        assert_eq!(Value::Object(t.to_json()), json!({"a": 1, "c": 3}));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8, u8),
        Once(u8, u8),
        Unset(u8),
    }

    fn op() -> impl Strategy<Value = (Op, i64)> {
        let key = 0u8..4;
        (
            prop_oneof![
                (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
                (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Once(k, v)),
                key.prop_map(Op::Unset),
            ],
            0i64..20,
        )
    }

    fn apply(t: &mut Traits, ops: &[(Op, i64)], ids: &[usize]) {
        for &i in ids {
            let (op, at) = &ops[i];
            let s = stamp(*at, &format!("m{i:03}"));
            match op {
                Op::Set(k, v) => t.set(&k.to_string(), json!(v), &s),
                Op::Once(k, v) => t.set_once(&k.to_string(), json!(v), &s),
                Op::Unset(k) => t.unset(&k.to_string(), &s),
            }
        }
    }

    proptest! {
        /// Any arrival order gives the same traits, and merging two halves equals applying
        /// everything to one profile.
        #[test]
        fn order_does_not_matter(
            ops in prop::collection::vec(op(), 0..40),
            seed in any::<u64>(),
            cut in 0usize..40,
        ) {
            let n = ops.len();
            let forward: Vec<usize> = (0..n).collect();
            let mut shuffled = forward.clone();
            // A deterministic shuffle from the seed.
            let mut x = seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut a = Traits::default();
            apply(&mut a, &ops, &forward);
            let mut b = Traits::default();
            apply(&mut b, &ops, &shuffled);
            prop_assert_eq!(a.to_json(), b.to_json());
            let cut = cut.min(n);
            let mut left = Traits::default();
            apply(&mut left, &ops, &shuffled[..cut]);
            let mut right = Traits::default();
            apply(&mut right, &ops, &shuffled[cut..]);
            left.merge(&right);
            prop_assert_eq!(a.to_json(), left.to_json());
        }
    }
}
