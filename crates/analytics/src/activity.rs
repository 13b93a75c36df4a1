//! Stickiness and lifecycle: how often, and in which pattern, persons come back.
//!
//! - **Stickiness** (as PostHog): over the periods of a range, how many persons did the event
//!   in exactly 1, 2, … N of them.
//! - **Lifecycle** (as PostHog): per period, the persons who did the event and were
//!   - `new`: their first such event ever is in this period,
//!   - `returning`: also active in the period before,
//!   - `resurrecting`: not active in the period before, but active at some earlier time,
//!
//!   and the `dormant` ones: active in the period before, not in this one (PostHog draws
//!   them as negative bars; here they are a positive count).
//!
//! Both collect the distinct (canonical person, period) pairs of matching events in one
//! parallel pass; lifecycle also needs each person's first matching event over all history.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use livora_columnar::Table;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::funnel::{Matcher, Step};
use crate::period::{Period, Periods};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickinessQuery {
    pub event: Step,
    pub interval: Period,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StickinessResult {
    /// The periods in the range.
    pub periods: usize,
    /// `persons[k]`: persons active in exactly `k + 1` periods.
    pub persons: Vec<u64>,
    /// Persons active at least once.
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleQuery {
    pub event: Step,
    pub interval: Period,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LifecycleResult {
    pub buckets: Vec<DateTime<Utc>>,
    pub new: Vec<u64>,
    pub returning: Vec<u64>,
    pub resurrecting: Vec<u64>,
    pub dormant: Vec<u64>,
}

/// Distinct (canonical person, period index) pairs of the rows `m` matches inside `periods`,
/// sorted.
fn active_pairs(t: &Table, redirects: &[u32], m: &Matcher, periods: &Periods) -> Vec<(u32, u32)> {
    let (lo, hi) = (periods.bounds[0], periods.bounds[periods.len()]);
    let mut pairs: Vec<(u32, u32)> =
        crate::parallel::ranges_over(&t.ranges_with(lo, hi.saturating_sub(1), Some(m.names())))
            .into_par_iter()
            .map(|range| {
                let mut out = Vec::new();
                for row in range {
                    if !m.matches(t, row) {
                        continue;
                    }
                    if let Some(b) = periods.index(t.ts[row]) {
                        let p = t.person[row] as usize;
                        out.push((redirects.get(p).copied().unwrap_or(p as u32), b as u32));
                    }
                }
                out.sort_unstable();
                out.dedup();
                out
            })
            .flatten()
            .collect();
    pairs.par_sort_unstable();
    pairs.dedup();
    pairs
}

fn check_range(from: DateTime<Utc>, to: DateTime<Utc>, event: &Step) -> Result<(), Error> {
    event.validate("`event`")?;
    if from >= to {
        return Err(Error::Invalid("`from` must be before `to`".into()));
    }
    Ok(())
}

pub fn stickiness(
    t: &Table,
    redirects: &[u32],
    q: &StickinessQuery,
    tz: Tz,
) -> Result<StickinessResult, Error> {
    check_range(q.from, q.to, &q.event)?;
    let periods = Periods::covering(tz, q.interval, q.from, q.to)?;
    let m = Matcher::new(t, &q.event);
    let pairs = active_pairs(t, redirects, &m, &periods);
    let mut persons = vec![0u64; periods.len()];
    for run in pairs.chunk_by(|a, b| a.0 == b.0) {
        persons[run.len() - 1] += 1;
    }
    Ok(StickinessResult {
        periods: periods.len(),
        total: persons.iter().sum(),
        persons,
    })
}

pub fn lifecycle(
    t: &Table,
    redirects: &[u32],
    q: &LifecycleQuery,
    tz: Tz,
) -> Result<LifecycleResult, Error> {
    check_range(q.from, q.to, &q.event)?;
    let asked = Periods::covering(tz, q.interval, q.from, q.to)?;
    // One more period in front, to know who was active just before the first one.
    let before = asked.previous_one()?;
    let n = asked.len();
    let m = Matcher::new(t, &q.event);
    let pairs = active_pairs(t, redirects, &m, &before);
    // First matching event per canonical person, over all history.
    let persons = redirects.len().max(t.persons.len());
    let first = crate::parallel::per_core(t.len())
        .into_par_iter()
        .map(|range| {
            let mut first = vec![i64::MAX; persons];
            for row in range {
                if m.matches(t, row) {
                    let p = t.person[row] as usize;
                    let c = redirects.get(p).copied().unwrap_or(p as u32) as usize;
                    first[c] = first[c].min(t.ts[row]);
                }
            }
            first
        })
        .reduce(
            || vec![i64::MAX; persons],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x = (*x).min(y);
                }
                a
            },
        );
    let mut out = LifecycleResult {
        buckets: asked.starts.clone(),
        new: vec![0; n],
        returning: vec![0; n],
        resurrecting: vec![0; n],
        dormant: vec![0; n],
    };
    // Extended period k + 1 is asked period k; extended period 0 is the one before.
    for run in pairs.chunk_by(|a, b| a.0 == b.0) {
        let person = run[0].0 as usize;
        let first_period = before.index(first[person]);
        let active = |k: usize| run.binary_search_by_key(&(k as u32), |p| p.1).is_ok();
        for k in 1..=n {
            match (active(k), active(k - 1)) {
                (true, _) if first_period == Some(k) => out.new[k - 1] += 1,
                (true, true) => out.returning[k - 1] += 1,
                (true, false) => out.resurrecting[k - 1] += 1,
                (false, true) => out.dormant[k - 1] += 1,
                (false, false) => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn table_of(events: &[(u32, i64, bool)]) -> Table {
        let mut t = Table::default();
        for (p, secs, hit) in events {
            let time = Utc
                .timestamp_opt(*secs, 0)
                .single()
                .expect("time")
                .to_rfc3339();
            let name = if *hit { "Visit" } else { "Other" };
            t.push_json(
                format!(
                    r#"{{"type":"track","event":"{name}","userId":"p{p}","timestamp":"{time}"}}"#
                )
                .as_bytes(),
            )
            .expect("push");
        }
        t
    }

    /// Period index of each matching event per person, by plain maps (the period bounds
    /// come from [`Periods`], tested on their own against chrono-tz).
    fn active(events: &[(u32, i64, bool)], periods: &Periods) -> BTreeMap<u32, BTreeSet<usize>> {
        let mut out: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
        for (p, secs, hit) in events {
            if let (true, Some(k)) = (*hit, periods.index(secs * 1_000_000)) {
                out.entry(*p).or_default().insert(k);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn stickiness_and_lifecycle_match_reference(
            raw in proptest::collection::vec((0u32..8, 0i64..(30 * 86_400), any::<bool>()), 0..80),
            interval in prop_oneof![Just(Period::Hour), Just(Period::Day), Just(Period::Week)],
            start_day in 0i64..10,
            days in 1i64..12,
        ) {
            let tz: Tz = "Europe/Berlin".parse().expect("tz");
            let base = 1_774_224_000i64; // 2026-03-23, around the EU DST change
            let events: Vec<_> = raw.iter().map(|(p, s, h)| (*p, base + s, *h)).collect();
            let t = table_of(&events);
            let r = t.persons.redirects();
            let from = Utc.timestamp_opt(base + start_day * 86_400, 0).single().expect("time");
            let to = Utc.timestamp_opt(base + (start_day + days) * 86_400, 0).single().expect("time");
            let event = Step { event: "Visit".into(), filters: vec![] };

            let s = stickiness(&t, &r, &StickinessQuery { event: event.clone(), interval, from, to }, tz).expect("stickiness");
            let periods = Periods::covering(tz, interval, from, to).expect("periods");
            let mut want = vec![0u64; periods.len()];
            for ks in active(&events, &periods).values() {
                want[ks.len() - 1] += 1;
            }
            prop_assert_eq!(&s.persons, &want);

            let l = lifecycle(&t, &r, &LifecycleQuery { event, interval, from, to }, tz).expect("lifecycle");
            let ext = periods.previous_one().expect("periods");
            let act = active(&events, &ext);
            let mut firsts: BTreeMap<u32, i64> = BTreeMap::new();
            for (p, secs, hit) in &events {
                if *hit {
                    let f = firsts.entry(*p).or_insert(*secs);
                    *f = (*f).min(*secs);
                }
            }
            for k in 1..=periods.len() {
                let (mut new, mut ret, mut res, mut dor) = (0, 0, 0, 0);
                for (p, ks) in &act {
                    let now = ks.contains(&k);
                    let prev = ks.contains(&(k - 1));
                    let first_here = ext.index(firsts[p] * 1_000_000) == Some(k);
                    if now && first_here { new += 1 }
                    else if now && prev { ret += 1 }
                    else if now { res += 1 }
                    else if prev { dor += 1 }
                }
                prop_assert_eq!((l.new[k - 1], l.returning[k - 1], l.resurrecting[k - 1], l.dormant[k - 1]), (new, ret, res, dor), "period {}", k);
            }
        }
    }

    #[test]
    fn lifecycle_labels_a_simple_story() {
        let day = 86_400;
        let base = 1_767_225_600; // 2026-01-01
        // p1: days 0, 1, 3 (new, returning, resurrecting); p2: day 1 only (new, dormant on 2).
        let t = table_of(&[
            (1, base, true),
            (1, base + day, true),
            (1, base + 3 * day, true),
            (2, base + day, true),
        ]);
        let q = LifecycleQuery {
            event: Step {
                event: "Visit".into(),
                filters: vec![],
            },
            interval: Period::Day,
            from: Utc.timestamp_opt(base, 0).single().expect("time"),
            to: Utc.timestamp_opt(base + 4 * day, 0).single().expect("time"),
        };
        let l = lifecycle(&t, &t.persons.redirects(), &q, Tz::UTC).expect("lifecycle");
        assert_eq!(l.new, vec![1, 1, 0, 0]);
        assert_eq!(l.returning, vec![0, 1, 0, 0]);
        assert_eq!(l.resurrecting, vec![0, 0, 0, 1]);
        assert_eq!(l.dormant, vec![0, 0, 2, 0]);
        let s = StickinessQuery {
            event: q.event.clone(),
            interval: Period::Day,
            from: q.from,
            to: q.to,
        };
        let s = stickiness(&t, &t.persons.redirects(), &s, Tz::UTC).expect("stickiness");
        assert_eq!(s.persons, vec![1, 0, 1, 0]);
        assert_eq!(s.total, 2);
    }
}
