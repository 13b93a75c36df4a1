//! What the automation engine keeps in the metadata store: workflows and their versions,
//! journeys (with their timers), the outbox of messages, and the log offset all of it
//! reflects.
//!
//! The store holds rows; the automation crate gives them meaning. A journey's and a
//! message's full state is JSON text (`state`, `message`); the columns beside it are what
//! the store is asked by (tenant, person, status, due time).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use serde::{Deserialize, Serialize};

use crate::Error;

/// A workflow: its name, and the version new journeys start on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The version new journeys start on; `None`: paused (running journeys go on).
    pub enabled_version: Option<u32>,
    /// The newest version.
    pub latest_version: u32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One version of a workflow's definition (JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowVersion {
    pub version: u32,
    pub definition: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A journey as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyRow {
    pub id: String,
    pub tenant: TenantId,
    pub workflow: String,
    pub person: String,
    pub active: bool,
    pub entered_at: DateTime<Utc>,
    /// The journey itself, as JSON.
    pub state: String,
}

/// Where a message in the outbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Waiting to be sent at `due_at` (the first try, a retry, or the end of quiet hours).
    Pending,
    /// Accepted by a provider.
    Sent,
    /// Not sent, by policy (no consent, frequency cap): final.
    Blocked,
    /// Given up on after retries and fail-over: in the dead letters.
    Dead,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Blocked => "blocked",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Blocked, Self::Dead]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A message in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// The idempotency key (journey and step).
    pub key: String,
    pub tenant: TenantId,
    pub workflow: String,
    pub person: String,
    pub channel: String,
    /// `marketing` or `transactional`.
    pub category: String,
    pub status: OutboxStatus,
    /// Tries made so far.
    pub attempts: u32,
    /// When to try (next).
    pub due_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why it was held, blocked or given up on; the last error of a retry.
    pub reason: Option<String>,
    /// The provider that accepted it, and its id for the message.
    pub provider: Option<String>,
    pub provider_id: Option<String>,
    /// The message itself, as JSON.
    pub message: String,
    /// Every attempt that did not get through, oldest first (a dead letter keeps them all).
    pub errors: Vec<AttemptError>,
}

/// One attempt of a message that did not get through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    /// Which attempt (1 for the first call to a provider).
    pub attempt: u32,
    /// When it ended (or, for one cut short by a stop of the node, when it started).
    pub at: DateTime<Utc>,
    /// The provider called.
    pub provider: String,
    /// Whether it was the channel's secondary provider.
    #[serde(default)]
    pub secondary: bool,
    /// Whether trying the same provider again could not help (a 4xx, a bad address).
    #[serde(default)]
    pub permanent: bool,
    pub error: String,
}

/// Which of a tenant's messages to list (newest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageQuery {
    pub status: Option<OutboxStatus>,
    pub workflow: Option<String>,
    /// Only messages after this one in the listing's order (`created_at`, `key`): the
    /// cursor of the page before.
    pub after: Option<(DateTime<Utc>, String)>,
}

/// A tenant's configuration of one channel (providers and their credentials), as stored:
/// sealed with the tenant's key when encryption at rest is on.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRecord {
    /// `email`, `sms`, `whatsapp`, `push` or `webhook`.
    pub channel: String,
    pub config: Vec<u8>,
    /// Whether `config` is sealed (else plain JSON).
    pub sealed: bool,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// Counts of a workflow's journeys and messages (its measurement).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowCounts {
    /// `(active, outcome, holdout, journeys)`; `outcome` is `None` while active.
    pub journeys: Vec<(bool, Option<String>, bool, u64)>,
    /// `(version, step position, journeys that ran it)`.
    pub entered: Vec<(u32, u32, u64)>,
    /// `(version, step position, journeys that ran it and converted)`.
    pub converted: Vec<(u32, u32, u64)>,
    /// `(version, step position, active journeys waiting there)`.
    pub waiting: Vec<(u32, u32, u64)>,
    /// `(step id, outbox status, messages)`.
    pub messages: Vec<(String, String, u64)>,
    /// `(step id, engagement kind, messages)`: messages delivered, opened, clicked …
    /// at least once.
    pub engagement: Vec<(String, String, u64)>,
}

/// What happened to a message after a provider took it, as receipts, the tracking pixel,
/// redirect links and unsubscribe links report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engagement {
    /// The provider reports it reached the device or mailbox.
    Delivered,
    /// The provider reports it could not be delivered after all.
    Undelivered,
    Opened,
    Clicked,
    Unsubscribed,
}

