//! Funnel kernels against plain reference implementations, and end to end over a table.

use chrono::TimeZone;
use livora_model::ingest::{Envelope, normalise, parse_item};
use proptest::prelude::*;

use super::*;

/// Reference `ordered`: from every first-step event in range, take the earliest later event
/// for each next step (greedy is optimal for subsequences), within the window.
fn ordered_ref(rows: &[Row], n: usize, window: i64, from: i64, to: i64) -> usize {
    let mut best = 0;
    for (j, r) in rows.iter().enumerate() {
        if r.mask & 1 == 0 || r.ts < from || r.ts >= to {
            continue;
        }
        let (mut level, mut last) = (1, j);
        for step in 1..n {
            match (last + 1..rows.len())
                .find(|&k| rows[k].mask & (1 << step) != 0 && rows[k].ts <= r.ts + window)
            {
                Some(k) => {
                    level += 1;
                    last = k;
                }
                None => break,
            }
        }
        best = best.max(level);
    }
    best
}

/// Reference attribution for `ordered`: among the starts reaching the highest level, the one
/// that reaches it at the earliest event (ties: the latest start); its first-step value and
/// the value on the event that reached the level.
fn ordered_ref_values(
    rows: &[Row],
    n: usize,
    window: i64,
    from: i64,
    to: i64,
) -> (usize, u32, u32) {
    let mut best: Option<(usize, usize, usize)> = None; // (level, reaching row, start)
    for (j, r) in rows.iter().enumerate() {
        if r.mask & 1 == 0 || r.ts < from || r.ts >= to {
            continue;
        }
        let (mut level, mut last) = (1, j);
        for step in 1..n {
            match (last + 1..rows.len())
                .find(|&k| rows[k].mask & (1 << step) != 0 && rows[k].ts <= r.ts + window)
            {
                Some(k) => {
                    level += 1;
                    last = k;
                }
                None => break,
            }
        }
        let better = match best {
            None => true,
            Some((l, at, _)) => {
                level > l || (level == l && last < at) || (level == l && last == at)
            }
        };
        if better {
            best = Some((level, last, j));
        }
    }
    best.map_or((0, 0, 0), |(l, at, j)| (l, rows[j].value, rows[at].value))
}

/// Reference `strict`: the longest run of consecutive events matching steps 0, 1, 2, …
fn strict_ref(rows: &[Row], n: usize, window: i64, from: i64, to: i64) -> usize {
    let mut best = 0;
    for j in 0..rows.len() {
        for len in 1..=n.min(rows.len() - j) {
            let run = &rows[j..j + len];
            let ok = run[0].ts >= from
                && run[0].ts < to
                && run
                    .iter()
                    .enumerate()
                    .all(|(k, r)| r.mask & (1 << k) != 0 && r.ts <= run[0].ts + window);
            if ok {
                best = best.max(len);
            }
        }
    }
    best
}

