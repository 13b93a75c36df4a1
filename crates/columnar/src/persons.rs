//! Persons: dense per-tenant ids for the people behind events, and identity merges.
//!
//! Every distinct `userId` and `anonymousId` gets a dense `u32` id the first time it is seen.
//! `identify` (a `userId` with an `anonymousId`) and `alias` (`previousId` -> `userId`) merge
//! two ids into one person. Merges never rewrite stored events: [`Persons::redirects`] gives
//! a flat array `id -> canonical id` that queries apply, so events sent before a merge count
//! for the merged person too.
//!
//! The canonical id of a merged group is its smallest id (stable, and independent of the
//! order in which merges arrive). Union-find with path halving keeps merges near O(1).

use livora_model::{KeyKind, PersonKey};

use crate::dict::Dictionary;

/// A dense person id within one tenant.
pub type PersonId = u32;

#[derive(Debug, Default, Clone)]
pub struct Persons {
    /// `u:<userId>` or `a:<anonymousId>` <-> id, each key stored once. The prefix keeps a
    /// user id and an anonymous id with the same text apart.
    keys: Dictionary,
    /// Union-find parents.
    parent: Vec<PersonId>,
    /// Reused to build lookup keys without allocating per event.
    scratch: String,
}

fn kind(user: bool) -> KeyKind {
    if user {
        KeyKind::User
    } else {
        KeyKind::Anonymous
    }
}

fn key(user: bool, id: &str) -> String {
    PersonKey::new(kind(user), id).into_string()
}

impl Persons {
    pub fn new() -> Self {
        Self::default()
    }

    /// Heap bytes: the keys and the parents.
    pub fn heap_bytes(&self) -> usize {
        self.keys.heap_bytes() + self.parent.capacity() * 4
    }

    /// Number of ids handed out (merged or not).
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    fn intern(&mut self, user: bool, raw: &str) -> PersonId {
        PersonKey::write(&mut self.scratch, kind(user), raw);
        let id = self.keys.intern(&self.scratch);
        if id as usize == self.parent.len() {
            self.parent.push(id);
        }
        id
    }

    /// The person of an event: its `userId` if set, else its `anonymousId`. When both are set
    /// the two are merged (what Segment's identity resolution does for any call carrying both).
    pub fn resolve(
        &mut self,
        user_id: Option<&str>,
        anonymous_id: Option<&str>,
    ) -> Option<PersonId> {
        let user = user_id.map(|u| self.intern(true, u));
        let anon = anonymous_id.map(|a| self.intern(false, a));
        match (user, anon) {
            (Some(u), Some(a)) => {
                self.union(u, a);
                Some(u)
            }
            (Some(u), None) => Some(u),
            (None, a) => a,
        }
    }

    /// `alias`: `previous_id` (a user id or an anonymous id) becomes the same person as
    /// `user_id`.
    pub fn alias(&mut self, previous_id: &str, user_id: &str) -> PersonId {
        let u = self.intern(true, user_id);
        // The previous id may have been seen as either kind; merge whichever exist, and
        // register it as anonymous if it was never seen.
        let mut merged = false;
        for user in [true, false] {
            if let Some(p) = self.keys.get(&key(user, previous_id)) {
                self.union(u, p);
                merged = true;
            }
        }
        if !merged {
            let p = self.intern(false, previous_id);
            self.union(u, p);
        }
        u
    }

    /// What `id` was created for: `(true, userId)` or `(false, anonymousId)`.
    pub fn describe(&self, id: PersonId) -> Option<(bool, &str)> {
        let (kind, id) = PersonKey::split(self.keys.value(id)?)?;
        Some((kind == KeyKind::User, id))
    }

    /// Every identity (`u:<userId>` / `a:<anonymousId>`) merged into the person of `key`
    /// (itself included); empty if the key was never seen. O(persons): for rare operations
    /// (export, erasure), not queries.
    pub fn identities(&self, key: &str) -> Vec<String> {
        let Some(id) = self.keys.get(key) else {
            return Vec::new();
        };
        let root = |mut x: PersonId| {
            while self.parent[x as usize] != x {
                x = self.parent[x as usize];
            }
            x
        };
        let r = root(id);
        (0..self.parent.len() as PersonId)
            .filter(|&p| root(p) == r)
            .filter_map(|p| self.keys.value(p).map(str::to_owned))
            .collect()
    }

    /// Looks up an id without creating it.
    pub fn get(&self, user: bool, id: &str) -> Option<PersonId> {
        self.keys.get(&key(user, id))
    }

