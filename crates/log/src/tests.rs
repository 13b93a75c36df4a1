//! Tests of the log as a whole: durability across reopen, dedupe, recovery, consumers.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn opts(dir: &std::path::Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.fsync = false;
    o
}

fn rec(tenant: u128, id: &str) -> NewRecord {
    NewRecord {
        tenant: Uuid::from_u128(tenant),
        id: id.to_owned(),
        payload: format!("payload of {id}").into_bytes(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn all(log: &EventLog) -> Vec<Record> {
    log.reader(0)
        .and_then(|mut r| r.next_batch(usize::MAX))
        .expect("read")
}

#[test]
fn submitted_records_keep_their_place_before_later_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let log = EventLog::open(opts(dir.path())).expect("open");
    // Queued before the append is even started, waited for after it.
    let first = log.submit(vec![rec(1, "a"), rec(1, "b")]).expect("submit");
    let second = rt.block_on(log.append(vec![rec(1, "c")])).expect("append");
    let first = rt.block_on(first).expect("first");
    assert_eq!(first.offsets, vec![Some(0), Some(1)]);
    assert_eq!(second.offsets, vec![Some(2)]);
    // A dropped answer does not withdraw what was submitted.
    drop(log.submit(vec![rec(1, "d")]).expect("submit"));
    rt.block_on(log.append(vec![rec(1, "e")])).expect("append");
    let ids: Vec<_> = all(&log).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
}

#[test]
fn appends_are_read_back_in_order_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let log = EventLog::open(opts(dir.path())).expect("open");
    let out = rt
        .block_on(log.append(vec![rec(1, "a"), rec(1, "b"), rec(2, "a")]))
        .expect("append");
    assert_eq!(out.offsets, vec![Some(0), Some(1), Some(2)]);
    log.close();
    drop(log);
    let log = EventLog::open(opts(dir.path())).expect("reopen");
    assert_eq!(log.end_offset(), 3);
    let got = all(&log);
    let ids: Vec<_> = got
        .iter()
        .map(|r| (r.tenant.as_u128(), r.id.as_str()))
        .collect();
    assert_eq!(ids, vec![(1, "a"), (1, "b"), (2, "a")]);
    assert_eq!(got[1].payload, b"payload of b");
}

#[test]
fn a_second_process_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _log = EventLog::open(opts(dir.path())).expect("open");
    assert!(matches!(
        EventLog::open(opts(dir.path())),
        Err(Error::Locked(_))
    ));
}

#[test]
fn duplicates_are_dropped_within_a_call_across_calls_and_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let log = EventLog::open(opts(dir.path())).expect("open");
    let out = rt
        .block_on(log.append(vec![rec(1, "m1"), rec(1, "m1"), rec(2, "m1")]))
        .expect("append");
    assert_eq!(
        out.offsets,
        vec![Some(0), None, Some(1)],
        "other tenant is not a dup"
    );
    let out = rt
        .block_on(log.append(vec![rec(1, "m1"), rec(1, "m2")]))
        .expect("append");
    assert_eq!(out.offsets, vec![None, Some(2)]);
    log.close();
    drop(log);
    let log = EventLog::open(opts(dir.path())).expect("reopen");
    let out = rt
        .block_on(log.append(vec![rec(1, "m2"), rec(2, "m1"), rec(1, "m3")]))
        .expect("append");
    assert_eq!(out.offsets, vec![None, None, Some(3)]);
    assert_eq!(out.duplicates(), 2);
}

#[test]
fn rolls_segments_and_reads_across_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let mut o = opts(dir.path());
    o.segment_bytes = 1024;
    let log = EventLog::open(o.clone()).expect("open");
    for chunk in 0..20 {
        let batch = (0..10).map(|i| rec(1, &format!("{chunk}-{i}"))).collect();
        rt.block_on(log.append(batch)).expect("append");
    }
    let report = log.verify().expect("verify");
    assert!(report.segments > 5, "{report:?}");
    assert_eq!(report.records, 200);
    let got = all(&log);
    assert_eq!(got.len(), 200);
    assert!(got.iter().enumerate().all(|(i, r)| r.offset == i as u64));

    // A reader from the middle, and a backward scan with a cursor.
    let mid = log
        .reader(123)
        .and_then(|mut r| r.next_batch(5))
        .expect("read");
    assert_eq!(
        mid.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![123, 124, 125, 126, 127]
    );
    let mut back = Vec::new();
    log.scan_backwards(Some(57), |r| {
        back.push(r.offset);
        back.len() < 10
    })
    .expect("scan");
    assert_eq!(back, (47..57).rev().collect::<Vec<_>>());
}

