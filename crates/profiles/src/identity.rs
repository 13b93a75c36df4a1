//! The identity graph: which identifiers (`anonymous_id`, `user_id`, `email`, `phone`,
//! custom kinds) belong to the same person.
//!
//! Every event that carries identifiers is an *observation*. An observation's identifiers
//! are taken in priority order (by default `user_id` > `email` > `phone` > `anonymous_id` >
//! custom kinds): the first one known names the person, and each further identifier either
//! joins that person (unknown so far), merges its own person into it, or is refused, when
//! the merge would break a rule:
//! - a per-kind **limit** of identifiers on one person (default: one `user_id`), so two
//!   different logged-in users sharing a device never become one person;
//! - a **split** left by an un-merge: identifiers separated by hand are never merged again.
//!
//! Blocked values (`null`, `undefined`, `anonymous`, `0`, `-1`, empty, all zeros…) are never
//! identifiers at all. This is Segment Unify's model (limits and priority), with PostHog's
//! list of values that must never merge.
//!
//! Every merge and refusal lands in the merge log. The graph keeps the observations that
//! changed it, so [`IdentityGraph::unmerge`] rebuilds it without the merge (and with a split
//! that keeps it from coming back): the graph is a pure function of the observations in
//! order and the un-merges, which makes replaying the event log yield the same persons.
//! When the rules never refuse anything, the persons are the connected components of the
//! observations, whatever their order (a property test checks both).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use hashbrown::HashMap;
use livora_model::PersonKey;
use serde::{Deserialize, Serialize};

/// A person, unique within a tenant. Ids are handed out in order and never reused; a
/// merged-away id redirects to the person that absorbed it ([`IdentityGraph::resolve`]).
pub type PersonId = u64;

pub const USER_ID: &str = "user_id";
pub const ANONYMOUS_ID: &str = "anonymous_id";
pub const EMAIL: &str = "email";
pub const PHONE: &str = "phone";
/// The value an erased identifier keeps in the merge log.
pub const ERASED: &str = "(erased)";

/// One identifier: a kind and a normalised value.
///
/// Held as one inline string, `kind`, a NUL, then `value` (`compact_str`: up to 24 bytes
/// without an allocation, as `user_id` with a short id is): the identity graph holds every
/// identifier of every person, cold profile or not, and two strings of 24 bytes each were
/// half of what stays in memory of a person. A kind never holds a NUL (one that does is
/// not an identifier), so the bytes order as (kind, value) did. Serialized as the pair of
/// strings it was.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    repr: CompactString,
}

impl Identifier {
    /// The identifier, normalised for its kind (emails lower-cased, phone numbers reduced to
    /// digits and a leading `+`), or `None` when the value is blocked (or the kind holds a
    /// NUL).
    pub fn new(kind: &str, value: &str, rules: &MergeRules) -> Option<Self> {
        let trimmed = value.trim();
        let value = match kind {
            EMAIL => trimmed.to_lowercase(),
            PHONE => {
                let plus = trimmed.starts_with('+');
                let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
                if plus { format!("+{digits}") } else { digits }
            }
            _ => trimmed.to_owned(),
        };
        if rules.blocked(&value) || (kind == PHONE && value.trim_start_matches('+').is_empty()) {
            return None;
        }
        Self::raw(kind, &value)
    }

    /// The identifier as given, not normalised; `None` if `kind` holds a NUL.
    pub fn raw(kind: &str, value: &str) -> Option<Self> {
        if kind.contains('\0') {
            return None;
        }
        let mut repr = CompactString::with_capacity(kind.len() + 1 + value.len());
        repr.push_str(kind);
        repr.push('\0');
        repr.push_str(value);
        Some(Self { repr })
    }

    fn split(&self) -> (&str, &str) {
        self.repr.split_once('\0').unwrap_or((&self.repr, ""))
    }

    pub fn kind(&self) -> &str {
        self.split().0
    }

    pub fn value(&self) -> &str {
        self.split().1
    }

    /// Heap bytes it holds (none when inline).
    pub fn heap_bytes(&self) -> usize {
        if self.repr.is_heap_allocated() {
            self.repr.capacity()
        } else {
            0
        }
    }

    /// The same kind with `value`.
    fn with_value(&self, value: &str) -> Self {
        Self::raw(self.kind(), value).unwrap_or_else(|| self.clone())
    }
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identifier")
            .field("kind", &self.kind())
            .field("value", &self.value())
            .finish()
    }
}

/// As the struct of two strings it was.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Identifier")]
struct Pair<S> {
    kind: S,
    value: S,
}

impl Serialize for Identifier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, value) = self.split();
        Pair { kind, value }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Identifier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = Pair::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::raw(&p.kind, &p.value)
            .ok_or_else(|| serde::de::Error::custom("an identifier kind holds a NUL"))
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind(), self.value())
    }
}

/// Merge rules of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergeRules {
    /// Identifier kinds, highest priority first; unlisted kinds come after, by name.
    pub priority: Vec<String>,
    /// The most identifiers of a kind one person may have; kinds not listed are unlimited.
    pub limits: BTreeMap<String, u32>,
    /// Values that are never identifiers (compared case-insensitively), besides the empty
    /// value and values made only of zeros and separators, which are always blocked.
    pub blocked_values: Vec<String>,
}

