//! Funnels: how many persons did step 1, then step 2, … within a window.
//!
//! Modes ([`Order`]):
//! - `ordered` (default): ClickHouse `windowFunnel(window)` semantics. Steps must happen in
//!   order; other events may come between; every step must fall within `window` of the
//!   chain's first step (inclusive); equal timestamps count as in order. One difference: a
//!   single event never fills two steps (ClickHouse lets one row that matches steps 1 and 2
//!   count for both).
//! - `strict`: the steps must be consecutive events of the person (no other event of theirs in
//!   between), within the window.
//! - `any`: steps in any order; a person's level is the most distinct steps that have an event
//!   in some `[t, t + window]` where `t` is the time of one of their step events.
//!
//! Exclusion steps (`ordered` and `strict`, as in PostHog): a person whose counted chain has
//! an exclusion event strictly between its `from_step` and its `to_step` (or, when the chain
//! stopped before `to_step`, between `from_step` and the end of the window) is left out of
//! every count and reported in `excluded`. The counted chain is the one the kernel keeps:
//! for `ordered`, a step's time is the latest event of that step before the chain moved on.
//!
//! A chain must start inside `[from, to)`; later steps may fall up to `window` after `to`.
//! Events at the same time are taken in step order (as ClickHouse does), so "viewed" and
//! "added" in the same second count as in order whichever arrived first.
//! Persons are merged identities (the redirect array is applied first).
//!
//! The kernel is hand-written (one pass per person over events sorted by person and time)
//! and compared with plain reference implementations in the tests.

use chrono::{DateTime, Utc};
use livora_columnar::Table;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::person_props::PersonColumn;

/// The most steps a funnel may have.
pub const MAX_STEPS: usize = 32;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Ordered,
    Strict,
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    pub steps: Vec<Step>,
    pub window_seconds: i64,
    #[serde(default)]
    pub order: Order,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Also list the persons who converted at, or dropped off at, one step.
    #[serde(default)]
    pub persons: Option<PersonsAt>,
    /// Also count per value of an event property.
    #[serde(default)]
    pub breakdown: Option<FunnelBreakdown>,
    /// Persons who did one of these between two steps are left out.
    #[serde(default)]
    pub exclusions: Vec<Exclusion>,
}

/// An exclusion step: an event (with filters) that disqualifies a person when it happens
/// between two steps of their chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    pub event: String,
    #[serde(default)]
    pub filters: Vec<PropertyFilter>,
    /// The step after which the event disqualifies (from 0).
    pub from_step: usize,
    /// The step before which it disqualifies.
    pub to_step: usize,
}

impl Exclusion {
    fn step(&self) -> Step {
        Step {
            event: self.event.clone(),
            filters: self.filters.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelBreakdown {
    pub property: String,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub attribution: Attribution,
    #[serde(default = "default_breakdown_limit")]
    pub limit: usize,
}

fn default_breakdown_limit() -> usize {
    10
}

/// Which event of a person's chain gives their breakdown value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// The chain's first step.
    #[default]
    FirstTouch,
    /// The last step the person reached.
    LastTouch,
}

/// One breakdown value's funnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakdownRow {
    /// The value; `null` for persons whose event had none; `$other` beyond the limit.
    pub value: Option<String>,
    pub counts: Vec<u64>,
    pub conversion_rates: Vec<f64>,
}

/// Which persons to list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonsAt {
    /// The step, from 0.
    pub step: usize,
    pub status: PersonStatus,
    #[serde(default = "default_persons_limit")]
    pub limit: usize,
}

fn default_persons_limit() -> usize {
    100
}

/// The most persons one answer lists.
pub const MAX_PERSONS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonStatus {
    /// Reached the step.
    Converted,
    /// Reached the step before but not this one.
    Dropped,
}

/// A person in an answer: the ids merged into them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersonRef {
    pub user_ids: Vec<String>,
    pub anonymous_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The event name (`$page`, `$screen`, `$identify` … for the other call types).
    pub event: String,
    #[serde(default)]
    pub filters: Vec<PropertyFilter>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    pub property: String,
    pub op: Op,
    #[serde(default)]
    pub value: Option<Value>,
    /// `event` (default): the event's property; `person`: the person's (latest `identify`
    /// trait).
    #[serde(default)]
    pub source: Source,
}

