//! Compatibility: this build still reads the sealed segments earlier versions wrote.
//!
//! `tests/compat/v<N>/` holds a small segment store (manifest, events and persons Parquet
//! files) written by format version N (see its README). The tests open it with
//! [`ColumnStore::open`] and check the manifest, every row and every person exactly.
//! `write_fixtures` (ignored; run with `LIVORA_WRITE_FIXTURES=1 cargo test -p
//! livora-columnar --test compat -- --ignored write_fixtures`) writes the current version's
//! fixture: a new format version adds `v<N+1>/` beside the others and keeps them.

use std::path::{Path, PathBuf};

use livora_columnar::storage::{self, SegmentStore};
use livora_columnar::{ColumnOptions, ColumnStore, Error, Spill, Table, format, image};
use livora_log::{Record, Uuid};
use livora_model::{PersonKey, TenantId};

const TENANT: Uuid = Uuid::from_u128(0x0c);
/// 2026-01-10T00:00:00Z in seconds.
const DAY10: i64 = 1_768_003_200;
const DAY: i64 = 86_400;

fn fixture_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/compat/v{version}"))
}

fn record(offset: u64, mut event: serde_json::Value, secs: i64) -> Record {
    let ts = chrono::DateTime::from_timestamp(secs, 0).expect("time");
    event["timestamp"] = ts.to_rfc3339().into();
    event["messageId"] = format!("m{offset}").into();
    Record {
        offset,
        appended_at_us: secs * 1_000_000,
        tenant: TENANT,
        id: format!("m{offset}"),
        payload: serde_json::to_vec(&event).expect("json"),
    }
}

/// The events of the fixture, sealed in two rounds: offsets 0..5, then 5..8 (a late event
/// on day 10 and a merge of `bob` into `alice`).
fn rounds() -> [Vec<Record>; 2] {
    use serde_json::json;
    [
        vec![
            record(
                0,
                json!({"type": "track", "event": "Viewed", "anonymousId": "anon-1",
                       "properties": {"plan": "free", "price": 0}}),
                DAY10 + 5,
            ),
            record(
                1,
                json!({"type": "identify", "userId": "alice", "anonymousId": "anon-1",
                       "traits": {"plan": "pro"}}),
                DAY10 + DAY + 1,
            ),
            record(
                2,
                json!({"type": "track", "event": "Viewed", "userId": "bob",
                       "properties": {"both": "x", "price": 2.5}}),
                DAY10 + DAY + 2,
            ),
            record(
                3,
                json!({"type": "track", "event": "Order Completed", "userId": "alice",
                       "properties": {"both": 7, "products": [
                           {"sku": "A", "price": 2.5, "quantity": 3},
                           {"sku": "B", "sale": true}]}}),
                DAY10 + DAY + 3,
            ),
            record(
                4,
                json!({"type": "page", "name": "Home", "userId": "bob"}),
                DAY10 + 9,
            ),
        ],
        vec![
            record(
                5,
                json!({"type": "track", "event": "Viewed", "anonymousId": "anon-2",
                       "properties": {"plan": "free"}}),
                DAY10 + 7,
            ),
            record(
                6,
                json!({"type": "alias", "previousId": "bob", "userId": "alice"}),
                DAY10 + 2 * DAY,
            ),
            record(
                7,
                json!({"type": "track", "event": "Viewed", "userId": "carol",
                       "properties": {"plan": "pro \u{2728}", "price": -1.25}}),
                DAY10 + 2 * DAY + 1,
            ),
        ],
    ]
}

fn options(dir: &Path) -> ColumnOptions {
    ColumnOptions {
        segments: Some(SegmentStore::local(dir).expect("store")),
        ..ColumnOptions::default()
    }
}

/// As [`options`], with the column image in `<dir>/columns-cache` (as the server keeps it).
fn image_options(dir: &Path) -> ColumnOptions {
    ColumnOptions {
        spill: Some(Spill::named(dir.join("columns-cache"), usize::MAX).expect("spill")),
        ..options(dir)
    }
}

