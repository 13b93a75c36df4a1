//! The identity graph's index from an identifier to the person holding it, keeping hashes
//! instead of identifiers.
//!
//! Every identifier is already held once, in its person's set (`IdentityGraph::members`);
//! an index keyed by the identifiers themselves held each a second time (57 bytes a slot,
//! about 240 bytes a person at three identifiers each, the largest part of what stays in
//! memory of a person whose profile is cold). This one maps the identifier's 64-bit hash to
//! the person (17 bytes a slot) and checks a hit against that person's set, so it answers
//! exactly what the keyed index did:
//!
//! - an identifier is found only if the person the hash names holds it;
//! - the rare identifier whose hash another identifier already took goes to a small exact
//!   map (`collided`), detected when it is added: a new identifier whose hash is taken is
//!   not the one that took it, since no person held it.
//!
//! Hand-written: a hash-keyed index verified against the sets it indexes is particular to
//! this graph.

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use hashbrown::HashMap;

use crate::identity::{IdSet, Identifier, PersonId};

/// The persons' identifier sets, which a hit is checked against.
pub(crate) type Members = crate::Table<PersonId, Arc<IdSet>>;

#[derive(Clone)]
pub(crate) struct Owners {
    /// The person holding the identifier with this hash (the first such identifier).
    by_hash: crate::Table<u64, PersonId>,
    /// Identifiers whose hash an identifier in `by_hash` has: exactly.
    collided: HashMap<Identifier, PersonId>,
    hash: fn(&Identifier) -> u64,
}

impl Default for Owners {
    fn default() -> Self {
        Self::with_hash(default_hash)
    }
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("len", &self.len())
            .field("collided", &self.collided.len())
            .finish()
    }
}

/// The process's hash of an identifier (random per process: nothing hashed is persisted).
fn default_hash(id: &Identifier) -> u64 {
    static STATE: OnceLock<hashbrown::DefaultHashBuilder> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(id)
}

impl Owners {
    fn with_hash(hash: fn(&Identifier) -> u64) -> Self {
        Self {
            by_hash: crate::Table::default(),
            collided: HashMap::new(),
            hash,
        }
    }

