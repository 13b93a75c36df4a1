//! The outbox sender: takes due messages from the outbox, checks the [`Policy`], and hands
//! them to a [`Channel`]; retries with exponential backoff and jitter, fails over to the
//! channel's secondary provider, and finally puts a message in the dead letters with why.
//!
//! Every provider is given the message's key as its idempotency key: a crash after a
//! provider accepted a message but before the outbox recorded it sends it again with the
//! same key, and the provider drops the repeat.
//!
//! Each message is sent on its own: an attempt is recorded before the provider is called
//! (so a call cut short by a crash still counts, and `attempts` is the number of calls
//! made), and the message's outcome is written as soon as its own call returns. Calls run
//! concurrently under a node-wide limit and a limit per destination (a tenant's webhook
//! host, or a tenant's channel), each bounded by a timeout, so one hung endpoint holds up
//! neither the other messages nor more than its own share of the sending slots.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use livora_model::clock::Clock;
use livora_store::MetadataStore;
use livora_store::automation::{AttemptError, OutboxRow, OutboxStatus};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// How many provider calls run at once, and how long one may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Calls in flight at once on the node, over all tenants.
    pub in_flight: usize,
    /// Calls in flight at once for one tenant, over all its destinations: a tenant whose
    /// many endpoints all hang leaves the other tenants their slots.
    pub per_tenant: usize,
    /// Calls in flight at once to one destination: a tenant's webhook host, or a tenant's
    /// other channel (its provider account).
    pub per_destination: usize,
    /// How long one call may take before it counts as a failed attempt (retried).
    pub send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            in_flight: 64,
            per_tenant: 32,
            per_destination: 16,
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// What an attempt cut short by a stop of the node (a crash, a kill) is recorded as, until
/// its call returns.
const INTERRUPTED: &str = "no answer recorded: the node stopped during the call";

/// A destination: tenant, channel, and the webhook host (empty for other channels).
type Destination = (TenantId, String, String);

pub struct Sender {
    store: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    routes: Arc<dyn Routes>,
    policy: Policy,
    retry: Retry,
    limits: Limits,
    /// The node's sending slots.
    slots: Arc<Semaphore>,
    /// Each destination's slots, made when first needed.
    destinations: std::sync::Mutex<HashMap<Destination, Arc<Semaphore>>>,
    /// Each tenant's slots, made when first needed.
    tenants: std::sync::Mutex<HashMap<TenantId, Arc<Semaphore>>>,
    /// Keys of the messages being sent (not to be picked up again meanwhile).
    in_flight: std::sync::Mutex<HashSet<String>>,
    /// Rows whose call returned, waiting to be written (several at once under load).
    finished: std::sync::Mutex<Vec<OutboxRow>>,
    /// One writer of finished rows at a time.
    writer: tokio::sync::Mutex<()>,
    /// Wakes [`Sender::run`] when a call returned (a slot is free).
    freed: tokio::sync::Notify,
    /// Rate limiters by (tenant, channel), made when first needed.
    limiters: std::sync::Mutex<Limiters>,
    /// Adds open and click tracking and unsubscribe links; hashes addresses for their
    /// consents (a `STOP` reply) and WhatsApp's session window.
    tracker: Option<Arc<Tracker>>,
}

/// A message being sent: when its call ends, even by a panic in a provider, the message is
/// no longer in flight (so a panic cannot keep it from being picked up again) and the
/// sending loop is woken.
struct Flying {
    sender: Arc<Sender>,
    key: String,
}

