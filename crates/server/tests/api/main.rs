//! End-to-end tests of the HTTP API over real sockets (`spawn_app` on port 0).

mod access;
mod contract;
mod contract_tests;
mod dashboard;
mod helpers;
mod ingest;
mod intel;
mod internal_ids;
mod limits;
mod metrics;
mod outbox;
mod personal;
mod profiles;
mod query;
mod read;
mod routes;
mod tls;
mod workflows;
