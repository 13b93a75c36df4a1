//! The profiles' memory budget counts decoded profiles by an estimate of their heap
//! ([`livora_profiles::Profile::heap_bytes`]); this checks the estimate against what the
//! allocator hands out. A budget counting a third of the truth holds three times its limit
//! (as it did while profiles held `BTreeMap`s, whose first node has room for eleven
//! entries).
//!
//! One test in this file: the counting allocator sees the whole process.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use chrono::{DateTime, Utc};
use livora_model::Event;
use livora_profiles::MergeRules;
use livora_profiles::people::Budget;
use livora_profiles::segments::{Engine, Rule, Spec};
use serde_json::{Value, json};

/// Bytes allocated and not freed, process-wide.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed to `System` as it came; the counter is the only addition.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as `dealloc` and `alloc`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T0: i64 = 1_790_000_000;

fn at(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(T0 + secs, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

fn event(mut v: Value) -> Event {
    v["receivedAt"] = v["timestamp"].clone();
    serde_json::from_str(&v.to_string()).unwrap_or_else(|e| panic!("test event: {e}"))
}

/// A shop's person: an identify with traits, product views, a cart, orders, a page.
fn person(i: u64) -> Vec<Event> {
    let (user, anon) = (format!("user-{i}"), format!("anon-{i}"));
    let mut t = (i % 80) as i64 * 86_400;
    let plan = ["free", "pro"][i as usize % 2];
    let country = ["FR", "US", "DE"][i as usize % 3];
    let mut out = vec![event(
        json!({"type": "identify", "userId": user, "anonymousId": anon,
        "messageId": format!("{i}-id"), "timestamp": at(t),
        "traits": {"email": format!("user{i}@example.com"), "plan": plan, "country": country,
                   "address": {"city": "Lyon", "zip": "69001"}}}),
    )];
    for k in 0..(1 + i % 4) {
        t += 3_600;
        out.push(event(
            json!({"type": "track", "userId": user, "event": "Product Viewed",
            "messageId": format!("{i}-v{k}"), "timestamp": at(t),
            "properties": {"product_id": format!("p{}", (i + k) % 500), "category": "shoes"}}),
        ));
    }
    out.push(event(
        json!({"type": "page", "userId": user, "name": "Home",
        "messageId": format!("{i}-p"), "timestamp": at(t + 60)}),
    ));
    out.push(event(
        json!({"type": "track", "userId": user, "event": "Product Added",
        "messageId": format!("{i}-a"), "timestamp": at(t + 120),
        "properties": {"cart_id": format!("c{i}"), "price": 20 + i % 200}}),
    ));
    if i.is_multiple_of(4) {
        // A B2B buyer: an account (a group) with traits.
        let group = format!("acct-{}", i % 50);
        out.push(event(
            json!({"type": "group", "userId": user, "groupId": group,
            "messageId": format!("{i}-g"), "timestamp": at(t + 30),
            "traits": {"name": "Acme", "industry": "retail"}}),
        ));
    }
    for k in 0..(i % 3) {
        out.push(event(
            json!({"type": "track", "userId": user, "event": "Order Completed",
            "messageId": format!("{i}-o{k}"), "timestamp": at(t + 600 + k as i64 * 86_400),
            "properties": {"cart_id": format!("c{i}"), "revenue": 10 + i % 300}}),
        ));
    }
    out
}

fn segment(id: &str, condition: Value) -> Spec {
    Spec {
        id: id.into(),
        tag: false,
        rule: Rule::Condition(
            livora_model::segment::Definition::parse(&json!({ "condition": condition }))
                .unwrap_or_else(|e| panic!("test segment: {e}")),
        ),
    }
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn the_estimate_of_a_decoded_profile_is_what_the_allocator_gives() {
    let now = DateTime::<Utc>::from_timestamp(T0 + 100 * 86_400, 0).unwrap_or_default();
    let start = live();
    let mut engine = Engine::new(MergeRules::default());
    // Segments whose conditions keep hits (matching events) in the profiles.
    for s in [
        segment(
            "big-order",
            json!({"performed": {"event": "Order Completed",
                "where": [{"property": "revenue", "op": "gte", "value": 100}], "within_days": 7}}),
        ),
        segment(
            "viewers",
            json!({"performed": {"event": "Product Viewed",
                "count": {"op": "at_least", "value": 2}, "within_days": 30}}),
        ),
        segment(
            "abandoned",
            json!({"not_followed_by": {"event": "Product Added", "key": "cart_id",
                "not_followed_by": "Order Completed", "within_minutes": 60, "lookback_days": 14}}),
        ),
    ] {
        engine
            .upsert(s, [], now)
            .unwrap_or_else(|e| panic!("segment: {e}"));
    }
    // Enough persons that the cold encodings fill a chunk (4 MiB): the arena then holds
    // one open chunk on the heap, whatever the rest.
    let persons = 20_000;
    for i in 0..persons {
        for e in person(i) {
            engine.apply(&e, now);
        }
    }
    // The models' predictions, as training sets them.
    let ids: Vec<u64> = engine.profiles().people().map(|(p, _)| p).collect();
    engine.set_predictions(
        ids.into_iter().map(|p| {
            let values = [("churn_risk", 0.2), ("clv", 120.0), ("p_alive", 0.9)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            (p, values)
        }),
        now,
    );
    assert_eq!(engine.profiles().len(), persons as usize);
    assert_eq!(engine.profiles().hot(), persons as usize);
    let hot = engine.heap_bytes() as f64;

    // Everything goes cold: what the heap gives back is what the decoded profiles took
    // (the encodings go to scratch files but for the open chunk, which the estimate counts).
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let budget = Budget::new(1, dir.path()).unwrap_or_else(|e| panic!("budget: {e}"));
    let before = live();
    engine.set_budget(Some(budget.clone()));
    let after = live();
    assert_eq!(
        engine.profiles().hot(),
        0,
        "a budget of one byte leaves none decoded"
    );
    assert!(
        budget.cold_bytes() > livora_profiles::people::CHUNK,
        "the encodings fill a chunk"
    );
    let cold = engine.heap_bytes() as f64;
    let (estimated, freed) = (hot - cold, (before - after) as f64);
    let ratio = estimated / freed;
    eprintln!(
        "decoded profiles: {:.0} B each estimated, {:.0} B each freed ({ratio:.2})",
        estimated / persons as f64,
        freed / persons as f64
    );
    assert!(
        (0.85..=1.15).contains(&ratio),
        "estimated {estimated} B for the decoded profiles, the allocator freed {freed} B \
         ({ratio:.2} of it)"
    );

    // What stays: the identity graph, the table, memberships and timers, the open chunk.
    let stays = (after - start) as f64;
    let ratio = cold / stays;
    eprintln!(
        "what stays of a person with its profile cold: {:.0} B estimated, {:.0} B allocated \
         ({ratio:.2})",
        cold / persons as f64,
        stays / persons as f64
    );
    assert!(
        (0.85..=1.15).contains(&ratio),
        "estimated {cold} B for the engine with every profile cold, the allocator holds \
         {stays} B ({ratio:.2} of it)"
    );
}