/// Whose property: the event's or the person's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    #[default]
    Event,
    Person,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    IsSet,
    IsNotSet,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelResult {
    pub steps: Vec<StepResult>,
    /// The persons asked for with `persons` (the first `limit`, in id order), and how many
    /// there are in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persons: Option<Vec<PersonRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persons_total: Option<u64>,
    /// Per breakdown value, ranked by persons entering (ties by value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Vec<BreakdownRow>>,
    /// Persons left out by exclusion steps (present when the query has some).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    pub event: String,
    /// Persons who reached this step.
    pub count: u64,
    /// `count` over the first step's count (1.0 for the first step; 0 when nobody entered).
    pub conversion_rate: f64,
    /// `count` over the previous step's count.
    pub step_conversion_rate: f64,
    /// Seconds from the first step to this one, over the persons who reached it (not in `any`
    /// mode).
    pub median_seconds: Option<f64>,
    pub average_seconds: Option<f64>,
}

/// A step resolved against a table's dictionaries.
pub(crate) struct Matcher {
    name: Option<u32>,
    filters: Vec<(Option<u32>, Op, Option<Value>)>,
    /// Filters on person properties: the property per canonical person, and the filter.
    person_filters: Vec<(PersonColumn, Op, Option<Value>)>,
    /// Only computed when there are person filters.
    redirects: Vec<u32>,
}

impl Matcher {
    pub(crate) fn new(t: &Table, s: &Step) -> Self {
        let redirects = if s.filters.iter().any(|f| f.source == Source::Person) {
            t.persons.redirects()
        } else {
            Vec::new()
        };
        Matcher {
            name: t.names.get(&s.event),
            filters: s
                .filters
                .iter()
                .filter(|f| f.source == Source::Event)
                .map(|f| (t.keys.get(&f.property), f.op, f.value.clone()))
                .collect(),
            person_filters: s
                .filters
                .iter()
                .filter(|f| f.source == Source::Person)
                .map(|f| {
                    (
                        PersonColumn::build(t, &redirects, &f.property),
                        f.op,
                        f.value.clone(),
                    )
                })
                .collect(),
            redirects,
        }
    }

    /// The event names this step can match (none if its event was never seen): the sealed
    /// chunks without them hold no row for it ([`Table::ranges_with`]).
    pub(crate) fn names(&self) -> &[u32] {
        self.name.as_slice()
    }

    pub(crate) fn matches(&self, t: &Table, row: usize) -> bool {
        self.matches_named(t, row, t.name[row])
    }

    /// The rows of `range` this step matches, in order. The name column is scanned 64 rows
    /// at a time into a bit mask (a loop the compiler vectorises); only rows with the step's
    /// event name are looked at further, and only when the step has filters.
    pub(crate) fn rows<'a>(
        &'a self,
        t: &'a Table,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = usize> + 'a {
        let name_only = self.filters.is_empty() && self.person_filters.is_empty();
        let (mut next, end) = (range.start, range.end);
        let (mut bits, mut base) = (0u64, range.start);
        std::iter::from_fn(move || {
            let target = self.name?;
            loop {
                while bits != 0 {
                    let row = base + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if name_only || self.matches_named(t, row, target) {
                        return Some(row);
                    }
                }
                if next >= end {
                    return None;
                }
                let stop = (next + 64).min(end);
                base = next;
                for (j, n) in t.name[next..stop].iter().enumerate() {
                    bits |= u64::from(*n == target) << j;
                }
                next = stop;
            }
        })
    }

    /// [`Matcher::matches`] for a row whose event name the caller has read already.
    pub(crate) fn matches_named(&self, t: &Table, row: usize, name: u32) -> bool {
        if self.name != Some(name) {
            return false;
        }
        let events = self.filters.iter().all(|(key, op, value)| {
            let s = key.and_then(|k| t.str_at(k, row));
            let n = key.and_then(|k| t.num_at(k, row));
            compare(*op, value.as_ref(), s, n)
        });
        events && {
            let p = t.person[row] as usize;
            let person = self.redirects.get(p).copied().unwrap_or(p as u32) as usize;
            self.person_filters.iter().all(|(col, op, value)| {
                compare(
                    *op,
                    value.as_ref(),
                    col.str_at(t, person),
                    col.num_at(person),
                )
            })
        }
    }
}

/// The steps a row matches, as a bit mask (bit `i`: matcher `i`): steps without filters
/// match by event name alone, one table lookup per row.
pub(crate) struct StepMasks<'a> {
    by_name: Vec<u32>,
    filtered: Vec<(u32, &'a Matcher)>,
}

