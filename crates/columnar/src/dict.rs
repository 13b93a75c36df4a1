//! String dictionaries: dense `u32` ids for event names, property keys, property values and
//! person keys, each distinct string stored once.
//!
//! Dictionaries hold every distinct value a tenant ever sent (order ids, emails, anonymous
//! ids), so they grow with history and stay on the heap. Kept as a `HashMap<String, u32>`
//! beside a `Vec<String>`, a 13-byte id costs two allocations and two 24-byte headers, about
//! 150 bytes with glibc. Here the bytes of every value go once into one arena, a value's
//! place there is one `u64` (its end), and the hash table holds only the `u32` ids, hashing
//! the arena's bytes when it needs them: about the value's length + 14 bytes a value.
//!
//! Hand-written over `hashbrown::HashTable`: an interner is the whole job, and the
//! well-known crates for it keep a `String` or a `&'static str` per value.

use std::fmt;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

#[derive(Default, Clone)]
pub struct Dictionary {
    /// Every value, one after the other.
    arena: String,
    /// `ends[id]`: where value `id` ends in `arena` (it starts where the one before ends).
    ends: Vec<u64>,
    /// The ids, by the hash of their value.
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dictionary")
            .field("len", &self.len())
            .field("bytes", &self.arena.len())
            .finish()
    }
}

impl Dictionary {
    /// The id of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> u32 {
        let hash = self.hasher.hash_one(s);
        let Self {
            arena,
            ends,
            table,
            hasher,
        } = self;
        if let Some(&id) = table.find(hash, |&id| at(arena, ends, id) == s) {
            return id;
        }
        let id = u32::try_from(ends.len()).expect("fewer than 2^32 distinct values");
        arena.push_str(s);
        ends.push(arena.len() as u64);
        table.insert_unique(hash, id, |&id| hasher.hash_one(at(arena, ends, id)));
        id
    }

    /// The id of `s` if it was ever interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(s);
        self.table
            .find(hash, |&id| at(&self.arena, &self.ends, id) == s)
            .copied()
    }

    pub fn value(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.ends.len()).then(|| at(&self.arena, &self.ends, id))
    }

    /// Every value, in id order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.ends.len() as u32).map(|id| at(&self.arena, &self.ends, id))
    }

    /// Heap bytes: the arena, the ends and the table's slots (4 bytes and a control byte).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.ends.capacity() * 8 + self.table.capacity() * 5
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Room for `n` more values of `bytes` bytes in all.
    pub fn reserve(&mut self, n: usize, bytes: usize) {
        self.arena.reserve(bytes);
        self.ends.reserve(n);
        let Self {
            arena,
            ends,
            table,
            hasher,
        } = self;
        table.reserve(n, |&id| hasher.hash_one(at(arena, ends, id)));
    }
}

/// Value `id` (which exists).
fn at<'a>(arena: &'a str, ends: &[u64], id: u32) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &arena[start..ends[i] as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Interning agrees with a map and a list: the same ids, values and lookups,
        /// whatever the values (empty, repeated, multi-byte).
        #[test]
        fn matches_a_map(values in proptest::collection::vec("[a-c\u{e9}\u{1F600}]{0,4}", 0..300),
                         probes in proptest::collection::vec("[a-c\u{e9}]{0,3}", 0..50)) {
            let mut d = Dictionary::default();
            let (mut ids, mut list) = (HashMap::new(), Vec::new());
            for v in &values {
                let want = *ids.entry(v.clone()).or_insert_with(|| {
                    list.push(v.clone());
                    list.len() as u32 - 1
                });
                prop_assert_eq!(d.intern(v), want);
            }
            prop_assert_eq!(d.len(), list.len());
            for (id, v) in list.iter().enumerate() {
                prop_assert_eq!(d.value(id as u32), Some(v.as_str()));
            }
            prop_assert_eq!(d.value(list.len() as u32), None);
            prop_assert!(d.values().eq(list.iter().map(String::as_str)));
            for p in &probes {
                prop_assert_eq!(d.get(p), ids.get(p).copied());
            }
            let copy = d.clone();
            for v in &values {
                prop_assert_eq!(copy.get(v), ids.get(v).copied());
            }
        }
    }

    #[test]
    fn a_value_costs_its_bytes_and_a_few_more() {
        let mut d = Dictionary::default();
        let n = 100_000;
        for i in 0..n {
            d.intern(&format!("anon-{i:08}"));
        }
        let per_value = d.heap_bytes() / n;
        // 13 bytes of text; the arena, the ends and the table grow by doubling.
        assert!(per_value < 2 * (13 + 8 + 5), "{per_value} bytes a value");
    }
}
