//! Livora's metadata store: tenants (workspaces) and their API keys.
//!
//! [`MetadataStore`] is the seam: [`SqliteStore`] is the embedded default (WAL mode, one file in
//! the data directory); a PostgreSQL backend will implement the same trait. API keys are random
//! 192-bit tokens shown once at creation and stored only as SHA-256 hashes ([`keys`]).
//! [`audit`] is the hash-chained audit log of administrative actions.

pub mod audit;
mod error;
pub mod keys;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::{Currency, TenantId};
use serde::Serialize;

pub use error::Error;
pub use keys::{KeyKind, NewKey};
pub use sqlite::SqliteStore;

/// A tenant (workspace).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// IANA time zone name used for calendar periods in reports, e.g. `Europe/Paris`.
    pub time_zone: String,
    pub currency: Currency,
    pub created_at: DateTime<Utc>,
}

/// An API key as stored: never the secret itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    /// Public identifier, e.g. `key_01J…`; used to list and revoke.
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: KeyKind,
    /// The first characters of the key, to recognise it in a list.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a tenant is created with.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub time_zone: String,
    pub currency: Currency,
}

/// The metadata store.
///
/// # Contract
/// - Every method is scoped: nothing returns rows of a tenant other than the one asked for.
/// - [`MetadataStore::find_key`] returns only keys that are not revoked.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    async fn create_tenant(&self, new: NewTenant) -> Result<Tenant, Error>;
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, Error>;
    async fn tenants(&self) -> Result<Vec<Tenant>, Error>;
    /// Creates a key; the returned [`NewKey`] holds the only copy of the secret.
    async fn create_key(&self, tenant: TenantId, kind: KeyKind) -> Result<NewKey, Error>;
    async fn keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, Error>;
    /// Revokes a key by id; `Ok(false)` if no such key.
    async fn revoke_key(&self, key_id: &str) -> Result<bool, Error>;
    /// Looks up an active key by its secret text.
    async fn find_key(&self, secret: &str) -> Result<Option<ApiKey>, Error>;
}
