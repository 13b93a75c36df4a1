//! Custom dashboards: a staff member's widgets (saved insights: a title, a chart kind and
//! its query) and their layout on the grid, private or shared within the tenant.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    pub id: String,
    pub name: String,
    /// Who made it: a user id, or `key:<id>` for an API key.
    pub owner: String,
    /// Every member of the tenant sees it (only its owner changes it).
    pub shared: bool,
    /// JSON: the widgets, each `{id, title, kind, query, …}`.
    pub widgets: String,
    /// JSON: where each widget is on the grid, `[{i, x, y, w, h}]`.
    pub layout: String,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait DashboardStore: Send + Sync {
    /// Creates or replaces `d` (by tenant and id).
    async fn put_dashboard(&self, tenant: TenantId, d: &Dashboard) -> Result<(), Error>;
    async fn dashboard(&self, tenant: TenantId, id: &str) -> Result<Option<Dashboard>, Error>;
    /// The ones `owner` made and the shared ones, newest change first.
    async fn dashboards(&self, tenant: TenantId, owner: &str) -> Result<Vec<Dashboard>, Error>;
    /// `false` when there was none.
    async fn delete_dashboard(&self, tenant: TenantId, id: &str) -> Result<bool, Error>;
}
