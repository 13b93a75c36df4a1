//! Tests of the bounded dedupe index: against a plain map, the memory cap, damaged and
//! unwritable run files, and the log reopened with a tiny cap.

use std::collections::HashMap as RefMap;

use proptest::prelude::*;

use super::*;
use crate::{EventLog, LogOptions, NewRecord};

fn k(id: u32) -> Key {
    key(&Uuid::from_u128(1), &id.to_le_bytes())
}

/// An index holding at most `ids` ids in memory.
fn index(dir: &Path, window_minutes: u64, ids: usize) -> DedupeIndex {
    DedupeIndex::new(
        Duration::from_secs(window_minutes * 60),
        ids * HOT_BYTES_PER_ID,
        dir,
    )
    .expect("index")
}

fn run_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "run"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn entries_stay_small() {
    assert_eq!(std::mem::size_of::<(Key, u32)>(), 16);
}

#[test]
fn window_is_respected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = DedupeIndex::new(Duration::from_secs(3600), usize::MAX, dir.path()).expect("new");
    let k = key(&Uuid::from_u128(1), b"m1");
    d.insert(k, 100);
    assert!(d.contains(k, 100));
    assert!(d.contains(k, 160));
    assert!(!d.contains(k, 161));
    assert!(
        !d.contains(key(&Uuid::from_u128(2), b"m1"), 100),
        "tenants differ"
    );
    d.tick(200);
    assert_eq!(d.len(), 0);
}

#[test]
fn memory_stays_under_the_cap_and_runs_stay_few() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = 4_000;
    let mut d = index(dir.path(), 60, cap);
    assert_eq!(d.cap(), cap);
    let n = 200_000u32;
    for i in 0..n {
        assert!(!d.contains(k(i), 1000));
        d.insert(k(i), 1000);
        assert!(
            d.in_memory_ids() <= cap,
            "{} ids in memory",
            d.in_memory_ids()
        );
        if i % 512 == 0 {
            d.tick(1000);
        }
    }
    d.settle();
    d.tick(1000);
    d.settle();
    let stats = d.stats();
    assert!(stats.freezes >= 99, "{stats:?}");
    assert!(stats.merges > 10, "{stats:?}");
    // 100 freezes of 2,000: tiers of 2K, 8K, 32K, 128K, at most 3 runs each.
    assert!(d.runs() <= 12, "{} runs", d.runs());
    assert_eq!(run_files(dir.path()), d.runs());
    for i in (0..n).step_by(7) {
        assert!(d.contains(k(i), 1000 + 60), "id {i}");
        assert!(!d.contains(k(i), 1000 + 61), "id {i} past the window");
    }
    assert!(!d.contains(k(n + 1), 1000));
    // Past the window every run goes at the sweep, files included.
    d.tick(1000 + 61 + SWEEP_EVERY_MINUTES);
    d.settle();
    assert_eq!((d.runs(), d.in_memory_ids()), (0, 0));
    assert_eq!(run_files(dir.path()), 0);
}

#[test]
fn a_run_that_cannot_be_written_keeps_its_ids_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("dedupe");
    let mut d = index(&runs, 60, 8);
    // The run directory is now a file: every run write fails.
    std::fs::remove_dir(&runs).expect("rmdir");
    std::fs::write(&runs, b"not a directory").expect("write");
    for i in 0..50 {
        d.insert(k(i), 1000);
        d.settle();
    }
    d.tick(1000);
    assert_eq!(d.runs(), 0);
    assert_eq!(d.in_memory_ids(), 50, "nothing forgotten");
    assert!((0..50).all(|i| d.contains(k(i), 1000)));
    assert!(!d.contains(k(50), 1000));
}

#[derive(Debug, Clone)]
enum Op {
    /// What the writer does: a lookup, then an insert if it was not there.
    Append(u32),
    /// What a rebuild does: an insert whatever is there.
    Insert(u32),
    Advance(u32),
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..150).prop_map(Op::Append),
        2 => (0u32..150).prop_map(Op::Insert),
        3 => (0u32..4).prop_map(Op::Advance),
        1 => Just(Op::Settle),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn bounded_index_answers_like_a_map(
        window in 0u64..12,
        cap in 2usize..12,
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = index(dir.path(), window, cap);
        let mut reference: RefMap<u32, u32> = RefMap::new();
        let w = window as u32;
        let expect = |r: &RefMap<u32, u32>, id: u32, minute: u32| {
            r.get(&id).is_some_and(|m| m + w >= minute)
        };
        let mut minute = 1000u32;
        for op in ops {
            match op {
                Op::Append(id) => {
                    let seen = d.contains(k(id), minute);
                    prop_assert_eq!(seen, expect(&reference, id, minute), "id {} at {}", id, minute);
                    if !seen {
                        d.insert(k(id), minute);
                        reference.insert(id, minute);
                    }
                }
                Op::Insert(id) => {
                    d.insert(k(id), minute);
                    reference.insert(id, minute);
                }
                Op::Advance(by) => {
                    minute += by;
                    d.tick(minute);
                }
                Op::Settle => d.settle(),
            }
            prop_assert!(d.in_memory_ids() <= d.cap());
        }
        d.settle();
        for id in 0..150 {
            for at in [minute, minute + 1, minute + w] {
                prop_assert_eq!(d.contains(k(id), at), expect(&reference, id, at), "id {} at {}", id, at);
            }
        }
    }
}

