//! Livora's column store: events as per-tenant columns that the analytics kernels scan.
//!
//! - [`Persons`] gives every `userId` / `anonymousId` a dense `u32` and records identity
//!   merges (`identify`, `alias`) as a redirect array applied at query time.
//! - [`Table`] holds a tenant's events as columns (person, time, event name, one column per
//!   property key and type), with [`Dictionary`]-encoded strings.
//! - [`ColumnStore`] is a named consumer of the event log (`columnar`) that appends every
//!   event to its tenant's table.
//!
//! This is the hot, in-memory part of the design in ARCHITECTURE.md; sealed, sorted Parquet
//! segments come next (issue 3). Until then the store is rebuilt from the log on start.

mod dict;
mod persons;
mod store;
mod table;

pub use dict::Dictionary;
pub use persons::{PersonId, Persons};
pub use store::ColumnStore;
pub use table::{NumColumn, StrColumn, Table};
