//! Segment definitions: JSON conditions on a person's traits, computed attributes and
//! behaviour, combined with `and` / `or` / `not`.
//!
//! ```json
//! {"and": [
//!   {"trait": {"name": "plan", "op": "equals", "value": "pro"}},
//!   {"performed": {"event": "Order Completed",
//!                  "where": [{"property": "revenue", "op": "gt", "value": 50}],
//!                  "count": {"op": "at_least", "value": 2}, "within_days": 30}},
//!   {"not": {"in_segment": "churned"}}
//! ]}
//! ```
//!
//! [`Definition::parse`] reads and validates one; an error names the offending part as a
//! path (`and[1].performed.count.op`). [`Condition::to_text`] renders it for people.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The models' predictions a condition may test like computed attributes (written to the
/// profiles at every training): 12-month value, churn risk (0-1), P(alive), purchases
/// expected in 90 days, best send hour (0-23, local), mean sentiment of the last 30 days.
pub const PREDICTIONS: [&str; 6] = [
    "clv_12m",
    "churn_risk",
    "p_alive",
    "expected_purchases_90d",
    "best_hour",
    "sentiment_30d",
];

/// Computed attributes a condition may test, and whether each is a time (compared with
/// `before` / `after` / `within_last_days`) or a number; the [`PREDICTIONS`] last.
pub const COMPUTED: [(&str, bool); 19] = [
    ("first_seen", true),
    ("last_seen", true),
    ("events", false),
    ("sessions", false),
    ("orders", false),
    ("revenue", false),
    ("average_order_value", false),
    ("days_since_last_order", false),
    ("days_since_last_seen", false),
    ("purchase_frequency", false),
    ("engagement", false),
    ("first_order_at", true),
    ("last_order_at", true),
    ("clv_12m", false),
    ("churn_risk", false),
    ("p_alive", false),
    ("expected_purchases_90d", false),
    ("best_hour", false),
    ("sentiment_30d", false),
];

/// A comparison of a value (a trait, a computed attribute, an event property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Equals,
    NotEquals,
    Contains,
    NotContains,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
    NotExists,
    /// A time before the given one (an RFC 3339 text).
    Before,
    /// A time after the given one.
    After,
    /// A time within the last N days (the value) up to now.
    WithinLastDays,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Equals => "=",
            Op::NotEquals => "≠",
            Op::Contains => "contains",
            Op::NotContains => "does not contain",
            Op::Gt => ">",
            Op::Gte => "≥",
            Op::Lt => "<",
            Op::Lte => "≤",
            Op::Exists => "exists",
            Op::NotExists => "does not exist",
            Op::Before => "before",
            Op::After => "after",
            Op::WithinLastDays => "within the last",
        }
    }
}

/// `name op value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    pub name: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

/// A filter on an event property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    pub property: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountOp {
    AtLeast,
    AtMost,
    Exactly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Count {
    pub op: CountOp,
    pub value: u32,
}

impl Default for Count {
    fn default() -> Self {
        Self {
            op: CountOp::AtLeast,
            value: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Between {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Performed `event` (matching `where`) `count` times, in the last `within_days` days, or
/// `between` two times, or ever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performed {
    pub event: String,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<PropertyFilter>,
    #[serde(default)]
    pub count: Count,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<Between>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastOp {
    /// The last time was at most `days` ago.
    WithinDays,
    /// The last time was more than `days` ago (and there was one).
    MoreThanDaysAgo,
}

/// When `event` (matching `where`) was last performed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastPerformed {
    pub event: String,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<PropertyFilter>,
    pub op: LastOp,
    pub days: u32,
}

/// `event` with property `key` = K, not followed by `not_followed_by` with the same K within
/// `within_minutes` (the abandoned cart): true from `within_minutes` after the first event
/// on. Only first events of the last `lookback_days` days count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotFollowedBy {
    pub event: String,
    pub key: String,
    pub not_followed_by: String,
    pub within_minutes: u32,
    #[serde(default = "default_lookback")]
    pub lookback_days: u32,
}

fn default_lookback() -> u32 {
    30
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Trait(Comparison),
    Computed(Comparison),
    Performed(Performed),
    LastPerformed(LastPerformed),
    NotFollowedBy(NotFollowedBy),
    /// Membership of another segment (by id).
    InSegment(String),
    /// A smart tag (by name).
    Tag(String),
}

/// A segment definition: its condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub condition: Condition,
}

/// A definition that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DefinitionError {
    /// Where, as a path into the JSON (`condition.and[1].trait.op`).
    pub path: String,
    pub message: String,
}