fn opts(dir: &Path, ids: usize) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.fsync = false;
    o.dedupe_memory_bytes = ids * HOT_BYTES_PER_ID;
    o
}

fn recs(range: std::ops::Range<u32>) -> Vec<NewRecord> {
    range
        .map(|i| NewRecord {
            tenant: Uuid::from_u128(3),
            id: format!("m{i}"),
            payload: vec![1, 2, 3],
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn ids_from_before_a_restart_are_recognised_with_a_tiny_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let log = EventLog::open(opts(dir.path(), 16)).expect("open");
    for chunk in 0..20 {
        let out = rt
            .block_on(log.append(recs(chunk * 50..chunk * 50 + 50)))
            .expect("append");
        assert_eq!(out.written(), 50);
    }
    let out = rt.block_on(log.append(recs(0..1000))).expect("append");
    assert_eq!(out.duplicates(), 1000, "before the restart");
    log.close();
    drop(log);
    let log = EventLog::open(opts(dir.path(), 16)).expect("reopen");
    assert!(
        run_files(&dir.path().join("dedupe")) > 0,
        "the rebuild froze runs"
    );
    let out = rt.block_on(log.append(recs(0..1000))).expect("append");
    assert_eq!(out.duplicates(), 1000, "after the restart");
    let out = rt.block_on(log.append(recs(1000..1010))).expect("append");
    assert_eq!(out.written(), 10);
    assert_eq!(log.end_offset(), 1010);
}

#[test]
fn damaged_or_foreign_run_files_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let log = EventLog::open(opts(dir.path(), 16)).expect("open");
    rt.block_on(log.append(recs(0..500))).expect("append");
    log.close();
    drop(log);
    let runs = dir.path().join("dedupe");
    let mut damaged = 0;
    for entry in std::fs::read_dir(&runs).expect("runs") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, bytes).expect("write");
        damaged += 1;
    }
    assert!(damaged > 0);
    std::fs::write(runs.join("0000000000000099.run"), b"LVDEDUPR garbage").expect("write");
    std::fs::write(runs.join("notes.txt"), b"foreign").expect("write");
    std::fs::create_dir(runs.join("sub")).expect("mkdir");
    let log = EventLog::open(opts(dir.path(), 16)).expect("reopen");
    assert!(!runs.join("notes.txt").exists() && !runs.join("sub").exists());
    let out = rt.block_on(log.append(recs(0..500))).expect("append");
    assert_eq!(out.duplicates(), 500);
    for entry in std::fs::read_dir(&runs).expect("runs") {
        let path = entry.expect("entry").path();
        // A merge may delete a run meanwhile; a temporary file may be half written.
        if path.extension().is_some_and(|x| x == "run") && path.exists() {
            assert!(
                run::Run::open(0, &path).is_ok() || !path.exists(),
                "{} is not a valid run",
                path.display()
            );
        }
    }
}

/// Timing and heap of insert + contains for 20M ids, with a 1M-id cap and uncapped:
/// `cargo test -p livora-log --release -- --ignored --nocapture dedupe_timing`.
#[test]
#[ignore]
fn dedupe_timing() {
    let n: u32 = std::env::var("DEDUPE_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000);
    for (label, bytes) in [
        ("capped 1M ids", 1_000_000 * HOT_BYTES_PER_ID),
        ("uncapped", usize::MAX),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = DedupeIndex::new(Duration::from_secs(86_400), bytes, dir.path()).expect("new");
        let mut worst = Duration::ZERO;
        let mut slow = 0u64;
        let mut peak_heap = 0usize;
        let minute = 1000;
        let started = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            if i % 1024 == 0 {
                d.tick(minute);
            }
            let key = k(i);
            if !d.contains(key, minute) {
                d.insert(key, minute);
            }
            let e = t.elapsed();
            worst = worst.max(e);
            if e > Duration::from_millis(1) {
                slow += 1;
            }
            if i % (1 << 18) == 0 {
                peak_heap = peak_heap.max(d.heap_bytes());
            }
        }
        let elapsed = started.elapsed();
        // Duplicates: every id again, in a different order.
        let t = Instant::now();
        let mut found = 0u64;
        for i in (0..n).rev() {
            found += u64::from(d.contains(k(i), minute));
        }
        let dup = t.elapsed();
        let t = Instant::now();
        let mut false_hits = 0u64;
        for i in n..n + 1_000_000 {
            false_hits += u64::from(d.contains(k(i), minute));
        }
        let absent = t.elapsed();
        eprintln!(
            "{label}: {n} new ids {:.0} ns/id ({:.2} s), worst op {:?}, ops > 1 ms {slow}; \
             duplicate lookups {:.0} ns/id (found {found}); absent lookups {:.0} ns/id \
             (false hits {false_hits}); peak heap {:.1} MiB, heap now {:.1} MiB, in memory {} ids, \
             runs {} ({:.0} MiB on disk); {:?}",
            elapsed.as_nanos() as f64 / f64::from(n),
            elapsed.as_secs_f64(),
            worst,
            dup.as_nanos() as f64 / f64::from(n),
            absent.as_nanos() as f64 / 1e6,
            peak_heap as f64 / f64::from(1 << 20),
            d.heap_bytes() as f64 / f64::from(1 << 20),
            d.in_memory_ids(),
            d.runs(),
            d.run_bytes() as f64 / f64::from(1 << 20),
            d.stats(),
        );
        assert_eq!(found, u64::from(n));
        assert_eq!(false_hits, 0);
    }
}