impl Default for MergeRules {
    fn default() -> Self {
        Self {
            priority: [USER_ID, EMAIL, PHONE, ANONYMOUS_ID]
                .map(String::from)
                .to_vec(),
            limits: BTreeMap::from([(USER_ID.to_owned(), 1)]),
            blocked_values: [
                "null",
                "undefined",
                "anonymous",
                "0",
                "-1",
                "none",
                "nan",
                "nil",
                "guest",
                "true",
                "false",
                "[object object]",
                "distinct_id",
                "not_authenticated",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Why [`MergeRules`] cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RulesError {
    #[error("merge_rules.limits.{0}: a limit must be at least 1")]
    ZeroLimit(String),
    #[error("merge_rules.priority: {0:?} is listed twice")]
    DuplicatePriority(String),
    #[error("merge_rules.{0}: identifier kinds are 1-64 letters, digits, '_' or '$'")]
    BadKind(String),
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

impl MergeRules {
    pub fn validate(&self) -> Result<(), RulesError> {
        let mut seen = BTreeSet::new();
        for (i, kind) in self.priority.iter().enumerate() {
            if !valid_kind(kind) {
                return Err(RulesError::BadKind(format!("priority[{i}]")));
            }
            if !seen.insert(kind) {
                return Err(RulesError::DuplicatePriority(kind.clone()));
            }
        }
        for (kind, limit) in &self.limits {
            if !valid_kind(kind) {
                return Err(RulesError::BadKind(format!("limits.{kind}")));
            }
            if *limit == 0 {
                return Err(RulesError::ZeroLimit(kind.clone()));
            }
        }
        Ok(())
    }

    /// Whether `value` (normalised) never identifies anyone.
    pub fn blocked(&self, value: &str) -> bool {
        value.is_empty()
            || value.chars().all(|c| c == '0' || c == '-' || c == '.')
            || self
                .blocked_values
                .iter()
                .any(|b| b.eq_ignore_ascii_case(value))
    }

    fn rank(&self, kind: &str) -> usize {
        self.priority
            .iter()
            .position(|k| k == kind)
            .unwrap_or(self.priority.len())
    }

    fn limit(&self, kind: &str) -> u32 {
        self.limits.get(kind).copied().unwrap_or(u32::MAX)
    }
}

/// What caused an observation: the call (`identify`, `alias`, `track`…) or a PostHog event
/// name (`$identify`, `$create_alias`), and the event's message id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub call: String,
    pub message_id: String,
}

/// The identifiers one event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub identifiers: Vec<Identifier>,
    pub at: DateTime<Utc>,
    pub cause: Cause,
}

/// An entry of the merge log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MergeRecord {
    /// `from` (with its identifiers, `moved`) became part of `into` (which held `kept`),
    /// because `via` was seen with an identifier of `into`.
    Merged {
        id: u64,
        into: PersonId,
        from: PersonId,
        kept: Vec<Identifier>,
        moved: Vec<Identifier>,
        via: Identifier,
        at: DateTime<Utc>,
        cause: Cause,
        /// Set once the merge is undone.
        unmerged: bool,
    },
    /// `identifier` was not added to (or merged into) `person`: `rule` says why.
    Refused {
        person: PersonId,
        identifier: Identifier,
        rule: String,
        at: DateTime<Utc>,
        cause: Cause,
    },
}

/// A hand-made separation: no person may hold identifiers of both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub left: BTreeSet<Identifier>,
    pub right: BTreeSet<Identifier>,
}

/// Why an un-merge cannot be done.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UnmergeError {
    #[error("no merge {0} in this tenant")]
    NoSuchMerge(u64),
    #[error("merge {0} is already undone")]
    AlreadyUnmerged(u64),
}

/// What [`IdentityGraph::observe`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// The person the event belongs to (`None`: it carries no usable identifier).
    pub person: Option<PersonId>,
    /// Persons merged into `person` by this observation.
    pub absorbed: Vec<PersonId>,
    /// Whether a new person was created.
    pub created: bool,
    /// Whether an identifier no person held before was seen (kept or refused).
    pub new_identifier: bool,
}

/// A person's identifiers: a sorted, deduplicated list. A person holds one to a few, and a
/// `BTreeSet`'s first node alone takes room for eleven (over 500 bytes); this takes what it
/// holds. Reads as a slice; serialized as the `BTreeSet` it replaces was (a sorted sequence).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct IdSet(Vec<Identifier>);

impl IdSet {
    pub fn one(id: Identifier) -> Self {
        Self(vec![id])
    }

    /// Adds `id`; `false` if it was there.
    pub fn insert(&mut self, id: Identifier) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                // Grown by one, not doubled: a person gains an identifier once in a while,
                // and a million spare slots of 48 bytes are 48 MB.
                self.0.reserve_exact(1);
                self.0.insert(at, id);
                true
            }
        }
    }

    pub fn contains(&self, id: &Identifier) -> bool {
        self.0.binary_search(id).is_ok()
    }

    pub fn retain(&mut self, keep: impl FnMut(&Identifier) -> bool) {
        self.0.retain(keep);
    }
}

impl std::ops::Deref for IdSet {
    type Target = [Identifier];

    fn deref(&self) -> &[Identifier] {
        &self.0
    }
}

impl FromIterator<Identifier> for IdSet {
    fn from_iter<I: IntoIterator<Item = Identifier>>(iter: I) -> Self {
        let mut v: Vec<Identifier> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        v.shrink_to_fit();
        Self(v)
    }
}

impl Extend<Identifier> for IdSet {
    fn extend<I: IntoIterator<Item = Identifier>>(&mut self, iter: I) {
        self.0.extend(iter);
        self.0.sort_unstable();
        self.0.dedup();
        self.0.shrink_to_fit();
    }
}

impl IntoIterator for IdSet {
    type Item = Identifier;
    type IntoIter = std::vec::IntoIter<Identifier>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a IdSet {
    type Item = &'a Identifier;
    type IntoIter = std::slice::Iter<'a, Identifier>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de> Deserialize<'de> for IdSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Identifier>::deserialize(d).map(IdSet::from_iter)
    }
}

