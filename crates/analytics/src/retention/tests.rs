//! Retention against a plain reference: per-person event lists, each event's local date
//! computed with chrono-tz directly.

use chrono::{Datelike, NaiveDate, TimeZone};
use livora_columnar::Table;
use proptest::prelude::*;

use super::*;
use crate::period::period_start;

fn local_period(tz: Tz, period: Period, ts_us: i64) -> NaiveDate {
    let t = Utc.timestamp_micros(ts_us).single().expect("time");
    period_start(period, t.with_timezone(&tz).date_naive())
}

/// Index of `d` among the periods starting at `first`.
fn period_number(period: Period, first: NaiveDate, d: NaiveDate) -> i64 {
    match period {
        Period::Hour => unreachable!("the reference works on dates; hours are tested in trends"),
        Period::Day => (d - first).num_days(),
        Period::Week => (d - first).num_days() / 7,
        Period::Month => {
            i64::from(d.year() * 12 + d.month0() as i32)
                - i64::from(first.year() * 12 + first.month0() as i32)
        }
    }
}

fn reference(
    events: &[(u32, i64, bool, bool)],
    persons: usize,
    q: &RetentionQuery,
    tz: Tz,
) -> Vec<Vec<u64>> {
    let n = q.periods as i64;
    let first_period = period_start(q.period, q.from.with_timezone(&tz).date_naive());
    let idx = |ts: i64| {
        let k = period_number(q.period, first_period, local_period(tz, q.period, ts));
        (0..n).contains(&k).then_some(k as usize)
    };
    let mut counts = vec![vec![0u64; q.periods]; q.periods];
    for p in 0..persons as u32 {
        let mine: Vec<_> = events.iter().filter(|e| e.0 == p).collect();
        let cohorts: Vec<usize> = match q.cohort {
            Cohort::First => mine
                .iter()
                .filter(|e| e.2)
                .map(|e| e.1)
                .min()
                .and_then(idx)
                .into_iter()
                .collect(),
            Cohort::Any => {
                let mut v: Vec<usize> = mine
                    .iter()
                    .filter(|e| e.2)
                    .filter_map(|e| idx(e.1))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            }
        };
        for c in cohorts {
            counts[c][0] += 1;
            for (k, slot) in counts[c].iter_mut().enumerate().take(q.periods - c).skip(1) {
                if mine.iter().any(|e| e.3 && idx(e.1) == Some(c + k)) {
                    *slot += 1;
                }
            }
        }
    }
    counts
}

fn table_of(events: &[(u32, i64, bool, bool)]) -> Table {
    let mut t = Table::default();
    push_events(&mut t, events);
    t
}