    /// Estimated heap bytes (see [`crate::heap`]).
    pub(crate) fn heap_bytes(&self) -> usize {
        crate::heap::table::<u64, PersonId>(self.by_hash.capacity())
            + crate::heap::table::<Identifier, PersonId>(self.collided.capacity())
            + self
                .collided
                .keys()
                .map(Identifier::heap_bytes)
                .sum::<usize>()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    /// The person holding `id`.
    pub(crate) fn get(&self, id: &Identifier, members: &Members) -> Option<PersonId> {
        if !self.collided.is_empty()
            && let Some(&p) = self.collided.get(id)
        {
            return Some(p);
        }
        let &p = self.by_hash.get(&(self.hash)(id))?;
        members
            .get(&p)
            .is_some_and(|ids| ids.contains(id))
            .then_some(p)
    }

    /// Records that `id`, held by no one so far, is now `person`'s.
    pub(crate) fn add(&mut self, id: &Identifier, person: PersonId) {
        let h = (self.hash)(id);
        match self.by_hash.get(&h) {
            // Taken by another identifier (no one held this one).
            Some(_) => {
                self.collided.insert(id.clone(), person);
            }
            None => {
                self.by_hash.insert(h, person);
            }
        }
    }

    /// Records that `id`, held by someone, is now `person`'s.
    pub(crate) fn set(&mut self, id: &Identifier, person: PersonId) {
        if let Some(p) = self.collided.get_mut(id) {
            *p = person;
        } else {
            self.by_hash.insert((self.hash)(id), person);
        }
    }

    /// Forgets `id`, held by someone.
    pub(crate) fn remove(&mut self, id: &Identifier) {
        if self.collided.remove(id).is_none() {
            self.by_hash.remove(&(self.hash)(id));
        }
    }
}

/// Read from the snapshot's `owner` map (identifier → person): its keys are distinct, so a
/// hash met twice is a collision.
impl<'de> serde::Deserialize<'de> for Owners {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Owners;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of identifiers to persons")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Owners, A::Error> {
                let mut owners = Owners::default();
                while let Some((id, person)) = m.next_entry::<Identifier, PersonId>()? {
                    owners.add(&id, person);
                }
                Ok(owners)
            }
        }
        d.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn id(kind: &str, value: &str) -> Identifier {
        Identifier::raw(kind, value).unwrap_or_else(|| panic!("test identifier {kind:?}"))
    }

    /// A hash with collisions everywhere: the value's length.
    fn weak_hash(id: &Identifier) -> u64 {
        id.value().len() as u64
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Give identifier `v` to person `p` (if no one holds it: added; else moved).
        Give(u8, u64),
        /// Forget identifier `v`.
        Forget(u8),
        /// Move everything of person `a` to person `b` (a merge).
        Merge(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..40, 1u64..6).prop_map(|(v, p)| Op::Give(v, p)),
            (0u8..40).prop_map(Op::Forget),
            (1u64..6, 1u64..6).prop_map(|(a, b)| Op::Merge(a, b)),
        ]
    }

    proptest! {
        /// Under any sequence of additions, moves, merges and removals, the hash index
        /// answers as a map keyed by identifier, with a hash that collides all the time
        /// and with the process's own.
        #[test]
        fn answers_as_a_keyed_map(ops in proptest::collection::vec(op(), 0..120), weak in any::<bool>()) {
            let mut owners = if weak { Owners::with_hash(weak_hash) } else { Owners::default() };
            let mut members = Members::default();
            let mut reference: BTreeMap<Identifier, PersonId> = BTreeMap::new();
            // Values of lengths 1 to 3, so the weak hash collides.
            let value = |v: u8| id("email", &"x".repeat(usize::from(v % 3) + 1).replace('x', &v.to_string()));
            for op in ops {
                match op {
                    Op::Give(v, p) => {
                        let i = value(v);
                        match reference.get(&i).copied() {
                            Some(q) => {
                                if let Some(set) = members.get_mut(&q) {
                                    Arc::make_mut(set).retain(|x| x != &i);
                                }
                                owners.set(&i, p);
                            }
                            None => owners.add(&i, p),
                        }
                        Arc::make_mut(members.entry(p).or_default()).insert(i.clone());
                        reference.insert(i, p);
                    }
                    Op::Forget(v) => {
                        let i = value(v);
                        if let Some(q) = reference.remove(&i) {
                            if let Some(set) = members.get_mut(&q) {
                                Arc::make_mut(set).retain(|x| x != &i);
                            }
                            owners.remove(&i);
                        }
                    }
                    Op::Merge(a, b) if a != b => {
                        let moved = members.remove(&a).map(Arc::unwrap_or_clone).unwrap_or_default();
                        for i in &moved {
                            owners.set(i, b);
                            reference.insert(i.clone(), b);
                        }
                        Arc::make_mut(members.entry(b).or_default()).extend(moved);
                    }
                    Op::Merge(..) => {}
                }
                for v in 0..40 {
                    let i = value(v);
                    prop_assert_eq!(owners.get(&i, &members), reference.get(&i).copied(), "{:?}", i);
                }
                prop_assert_eq!(owners.len(), reference.len());
            }
        }
    }

    #[test]
    fn reads_the_owner_map_of_a_snapshot() {
        // As a snapshot writes it (MessagePack, identifier → person).
        let map: BTreeMap<Identifier, PersonId> = [
            (id("email", "a@b.c"), 3),
            (id("user_id", "u"), 3),
            (id("anonymous_id", "x"), 4),
        ]
        .into_iter()
        .collect();
        let bytes = rmp_serde::to_vec(&map).expect("encode");
        let owners: Owners = rmp_serde::from_slice(&bytes).expect("decode");
        let mut members = Members::default();
        members.insert(
            3,
            Arc::new(
                [id("email", "a@b.c"), id("user_id", "u")]
                    .into_iter()
                    .collect(),
            ),
        );
        members.insert(4, Arc::new(IdSet::one(id("anonymous_id", "x"))));
        assert_eq!(owners.len(), 3);
        assert_eq!(owners.get(&id("email", "a@b.c"), &members), Some(3));
        assert_eq!(owners.get(&id("anonymous_id", "x"), &members), Some(4));
        assert_eq!(owners.get(&id("email", "x@b.c"), &members), None);
    }
}
