//! Livora's query kernels. Only kernels here: no HTTP, no storage.
//!
//! - [`funnel`]: conversion funnels with ClickHouse `windowFunnel` semantics (ordered), a
//!   strict mode (steps are consecutive events) and an any-order mode.
//! - [`retention`]: cohorts by first (or any) start event, return events per later period.
//! - [`trends`]: a metric per period, broken down by a property, against the previous range.
//! - [`paths`]: the most common next (or previous) events around an event, as sankey edges.
//! - [`activity`]: stickiness (in how many periods persons were active) and lifecycle (new,
//!   returning, resurrecting, dormant persons per period).
//! - [`commerce`]: revenue, orders, average order value, conversion, product performance,
//!   historic lifetime value and purchase frequency from Segment's e-commerce events.
//! - [`period`]: hours, days, ISO weeks and months in a tenant's time zone, DST-correct.
//!
//! Queries are serde types ([`funnel::FunnelQuery`]) so the same JSON serves the HTTP API and
//! Rust callers. Every kernel is compared with a plain reference implementation in property
//! tests.

pub mod activity;
pub mod commerce;
mod error;
mod estimate;
pub mod funnel;
mod grouped;
mod parallel;
pub mod paths;
pub mod period;
mod person_props;
pub mod retention;
pub mod trends;

pub use error::Error;
use livora_columnar::Table;
use serde::{Deserialize, Serialize};

/// A query, as posted to `/api/v1/query`: `{"kind": "funnel", …}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Query {
    Funnel(funnel::FunnelQuery),
    Retention(retention::RetentionQuery),
    Trends(trends::TrendsQuery),
    Paths(paths::PathsQuery),
    Stickiness(activity::StickinessQuery),
    Lifecycle(activity::LifecycleQuery),
    Commerce(commerce::CommerceQuery),
}

impl Query {
    /// Whether the answer names persons (their ids): personal data, not an aggregate.
    pub fn lists_persons(&self) -> bool {
        matches!(self, Query::Funnel(q) if q.persons.is_some())
    }
}

/// A query's answer, tagged like the query.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueryResult {
    Funnel(funnel::FunnelResult),
    Retention(retention::RetentionResult),
    Trends(trends::TrendsResult),
    Paths(paths::PathsResult),
    Stickiness(activity::StickinessResult),
    Lifecycle(activity::LifecycleResult),
    Commerce(Box<commerce::CommerceResult>),
}

/// Runs `query` over a tenant's table, applying its identity merges; calendar periods are in
/// `time_zone` (the tenant's).
pub fn run(table: &Table, query: &Query, time_zone: chrono_tz::Tz) -> Result<QueryResult, Error> {
    let redirects = table.persons.redirects();
    match query {
        Query::Funnel(q) => funnel::funnel(table, &redirects, q).map(QueryResult::Funnel),
        Query::Retention(q) => {
            retention::retention(table, &redirects, q, time_zone).map(QueryResult::Retention)
        }
        Query::Trends(q) => {
            trends::trends(table, &redirects, q, time_zone).map(QueryResult::Trends)
        }
        Query::Paths(q) => paths::paths(table, &redirects, q).map(QueryResult::Paths),
        Query::Stickiness(q) => {
            activity::stickiness(table, &redirects, q, time_zone).map(QueryResult::Stickiness)
        }
        Query::Lifecycle(q) => {
            activity::lifecycle(table, &redirects, q, time_zone).map(QueryResult::Lifecycle)
        }
        Query::Commerce(q) => commerce::commerce(table, &redirects, q, time_zone)
            .map(|r| QueryResult::Commerce(Box::new(r))),
    }
}
