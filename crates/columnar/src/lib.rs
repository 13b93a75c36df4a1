//! Livora's column store: events as per-tenant columns that the analytics kernels scan.
//!
//! - [`Persons`] gives every `userId` / `anonymousId` a dense `u32` and records identity
//!   merges (`identify`, `alias`) as a redirect array applied at query time.
//! - [`Table`] holds a tenant's events as columns (person, time, event name, one column per
//!   property key and type), with [`Dictionary`]-encoded strings.
//! - [`Column`] is the column type: on the heap while small, in a memory-mapped scratch file
//!   once large ([`Spill`]), so history lives in the page cache rather than on the heap.
//! - [`Coded`] is the property column type: a [`Sparse`] column (the values rows have, a
//!   presence bitmap and a rank directory, so a property most events lack costs them about
//!   1/7 byte each) of 1- or 2-byte codes into the column's distinct values while it has few.
//! - [`ByPerson`] is a person-ordered projection of the sealed rows, for per-person kernels.
//! - [`ColumnStore`] is a named consumer of the event log (`columnar`) that appends every
//!   event to its tenant's table.
//!
//!   Hot rows are sealed into immutable Parquet segments ([`storage`]), sorted by (person,
//!   time), one file per tenant and UTC day, in the data directory or in object storage.

pub mod by_person;
pub mod coded;
pub mod column;
mod dict;
mod error;
pub mod format;
pub mod image;
mod persons;
pub mod segment;
pub mod sparse;
pub mod storage;
mod store;
mod table;

pub use by_person::ByPerson;
pub use coded::Coded;
pub use column::{Column, Spill};
pub use dict::Dictionary;
pub use error::Error;
pub use persons::{PersonId, Persons};
pub use segment::export_parquet;
pub use sparse::Sparse;
pub use storage::SegmentStore;
pub use store::{CONSUMER, ColumnOptions, ColumnStore, Reservation};
pub use table::{Chunk, Lines, NameUse, NumColumn, StrColumn, Table};
