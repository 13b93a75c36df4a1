//! Tests of the profile table: against a plain map under budgets from none to zero, and at a
//! size where most profiles are cold in (encrypted) scratch files.

use std::collections::BTreeMap;

use chrono::DateTime;
use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Record an event on a person (created if missing).
    Record(u64, u8),
    Remove(u64),
    /// Join a group on every profile that has more than n events.
    JoinAll(u8),
    /// A snapshot round: encode, decode under the budget, go on with the copy.
    RoundTrip,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..40, any::<u8>()).prop_map(|(p, n)| Op::Record(p, n)),
        1 => (0u64..40).prop_map(Op::Remove),
        1 => any::<u8>().prop_map(Op::JoinAll),
        1 => Just(Op::RoundTrip),
    ]
}

fn record(p: &mut Profile, n: u8) {
    let at = DateTime::from_timestamp(1_700_000_000 + i64::from(n) * 3600, 0).expect("time");
    p.computed
        .record(&format!("event {}", n % 7), at, Some(f64::from(n)));
    p.predictions.insert(format!("p{}", n % 3), f64::from(n));
}

fn budget(limit: usize) -> Arc<Budget> {
    Budget::new(limit, std::env::temp_dir().join("livora-people-tests")).expect("budget")
}

fn same(people: &People, reference: &BTreeMap<u64, Profile>) -> Result<(), TestCaseError> {
    prop_assert_eq!(people.len(), reference.len());
    for (p, want) in reference {
        let got = people.get(p);
        prop_assert_eq!(got.as_deref(), Some(want), "person {}", p);
    }
    let walked: BTreeMap<u64, Profile> = people
        .in_memory_order()
        .into_iter()
        .map(|(p, s)| (p, s.load().into_owned()))
        .collect();
    prop_assert_eq!(&walked, reference);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A table under a tiny budget (a few profiles hot, small chunks filled and compacted)
    /// holds what a plain map holds, after every step.
    #[test]
    fn under_a_tiny_budget_the_profiles_are_those_of_a_plain_map(
        ops in prop::collection::vec(op(), 1..300),
        limit in prop_oneof![Just(0usize), Just(4000), Just(1 << 30)],
    ) {
        let budget = budget(limit);
        let mut people = People::default();
        people.set_budget(Some(budget.clone()));
        let mut reference: BTreeMap<u64, Profile> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Record(p, n) => {
                    record(people.entry(p), n);
                    record(reference.entry(p).or_default(), n);
                }
                Op::Remove(p) => {
                    prop_assert_eq!(people.remove(&p), reference.remove(&p));
                }
                Op::JoinAll(n) => {
                    let join = |x: &mut Profile| {
                        (x.computed.events > u64::from(n % 5)).then(|| x.groups.insert(format!("g{n}"))) == Some(true)
                    };
                    people.for_each_mut(join);
                    for x in reference.values_mut() {
                        join(x);
                    }
                }
                Op::RoundTrip => {
                    let frozen = people.frozen();
                    let bytes = rmp_serde::to_vec(&frozen).expect("encode");
                    drop(people);
                    people = reading_with(Some(budget.clone()), || {
                        rmp_serde::from_slice(&bytes).expect("decode")
                    });
                }
            }
            same(&people, &reference)?;
            if limit == 0 {
                prop_assert!(people.hot() <= 1, "{} hot under a zero budget", people.hot());
            }
            prop_assert_eq!(people.live_from_slots(), people.cold_bytes());
            prop_assert_eq!(budget.cold_bytes(), people.cold_bytes());
        }
        drop(people);
        prop_assert_eq!(budget.hot_bytes(), 0, "a dropped table leaves nothing charged");
        prop_assert_eq!(budget.cold_bytes(), 0);
    }
}

/// Many profiles under a budget a tenth of their decoded size: most are cold, in mapped
/// chunks, and every one reads back.
#[test]
fn most_profiles_go_cold_into_scratch_files() {
    let n = 60_000u64;
    let budget = budget(2 << 20);
    let mut people = People::default();
    people.set_budget(Some(budget.clone()));
    for p in 0..n {
        for k in 0..5 {
            record(people.entry(p), (p % 200) as u8 + k);
        }
    }
    assert!(
        budget.hot_bytes() <= 2 << 20,
        "{} hot bytes",
        budget.hot_bytes()
    );
    assert!(people.hot() < n as usize / 5, "{} of {n} hot", people.hot());
    assert!(budget.evictions() > 0);
    assert!(
        people
            .arena
            .full
            .iter()
            .all(|c| matches!(**c, Chunk::Mapped { .. })),
        "full chunks are mapped files"
    );
    // What reaches the disk is encrypted: the event names every profile counts are in the
    // heap's open chunk in the clear, and in no scratch file.
    let clear = |bytes: &[u8]| bytes.windows(6).any(|w| w == b"event ");
    assert!(clear(&people.arena.open));
    for c in &people.arena.full {
        if let Chunk::Mapped { map, .. } = &**c {
            assert!(!clear(map), "a scratch file holds a profile in the clear");
        }
    }
    for p in (0..n).step_by(997) {
        let mut want = Profile::default();
        for k in 0..5 {
            record(&mut want, (p % 200) as u8 + k);
        }
        assert_eq!(people.get(&p).as_deref(), Some(&want));
    }
}
