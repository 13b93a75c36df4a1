//! Compatibility: this build still reads the profiles snapshots earlier versions wrote.
//!
//! `tests/compat/v<N>/` holds a snapshot directory (`MANIFEST` and one tenant file) written
//! by format version N (see its README), read here with the functions the service restores
//! with. `write_fixtures` (ignored; run with `LIVORA_WRITE_FIXTURES=1 cargo test -p
//! livora-profiles --lib compat_tests -- --ignored write_fixtures`) writes the current
//! version's fixture: a new format version adds `v<N+1>/` beside the others and keeps them.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use livora_model::segment::Definition;
use livora_model::{Event, TenantId};
use serde_json::{Value, json};

use crate::MergeRules;
use crate::segments::{Engine, Rule, Spec};
use crate::snapshot::{self, Announced, AnnouncedSet, SnapshotError};

const TENANT_ID: &str = "00000000-0000-0000-0000-00000000000d";

fn tenant() -> TenantId {
    TenantId::parse(TENANT_ID).expect("tenant id")
}
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

fn fixture_dir(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/compat/v{version}"))
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + secs, 0).expect("time")
}

fn event(mut v: Value, n: u32, secs: i64) -> Event {
    let m = v.as_object_mut().expect("object");
    m.insert("messageId".into(), json!(format!("m{n}")));
    m.insert("timestamp".into(), json!(at(secs).to_rfc3339()));
    m.insert("receivedAt".into(), json!(at(secs).to_rfc3339()));
    serde_json::from_value(v).expect("an event")
}

fn condition(id: &str, tag: bool, condition: Value) -> Spec {
    Spec {
        id: id.into(),
        tag,
        rule: Rule::Condition(
            Definition::parse(&json!({ "condition": condition })).expect("valid"),
        ),
    }
}

/// The fixture's engine: two segments and a tag, three identifies (two persons merged by
/// email-less ids), a cart left open (a timer), and what the log announced.
fn v1_engine() -> (Engine, Announced) {
    let mut e = Engine::new(MergeRules::default());
    let cart = json!({"not_followed_by": {"event": "Product Added", "key": "cart_id",
        "not_followed_by": "Order Completed", "within_minutes": 60}});
    e.upsert(condition("abandoned", false, cart), [], at(0))
        .expect("saved");
    e.upsert(
        condition(
            "pro",
            false,
            json!({"trait": {"name": "plan", "op": "equals", "value": "pro"}}),
        ),
        [],
        at(0),
    )
    .expect("saved");
    e.upsert(
        condition("vip", true, json!({"in_segment": "pro"})),
        [],
        at(0),
    )
    .expect("saved");
    let identify = |anon: &str, user: &str, traits: Value, n, secs| {
        event(
            json!({"type": "identify", "anonymousId": anon, "userId": user, "traits": traits}),
            n,
            secs,
        )
    };
    e.apply(
        &identify(
            "a1",
            "u1",
            json!({"plan": "pro", "email": "U1@Example.com", "seats": 3}),
            1,
            0,
        ),
        at(0),
    );
    e.apply(
        &event(
            json!({"type": "track", "userId": "u1", "event": "Product Added",
                   "properties": {"cart_id": "c1"}}),
            2,
            10,
        ),
        at(10),
    );
    e.apply(
        &identify("a2", "u2", json!({"plan": "free", "nickname": null}), 3, 20),
        at(20),
    );
    let u1 = e
        .profiles()
        .people()
        .find(|(_, p)| p.traits.get("plan") == Some(&json!("pro")))
        .map(|(p, _)| p)
        .expect("u1");
    let mut announced = Announced::new();
    announced.insert(("pro".into(), false), AnnouncedSet::from_iter([u1]));
    (e, announced)
}

