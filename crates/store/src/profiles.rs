//! What the profiles engine keeps in the metadata store: segment and smart-tag definitions,
//! un-merges and merge-rule changes (the only profile state that is not a function of the
//! event log).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use serde::{Deserialize, Serialize};

use crate::Error;

/// A saved segment or smart tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// The segment id; a tag's name.
    pub id: String,
    pub tag: bool,
    pub name: String,
    pub description: String,
    /// The rule as JSON text: `{"condition": …}`, or `{"manual": …}` for a list of
    /// identifiers (encrypted when encryption at rest is on).
    pub rule: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An un-merge, replayed at `log_offset` when the log is read again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unmerge {
    pub tenant: TenantId,
    pub merge_id: u64,
    pub log_offset: u64,
}

/// A tenant's identity merge rules from `log_offset` on (they apply to what comes after).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesChange {
    pub tenant: TenantId,
    pub log_offset: u64,
    /// The rules as JSON text.
    pub rules: String,
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
}

/// Segment definitions, un-merges and merge-rule changes.
#[async_trait]
pub trait ProfileStore: Send + Sync + 'static {
    /// Adds or replaces (by tenant, tag flag and id); `created_*` of a replaced row stay.
    async fn save_segment(&self, tenant: TenantId, segment: &SegmentRecord) -> Result<(), Error>;
    /// A tenant's segments and tags, by id.
    async fn segments(&self, tenant: TenantId) -> Result<Vec<SegmentRecord>, Error>;
    /// Every tenant's segments (loaded at startup).
    async fn all_segments(&self) -> Result<Vec<(TenantId, SegmentRecord)>, Error>;
    async fn delete_segment(&self, tenant: TenantId, id: &str, tag: bool) -> Result<bool, Error>;
    /// Records an un-merge; a second one of the same merge is ignored.
    async fn add_unmerge(&self, u: &Unmerge, created_by: &str) -> Result<(), Error>;
    /// Every un-merge, in log order.
    async fn unmerges(&self) -> Result<Vec<Unmerge>, Error>;
    /// Records a change of a tenant's merge rules.
    async fn add_rules_change(&self, change: &RulesChange) -> Result<(), Error>;
    /// Every tenant's merge-rule changes, in log order (oldest first).
    async fn rules_changes(&self) -> Result<Vec<RulesChange>, Error>;
}