#[test]
fn consumers_resume_from_their_committed_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let log = EventLog::open(opts(dir.path())).expect("open");
    rt.block_on(log.append((0..10).map(|i| rec(1, &i.to_string())).collect()))
        .expect("append");
    let mut c = log.consumer("profiles").expect("consumer");
    let got = rt
        .block_on(c.poll(4, Duration::from_millis(1)))
        .expect("poll");
    assert_eq!(got.len(), 4);
    c.commit(4).expect("commit");
    assert!(log.consumer("../etc").is_err());
    log.close();
    drop((c, log));

    let log = EventLog::open(opts(dir.path())).expect("reopen");
    let mut c = log.consumer("profiles").expect("consumer");
    assert_eq!(c.committed(), 4);
    let got = rt
        .block_on(c.poll(100, Duration::from_millis(1)))
        .expect("poll");
    assert_eq!(got.first().map(|r| r.offset), Some(4));
    assert_eq!(got.len(), 6);
    assert_eq!(
        log.consumer_offsets().expect("list"),
        vec![("profiles".into(), 4)]
    );

    // A poll at the end wakes up when new records become durable.
    let log2 = log.clone();
    let waiter =
        rt.spawn(async move { c.poll(100, Duration::from_secs(10)).await.map(|v| v.len()) });
    rt.block_on(log2.append(vec![rec(1, "late")]))
        .expect("append");
    assert_eq!(rt.block_on(waiter).expect("join").expect("poll"), 1);
}

#[test]
fn retention_waits_for_every_consumer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let mut o = opts(dir.path());
    o.segment_bytes = 512;
    o.retention = Duration::ZERO;
    o.dedupe_window = Duration::ZERO;
    let log = EventLog::open(o).expect("open");
    for i in 0..50 {
        rt.block_on(log.append(vec![rec(1, &i.to_string())]))
            .expect("append");
    }
    let mut c = log.consumer("slow").expect("consumer");
    c.commit(0).expect("commit");
    assert_eq!(
        log.enforce_retention().expect("retention"),
        0,
        "consumer at 0 holds all"
    );
    c.commit(30).expect("commit");
    let deleted = log.enforce_retention().expect("retention");
    assert!(deleted > 0);
    assert!(log.start_offset() <= 30 && log.start_offset() > 0);
    let report = log.verify().expect("verify");
    assert_eq!(report.end_offset, 50);
    // Reading from an offset that was deleted starts at the oldest kept record.
    let first = log
        .reader(0)
        .and_then(|mut r| r.next_batch(1))
        .expect("read");
    assert_eq!(first[0].offset, log.start_offset());
}

#[test]
fn retention_shorter_than_dedupe_window_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(dir.path());
    o.retention = Duration::from_secs(60);
    assert!(matches!(EventLog::open(o), Err(Error::Config(_))));
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let log = EventLog::open(opts(dir.path())).expect("open");
    rt.block_on(log.append(vec![rec(1, "a"), rec(1, "b")]))
        .expect("append");
    log.close();
    drop(log);
    let last = segment_files(dir.path()).pop().expect("segment");
    OpenOptions::new()
        .append(true)
        .open(&last)
        .and_then(|mut f| f.write_all(&[0xAB; 37]))
        .expect("garble");
    let log = EventLog::open(opts(dir.path())).expect("reopen");
    assert_eq!(log.end_offset(), 2);
    rt.block_on(log.append(vec![rec(1, "c")])).expect("append");
    assert_eq!(log.verify().expect("verify").records, 3);
}

#[test]
fn damage_larger_than_a_torn_write_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let mut o = opts(dir.path());
    o.max_torn_bytes = 100;
    let log = EventLog::open(o.clone()).expect("open");
    rt.block_on(log.append((0..50).map(|i| rec(1, &i.to_string())).collect()))
        .expect("append");
    log.close();
    drop(log);
    let last = segment_files(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&last).expect("read");
    bytes[format::HEADER_LEN + 10] ^= 0xFF; // inside the first record
    std::fs::write(&last, &bytes).expect("write");
    assert!(matches!(EventLog::open(o), Err(Error::Corrupt { .. })));
}

