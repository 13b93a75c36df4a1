//! Livora's metadata store: tenants (workspaces), their API keys, and staff accounts.
//!
//! [`MetadataStore`] is the seam: [`SqliteStore`] is the embedded default (WAL mode, one file in
//! the data directory); a PostgreSQL backend will implement the same trait. API keys are random
//! 192-bit tokens shown once at creation and stored only as SHA-256 hashes ([`keys`]).
//! [`audit`] is the hash-chained audit log of administrative actions; [`access`] the roles,
//! key scopes and permission matrix; [`accounts`] staff users, sessions and one-time tokens;
//! [`profiles`] segment definitions and un-merges; [`automation`] workflows, journeys and the
//! outbox.

pub mod access;
pub mod accounts;
pub mod audit;
pub mod automation;
pub mod crypto;
pub mod csv_cell;
pub mod dashboards;
mod error;
pub mod intel;
pub mod keys;
#[cfg(feature = "aws-kms")]
pub mod kms_aws;
#[cfg(feature = "azure-kms")]
pub mod kms_azure;
#[cfg(feature = "gcp-kms")]
pub mod kms_gcp;
#[cfg(any(feature = "gcp-kms", feature = "azure-kms"))]
mod kms_http;
pub mod privacy;
pub mod profiles;
mod sqlite;
mod sqlite_accounts;
mod sqlite_automation;
mod sqlite_dashboards;
mod sqlite_intel;
mod sqlite_privacy;
mod sqlite_profiles;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::{Currency, TenantId};
use serde::{Deserialize, Serialize};

pub use access::{Permission, Role, Scope};
pub use accounts::AccountStore;
pub use error::Error;
pub use keys::{KeyKind, NewKey};
pub use privacy::{Consent, PrivacyStore};
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
    /// Events older than this many days are removed (`None`: kept for ever).
    pub retention_days: Option<u32>,
    /// The tenant's own delivery policy (`None`: the node's, from `[automation]`).
    pub delivery_policy: Option<DeliveryPolicy>,
}

/// A tenant's delivery policy: what the outbox checks before sending a marketing message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// At most this many marketing messages per person and channel a day (`None`: no cap).
    pub frequency_cap: Option<u32>,
    /// Quiet hours in the person's time zone (`None`: none).
    pub quiet_hours: Option<QuietHours>,
    /// Channels (`email`, `sms`, `push`) whose marketing messages need the person's opt-in
    /// (GDPR-style); elsewhere marketing is allowed until the person says no. WhatsApp always
    /// needs one.
    #[serde(default)]
    pub opt_in: Vec<String>,
}

/// Quiet hours, local start hour and end hour (`21`, `8`: from 21:00 to 08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub start: u32,
    pub end: u32,
}

/// An API key as stored: never the secret itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    /// Public identifier, e.g. `key_01J…`; used to list and revoke.
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: KeyKind,
    /// What the key may do: `[ingest]` for a write key; `read` and/or `admin` for a secret key.
    pub scopes: Vec<Scope>,
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
pub trait MetadataStore:
    AccountStore
    + PrivacyStore
    + profiles::ProfileStore
    + automation::AutomationStore
    + intel::IntelStore
    + dashboards::DashboardStore
{
    async fn create_tenant(&self, new: NewTenant) -> Result<Tenant, Error>;
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, Error>;
    async fn tenants(&self) -> Result<Vec<Tenant>, Error>;
    /// Sets the tenant's retention; returns the previous one.
    async fn set_retention_days(
        &self,
        tenant: TenantId,
        days: Option<u32>,
    ) -> Result<Option<u32>, Error>;
    /// Sets the tenant's delivery policy (`None`: the node's); returns the previous one.
    async fn set_delivery_policy(
        &self,
        tenant: TenantId,
        policy: Option<DeliveryPolicy>,
    ) -> Result<Option<DeliveryPolicy>, Error>;
    /// Creates a key with the default scopes of its kind (`write`: ingest; `secret`: read).
    async fn create_key(&self, tenant: TenantId, kind: KeyKind) -> Result<NewKey, Error> {
        let scopes = match kind {
            KeyKind::Write => [Scope::Ingest],
            KeyKind::Secret => [Scope::Read],
        };
        self.create_key_scoped(tenant, &scopes).await
    }
    /// Creates a key with `scopes` (ingest alone makes a write key, anything else a secret
    /// key); the returned [`NewKey`] holds the only copy of the secret.
    async fn create_key_scoped(&self, tenant: TenantId, scopes: &[Scope]) -> Result<NewKey, Error>;
    async fn keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, Error>;
    /// Revokes a key by id, within `tenant` when given; `Ok(false)` if no such key there.
    async fn revoke_key(&self, tenant: Option<TenantId>, key_id: &str) -> Result<bool, Error>;
    /// Looks up an active key by its secret text.
    async fn find_key(&self, secret: &str) -> Result<Option<ApiKey>, Error>;
}
