//! Comparisons of JSON values, as segment conditions and event filters use them, and the
//! instants at which a time-dependent comparison can change its answer.

use chrono::DateTime;
use livora_model::segment::Op;
use serde_json::Value;

pub const DAY: i64 = 86_400;

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A time as Unix seconds: an RFC 3339 text, or a number of seconds (milliseconds when it
/// is too large to be seconds).
pub fn time(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.timestamp()),
        Value::Number(n) => {
            let x = n.as_f64()?;
            let secs = if x.abs() > 1e11 { x / 1000.0 } else { x };
            secs.is_finite().then_some(secs.floor() as i64)
        }
        _ => None,
    }
}

fn equals(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => number(a) == number(b),
        (Value::String(x), Value::String(y)) => x == y,
        _ => a == b,
    }
}

fn contains(v: &Value, needle: &Value) -> bool {
    match (v, needle) {
        (Value::String(s), Value::String(n)) => contains_ignoring_case(s, n),
        (Value::Array(items), n) => items.iter().any(|i| equals(i, n)),
        _ => false,
    }
}

/// Whether `haystack` contains `needle`, letter case aside. ASCII text (the usual case) is
/// compared in place; other text is lowered first.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        return n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Whether `v` (`None`: absent) satisfies `op value` at `now` (Unix seconds).
pub fn matches(v: Option<&Value>, op: Op, value: &Value, now: i64) -> bool {
    let v = v.filter(|v| !v.is_null());
    match op {
        Op::Exists => v.is_some(),
        Op::NotExists => v.is_none(),
        Op::Equals => v.is_some_and(|v| equals(v, value)),
        Op::NotEquals => !v.is_some_and(|v| equals(v, value)),
        Op::Contains => v.is_some_and(|v| contains(v, value)),
        Op::NotContains => !v.is_some_and(|v| contains(v, value)),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            let (Some(a), Some(b)) = (v.and_then(number), number(value)) else {
                return false;
            };
            match op {
                Op::Gt => a > b,
                Op::Gte => a >= b,
                Op::Lt => a < b,
                _ => a <= b,
            }
        }
        Op::Before | Op::After => {
            let (Some(a), Some(b)) = (v.and_then(time), time(value)) else {
                return false;
            };
            if op == Op::Before { a < b } else { a > b }
        }
        Op::WithinLastDays => {
            let (Some(t), Some(days)) = (v.and_then(time), value.as_i64()) else {
                return false;
            };
            within_last(t, days, now)
        }
    }
}

/// `t` lies in the `days` days up to `now` (inclusive at both ends).
pub fn within_last(t: i64, days: i64, now: i64) -> bool {
    t <= now && t >= now - days * DAY
}

/// The first instant after `now` at which `within_last(t, days, ·)` changes, if any.
pub fn within_last_change(t: i64, days: i64, now: i64) -> Option<i64> {
    if t > now {
        Some(t)
    } else if t + days * DAY >= now {
        Some(t + days * DAY + 1)
    } else {
        None
    }
}

/// The first instant after `now` at which the comparison of `v` can change: only
/// `within_last_days` depends on the time.
pub fn next_change(v: Option<&Value>, op: Op, value: &Value, now: i64) -> Option<i64> {
    if op != Op::WithinLastDays {
        return None;
    }
    let t = v.and_then(time)?;
    within_last_change(t, value.as_i64()?, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// The in-place comparison agrees with lowering both strings first.
        #[test]
        fn contains_ignoring_case_is_lowered_contains(
            h in "[a-zA-Z0-9 ÄäİıK]{0,12}",
            n in "[a-zA-Z0-9 ÄäİıK]{0,3}",
        ) {
            prop_assert_eq!(
                contains_ignoring_case(&h, &n),
                h.to_lowercase().contains(&n.to_lowercase())
            );
        }
    }

    #[test]
    fn comparisons() {
        let now = 1_700_000_000;
        assert!(matches(Some(&json!(3)), Op::Equals, &json!(3.0), now));
        assert!(matches(None, Op::NotEquals, &json!("x"), now));
        assert!(!matches(Some(&json!(null)), Op::Exists, &Value::Null, now));
        assert!(matches(
            Some(&json!("Hello World")),
            Op::Contains,
            &json!("world"),
            now
        ));
        assert!(matches(
            Some(&json!(["a", "b"])),
            Op::Contains,
            &json!("b"),
            now
        ));
        assert!(matches(Some(&json!("12.5")), Op::Gt, &json!(12), now));
        assert!(!matches(Some(&json!("abc")), Op::Lt, &json!(12), now));
        assert!(matches(
            Some(&json!("2020-01-01T00:00:00Z")),
            Op::Before,
            &json!("2021-01-01T00:00:00Z"),
            now
        ));
        let day_ago = json!(now - DAY);
        assert!(matches(Some(&day_ago), Op::WithinLastDays, &json!(1), now));
        assert!(!matches(
            Some(&day_ago),
            Op::WithinLastDays,
            &json!(1),
            now + 1
        ));
        assert_eq!(
            next_change(Some(&day_ago), Op::WithinLastDays, &json!(1), now),
            Some(now + 1)
        );
        assert_eq!(time(&json!(1_700_000_000_000i64)), Some(1_700_000_000));
    }
}