impl<'a> StepMasks<'a> {
    pub(crate) fn new(t: &Table, matchers: &'a [Matcher]) -> Self {
        let mut by_name = vec![0u32; t.names.len()];
        let mut filtered = Vec::new();
        for (i, m) in matchers.iter().enumerate() {
            match m.name {
                Some(name) if m.filters.is_empty() && m.person_filters.is_empty() => {
                    by_name[name as usize] |= 1 << i;
                }
                Some(_) => filtered.push((1 << i, m)),
                None => {}
            }
        }
        Self { by_name, filtered }
    }

    #[inline]
    pub(crate) fn mask(&self, t: &Table, row: usize, name: u32) -> u32 {
        let mut mask = self.by_name.get(name as usize).copied().unwrap_or(0);
        for (bit, m) in &self.filtered {
            if m.matches_named(t, row, name) {
                mask |= bit;
            }
        }
        mask
    }
}

/// A property filter on a value that is a string `s`, a number `n`, or not set.
fn compare(op: Op, value: Option<&Value>, s: Option<&str>, n: Option<f64>) -> bool {
    let set = s.is_some() || n.is_some();
    match op {
        Op::IsSet => set,
        Op::IsNotSet => !set,
        _ => {
            let Some(value) = value else { return false };
            let ord = match (value, s, n) {
                (Value::String(v), Some(s), _) => Some(s.cmp(v.as_str())),
                (Value::Bool(v), Some(s), _) => Some(s.cmp(if *v { "true" } else { "false" })),
                (Value::Number(v), _, Some(n)) => v.as_f64().and_then(|v| n.partial_cmp(&v)),
                _ => None,
            };
            match (op, ord) {
                (Op::Neq, None) => true,
                (_, None) => false,
                (Op::Eq, Some(o)) => o.is_eq(),
                (Op::Neq, Some(o)) => o.is_ne(),
                (Op::Gt, Some(o)) => o.is_gt(),
                (Op::Gte, Some(o)) => o.is_ge(),
                (Op::Lt, Some(o)) => o.is_lt(),
                (Op::Lte, Some(o)) => o.is_le(),
                (Op::IsSet | Op::IsNotSet, _) => unreachable!("handled above"),
            }
        }
    }
}

impl Step {
    /// Checks the step; `what` names it in messages ("step 2", "`start_event`").
    pub(crate) fn validate(&self, what: &str) -> Result<(), Error> {
        if self.event.is_empty() {
            return Err(Error::Invalid(format!("{what} has no `event`")));
        }
        for f in &self.filters {
            let ok = matches!(
                (f.op, &f.value),
                (Op::IsSet | Op::IsNotSet, None)
                    | (
                        Op::Eq | Op::Neq,
                        Some(Value::String(_) | Value::Number(_) | Value::Bool(_))
                    )
                    | (
                        Op::Gt | Op::Gte | Op::Lt | Op::Lte,
                        Some(Value::String(_) | Value::Number(_))
                    )
            );
            if !ok {
                return Err(Error::Invalid(format!(
                    "{what}: a filter on `{}` with op {:?} needs {}",
                    f.property,
                    f.op,
                    match f.op {
                        Op::IsSet | Op::IsNotSet => "no `value`",
                        Op::Eq | Op::Neq => "a string, number or boolean `value`",
                        _ => "a string or number `value`",
                    }
                )));
            }
        }
        Ok(())
    }
}

/// One event of one person, as the per-person kernels see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub ts: i64,
    /// Bit `i` set when the event matches step `i`.
    pub mask: u32,
    /// The breakdown property's value on this event (`0`: none; else value id + 1).
    pub value: u32,
}

/// What a per-person kernel found: the level reached and, for each reached step, the
/// microseconds from the chain's first step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reached {
    pub level: usize,
    pub elapsed_us: Vec<i64>,
    /// The breakdown values of the chain that first reached `level`: on its first step
    /// (first touch) and on the event that reached `level` (last touch).
    pub first_value: u32,
    pub last_value: u32,
    /// When the chain started (µs).
    pub start: i64,
}