#[test]
fn damage_in_place_refuses_to_open_even_when_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let log = EventLog::open(opts(dir.path())).expect("open");
    rt.block_on(log.append((0..50).map(|i| rec(1, &i.to_string())).collect()))
        .expect("append");
    log.close();
    drop(log);
    let last = segment_files(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&last).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01; // one bit, in an acknowledged record, with valid records after it
    std::fs::write(&last, &bytes).expect("write");
    let err = EventLog::open(opts(dir.path())).err().expect("refused");
    assert!(err.to_string().contains("valid record follows"), "{err}");
}

#[test]
fn a_crash_while_creating_a_segment_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let mut o = opts(dir.path());
    o.segment_bytes = 600;
    let log = EventLog::open(o.clone()).expect("open");
    for i in 0..30 {
        rt.block_on(log.append(vec![rec(1, &i.to_string())]))
            .expect("append");
    }
    log.close();
    drop(log);
    // The power went out while the writer rolled: the next segment exists, its header torn.
    let base = {
        let log = EventLog::open(o.clone()).expect("open");
        let end = log.end_offset();
        log.close();
        end
    };
    let torn = dir.path().join("segments").join(format::segment_name(base));
    std::fs::write(&torn, &format::header(base)[..5]).expect("torn header");
    let log = EventLog::open(o).expect("reopen");
    assert_eq!(log.end_offset(), base);
    rt.block_on(log.append(vec![rec(1, "after")]))
        .expect("append");
    let report = log.verify().expect("verify");
    assert_eq!(report.records, base + 1);
}

#[test]
fn a_new_consumer_holds_retention_and_cannot_commit_past_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let mut o = opts(dir.path());
    o.segment_bytes = 512;
    o.retention = Duration::ZERO;
    o.dedupe_window = Duration::ZERO;
    let log = EventLog::open(o).expect("open");
    for i in 0..20 {
        rt.block_on(log.append(vec![rec(1, &i.to_string())]))
            .expect("append");
    }
    let mut c = log.consumer("never-committed").expect("consumer");
    assert_eq!(log.enforce_retention().expect("retention"), 0);
    assert!(c.commit(21).is_err(), "past the end");
    c.commit(20).expect("at the end");
    assert!(log.enforce_retention().expect("retention") > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Cutting the newest segment anywhere leaves exactly the records that fit before the
    /// cut, and the log keeps working after it.
    #[test]
    fn any_torn_tail_recovers_to_a_prefix(n in 1usize..40, cut_frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let log = EventLog::open(opts(dir.path())).expect("open");
        let recs: Vec<_> = (0..n).map(|i| rec(7, &format!("id-{i}"))).collect();
        rt.block_on(log.append(recs)).expect("append");
        log.close();
        drop(log);
        let last = segment_files(dir.path()).pop().expect("segment");
        let len = std::fs::metadata(&last).expect("meta").len();
        let cut = format::HEADER_LEN as u64
            + ((len - format::HEADER_LEN as u64) as f64 * cut_frac) as u64;
        OpenOptions::new().write(true).open(&last).and_then(|f| f.set_len(cut)).expect("cut");

        // Reference: how many whole records fit below the cut.
        let rec_len = format::encoded_len("id-0", b"payload of id-0") as u64;
        let mut expected = 0u64;
        let mut pos = format::HEADER_LEN as u64;
        for i in 0..n {
            let l = rec_len + 2 * (format!("{i}").len() as u64 - 1);
            if pos + l > cut { break; }
            pos += l;
            expected += 1;
        }
        let log = EventLog::open(opts(dir.path())).expect("reopen");
        prop_assert_eq!(log.end_offset(), expected);
        let got = all(&log);
        let prefix = got.iter().enumerate().all(|(i, r)| r.id == format!("id-{i}"));
        prop_assert!(prefix);
        let out = rt.block_on(log.append(vec![rec(7, "after")])).expect("append");
        prop_assert_eq!(out.offsets, vec![Some(expected)]);
    }
}
