//! The model registry: every model a tenant trained, with its training window, metrics,
//! features and parameters, and which version of each kind is in use.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;

use crate::Error;

/// One trained model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecord {
    /// `clv`, `churn`, `forecast`, `recommendations`, `send_time`.
    pub kind: String,
    /// 1, 2, … per tenant and kind.
    pub version: u32,
    pub trained_at: DateTime<Utc>,
    pub window_from: DateTime<Utc>,
    pub window_to: DateTime<Utc>,
    /// JSON: the holdout metrics it was judged by, and what else the training measured.
    pub metrics: String,
    /// JSON: the features it was trained on.
    pub features: String,
    /// JSON: its parameters (no personal data).
    pub params: String,
    /// In use: at most one version per kind.
    pub active: bool,
    /// Why it is (or is not) in use.
    pub note: String,
}

#[async_trait]
pub trait IntelStore: Send + Sync {
    /// Stores a new version (its `version` is set to the next one and returned); when it
    /// is `active`, the kind's other versions stop being active, in the same transaction.
    async fn add_model(&self, tenant: TenantId, model: &ModelRecord) -> Result<u32, Error>;
    /// Every version of `kind` (or of every kind), newest first.
    async fn models(&self, tenant: TenantId, kind: Option<&str>)
    -> Result<Vec<ModelRecord>, Error>;
    /// Makes `version` of `kind` the one in use; `false` if there is no such version.
    async fn activate_model(
        &self,
        tenant: TenantId,
        kind: &str,
        version: u32,
        note: &str,
    ) -> Result<bool, Error>;
}