impl FunnelQuery {
    fn validate(&self) -> Result<(), Error> {
        let n = self.steps.len();
        if !(2..=MAX_STEPS).contains(&n) {
            return Err(Error::Invalid(format!(
                "a funnel needs 2 to {MAX_STEPS} steps, got {n}"
            )));
        }
        if self.window_seconds <= 0 {
            return Err(Error::Invalid("`window_seconds` must be positive".into()));
        }
        if self.from >= self.to {
            return Err(Error::Invalid("`from` must be before `to`".into()));
        }
        for (i, s) in self.steps.iter().enumerate() {
            s.validate(&format!("step {i}"))?;
        }
        if !self.exclusions.is_empty() && self.order == Order::Any {
            return Err(Error::Invalid(
                "exclusion steps need `ordered` or `strict` order".into(),
            ));
        }
        if n + self.exclusions.len() > MAX_STEPS {
            return Err(Error::Invalid(format!(
                "steps and exclusion steps together must be at most {MAX_STEPS}"
            )));
        }
        for (i, x) in self.exclusions.iter().enumerate() {
            x.step().validate(&format!("exclusion {i}"))?;
            if x.from_step >= x.to_step || x.to_step >= n {
                return Err(Error::Invalid(format!(
                    "exclusion {i}: needs `from_step` < `to_step` < {n} (the number of steps)"
                )));
            }
        }
        if let Some(b) = &self.breakdown
            && !(1..=100).contains(&b.limit)
        {
            return Err(Error::Invalid(
                "`breakdown.limit` must be between 1 and 100".into(),
            ));
        }
        if let Some(p) = &self.persons {
            if p.step >= n || (p.status == PersonStatus::Dropped && p.step == 0) {
                return Err(Error::Invalid(format!(
                    "`persons.step` must be a step index below {n} (and at least 1 for `dropped`)"
                )));
            }
            if !(1..=MAX_PERSONS).contains(&p.limit) {
                return Err(Error::Invalid(format!(
                    "`persons.limit` must be between 1 and {MAX_PERSONS}"
                )));
            }
        }
        Ok(())
    }
}