fn push_events(t: &mut Table, events: &[(u32, i64, bool, bool)]) {
    for (p, ts, s, r) in events {
        let name = match (s, r) {
            (true, true) => "Both",
            (true, false) => "Start",
            (false, true) => "Return",
            _ => "Other",
        };
        let time = Utc
            .timestamp_micros(*ts)
            .single()
            .expect("time")
            .to_rfc3339();
        let json =
            format!(r#"{{"type":"track","event":"{name}","userId":"p{p}","timestamp":"{time}"}}"#);
        t.push_json(json.as_bytes()).expect("push");
    }
}

fn step(event: &str) -> Step {
    Step {
        event: event.to_owned(),
        filters: vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn kernel_matches_reference(
        raw in proptest::collection::vec((0u32..8, 0i64..(40 * 86_400), any::<bool>()), 0..60),
        period in prop_oneof![Just(Period::Day), Just(Period::Week), Just(Period::Month)],
        periods in 1usize..12,
        any_cohort in any::<bool>(),
        offset_days in 0i64..10,
        paris in any::<bool>(),
        seal_at in 0usize..70,
        project in any::<bool>(),
    ) {
        let tz: Tz = if paris { "Europe/Paris" } else { "America/New_York" }.parse().expect("tz");
        // Around the March 2026 DST changes in both zones.
        let base = Utc.with_ymd_and_hms(2026, 2, 20, 0, 0, 0).single().expect("time").timestamp_micros();
        let events: Vec<(u32, i64, bool, bool)> = raw
            .iter()
            .map(|(p, s, is_start)| (*p, base + s * 1_000_000, *is_start, !*is_start))
            .collect();
        // Part sealed (and maybe in the person-ordered projection), part hot.
        let mut t = table_of(&events[..seal_at.min(events.len())]);
        let days = t.order_hot();
        t.mark_sealed(&days);
        if project {
            t.by_person = t.by_person.extended(&t);
        }
        push_events(&mut t, &events[seal_at.min(events.len())..]);
        let q = RetentionQuery {
            start_event: step("Start"),
            return_event: step("Return"),
            period,
            periods,
            from: Utc.timestamp_micros(base + offset_days * 86_400_000_000).single().expect("time"),
            cohort: if any_cohort { Cohort::Any } else { Cohort::First },
        };
        // Table person ids are in order of first appearance; map the reference's ids to them.
        let mut ids: Vec<u32> = Vec::new();
        for e in &events {
            if !ids.contains(&e.0) { ids.push(e.0); }
        }
        let mapped: Vec<_> = events.iter().map(|e| (ids.iter().position(|x| *x == e.0).expect("id") as u32, e.1, e.2, e.3)).collect();
        let got = retention(&t, &t.persons.redirects(), &q, tz).expect("retention");
        let expected = reference(&mapped, ids.len(), &q, tz);
        for (c, row) in got.cohorts.iter().enumerate() {
            prop_assert_eq!(&row.counts[..], &expected[c][..q.periods - c]);
        }
    }
}

#[test]
fn bad_queries_say_what_is_wrong() {
    let t = Table::default();
    let tz: Tz = "UTC".parse().expect("tz");
    let mut q = RetentionQuery {
        start_event: step("A"),
        return_event: step("B"),
        period: Period::Week,
        periods: 0,
        from: Utc::now(),
        cohort: Cohort::First,
    };
    assert!(retention(&t, &[], &q, tz).is_err_and(|e| e.to_string().contains("periods")));
    q.periods = 8;
    q.return_event.event.clear();
    assert!(retention(&t, &[], &q, tz).is_err_and(|e| e.to_string().contains("return_event")));
}

#[test]
fn a_table_split_across_cores_gives_the_same_answer() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let base = Utc
        .with_ymd_and_hms(2026, 2, 20, 0, 0, 0)
        .single()
        .expect("time")
        .timestamp_micros();
    let events: Vec<(u32, i64, bool, bool)> = (0..20_000)
        .map(|_| {
            let start = rng.random_bool(0.4);
            (
                rng.random_range(0..300),
                base + rng.random_range(0..60 * 86_400i64) * 1_000_000,
                start,
                !start,
            )
        })
        .collect();
    let t = table_of(&events);
    let mut ids: Vec<u32> = Vec::new();
    for e in &events {
        if !ids.contains(&e.0) {
            ids.push(e.0);
        }
    }
    let mapped: Vec<_> = events
        .iter()
        .map(|e| {
            (
                ids.iter().position(|x| *x == e.0).expect("id") as u32,
                e.1,
                e.2,
                e.3,
            )
        })
        .collect();
    let tz: Tz = "Europe/Paris".parse().expect("tz");
    for cohort in [Cohort::First, Cohort::Any] {
        let q = RetentionQuery {
            start_event: step("Start"),
            return_event: step("Return"),
            period: Period::Week,
            periods: 8,
            from: Utc.timestamp_micros(base).single().expect("time"),
            cohort,
        };
        let got = retention(&t, &t.persons.redirects(), &q, tz).expect("retention");
        let expected = reference(&mapped, ids.len(), &q, tz);
        for (c, row) in got.cohorts.iter().enumerate() {
            assert_eq!(
                &row.counts[..],
                &expected[c][..q.periods - c],
                "{cohort:?} cohort {c}"
            );
        }
        assert!(got.cohorts[0].counts[1] > 0);
    }
}