/// The image fixture of image version `version`, over the v1 segment store.
fn image_fixture_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/compat/image-v{version}"))
}

/// The v1 segment store with the image fixture of `version` beside it, in a new directory.
fn v1_with_image(version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&fixture_dir(1), dir.path());
    copy_dir(
        &image_fixture_dir(version),
        &dir.path().join("columns-cache"),
    );
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Each row in storage order: `person key (canonical person's key) | ts µs | name |
/// properties (sorted) | line items`.
fn dump(t: &Table) -> Vec<String> {
    let redirects = t.persons.redirects();
    let key = |p: u32| {
        let (user, id) = t.persons.describe(p).expect("person");
        if user {
            PersonKey::user(id).into_string()
        } else {
            PersonKey::anonymous(id).into_string()
        }
    };
    (0..t.len())
        .map(|row| {
            let mut props: Vec<String> = Vec::new();
            for k in t.strings.keys() {
                if let Some(v) = t.str_at(*k, row) {
                    props.push(format!("{}={v:?}", t.keys.value(*k).expect("key")));
                }
            }
            for k in t.numbers.keys() {
                if let Some(v) = t.num_at(*k, row) {
                    props.push(format!("{}={v}", t.keys.value(*k).expect("key")));
                }
            }
            props.sort();
            let p = t.person[row];
            format!(
                "{} ({}) | {} | {} | {} | {}",
                key(p),
                key(redirects[p as usize]),
                t.ts[row],
                t.names.value(t.name[row]).expect("name"),
                props.join(" "),
                t.lines_json(row).unwrap_or_default()
            )
        })
        .collect()
}

/// The v1 fixture's rows in storage order (see [`dump`]): the segments in manifest order,
/// each sorted by (person, time).
const V1_ROWS: [&str; 8] = [
    "a:anon-1 (a:anon-1) | 1768003205000000 | Viewed | plan=\"free\" price=0 | ",
    "u:bob (a:anon-1) | 1768003209000000 | $page | $name=\"Home\" | ",
    "u:alice (a:anon-1) | 1768089601000000 | $identify | plan=\"pro\" | ",
    "u:alice (a:anon-1) | 1768089603000000 | Order Completed | both=7 | [{\"price\":2.5,\"quantity\":3.0,\"sku\":\"A\"},{\"sale\":\"true\",\"sku\":\"B\"}]",
    "u:bob (a:anon-1) | 1768089602000000 | Viewed | both=\"x\" price=2.5 | ",
    "a:anon-2 (a:anon-2) | 1768003207000000 | Viewed | plan=\"free\" | ",
    "u:alice (a:anon-1) | 1768176000000000 | $alias |  | ",
    "u:carol (u:carol) | 1768176001000000 | Viewed | plan=\"pro \u{2728}\" price=-1.25 | ",
];

#[tokio::test]
async fn reads_the_v1_store() {
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&fixture_dir(1), dir.path());
    let store = ColumnStore::open(options(dir.path()))
        .await
        .expect("open the v1 store");
    let m = store.manifest();
    assert_eq!((m.version, m.offset, m.seq), (1, 8, 2));
    assert_eq!(store.applied(), 8);
    let tm = &m.tenants[&TENANT];
    assert_eq!(
        tm.persons,
        "persons/tenant=00000000-0000-0000-0000-00000000000c/00000002.parquet"
    );
    assert_eq!((tm.person_count, tm.late_events), (5, 1));
    let day = |d: &str, file: &str| {
        format!(
            "events/tenant=00000000-0000-0000-0000-00000000000c/date=2026-01-{d}/{file}.parquet"
        )
    };
    let segments: Vec<(String, u64, u64, i64, i64)> = tm
        .segments
        .iter()
        .map(|s| (s.path.clone(), s.rows, s.bytes, s.min_ts, s.max_ts))
        .collect();
    assert_eq!(
        segments,
        vec![
            (
                day("10", "00000001-0000"),
                2,
                3113,
                1768003205000000,
                1768003209000000
            ),
            (
                day("11", "00000001-0001"),
                3,
                4330,
                1768089601000000,
                1768089603000000
            ),
            (
                day("10", "00000002-0000"),
                1,
                2133,
                1768003207000000,
                1768003207000000
            ),
            (
                day("12", "00000002-0001"),
                2,
                2671,
                1768176000000000,
                1768176001000000
            ),
        ]
    );
    let table = store.table(TenantId(TENANT)).expect("the tenant's table");
    let t = ColumnStore::read(&table);
    assert_eq!(dump(&t), V1_ROWS);
    assert_eq!((t.sealed, t.hot_len(), t.late), (8, 0, 1));
    let (keys, parents) = t.persons.snapshot();
    assert_eq!(
        keys.collect::<Vec<_>>(),
        ["a:anon-1", "u:alice", "u:bob", "a:anon-2", "u:carol"]
    );
    assert_eq!(t.persons.redirects(), [0, 0, 0, 3, 4]);
    assert_eq!(parents.len(), 5);
}