/// Runs a funnel over a tenant's table. `redirects` maps every person id to its canonical
/// id (from [`livora_columnar::Persons::redirects`]).
pub fn funnel(t: &Table, redirects: &[u32], q: &FunnelQuery) -> Result<FunnelResult, Error> {
    q.validate()?;
    let n = q.steps.len();
    // Exclusion steps take the mask bits after the steps.
    let exclusion_steps: Vec<Step> = q.exclusions.iter().map(Exclusion::step).collect();
    let matchers: Vec<Matcher> = q
        .steps
        .iter()
        .chain(&exclusion_steps)
        .map(|s| Matcher::new(t, s))
        .collect();
    let window = q.window_seconds.saturating_mul(1_000_000);
    let from = q.from.timestamp_micros();
    let to = q.to.timestamp_micros();
    let scan_to = to.saturating_add(window);

    let masks = StepMasks::new(t, &matchers);
    let breakdown_col = q
        .breakdown
        .as_ref()
        .filter(|b| b.source == Source::Event)
        .and_then(|b| t.keys.get(&b.property))
        .and_then(|k| t.strings.get(&k));
    let person_breakdown = q
        .breakdown
        .as_ref()
        .filter(|b| b.source == Source::Person)
        .map(|b| PersonColumn::build(t, redirects, &b.property));
    let last_touch = q
        .breakdown
        .as_ref()
        .is_some_and(|b| b.attribution == Attribution::LastTouch);
    // The level a listed person must have: `step + 1` or more when converted, exactly `step`
    // when dropped.
    let wanted = q.persons.as_ref().map(|p| (p.step, p.status));
    // Each person's events in the scanned span (strict mode keeps the events that match no
    // step: they break chains), in time order, through the kernel; partial sums per core.
    let select = |row: usize, name: u32| {
        let mask = masks.mask(t, row, name);
        if mask == 0 {
            return (0, 0);
        }
        let value = match &person_breakdown {
            Some(col) => {
                let p = t.person[row] as usize;
                let person = redirects.get(p).copied().unwrap_or(p as u32);
                col.strs.get(person as usize).copied().unwrap_or(0)
            }
            None => breakdown_col.and_then(|c| c.get(row)).unwrap_or(0),
        };
        (mask, value)
    };
    let span = crate::grouped::Span {
        from,
        to: scan_to,
        keep_unmatched: q.order == Order::Strict,
        ordered: true,
    };
    let partials = crate::grouped::per_person(
        t,
        redirects,
        &span,
        select,
        || Partial::new(n),
        |part, p, rows| {
            let reached = if q.exclusions.is_empty() {
                match q.order {
                    Order::Ordered => ordered(rows, n, window, from, to),
                    Order::Strict => strict(rows, n, window, from, to),
                    Order::Any => any_order(rows, n, window, from, to),
                }
            } else {
                let reached = match q.order {
                    Order::Strict => strict(rows, n, window, from, to),
                    _ => ordered_impl::<true>(rows, n, window, from, to, &mut part.path),
                };
                if q.order == Order::Strict {
                    part.path.clear();
                    part.path
                        .extend(reached.elapsed_us.iter().map(|e| e + reached.start));
                }
                if excluded_by(rows, n, &part.path, reached.level, window, &q.exclusions) {
                    part.excluded += 1;
                    return;
                }
                reached
            };
            for c in part.counts.iter_mut().take(reached.level) {
                *c += 1;
            }
            for (i, us) in reached.elapsed_us.iter().enumerate() {
                part.elapsed[i].push(*us);
            }
            let list = match wanted {
                Some((step, PersonStatus::Converted)) => reached.level > step,
                Some((step, PersonStatus::Dropped)) => reached.level == step,
                None => false,
            };
            if list {
                part.listed.push(p as u32);
            }
            if q.breakdown.is_some() {
                let v = if last_touch {
                    reached.last_value
                } else {
                    reached.first_value
                };
                let row = part.by_value.entry(v).or_insert_with(|| vec![0; n]);
                for c in row.iter_mut().take(reached.level) {
                    *c += 1;
                }
            }
        },
    );
    let mut counts = vec![0u64; n];
    let mut elapsed: Vec<Vec<i64>> = vec![Vec::new(); n];
    let mut listed = Vec::new();
    let mut by_value: hashbrown::HashMap<u32, Vec<u64>> = hashbrown::HashMap::new();
    let mut excluded = 0;
    for Partial {
        counts: c,
        elapsed: e,
        listed: l,
        by_value: v,
        excluded: x,
        ..
    } in partials
    {
        excluded += x;
        for i in 0..n {
            counts[i] += c[i];
            elapsed[i].extend_from_slice(&e[i]);
        }
        listed.extend(l);
        for (value, row) in v {
            let into = by_value.entry(value).or_insert_with(|| vec![0; n]);
            for (a, b) in into.iter_mut().zip(row) {
                *a += b;
            }
        }
    }
    let breakdown = q
        .breakdown
        .as_ref()
        .map(|b| breakdown_rows(t, by_value, b.limit, n));
    let persons_total = q.persons.as_ref().map(|_| listed.len() as u64);
    let persons = q
        .persons
        .as_ref()
        .map(|p| name_persons(t, redirects, &listed[..listed.len().min(p.limit)]));

    let first = counts[0];
    let steps = q
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let rate = |num: u64, den: u64| {
                if den == 0 {
                    0.0
                } else {
                    num as f64 / den as f64
                }
            };
            let times = &mut elapsed[i];
            let (median, average) = if q.order == Order::Any || times.is_empty() {
                (None, None)
            } else {
                // The median by selection, not a full sort: linear in the persons.
                let len = times.len();
                let (below, mid, _) = times.select_nth_unstable(len / 2);
                let mid = *mid as f64;
                let median = if len % 2 == 1 {
                    mid
                } else {
                    let lower = below.iter().max().copied().unwrap_or_default() as f64;
                    (lower + mid) / 2.0
                };
                let sum: i128 = times.iter().map(|t| i128::from(*t)).sum();
                (Some(median / 1e6), Some(sum as f64 / len as f64 / 1e6))
            };
            StepResult {
                event: s.event.clone(),
                count: counts[i],
                conversion_rate: rate(counts[i], first),
                step_conversion_rate: if i == 0 {
                    rate(counts[0], first)
                } else {
                    rate(counts[i], counts[i - 1])
                },
                median_seconds: median,
                average_seconds: average,
            }
        })
        .collect();
    Ok(FunnelResult {
        steps,
        persons,
        persons_total,
        breakdown,
        excluded: (!q.exclusions.is_empty()).then_some(excluded),
    })
}

/// One core's sums: counts per step, elapsed times per step, listed persons, counts per step
/// per breakdown value, excluded persons (and the kernel's scratch path).
struct Partial {
    counts: Vec<u64>,
    elapsed: Vec<Vec<i64>>,
    listed: Vec<u32>,
    by_value: hashbrown::HashMap<u32, Vec<u64>>,
    excluded: u64,
    path: Vec<i64>,
}