    fn find(&mut self, mut x: PersonId) -> PersonId {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Links the larger root under the smaller, so every parent is a smaller id (which
    /// [`Persons::redirects`] relies on) and each root is its group's smallest id.
    fn union(&mut self, a: PersonId, b: PersonId) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }

    /// The canonical id of `p`.
    pub fn canonical(&mut self, p: PersonId) -> PersonId {
        self.find(p)
    }

    /// Every id's key (`u:<userId>` / `a:<anonymousId>`) and union-find parent, in id order:
    /// what a sealed snapshot stores.
    pub fn snapshot(&self) -> (impl ExactSizeIterator<Item = &str> + '_, &[PersonId]) {
        (self.keys.values(), &self.parent)
    }

    /// Rebuilds persons from a [`Persons::snapshot`]. Refuses a snapshot whose parents are
    /// out of range or not smaller ids (the invariant [`Persons::redirects`] relies on), or
    /// whose keys repeat or lack the `u:`/`a:` prefix.
    pub fn restore<K: AsRef<str>>(keys: &[K], parent: &[PersonId]) -> Result<Self, String> {
        if keys.len() != parent.len() {
            return Err(format!("{} keys but {} parents", keys.len(), parent.len()));
        }
        let mut p = Self::new();
        for (k, &parent) in keys.iter().zip(parent) {
            p.restore_next(k.as_ref(), parent)?;
        }
        Ok(p)
    }

    /// Appends the next id of a snapshot being read back, with the checks of
    /// [`Persons::restore`]; returns its id.
    pub fn restore_next(&mut self, key: &str, parent: PersonId) -> Result<PersonId, String> {
        let i = self.parent.len();
        if parent as usize > i {
            return Err(format!("person {i} has parent {parent}, not a smaller id"));
        }
        if PersonKey::split(key).is_none() {
            return Err(format!("person {i} has a key without a kind prefix"));
        }
        if self.keys.intern(key) as usize != i {
            return Err(format!("person key {key:?} appears twice"));
        }
        self.parent.push(parent);
        Ok(i as PersonId)
    }

    /// `id -> canonical id` for every id, for queries to apply at read time. Read-only, so
    /// queries can share the table; one pass, since every parent is a smaller id whose root
    /// is already known.
    pub fn redirects(&self) -> Vec<PersonId> {
        let mut roots: Vec<PersonId> = Vec::with_capacity(self.parent.len());
        for (p, &parent) in self.parent.iter().enumerate() {
            let root = if parent as usize == p {
                parent
            } else {
                roots[parent as usize]
            };
            roots.push(root);
        }
        roots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identify_and_alias_merge_people() {
        let mut p = Persons::new();
        let anon = p.resolve(None, Some("a1")).expect("person");
        let other = p.resolve(None, Some("a2")).expect("person");
        let user = p.resolve(Some("u1"), Some("a1")).expect("person");
        let r = p.redirects();
        assert_eq!(r[anon as usize], r[user as usize], "identify merges");
        assert_ne!(r[other as usize], r[user as usize]);
        p.alias("a2", "u1");
        let r = p.redirects();
        assert_eq!(r[other as usize], r[user as usize], "alias merges");
        // A user id and an anonymous id with the same text are different people.
        let x = p.resolve(Some("same"), None).expect("person");
        let y = p.resolve(None, Some("same")).expect("person");
        assert_ne!(p.canonical(x), p.canonical(y));
        assert_eq!(p.describe(x), Some((true, "same")));
        assert_eq!(p.describe(y), Some((false, "same")));
        assert_eq!(p.resolve(None, None), None);
        let mut ids = p.identities("u:u1");
        ids.sort();
        assert_eq!(ids, ["a:a1", "a:a2", "u:u1"]);
        assert_eq!(p.identities("u:same"), ["u:same"]);
        assert!(p.identities("u:never").is_empty());
    }

    proptest! {
        /// Union-find agrees with a plain reference (connected components by repeated
        /// relabelling), whatever the order of merges.
        #[test]
        fn merges_match_reference(pairs in proptest::collection::vec((0u8..30, 0u8..30), 0..60)) {
            let mut p = Persons::new();
            for i in 0..30u8 {
                p.resolve(None, Some(&i.to_string()));
            }
            let mut label: Vec<u32> = (0..30).collect();
            for (a, b) in &pairs {
                p.alias(&a.to_string(), &format!("user-{b}"));
                // The user id gets a fresh person on first sight: mirror that in the reference.
                let u = p.get(true, &format!("user-{b}")).expect("user");
                if label.len() <= u as usize {
                    label.resize(u as usize + 1, 0);
                    label[u as usize] = u;
                }
                let (la, lu) = (label[*a as usize], label[u as usize]);
                let (lo, hi) = (la.min(lu), la.max(lu));
                for l in label.iter_mut() {
                    if *l == hi { *l = lo; }
                }
            }
            let r = p.redirects();
            prop_assert_eq!(r, label);
        }
    }
}
