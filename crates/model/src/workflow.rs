//! Workflow definitions: what starts a journey, the steps it goes through, and what ends it.
//!
//! ```json
//! {"trigger": {"event": {"name": "Product Added"}},
//!  "goal": {"event": "Order Completed", "same": ["cart_id"]},
//!  "steps": [
//!    {"id": "wait", "wait_for": {"event": "Order Completed", "same": ["cart_id"],
//!                                "timeout_minutes": 60}},
//!    {"id": "remind", "send": {"channel": "email",
//!                              "template": {"subject": "Still thinking?", "body": "Hi {{ traits.first_name }}"}}}
//!  ]}
//! ```
//!
//! Steps run in the order written unless a step says where to go (`next`, a branch's
//! `then` / `else`, a split's branches, a wait's `on_event` / `on_timeout`); after the last
//! step the journey ends. `same` names event properties that must equal those of the event
//! that started the journey (the cart of an abandoned cart).
//!
//! [`Workflow::parse`] reads and validates one; an error names the offending part as a path
//! (`steps[1].wait_for.timeout_minutes`), as segment definitions do.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::segment::{
    Condition, DefinitionError, PropertyFilter, ValueRef, check_filters, check_name, err,
    visit_filters,
};

/// What starts a journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// The person performed this event (with properties matching `where`).
    Event(EventMatch),
    /// The person entered this segment (by id).
    SegmentEntered(String),
    SegmentExited(String),
    /// A smart tag (by name) was added to or removed from the person.
    TagAdded(String),
    TagRemoved(String),
    /// On a schedule: every member of `segment` (everyone with a profile when absent)
    /// enters at each time the cron expression gives, in the tenant's time zone.
    Schedule(Schedule),
    /// Only through the API (`POST /api/v1/workflows/{id}/trigger`).
    Api(Empty),
}

/// An empty object (`{}`), for variants that take nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// An event by name, with property filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMatch {
    pub name: String,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<PropertyFilter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Five fields (minute hour day-of-month month day-of-week), e.g. `0 9 * * MON`.
    pub cron: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

impl Schedule {
    /// The cron expression, parsed.
    pub fn parsed(&self) -> Result<croner::Cron, String> {
        use std::str::FromStr;
        croner::Cron::from_str(&self.cron).map_err(|e| format!("{:?}: {e}", self.cron))
    }
}

/// When a person who was already in this workflow may enter it again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reentry {
    /// Never again.
    Once,
    /// Once the previous journey has ended (the default).
    #[default]
    AfterExit,
    /// Once the previous journey has ended and `N` days have passed since it started.
    AfterDays(u32),
    /// Every trigger starts a journey, even while another one runs (one per cart, say).
    Always,
}

/// The goal: performing it ends the journey wherever it is, and counts as a conversion
/// when it comes within `within_days` of entering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    pub event: String,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<PropertyFilter>,
    /// Properties that must equal those of the triggering event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same: Vec<String>,
    #[serde(default = "default_goal_days")]
    pub within_days: u32,
}

fn default_goal_days() -> u32 {
    7
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique within the workflow; what `next` and branches refer to.
    pub id: String,
    #[serde(flatten)]
    pub action: Action,
    /// The step after this one (default: the next in the list; the end after the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Waits a fixed time.
    Delay(Delay),
    /// Waits until a local time of day (on given weekdays) in the person's time zone (the
    /// `timezone` trait, else the tenant's).
    DelayUntil(LocalTime),
    /// Waits until the person's best hour to receive messages (their `best_hour`
    /// prediction, from their own engagement and the tenant's, in their time zone) on the
    /// given weekdays; `time` is used for persons without one.
    DelayUntilBestHour(LocalTime),
    /// Waits until the time held in a trait, plus an offset (negative: before it).
    DelayUntilTrait(TraitTime),
    /// Waits for an event, at most `timeout_minutes`.
    WaitFor(WaitFor),
    /// Goes to `then` if the condition holds for the person, else to `else`. A condition on
    /// behaviour (events) is kept as a segment, [`branch_segment`], maintained as events
    /// arrive.
    Branch(Branch),
    /// Goes to one branch at random, by weight (the same person always gets the same one).
    Split(Split),
    /// Sends a message (through the outbox and the delivery policy).
    Send(Send),
    /// Sets a trait on the person's profile.
    UpdateTrait(SetTrait),
    /// Adds a tag to the person: kept in their `tags` trait (a list), which branches'
    /// `tag` conditions read beside the smart tags, and segments as a trait.
    AddTag(String),
    /// Removes a tag a workflow added.
    RemoveTag(String),
    /// Calls a webhook (signed; through the outbox, like a message).
    Webhook(Webhook),
    /// Ends the journey.
    Exit(Empty),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    #[serde(default)]
    pub seconds: u32,
    #[serde(default)]
    pub minutes: u32,
    #[serde(default)]
    pub hours: u32,
    #[serde(default)]
    pub days: u32,
}

