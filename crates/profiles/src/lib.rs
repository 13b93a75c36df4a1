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
pub mod computed;
pub mod identity;
pub mod profile;
pub mod segments;
pub mod service;
pub mod snapshot;
pub mod traits;

pub use identity::{Identifier, IdentityGraph, MergeRules, PersonId};
pub use profile::{Profile, Profiles};
