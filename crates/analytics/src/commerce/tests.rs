//! Commerce metrics against plain loops over the events.

use std::collections::{BTreeMap, BTreeSet};

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

/// (person, kind, seconds, amount, amount in `total` instead of `revenue`, category)
type Ev = (u8, u8, i64, Option<u8>, bool, u8);

const KINDS: [&str; 5] = [VIEWED, ADDED, ORDERED, REFUNDED, "Page Viewed"];

fn table_of(events: &[Ev], base: i64) -> Table {
    let mut t = Table::default();
    for (p, kind, secs, amount, total, cat) in events {
        let time = Utc
            .timestamp_opt(base + secs, 0)
            .single()
            .expect("time")
            .to_rfc3339();
        let mut props = serde_json::Map::new();
        if let Some(a) = amount {
            props.insert(if *total { "total" } else { "revenue" }.into(), (*a).into());
        }
        if *cat > 0 {
            props.insert("category".into(), format!("c{cat}").into());
        }
        let json = serde_json::json!({
            "type": "track", "event": KINDS[*kind as usize], "userId": format!("p{p}"),
            "timestamp": time, "properties": props,
        });
        t.push_json(json.to_string().as_bytes()).expect("push");
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn commerce_matches_reference(
        events in proptest::collection::vec((0u8..8, 0u8..5, 0i64..(20 * 86_400), proptest::option::of(1u8..200), any::<bool>(), 0u8..4), 0..80),
        start_day in 0i64..8,
        days in 1i64..10,
        frequency_max in 1usize..4,
    ) {
        let base = 1_767_225_600i64;
        let t = table_of(&events, base);
        let q = CommerceQuery {
            from: Utc.timestamp_opt(base + start_day * 86_400, 0).single().expect("time"),
            to: Utc.timestamp_opt(base + (start_day + days) * 86_400, 0).single().expect("time"),
            interval: Period::Day,
            product_property: "category".into(),
            products_limit: 100,
            frequency_max,
        };
        let got = commerce(&t, &t.persons.redirects(), &q, Tz::UTC).expect("commerce");

        let (from, to) = (start_day * 86_400, (start_day + days) * 86_400);
        let amount = |e: &Ev| f64::from(e.3.unwrap_or(0));
        let inside: Vec<&Ev> = events.iter().filter(|e| (from..to).contains(&e.2)).collect();
        let day = |e: &Ev| ((e.2 - from) / 86_400) as usize;
        let mut revenue = vec![0.0; days as usize];
        let mut refunds = vec![0.0; days as usize];
        let mut orders = vec![0u64; days as usize];
        let mut customers = vec![BTreeSet::new(); days as usize];
        let mut per_customer: BTreeMap<u8, usize> = BTreeMap::new();
        let mut products: BTreeMap<Option<String>, (u64, u64, u64, f64)> = BTreeMap::new();
        for e in &inside {
            let cat = (e.5 > 0).then(|| format!("c{}", e.5));
            match e.1 {
                0 => products.entry(cat).or_default().0 += 1,
                1 => products.entry(cat).or_default().1 += 1,
                2 => {
                    revenue[day(e)] += amount(e);
                    orders[day(e)] += 1;
                    customers[day(e)].insert(e.0);
                    *per_customer.entry(e.0).or_default() += 1;
                    let p = products.entry(cat).or_default();
                    p.2 += 1;
                    p.3 += amount(e);
                }
                3 => refunds[day(e)] += amount(e),
                _ => {}
            }
        }
        prop_assert_eq!(&got.revenue, &revenue);
        prop_assert_eq!(&got.refunds, &refunds);
        prop_assert_eq!(&got.orders, &orders);
        prop_assert_eq!(got.customers.clone(), customers.iter().map(|c| c.len() as u64).collect::<Vec<_>>());
        let visitors: BTreeSet<u8> = inside.iter().map(|e| e.0).collect();
        prop_assert_eq!(got.totals.visitors, visitors.len() as u64);
        prop_assert_eq!(got.totals.customers, per_customer.len() as u64);
        let mut freq = vec![0u64; frequency_max];
        for n in per_customer.values() {
            freq[(*n).min(frequency_max) - 1] += 1;
        }
        prop_assert_eq!(got.purchase_frequency.iter().map(|(_, c)| *c).collect::<Vec<_>>(), freq);
        let got_products: BTreeMap<Option<String>, (u64, u64, u64, f64)> = got.products.iter().map(|r| (r.value.clone(), (r.views, r.adds, r.orders, r.revenue))).collect();
        prop_assert_eq!(got_products, products);

        // Lifetime value: net revenue over all history before `to`, for persons with an order.
        let mut net: BTreeMap<u8, f64> = BTreeMap::new();
        let mut buyers = BTreeSet::new();
        for e in events.iter().filter(|e| e.2 < to) {
            match e.1 {
                2 => { *net.entry(e.0).or_default() += amount(e); buyers.insert(e.0); }
                3 => *net.entry(e.0).or_default() -= amount(e),
                _ => {}
            }
        }
        let values: Vec<f64> = buyers.iter().map(|p| net[p]).collect();
        prop_assert_eq!(got.lifetime_value.customers, values.len() as u64);
        let avg = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        prop_assert_eq!(got.lifetime_value.average, avg);
        prop_assert_eq!(got.lifetime_value.max, values.iter().copied().reduce(f64::max));
    }
}

#[test]
fn revenue_falls_back_to_total_and_bad_queries_are_refused() {
    let base = 1_767_225_600i64;
    let t = table_of(
        &[
            (1, 2, 10, Some(50), true, 1),
            (1, 2, 20, Some(30), false, 1),
        ],
        base,
    );
    let mut q = CommerceQuery {
        from: Utc.timestamp_opt(base, 0).single().expect("time"),
        to: Utc.timestamp_opt(base + 86_400, 0).single().expect("time"),
        interval: Period::Day,
        product_property: "category".into(),
        products_limit: 10,
        frequency_max: 10,
    };
    let r = commerce(&t, &t.persons.redirects(), &q, Tz::UTC).expect("commerce");
    assert_eq!(r.totals.revenue, 80.0);
    assert_eq!(r.totals.average_order_value, Some(40.0));
    assert_eq!(
        r.purchase_frequency[1],
        (2, 1),
        "one customer with two orders"
    );
    q.to = q.from;
    assert!(commerce(&t, &t.persons.redirects(), &q, Tz::UTC).is_err());
}

#[test]
fn orders_with_line_items_count_under_each_line() {
    let base = 1_767_225_600i64;
    let mut t = Table::default();
    let time = |s: i64| {
        Utc.timestamp_opt(base + s, 0)
            .single()
            .expect("time")
            .to_rfc3339()
    };
    // As Segment's spec sends it: the category on the products, not on the order.
    let order = serde_json::json!({
        "type": "track", "event": ORDERED, "userId": "p1", "timestamp": time(10),
        "properties": {"order_id": "o1", "revenue": 45, "products": [
            {"product_id": "s1", "category": "Shoes", "price": 10, "quantity": 2},
            {"product_id": "s2", "category": "Shoes", "price": 5},
            {"product_id": "t1", "category": "Tops", "price": 20},
        ]},
    });
    t.push_json(order.to_string().as_bytes()).expect("push");
    let plain = serde_json::json!({
        "type": "track", "event": ORDERED, "userId": "p2", "timestamp": time(20),
        "properties": {"revenue": 7, "category": "Tops"},
    });
    t.push_json(plain.to_string().as_bytes()).expect("push");
    let q = CommerceQuery {
        from: Utc.timestamp_opt(base, 0).single().expect("time"),
        to: Utc.timestamp_opt(base + 86_400, 0).single().expect("time"),
        interval: Period::Day,
        product_property: "category".into(),
        products_limit: 10,
        frequency_max: 10,
    };
    let r = commerce(&t, &t.persons.redirects(), &q, Tz::UTC).expect("commerce");
    assert_eq!(r.totals.revenue, 52.0, "the orders' own revenue");
    let by: BTreeMap<Option<String>, (u64, f64)> = r
        .products
        .iter()
        .map(|p| (p.value.clone(), (p.orders, p.revenue)))
        .collect();
    assert_eq!(by.get(&Some("Shoes".into())), Some(&(1, 25.0)), "{by:?}");
    assert_eq!(by.get(&Some("Tops".into())), Some(&(2, 27.0)), "{by:?}");
    assert_eq!(by.len(), 2, "{by:?}");
}
