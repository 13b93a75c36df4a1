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
use livora_columnar::Table;
use serde::{Deserialize, Serialize};

/// A query, as posted to `/api/v1/query`: `{"kind": "funnel", …}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Query {
    Funnel(funnel::FunnelQuery),
}

/// A query's answer, tagged like the query.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueryResult {
    Funnel(funnel::FunnelResult),
}

/// Runs `query` over a tenant's table, applying its identity merges.
pub fn run(table: &Table, query: &Query) -> Result<QueryResult, Error> {
    let redirects = table.persons.redirects();
    match query {
        Query::Funnel(q) => funnel::funnel(table, &redirects, q).map(QueryResult::Funnel),
    }
}