impl Engagement {
    pub const ALL: [Self; 5] = [
        Self::Delivered,
        Self::Undelivered,
        Self::Opened,
        Self::Clicked,
        Self::Unsubscribed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Opened => "opened",
            Self::Clicked => "clicked",
            Self::Unsubscribed => "unsubscribed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One kind of engagement of one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementRow {
    pub kind: Engagement,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub count: u32,
    /// The last detail given (the link clicked, the provider's error).
    pub detail: Option<String>,
}

/// What one step of the runtime changed, written in one transaction.
#[derive(Debug, Default)]
pub struct AutomationCommit {
    pub journeys: Vec<JourneyRow>,
    /// New messages; one whose key is already in the outbox is ignored.
    pub messages: Vec<OutboxRow>,
    /// The log offset everything up to which is now reflected, by consumer name.
    pub offset: Option<(String, u64)>,
}

/// Workflows, journeys, the outbox and the automation engine's log offset.
///
/// # Contract
/// - [`AutomationStore::commit`] is atomic: journeys, new messages and the offset are
///   written together or not at all, and a message key already present is left as it is.
#[async_trait]
pub trait AutomationStore: Send + Sync + 'static {
    /// Adds a version of a workflow (creating the workflow at version 1); returns it.
    async fn add_workflow_version(
        &self,
        tenant: TenantId,
        id: &str,
        name: &str,
        description: &str,
        definition: &str,
        by: &str,
    ) -> Result<WorkflowRecord, Error>;
    async fn workflow(&self, tenant: TenantId, id: &str) -> Result<Option<WorkflowRecord>, Error>;
    async fn workflows(&self, tenant: TenantId) -> Result<Vec<WorkflowRecord>, Error>;
    /// Every tenant's workflows (at startup).
    async fn all_workflows(&self) -> Result<Vec<(TenantId, WorkflowRecord)>, Error>;
    async fn workflow_versions(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> Result<Vec<WorkflowVersion>, Error>;
    /// Starts new journeys on `version` (`None`: pauses); `Ok(false)` if no such workflow.
    async fn set_enabled_version(
        &self,
        tenant: TenantId,
        id: &str,
        version: Option<u32>,
    ) -> Result<bool, Error>;
    /// Deletes a workflow, its versions and journeys (messages stay in the outbox).
    async fn delete_workflow(&self, tenant: TenantId, id: &str) -> Result<bool, Error>;

    /// Adds or replaces a tenant's channel configuration.
    async fn put_channel(&self, tenant: TenantId, record: &ChannelRecord) -> Result<(), Error>;
    async fn channels(&self, tenant: TenantId) -> Result<Vec<ChannelRecord>, Error>;
    async fn all_channels(&self) -> Result<Vec<(TenantId, ChannelRecord)>, Error>;
    async fn delete_channel(&self, tenant: TenantId, channel: &str) -> Result<bool, Error>;

    async fn commit(&self, commit: AutomationCommit) -> Result<(), Error>;
    /// The offset stored for a consumer name.
    async fn automation_offset(&self, name: &str) -> Result<Option<u64>, Error>;
    async fn journey(&self, id: &str) -> Result<Option<JourneyRow>, Error>;
    /// A workflow's journeys and messages, counted.
    async fn workflow_counts(
        &self,
        tenant: TenantId,
        workflow: &str,
    ) -> Result<WorkflowCounts, Error>;
    /// Every active journey, and the newest ended one of each (tenant, workflow, person).
    async fn journeys_to_restore(&self) -> Result<Vec<JourneyRow>, Error>;
    /// A person's journeys (by any of `persons`), newest first.
    async fn journeys_of(
        &self,
        tenant: TenantId,
        persons: &[String],
        limit: u32,
    ) -> Result<Vec<JourneyRow>, Error>;

    /// Pending messages due by `now`, oldest first.
    async fn due_messages(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<OutboxRow>, Error>;
    /// Writes back messages after an attempt (status, attempts, due time, reason, provider).
    async fn update_messages(&self, rows: &[OutboxRow]) -> Result<(), Error>;
    async fn message(&self, tenant: TenantId, key: &str) -> Result<Option<OutboxRow>, Error>;
    /// A tenant's messages with `status` (all when `None`), newest first.
    async fn messages(
        &self,
        tenant: TenantId,
        status: Option<OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, Error>;
    /// A page of a tenant's messages, newest first (then by key, descending).
    async fn list_messages(
        &self,
        tenant: TenantId,
        query: &MessageQuery,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, Error>;
    /// How many messages of every tenant are in each status (the outbox's gauges).
    async fn outbox_counts(&self) -> Result<Vec<(OutboxStatus, u64)>, Error>;
    /// How many marketing messages went to each of `persons` on each channel since `since`
    /// (sent, or being sent: attempted and still pending):
    /// `(person, channel, count)` (frequency caps, for a whole batch at once).
    async fn sent_counts(
        &self,
        tenant: TenantId,
        persons: &[String],
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String, u32)>, Error>;
    /// Records an engagement of a message; `Ok(true)` the first time of its kind.
    async fn record_engagement(
        &self,
        tenant: TenantId,
        key: &str,
        kind: Engagement,
        at: DateTime<Utc>,
        detail: Option<&str>,
    ) -> Result<bool, Error>;
    /// A message's engagements.
    async fn engagement(&self, tenant: TenantId, key: &str) -> Result<Vec<EngagementRow>, Error>;
    /// The message a provider knows by `provider_id` (receipts name messages that way).
    async fn message_by_provider_id(
        &self,
        tenant: TenantId,
        provider_id: &str,
    ) -> Result<Option<OutboxRow>, Error>;
    /// Records that a message came in from `address` (a keyed hash, never the number) on
    /// `channel`: WhatsApp's 24-hour window opens with it.
    async fn record_inbound(
        &self,
        tenant: TenantId,
        channel: &str,
        address: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Error>;
    /// When each of `addresses` last wrote in on `channel`.
    async fn last_inbound(
        &self,
        tenant: TenantId,
        channel: &str,
        addresses: &[String],
    ) -> Result<Vec<(String, DateTime<Utc>)>, Error>;
    /// Forgets persons (erasure): their journeys end and keep nothing that identifies them,
    /// their messages keep neither content nor address (pending ones are cancelled), and
    /// the links they clicked are dropped. Counts stay, under the person `erased`.
    /// Returns the journeys and messages changed.
    async fn erase_automation(
        &self,
        tenant: TenantId,
        persons: &[String],
    ) -> Result<(u64, u64), Error>;
    /// How many marketing messages went to `person` on `channel` (any channel when empty)
    /// since `since` (frequency caps).
    async fn sent_since(
        &self,
        tenant: TenantId,
        person: &str,
        channel: &str,
        since: DateTime<Utc>,
    ) -> Result<u32, Error>;
}
