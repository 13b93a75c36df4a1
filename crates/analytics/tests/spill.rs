//! Every query kind gives the same answer whether a table's columns are on the heap or in
//! memory-mapped spill files, with seals, the person-ordered projection, identity merges,
//! late events and line items in between, and the spilled pages evicted between queries (as
//! a tiny `[analytics] memory_limit` does).

use livora_analytics::{Query, run};
use livora_columnar::{Spill, Table};
use proptest::prelude::*;
use serde_json::json;

/// One generated input: an event (`kind` 0-4: view, add, order, page, identify), by person
/// `who` (anonymous when `anon`), at `day`/`secs`, with a price and category.
#[derive(Debug, Clone)]
struct Ev {
    kind: u8,
    who: u8,
    anon: bool,
    day: u8,
    secs: u32,
    price: u16,
    category: u8,
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0u8..5,
        0u8..12,
        any::<bool>(),
        0u8..20,
        0u32..86_400,
        0u16..500,
        0u8..4,
    )
        .prop_map(|(kind, who, anon, day, secs, price, category)| Ev {
            kind,
            who,
            anon,
            day,
            secs,
            price,
            category,
        })
}

fn json_of(e: &Ev) -> String {
    let time =
        chrono::DateTime::from_timestamp(1_777_593_600 + e.day as i64 * 86_400 + e.secs as i64, 0)
            .expect("time")
            .to_rfc3339();
    let category = ["Shoes", "Hats", "Tops", "Bags"][e.category as usize];
    let who = if e.anon {
        json!({"anonymousId": format!("a{}", e.who)})
    } else {
        json!({"userId": format!("u{}", e.who)})
    };
    let mut v = match e.kind {
        0 => json!({"type": "track", "event": "Product Viewed",
            "properties": {"category": category, "price": e.price}}),
        1 => json!({"type": "track", "event": "Product Added",
            "properties": {"category": category, "price": e.price, "quantity": 1 + e.price % 3}}),
        2 => json!({"type": "track", "event": "Order Completed",
            "properties": {"revenue": e.price, "total": e.price, "order_id": format!("o{}", e.secs),
                "products": [{"category": category, "price": e.price, "quantity": 1}]}}),
        3 => json!({"type": "page", "name": category}),
        _ => json!({"type": "identify", "userId": format!("u{}", e.who),
            "anonymousId": format!("a{}", e.who), "traits": {"plan": category}}),
    };
    let obj = v.as_object_mut().expect("object");
    if e.kind != 4 {
        obj.extend(who.as_object().expect("object").clone());
    }
    obj.insert("timestamp".into(), json!(time));
    v.to_string()
}

fn queries() -> Vec<Query> {
    let range = json!({"from": "2026-05-01T00:00:00Z", "to": "2026-05-25T00:00:00Z"});
    let with = |q: serde_json::Value| {
        let mut q = q;
        if let Some(o) = q.as_object_mut().filter(|o| o["kind"] != "retention") {
            for (k, v) in range.as_object().expect("object") {
                o.entry(k.clone()).or_insert(v.clone());
            }
        }
        serde_json::from_value::<Query>(q).expect("a valid query")
    };
    vec![
        with(json!({"kind": "funnel", "window_seconds": 3 * 86_400,
            "steps": [{"event": "Product Viewed"}, {"event": "Product Added"}, {"event": "Order Completed"}]})),
        with(
            json!({"kind": "funnel", "window_seconds": 86_400, "order": "any",
            "steps": [{"event": "Product Viewed", "filters": [{"property": "category", "op": "eq", "value": "Shoes"}]},
                {"event": "Order Completed"}]}),
        ),
        with(
            json!({"kind": "retention", "period": "day", "periods": 8, "from": "2026-05-01T00:00:00Z",
            "start_event": {"event": "Product Viewed"}, "return_event": {"event": "Order Completed"}}),
        ),
        with(
            json!({"kind": "trends", "event": {"event": "Order Completed"}, "interval": "day",
            "metric": {"kind": "sum", "property": "revenue"}, "breakdown": {"property": "category"},
            "compare_previous": true}),
        ),
        with(
            json!({"kind": "trends", "event": {"event": "Product Added"}, "interval": "week",
            "metric": {"kind": "unique_persons"}}),
        ),
        with(json!({"kind": "paths", "event": {"event": "Product Viewed"}, "depth": 3})),
        with(
            json!({"kind": "stickiness", "interval": "day", "event": {"event": "Product Viewed"}}),
        ),
        with(json!({"kind": "lifecycle", "interval": "day", "event": {"event": "Product Viewed"}})),
        with(json!({"kind": "commerce"})),
    ]
}

/// Seals both tables' hot rows (and extends their projections when `project`).
fn seal(tables: &mut [&mut Table], project: bool) {
    for t in tables.iter_mut() {
        let days = t.order_hot();
        t.mark_sealed(&days);
        if project {
            t.by_person = t.by_person.extended(t);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn every_query_kind_answers_the_same_from_spilled_and_evicted_columns(
        events in proptest::collection::vec(ev(), 1..160),
        cuts in proptest::collection::vec((0usize..160, any::<bool>()), 0..4),
        min_bytes in prop_oneof![Just(0usize), Just(64), Just(1024)],
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let spill = Spill::new(dir.path(), min_bytes).expect("spill");
        let mut heap = Table::default();
        let mut mapped = Table::with_spill(Some(spill.clone()));
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut next_cut = cuts.iter().peekable();
        for (i, e) in events.iter().enumerate() {
            while let Some((at, project)) = next_cut.peek() {
                if *at != i {
                    break;
                }
                seal(&mut [&mut heap, &mut mapped], *project);
                mapped.evict();
                next_cut.next();
            }
            let json = json_of(e);
            heap.push_json(json.as_bytes()).expect("push");
            mapped.push_json(json.as_bytes()).expect("push");
        }
        prop_assert!(spill.mapped_bytes() > 0 || min_bytes > 0, "with no threshold every column is mapped");
        prop_assert_eq!(&heap.ts[..], &mapped.ts[..]);
        prop_assert_eq!(&heap.person[..], &mapped.person[..]);
        for q in queries() {
            mapped.evict();
            let want = run(&heap, &q, chrono_tz::UTC).expect("query");
            let got = run(&mapped, &q, chrono_tz::UTC).expect("query");
            prop_assert_eq!(got, want, "{:?}", q);
        }
    }
}
