//! Compatibility: this build still reads the log files earlier versions wrote.
//!
//! `tests/compat/v<N>/` holds a small log written by format version N (see its README). The
//! tests copy it to a temporary directory, open it and check every record and consumer
//! offset. `write_fixtures` (ignored; run with `LIVORA_WRITE_FIXTURES=1 cargo test -p
//! livora-log --test compat -- --ignored write_fixtures`) writes the current version's
//! fixture: a new format version adds `v<N+1>/` beside the others and keeps them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use livora_log::format::{self, VERSION};
use livora_log::{Error, EventLog, LogOptions, NewRecord, Record, Uuid};

const TENANT_A: Uuid = Uuid::from_u128(0x0a);
const TENANT_B: Uuid = Uuid::from_u128(0x0b);
/// 2026-01-01T00:00:00Z in µs.
const T0: i64 = 1_767_225_600_000_000;

fn fixture_dir(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/compat/v{version}"))
}

/// The records of the v1 fixture: segment 0 holds offsets 0..3, segment 3 holds 3..5.
fn v1_records() -> Vec<Record> {
    let r = |offset: u64, tenant: Uuid, id: &str, payload: &[u8]| Record {
        offset,
        appended_at_us: T0 + offset as i64 * 1_000_000,
        tenant,
        id: id.to_owned(),
        payload: payload.to_vec(),
    };
    vec![
        r(
            0,
            TENANT_A,
            "m-1",
            br#"{"type":"track","event":"Viewed","userId":"u1"}"#,
        ),
        r(
            1,
            TENANT_B,
            "m-1",
            br#"{"type":"identify","userId":"u2","traits":{"plan":"pro"}}"#,
        ),
        r(2, TENANT_A, "", b""),
        r(
            3,
            TENANT_A,
            "m-3",
            br#"{"type":"track","event":"Bought","userId":"u1","properties":{"price":9.5}}"#,
        ),
        r(4, TENANT_B, "m-\u{e9}", &[0, 1, 2, 255]),
    ]
}

/// The consumers of the v1 fixture and their committed offsets.
const V1_CONSUMERS: [(&str, u64); 2] = [("columnar", 3), ("profiles", 5)];

fn segment_bytes(base: u64, records: &[Record]) -> Vec<u8> {
    let mut buf = format::header(base).to_vec();
    for r in records {
        format::encode(
            &mut buf,
            r.offset,
            r.appended_at_us,
            &r.tenant,
            &r.id,
            &r.payload,
        );
    }
    buf
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A copy of the fixture's log (`segments/`, `consumers/`) in a temporary directory.
fn copy_of(version: u8) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let from = fixture_dir(version);
    for sub in ["segments", "consumers"] {
        copy_dir(&from.join(sub), &dir.path().join(sub));
    }
    dir
}

fn options(dir: &Path) -> LogOptions {
    LogOptions {
        fsync: false,
        ..LogOptions::new(dir)
    }
}

#[tokio::test]
async fn reads_the_v1_log() {
    let dir = copy_of(1);
    let log = EventLog::open(options(dir.path())).expect("open the v1 log");
    let report = log.verify().expect("verify");
    assert_eq!(
        (
            report.segments,
            report.records,
            report.first_offset,
            report.end_offset
        ),
        (2, 5, 0, 5)
    );
    let mut reader = log.reader(0).expect("reader");
    assert_eq!(reader.next_batch(100).expect("read"), v1_records());
    let mut expected: Vec<(String, u64)> = V1_CONSUMERS
        .iter()
        .map(|(n, o)| ((*n).to_owned(), *o))
        .collect();
    expected.sort();
    assert_eq!(log.consumer_offsets().expect("offsets"), expected);
    let mut columnar = log.consumer("columnar").expect("consumer");
    assert_eq!(columnar.committed(), 3);
    let batch = columnar
        .poll(10, Duration::from_millis(10))
        .await
        .expect("poll");
    assert_eq!(batch, v1_records()[3..].to_vec());
    // The log goes on from where the old one stopped.
    let appended = log
        .append(vec![NewRecord {
            tenant: TENANT_A,
            id: "m-new".into(),
            payload: b"{}".to_vec(),
        }])
        .await
        .expect("append");
    assert_eq!(appended.offsets, vec![Some(5)]);
    log.close();
}

#[test]
fn a_newer_segment_version_is_refused_and_left_alone() {
    assert_eq!(
        VERSION, 1,
        "a new version adds a fixture: see the module doc"
    );
    for name in ["00000000000000000003.log", "00000000000000000000.log"] {
        let dir = copy_of(1);
        let path = dir.path().join("segments").join(name);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[7] = VERSION + 1;
        std::fs::write(&path, &bytes).expect("write");
        let result = EventLog::open(options(dir.path())).and_then(|log| {
            // The newest segment is checked on open; an older one when it is read.
            let read = log.reader(0).and_then(|mut r| r.next_batch(100));
            log.close();
            read.map(|_| ())
        });
        match result {
            Err(Error::UnsupportedFormat {
                found: 2,
                supported: 1,
                what: "log segment",
                ..
            }) => {}
            other => panic!("{name}: expected a format error, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "{name} untouched"
        );
    }
}

#[test]
fn a_newer_consumer_offset_version_is_refused() {
    let dir = copy_of(1);
    let path = dir.path().join("consumers/columnar.offset");
    std::fs::write(&path, "v2:{\"offset\":3}").expect("write");
    let log = EventLog::open(options(dir.path())).expect("open");
    let err = log.consumer("columnar").err();
    assert!(
        matches!(
            err,
            Some(Error::UnsupportedFormat {
                what: "consumer offset",
                found: 2,
                ..
            })
        ),
        "{err:?}"
    );
    log.close();
}

/// Writes `tests/compat/v<VERSION>/`. Segments are encoded with [`format::encode`] (what the
/// writer uses) so that their append times are fixed; the consumer offsets are committed by
/// [`livora_log::Consumer::commit`].
#[tokio::test]
#[ignore = "writes the fixture; set LIVORA_WRITE_FIXTURES=1"]
async fn write_fixtures() {
    if std::env::var("LIVORA_WRITE_FIXTURES").as_deref() != Ok("1") {
        eprintln!("set LIVORA_WRITE_FIXTURES=1 to write the fixture");
        return;
    }
    let out = fixture_dir(VERSION);
    for sub in ["segments", "consumers"] {
        let _ = std::fs::remove_dir_all(out.join(sub));
    }
    let records = v1_records();
    let segments = out.join("segments");
    std::fs::create_dir_all(&segments).expect("mkdir");
    for (base, part) in [(0, &records[..3]), (3, &records[3..])] {
        std::fs::write(
            segments.join(format::segment_name(base)),
            segment_bytes(base, part),
        )
        .expect("write segment");
    }
    let work = tempfile::tempdir().expect("tmp");
    copy_dir(&segments, &work.path().join("segments"));
    let log = EventLog::open(options(work.path())).expect("open");
    for (name, offset) in V1_CONSUMERS {
        log.consumer(name)
            .expect("consumer")
            .commit(offset)
            .expect("commit");
    }
    log.close();
    copy_dir(&work.path().join("consumers"), &out.join("consumers"));
}
