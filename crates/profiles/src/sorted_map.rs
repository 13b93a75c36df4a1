//! [`SortedMap`]: the small maps a profile holds (traits, event counts, hits, predictions)
//! as one sorted vector each (`litemap`) instead of a `BTreeMap`, whose first node has room
//! for eleven entries however few it holds (a decoded profile took 3.2 KB with them, 2.0
//! without, measured by `tests/heap.rs`).
//!
//! A newtype only for serialization: `LiteMap` writes an empty map, or one whose keys are
//! not strings or numbers, as a sequence in human-readable formats; the API's JSON and the
//! snapshots must see the map they always saw.

use std::fmt;
use std::ops::{Deref, DerefMut};

use litemap::LiteMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map kept as a vector sorted by key; reads and writes as `LiteMap` does, serializes as
/// a map in every format.
#[derive(Clone, PartialEq)]
pub struct SortedMap<K, V>(LiteMap<K, V>);

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        Self(LiteMap::new())
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl<K, V> Deref for SortedMap<K, V> {
    type Target = LiteMap<K, V>;

    fn deref(&self) -> &LiteMap<K, V> {
        &self.0
    }
}

impl<K, V> DerefMut for SortedMap<K, V> {
    fn deref_mut(&mut self) -> &mut LiteMap<K, V> {
        &mut self.0
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<K, V> IntoIterator for SortedMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_tuple_vec().into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.0.iter())
    }
}

impl<K: Serialize, V: Serialize> Serialize for SortedMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for SortedMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LiteMap::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn it_is_a_map_in_json_even_when_empty_or_keyed_by_numbers() {
        let empty: SortedMap<String, f64> = SortedMap::default();
        assert_eq!(serde_json::to_value(&empty).expect("json"), json!({}));
        let by_number: SortedMap<u32, Vec<i64>> = [(7, vec![1]), (2, vec![])].into_iter().collect();
        let v = serde_json::to_value(&by_number).expect("json");
        assert_eq!(v, json!({"2": [], "7": [1]}));
        let back: SortedMap<u32, Vec<i64>> = serde_json::from_value(v).expect("json");
        assert_eq!(back, by_number);
        let packed = rmp_serde::to_vec(&by_number).expect("msgpack");
        let std: std::collections::BTreeMap<u32, Vec<i64>> =
            [(7, vec![1]), (2, vec![])].into_iter().collect();
        assert_eq!(
            packed,
            rmp_serde::to_vec(&std).expect("msgpack"),
            "as a BTreeMap was"
        );
    }
}
