//! What the privacy features keep in the metadata store: wrapped encryption keys
//! ([`crate::crypto`]) and consent records.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::crypto::NewSubjectKey;

/// A person's answer to one purpose (`email_marketing`, `sms`, `whatsapp`, `analytics` …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    /// `u:<userId>` or `a:<anonymousId>`.
    pub subject: String,
    pub purpose: String,
    pub granted: bool,
    /// Where the answer was given: `signup_form`, `sms_reply`, `support_call` …
    pub source: String,
    pub recorded_at: DateTime<Utc>,
    /// Who recorded it (the audit label of the caller).
    pub recorded_by: String,
}

/// Keys and consents.
///
/// # Contract
/// - [`PrivacyStore::insert_subject_keys`] never replaces an existing key.
/// - [`PrivacyStore::delete_subject_keys`] leaves no copy of the deleted keys in the database
///   files (secure delete, WAL checkpointed).
#[async_trait]
pub trait PrivacyStore: Send + Sync + 'static {
    /// `(version, wrapped key)` of every tenant key, oldest first.
    async fn tenant_keys(&self, tenant: TenantId) -> Result<Vec<(u32, Vec<u8>)>, Error>;
    /// Adds a version (ignored if that version exists: the first writer wins).
    async fn add_tenant_key(
        &self,
        tenant: TenantId,
        version: u32,
        wrapped: &[u8],
    ) -> Result<(), Error>;
    async fn replace_tenant_key(
        &self,
        tenant: TenantId,
        version: u32,
        wrapped: &[u8],
    ) -> Result<(), Error>;
    /// `(kid, tenant key version, wrapped key)` of the keys among `kids` that exist.
    async fn subject_keys(
        &self,
        tenant: TenantId,
        kids: &[String],
    ) -> Result<Vec<(String, u32, Vec<u8>)>, Error>;
    /// Stores keys in one transaction; returns the indices of those not stored because the
    /// subject already had a key.
    async fn insert_subject_keys(&self, keys: &[NewSubjectKey]) -> Result<Vec<usize>, Error>;
    /// Deletes keys for good; returns how many existed.
    async fn delete_subject_keys(&self, tenant: TenantId, kids: &[String]) -> Result<u64, Error>;
    async fn add_consent(&self, tenant: TenantId, consent: &Consent) -> Result<(), Error>;
    /// Every consent record of `subjects`, oldest first.
    async fn consents(&self, tenant: TenantId, subjects: &[String]) -> Result<Vec<Consent>, Error>;
    async fn delete_consents(&self, tenant: TenantId, subjects: &[String]) -> Result<u64, Error>;
}
