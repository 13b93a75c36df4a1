//! Livora's automation engine: workflows that react to what customers do and to the
//! passage of time, and the journeys persons take through them.
//!
//! - [`runtime`]: the deterministic state machine (triggers, steps, goals, re-entry, the
//!   holdout group), with time given from outside so tests never sleep.
//! - [`people`]: what the runtime needs from the profiles (identifiers, traits, computed
//!   attributes, segments, tags).
//! - [`backtest`]: a workflow run over past events, reporting what it would have sent.
//! - [`template`]: message templates (MiniJinja).
//! - [`tracking`]: opens, clicks and unsubscribe links; addresses kept as keyed hashes.
//!
//! It decides *whether* and *what* to send; `livora-channels` knows each provider's wire
//! format.

pub mod backtest;
pub mod outbox;
pub mod people;
pub mod policy;
pub mod profiles;
pub mod runtime;
pub mod service;
pub mod template;
pub mod tracking;

pub use people::{Directory, People, Person};
pub use runtime::{Changes, Effect, Journey, Message, Outcome, Runtime, Version};