#[tokio::test]
async fn every_v1_parquet_file_says_its_version() {
    let dir = fixture_dir(1);
    let m: storage::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join(storage::MANIFEST)).expect("manifest"))
            .expect("json");
    let tm = &m.tenants[&TENANT];
    let files = std::iter::once(&tm.persons).chain(tm.segments.iter().map(|s| &s.path));
    for path in files {
        let bytes = bytes::Bytes::from(std::fs::read(dir.join(path)).expect("read"));
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(bytes).expect("parquet");
        let kv = parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .key_value_metadata()
            .cloned()
            .unwrap_or_default();
        assert!(
            kv.iter()
                .any(|kv| kv.key == format::KEY && kv.value.as_deref() == Some("1")),
            "{path}: {kv:?}"
        );
    }
}

#[tokio::test]
async fn a_newer_manifest_version_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&fixture_dir(1), dir.path());
    let path = dir.path().join(storage::MANIFEST);
    let text = std::fs::read_to_string(&path).expect("read");
    let newer = text.replacen("\"version\": 1,", "\"version\": 2,", 1);
    assert_ne!(newer, text);
    std::fs::write(&path, newer).expect("write");
    match ColumnStore::open(options(dir.path())).await {
        Err(Error::UnsupportedFormat {
            what,
            found,
            supported: 1,
        }) => assert_eq!((what.as_str(), found.as_str()), ("manifest.json", "2")),
        Err(e) => panic!("expected a format error, got {e}"),
        Ok(_) => panic!("expected a format error, the store opened"),
    }
}

/// Image `version` (`tests/compat/image-v<N>/`, written by the seals of `rounds()` over the
/// v1 store's segments) is read instead of the segments, and holds the same rows; its
/// person-ordered projection is read too, not rebuilt.
async fn reads_image(version: u32) {
    let dir = v1_with_image(version);
    let store = ColumnStore::open(image_options(dir.path()))
        .await
        .expect("open the v1 store with its image");
    assert_eq!(store.rows_from_image(), 8, "every row from the image");
    let table = store.table(TenantId(TENANT)).expect("the tenant's table");
    let t = ColumnStore::read(&table);
    assert_eq!(dump(&t), V1_ROWS);
    assert_eq!((t.sealed, t.hot_len(), t.late), (8, 0, 1));
    let runs: Vec<_> = t.by_person.runs.iter().map(|r| r.rows.clone()).collect();
    assert_eq!(runs, vec![0..8_usize], "the runs the seals built, merged");
    // alice and bob merged into anon-1 after round 1: their rows are one group now.
    let mut entries: Vec<(u32, i64)> = Vec::new();
    for run in &t.by_person.runs {
        for g in 0..run.groups() {
            for i in run.entries(g) {
                entries.push((t.persons.redirects()[g], run.ts[i]));
            }
        }
    }
    let anon1: Vec<i64> = entries.iter().filter(|e| e.0 == 0).map(|e| e.1).collect();
    assert_eq!(anon1.len(), 6);
    assert!(anon1.is_sorted(), "{anon1:?}");
}