impl Drop for Flying {
    fn drop(&mut self) {
        metrics::gauge!("livora_outbox_in_flight_messages").decrement(1.0);
        self.sender
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        self.sender.freed.notify_one();
    }
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
            slots: Arc::new(Semaphore::new(Limits::default().in_flight)),
            limits: Limits::default(),
            destinations: std::sync::Mutex::new(HashMap::new()),
            tenants: std::sync::Mutex::new(HashMap::new()),
            in_flight: std::sync::Mutex::new(HashSet::new()),
            finished: std::sync::Mutex::new(Vec::new()),
            writer: tokio::sync::Mutex::new(()),
            freed: tokio::sync::Notify::new(),
            limiters: std::sync::Mutex::new(HashMap::new()),
            tracker: None,
        }
    }

    /// How many calls run at once, and how long one may take.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        let limits = Limits {
            in_flight: limits.in_flight.max(1),
            per_tenant: limits.per_tenant.max(1),
            per_destination: limits.per_destination.max(1),
            send_timeout: limits.send_timeout.max(Duration::from_millis(1)),
        };
        self.slots = Arc::new(Semaphore::new(limits.in_flight));
        self.limits = limits;
        self
    }

    /// The node's, the tenant's and the destination's slot for one call, if all three are
    /// free now.
    fn take_slot(&self, destination: &Destination) -> Option<Vec<OwnedSemaphorePermit>> {
        let own = {
            let mut all = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
            all.entry(destination.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_destination)))
                .clone()
        };
        let tenant = {
            let mut all = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            all.entry(destination.0)
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_tenant)))
                .clone()
        };
        let own = own.try_acquire_owned().ok()?;
        let tenant = tenant.try_acquire_owned().ok()?;
        let node = self.slots.clone().try_acquire_owned().ok()?;
        Some(vec![node, tenant, own])
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

    /// Sends what is due now and waits for those calls; returns how many messages it sent
    /// or settled otherwise (held, blocked, dead), not those left for a free slot. Each
    /// message is written as soon as its own call returns.
    ///
    /// The policy is checked one message after the other (so a frequency cap counts the
    /// messages allowed earlier in the same batch); the sending is concurrent, as many at
    /// once as [`Limits`] allow (the others wait for the next round).
    pub async fn send_due(self: &Arc<Self>) -> Result<usize, livora_store::Error> {
        let (n, calls) = self.dispatch().await?;
        futures::future::join_all(calls).await;
        Ok(n)
    }

    /// Takes what is due and has a free slot: checks the policy, writes what is decided
    /// without a call (held, blocked, dead, deferred) and the attempts about to be made, and
    /// returns the calls to run (each writes its own outcome) and how many messages it
    /// took (the calls, and those settled without one).
    async fn dispatch(
        self: &Arc<Self>,
    ) -> Result<(usize, Vec<futures::future::BoxFuture<'static, ()>>), livora_store::Error> {
        const PAGE: u32 = 2048;
        // Taken before the read: a call leaves this set only after its outcome is written,
        // so a message read as pending here is either still in this set or really due.
        let busy: HashSet<String> = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = self.clock.now();
        let due = self.store.due_messages(now, PAGE).await?;
        let full = due.len() >= PAGE as usize;
        let mut done = Vec::new();
        let mut parsed = Vec::new();
        let mut waiting = Vec::new();
        let mut slots: HashMap<String, Vec<OwnedSemaphorePermit>> = HashMap::new();
        for mut row in due {
            if busy.contains(&row.key) {
                continue;
            }
            row.updated_at = now;
            match serde_json::from_str::<Message>(&row.message) {
                Ok(m) => {
                    match self.take_slot(&destination(&m)) {
                        Some(permits) => {
                            slots.insert(row.key.clone(), permits);
                            // Hashed once: the policy's facts and its check both use it.
                            let address = self.address_subject(&m);
                            parsed.push((row, m, address));
                        }
                        None => waiting.push(row),
                    }
                }
                Err(e) => done.push(dead(row, format!("unreadable message: {e}"))),
            }
        }
        let mut deferred = Vec::new();
        if full {
            // A full page whose destinations are busy would hide the messages behind it
            // from every round: those wait a second at the back.
            for mut row in waiting {
                row.due_at = now + chrono::Duration::seconds(1);
                deferred.push(row);
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
                Gate::Send(row, m, to) => match self.prepare(row, *m, to, now) {
                    Ok(call) => ready.push(call),
                    Err(row) => done.push(*row),
                },
                Gate::Done(row) => done.push(row),
            }
        }
        // The attempts are recorded before any call: a kill during a call leaves it
        // counted (and marked as cut short), and the message is sent again on restart.
        let n = done.len() + ready.len();
        let mut write = done;
        write.extend(deferred);
        write.extend(ready.iter().map(|c| c.row.clone()));
        self.store.update_messages(&write).await?;
        let mut calls = Vec::with_capacity(ready.len());
        {
            let mut flying = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for call in ready {
                let Some(permits) = slots.remove(&call.row.key) else {
                    continue;
                };
                flying.insert(call.row.key.clone());
                let me = self.clone();
                calls.push(
                    Box::pin(me.call(call, permits)) as futures::future::BoxFuture<'static, ()>
                );
            }
        }
        Ok((n, calls))
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

    /// The attempt to make with the provider whose turn it is (the row with the attempt
    /// recorded), or the row as it ends up when there is none to make.
    fn prepare(
        &self,
        mut row: OutboxRow,
        m: Message,
        to: String,
        now: DateTime<Utc>,
    ) -> Result<Call, Box<OutboxRow>> {
        let Some(route) = self.routes.route(m.tenant, &m.channel) else {
            let why = format!("no provider is configured for {}", m.channel);
            return Err(Box::new(dead(row, why)));
        };
        let turn = self.turn(&row, route.secondary.is_some());
        let provider = match (&route.secondary, turn) {
            (_, Turn::Primary) => route.primary.clone(),
            (Some(s), Turn::Secondary) => s.clone(),
            (None, Turn::Secondary) | (_, Turn::Done) => {
                let why = row
                    .errors
                    .last()
                    .map(|e| format!("{}: {}", e.provider, e.error))
                    .unwrap_or_else(|| "no provider left to try".into());
                return Err(Box::new(dead(row, why)));
            }
        };
        row.attempts += 1;
        if row.reason.as_deref().is_some_and(|r| r.starts_with("held")) {
            row.reason = None;
        }
        row.errors.push(AttemptError {
            attempt: row.attempts,
            at: now,
            provider: provider.provider().to_owned(),
            secondary: turn == Turn::Secondary,
            permanent: false,
            error: INTERRUPTED.into(),
        });
        Ok(Call {
            row,
            message: m,
            to,
            provider,
            secondary: turn == Turn::Secondary,
            has_secondary: route.secondary.is_some(),
            per_second: route.per_second,
        })
    }

    /// Whose turn it is, by the attempts that failed: the primary's `retry.attempts`, then
    /// (after those, or at once after a permanent failure) the secondary's.
    fn turn(&self, row: &OutboxRow, has_secondary: bool) -> Turn {
        let limit = self.retry.attempts as usize;
        let (mut primary, mut secondary) = (0, 0);
        let (mut primary_permanent, mut secondary_permanent) = (false, false);
        for e in &row.errors {
            if e.secondary {
                secondary += 1;
                secondary_permanent |= e.permanent;
            } else {
                primary += 1;
                primary_permanent |= e.permanent;
            }
        }
        // Attempts made before errors were kept (rows older than the `errors` column) have
        // no entry: they were the primary's, and still count after later attempts add some.
        primary += (row.attempts as usize).saturating_sub(row.errors.len());
        if primary < limit && !primary_permanent {
            Turn::Primary
        } else if has_secondary && secondary < limit && !secondary_permanent {
            Turn::Secondary
        } else {
            Turn::Done
        }
    }

    /// Makes one call (holding its slots) and writes its outcome at once.
    async fn call(self: Arc<Self>, c: Call, permits: Vec<OwnedSemaphorePermit>) {
        let flying = Flying {
            sender: self.clone(),
            key: c.row.key.clone(),
        };
        metrics::gauge!("livora_outbox_in_flight_messages").increment(1.0);
        let row = self.attempt(c).await;
        drop(permits);
        self.record(row).await;
        drop(flying);
    }

    /// Writes finished rows: this one, and any others that finished meanwhile (one
    /// transaction for all of them under load).
    async fn record(&self, row: OutboxRow) {
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(row);
        let _writer = self.writer.lock().await;
        let rows = std::mem::take(&mut *self.finished.lock().unwrap_or_else(|e| e.into_inner()));
        if rows.is_empty() {
            // Written by the call that held the writer before.
            return;
        }
        if let Err(e) = self.store.update_messages(&rows).await {
            // The attempts stay recorded (marked as cut short): the messages are sent again.
            tracing::warn!(error = %e, messages = rows.len(), "the outbox could not record sends");
        }
    }

    /// The call itself, and the row as it ends up.
    async fn attempt(&self, c: Call) -> OutboxRow {
        let Call {
            mut row,
            message: m,
            to,
            provider,
            secondary,
            has_secondary,
            per_second,
        } = c;
        if let Some(limiter) = self.limiter(m.tenant, &m.channel, per_second) {
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
        let channel = m.channel.clone();
        metrics::counter!("livora_outbox_attempts_total", "channel" => channel.clone())
            .increment(1);
        let started = Instant::now();
        let answer = match tokio::time::timeout(self.limits.send_timeout, provider.send(&out)).await
        {
            Ok(a) => a,
            Err(_) => Err(SendError::Transient(format!(
                "no answer within {} s",
                self.limits.send_timeout.as_secs_f64()
            ))),
        };
        metrics::histogram!("livora_outbox_send_duration_seconds", "channel" => channel.clone())
            .record(started.elapsed().as_secs_f64());
        // The backoff counts from the answer (a timeout can take many seconds), not from
        // when the batch started.
        let now = self.clock.now();
        row.updated_at = now;
        // The attempt recorded as cut short is replaced by what happened.
        if row
            .errors
            .last()
            .is_some_and(|e| e.attempt == row.attempts && e.error == INTERRUPTED)
        {
            row.errors.pop();
        }
        match answer {
            Ok(id) => {
                metrics::counter!("livora_outbox_sent_total", "channel" => channel).increment(1);
                row.status = OutboxStatus::Sent;
                row.provider = Some(provider.provider().to_owned());
                row.provider_id = id;
                row.reason = None;
            }
            Err(e) => {
                let permanent = matches!(e, SendError::Permanent(_));
                metrics::counter!("livora_outbox_failed_total", "channel" => channel,
                    "kind" => if permanent { "permanent" } else { "transient" })
                .increment(1);
                let why = format!("{}: {e}", provider.provider());
                row.errors.push(AttemptError {
                    attempt: row.attempts,
                    at: now,
                    provider: provider.provider().to_owned(),
                    secondary,
                    permanent,
                    error: e.to_string(),
                });
                match self.turn(&row, has_secondary) {
                    Turn::Done => return dead(row, why),
                    // Straight to the secondary after a permanent failure.
                    Turn::Secondary if !secondary => row.due_at = now,
                    turn => {
                        let n = row
                            .errors
                            .iter()
                            .filter(|e| e.secondary == (turn == Turn::Secondary))
                            .count() as u32;
                        row.due_at = now + backoff(self.retry.base, n.max(1), &row.key);
                    }
                }
                row.reason = Some(why);
            }
        }
        row
    }

    /// Sends for ever: whenever messages are added or a call returns, and at least once a
    /// second. Calls run on their own: a slow one holds up no other.
    pub async fn run(self: Arc<Self>, changed: Arc<tokio::sync::Notify>) {
        let mut calls = tokio::task::JoinSet::new();
        loop {
            let started = match self.dispatch().await {
                Ok((_, list)) => {
                    let n = list.len();
                    for c in list {
                        calls.spawn(c);
                    }
                    n
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox could not be read");
                    0
                }
            };
            while calls.try_join_next().is_some() {}
            if started == 0 {
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = self.freed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// One attempt about to be made.
struct Call {
    /// The row with the attempt recorded.
    row: OutboxRow,
    message: Message,
    to: String,
    provider: Arc<dyn Channel>,
    secondary: bool,
    has_secondary: bool,
    per_second: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Primary,
    Secondary,
    Done,
}

/// Where a message goes, for the per-destination limit: webhooks by their URL's host (one
/// slow receiver is one destination), other channels by the tenant's provider account.
fn destination(m: &Message) -> Destination {
    let host = match (m.channel.as_str(), m.to.as_deref()) {
        ("webhook", Some(to)) => url::Url::parse(to)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    (m.tenant, m.channel.clone(), host)
}

/// Describes the outbox's metrics (their `# HELP` lines); call once the recorder is set.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "livora_outbox_attempts_total",
        "calls made to message providers, by channel (each retry is one)"
    );
    describe_counter!(
        "livora_outbox_sent_total",
        "messages a provider accepted, by channel"
    );
    describe_counter!(
        "livora_outbox_failed_total",
        "calls to message providers that failed, by channel and kind (transient: retried)"
    );
    describe_counter!(
        "livora_outbox_dead_total",
        "messages given up on (moved to the dead letters), by channel"
    );
    describe_gauge!(
        "livora_outbox_in_flight_messages",
        "calls to message providers under way"
    );
    describe_gauge!(
        "livora_outbox_messages",
        "messages in the outbox, by status (pending, sent, blocked, dead)"
    );
    describe_histogram!(
        "livora_outbox_send_duration_seconds",
        Unit::Seconds,
        "how long one call to a message provider took, by channel"
    );
    // Every series from zero, so a rate or an alert sees the first failure.
    for channel in livora_model::workflow::CHANNELS.iter().copied() {
        for name in [
            "livora_outbox_attempts_total",
            "livora_outbox_sent_total",
            "livora_outbox_dead_total",
        ] {
            metrics::counter!(name, "channel" => channel).increment(0);
        }
        for kind in ["transient", "permanent"] {
            metrics::counter!("livora_outbox_failed_total", "channel" => channel, "kind" => kind)
                .increment(0);
        }
    }
    metrics::gauge!("livora_outbox_in_flight_messages").increment(0.0);
}

/// Sets the outbox's gauges of messages by status from the store.
pub async fn observe(store: &dyn MetadataStore) -> Result<(), livora_store::Error> {
    let counts: HashMap<OutboxStatus, u64> = store.outbox_counts().await?.into_iter().collect();
    for status in [
        OutboxStatus::Pending,
        OutboxStatus::Sent,
        OutboxStatus::Blocked,
        OutboxStatus::Dead,
    ] {
        metrics::gauge!("livora_outbox_messages", "status" => status.as_str())
            .set(counts.get(&status).copied().unwrap_or(0) as f64);
    }
    Ok(())
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

/// Gives up on a message: the dead letters, logged at warn level with why.
fn dead(mut row: OutboxRow, why: String) -> OutboxRow {
    tracing::warn!(
        tenant = %row.tenant,
        key = %row.key,
        workflow = %row.workflow,
        channel = %row.channel,
        attempts = row.attempts,
        error = %why,
        "a message went to the dead letters"
    );
    metrics::counter!("livora_outbox_dead_total", "channel" => row.channel.clone()).increment(1);
    row.status = OutboxStatus::Dead;
    row.reason = Some(why);
    row
}
