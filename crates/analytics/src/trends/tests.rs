//! Trends against a plain reference: per-event local dates with chrono-tz, BTreeMaps.

use std::collections::{BTreeMap, BTreeSet};

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::period::period_start;

fn table_of(events: &[(u32, i64, u8, Option<u8>)]) -> Table {
    let mut t = Table::default();
    for (p, secs, cat, amount) in events {
        let time = Utc
            .timestamp_opt(*secs, 0)
            .single()
            .expect("time")
            .to_rfc3339();
        let cat = if *cat == 0 {
            String::new()
        } else {
            format!(r#""category":"c{cat}","#)
        };
        let amount = amount.map_or(String::new(), |a| format!(r#""amount":{a},"#));
        let json = format!(
            r#"{{"type":"track","event":"Buy","userId":"p{p}","timestamp":"{time}","properties":{{{cat}{amount}"x":1}}}}"#
        );
        t.push_json(json.as_bytes()).expect("push");
    }
    t
}

/// (breakdown label, bucket) -> (events, amounts, persons).
type Cells = BTreeMap<(Option<String>, String), (u64, Vec<f64>, BTreeSet<u32>)>;

/// A bucket's name, computed plainly with chrono-tz: the local hour (with its offset, so a
/// repeated DST hour is two buckets) or the local date the period starts on.
fn bucket_key(interval: Period, tz: Tz, t: DateTime<Utc>) -> String {
    let local = t.with_timezone(&tz);
    match interval {
        Period::Hour => local.format("%Y-%m-%dT%H%z").to_string(),
        _ => period_start(interval, local.date_naive()).to_string(),
    }
}

/// Linear interpolation between closest ranks, written out.
fn percentile_ref(values: &[f64], p: f64) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let last = v.len().checked_sub(1)?;
    let rank = p / 100.0 * last as f64;
    let below = rank.floor() as usize;
    let above = (below + 1).min(last);
    Some(v[below] + (v[above] - v[below]) * (rank - below as f64))
}

/// The cells, by plain loops.
fn reference(events: &[(u32, i64, u8, Option<u8>)], q: &TrendsQuery, tz: Tz) -> Cells {
    let first = period_start(q.interval, q.from.with_timezone(&tz).date_naive());
    let last = period_start(
        q.interval,
        (q.to - chrono::Duration::microseconds(1))
            .with_timezone(&tz)
            .date_naive(),
    );
    let mut out: BTreeMap<_, (u64, Vec<f64>, BTreeSet<u32>)> = BTreeMap::new();
    for (p, secs, cat, amount) in events {
        let t = Utc.timestamp_opt(*secs, 0).single().expect("time");
        let date = period_start(q.interval, t.with_timezone(&tz).date_naive());
        let outside = if q.interval == Period::Hour {
            t < q.from || t >= q.to
        } else {
            date < first || date > last
        };
        if outside {
            continue;
        }
        let label = (q.breakdown.is_some() && *cat != 0).then(|| format!("c{cat}"));
        let e = out
            .entry((label, bucket_key(q.interval, tz, t)))
            .or_default();
        e.0 += 1;
        if let Some(a) = amount {
            e.1.push(f64::from(*a));
        }
        e.2.insert(*p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn kernel_matches_reference(
        raw in proptest::collection::vec((0u32..6, 0i64..(50 * 86_400), 0u8..4, proptest::option::of(0u8..50)), 0..60),
        interval in prop_oneof![Just(Period::Hour), Just(Period::Day), Just(Period::Week), Just(Period::Month)],
        metric in 0usize..7,
        breakdown in any::<bool>(),
        span_days in 1i64..40,
        sealed in any::<bool>(),
    ) {
        let tz: Tz = "America/New_York".parse().expect("tz");
        let base = 1_772_323_200i64; // 2026-03-01T00:00:00Z, around the US DST change
        let events: Vec<_> = raw.iter().map(|(p, s, c, a)| (*p, base + s, *c, *a)).collect();
        let mut t = table_of(&events);
        if sealed {
            // One chunk per UTC day: days outside the range are skipped by their statistics.
            let days = t.order_hot();
            t.mark_sealed(&days);
        }
        let metric = match metric {
            0 => Metric::Count,
            1 => Metric::UniquePersons,
            2 => Metric::Sum { property: "amount".into() },
            3 => Metric::Avg { property: "amount".into() },
            4 => Metric::Min { property: "amount".into() },
            5 => Metric::Percentile { property: "amount".into(), percentile: 90.0 },
            _ => Metric::Max { property: "amount".into() },
        };
        let q = TrendsQuery {
            event: Step { event: "Buy".into(), filters: vec![] },
            metric: metric.clone(),
            interval,
            from: Utc.timestamp_opt(base + 5 * 86_400, 0).single().expect("time"),
            to: Utc.timestamp_opt(base + (5 + span_days) * 86_400, 0).single().expect("time"),
            breakdown: breakdown.then(|| Breakdown { property: "category".into(), limit: 100, source: Source::Event }),
            compare_previous: false,
        };
        let got = trends(&t, &t.persons.redirects(), &q, tz).expect("trends");
        let expected = reference(&events, &q, tz);
        // Every (series, bucket) the reference saw matches; every other cell is empty.
        for s in &got.series {
            for (b, v) in s.values.iter().enumerate() {
                let cell = expected.get(&(s.breakdown.clone(), bucket_key(interval, tz, got.buckets[b])));
                let want = match (&metric, cell) {
                    (Metric::Count, c) => Some(c.map_or(0.0, |c| c.0 as f64)),
                    (Metric::UniquePersons, c) => Some(c.map_or(0.0, |c| c.2.len() as f64)),
                    (Metric::Sum { .. }, c) => Some(c.map_or(0.0, |c| c.1.iter().sum())),
                    (Metric::Avg { .. }, c) => c.filter(|c| !c.1.is_empty()).map(|c| c.1.iter().sum::<f64>() / c.1.len() as f64),
                    (Metric::Min { .. }, c) => c.and_then(|c| c.1.iter().copied().reduce(f64::min)),
                    (Metric::Max { .. }, c) => c.and_then(|c| c.1.iter().copied().reduce(f64::max)),
                    (Metric::Percentile { percentile, .. }, c) => c.and_then(|c| percentile_ref(&c.1, *percentile)),
                };
                prop_assert_eq!(*v, want, "{:?} {:?} bucket {}", metric, s.breakdown, b);
            }
        }
        let labels: BTreeSet<_> = got.series.iter().map(|s| s.breakdown.clone()).collect();
        let seen: BTreeSet<_> = expected.keys().map(|(l, _)| l.clone()).collect();
        prop_assert_eq!(labels, seen);
    }
}

#[test]
fn breakdown_keeps_the_top_values_and_folds_the_rest() {
    let base = 1_772_323_200i64;
    let events: Vec<_> = [(1, 1), (1, 2), (1, 1), (2, 3), (3, 1), (3, 2), (4, 0)]
        .iter()
        .map(|(p, c)| (*p, base, *c as u8, Some(10u8)))
        .collect();
    let t = table_of(&events);
    let q = TrendsQuery {
        event: Step {
            event: "Buy".into(),
            filters: vec![],
        },
        metric: Metric::Count,
        interval: Period::Day,
        from: Utc.timestamp_opt(base, 0).single().expect("time"),
        to: Utc.timestamp_opt(base + 86_400, 0).single().expect("time"),
        breakdown: Some(Breakdown {
            source: Source::Event,
            property: "category".into(),
            limit: 1,
        }),
        compare_previous: true,
    };
    let r = trends(&t, &t.persons.redirects(), &q, chrono_tz::UTC).expect("trends");
    let got: Vec<_> = r
        .series
        .iter()
        .map(|s| (s.breakdown.clone(), s.total))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("c1".into()), Some(3.0)),
            (Some("$other".into()), Some(3.0)),
            (None, Some(1.0))
        ]
    );
    let prev = r.previous.expect("previous");
    assert_eq!(prev.buckets[0].to_rfc3339(), "2026-02-28T00:00:00+00:00");
    assert!(prev.series.is_empty());
    let mut bad = q.clone();
    bad.to = bad.from;
    assert!(trends(&t, &[], &bad, chrono_tz::UTC).is_err());
}