/// Each person: `id | identifiers (sorted) | traits (JSON)`, by person id.
fn people(e: &Engine) -> Vec<String> {
    let mut out: Vec<(crate::PersonId, String)> = e
        .profiles()
        .people()
        .map(|(p, prof)| {
            let mut ids: Vec<String> = e
                .profiles()
                .graph()
                .identifiers(p)
                .map(|s| s.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            ids.sort();
            let traits = Value::Object(prof.traits.to_json());
            (p, format!("{p} | {} | {traits}", ids.join(" ")))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

#[test]
fn reads_the_v1_snapshots() {
    let dir = fixture_dir(1);
    let m = snapshot::read_manifest(&dir)
        .expect("manifest")
        .expect("a manifest");
    assert_eq!((m.offset, m.tenants), (4, vec![tenant()]));
    let path = snapshot::tenant_path(&dir, tenant());
    let bytes = snapshot::read(&path).expect("read");
    let (body, encrypted) = snapshot::unframe(&path, &bytes).expect("header");
    assert!(!encrypted);
    let b = snapshot::decode(&path, body).expect("decode");
    assert_eq!((b.tenant, b.applied, b.history_from), (tenant(), 4, 0));
    let e = &b.engine;
    assert_eq!(
        people(e),
        [
            r#"1 | anonymous_id:a1 email:u1@example.com user_id:u1 | {"email":"U1@Example.com","plan":"pro","seats":3}"#,
            r#"2 | anonymous_id:a2 user_id:u2 | {"nickname":null,"plan":"free"}"#,
        ]
    );
    let specs: Vec<(&str, bool)> = e.specs().iter().map(|s| (s.id.as_str(), s.tag)).collect();
    assert_eq!(specs, [("abandoned", false), ("pro", false), ("vip", true)]);
    let members = |id: &str, tag: bool| -> Vec<crate::PersonId> {
        let mut v: Vec<_> = e.members(id, tag).expect("saved").iter().collect();
        v.sort();
        v
    };
    assert_eq!(members("pro", false), [1]);
    assert_eq!(members("vip", true), [1]);
    assert!(members("abandoned", false).is_empty(), "not yet: a timer");
    // The open cart's timer: 60 minutes after the Product Added at 00:00:10.
    assert_eq!(e.next_timer(), Some(at(3600 + 10)));
    assert_eq!(b.announced.len(), 1);
    let pro: Vec<_> = b.announced[&("pro".to_owned(), false)].iter().collect();
    assert_eq!(pro, [1]);
    // It goes on as an engine: the timer fires and the cart is abandoned.
    let mut e = b.engine;
    e.advance(at(2 * 3600));
    assert_eq!(e.members("abandoned", false).map(|m| m.len()), Some(1));
}

#[test]
fn newer_versions_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = snapshot::tenant_path(dir.path(), tenant());
    let mut bytes =
        snapshot::read(&snapshot::tenant_path(&fixture_dir(1), tenant())).expect("read");
    bytes[4] = snapshot::FORMAT + 1;
    match snapshot::unframe(&path, &bytes) {
        Err(SnapshotError::UnsupportedFormat {
            what: "profiles snapshot",
            found: 2,
            supported: 1,
            ..
        }) => {}
        other => panic!("expected a format error, got {:?}", other.err()),
    }
    let manifest = std::fs::read_to_string(fixture_dir(1).join("MANIFEST")).expect("read");
    let newer = manifest.replacen("\"version\":1", "\"version\":2", 1);
    assert_ne!(newer, manifest);
    std::fs::write(dir.path().join("MANIFEST"), newer).expect("write");
    match snapshot::read_manifest(dir.path()) {
        Err(SnapshotError::UnsupportedFormat {
            what: "profiles snapshot manifest",
            found: 2,
            supported: 1,
            ..
        }) => {}
        other => panic!("expected a format error, got {other:?}"),
    }
    // A manifest from before the version field is version 1.
    std::fs::write(
        dir.path().join("MANIFEST"),
        format!(r#"{{"offset":4,"tenants":["{}"]}}"#, TENANT_ID),
    )
    .expect("write");
    let m = snapshot::read_manifest(dir.path())
        .expect("v1")
        .expect("some");
    assert_eq!((m.offset, m.tenants), (4, vec![tenant()]));
}

/// Writes `tests/compat/v<FORMAT>/` as a snapshot round does, unencrypted: the tenant file
/// ([`snapshot::Frozen::encode`], [`snapshot::frame`]) and then the `MANIFEST`.
#[test]
#[ignore = "writes the fixture; set LIVORA_WRITE_FIXTURES=1"]
fn write_fixtures() {
    if std::env::var("LIVORA_WRITE_FIXTURES").as_deref() != Ok("1") {
        eprintln!("set LIVORA_WRITE_FIXTURES=1 to write the fixture");
        return;
    }
    let out = fixture_dir(snapshot::FORMAT);
    let (engine, announced) = v1_engine();
    let frozen = snapshot::Frozen::new(tenant(), 4, 0, &engine, &announced);
    let packed = frozen.encode().expect("encode");
    snapshot::write_atomic(
        &snapshot::tenant_path(&out, tenant()),
        &snapshot::frame(&packed, false),
    )
    .expect("write");
    snapshot::write_manifest(
        &out,
        &snapshot::Manifest {
            offset: 4,
            tenants: vec![tenant()],
        },
    )
    .expect("manifest");
}
