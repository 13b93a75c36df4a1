//! Livora's vocabulary: the types every layer shares, and nothing that does I/O.
//!
//! - [`TenantId`] names a workspace; every event, key and row carries one.
//! - [`Event`] is the one normalised shape of a Segment-style message (`track`, `identify`,
//!   `page`, `screen`, `group`, `alias`) as it is stored in the event log.
//! - [`ingest`] turns raw Segment HTTP Tracking API bodies into [`Event`]s: validation,
//!   `messageId` generation, clock-skew correction, future-timestamp clamping and the merge of
//!   batch-level `context` and `integrations` into each item. Errors are [`ItemError`]s with a
//!   machine-readable [`ItemErrorCode`].
//! - [`clock`]: where services get the time ([`clock::ManualClock`] for tests).
//! - [`PersonKey`] is the key a person is known by outside the profiles (`u:…`, `a:…`).

pub mod clock;
mod error;
mod event;
pub mod ingest;
mod person_key;
pub mod segment;
mod tenant;
pub mod time;
pub mod workflow;

pub use error::{ItemError, ItemErrorCode};

/// Event names that only Livora writes (a person entering or leaving a segment or tag);
/// the gateway refuses them from clients, so automations can trust them.
pub const RESERVED_EVENTS: [&str; 4] = [
    "Segment Entered",
    "Segment Exited",
    "Tag Added",
    "Tag Removed",
];

/// The start of every `messageId` Livora gives the events it writes itself (segment and tag
/// announcements, workflow traits, engagement). The gateway refuses it from clients, so a
/// client that predicts such an id cannot make Livora's own event a duplicate (the log
/// deduplicates by id) and suppress it.
pub const INTERNAL_ID_PREFIX: &str = "lv-";

/// `id` in Livora's own namespace ([`INTERNAL_ID_PREFIX`]): unchanged if it is already.
pub fn internal_id(id: &str) -> String {
    if id.starts_with(INTERNAL_ID_PREFIX) {
        id.to_owned()
    } else {
        format!("{INTERNAL_ID_PREFIX}{id}")
    }
}

pub use event::{Event, EventType};
pub use person_key::{KeyKind, PersonKey};
pub use tenant::{Currency, TenantId};
