//! Backtests: a workflow definition run over a past time range of real events, reporting
//! what it would have sent, to whom and when — nothing is sent and nothing is stored.
//!
//! A fresh [`Runtime`] gets the tenant's events of the range in the order the log holds
//! them, each at its own timestamp (an event older than one before it counts at the later
//! time), with the timers firing in between and up to the end of the range. Each message
//! it decides then goes through the [`Policy`] as the outbox would check it: today's
//! consents, frequency caps counted within the backtest, quiet hours.
//!
//! Persons are as the profiles know them *now* (traits, segments, tags): a branch on a
//! trait that changed since takes today's path. Journeys that began before `from` are not
//! there.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use livora_model::workflow::{Category, Workflow};
use livora_model::{Event, TenantId};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::people::People;
use crate::policy::{Decision, Policy};
use crate::runtime::{Effect, Message, Outcome, Runtime, Version};

/// The workflow id a backtest's journeys and messages carry.
pub const WORKFLOW: &str = "backtest";

/// One message the workflow would have decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Would {
    pub at: DateTime<Utc>,
    pub person: String,
    pub step: String,
    pub channel: String,
    /// `send`, `held` (quiet hours: sent at `send_at`), `blocked` (consent, caps) or
    /// `failed` (no address, a template error).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rendered parts.
    pub content: Map<String, Value>,
}

/// Counts of one step's messages by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepCounts {
    pub send: u64,
    pub held: u64,
    pub blocked: u64,
    pub failed: u64,
    /// Skipped for the holdout group.
    pub held_out: u64,
}

/// Journeys of the backtest.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JourneyCounts {
    pub entered: u64,
    /// Still waiting at the end of the range.
    pub running: u64,
    pub completed: u64,
    /// Reached the goal (while running, or within its window after the end).
    pub converted: u64,
    pub holdout: u64,
}

/// What a backtest found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The tenant's events of the range that were read.
    pub events: u64,
    pub journeys: JourneyCounts,
    pub steps: BTreeMap<String, StepCounts>,
    /// The messages in time order, the first `limit` of them.
    pub messages: Vec<Would>,
    /// How many messages there were in all.
    pub message_count: u64,
}

/// A backtest in progress: feed it events, then [`Backtest::decide`].
pub struct Backtest<'a> {
    tenant: TenantId,
    runtime: Runtime,
    people: &'a dyn People,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The runtime's time: the latest event time seen.
    now: DateTime<Utc>,
    events: u64,
    messages: Vec<Message>,
    held_out: Vec<String>,
    /// Each journey's last state: (holdout, outcome).
    journeys: HashMap<String, (bool, Option<Outcome>)>,
}

impl<'a> Backtest<'a> {
    pub fn new(
        tenant: TenantId,
        workflow: Workflow,
        time_zone: chrono_tz::Tz,
        people: &'a dyn People,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Self {
        let mut runtime = Runtime::new();
        runtime.set_time_zone(tenant, time_zone);
        runtime.add_version(Version {
            tenant,
            workflow: WORKFLOW.into(),
            version: 1,
            definition: workflow,
        });
        runtime.set_live(tenant, WORKFLOW, Some(1));
        let mut b = Self {
            tenant,
            runtime,
            people,
            from,
            to,
            now: from,
            events: 0,
            messages: Vec::new(),
            held_out: Vec::new(),
            journeys: HashMap::new(),
        };
        // Schedules take their first run after `from`.
        b.advance(from);
        b
    }

    fn take(&mut self, c: crate::runtime::Changes) {
        for j in c.journeys {
            self.journeys
                .insert(j.id.to_string(), (j.holdout, j.outcome));
        }
        for e in c.effects {
            match e {
                Effect::Send(m) => self.messages.push(m),
                Effect::HeldOut { step, .. } => self.held_out.push(step),
                Effect::SetTrait { .. } => {}
            }
        }
    }

    /// Fires what comes due up to `to`, each timer and scheduled run at its own time.
    fn advance(&mut self, to: DateTime<Utc>) {
        while let Some(at) = self.runtime.next_wake().filter(|at| *at < to) {
            let c = self.runtime.advance(at, self.people);
            self.take(c);
        }
        let c = self.runtime.advance(to, self.people);
        self.take(c);
    }

    /// The event's time, if it is the tenant's and inside the range.
    pub fn wants(&self, tenant: TenantId, e: &Event) -> bool {
        tenant == self.tenant && e.timestamp >= self.from && e.timestamp < self.to
    }

