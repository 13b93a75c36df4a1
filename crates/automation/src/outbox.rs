//! The outbox sender: takes due messages from the outbox, checks the [`Policy`], and hands
//! them to a [`Channel`]; retries with exponential backoff and jitter, fails over to the
//! channel's secondary provider, and finally puts a message in the dead letters with why.
//!
//! Every provider is given the message's key as its idempotency key: a crash after a
//! provider accepted a message but before the outbox recorded it sends it again with the
//! same key, and the provider drops the repeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use livora_profiles::service::Clock;
use livora_store::MetadataStore;
use livora_store::automation::{OutboxRow, OutboxStatus};
use serde_json::{Map, Value};

use crate::policy::{Decision, Policy};
use crate::runtime::Message;
use crate::tracking::Tracker;

/// A message as a provider gets it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The idempotency key.
    pub key: String,
    pub tenant: TenantId,
    pub person: String,
    /// The address: email, phone number, push token or URL.
    pub to: String,
    /// The rendered parts (`subject`, `body`, …).
    pub content: Map<String, Value>,
}

/// Why a provider did not take a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again (a timeout, a 5xx, a 429).
    #[error("{0}")]
    Transient(String),
    /// Trying again will not help (a 4xx: bad address, bad credentials).
    #[error("{0}")]
    Permanent(String),
}

/// One provider of one channel (SMTP for email, Twilio for SMS, …).
#[async_trait]
pub trait Channel: Send + Sync {
    /// The provider's name, recorded with each message it accepts.
    fn provider(&self) -> &str;
    /// Sends one message; `Ok` holds the provider's id for it, if it gives one.
    async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError>;
}

/// A channel's providers: the primary, and the one to fail over to.
#[derive(Clone)]
pub struct Route {
    pub primary: Arc<dyn Channel>,
    pub secondary: Option<Arc<dyn Channel>>,
    /// At most this many messages a second through this channel (the providers' own
    /// limits: Twilio queues, WhatsApp's per-number tiers).
    pub per_second: Option<u32>,
}

type Limiter = governor::DefaultDirectRateLimiter;

/// Rate limiters by (tenant, channel), with the rate each was made for.
type Limiters = HashMap<(TenantId, String), (u32, Arc<Limiter>)>;

/// Where the sender finds a tenant's providers for a channel.
pub trait Routes: Send + Sync {
    fn route(&self, tenant: TenantId, channel: &str) -> Option<Route>;
}

/// The same providers for every tenant (tests, benchmarks, a single-tenant node).
pub struct FixedRoutes(pub HashMap<String, Route>);

impl Routes for FixedRoutes {
    fn route(&self, _tenant: TenantId, channel: &str) -> Option<Route> {
        self.0.get(channel).cloned()
    }
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts on each provider before moving on.
    pub attempts: u32,
    /// The first backoff; each next one doubles, with ±50 % jitter.
    pub base: chrono::Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: chrono::Duration::seconds(10),
        }
    }
}

pub struct Sender {
    store: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    routes: Arc<dyn Routes>,
    policy: Policy,
    retry: Retry,
    /// Messages sent at once.
    concurrency: usize,
    /// Rate limiters by (tenant, channel), made when first needed.
    limiters: std::sync::Mutex<Limiters>,
    /// Adds open and click tracking and unsubscribe links; hashes addresses for their
    /// consents (a `STOP` reply) and WhatsApp's session window.
    tracker: Option<Arc<Tracker>>,
}

/// How long WhatsApp lets a business answer with free text after the person wrote.
const WHATSAPP_SESSION: chrono::Duration = chrono::Duration::hours(24);

/// The backoff before attempt `n + 1` (n ≥ 1), with jitter from `key`.
fn backoff(base: chrono::Duration, n: u32, key: &str) -> chrono::Duration {
    let exp = base * 2i32.saturating_pow(n.saturating_sub(1).min(16));
    let jitter = (xxhash_rust::xxh3::xxh3_64(format!("{key}|{n}").as_bytes()) % 1000) as i32;
    // 0.5 to 1.5 times the exponential step.
    exp * (500 + jitter) / 1000
}