impl Partial {
    fn new(n: usize) -> Self {
        Self {
            counts: vec![0; n],
            elapsed: vec![Vec::new(); n],
            listed: Vec::new(),
            by_value: hashbrown::HashMap::new(),
            excluded: 0,
            path: Vec::new(),
        }
    }
}

/// Ranks breakdown values by persons entering (ties: by value), keeps `limit`, folds the rest
/// into `$other`; the no-value row comes last.
fn breakdown_rows(
    t: &Table,
    by_value: hashbrown::HashMap<u32, Vec<u64>>,
    limit: usize,
    n: usize,
) -> Vec<BreakdownRow> {
    let name = |v: u32| (v != 0).then(|| t.values.value(v - 1).unwrap_or("").to_owned());
    let mut valued: Vec<(Option<String>, Vec<u64>)> = Vec::new();
    let mut none = None;
    for (v, counts) in by_value {
        if v == 0 {
            none = Some(counts);
        } else {
            valued.push((name(v), counts));
        }
    }
    valued.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
    let mut rows: Vec<(Option<String>, Vec<u64>)> = Vec::new();
    let mut other = vec![0u64; n];
    let overflow = valued.len() > limit;
    for (i, (v, counts)) in valued.into_iter().enumerate() {
        if i < limit {
            rows.push((v, counts));
        } else {
            for (a, b) in other.iter_mut().zip(counts) {
                *a += b;
            }
        }
    }
    if overflow {
        rows.push((Some("$other".into()), other));
    }
    if let Some(counts) = none {
        rows.push((None, counts));
    }
    rows.into_iter()
        .map(|(value, counts)| BreakdownRow {
            value,
            conversion_rates: counts
                .iter()
                .map(|c| {
                    if counts[0] == 0 {
                        0.0
                    } else {
                        *c as f64 / counts[0] as f64
                    }
                })
                .collect(),
            counts,
        })
        .collect()
}

/// The user and anonymous ids merged into each canonical person of `canonical` (in order).
fn name_persons(t: &Table, redirects: &[u32], canonical: &[u32]) -> Vec<PersonRef> {
    let slot: hashbrown::HashMap<u32, usize> =
        canonical.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut out = vec![
        PersonRef {
            user_ids: Vec::new(),
            anonymous_ids: Vec::new(),
        };
        canonical.len()
    ];
    for (id, root) in redirects.iter().enumerate() {
        if let Some(&i) = slot.get(root)
            && let Some((user, key)) = t.persons.describe(id as u32)
        {
            let list = if user {
                &mut out[i].user_ids
            } else {
                &mut out[i].anonymous_ids
            };
            list.push(key.to_owned());
        }
    }
    out
}

/// `ordered`: one pass, keeping for each step the chain (start, time) that last reached it.
/// A later start is never worse (its deadline is later), so only the latest chain per step
/// matters. Steps of one event are tried from the last to the first, so an event never fills
/// two steps.
pub fn ordered(rows: &[Row], n: usize, window: i64, from: i64, to: i64) -> Reached {
    ordered_impl::<false>(rows, n, window, from, to, &mut Vec::new())
}

/// [`ordered`]; with `PATHS`, also the time of each step of the chain that reached the
/// final level, into `path` (for exclusion steps).
pub(crate) fn ordered_impl<const PATHS: bool>(
    rows: &[Row],
    n: usize,
    window: i64,
    from: i64,
    to: i64,
    path: &mut Vec<i64>,
) -> Reached {
    // Per step: (chain start, time reached, value on the chain's first step).
    let mut reached: Vec<Option<(i64, i64, u32)>> = vec![None; n];
    let mut paths: Vec<[i64; MAX_STEPS]> = if PATHS {
        vec![[0; MAX_STEPS]; n]
    } else {
        Vec::new()
    };
    let (mut best, mut first_value, mut last_value) = (0, 0, 0);
    for r in rows {
        for i in (0..n).rev() {
            if r.mask & (1 << i) == 0 {
                continue;
            }
            let set = if i == 0 {
                (from..to).contains(&r.ts).then_some((r.ts, r.ts, r.value))
            } else {
                reached[i - 1]
                    .filter(|(start, _, _)| r.ts <= start.saturating_add(window))
                    .map(|(start, _, v)| (start, r.ts, v))
            };
            if let Some(chain) = set {
                reached[i] = Some(chain);
                if PATHS {
                    // Steps of one event go from the last to the first, so `i - 1` still
                    // holds the chain this step extends.
                    if i > 0 {
                        paths[i] = paths[i - 1];
                    }
                    paths[i][i] = r.ts;
                }
                if i + 1 > best {
                    (best, first_value, last_value) = (i + 1, chain.2, r.value);
                }
            }
        }
        if reached[n - 1].is_some() {
            break;
        }
    }
    // A step is only ever reached from the one before, so the reached steps are a prefix.
    let level = reached.iter().take_while(|r| r.is_some()).count();
    if PATHS {
        path.clear();
        if level > 0 {
            path.extend_from_slice(&paths[level - 1][..level]);
        }
    }
    Reached {
        start: reached
            .get(level.wrapping_sub(1))
            .copied()
            .flatten()
            .map_or(0, |c| c.0),
        level,
        elapsed_us: reached
            .iter()
            .take(level)
            .map(|r| r.map_or(0, |(s, t, _)| t - s))
            .collect(),
        first_value,
        last_value,
    }
}