    /// Takes one event (ignored unless [`Backtest::wants`] it).
    pub fn event(&mut self, tenant: TenantId, e: &Event) {
        if !self.wants(tenant, e) {
            return;
        }
        self.events += 1;
        self.now = self.now.max(e.timestamp);
        let now = self.now;
        self.advance(now);
        let c = self.runtime.on_event(tenant, e, self.people, now);
        self.take(c);
    }

    /// The messages decided up to the end of the range, before the policy.
    pub fn finish(mut self) -> Decided {
        let to = self.to;
        self.advance(to);
        let mut journeys = JourneyCounts::default();
        for (holdout, outcome) in self.journeys.values() {
            journeys.entered += 1;
            journeys.holdout += u64::from(*holdout);
            match outcome {
                None => journeys.running += 1,
                Some(Outcome::Goal | Outcome::Converted) => journeys.converted += 1,
                Some(_) => journeys.completed += 1,
            }
        }
        self.messages.sort_by_key(|m| m.decided_at);
        Decided {
            events: self.events,
            journeys,
            messages: self.messages,
            held_out: self.held_out,
        }
    }
}

/// What the runtime decided, for [`Decided::judge`].
pub struct Decided {
    events: u64,
    journeys: JourneyCounts,
    messages: Vec<Message>,
    held_out: Vec<String>,
}

impl Decided {
    /// The persons messages went to (to read their consents).
    pub fn persons(&self) -> Vec<String> {
        let mut p: Vec<String> = self.messages.iter().map(|m| m.person.clone()).collect();
        p.sort();
        p.dedup();
        p
    }

