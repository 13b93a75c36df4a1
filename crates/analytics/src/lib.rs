//! Livora's query kernels. Only kernels here: no HTTP, no storage.
//!
//! - [`funnel`]: conversion funnels with ClickHouse `windowFunnel` semantics (ordered), a
//!   strict mode (steps are consecutive events) and an any-order mode.
//!
//! Queries are serde types ([`funnel::FunnelQuery`]) so the same JSON serves the HTTP API and
//! Rust callers. Every kernel is compared with a plain reference implementation in property
//! tests.

mod error;
pub mod funnel;

pub use error::Error;