impl Delay {
    pub fn seconds(&self) -> i64 {
        i64::from(self.seconds)
            + i64::from(self.minutes) * 60
            + i64::from(self.hours) * 3600
            + i64::from(self.days) * 86_400
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTime {
    /// `HH:MM`, 24-hour.
    pub time: String,
    /// `mon` … `sun`; every day when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<String>,
}

impl LocalTime {
    /// (hour, minute).
    pub fn hour_minute(&self) -> Option<(u32, u32)> {
        let (h, m) = self.time.split_once(':')?;
        let (h, m) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && self.time.len() == 5).then_some((h, m))
    }

    /// The weekdays as numbers from Monday (0) on; every day when none are given.
    pub fn days(&self) -> Option<Vec<u32>> {
        if self.weekdays.is_empty() {
            return Some((0..7).collect());
        }
        self.weekdays
            .iter()
            .map(|d| WEEKDAYS.iter().position(|w| w.eq_ignore_ascii_case(d)))
            .map(|p| p.map(|p| p as u32))
            .collect()
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraitTime {
    #[serde(rename = "trait")]
    pub name: String,
    #[serde(default)]
    pub offset_minutes: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    pub event: String,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<PropertyFilter>,
    /// Properties that must equal those of the triggering event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same: Vec<String>,
    pub timeout_minutes: u32,
    /// Where to go when the event comes (default: the end of the journey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_event: Option<String>,
    /// Where to go on timeout (default: the next step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    #[serde(rename = "if")]
    pub condition: Condition,
    /// Default: the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<String>,
    /// Default: the next step.
    #[serde(default, rename = "else", skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub branches: Vec<SplitBranch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBranch {
    pub weight: u32,
    /// Default: the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Channels a message can go through.
pub const CHANNELS: [&str; 5] = ["email", "sms", "whatsapp", "push", "webhook"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Counts against frequency caps, waits for quiet hours, needs marketing consent.
    #[default]
    Marketing,
    /// Receipts and the like: only an explicit opt-out of the channel stops it.
    Transactional,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    pub channel: String,
    /// Template texts by part (`subject`, `body`, `html`; for WhatsApp outside the 24-hour
    /// window `template_name`, `language` and `params`), rendered over the person's traits,
    /// computed attributes and the triggering event.
    pub template: serde_json::Map<String, Value>,
    #[serde(default)]
    pub category: Category,
    /// The subscription group the person must not have left (e.g. `newsletter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTrait {
    pub name: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    /// A template for the body (JSON text once rendered); default: the person and event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub trigger: Trigger,
    #[serde(default)]
    pub reentry: Reentry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// Persons kept out of every message (0-50 %), to measure uplift against.
    #[serde(default)]
    pub holdout_percent: u8,
    pub steps: Vec<Step>,
}

const MAX_STEPS: usize = 200;

/// Where a step may go next, with the JSON path of the field that says so.
fn targets(step: &Step) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    if let Some(n) = &step.next {
        out.push(("next".to_owned(), n.as_str()));
    }
    match &step.action {
        Action::WaitFor(w) => {
            for (k, v) in [("on_event", &w.on_event), ("on_timeout", &w.on_timeout)] {
                if let Some(v) = v {
                    out.push((format!("wait_for.{k}"), v.as_str()));
                }
            }
        }
        Action::Branch(b) => {
            for (k, v) in [("then", &b.then), ("else", &b.otherwise)] {
                if let Some(v) = v {
                    out.push((format!("branch.{k}"), v.as_str()));
                }
            }
        }
        Action::Split(s) => {
            for (i, b) in s.branches.iter().enumerate() {
                if let Some(v) = &b.next {
                    out.push((format!("split.branches[{i}].next"), v.as_str()));
                }
            }
        }
        _ => {}
    }
    out
}

impl Workflow {
    /// Parses and validates a definition.
    pub fn parse(json: &Value) -> Result<Self, DefinitionError> {
        if let Some(steps) = json.get("steps").and_then(Value::as_array) {
            for (i, s) in steps.iter().enumerate() {
                check_step_keys(&format!("steps[{i}]"), s)?;
            }
        }
        let w: Workflow = serde_path_to_error::deserialize(json).map_err(|e| {
            let path = e.path().to_string();
            err(if path == "." { "" } else { &path }, e.inner().to_string())
        })?;
        w.validate()?;
        Ok(w)
    }

    /// The position of the step with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    /// Where step `i` goes by default: the step named by `next`, else the one after it
    /// (`None`: the end).
    pub fn after(&self, i: usize) -> Option<usize> {
        match &self.steps[i].next {
            Some(id) => self.position(id),
            None => (i + 1 < self.steps.len()).then_some(i + 1),
        }
    }

    /// Where `target` (a step id) or, without one, the default goes from step `i`.
    pub fn go(&self, i: usize, target: Option<&str>) -> Option<usize> {
        match target {
            Some(id) => self.position(id),
            None => self.after(i),
        }
    }

    fn validate(&self) -> Result<(), DefinitionError> {
        match &self.trigger {
            Trigger::Event(e) => {
                check_name("trigger.event.name", "an event name", &e.name)?;
                check_filters("trigger.event", &e.filters)?;
            }
            Trigger::SegmentEntered(s) | Trigger::SegmentExited(s) => {
                check_name("trigger", "a segment id", s)?
            }
            Trigger::TagAdded(s) | Trigger::TagRemoved(s) => {
                check_name("trigger", "a tag name", s)?
            }
            Trigger::Schedule(s) => {
                if s.cron.split_whitespace().count() != 5 {
                    return Err(err(
                        "trigger.schedule.cron",
                        "a cron expression has five fields: minute hour day-of-month month day-of-week",
                    ));
                }
                if let Err(e) = s.parsed() {
                    return Err(err("trigger.schedule.cron", e));
                }
                if let Some(seg) = &s.segment {
                    check_name("trigger.schedule.segment", "a segment id", seg)?;
                }
            }
            Trigger::Api(_) => {}
        }
        if let Reentry::AfterDays(d) = self.reentry
            && (d == 0 || d > 3650)
        {
            return Err(err("reentry.after_days", "1-3650 days"));
        }
        if let Some(g) = &self.goal {
            check_name("goal.event", "an event name", &g.event)?;
            check_filters("goal", &g.filters)?;
            for (i, p) in g.same.iter().enumerate() {
                check_name(&format!("goal.same[{i}]"), "a property name", p)?;
            }
            if g.within_days == 0 || g.within_days > 365 {
                return Err(err("goal.within_days", "1-365 days"));
            }
        }
        if self.holdout_percent > 50 {
            return Err(err("holdout_percent", "at most 50 (per cent)"));
        }
        if self.steps.is_empty() {
            return Err(err("steps", "needs at least one step"));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(err("steps", format!("at most {MAX_STEPS} steps")));
        }
        let mut seen = HashSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            let p = format!("steps[{i}]");
            check_name(&format!("{p}.id"), "a step id", &s.id)?;
            if !seen.insert(s.id.as_str()) {
                return Err(err(&format!("{p}.id"), format!("{:?} is used twice", s.id)));
            }
            s.validate(&p)?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            for (field, target) in targets(s) {
                if self.position(target).is_none() {
                    return Err(err(
                        &format!("steps[{i}].{field}"),
                        format!("no step has the id {target:?}"),
                    ));
                }
            }
        }
        self.check_loops()
    }

    /// A loop would let one journey run without end: refused.
    fn check_loops(&self) -> Result<(), DefinitionError> {
        let next_of = |i: usize| -> Vec<usize> {
            let s = &self.steps[i];
            let mut out: Vec<usize> = targets(s)
                .iter()
                .filter_map(|(_, t)| self.position(t))
                .collect();
            let defaults = match &s.action {
                Action::WaitFor(w) => w.on_timeout.is_none(),
                Action::Branch(b) => b.then.is_none() || b.otherwise.is_none(),
                Action::Split(sp) => sp.branches.iter().any(|b| b.next.is_none()),
                Action::Exit(_) => false,
                _ => s.next.is_none(),
            };
            if defaults && s.next.is_none() && i + 1 < self.steps.len() {
                out.push(i + 1);
            }
            out
        };
        // 0: not visited, 1: on the current path, 2: done.
        let mut state = vec![0u8; self.steps.len()];
        for start in 0..self.steps.len() {
            if state[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, next_of(start), 0usize)];
            state[start] = 1;
            while let Some((node, nexts, k)) = stack.last_mut() {
                if *k < nexts.len() {
                    let n = nexts[*k];
                    *k += 1;
                    match state[n] {
                        0 => {
                            state[n] = 1;
                            let nn = next_of(n);
                            stack.push((n, nn, 0));
                        }
                        1 => {
                            return Err(err(
                                &format!("steps[{}]", *node),
                                format!(
                                    "step {:?} leads back to step {:?}: workflows may not loop",
                                    self.steps[*node].id, self.steps[n].id
                                ),
                            ));
                        }
                        _ => {}
                    }
                } else {
                    state[*node] = 2;
                    stack.pop();
                }
            }
        }
        Ok(())
    }
}

/// Names a step's unknown or missing action clearly (a flattened enum cannot).
fn check_step_keys(path: &str, step: &Value) -> Result<(), DefinitionError> {
    const ACTIONS: [&str; 13] = [
        "delay",
        "delay_until",
        "delay_until_best_hour",
        "delay_until_trait",
        "wait_for",
        "branch",
        "split",
        "send",
        "update_trait",
        "add_tag",
        "remove_tag",
        "webhook",
        "exit",
    ];
    let Some(map) = step.as_object() else {
        return Err(err(path, "a step is an object"));
    };
    let mut actions = 0;
    for k in map.keys() {
        if ACTIONS.contains(&k.as_str()) {
            actions += 1;
        } else if k != "id" && k != "next" {
            return Err(err(
                &format!("{path}.{k}"),
                format!(
                    "unknown field; a step has id, next and one of {}",
                    ACTIONS.join(", ")
                ),
            ));
        }
    }
    if actions != 1 {
        return Err(err(
            path,
            format!(
                "a step has exactly one action: one of {}",
                ACTIONS.join(", ")
            ),
        ));
    }
    Ok(())
}

impl Step {
    fn validate(&self, p: &str) -> Result<(), DefinitionError> {
        match &self.action {
            Action::Delay(d) => {
                let s = d.seconds();
                if s <= 0 || s > 366 * 86_400 {
                    return Err(err(
                        &format!("{p}.delay"),
                        "a delay of 1 second to 366 days (seconds, minutes, hours and/or days)",
                    ));
                }
            }
            Action::DelayUntil(t) | Action::DelayUntilBestHour(t) => {
                let name = match &self.action {
                    Action::DelayUntil(_) => "delay_until",
                    _ => "delay_until_best_hour",
                };
                if t.hour_minute().is_none() {
                    return Err(err(&format!("{p}.{name}.time"), "a time as HH:MM"));
                }
                if t.days().is_none() {
                    return Err(err(
                        &format!("{p}.{name}.weekdays"),
                        "weekdays are mon, tue, wed, thu, fri, sat, sun",
                    ));
                }
            }
            Action::DelayUntilTrait(t) => {
                check_name(
                    &format!("{p}.delay_until_trait.trait"),
                    "a trait name",
                    &t.name,
                )?;
                if t.offset_minutes.unsigned_abs() > 366 * 1440 {
                    return Err(err(
                        &format!("{p}.delay_until_trait.offset_minutes"),
                        "at most 366 days either way",
                    ));
                }
            }
            Action::WaitFor(w) => {
                let q = format!("{p}.wait_for");
                check_name(&format!("{q}.event"), "an event name", &w.event)?;
                check_filters(&q, &w.filters)?;
                for (i, s) in w.same.iter().enumerate() {
                    check_name(&format!("{q}.same[{i}]"), "a property name", s)?;
                }
                if w.timeout_minutes == 0 || w.timeout_minutes > 366 * 1440 {
                    return Err(err(&format!("{q}.timeout_minutes"), "1 minute to 366 days"));
                }
            }
            Action::Branch(b) => {
                let q = format!("{p}.branch.if");
                b.condition.validate_at(&q)?;
            }
            Action::Split(s) => {
                if s.branches.len() < 2 {
                    return Err(err(&format!("{p}.split.branches"), "at least two branches"));
                }
                if s.branches.iter().all(|b| b.weight == 0) {
                    return Err(err(
                        &format!("{p}.split.branches"),
                        "at least one branch needs a weight above 0",
                    ));
                }
            }
            Action::Send(s) => {
                if !CHANNELS.contains(&s.channel.as_str()) {
                    return Err(err(
                        &format!("{p}.send.channel"),
                        format!("one of {}", CHANNELS.join(", ")),
                    ));
                }
                let needs: &[&str] = match s.channel.as_str() {
                    "email" => &["subject", "body"],
                    "whatsapp" => &[],
                    _ => &["body"],
                };
                for part in needs {
                    if !s.template.get(*part).is_some_and(Value::is_string) {
                        return Err(err(
                            &format!("{p}.send.template.{part}"),
                            format!("a {} message needs a {part} text", s.channel),
                        ));
                    }
                }
                if s.channel == "whatsapp"
                    && !s.template.get("body").is_some_and(Value::is_string)
                    && !s
                        .template
                        .get("template_name")
                        .is_some_and(Value::is_string)
                {
                    return Err(err(
                        &format!("{p}.send.template"),
                        "a WhatsApp message needs a body (inside the 24-hour window) and/or a template_name",
                    ));
                }
                if let Some(sub) = &s.subscription {
                    check_name(
                        &format!("{p}.send.subscription"),
                        "a subscription group",
                        sub,
                    )?;
                }
            }
            Action::UpdateTrait(t) => {
                check_name(&format!("{p}.update_trait.name"), "a trait name", &t.name)?
            }
            Action::AddTag(t) => check_name(&format!("{p}.add_tag"), "a tag name", t)?,
            Action::RemoveTag(t) => check_name(&format!("{p}.remove_tag"), "a tag name", t)?,
            Action::Webhook(w) => {
                let ok = w.url.starts_with("https://") || w.url.starts_with("http://");
                if !ok || w.url.len() > 2000 {
                    return Err(err(&format!("{p}.webhook.url"), "an http(s) URL"));
                }
            }
            Action::Exit(_) => {}
        }
        Ok(())
    }
}

/// Whether a condition looks at behaviour (events performed, last performed, not
/// followed by): such a branch is kept as a segment ([`branch_segment`]).
pub fn is_behavioural(c: &Condition) -> bool {
    let mut found = false;
    c.walk(&mut |c| {
        found |= matches!(
            c,
            Condition::Performed(_) | Condition::LastPerformed(_) | Condition::NotFollowedBy(_)
        )
    });
    found
}

/// The segment that keeps a behavioural branch condition of a workflow's step: the
/// profiles engine maintains it as events arrive and time passes, and the branch reads
/// the person's membership. `wf-<workflow>-<step>`, or a hash of both when that is longer
/// than an id may be.
pub fn branch_segment(workflow: &str, step: &str) -> String {
    let id = format!("wf-{workflow}-{step}");
    if id.len() <= 64 {
        return id;
    }
    // FNV-1a: stable everywhere.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in workflow.bytes().chain([b'|']).chain(step.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("wf-{h:016x}")
}

impl Workflow {
    /// Calls `f` with every trait and event property the workflow compares (its trigger's,
    /// goal's and waits' `where` filters, its branches' conditions) and the JSON path that
    /// names it (`steps[2].branch.if.trait.name`), as [`Condition::visit_values`].
    pub fn visit_values(&self, f: &mut dyn FnMut(&str, ValueRef<'_>)) {
        if let Trigger::Event(e) = &self.trigger {
            visit_filters("trigger.event", &e.filters, f);
        }
        if let Some(g) = &self.goal {
            visit_filters("goal", &g.filters, f);
        }
        for (i, s) in self.steps.iter().enumerate() {
            match &s.action {
                Action::Branch(b) => b
                    .condition
                    .visit_values(&format!("steps[{i}].branch.if"), f),
                Action::WaitFor(w) => visit_filters(&format!("steps[{i}].wait_for"), &w.filters, f),
                _ => {}
            }
        }
    }

    /// The steps that branch on behaviour: (step id, condition).
    pub fn behavioural_branches(&self) -> Vec<(&str, &Condition)> {
        self.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Branch(b) if is_behavioural(&b.condition) => {
                    Some((s.id.as_str(), &b.condition))
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn abandoned_cart() -> Value {
        json!({
            "trigger": {"event": {"name": "Product Added"}},
            "goal": {"event": "Order Completed", "same": ["cart_id"]},
            "steps": [
                {"id": "wait", "wait_for": {"event": "Order Completed", "same": ["cart_id"], "timeout_minutes": 60}},
                {"id": "remind", "send": {"channel": "email",
                    "template": {"subject": "Still thinking?", "body": "Hi {{ traits.first_name }}"}}}
            ]
        })
    }

    #[test]
    fn the_abandoned_cart_parses_and_round_trips() {
        let w = Workflow::parse(&abandoned_cart()).expect("valid");
        assert_eq!(w.steps.len(), 2);
        assert_eq!(w.reentry, Reentry::AfterExit);
        assert_eq!(w.after(0), Some(1));
        assert_eq!(w.after(1), None);
        let back = Workflow::parse(&serde_json::to_value(&w).expect("json")).expect("again");
        assert_eq!(back, w);
    }

    #[test]
    fn values_compared_by_filters_and_branches_are_found() {
        let mut v = abandoned_cart();
        v["trigger"]["event"]["where"] =
            json!([{"property": "email", "op": "contains", "value": "@"}]);
        v["goal"]["where"] = json!([{"property": "coupon", "op": "exists"}]);
        v["steps"][0]["wait_for"]["where"] =
            json!([{"property": "phone", "op": "equals", "value": "1"}]);
        v["steps"].as_array_mut().expect("steps").push(
            json!({"id": "b", "branch": {"if": {"and": [
                {"tag": "vip"},
                {"trait": {"name": "name", "op": "contains", "value": "A"}},
            ]}}}),
        );
        let w = Workflow::parse(&v).expect("valid");
        let mut seen = Vec::new();
        w.visit_values(&mut |path, v| seen.push(format!("{path} {v:?}")));
        assert_eq!(
            seen,
            [
                r#"trigger.event.where[0].property Property("email")"#,
                r#"steps[0].wait_for.where[0].property Property("phone")"#,
                r#"steps[2].branch.if.and[1].trait.name Trait("name")"#,
            ]
        );
    }

    fn error_at(v: Value) -> String {
        Workflow::parse(&v).expect_err("invalid").path
    }

    #[test]
    fn errors_point_at_the_offending_part() {
        let mut v = abandoned_cart();
        v["steps"][0]["wait_for"]["timeout_minutes"] = json!(0);
        assert_eq!(error_at(v), "steps[0].wait_for.timeout_minutes");
        let mut v = abandoned_cart();
        v["steps"][1]["send"]["channel"] = json!("fax");
        assert_eq!(error_at(v), "steps[1].send.channel");
        let mut v = abandoned_cart();
        v["steps"][1]["send"]["template"] = json!({"body": "no subject"});
        assert_eq!(error_at(v), "steps[1].send.template.subject");
        let mut v = abandoned_cart();
        v["steps"][0]["next"] = json!("nowhere");
        assert_eq!(error_at(v), "steps[0].next");
        let mut v = abandoned_cart();
        v["steps"][1]["id"] = json!("wait");
        assert_eq!(error_at(v), "steps[1].id");
        let mut v = abandoned_cart();
        v["steps"][1]["teleport"] = json!({});
        assert_eq!(error_at(v), "steps[1].teleport");
        let mut v = abandoned_cart();
        v["steps"][0] = json!({"id": "x"});
        assert_eq!(error_at(v), "steps[0]");
        let mut v = abandoned_cart();
        v["trigger"] = json!({"schedule": {"cron": "every day"}});
        assert_eq!(error_at(v), "trigger.schedule.cron");
        let mut v = abandoned_cart();
        v["trigger"] = json!({"schedule": {"cron": "61 * * * *"}});
        assert_eq!(error_at(v), "trigger.schedule.cron");
        let mut v = abandoned_cart();
        v["trigger"] = json!({"schedule": {"cron": "0 9 * * MON", "segment": "vip"}});
        assert!(Workflow::parse(&v).is_ok());
        let mut v = abandoned_cart();
        v["steps"][0] = json!({"id": "b", "branch": {"if": {"trait": {"name": "plan", "op": "gt", "value": "x"}}}});
        assert_eq!(error_at(v), "steps[0].branch.if.trait.value");
        let mut v = abandoned_cart();
        v["steps"][0] = json!({"id": "b", "branch": {"if": {"performed": {"event": ""}}}});
        assert!(error_at(v).starts_with("steps[0].branch.if.performed"));
        // Behaviour is allowed, kept as a segment.
        let mut v = abandoned_cart();
        v["steps"][0] = json!({"id": "b", "branch": {"if": {"and": [
            {"trait": {"name": "plan", "op": "equals", "value": "pro"}},
            {"performed": {"event": "Order Completed", "within_days": 30}}]}}});
        let w = Workflow::parse(&v).expect("a behavioural branch");
        let found = w.behavioural_branches();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "b");
        assert_eq!(branch_segment("cart", "b"), "wf-cart-b");
        let long = branch_segment(&"x".repeat(64), "b");
        assert!(long.len() <= 64 && long.starts_with("wf-"));
        assert_eq!(long, branch_segment(&"x".repeat(64), "b"));
        assert_ne!(long, branch_segment(&"x".repeat(64), "c"));
        let mut v = abandoned_cart();
        v["holdout_percent"] = json!(80);
        assert_eq!(error_at(v), "holdout_percent");
        let mut v = abandoned_cart();
        v["trigger"] = json!({"fax": "x"});
        assert_eq!(error_at(v), "trigger");
    }

    #[test]
    fn loops_are_refused_and_forward_jumps_are_not() {
        let mut v = abandoned_cart();
        v["steps"][1]["next"] = json!("wait");
        assert_eq!(error_at(v), "steps[1]");
        let v = json!({
            "trigger": {"segment_entered": "vip"},
            "steps": [
                {"id": "a", "branch": {"if": {"tag": "x"}, "then": "c"}},
                {"id": "b", "delay": {"hours": 1}},
                {"id": "c", "exit": {}}
            ]
        });
        let w = Workflow::parse(&v).expect("valid");
        assert_eq!(w.go(0, Some("c")), Some(2));
        assert_eq!(w.go(0, None), Some(1));
    }

    #[test]
    fn local_times_and_weekdays() {
        let t = LocalTime {
            time: "09:30".into(),
            weekdays: vec!["Mon".into(), "fri".into()],
        };
        assert_eq!(t.hour_minute(), Some((9, 30)));
        assert_eq!(t.days(), Some(vec![0, 4]));
        let bad = LocalTime {
            time: "9:3".into(),
            weekdays: vec!["someday".into()],
        };
        assert_eq!(bad.hour_minute(), None);
        assert_eq!(bad.days(), None);
    }
}