impl Sender {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        clock: Arc<dyn Clock>,
        routes: Arc<dyn Routes>,
        policy: Policy,
        retry: Retry,
    ) -> Self {
        Self {
            store,
            clock,
            routes,
            policy,
            retry,
            concurrency: 64,
            limiters: std::sync::Mutex::new(HashMap::new()),
            tracker: None,
        }
    }

    /// The delivery policy it checks.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Tracks opens and clicks, adds unsubscribe links, and honours address-level
    /// consents (`STOP` replies) and WhatsApp's session window.
    pub fn with_tracker(mut self, tracker: Arc<Tracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// The consent subject of a message's address (`p:…` / `e:…`).
    fn address_subject(&self, m: &Message) -> Option<String> {
        let t = self.tracker.as_ref()?;
        t.address_subject(&m.channel, m.to.as_deref()?)
    }

    /// The rate limiter of a tenant's channel (`None`: unlimited).
    fn limiter(
        &self,
        tenant: TenantId,
        channel: &str,
        per_second: Option<u32>,
    ) -> Option<Arc<Limiter>> {
        let n = std::num::NonZeroU32::new(per_second?)?;
        let mut all = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant, channel.to_owned());
        match all.get(&key) {
            Some((rate, l)) if *rate == n.get() => Some(l.clone()),
            _ => {
                let l = Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
                    n,
                )));
                all.insert(key, (n.get(), l.clone()));
                Some(l)
            }
        }
    }

    /// Sends what is due now; returns how many messages it looked at.
    ///
    /// The policy is checked one message after the other (so a frequency cap counts the
    /// messages allowed earlier in the same batch); the sending is concurrent.
    pub async fn send_due(&self) -> Result<usize, livora_store::Error> {
        let now = self.clock.now();
        let due = self.store.due_messages(now, 2048).await?;
        let n = due.len();
        let mut done = Vec::with_capacity(n);
        let mut parsed = Vec::with_capacity(n);
        for mut row in due {
            row.updated_at = now;
            match serde_json::from_str::<Message>(&row.message) {
                Ok(m) => {
                    // Hashed once: the policy's facts and its check both use it.
                    let address = self.address_subject(&m);
                    parsed.push((row, m, address));
                }
                Err(e) => done.push(dead(row, format!("unreadable message: {e}"))),
            }
        }
        let facts = match self.facts(&parsed, now).await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "the delivery policy could not be checked");
                None
            }
        };
        let mut ready = Vec::new();
        let mut allowed: HashMap<(TenantId, String, String), u32> = HashMap::new();
        for (row, m, address) in parsed {
            match self.gate(row, m, address, now, facts.as_ref(), &mut allowed) {
                Gate::Send(row, m, to) => ready.push((row, *m, to)),
                Gate::Done(row) => done.push(row),
            }
        }
        // `concurrency` sends in flight at all times (a slow one holds up no other).
        use futures::StreamExt;
        let sent: Vec<OutboxRow> = futures::stream::iter(ready)
            .map(|(row, m, to)| self.deliver(row, m, to))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        done.extend(sent);
        self.store.update_messages(&done).await?;
        Ok(n)
    }

    /// What the policy needs to know of a batch's persons: their consents, and the
    /// marketing messages they got within the cap window (one query of each per tenant).
    async fn facts(
        &self,
        batch: &[(OutboxRow, Message, Option<String>)],
        now: DateTime<Utc>,
    ) -> Result<Facts, livora_store::Error> {
        let mut persons: HashMap<TenantId, Vec<String>> = HashMap::new();
        let mut whatsapp: HashMap<TenantId, Vec<String>> = HashMap::new();
        for (row, m, address) in batch {
            if m.channel == "whatsapp"
                && let Some(a) = address
            {
                whatsapp.entry(m.tenant).or_default().push(a.clone());
            }
            if first_attempt(row) && m.channel != "webhook" {
                let list = persons.entry(m.tenant).or_default();
                list.push(m.person.clone());
                list.extend(address.clone());
            }
        }
        let mut facts = Facts::default();
        for tenant in persons.keys() {
            // A tenant's own policy, else the node's.
            if let Some(own) = self
                .store
                .tenant(*tenant)
                .await?
                .and_then(|t| t.delivery_policy)
            {
                facts.policies.insert(*tenant, Policy::from(&own));
            }
        }
        for (tenant, list) in whatsapp {
            for (address, at) in self.store.last_inbound(tenant, "whatsapp", &list).await? {
                facts.inbound.insert((tenant, address), at);
            }
        }
        for (tenant, mut list) in persons {
            list.sort();
            list.dedup();
            for c in self.store.consents(tenant, &list).await? {
                facts
                    .consents
                    .entry((tenant, c.subject.clone()))
                    .or_default()
                    .push(c);
            }
            for (person, channel, n) in self
                .store
                .sent_counts(tenant, &list, now - self.policy.cap_window)
                .await?
            {
                facts.sent.insert((tenant, person, channel), n);
            }
        }
        Ok(facts)
    }

    /// Checks a message before sending: to send to the address, or done for now (held,
    /// blocked, dead, or due again).
    fn gate(
        &self,
        mut row: OutboxRow,
        mut m: Message,
        address: Option<String>,
        now: DateTime<Utc>,
        facts: Option<&Facts>,
        allowed: &mut HashMap<(TenantId, String, String), u32>,
    ) -> Gate {
        if self.routes.route(m.tenant, &m.channel).is_none() {
            let why = format!("no provider is configured for {}", m.channel);
            return Gate::Done(dead(row, why));
        }
        let Some(to) = m.to.clone() else {
            let why = format!("no {} address", m.channel);
            return Gate::Done(dead(row, why));
        };
        if m.channel == "whatsapp"
            && let (Some(facts), Some(a)) = (facts, &address)
        {
            // Free text only inside the 24 hours after the person last wrote.
            let open = facts
                .inbound
                .get(&(m.tenant, a.clone()))
                .is_some_and(|at| now - *at < WHATSAPP_SESSION);
            m.content
                .insert("session_open".into(), serde_json::Value::Bool(open));
        }
        if !first_attempt(&row) || m.channel == "webhook" {
            return Gate::Send(row, Box::new(m), to);
        }
        let Some(facts) = facts else {
            row.due_at = now + self.retry.base;
            row.reason = Some("policy check failed: the store could not be read".into());
            return Gate::Done(row);
        };
        let counter = (m.tenant, m.person.clone(), m.channel.clone());
        let earlier = allowed.get(&counter).copied().unwrap_or(0);
        let sent = facts.sent.get(&counter).copied().unwrap_or(0);
        // The person's answers and their address's (a `STOP` from the number): the newest
        // answer for a purpose counts.
        let mut consents: Vec<livora_store::Consent> = Vec::new();
        for subject in std::iter::once(m.person.clone()).chain(address) {
            if let Some(list) = facts.consents.get(&(m.tenant, subject)) {
                consents.extend(list.iter().cloned());
            }
        }
        let policy = facts.policies.get(&m.tenant).unwrap_or(&self.policy);
        match policy.decide(&m, &consents, sent + earlier, now) {
            Decision::Send => {
                if m.category == livora_model::workflow::Category::Marketing {
                    *allowed.entry(counter).or_default() += 1;
                }
                Gate::Send(row, Box::new(m), to)
            }
            Decision::Hold(until) => {
                row.due_at = until;
                row.reason = Some(format!("held: quiet hours until {}", until.to_rfc3339()));
                Gate::Done(row)
            }
            Decision::Block(why) => {
                row.status = OutboxStatus::Blocked;
                row.reason = Some(why);
                Gate::Done(row)
            }
        }
    }

    /// One attempt with the provider whose turn it is.
    async fn deliver(&self, mut row: OutboxRow, m: Message, to: String) -> OutboxRow {
        let Some(route) = self.routes.route(m.tenant, &m.channel) else {
            return dead(row, format!("no provider is configured for {}", m.channel));
        };
        // Attempts 0..n go to the primary, n..2n to the secondary.
        let on_secondary = row.attempts >= self.retry.attempts;
        let provider = match (&route.secondary, on_secondary) {
            (_, false) => route.primary.clone(),
            (Some(s), true) => s.clone(),
            (None, true) => return dead(row, "no provider left to try".into()),
        };
        if let Some(limiter) = self.limiter(m.tenant, &m.channel, route.per_second) {
            limiter.until_ready().await;
        }
        let mut content = m.content.clone();
        if let Some(t) = &self.tracker {
            t.decorate(row.tenant, &row.key, &m.channel, &mut content);
        }
        let out = Outgoing {
            key: row.key.clone(),
            tenant: row.tenant,
            person: row.person.clone(),
            to,
            content,
        };
        row.attempts += 1;
        let answer = provider.send(&out).await;
        // The backoff counts from the answer (a timeout can take many seconds), not from
        // when the batch started.
        let now = self.clock.now();
        row.updated_at = now;
        match answer {
            Ok(id) => {
                row.status = OutboxStatus::Sent;
                row.provider = Some(provider.provider().to_owned());
                row.provider_id = id;
                row.reason = None;
            }
            Err(e) => {
                let limit = if route.secondary.is_some() {
                    2 * self.retry.attempts
                } else {
                    self.retry.attempts
                };
                let permanent = matches!(e, SendError::Permanent(_));
                let why = format!("{}: {e}", provider.provider());
                if row.attempts >= limit
                    || (permanent && (on_secondary || route.secondary.is_none()))
                {
                    return dead(row, why);
                }
                if permanent {
                    // Straight to the secondary.
                    row.attempts = self.retry.attempts;
                    row.due_at = now;
                } else {
                    let n = if on_secondary {
                        row.attempts - self.retry.attempts
                    } else {
                        row.attempts
                    };
                    row.due_at = now + backoff(self.retry.base, n, &row.key);
                }
                row.reason = Some(why);
            }
        }
        row
    }

    /// Sends for ever: whenever messages are added, and at least once a second.
    pub async fn run(self: Arc<Self>, changed: Arc<tokio::sync::Notify>) {
        loop {
            let n = match self.send_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox could not be read");
                    0
                }
            };
            if n == 0 {
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// What the policy says of one message of a batch.
enum Gate {
    /// Send it to this address.
    Send(OutboxRow, Box<Message>, String),
    /// Not now: the row as it ends up (held, blocked, dead, or due again).
    Done(OutboxRow),
}

/// What the policy knows of a batch's persons.
#[derive(Default)]
struct Facts {
    consents: HashMap<(TenantId, String), Vec<livora_store::Consent>>,
    /// Marketing messages sent within the cap window, by (tenant, person, channel).
    sent: HashMap<(TenantId, String, String), u32>,
    /// When each WhatsApp address (its hash) last wrote in.
    inbound: HashMap<(TenantId, String), DateTime<Utc>>,
    /// Tenants' own policies (the others have the node's).
    policies: HashMap<TenantId, Policy>,
}

/// Whether the policy is still to be checked: a first attempt, or one held for quiet hours.
fn first_attempt(row: &OutboxRow) -> bool {
    row.attempts == 0 || row.reason.as_deref().is_some_and(|r| r.starts_with("held"))
}

fn dead(mut row: OutboxRow, why: String) -> OutboxRow {
    row.status = OutboxStatus::Dead;
    row.reason = Some(why);
    row
}
