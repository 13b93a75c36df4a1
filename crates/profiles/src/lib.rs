//! Livora's customer profiles: who each customer is across devices and channels
//! ([`identity`]), what they told us ([`traits`]) and did ([`computed`]), per tenant
//! ([`profile::Profiles`]).
//!
//! Where identifiers come from: `userId`, `anonymousId`; `previousId` of an `alias` (as an
//! anonymous id); `email` and `phone` in an `identify`'s traits or any call's
//! `context.traits`; PostHog's `$identify` (`distinct_id`, `$anon_distinct_id`) and
//! `$create_alias` (`alias`) events; Segment's `context.externalIds` (`{id, type}`; custom
//! types are custom kinds).
//!
//! Everything here is a function of the events in log order (and of un-merges), so a
//! consumer can rebuild it by replaying the log; [`snapshot`]s spare a restart the replay.

pub mod behaviour;
pub mod compare;
#[cfg(test)]
mod compat_tests;
pub mod computed;
mod heap;
pub mod identity;
mod owners;
pub mod people;
pub mod profile;
pub mod segments;
pub mod service;
pub mod snapshot;
pub mod sorted_map;
pub mod traits;

pub use identity::{Identifier, IdentityGraph, MergeRules, PersonId};

/// A table that grows with the number of persons (profiles, identifiers, memberships,
/// timers). It resizes incrementally ([`griddle`]): a plain hash table doubles all at once,
/// and at 100,000 persons that one insert stalls the service for hundreds of milliseconds,
/// far beyond the 50 ms a membership change may take.
pub type Table<K, V> = griddle::HashMap<K, V>;

/// A set of persons that grows with the tenant (a segment's members); see [`Table`].
pub type PersonSet = griddle::HashSet<PersonId>;
pub use profile::{Profile, Profiles};