const MAX_DEPTH: usize = 16;
const MAX_CONDITIONS: usize = 200;

pub(crate) fn err(path: &str, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Definition {
    /// Parses and validates a definition.
    pub fn parse(json: &Value) -> Result<Self, DefinitionError> {
        let def: Definition = serde_path_to_error::deserialize(json).map_err(|e| {
            let path = e.path().to_string();
            err(if path == "." { "" } else { &path }, e.inner().to_string())
        })?;
        let mut n = 0;
        def.condition.validate("condition", 0, &mut n)?;
        Ok(def)
    }
}

fn is_time(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok())
}

fn check_op(path: &str, op: Op, value: &Value, time: Option<bool>) -> Result<(), DefinitionError> {
    let vpath = format!("{path}.value");
    match op {
        Op::Exists | Op::NotExists => {
            if !value.is_null() {
                return Err(err(&vpath, "exists / not_exists take no value"));
            }
        }
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            if !value.is_number() {
                return Err(err(&vpath, format!("{op:?} needs a number").to_lowercase()));
            }
        }
        Op::Contains | Op::NotContains => {
            if !value.is_string() {
                return Err(err(&vpath, "contains needs a string"));
            }
        }
        Op::Before | Op::After => {
            if !is_time(value) {
                return Err(err(&vpath, "before / after need an RFC 3339 time"));
            }
        }
        Op::WithinLastDays => {
            if !value.as_u64().is_some_and(|d| (1..=36_500).contains(&d)) {
                return Err(err(
                    &vpath,
                    "within_last_days needs a whole number of days (1-36500)",
                ));
            }
        }
        Op::Equals | Op::NotEquals => {
            if value.is_null() {
                return Err(err(
                    &vpath,
                    "equals needs a value (use not_exists for none)",
                ));
            }
        }
    }
    match (time, op) {
        (Some(true), Op::Gt | Op::Gte | Op::Lt | Op::Lte | Op::Contains | Op::NotContains) => {
            Err(err(
                &format!("{path}.op"),
                "a time is compared with before, after or within_last_days",
            ))
        }
        (
            Some(false),
            Op::Before | Op::After | Op::WithinLastDays | Op::Contains | Op::NotContains,
        ) => Err(err(
            &format!("{path}.op"),
            "a number is compared with equals, gt, gte, lt, lte or exists",
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_name(path: &str, what: &str, name: &str) -> Result<(), DefinitionError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(err(path, format!("{what} must be 1-200 characters")));
    }
    Ok(())
}

/// A value a condition compares: a trait of the person, or a property of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRef<'a> {
    Trait(&'a str),
    Property(&'a str),
}

/// [`Condition::visit_values`] for the `where` filters at `path` (`….where[0].property`).
pub(crate) fn visit_filters(
    path: &str,
    filters: &[PropertyFilter],
    f: &mut dyn FnMut(&str, ValueRef<'_>),
) {
    for (i, p) in filters.iter().enumerate() {
        if !matches!(p.op, Op::Exists | Op::NotExists) {
            f(
                &format!("{path}.where[{i}].property"),
                ValueRef::Property(&p.property),
            );
        }
    }
}

pub(crate) fn check_filters(path: &str, filters: &[PropertyFilter]) -> Result<(), DefinitionError> {
    for (i, f) in filters.iter().enumerate() {
        let p = format!("{path}.where[{i}]");
        check_name(&format!("{p}.property"), "a property name", &f.property)?;
        check_op(&p, f.op, &f.value, None)?;
    }
    Ok(())
}

impl Condition {
    /// Validates this condition as the part of a larger document at `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), DefinitionError> {
        self.validate(path, 0, &mut 0)
    }

    fn validate(&self, path: &str, depth: usize, n: &mut usize) -> Result<(), DefinitionError> {
        *n += 1;
        if *n > MAX_CONDITIONS {
            return Err(err(path, format!("more than {MAX_CONDITIONS} conditions")));
        }
        if depth > MAX_DEPTH {
            return Err(err(path, format!("nested deeper than {MAX_DEPTH}")));
        }
        match self {
            Condition::And(list) | Condition::Or(list) => {
                let key = if matches!(self, Condition::And(_)) {
                    "and"
                } else {
                    "or"
                };
                if list.is_empty() {
                    return Err(err(
                        &format!("{path}.{key}"),
                        "needs at least one condition",
                    ));
                }
                for (i, c) in list.iter().enumerate() {
                    c.validate(&format!("{path}.{key}[{i}]"), depth + 1, n)?;
                }
                Ok(())
            }
            Condition::Not(c) => c.validate(&format!("{path}.not"), depth + 1, n),
            Condition::Trait(c) => {
                let p = format!("{path}.trait");
                check_name(&format!("{p}.name"), "a trait name", &c.name)?;
                check_op(&p, c.op, &c.value, None)
            }
            Condition::Computed(c) => {
                let p = format!("{path}.computed");
                let Some((_, time)) = COMPUTED.iter().find(|(n, _)| *n == c.name) else {
                    let names: Vec<&str> = COMPUTED.iter().map(|c| c.0).collect();
                    return Err(err(
                        &format!("{p}.name"),
                        format!(
                            "unknown computed attribute {:?}; one of {}",
                            c.name,
                            names.join(", ")
                        ),
                    ));
                };
                check_op(&p, c.op, &c.value, Some(*time))
            }
            Condition::Performed(c) => {
                let p = format!("{path}.performed");
                check_name(&format!("{p}.event"), "an event name", &c.event)?;
                check_filters(&p, &c.filters)?;
                if c.within_days.is_some() && c.between.is_some() {
                    return Err(err(&p, "within_days and between exclude each other"));
                }
                if c.within_days.is_some_and(|d| d == 0 || d > 36_500) {
                    return Err(err(&format!("{p}.within_days"), "1-36500 days"));
                }
                if let Some(b) = c.between
                    && b.from >= b.to
                {
                    return Err(err(&format!("{p}.between"), "from must be before to"));
                }
                if c.count.op == CountOp::AtLeast && c.count.value == 0 {
                    return Err(err(
                        &format!("{p}.count.value"),
                        "at least 0 is always true",
                    ));
                }
                Ok(())
            }
            Condition::LastPerformed(c) => {
                let p = format!("{path}.last_performed");
                check_name(&format!("{p}.event"), "an event name", &c.event)?;
                check_filters(&p, &c.filters)?;
                if c.days == 0 || c.days > 36_500 {
                    return Err(err(&format!("{p}.days"), "1-36500 days"));
                }
                Ok(())
            }
            Condition::NotFollowedBy(c) => {
                let p = format!("{path}.not_followed_by");
                check_name(&format!("{p}.event"), "an event name", &c.event)?;
                check_name(
                    &format!("{p}.not_followed_by"),
                    "an event name",
                    &c.not_followed_by,
                )?;
                check_name(&format!("{p}.key"), "a property name", &c.key)?;
                if c.within_minutes == 0 || c.within_minutes > 525_600 {
                    return Err(err(&format!("{p}.within_minutes"), "1-525600 minutes"));
                }
                if c.lookback_days == 0 || c.lookback_days > 3650 {
                    return Err(err(&format!("{p}.lookback_days"), "1-3650 days"));
                }
                Ok(())
            }
            Condition::InSegment(id) => {
                check_name(&format!("{path}.in_segment"), "a segment id", id)
            }
            Condition::Tag(name) => check_name(&format!("{path}.tag"), "a tag name", name),
        }
    }

    /// Every condition in this tree, depth first.
    pub fn walk(&self, f: &mut dyn FnMut(&Condition)) {
        f(self);
        match self {
            Condition::And(list) | Condition::Or(list) => list.iter().for_each(|c| c.walk(f)),
            Condition::Not(c) => c.walk(f),
            _ => {}
        }
    }

    /// Calls `f` with every value this condition compares (a trait, or an event property
    /// in a `where` filter) and the JSON path that names it (`condition.and[1].trait.name`,
    /// `path` being this condition's own). `exists` / `not_exists` tests are left out: they
    /// read whether a value is there, not what it is.
    pub fn visit_values(&self, path: &str, f: &mut dyn FnMut(&str, ValueRef<'_>)) {
        match self {
            Condition::And(list) | Condition::Or(list) => {
                let key = if matches!(self, Condition::And(_)) {
                    "and"
                } else {
                    "or"
                };
                for (i, c) in list.iter().enumerate() {
                    c.visit_values(&format!("{path}.{key}[{i}]"), f);
                }
            }
            Condition::Not(c) => c.visit_values(&format!("{path}.not"), f),
            Condition::Trait(c) if !matches!(c.op, Op::Exists | Op::NotExists) => {
                f(&format!("{path}.trait.name"), ValueRef::Trait(&c.name));
            }
            Condition::Performed(p) => {
                visit_filters(&format!("{path}.performed"), &p.filters, f);
            }
            Condition::LastPerformed(l) => {
                visit_filters(&format!("{path}.last_performed"), &l.filters, f);
            }
            _ => {}
        }
    }

    /// The segments and tags this condition refers to.
    pub fn references(&self) -> (Vec<String>, Vec<String>) {
        let (mut segments, mut tags) = (Vec::new(), Vec::new());
        self.walk(&mut |c| match c {
            Condition::InSegment(s) => segments.push(s.clone()),
            Condition::Tag(t) => tags.push(t.clone()),
            _ => {}
        });
        (segments, tags)
    }

    /// The condition as readable text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out, false);
        out
    }

    fn write_text(&self, out: &mut String, nested: bool) {
        let value = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(s) => format!(" \"{s}\""),
            other => format!(" {other}"),
        };
        let cmp = |op: Op, v: &Value| match op {
            Op::WithinLastDays => format!("within the last {} days", v),
            _ => format!("{}{}", op.text(), value(v)),
        };
        let filters = |fs: &[PropertyFilter]| {
            if fs.is_empty() {
                return String::new();
            }
            let parts: Vec<String> = fs
                .iter()
                .map(|f| format!("{} {}", f.property, cmp(f.op, &f.value)))
                .collect();
            format!(" where {}", parts.join(" and "))
        };
        match self {
            Condition::And(list) | Condition::Or(list) => {
                let sep = if matches!(self, Condition::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                if nested && list.len() > 1 {
                    out.push('(');
                }
                for (i, c) in list.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    c.write_text(out, true);
                }
                if nested && list.len() > 1 {
                    out.push(')');
                }
            }
            Condition::Not(c) => {
                out.push_str("NOT ");
                c.write_text(out, true);
            }
            Condition::Trait(c) => {
                let _ = write!(out, "trait {} {}", c.name, cmp(c.op, &c.value));
            }
            Condition::Computed(c) => {
                let _ = write!(out, "{} {}", c.name, cmp(c.op, &c.value));
            }
            Condition::Performed(c) => {
                let count = match c.count.op {
                    CountOp::AtLeast => "at least",
                    CountOp::AtMost => "at most",
                    CountOp::Exactly => "exactly",
                };
                let times = if c.count.value == 1 { "time" } else { "times" };
                let _ = write!(
                    out,
                    "performed \"{}\"{} {count} {} {times}",
                    c.event,
                    filters(&c.filters),
                    c.count.value
                );
                if let Some(d) = c.within_days {
                    let _ = write!(out, " in the last {d} days");
                }
                if let Some(b) = c.between {
                    let _ = write!(
                        out,
                        " between {} and {}",
                        b.from.to_rfc3339(),
                        b.to.to_rfc3339()
                    );
                }
            }
            Condition::LastPerformed(c) => {
                let when = match c.op {
                    LastOp::WithinDays => format!("within the last {} days", c.days),
                    LastOp::MoreThanDaysAgo => format!("more than {} days ago", c.days),
                };
                let _ = write!(
                    out,
                    "last performed \"{}\"{} {when}",
                    c.event,
                    filters(&c.filters)
                );
            }
            Condition::NotFollowedBy(c) => {
                let _ = write!(
                    out,
                    "performed \"{}\" not followed by \"{}\" with the same {} within {} minutes (last {} days)",
                    c.event, c.not_followed_by, c.key, c.within_minutes, c.lookback_days
                );
            }
            Condition::InSegment(s) => {
                let _ = write!(out, "in segment {s}");
            }
            Condition::Tag(t) => {
                let _ = write!(out, "tagged {t}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_compared_are_found_at_any_depth_with_their_paths() {
        let d = Definition::parse(&json!({"condition": {"or": [
            {"trait": {"name": "plan", "op": "equals", "value": "pro"}},
            {"not": {"and": [
                {"trait": {"name": "email", "op": "exists"}},
                {"trait": {"name": "Email", "op": "contains", "value": "a"}},
            ]}},
            {"performed": {"event": "Order Completed", "where": [
                {"property": "coupon", "op": "exists"},
                {"property": "email", "op": "equals", "value": "x@y.z"},
            ]}},
            {"last_performed": {"event": "Login", "op": "within_days", "days": 3,
                "where": [{"property": "phone", "op": "contains", "value": "+33"}]}},
            {"computed": {"name": "orders", "op": "gt", "value": 1}},
        ]}}))
        .expect("valid");
        let mut seen = Vec::new();
        d.condition.visit_values("condition", &mut |path, v| {
            seen.push((path.to_owned(), format!("{v:?}")));
        });
        let expected = [
            ("condition.or[0].trait.name", r#"Trait("plan")"#),
            ("condition.or[1].not.and[1].trait.name", r#"Trait("Email")"#),
            (
                "condition.or[2].performed.where[1].property",
                r#"Property("email")"#,
            ),
            (
                "condition.or[3].last_performed.where[0].property",
                r#"Property("phone")"#,
            ),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_definition_reads_and_renders() {
        let def = Definition::parse(&json!({"condition": {"and": [
            {"trait": {"name": "plan", "op": "equals", "value": "pro"}},
            {"performed": {"event": "Order Completed",
                "where": [{"property": "revenue", "op": "gt", "value": 50}],
                "count": {"op": "at_least", "value": 2}, "within_days": 30}},
            {"not": {"or": [{"in_segment": "churned"}, {"tag": "test"}]}},
            {"computed": {"name": "days_since_last_order", "op": "gt", "value": 30}}
        ]}}))
        .expect("valid");
        assert_eq!(
            def.condition.to_text(),
            "trait plan = \"pro\" AND performed \"Order Completed\" where revenue > 50 at least 2 times in the last 30 days AND NOT (in segment churned OR tagged test) AND days_since_last_order > 30"
        );
        assert_eq!(
            def.condition.references(),
            (vec!["churned".to_owned()], vec!["test".to_owned()])
        );
        // It serialises back to what it read.
        let again = Definition::parse(&serde_json::to_value(&def).expect("json")).expect("valid");
        assert_eq!(again, def);
    }

    #[test]
    fn errors_point_at_the_offending_part() {
        let cases = [
            (
                json!({"condition": {"and": [{"trait": {"name": "a", "op": "equals", "value": 1}}, {"trait": {"name": "b", "op": "bigger", "value": 1}}]}}),
                "condition.and[1].trait.op",
            ),
            (json!({"condition": {"and": []}}), "condition.and"),
            (
                json!({"condition": {"computed": {"name": "wealth", "op": "gt", "value": 1}}}),
                "condition.computed.name",
            ),
            (
                json!({"condition": {"computed": {"name": "last_seen", "op": "gt", "value": 1}}}),
                "condition.computed.op",
            ),
            (
                json!({"condition": {"trait": {"name": "a", "op": "gt", "value": "x"}}}),
                "condition.trait.value",
            ),
            (
                json!({"condition": {"trait": {"name": "a", "op": "before", "value": "yesterday"}}}),
                "condition.trait.value",
            ),
            (
                json!({"condition": {"performed": {"event": "x", "within_days": 0}}}),
                "condition.performed.within_days",
            ),
            (
                json!({"condition": {"performed": {"event": "x", "count": {"op": "at_least", "value": 0}}}}),
                "condition.performed.count.value",
            ),
            (
                json!({"condition": {"performed": {"event": "x", "where": [{"property": "", "op": "exists"}]}}}),
                "condition.performed.where[0].property",
            ),
            (
                json!({"condition": {"not_followed_by": {"event": "a", "key": "k", "not_followed_by": "b", "within_minutes": 0}}}),
                "condition.not_followed_by.within_minutes",
            ),
            (
                json!({"condition": {"trait": {"name": "a", "op": "exists"}, "extra": 1}}),
                "condition",
            ),
            (json!({"conditions": {}}), "conditions"),
        ];
        for (json, path) in cases {
            let e = Definition::parse(&json).expect_err(&json.to_string());
            assert_eq!(e.path, path, "{json}: {e}");
        }
    }

    #[test]
    fn size_is_bounded() {
        let mut c = json!({"trait": {"name": "a", "op": "exists"}});
        for _ in 0..20 {
            c = json!({"not": c});
        }
        let e = Definition::parse(&json!({"condition": c})).expect_err("too deep");
        assert!(e.message.contains("deeper"), "{e}");
    }
}