/// The bytes an image claims, by part: 8 rows of time, person and name, and every part
/// something (the v2 fixture has properties, line items and one projection run).
#[test]
fn an_image_says_what_its_parts_take() {
    let parts = image::breakdown(&image_fixture_dir(2)).expect("read the fixture");
    let part = |name: &str| parts.iter().find(|(n, _)| *n == name).map(|(_, b)| *b);
    assert_eq!(part("time, person, name"), Some(8 * 16));
    // One run: 8 entries of 16 bytes, and a group start per person (5 persons, plus one).
    assert!(part("projection").is_some_and(|b| b >= 8 * 16));
    for name in ["property values", "property presence", "line items"] {
        assert!(part(name).is_some_and(|b| b > 0), "{name}: {parts:?}");
    }
}

/// Version 1: property columns with a value for every row, converted at the load.
#[tokio::test]
async fn reads_the_v1_image() {
    reads_image(1).await;
}

/// Version 2: sparse property columns.
#[tokio::test]
async fn reads_the_v2_image() {
    reads_image(2).await;
}

/// An image of a version this build does not know is not read: the segments are, and a
/// new image replaces it.
#[tokio::test]
async fn a_newer_image_version_is_not_read() {
    let dir = v1_with_image(image::VERSION);
    let meta = dir
        .path()
        .join("columns-cache")
        .join(format!("{TENANT}.image.json"));
    let text = std::fs::read_to_string(&meta).expect("read");
    let newer = text.replacen(
        &format!("\"version\":{},", image::VERSION),
        &format!("\"version\":{},", image::VERSION + 1),
        1,
    );
    assert_ne!(newer, text);
    std::fs::write(&meta, newer).expect("write");
    let store = ColumnStore::open(image_options(dir.path()))
        .await
        .expect("open");
    assert_eq!(store.rows_from_image(), 0);
    let table = store.table(TenantId(TENANT)).expect("the tenant's table");
    assert_eq!(dump(&ColumnStore::read(&table)), V1_ROWS);
    let rewritten = std::fs::read_to_string(&meta).expect("a new image");
    assert!(rewritten.contains(&format!("\"version\":{}", image::VERSION)));
}

/// Writes `tests/compat/image-v<image::VERSION>/`: the image the seals of `rounds()` leave,
/// over segments equal (paths, rows) to the v1 store's.
#[tokio::test]
#[ignore = "writes the fixture; set LIVORA_WRITE_FIXTURES=1"]
async fn write_image_fixture() {
    if std::env::var("LIVORA_WRITE_FIXTURES").as_deref() != Ok("1") {
        eprintln!("set LIVORA_WRITE_FIXTURES=1 to write the fixture");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let store = ColumnStore::open(image_options(dir.path()))
        .await
        .expect("open");
    for round in rounds() {
        store.apply(&round);
        store.seal(None).await.expect("seal");
    }
    drop(store);
    let out = image_fixture_dir(image::VERSION);
    let _ = std::fs::remove_dir_all(&out);
    copy_dir(&dir.path().join("columns-cache"), &out);
}

/// Writes `tests/compat/v<VERSION>/` with the column store's own sealing.
#[tokio::test]
#[ignore = "writes the fixture; set LIVORA_WRITE_FIXTURES=1"]
async fn write_fixtures() {
    if std::env::var("LIVORA_WRITE_FIXTURES").as_deref() != Ok("1") {
        eprintln!("set LIVORA_WRITE_FIXTURES=1 to write the fixture");
        return;
    }
    let out = fixture_dir(format::VERSION);
    for sub in [storage::MANIFEST, "events", "persons"] {
        let path = out.join(sub);
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    }
    let store = ColumnStore::open(options(&out)).await.expect("open");
    for round in rounds() {
        store.apply(&round);
        store.seal(None).await.expect("seal");
    }
}
