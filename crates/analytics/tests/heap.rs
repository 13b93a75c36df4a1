//! A query's working heap (per-person state, partial results per core) is not the column
//! store's to evict: with a memory limit, the store makes room for it before the kernel runs
//! ([`livora_analytics::Query::heap_estimate`]). This checks the estimate against the peak the
//! allocator sees while each query kind runs, at two sizes, so that a kernel whose state grows
//! with persons or rows is caught when the estimate does not.
//!
//! One test in this file: the counting allocator sees the whole process.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use livora_analytics::{Query, run};
use livora_columnar::{Spill, Table};
use serde_json::json;

/// Bytes allocated and not freed, process-wide, and the most seen since the last reset.
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

struct Counting;

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` as it came; the counters are the only addition.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(l) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        grew(new as isize - l.size() as isize);
        // SAFETY: as `dealloc` and `alloc`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T0: i64 = 1_777_593_600; // 2026-05-01

/// `persons` persons, each with a session of views, adds and sometimes an order on a few of
/// 28 days; a third anonymous first and identified later (merges). Each day is sealed but
/// the last.
fn table(persons: u32, dir: &std::path::Path) -> Table {
    let spill = Spill::new(dir, 0).expect("spill");
    let mut t = Table::with_spill(Some(spill));
    let categories = ["Shoes", "Hats", "Tops", "Bags", "Socks", "Belts"];
    let mut day_rows = Vec::new();
    for day in 0..28i64 {
        day_rows.clear();
        for p in 0..persons {
            let h = (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ day as u64;
            if !h.is_multiple_of(4) {
                continue;
            }
            let anon = p % 3 == 0 && day < 7;
            let who = if anon {
                json!({"anonymousId": format!("a{p}")})
            } else {
                json!({"userId": format!("u{p}")})
            };
            let c = categories[(h >> 8) as usize % categories.len()];
            let mut secs = (h >> 16) as i64 % 80_000;
            let mut push = |v: serde_json::Value, secs: i64| {
                let mut v = v;
                let o = v.as_object_mut().expect("object");
                o.extend(who.as_object().expect("object").clone());
                let at = chrono::DateTime::from_timestamp(T0 + day * 86_400 + secs, 0)
                    .expect("time")
                    .to_rfc3339();
                o.insert("timestamp".into(), json!(at));
                day_rows.push((secs, v.to_string()));
            };
            push(json!({"type": "page", "name": c}), secs);
            secs += 30;
            push(
                json!({"type": "track", "event": "Product Viewed",
                    "properties": {"category": c, "price": h % 200}}),
                secs,
            );
            if h.is_multiple_of(3) {
                push(
                    json!({"type": "track", "event": "Product Added",
                        "properties": {"category": c, "price": h % 200, "quantity": 1}}),
                    secs + 60,
                );
            }
            if h.is_multiple_of(9) {
                push(
                    json!({"type": "track", "event": "Order Completed",
                        "properties": {"revenue": h % 200, "order_id": format!("o{p}-{day}"),
                            "products": [{"category": c, "price": h % 200, "quantity": 1}]}}),
                    secs + 120,
                );
            }
            if anon && day == 6 {
                push(
                    json!({"type": "identify", "userId": format!("u{p}"),
                        "anonymousId": format!("a{p}"), "traits": {"plan": c}}),
                    secs + 200,
                );
            }
        }
        day_rows.sort_by_key(|r| r.0);
        for (_, json) in &day_rows {
            t.push_json(json.as_bytes()).expect("push");
        }
        // The last day stays hot: rows the projection does not hold.
        if day < 27 {
            let days = t.order_hot();
            t.mark_sealed(&days);
            t.by_person = t.by_person.extended(&t);
        }
    }
    t
}

fn queries() -> Vec<(&'static str, Query)> {
    let range = json!({"from": "2026-05-01T00:00:00Z", "to": "2026-05-29T00:00:00Z"});
    let with = |q: serde_json::Value| {
        let mut q = q;
        if let Some(o) = q.as_object_mut().filter(|o| o["kind"] != "retention") {
            for (k, v) in range.as_object().expect("object") {
                o.entry(k.clone()).or_insert(v.clone());
            }
        }
        serde_json::from_value::<Query>(q).expect("a valid query")
    };
    let steps = json!([{"event": "$page"}, {"event": "Product Viewed"},
        {"event": "Product Added"}, {"event": "Order Completed"}]);
    vec![
        (
            "funnel",
            with(json!({"kind": "funnel", "window_seconds": 7 * 86_400, "steps": steps})),
        ),
        (
            // A narrow range scans its rows instead of the projection.
            "funnel, three days",
            serde_json::from_value(json!({"kind": "funnel", "window_seconds": 86_400,
                "from": "2026-05-20T00:00:00Z", "to": "2026-05-23T00:00:00Z", "steps": steps}))
            .expect("a valid query"),
        ),
        (
            "funnel, any order, by category",
            with(
                json!({"kind": "funnel", "window_seconds": 86_400, "order": "any",
                "breakdown": {"property": "category"},
                "steps": [{"event": "Product Viewed"}, {"event": "Order Completed"}]}),
            ),
        ),
        (
            "retention",
            with(json!({"kind": "retention", "period": "week", "periods": 4,
                "from": "2026-05-01T00:00:00Z",
                "start_event": {"event": "Product Viewed"}, "return_event": {"event": "Order Completed"}})),
        ),
        (
            "trends by category",
            with(
                json!({"kind": "trends", "event": {"event": "Order Completed"}, "interval": "day",
                "metric": {"kind": "sum", "property": "revenue"}, "breakdown": {"property": "category"},
                "compare_previous": true}),
            ),
        ),
        (
            "trends, unique persons",
            with(
                json!({"kind": "trends", "event": {"event": "Product Viewed"}, "interval": "day",
                "metric": {"kind": "unique_persons"}}),
            ),
        ),
        (
            "trends by a person trait",
            with(
                json!({"kind": "trends", "event": {"event": "Product Viewed"}, "interval": "week",
                "metric": {"kind": "count"}, "breakdown": {"property": "plan", "source": "person"}}),
            ),
        ),
        (
            "paths",
            with(json!({"kind": "paths", "event": {"event": "Product Viewed"}, "depth": 3})),
        ),
        (
            "stickiness",
            with(
                json!({"kind": "stickiness", "interval": "day", "event": {"event": "Product Viewed"}}),
            ),
        ),
        (
            "lifecycle",
            with(json!({"kind": "lifecycle", "interval": "day", "event": {"event": "$page"}})),
        ),
        ("commerce", with(json!({"kind": "commerce"}))),
    ]
}

#[test]
fn the_heap_estimate_bounds_what_each_query_kind_allocates() {
    let mut wrong = Vec::new();
    for persons in [10_000u32, 40_000] {
        let dir = tempfile::tempdir().expect("tmp");
        let t = table(persons, dir.path());
        for (what, q) in queries() {
            let estimate = q.heap_estimate(&t);
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let answer = run(&t, &q, chrono_tz::UTC).expect("query");
            let peak = (PEAK.load(Ordering::Relaxed) - before).max(0) as usize;
            drop(answer);
            println!(
                "{persons} persons, {} rows, {what}: peak {peak} B ({:.1} B/person), estimate {estimate} B",
                t.len(),
                peak as f64 / persons as f64
            );
            if estimate < peak {
                wrong.push(format!(
                    "{what}, {persons} persons: the kernel took {peak} bytes, the estimate says {estimate}"
                ));
            }
            if estimate > peak * 3 + (1 << 20) {
                wrong.push(format!(
                    "{what}, {persons} persons: an estimate of {estimate} bytes for {peak} taken \
                     would evict three times what the query needs"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