/// Reference `any`: for each step event in range, count the steps with any event in
/// `[ts, ts + window]`.
fn any_ref(rows: &[Row], n: usize, window: i64, from: i64, to: i64) -> usize {
    rows.iter()
        .filter(|r| r.mask != 0 && r.ts >= from && r.ts < to)
        .map(|r| {
            (0..n)
                .filter(|&i| {
                    rows.iter()
                        .any(|o| o.mask & (1 << i) != 0 && o.ts >= r.ts && o.ts <= r.ts + window)
                })
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn person_rows(n: usize) -> impl Strategy<Value = Vec<Row>> {
    // Few distinct times, so ties are common; masks over n steps, some events match nothing.
    proptest::collection::vec((0i64..40, 0u32..(1 << n)), 0..25).prop_map(|mut v| {
        v.sort_by_key(|(ts, _)| *ts);
        v.into_iter()
            .map(|(ts, mask)| Row {
                ts,
                mask,
                value: (ts % 3) as u32,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn ordered_matches_reference(rows in person_rows(4), window in 1i64..20, from in 0i64..10, span in 1i64..40) {
        let r = ordered(&rows, 4, window, from, from + span);
        prop_assert_eq!(r.level, ordered_ref(&rows, 4, window, from, from + span));
        prop_assert_eq!(r.elapsed_us.len(), r.level);
        prop_assert!(r.elapsed_us.iter().all(|e| *e >= 0 && *e <= window));
    }

    #[test]
    fn ordered_attribution_matches_reference(rows in person_rows(3), window in 1i64..20, from in 0i64..10, span in 1i64..40) {
        let r = ordered(&rows, 3, window, from, from + span);
        let (level, first, last) = ordered_ref_values(&rows, 3, window, from, from + span);
        prop_assert_eq!(r.level, level);
        if level > 0 {
            prop_assert_eq!((r.first_value, r.last_value), (first, last));
        }
    }

    #[test]
    fn strict_matches_reference(rows in person_rows(3), window in 1i64..20, from in 0i64..10, span in 1i64..40) {
        prop_assert_eq!(strict(&rows, 3, window, from, from + span).level, strict_ref(&rows, 3, window, from, from + span));
    }

    #[test]
    fn any_matches_reference(rows in person_rows(3), window in 0i64..20, from in 0i64..10, span in 1i64..40) {
        prop_assert_eq!(any_order(&rows, 3, window, from, from + span).level, any_ref(&rows, 3, window, from, from + span));
    }
}

#[test]
fn equal_timestamps_count_as_in_order_but_one_event_fills_one_step() {
    let row = |ts, mask| Row { ts, mask, value: 0 };
    let rows = [row(5, 0b01), row(5, 0b10)];
    assert_eq!(ordered(&rows, 2, 10, 0, 100).level, 2);
    let both = [row(5, 0b11)];
    assert_eq!(ordered(&both, 2, 10, 0, 100).level, 1);
    // Window is inclusive.
    let rows = [row(0, 0b01), row(10, 0b10)];
    assert_eq!(ordered(&rows, 2, 10, 0, 100).level, 2);
    assert_eq!(ordered(&rows, 2, 9, 0, 100).level, 1);
}

fn event(json: &str, at: i64) -> livora_model::Event {
    let env = Envelope {
        received_at: Utc.timestamp_opt(at, 0).single().expect("time"),
        client_ip: None,
        future_tolerance: chrono::Duration::hours(1),
        sent_at: None,
        context: None,
        integrations: None,
    };
    normalise(parse_item(json).expect("parse"), None, &env).expect("valid")
}

fn query(order: Order, steps: &[(&str, Vec<PropertyFilter>)]) -> FunnelQuery {
    FunnelQuery {
        exclusions: Vec::new(),
        steps: steps
            .iter()
            .map(|(e, f)| Step {
                event: (*e).into(),
                filters: f.clone(),
            })
            .collect(),
        window_seconds: 3600,
        order,
        from: Utc.timestamp_opt(0, 0).single().expect("time"),
        to: Utc.timestamp_opt(100_000, 0).single().expect("time"),
        persons: None,
        breakdown: None,
    }
}

#[test]
fn merged_identities_count_once_with_events_from_before_the_merge() {
    let mut t = Table::default();
    // An anonymous visitor views and adds to cart, then signs in and buys.
    t.push(&event(r#"{"type":"track","event":"View","anonymousId":"a1","properties":{"category":"Shoes","price":120}}"#, 100));
    t.push(&event(
        r#"{"type":"track","event":"Add","anonymousId":"a1"}"#,
        200,
    ));
    t.push(&event(
        r#"{"type":"identify","userId":"u1","anonymousId":"a1"}"#,
        250,
    ));
    t.push(&event(
        r#"{"type":"track","event":"Buy","userId":"u1"}"#,
        400,
    ));
    // Someone else only views, in another category.
    t.push(&event(r#"{"type":"track","event":"View","anonymousId":"a2","properties":{"category":"Hats","price":20}}"#, 100));
    // A third person buys far outside the window.
    t.push(&event(
        r#"{"type":"track","event":"View","userId":"u3"}"#,
        1000,
    ));
    t.push(&event(
        r#"{"type":"track","event":"Add","userId":"u3"}"#,
        1100,
    ));
    t.push(&event(
        r#"{"type":"track","event":"Buy","userId":"u3"}"#,
        9000,
    ));
    let redirects = t.persons.redirects();
    let q = query(
        Order::Ordered,
        &[("View", vec![]), ("Add", vec![]), ("Buy", vec![])],
    );
    let r = funnel(&t, &redirects, &q).expect("funnel");
    let counts: Vec<u64> = r.steps.iter().map(|s| s.count).collect();
    assert_eq!(counts, vec![3, 2, 1]);
    assert_eq!(r.steps[2].median_seconds, Some(300.0));
    assert_eq!(r.steps[1].average_seconds, Some(100.0));
    assert!((r.steps[1].conversion_rate - 2.0 / 3.0).abs() < 1e-12);
    assert!((r.steps[2].step_conversion_rate - 0.5).abs() < 1e-12);

    // Who bought (merged: the anonymous and the known id), and who dropped before adding.
    let mut q = query(
        Order::Ordered,
        &[("View", vec![]), ("Add", vec![]), ("Buy", vec![])],
    );
    q.persons = Some(PersonsAt {
        step: 2,
        status: PersonStatus::Converted,
        limit: 10,
    });
    let r = funnel(&t, &redirects, &q).expect("funnel");
    assert_eq!(r.persons_total, Some(1));
    assert_eq!(
        r.persons,
        Some(vec![PersonRef {
            user_ids: vec!["u1".into()],
            anonymous_ids: vec!["a1".into()]
        }])
    );
    q.persons = Some(PersonsAt {
        step: 1,
        status: PersonStatus::Dropped,
        limit: 10,
    });
    let r = funnel(&t, &redirects, &q).expect("funnel");
    assert_eq!(
        r.persons,
        Some(vec![PersonRef {
            user_ids: vec![],
            anonymous_ids: vec!["a2".into()]
        }])
    );
    q.persons = Some(PersonsAt {
        step: 0,
        status: PersonStatus::Dropped,
        limit: 10,
    });
    assert!(funnel(&t, &redirects, &q).is_err());

    // Breakdown by the category of the first step (first touch).
    let mut q = query(
        Order::Ordered,
        &[("View", vec![]), ("Add", vec![]), ("Buy", vec![])],
    );
    q.breakdown = Some(FunnelBreakdown {
        source: Source::Event,
        property: "category".into(),
        attribution: Attribution::FirstTouch,
        limit: 10,
    });
    let b = funnel(&t, &redirects, &q)
        .expect("funnel")
        .breakdown
        .expect("breakdown");
    let rows: Vec<_> = b
        .iter()
        .map(|r| (r.value.clone(), r.counts.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (Some("Hats".into()), vec![1, 0, 0]),
            (Some("Shoes".into()), vec![1, 1, 1]),
            (None, vec![1, 1, 0])
        ]
    );
    q.breakdown = Some(FunnelBreakdown {
        source: Source::Event,
        property: "category".into(),
        attribution: Attribution::LastTouch,
        limit: 1,
    });
    let b = funnel(&t, &redirects, &q)
        .expect("funnel")
        .breakdown
        .expect("breakdown");
    let rows: Vec<_> = b
        .iter()
        .map(|r| (r.value.clone(), r.counts.clone()))
        .collect();
    // Last touch: u1 ended on Buy (no category), a2 on a Hats view, u3 on Add (none).
    assert_eq!(
        rows,
        vec![(Some("Hats".into()), vec![1, 0, 0]), (None, vec![2, 2, 1])]
    );

    // Property filters: only the Shoes viewer enters.
    let shoes = vec![PropertyFilter {
        source: Source::Event,
        property: "category".into(),
        op: Op::Eq,
        value: Some("Shoes".into()),
    }];
    let q = query(Order::Ordered, &[("View", shoes), ("Add", vec![])]);
    let counts: Vec<u64> = funnel(&t, &redirects, &q)
        .expect("funnel")
        .steps
        .iter()
        .map(|s| s.count)
        .collect();
    assert_eq!(counts, vec![1, 1]);
    let pricey = vec![PropertyFilter {
        source: Source::Event,
        property: "price".into(),
        op: Op::Gte,
        value: Some(100.into()),
    }];
    let q = query(Order::Ordered, &[("View", pricey), ("Add", vec![])]);
    assert_eq!(
        funnel(&t, &redirects, &q).expect("funnel").steps[0].count,
        1
    );

    // Strict: the identify call sits between Add and Buy for u1.
    let q = query(
        Order::Strict,
        &[("View", vec![]), ("Add", vec![]), ("Buy", vec![])],
    );
    let counts: Vec<u64> = funnel(&t, &redirects, &q)
        .expect("funnel")
        .steps
        .iter()
        .map(|s| s.count)
        .collect();
    assert_eq!(counts, vec![3, 2, 0]);
}

#[test]
fn bad_queries_say_what_is_wrong() {
    let t = Table::default();
    let ok = query(Order::Ordered, &[("A", vec![]), ("B", vec![])]);
    assert!(funnel(&t, &[], &ok).is_ok());
    let mut q = ok.clone();
    q.steps.truncate(1);
    assert!(funnel(&t, &[], &q).is_err_and(|e| e.to_string().contains("2 to 32 steps")));
    let mut q = ok.clone();
    q.window_seconds = 0;
    assert!(funnel(&t, &[], &q).is_err_and(|e| e.to_string().contains("window")));
    let mut q = ok.clone();
    q.to = q.from;
    assert!(funnel(&t, &[], &q).is_err_and(|e| e.to_string().contains("before")));
    let mut q = ok.clone();
    q.steps[0].filters.push(PropertyFilter {
        source: Source::Event,
        property: "p".into(),
        op: Op::Gt,
        value: Some(true.into()),
    });
    assert!(funnel(&t, &[], &q).is_err_and(|e| e.to_string().contains("string or number")));
    let thirty: Vec<_> = (0..30).map(|i| (format!("E{i}"), vec![])).collect();
    let steps: Vec<(&str, Vec<PropertyFilter>)> = thirty
        .iter()
        .map(|(e, f)| (e.as_str(), f.clone()))
        .collect();
    assert!(
        funnel(&t, &[], &query(Order::Ordered, &steps)).is_ok(),
        "30 steps are fine"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The whole query (filters by name, identity merges, grouping, ordering of ties) against
    /// a plain one: group rows by canonical person in a map, sort, run the reference kernel.
    #[test]
    fn whole_funnel_matches_reference(
        raw in proptest::collection::vec((0u8..6, 0u8..4, 0i64..30, any::<bool>()), 1..50),
        merges in proptest::collection::vec((0u8..6, 0u8..6), 0..3),
        window in 1i64..15,
        seal_at in 0usize..60,
        project in any::<bool>(),
        seal_end in any::<bool>(),
        late_merges in proptest::collection::vec((0u8..6, 0u8..6), 0..3),
        order in prop_oneof![Just(Order::Ordered), Just(Order::Strict), Just(Order::Any)],
    ) {
        let names = ["A", "B", "C", "X"];
        let mut t = Table::default();
        for (a, u) in &merges {
            t.push_json(format!(r#"{{"type":"identify","userId":"u{u}","anonymousId":"a{a}","timestamp":"2026-01-01T00:00:00Z"}}"#).as_bytes()).expect("push");
        }
        for (i, (p, e, ts, anon)) in raw.iter().enumerate() {
            if i == seal_at {
                // Part sealed (reordered, skipped by time statistics), part hot.
                let days = t.order_hot();
                t.mark_sealed(&days);
                if project {
                    // The person-ordered projection covers these rows; later rows are not in it.
                    t.by_person = t.by_person.extended(&t);
                }
            }
            let who = if *anon { format!(r#""anonymousId":"a{p}""#) } else { format!(r#""userId":"u{p}""#) };
            let time = Utc.timestamp_opt(1_767_225_600 + ts, 0).single().expect("time").to_rfc3339();
            t.push_json(format!(r#"{{"type":"track","event":"{}",{who},"timestamp":"{time}"}}"#, names[*e as usize]).as_bytes()).expect("push");
        }
        if seal_end {
            let days = t.order_hot();
            t.mark_sealed(&days);
            t.by_person = t.by_person.extended(&t);
        }
        // Merges made after the projection was built: it is by raw id, so they apply at query
        // time like the others.
        for (a, u) in &late_merges {
            t.push_json(format!(r#"{{"type":"identify","userId":"u{u}","anonymousId":"a{a}","timestamp":"2026-01-01T00:00:00Z"}}"#).as_bytes()).expect("push");
        }
        let redirects = t.persons.redirects();
        let mut q = query(order, &[("A", vec![]), ("B", vec![]), ("C", vec![])]);
        q.window_seconds = window;
        q.from = Utc.timestamp_opt(1_767_225_600, 0).single().expect("time");
        q.to = Utc.timestamp_opt(1_767_225_600 + 20, 0).single().expect("time");
        let got: Vec<u64> = funnel(&t, &redirects, &q).expect("funnel").steps.iter().map(|s| s.count).collect();

        let expected = whole_reference(&t, &redirects, &q);
        prop_assert_eq!(got, expected);
    }
}

/// The whole query done plainly: rows grouped by canonical person in a map, sorted by (time,
/// step, row), the reference kernel per person.
fn whole_reference(t: &Table, redirects: &[u32], q: &FunnelQuery) -> Vec<u64> {
    let names: Vec<&str> = q.steps.iter().map(|s| s.event.as_str()).collect();
    let mut groups: std::collections::BTreeMap<u32, Vec<(i64, u32, usize)>> = Default::default();
    for row in 0..t.len() {
        let name = t.names.value(t.name[row]).expect("name");
        // Strict funnels see every event: one that matches no step breaks a chain.
        let step = match names.iter().position(|n| *n == name) {
            Some(step) => step as u32,
            None if q.order == Order::Strict => 32,
            None => continue,
        };
        if t.ts[row] < q.from.timestamp_micros()
            || t.ts[row] > q.to.timestamp_micros() + q.window_seconds * 1_000_000
        {
            continue;
        }
        groups
            .entry(redirects[t.person[row] as usize])
            .or_default()
            .push((t.ts[row], step, row));
    }
    let mut expected = vec![0u64; names.len()];
    let (from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
    for events in groups.values_mut() {
        events.sort();
        let rows: Vec<Row> = events
            .iter()
            .map(|(ts, bit, _)| Row {
                value: 0,
                ts: *ts,
                mask: 1u32.checked_shl(*bit).unwrap_or(0),
            })
            .collect();
        let (n, window) = (names.len(), q.window_seconds * 1_000_000);
        let level = match q.order {
            Order::Ordered => ordered_ref(&rows, n, window, from, to),
            Order::Strict => strict_ref(&rows, n, window, from, to),
            Order::Any => any_ref(&rows, n, window, from, to),
        };
        for c in expected.iter_mut().take(level) {
            *c += 1;
        }
    }
    expected
}

#[test]
fn a_table_split_across_cores_gives_the_same_answer() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let names = ["A", "B", "C", "D", "X"];
    let mut t = Table::default();
    for _ in 0..40_000 {
        let p = rng.random_range(0..3_000);
        let who = if rng.random_bool(0.5) {
            format!(r#""anonymousId":"a{p}""#)
        } else {
            format!(r#""userId":"u{p}""#)
        };
        if rng.random_bool(0.02) {
            t.push_json(format!(r#"{{"type":"identify","userId":"u{p}","anonymousId":"a{}","timestamp":"2026-01-01T00:00:00Z"}}"#, rng.random_range(0..3_000)).as_bytes()).expect("push");
        }
        let ts = 1_767_225_600 + rng.random_range(0..86_400 * 20);
        let time = Utc
            .timestamp_opt(ts, 0)
            .single()
            .expect("time")
            .to_rfc3339();
        let e = names[rng.random_range(0..names.len())];
        t.push_json(
            format!(r#"{{"type":"track","event":"{e}",{who},"timestamp":"{time}"}}"#).as_bytes(),
        )
        .expect("push");
    }
    assert!(crate::parallel::ranges(t.len()).len() > 1 || rayon::current_num_threads() == 1);
    let redirects = t.persons.redirects();
    let mut q = query(
        Order::Ordered,
        &[("A", vec![]), ("B", vec![]), ("C", vec![]), ("D", vec![])],
    );
    q.window_seconds = 3 * 86_400;
    q.from = Utc.timestamp_opt(1_767_225_600, 0).single().expect("time");
    q.to = Utc
        .timestamp_opt(1_767_225_600 + 15 * 86_400, 0)
        .single()
        .expect("time");
    let got: Vec<u64> = funnel(&t, &redirects, &q)
        .expect("funnel")
        .steps
        .iter()
        .map(|s| s.count)
        .collect();
    assert_eq!(got, whole_reference(&t, &redirects, &q));
    assert!(got[3] > 0, "the data reaches the last step: {got:?}");
}

fn track(t: &mut Table, who: &str, name: &str, secs: i64) {
    let time = Utc
        .timestamp_opt(secs, 0)
        .single()
        .expect("time")
        .to_rfc3339();
    t.push_json(
        format!(r#"{{"type":"track","event":"{name}","userId":"{who}","timestamp":"{time}"}}"#)
            .as_bytes(),
    )
    .expect("push");
}

fn exclusion(event: &str, from_step: usize, to_step: usize) -> Exclusion {
    Exclusion {
        event: event.into(),
        filters: vec![],
        from_step,
        to_step,
    }
}

#[test]
fn exclusion_steps_leave_out_persons_with_the_event_between_two_steps() {
    let mut t = Table::default();
    // p1: X between A and B. p2: X between B and C. p3: stopped after A, X within the window.
    // p4: stopped after A, X after the window. p5: X before A.
    for (who, events) in [
        ("p1", &[("A", 0), ("X", 5), ("B", 10), ("C", 20)][..]),
        ("p2", &[("A", 0), ("B", 10), ("X", 15), ("C", 20)]),
        ("p3", &[("A", 0), ("X", 30)]),
        ("p4", &[("A", 0), ("X", 4000)]),
        ("p5", &[("X", 0), ("A", 1), ("B", 2), ("C", 3)]),
    ] {
        for (name, at) in events {
            track(&mut t, who, name, 1_000 + at);
        }
    }
    let steps = [("A", vec![]), ("B", vec![]), ("C", vec![])];
    let r = t.persons.redirects();
    let counts = |q: &FunnelQuery| -> (Vec<u64>, Option<u64>) {
        let res = funnel(&t, &r, q).expect("funnel");
        (res.steps.iter().map(|s| s.count).collect(), res.excluded)
    };
    for order in [Order::Ordered, Order::Strict] {
        let mut q = query(order, &steps);
        assert_eq!(counts(&q).1, None);
        q.exclusions = vec![exclusion("X", 0, 1)];
        // p1 and p3 are out.
        let (c, x) = counts(&q);
        assert_eq!(x, Some(2), "{order:?}");
        if order == Order::Ordered {
            assert_eq!(c, vec![3, 2, 2]);
        }
        q.exclusions = vec![exclusion("X", 1, 2)];
        // p2 is out (and p1/p3 are not: X is not between B and C for them).
        let (c, x) = counts(&q);
        assert_eq!(x, Some(1), "{order:?}");
        if order == Order::Ordered {
            assert_eq!(c, vec![4, 2, 2]);
        }
    }
    let mut q = query(Order::Any, &steps);
    q.exclusions = vec![exclusion("X", 0, 1)];
    assert!(
        funnel(&t, &r, &q).is_err(),
        "no exclusions in any-order funnels"
    );
    let mut q = query(Order::Ordered, &steps);
    q.exclusions = vec![exclusion("X", 1, 1)];
    assert!(
        funnel(&t, &r, &q).is_err(),
        "from_step must be before to_step"
    );
    q.exclusions = vec![exclusion("X", 0, 3)];
    assert!(funnel(&t, &r, &q).is_err(), "to_step must be a step");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Exclusions only remove persons: every step count drops by at most the number excluded,
    /// the first by exactly that, and an exclusion event nobody did changes nothing.
    #[test]
    fn exclusions_only_remove_persons(
        raw in proptest::collection::vec((0u8..8, 0u8..4, 0i64..40), 1..60),
        strict_order in any::<bool>(),
        from_step in 0usize..2,
        window in 1i64..20,
    ) {
        let names = ["A", "B", "C", "X"];
        let mut t = Table::default();
        for (p, e, ts) in &raw {
            track(&mut t, &format!("p{p}"), names[*e as usize], 1_000 + ts);
        }
        let r = t.persons.redirects();
        let order = if strict_order { Order::Strict } else { Order::Ordered };
        let mut q = query(order, &[("A", vec![]), ("B", vec![]), ("C", vec![])]);
        q.window_seconds = window;
        let plain: Vec<u64> = funnel(&t, &r, &q).expect("funnel").steps.iter().map(|s| s.count).collect();
        q.exclusions = vec![exclusion("Nobody", from_step, 2)];
        let none = funnel(&t, &r, &q).expect("funnel");
        prop_assert_eq!(none.excluded, Some(0));
        prop_assert_eq!(none.steps.iter().map(|s| s.count).collect::<Vec<_>>(), plain.clone());
        q.exclusions = vec![exclusion("X", from_step, from_step + 1)];
        let res = funnel(&t, &r, &q).expect("funnel");
        let x = res.excluded.expect("excluded");
        prop_assert_eq!(res.steps[0].count + x, plain[0]);
        for (with, without) in res.steps.iter().zip(&plain) {
            prop_assert!(with.count <= *without && without - with.count <= x);
        }
    }
}