/// `strict`: from each first-step event, walk the person's following events while each one
/// is the next step and within the window; keep the longest walk (the earliest on ties).
pub fn strict(rows: &[Row], n: usize, window: i64, from: i64, to: i64) -> Reached {
    let mut best = Reached::default();
    for (j, r) in rows.iter().enumerate() {
        if r.mask & 1 == 0 || !(from..to).contains(&r.ts) {
            continue;
        }
        let deadline = r.ts.saturating_add(window);
        let mut level = 1;
        while level < n {
            match rows.get(j + level) {
                Some(next) if next.mask & (1 << level) != 0 && next.ts <= deadline => level += 1,
                _ => break,
            }
        }
        if level > best.level {
            best = Reached {
                level,
                elapsed_us: (0..level).map(|k| rows[j + k].ts - r.ts).collect(),
                first_value: r.value,
                last_value: rows[j + level - 1].value,
                start: r.ts,
            };
            if level == n {
                break;
            }
        }
    }
    best
}

/// `any`: for each step event in range, the distinct steps with an event in
/// `[ts, ts + window]` (two pointers over the time-sorted events). Both attributions are the
/// value on the event that opens the best window.
pub fn any_order(rows: &[Row], n: usize, window: i64, from: i64, to: i64) -> Reached {
    let mut best = 0usize;
    let mut value = 0u32;
    let mut end = 0;
    let mut counts = vec![0u32; n];
    let mut distinct = 0usize;
    let mut start = 0;
    for (j, r) in rows.iter().enumerate() {
        // Drop events before this one's time from the window.
        while start < j && rows[start].ts < r.ts {
            for (i, c) in counts.iter_mut().enumerate() {
                if rows[start].mask & (1 << i) != 0 {
                    *c -= 1;
                    distinct -= usize::from(*c == 0);
                }
            }
            start += 1;
        }
        let deadline = r.ts.saturating_add(window);
        while end < rows.len() && rows[end].ts <= deadline {
            for (i, c) in counts.iter_mut().enumerate() {
                if rows[end].mask & (1 << i) != 0 {
                    distinct += usize::from(*c == 0);
                    *c += 1;
                }
            }
            end += 1;
        }
        if r.mask != 0 && (from..to).contains(&r.ts) && distinct > best {
            best = distinct;
            value = r.value;
        }
    }
    Reached {
        level: best,
        elapsed_us: Vec::new(),
        first_value: value,
        last_value: value,
        start: 0,
    }
}

/// Whether a person's chain (`path`: its step times, `level` steps long) has an exclusion
/// event (mask bit `n + k` for exclusion `k`) strictly inside an exclusion's interval.
fn excluded_by(
    rows: &[Row],
    n: usize,
    path: &[i64],
    level: usize,
    window: i64,
    exclusions: &[Exclusion],
) -> bool {
    exclusions.iter().enumerate().any(|(k, x)| {
        if level <= x.from_step {
            return false;
        }
        let lo = path[x.from_step];
        let hi = if level > x.to_step {
            path[x.to_step]
        } else {
            path[0].saturating_add(window)
        };
        rows.iter()
            .any(|r| r.mask & (1 << (n + k)) != 0 && lo < r.ts && r.ts < hi)
    })
}

#[cfg(test)]
mod tests;