/// The identity graph of one tenant.
///
/// What grows with the persons is shared rather than copied by [`IdentityGraph::frozen`]
/// (each person's identifiers, the merge log, the creators' keys), so that a snapshot takes
/// it in milliseconds and writes it while the graph goes on changing; `owner`, the inverse
/// of `members`, is not copied at all: a snapshot writes it from `members`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IdentityGraph {
    rules: MergeRules,
    owner: crate::owners::Owners,
    members: crate::Table<PersonId, Arc<IdSet>>,
    redirect: crate::Table<PersonId, PersonId>,
    next: PersonId,
    next_merge: u64,
    log: Vec<Arc<MergeRecord>>,
    splits: Vec<Split>,
    /// Merges undone by [`IdentityGraph::unmerge`], kept for the record.
    undone: Vec<MergeRecord>,
    /// The identifier each person id was created for.
    creators: crate::Table<Arc<Identifier>, PersonId>,
    /// During a rebuild: the ids of the merges being replayed, by (message id, via).
    #[serde(skip)]
    reuse: HashMap<(String, Identifier), u64>,
    /// The refusals in `log`, by (person, identifier, rule): a refusal is logged once, not at
    /// every event that repeats it (a device shared by two users would otherwise add one
    /// to the log per event). Built from `log` when first needed (`None` until then).
    #[serde(skip)]
    refused: Option<hashbrown::HashSet<(PersonId, Identifier, String)>>,
    /// Set on a copy made by [`IdentityGraph::frozen`]: its `owner` is left empty.
    #[serde(skip)]
    frozen: bool,
}

/// Serialized as the derived form would (fields in order), except that `owner` is written
/// from `members`, whose inverse it is: a [frozen](IdentityGraph::frozen) copy has none.
impl Serialize for IdentityGraph {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("IdentityGraph", 10)?;
        st.serialize_field("rules", &self.rules)?;
        st.serialize_field("owner", &OwnerOf(&self.members))?;
        st.serialize_field("members", &self.members)?;
        st.serialize_field("redirect", &self.redirect)?;
        st.serialize_field("next", &self.next)?;
        st.serialize_field("next_merge", &self.next_merge)?;
        st.serialize_field("log", &self.log)?;
        st.serialize_field("splits", &self.splits)?;
        st.serialize_field("undone", &self.undone)?;
        st.serialize_field("creators", &self.creators)?;
        st.end()
    }
}

/// Identifier → person, from person → identifiers.
struct OwnerOf<'a>(&'a crate::Table<PersonId, Arc<IdSet>>);

impl Serialize for OwnerOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let n = self.0.values().map(|ids| ids.len()).sum();
        let mut m = s.serialize_map(Some(n))?;
        for (p, ids) in self.0.iter() {
            for i in ids.iter() {
                m.serialize_entry(i, p)?;
            }
        }
        m.end()
    }
}

impl IdentityGraph {
    pub fn new(rules: MergeRules) -> Self {
        Self {
            rules,
            next: 1,
            next_merge: 1,
            ..Self::default()
        }
    }

    pub fn rules(&self) -> &MergeRules {
        &self.rules
    }

    /// Replaces the rules for what comes next: persons already formed stay as they are
    /// (as in Segment's identity resolution, a change applies going forward).
    pub fn set_rules(&mut self, rules: MergeRules) {
        self.rules = rules;
    }

    /// A copy to write as a snapshot, taken in milliseconds: the identifier sets and merge
    /// records are shared (the graph copies one only when it changes it while the copy
    /// lives) and the identifier index is left out. It serializes as this graph does, and
    /// is good for nothing else.
    pub(crate) fn frozen(&self) -> Self {
        Self {
            rules: self.rules.clone(),
            owner: crate::owners::Owners::default(),
            members: self.members.clone(),
            redirect: self.redirect.clone(),
            next: self.next,
            next_merge: self.next_merge,
            log: self.log.clone(),
            splits: self.splits.clone(),
            undone: self.undone.clone(),
            creators: self.creators.clone(),
            reuse: HashMap::new(),
            refused: None,
            frozen: true,
        }
    }

    /// The person that `id` is now (itself, or the person it was merged into).
    pub fn resolve(&self, mut id: PersonId) -> Option<PersonId> {
        while let Some(&next) = self.redirect.get(&id) {
            id = next;
        }
        self.members.contains_key(&id).then_some(id)
    }

    /// The person holding `identifier`.
    pub fn person_of(&self, identifier: &Identifier) -> Option<PersonId> {
        debug_assert!(!self.frozen, "a frozen graph has no identifier index");
        self.owner.get(identifier, &self.members)
    }

    /// The identifiers of a person.
    pub fn identifiers(&self, person: PersonId) -> Option<&IdSet> {
        self.members.get(&person).map(|ids| &**ids)
    }

    /// Every current person and its identifiers.
    pub fn persons(&self) -> impl Iterator<Item = (PersonId, &IdSet)> {
        self.members.iter().map(|(p, ids)| (*p, &**ids))
    }