    /// Checks each message as the outbox would, in time order; keeps the first `limit`.
    pub fn judge(
        self,
        policy: &Policy,
        consents: &HashMap<String, Vec<livora_store::Consent>>,
        limit: usize,
    ) -> Report {
        let mut report = Report {
            events: self.events,
            journeys: self.journeys,
            ..Report::default()
        };
        for step in self.held_out {
            report.steps.entry(step).or_default().held_out += 1;
        }
        // Marketing messages that went out, by (person, channel), for the caps.
        let mut sent: HashMap<(String, String), Vec<DateTime<Utc>>> = HashMap::new();
        let none = Vec::new();
        for m in self.messages {
            let at = m.decided_at;
            let (outcome, send_at, reason) = match &m.error {
                Some(e) => ("failed", None, Some(e.clone())),
                None => {
                    let list = sent
                        .entry((m.person.clone(), m.channel.clone()))
                        .or_default();
                    let window = at - policy.cap_window;
                    let in_window = list.iter().filter(|t| **t > window).count() as u32;
                    let given = consents.get(&m.person).unwrap_or(&none);
                    match policy.decide(&m, given, in_window, at) {
                        Decision::Send => {
                            if m.category == Category::Marketing {
                                list.push(at);
                            }
                            ("send", Some(at), None)
                        }
                        Decision::Hold(until) => {
                            if m.category == Category::Marketing {
                                list.push(until);
                            }
                            ("held", Some(until), Some("quiet hours".to_owned()))
                        }
                        Decision::Block(why) => ("blocked", None, Some(why)),
                    }
                }
            };
            let counts = report.steps.entry(m.step.clone()).or_default();
            match outcome {
                "send" => counts.send += 1,
                "held" => counts.held += 1,
                "blocked" => counts.blocked += 1,
                _ => counts.failed += 1,
            }
            report.message_count += 1;
            if report.messages.len() < limit {
                report.messages.push(Would {
                    at,
                    person: m.person,
                    step: m.step,
                    channel: m.channel,
                    outcome,
                    send_at,
                    reason,
                    content: m.content,
                });
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::people::{Directory, Person};

    fn tenant() -> TenantId {
        TenantId(uuid::Uuid::from_u128(9))
    }

    fn t(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0)
            .single()
            .expect("time")
            + chrono::Duration::hours(hours)
    }

    fn event(user: &str, name: &str, cart: &str, at: DateTime<Utc>) -> Event {
        serde_json::from_value(json!({"type": "track", "userId": user, "event": name,
            "properties": {"cart_id": cart}, "messageId": format!("{user}-{name}-{cart}-{at}"),
            "timestamp": at.to_rfc3339(), "receivedAt": at.to_rfc3339()}))
        .expect("event")
    }

    #[test]
    fn an_abandoned_cart_backtest_reports_what_would_have_gone_out() {
        let workflow = Workflow::parse(&json!({
            "trigger": {"event": {"name": "Product Added"}},
            "goal": {"event": "Order Completed", "same": ["cart_id"]},
            "steps": [
                {"id": "wait", "wait_for": {"event": "Order Completed", "same": ["cart_id"], "timeout_minutes": 60}},
                {"id": "remind", "send": {"channel": "email", "template": {"subject": "Your cart {{ event.properties.cart_id }}", "body": "."}}}
            ]
        }))
        .expect("workflow");
        let mut people = Directory::default();
        for (id, email) in [
            ("ann", Some("ann@example.com")),
            ("bob", Some("bob@example.com")),
            ("cy", None),
            ("dee", Some("dee@example.com")),
        ] {
            let traits = match email {
                Some(e) => json!({"email": e}),
                None => json!({}),
            };
            people.put(
                tenant(),
                Person {
                    keys: vec![format!("u:{id}")],
                    traits: traits.as_object().cloned().unwrap_or_default(),
                    ..Person::default()
                },
            );
        }
        let other = TenantId(uuid::Uuid::from_u128(10));
        let mut b = Backtest::new(tenant(), workflow, chrono_tz::UTC, &people, t(0), t(48));
        let events = [
            (tenant(), event("ann", "Product Added", "c1", t(1))),
            // Bob orders in time: nothing.
            (tenant(), event("bob", "Product Added", "c2", t(2))),
            (
                tenant(),
                event(
                    "bob",
                    "Order Completed",
                    "c2",
                    t(2) + chrono::Duration::minutes(30),
                ),
            ),
            // Cy has no address.
            (tenant(), event("cy", "Product Added", "c3", t(3))),
            // Dee said no to marketing email.
            (tenant(), event("dee", "Product Added", "c4", t(4))),
            // Outside the range, or another tenant's: not read.
            (tenant(), event("ann", "Product Added", "c5", t(-5))),
            (tenant(), event("ann", "Product Added", "c6", t(60))),
            (other, event("ann", "Product Added", "c7", t(5))),
        ];
        for (tn, e) in &events {
            b.event(*tn, e);
        }
        let decided = b.finish();
        assert_eq!(decided.persons(), ["u:ann", "u:cy", "u:dee"]);
        let mut consents = HashMap::new();
        consents.insert(
            "u:dee".to_owned(),
            vec![livora_store::Consent {
                subject: "u:dee".into(),
                purpose: "email_marketing".into(),
                granted: false,
                source: "test".into(),
                recorded_at: t(0),
                recorded_by: "test".into(),
            }],
        );
        let policy = Policy {
            quiet_hours: None,
            ..Policy::default()
        };
        let r = decided.judge(&policy, &consents, 10);
        assert_eq!(r.events, 5);
        assert_eq!(
            r.journeys,
            JourneyCounts {
                entered: 4,
                running: 0,
                completed: 3,
                converted: 1,
                holdout: 0
            }
        );
        assert_eq!(r.message_count, 3);
        let outcomes: Vec<(&str, &str, DateTime<Utc>)> = r
            .messages
            .iter()
            .map(|m| (m.person.as_str(), m.outcome, m.at))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("u:ann", "send", t(2)),
                ("u:cy", "failed", t(4)),
                ("u:dee", "blocked", t(5)),
            ]
        );
        assert_eq!(r.messages[0].content["subject"], json!("Your cart c1"));
        assert_eq!(
            r.steps["remind"],
            StepCounts {
                send: 1,
                held: 0,
                blocked: 1,
                failed: 1,
                held_out: 0
            }
        );
        // Quiet hours 9-12 in UTC hold a message decided at 11:00; a limit of one keeps
        // only the first message while counting all.
        let mut b = Backtest::new(
            tenant(),
            Workflow::parse(&json!({"trigger": {"event": {"name": "Product Added"}},
                "steps": [{"id": "now", "send": {"channel": "email", "template": {"subject": "s", "body": "b"}}}]}))
            .expect("workflow"),
            chrono_tz::UTC,
            &people,
            t(0),
            t(48),
        );
        for (tn, e) in &events {
            b.event(*tn, e);
        }
        let quiet = Policy {
            quiet_hours: Some((9, 12)),
            frequency_cap: Some(1),
            ..Policy::default()
        };
        let r = b.finish().judge(&quiet, &HashMap::new(), 1);
        assert_eq!(r.message_count, 4);
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].outcome, "held");
        assert_eq!(r.messages[0].send_at, Some(t(2)));
        // Ann's (11:00) is held to 12:00; Bob's (12:00) and Dee's (14:00) go; Cy has no
        // address.
        assert_eq!(r.steps["now"].held, 1);
        assert_eq!(r.steps["now"].failed, 1);
        assert_eq!(r.steps["now"].send, 2);
    }
}