    /// A person's user and anonymous ids as keys, `u:<userId>` then `a:<anonymousId>`
    /// (the subjects of consents, journeys and messages).
    pub fn keys(&self, person: PersonId) -> Vec<String> {
        let mut keys: Vec<String> = self
            .identifiers(person)
            .map(|ids| {
                ids.iter()
                    .filter_map(|i| match i.kind() {
                        USER_ID => Some(PersonKey::user(i.value()).into_string()),
                        ANONYMOUS_ID => Some(PersonKey::anonymous(i.value()).into_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_by_key(|k| !PersonKey::is_user_key(k));
        keys
    }

    /// The person a key (`u:…` / `a:…`) names.
    pub fn person_of_key(&self, key: &str) -> Option<PersonId> {
        let (kind, value) = match key.split_once(':')? {
            ("u", v) => (USER_ID, v),
            ("a", v) => (ANONYMOUS_ID, v),
            _ => return None,
        };
        self.person_of(&Identifier::new(kind, value, &self.rules)?)
    }

    /// Estimated heap bytes (see [`crate::heap`]); what a snapshot's frozen copy shares is
    /// counted here.
    pub fn heap_bytes(&self) -> usize {
        use crate::heap;
        use std::mem::size_of;
        let ids = |ids: &[Identifier]| ids.iter().map(Identifier::heap_bytes).sum::<usize>();
        let arc = 2 * size_of::<usize>();
        let members = self
            .members
            .values()
            .map(|s| arc + size_of::<IdSet>() + s.0.capacity() * size_of::<Identifier>() + ids(s))
            .sum::<usize>();
        let creators = self
            .creators
            .keys()
            .map(|i| arc + size_of::<Identifier>() + i.heap_bytes())
            .sum::<usize>();
        let log = self
            .log
            .iter()
            .map(|r| {
                arc + size_of::<MergeRecord>()
                    + match &**r {
                        MergeRecord::Merged {
                            kept,
                            moved,
                            via,
                            cause,
                            ..
                        } => {
                            (kept.capacity() + moved.capacity()) * size_of::<Identifier>()
                                + ids(kept)
                                + ids(moved)
                                + via.heap_bytes()
                                + cause.call.capacity()
                                + cause.message_id.capacity()
                        }
                        MergeRecord::Refused {
                            identifier,
                            rule,
                            cause,
                            ..
                        } => {
                            identifier.heap_bytes()
                                + rule.capacity()
                                + cause.call.capacity()
                                + cause.message_id.capacity()
                        }
                    }
            })
            .sum::<usize>();
        self.owner.heap_bytes()
            + heap::table::<PersonId, Arc<IdSet>>(self.members.capacity())
            + members
            + heap::table::<PersonId, PersonId>(self.redirect.capacity())
            + heap::table::<Arc<Identifier>, PersonId>(self.creators.capacity())
            + creators
            + self.log.capacity() * size_of::<usize>()
            + log
    }

    pub fn person_count(&self) -> usize {
        self.members.len()
    }

    /// The whole merge log, oldest first.
    pub fn log(&self) -> &[Arc<MergeRecord>] {
        &self.log
    }

    /// The merge log entries about `person`: merges into it, refusals, and undone merges of
    /// its identifiers.
    pub fn history_of(&self, person: PersonId) -> Vec<&MergeRecord> {
        let mine = |ids: &[Identifier]| ids.iter().any(|i| self.person_of(i) == Some(person));
        self.log
            .iter()
            .map(|r| &**r)
            .chain(&self.undone)
            .filter(|r| match r {
                MergeRecord::Merged {
                    into,
                    unmerged: false,
                    ..
                } => self.resolve(*into) == Some(person),
                MergeRecord::Merged { kept, moved, .. } => mine(kept) || mine(moved),
                MergeRecord::Refused { person: p, .. } => self.resolve(*p) == Some(person),
            })
            .collect()
    }

    /// The persons as sets of identifiers, sorted: what two graphs must agree on to hold
    /// the same persons, whatever ids they gave them.
    pub fn partition(&self) -> Vec<Vec<Identifier>> {
        let mut out: Vec<Vec<Identifier>> = self
            .members
            .values()
            .map(|ids| ids.iter().cloned().collect())
            .collect();
        out.sort();
        out
    }

    fn count_of(&self, person: PersonId, kind: &str) -> u32 {
        self.members.get(&person).map_or(0, |ids| {
            ids.iter().filter(|i| i.kind() == kind).count() as u32
        })
    }

    /// Whether identifiers `a` and `b` may share a person under the splits.
    fn split_between<'a>(
        &self,
        a: impl Iterator<Item = &'a Identifier> + Clone,
        b: impl Iterator<Item = &'a Identifier> + Clone,
    ) -> bool {
        self.splits.iter().any(|s| {
            let l = |i: &Identifier| s.left.contains(i);
            let r = |i: &Identifier| s.right.contains(i);
            (a.clone().any(l) && b.clone().any(r)) || (a.clone().any(r) && b.clone().any(l))
        })
    }

    /// The rule that forbids joining `ids` to `person`, if any.
    fn refusal(&self, person: PersonId, ids: &[Identifier]) -> Option<String> {
        let mut kinds: BTreeMap<&str, u32> = BTreeMap::new();
        for i in ids {
            *kinds.entry(i.kind()).or_default() += 1;
        }
        for (kind, n) in kinds {
            let limit = self.rules.limit(kind);
            if self.count_of(person, kind) + n > limit {
                return Some(format!("limit {kind}={limit}"));
            }
        }
        let mine = self.members.get(&person)?;
        self.split_between(mine.iter(), ids.iter())
            .then(|| "split by an un-merge".to_owned())
    }

    /// Applies the identifiers of one event; see the module doc for the rules.
    pub fn observe(&mut self, mut obs: Observation) -> Outcome {
        let mut ids = std::mem::take(&mut obs.identifiers);
        ids.sort_by(|a, b| (self.rules.rank(a.kind()), a).cmp(&(self.rules.rank(b.kind()), b)));
        ids.dedup();
        let mut out = Outcome::default();
        for id in ids {
            let Some(current) = out.person else {
                match self.owner.get(&id, &self.members) {
                    Some(p) => out.person = Some(p),
                    None => {
                        out.new_identifier = true;
                        // A person keeps the id it was first given, also across rebuilds.
                        let p = match self.creators.get(&id) {
                            Some(&p) => p,
                            None => {
                                self.next += 1;
                                self.creators.insert(Arc::new(id.clone()), self.next - 1);
                                self.next - 1
                            }
                        };
                        self.owner.add(&id, p);
                        self.members.insert(p, Arc::new(IdSet::one(id)));
                        out.person = Some(p);
                        out.created = true;
                    }
                }
                continue;
            };
            match self.owner.get(&id, &self.members) {
                Some(p) if p == current => {}
                Some(other) => {
                    let theirs = self
                        .members
                        .get(&other)
                        .map(|ids| IdSet::clone(ids))
                        .unwrap_or_default();
                    if let Some(rule) = self.refusal(current, &theirs) {
                        self.refuse(current, id, rule, &obs);
                    } else {
                        // The older person survives, so ids stay stable whatever the order.
                        let (into, from) = (current.min(other), current.max(other));
                        self.absorb(into, from, id, &obs);
                        out.absorbed.push(from);
                        out.person = Some(into);
                    }
                }
                None => {
                    out.new_identifier = true;
                    let one = [id.clone()];
                    if let Some(rule) = self.refusal(current, &one) {
                        self.refuse(current, id, rule, &obs);
                    } else {
                        self.owner.add(&id, current);
                        Arc::make_mut(self.members.entry(current).or_default()).insert(id);
                    }
                }
            }
        }
        out
    }

    fn refuse(
        &mut self,
        person: PersonId,
        identifier: Identifier,
        rule: String,
        obs: &Observation,
    ) {
        let log = &self.log;
        let refused = self.refused.get_or_insert_with(|| {
            log.iter()
                .filter_map(|r| match &**r {
                    MergeRecord::Refused {
                        person,
                        identifier,
                        rule,
                        ..
                    } => Some((*person, identifier.clone(), rule.clone())),
                    MergeRecord::Merged { .. } => None,
                })
                .collect()
        });
        if !refused.insert((person, identifier.clone(), rule.clone())) {
            return;
        }
        self.log.push(Arc::new(MergeRecord::Refused {
            person,
            identifier,
            rule,
            at: obs.at,
            cause: obs.cause.clone(),
        }));
    }

    fn absorb(&mut self, into: PersonId, from: PersonId, via: Identifier, obs: &Observation) {
        let moved = self
            .members
            .remove(&from)
            .map(Arc::unwrap_or_clone)
            .unwrap_or_default();
        for i in &moved {
            self.owner.set(i, into);
        }
        let target = Arc::make_mut(self.members.entry(into).or_default());
        let kept: Vec<Identifier> = target.iter().cloned().collect();
        target.extend(moved.iter().cloned());
        self.redirect.insert(from, into);
        // A merge that a rebuild replays keeps the id it had.
        let id = match self.reuse.get(&(obs.cause.message_id.clone(), via.clone())) {
            Some(&id) => id,
            None => {
                self.next_merge += 1;
                self.next_merge - 1
            }
        };
        self.log.push(Arc::new(MergeRecord::Merged {
            id,
            into,
            from,
            kept,
            moved: moved.into_iter().collect(),
            via,
            at: obs.at,
            cause: obs.cause.clone(),
            unmerged: false,
        }));
    }

    /// Undoes merge `merge_id`: the graph is rebuilt from `observations` (every observation
    /// so far, in order: the events themselves) as if the two sides of that merge had been
    /// split from the start, and they stay apart from now on (merges that depended on it
    /// are undone too, and merges it had prevented happen). The graph keeps no copy of the
    /// observations: the event log is that copy. Returns the persons holding an identifier
    /// of either side afterwards: their events must be attributed again.
    pub fn unmerge(
        &mut self,
        merge_id: u64,
        observations: impl IntoIterator<Item = Observation>,
    ) -> Result<Vec<PersonId>, UnmergeError> {
        self.can_unmerge(merge_id)?;
        let Some(MergeRecord::Merged { kept, moved, .. }) = self
            .log
            .iter()
            .find(|r| record_id(r) == Some(merge_id))
            .map(|r| MergeRecord::clone(r))
        else {
            return Err(UnmergeError::NoSuchMerge(merge_id));
        };
        let split = Split {
            left: kept.into_iter().collect(),
            right: moved.into_iter().collect(),
        };
        let touched: Vec<Identifier> = split.left.union(&split.right).cloned().collect();
        let mut splits = self.splits.clone();
        splits.push(split);
        self.rebuild(splits, observations);
        let mut persons: Vec<PersonId> = touched.iter().filter_map(|i| self.person_of(i)).collect();
        persons.sort_unstable();
        persons.dedup();
        Ok(persons)
    }

    /// Forgets the identifiers of `person` that `keep` refuses (after an erasure: emails,
    /// phones and custom ids) everywhere the graph holds them: ownership, and the merge log
    /// and splits, where their value becomes [`ERASED`]. Returns how many it forgot.
    pub fn erase(&mut self, person: PersonId, keep: impl Fn(&Identifier) -> bool) -> usize {
        let Some(ids) = self.members.get_mut(&person) else {
            return 0;
        };
        let gone: BTreeSet<Identifier> = ids.iter().filter(|i| !keep(i)).cloned().collect();
        if gone.is_empty() {
            return 0;
        }
        Arc::make_mut(ids).retain(|i| !gone.contains(i));
        // Rebuilt from the redacted log when next needed.
        self.refused = None;
        for i in &gone {
            self.owner.remove(i);
            self.creators.remove(i);
        }
        let redact = |i: &mut Identifier| {
            if gone.contains(i) {
                *i = i.with_value(ERASED);
            }
        };
        let names = |r: &MergeRecord| match r {
            MergeRecord::Merged {
                kept, moved, via, ..
            } => kept
                .iter()
                .chain(moved)
                .chain([via])
                .any(|i| gone.contains(i)),
            MergeRecord::Refused { identifier, .. } => gone.contains(identifier),
        };
        // Only the records that name them are copied (a snapshot may share the others).
        let log = self.log.iter_mut().filter(|r| names(r)).map(Arc::make_mut);
        for r in log.chain(self.undone.iter_mut()) {
            match r {
                MergeRecord::Merged {
                    kept, moved, via, ..
                } => {
                    kept.iter_mut().chain(moved.iter_mut()).for_each(redact);
                    redact(via);
                }
                MergeRecord::Refused { identifier, .. } => redact(identifier),
            }
        }
        for s in &mut self.splits {
            for side in [&mut s.left, &mut s.right] {
                *side = std::mem::take(side)
                    .into_iter()
                    .map(|mut i| {
                        redact(&mut i);
                        i
                    })
                    .collect();
            }
        }
        gone.len()
    }

    /// Whether merge `merge_id` exists and is not undone yet.
    pub fn can_unmerge(&self, merge_id: u64) -> Result<(), UnmergeError> {
        if self.undone.iter().any(|r| record_id(r) == Some(merge_id)) {
            return Err(UnmergeError::AlreadyUnmerged(merge_id));
        }
        if !self.log.iter().any(|r| record_id(r) == Some(merge_id)) {
            return Err(UnmergeError::NoSuchMerge(merge_id));
        }
        Ok(())
    }

    /// Merges undone by hand, oldest first.
    pub fn undone(&self) -> &[MergeRecord] {
        &self.undone
    }

    /// Replays `observations` under `splits`. Merges that happen again keep their ids;
    /// those that no longer happen move to [`IdentityGraph::undone`].
    fn rebuild(&mut self, splits: Vec<Split>, observations: impl IntoIterator<Item = Observation>) {
        let mut g = IdentityGraph::new(self.rules.clone());
        g.splits = splits;
        g.next_merge = self.next_merge;
        g.next = self.next;
        g.creators = std::mem::take(&mut self.creators);
        g.reuse = self
            .log
            .iter()
            .filter_map(|r| match &**r {
                MergeRecord::Merged { id, via, cause, .. } => {
                    Some(((cause.message_id.clone(), via.clone()), *id))
                }
                MergeRecord::Refused { .. } => None,
            })
            .collect();
        for obs in observations {
            g.observe(obs);
        }
        g.reuse.clear();
        let still: hashbrown::HashSet<u64> = g.log.iter().filter_map(|r| record_id(r)).collect();
        g.undone = std::mem::take(&mut self.undone);
        for r in std::mem::take(&mut self.log) {
            let mut r = Arc::unwrap_or_clone(r);
            if let MergeRecord::Merged { id, unmerged, .. } = &mut r
                && !still.contains(id)
            {
                *unmerged = true;
                g.undone.push(r);
            }
        }
        *self = g;
    }
}

fn record_id(r: &MergeRecord) -> Option<u64> {
    match r {
        MergeRecord::Merged { id, .. } => Some(*id),
        MergeRecord::Refused { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(kind: &str, value: &str) -> Identifier {
        Identifier::raw(kind, value).unwrap_or_else(|| panic!("test identifier {kind:?}"))
    }

    fn obs(ids: &[Identifier], n: u32) -> Observation {
        Observation {
            identifiers: ids.to_vec(),
            at: DateTime::from_timestamp(1_700_000_000 + i64::from(n), 0).expect("time"),
            cause: Cause {
                call: "identify".into(),
                message_id: format!("m{n}"),
            },
        }
    }

    fn graph() -> IdentityGraph {
        IdentityGraph::new(MergeRules::default())
    }

    #[test]
    fn blocked_and_normalised_values() {
        let r = MergeRules::default();
        for v in [
            "",
            "  ",
            "null",
            "UNDEFINED",
            "0",
            "-1",
            "00000000-0000-0000-0000-000000000000",
            "anonymous",
            "0.0",
        ] {
            assert_eq!(Identifier::new(ANONYMOUS_ID, v, &r), None, "{v:?}");
        }
        assert_eq!(
            Identifier::new(EMAIL, " Ann@Example.COM ", &r),
            Some(id(EMAIL, "ann@example.com"))
        );
        assert_eq!(
            Identifier::new(PHONE, "+1 (555) 010-9999", &r),
            Some(id(PHONE, "+15550109999"))
        );
        assert_eq!(Identifier::new(PHONE, "n/a", &r), None);
        assert_eq!(
            Identifier::new(USER_ID, "u-7", &r),
            Some(id(USER_ID, "u-7"))
        );
    }

    #[test]
    fn rules_are_validated() {
        assert_eq!(MergeRules::default().validate(), Ok(()));
        let mut r = MergeRules::default();
        r.limits.insert(EMAIL.into(), 0);
        assert_eq!(r.validate(), Err(RulesError::ZeroLimit(EMAIL.into())));
        let mut r = MergeRules::default();
        r.priority.push(USER_ID.into());
        assert_eq!(
            r.validate(),
            Err(RulesError::DuplicatePriority(USER_ID.into()))
        );
        let mut r = MergeRules::default();
        r.priority.push("a b".into());
        assert!(matches!(r.validate(), Err(RulesError::BadKind(_))));
    }

    #[test]
    fn identify_merges_anonymous_history_into_the_user() {
        let mut g = graph();
        let anon = g.observe(obs(&[id(ANONYMOUS_ID, "a1")], 1));
        assert!(anon.created);
        let user = g.observe(obs(&[id(USER_ID, "u1")], 2));
        let both = g.observe(obs(&[id(USER_ID, "u1"), id(ANONYMOUS_ID, "a1")], 3));
        // The older person survives; the other redirects to it.
        let (a, u) = (anon.person.expect("a"), user.person.expect("u"));
        assert_eq!(both.person, Some(a.min(u)));
        assert_eq!(both.absorbed, vec![a.max(u)]);
        assert_eq!(g.resolve(a), g.resolve(u));
        assert_eq!(g.person_count(), 1);
        let MergeRecord::Merged {
            via, moved, kept, ..
        } = &*g.log()[0]
        else {
            panic!("a merge record");
        };
        assert_eq!(*via, id(ANONYMOUS_ID, "a1"));
        assert_eq!(*kept, vec![id(ANONYMOUS_ID, "a1")]);
        assert_eq!(*moved, vec![id(USER_ID, "u1")]);
    }

    #[test]
    fn two_users_on_one_device_stay_two_persons() {
        let mut g = graph();
        let ann = g.observe(obs(&[id(USER_ID, "ann"), id(ANONYMOUS_ID, "device")], 1));
        let bob = g.observe(obs(&[id(USER_ID, "bob"), id(ANONYMOUS_ID, "device")], 2));
        assert_ne!(
            ann.person, bob.person,
            "the user id has priority: the event is bob's"
        );
        assert_eq!(g.person_count(), 2);
        assert!(matches!(
            &*g.log()[0],
            MergeRecord::Refused { identifier, rule, .. }
                if *identifier == id(ANONYMOUS_ID, "device") && rule == "limit user_id=1"
        ));
        // An event with only the device id belongs to the first user.
        assert_eq!(
            g.observe(obs(&[id(ANONYMOUS_ID, "device")], 3)).person,
            ann.person
        );
        // Bob goes on using the device: the refusal is logged once, also after the graph
        // is read back from a snapshot, and again once the identifier was erased.
        for n in 4..20 {
            let again = g.observe(obs(&[id(USER_ID, "bob"), id(ANONYMOUS_ID, "device")], n));
            assert_eq!(again.person, bob.person);
        }
        assert_eq!(g.log().len(), 1, "{:?}", g.log());
        let bytes = rmp_serde::to_vec(&g).expect("encode");
        let mut back: IdentityGraph = rmp_serde::from_slice(&bytes).expect("decode");
        back.observe(obs(&[id(USER_ID, "bob"), id(ANONYMOUS_ID, "device")], 21));
        assert_eq!(back.log().len(), 1);

        // A looser limit lets them merge.
        let mut rules = MergeRules::default();
        rules.limits.insert(USER_ID.into(), 2);
        let mut g = IdentityGraph::new(rules);
        g.observe(obs(&[id(USER_ID, "ann"), id(ANONYMOUS_ID, "device")], 1));
        g.observe(obs(&[id(USER_ID, "bob"), id(ANONYMOUS_ID, "device")], 2));
        assert_eq!(g.person_count(), 1);
    }

    #[test]
    fn unmerge_separates_and_keeps_apart() {
        let mut g = graph();
        let seen = vec![
            obs(&[id(ANONYMOUS_ID, "a1"), id(EMAIL, "x@y.z")], 1),
            obs(&[id(USER_ID, "u1")], 2),
            obs(&[id(USER_ID, "u1"), id(EMAIL, "x@y.z")], 3),
            obs(&[id(USER_ID, "u1"), id(PHONE, "+123")], 4),
        ];
        let outcomes: Vec<Outcome> = seen.iter().map(|o| g.observe(o.clone())).collect();
        let (a, u) = (outcomes[0].person, outcomes[1].person);
        assert_eq!(g.person_count(), 1);
        let before_log = g.log().len();
        assert_eq!(
            g.unmerge(1, seen.clone()),
            Ok(vec![a.expect("a"), u.expect("u")])
        );
        assert_eq!(
            g.unmerge(1, seen.clone()),
            Err(UnmergeError::AlreadyUnmerged(1))
        );
        assert_eq!(g.unmerge(9, seen), Err(UnmergeError::NoSuchMerge(9)));
        assert_eq!(
            g.partition(),
            vec![
                vec![id(ANONYMOUS_ID, "a1"), id(EMAIL, "x@y.z")],
                vec![id(PHONE, "+123"), id(USER_ID, "u1")],
            ]
        );
        // The ids are the ones the persons had before the merge.
        assert_eq!(g.person_of(&id(ANONYMOUS_ID, "a1")), a);
        assert_eq!(g.person_of(&id(USER_ID, "u1")), u);
        assert_eq!(g.undone().len(), 1);
        assert!(g.log().len() < before_log + 1);
        // The same link again is refused.
        let again = g.observe(obs(&[id(USER_ID, "u1"), id(ANONYMOUS_ID, "a1")], 5));
        assert_eq!(again.person, u);
        assert!(matches!(
            g.log().last().map(|r| &**r),
            Some(MergeRecord::Refused { rule, .. }) if rule == "split by an un-merge"
        ));
        assert_eq!(g.person_count(), 2);
        let history = g.history_of(a.expect("a"));
        assert!(
            history
                .iter()
                .any(|r| matches!(r, MergeRecord::Merged { unmerged: true, .. }))
        );
    }

    /// Ground truth: `persons` people, each with at most one user id, some anonymous ids
    /// and emails; observations link identifiers of the same person only.
    fn conflict_free() -> impl Strategy<Value = Vec<Vec<Identifier>>> {
        (
            1usize..6,
            prop::collection::vec((0usize..6, 0u8..3, 0u8..4, 0u8..3, 0u8..4), 1..40),
        )
            .prop_map(|(persons, links)| {
                links
                    .into_iter()
                    .map(|(p, k1, v1, k2, v2)| {
                        let p = p % persons;
                        let one = |k: u8, v: u8| match k {
                            0 => id(USER_ID, &format!("u{p}")),
                            1 => id(ANONYMOUS_ID, &format!("a{p}-{v}")),
                            _ => id(EMAIL, &format!("p{p}-{v}@x")),
                        };
                        vec![one(k1, v1), one(k2, v2)]
                    })
                    .collect()
            })
    }

    /// The connected components of the observations.
    fn components(observations: &[Vec<Identifier>]) -> Vec<Vec<Identifier>> {
        let mut sets: Vec<BTreeSet<Identifier>> = Vec::new();
        for o in observations {
            let mut joined: BTreeSet<Identifier> = o.iter().cloned().collect();
            sets.retain(|s| {
                if s.iter().any(|i| joined.contains(i)) {
                    joined.extend(s.iter().cloned());
                    false
                } else {
                    true
                }
            });
            sets.push(joined);
        }
        let mut out: Vec<Vec<Identifier>> =
            sets.into_iter().map(|s| s.into_iter().collect()).collect();
        out.sort();
        out
    }

    fn build(observations: &[Vec<Identifier>], order: &[usize]) -> IdentityGraph {
        let mut g = graph();
        for (n, &i) in order.iter().enumerate() {
            g.observe(obs(&observations[i], n as u32));
        }
        g
    }

    fn shuffled(n: usize, seed: u64) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        let mut x = seed | 1;
        for i in (1..n).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
        v
    }

    /// Random observations over a few users and devices, with conflicts.
    fn any_observations() -> impl Strategy<Value = Vec<Vec<Identifier>>> {
        prop::collection::vec(
            prop::collection::vec(
                (0u8..3, 0u8..5).prop_map(|(k, v)| match k {
                    0 => id(USER_ID, &format!("u{v}")),
                    1 => id(ANONYMOUS_ID, &format!("a{v}")),
                    _ => id(EMAIL, &format!("e{v}@x")),
                }),
                1..4,
            ),
            0..40,
        )
    }

    /// The form snapshots and the API had when an identifier was two strings.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct TwoStrings {
        kind: String,
        value: String,
    }

    #[test]
    fn an_identifier_is_written_and_read_as_its_two_strings() {
        let i = id(EMAIL, "a-rather-long-address@example.com");
        assert_eq!(
            (i.kind(), i.value()),
            (EMAIL, "a-rather-long-address@example.com")
        );
        let old = TwoStrings {
            kind: EMAIL.into(),
            value: "a-rather-long-address@example.com".into(),
        };
        let packed = rmp_serde::to_vec(&i).expect("encode");
        assert_eq!(packed, rmp_serde::to_vec(&old).expect("encode"));
        assert_eq!(
            rmp_serde::from_slice::<Identifier>(&packed).expect("decode"),
            i
        );
        let json = serde_json::to_value(&i).expect("json");
        assert_eq!(json, serde_json::to_value(&old).expect("json"));
        assert_eq!(serde_json::from_value::<Identifier>(json).expect("json"), i);
        // A value may hold anything, a kind no NUL.
        assert_eq!(id("custom", "a\0b").value(), "a\0b");
        assert_eq!(Identifier::raw("bad\0kind", "x"), None);
        assert_eq!(
            Identifier::new("bad\0kind", "x", &MergeRules::default()),
            None
        );
        let bad = TwoStrings {
            kind: "bad\0kind".into(),
            value: "x".into(),
        };
        assert!(
            serde_json::from_value::<Identifier>(serde_json::to_value(&bad).expect("json"))
                .is_err()
        );
    }

    proptest! {
        /// Identifiers order as their (kind, value) pairs, as they did when they were one.
        #[test]
        fn identifiers_order_as_their_pairs(
            a in ("[a-z_]{0,3}", "[a-z\\x00-\\x02]{0,3}"),
            b in ("[a-z_]{0,3}", "[a-z\\x00-\\x02]{0,3}"),
        ) {
            let (x, y) = (id(&a.0, &a.1), id(&b.0, &b.1));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
        }

        #[test]
        fn without_conflicts_the_order_does_not_matter(obs in conflict_free(), seed in any::<u64>()) {
            let forward: Vec<usize> = (0..obs.len()).collect();
            let a = build(&obs, &forward);
            let b = build(&obs, &shuffled(obs.len(), seed));
            prop_assert_eq!(a.partition(), components(&obs));
            prop_assert_eq!(b.partition(), components(&obs));
        }

        #[test]
        fn replays_agree_and_limits_always_hold(obs in any_observations()) {
            let order: Vec<usize> = (0..obs.len()).collect();
            let a = build(&obs, &order);
            let b = build(&obs, &order);
            let ids = |g: &IdentityGraph| {
                let mut v: Vec<(PersonId, Vec<Identifier>)> =
                    g.persons().map(|(p, s)| (p, s.iter().cloned().collect())).collect();
                v.sort();
                v
            };
            prop_assert_eq!(ids(&a), ids(&b));
            prop_assert_eq!(a.log(), b.log());
            for (_, set) in a.persons() {
                prop_assert!(set.iter().filter(|i| i.kind() == USER_ID).count() <= 1);
            }
        }

        /// Two persons built from any observations, one observation that merges them, and
        /// the un-merge of that merge: the persons are as before the merge, with their ids.
        #[test]
        fn unmerge_is_the_inverse_of_merge(seen in conflict_free(), left in 0usize..40, right in 0usize..40) {
            let order: Vec<usize> = (0..seen.len()).collect();
            let mut g = build(&seen, &order);
            let before: Vec<(PersonId, IdSet)> = {
                let mut v: Vec<_> = g.persons().map(|(p, s)| (p, s.clone())).collect();
                v.sort();
                v
            };
            let people: Vec<&(PersonId, IdSet)> = before.iter().collect();
            let (l, r) = (people[left % people.len()], people[right % people.len()]);
            let has_user = |s: &IdSet| s.iter().any(|i| i.kind() == USER_ID);
            prop_assume!(l.0 != r.0 && !(has_user(&l.1) && has_user(&r.1)));
            // Link a non-user identifier of one with any identifier of the other (two
            // persons with a user id each would be refused, not merged).
            let pick = |s: &IdSet| s.iter().find(|i| i.kind() != USER_ID).cloned();
            let (Some(a), Some(b)) = (pick(&l.1), r.1.iter().next().cloned()) else {
                return Ok(());
            };
            let link = obs(&[a, b], 999);
            let out = g.observe(link.clone());
            prop_assert_eq!(out.absorbed.len(), 1);
            let merge = g.log().iter().rev().find_map(|r| match &**r {
                MergeRecord::Merged { id, .. } => Some(*id),
                MergeRecord::Refused { .. } => None,
            }).expect("a merge");
            let all = order.iter().enumerate().map(|(n, &i)| obs(&seen[i], n as u32)).chain([link]);
            g.unmerge(merge, all).expect("unmerge");
            let mut after: Vec<_> = g.persons().map(|(p, s)| (p, s.clone())).collect();
            after.sort();
            prop_assert_eq!(after, before);
        }
    }
}
