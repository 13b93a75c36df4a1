//! What the models learn from, read from a tenant's column store in one pass: per person
//! (as the column store merges identities), the days they were active, their purchases,
//! the hours they engaged with messages, the products they viewed, carted and bought, and
//! the texts they wrote; and the tenant's daily revenue, orders and active persons.
//!
//! Segment and tag changes (the events Livora writes itself) are not activity. Days and
//! hours are in the tenant's time zone. Purchases are `Order Completed` events
//! (their `revenue`, else `total`, as the analytics engine reads them); a refund is not
//! subtracted. Products are the `product_id` of `Product Viewed` / `Product Added` /
//! `Order Completed` and of the `products` lines of `Order Completed`.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use livora_columnar::Table;

use crate::recommend::Action;

pub const ORDER_COMPLETED: &str = "Order Completed";
pub const PRODUCT_VIEWED: &str = "Product Viewed";
pub const PRODUCT_ADDED: &str = "Product Added";
/// Events that show a person engaging with a message.
pub const ENGAGEMENTS: [&str; 4] = [
    "Email Opened",
    "Email Link Clicked",
    "Message Opened",
    "Message Received",
];

/// One person's history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonHistory {
    /// Their identities (`u:<userId>` / `a:<anonymousId>`), the canonical one first.
    pub keys: Vec<String>,
    /// Days (since 1970-01-01, local) with any event, ascending, once each.
    pub active_days: Vec<i64>,
    /// `(day, amount)` of each order, in time order.
    pub purchases: Vec<(i64, f64)>,
    /// Local hours of their engagements with messages.
    pub engagement_hours: Vec<u8>,
    /// Days of those engagements.
    pub engagement_days: Vec<i64>,
    /// `(product, action, order id)`.
    pub products: Vec<(String, Action, Option<String>)>,
    /// `(day, text)` of events with a `text` property.
    pub texts: Vec<(i64, String)>,
}

/// A tenant's histories and daily totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histories {
    pub persons: Vec<PersonHistory>,
    /// Per local day in the window, ascending: revenue, orders, active persons.
    pub days: Vec<(i64, DailyTotals)>,
    /// Per product category (the `category` of an order's lines, `price` × `quantity`
    /// each, one order per distinct category; else the order's own `category` and
    /// revenue, as the commerce report counts them): revenue and orders per day.
    pub categories: BTreeMap<String, BTreeMap<i64, DailyTotals>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DailyTotals {
    pub revenue: f64,
    pub orders: f64,
    pub active_persons: f64,
}

/// The local day (days since 1970-01-01) of a UTC instant.
pub fn local_day(t: DateTime<Utc>, tz: Tz) -> i64 {
    let d = tz.from_utc_datetime(&t.naive_utc()).date_naive();
    i64::from(d.num_days_from_ce()) - 719_163
}

/// Reads every event of `t` between `from` and `to` (µs since the Unix epoch).
pub fn read(t: &Table, from: i64, to: i64, tz: Tz) -> Histories {
    let redirects = t.persons.redirects();
    let name = |n: &str| t.names.get(n);
    let (order, viewed, added) = (
        name(ORDER_COMPLETED),
        name(PRODUCT_VIEWED),
        name(PRODUCT_ADDED),
    );
    let engage: Vec<u32> = ENGAGEMENTS.iter().filter_map(|n| name(n)).collect();
    // What Livora itself writes (segment and tag changes) is not the person's doing.
    let system: Vec<u32> = livora_model::RESERVED_EVENTS
        .iter()
        .filter_map(|n| name(n))
        .collect();
    let key = |k: &str| t.keys.get(k);
    let (revenue, total, product_id, order_id, text) = (
        key("revenue"),
        key("total"),
        key("product_id"),
        key("order_id"),
        key("text"),
    );
    let (category, price, quantity) = (key("category"), key("price"), key("quantity"));
    let mut categories: BTreeMap<String, BTreeMap<i64, DailyTotals>> = BTreeMap::new();
    let str_or_num = |k: Option<u32>, row: usize| -> Option<String> {
        let k = k?;
        t.str_at(k, row)
            .map(str::to_owned)
            .or_else(|| t.num_at(k, row).map(|n| n.to_string()))
    };
    let mut by: BTreeMap<u32, PersonHistory> = BTreeMap::new();
    let mut days: BTreeMap<i64, (DailyTotals, std::collections::HashSet<u32>)> = BTreeMap::new();
    let mut rows: Vec<usize> = t
        .ranges_within(from, to)
        .into_iter()
        .flatten()
        .filter(|&r| t.ts[r] >= from && t.ts[r] < to && !system.contains(&t.name[r]))
        .collect();
    // In time order, so that purchases and products are too.
    rows.sort_by_key(|&r| (t.ts[r], r));
    for r in rows {
        let Some(&person) = redirects.get(t.person[r] as usize) else {
            continue;
        };
        let Some(at) = DateTime::<Utc>::from_timestamp_micros(t.ts[r]) else {
            continue;
        };
        let local = tz.from_utc_datetime(&at.naive_utc());
        let day = i64::from(local.date_naive().num_days_from_ce()) - 719_163;
        let h = by.entry(person).or_default();
        if h.active_days.last() != Some(&day) {
            h.active_days.push(day);
        }
        let d = days.entry(day).or_default();
        d.1.insert(person);
        let n = Some(t.name[r]);
        if n == order {
            let amount = revenue
                .and_then(|k| t.num_at(k, r))
                .or_else(|| total.and_then(|k| t.num_at(k, r)))
                .filter(|v| v.is_finite())
                .unwrap_or(0.0);
            h.purchases.push((day, amount));
            d.0.revenue += amount;
            d.0.orders += 1.0;
            let lines = t.lines.of_row(r);
            if lines.is_empty() {
                if let Some(c) = category.and_then(|k| t.str_at(k, r)) {
                    let d = categories
                        .entry(c.to_owned())
                        .or_default()
                        .entry(day)
                        .or_default();
                    d.revenue += amount;
                    d.orders += 1.0;
                }
            } else if let Some(k) = category {
                let mut seen: Vec<u32> = Vec::new();
                for line in lines {
                    let id = t.lines.str_id(k, line);
                    let Some(c) = id.checked_sub(1).and_then(|v| t.values.value(v)) else {
                        continue;
                    };
                    let each = price.and_then(|p| t.lines.num_at(p, line)).unwrap_or(0.0);
                    let n = quantity
                        .and_then(|q| t.lines.num_at(q, line))
                        .unwrap_or(1.0);
                    let d = categories
                        .entry(c.to_owned())
                        .or_default()
                        .entry(day)
                        .or_default();
                    if each.is_finite() && n.is_finite() {
                        d.revenue += each * n;
                    }
                    if !seen.contains(&id) {
                        seen.push(id);
                        d.orders += 1.0;
                    }
                }
            }
            let oid = str_or_num(order_id, r);
            if let Some(p) = str_or_num(product_id, r) {
                h.products.push((p, Action::Purchase, oid.clone()));
            }
            if let Some(k) = product_id {
                for line in t.lines.of_row(r) {
                    let id = t.lines.str_id(k, line);
                    let p = if id > 0 {
                        t.values.value(id - 1).map(str::to_owned)
                    } else {
                        t.lines.num_at(k, line).map(|n| n.to_string())
                    };
                    if let Some(p) = p {
                        h.products.push((p, Action::Purchase, oid.clone()));
                    }
                }
            }
        } else if (n == viewed || n == added)
            && let Some(p) = str_or_num(product_id, r)
        {
            let a = if n == viewed {
                Action::View
            } else {
                Action::Cart
            };
            h.products.push((p, a, None));
        }
        if engage.contains(&t.name[r]) {
            h.engagement_hours.push(local.hour() as u8);
            h.engagement_days.push(day);
        }
        if let Some(s) = text.and_then(|k| t.str_at(k, r)) {
            h.texts.push((day, s.to_owned()));
        }
    }
    // Each person's identities: every raw id that redirects to them.
    let mut keys: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (raw, &root) in redirects.iter().enumerate() {
        if by.contains_key(&root)
            && let Some((user, id)) = t.persons.describe(raw as u32)
        {
            let k = format!("{}:{id}", if user { "u" } else { "a" });
            let v = keys.entry(root).or_default();
            if raw as u32 == root {
                v.insert(0, k);
            } else {
                v.push(k);
            }
        }
    }
    let persons = by
        .into_iter()
        .map(|(p, mut h)| {
            h.active_days.sort_unstable();
            h.active_days.dedup();
            h.keys = keys.remove(&p).unwrap_or_default();
            h
        })
        .collect();
    // Every day of the window, also the quiet ones (a series has no gaps).
    let mut series = Vec::new();
    if let (Some(first), Some(last)) = (days.keys().next().copied(), days.keys().last().copied()) {
        for day in first..=last {
            let t = days
                .get(&day)
                .map(|(t, who)| DailyTotals {
                    active_persons: who.len() as f64,
                    ..*t
                })
                .unwrap_or_default();
            series.push((day, t));
        }
    }
    Histories {
        persons,
        days: series,
        categories,
    }
}

/// The weekday (0 = Monday) of a day number.
pub fn weekday(day: i64) -> u32 {
    // 1970-01-01 was a Thursday.
    ((day + 3).rem_euclid(7)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use livora_model::Event;
    use serde_json::json;

    fn event(mut v: serde_json::Value) -> Event {
        v["receivedAt"] = v["timestamp"].clone();
        serde_json::from_value(v).expect("an event")
    }

    #[test]
    fn reads_purchases_products_engagement_and_days() {
        let mut t = Table::default();
        let at = |d: u32, h: u32| format!("2026-03-{d:02}T{h:02}:00:00Z");
        for e in [
            json!({"type": "track", "event": "Product Viewed", "anonymousId": "a1",
                "properties": {"product_id": "tent"}, "timestamp": at(1, 9), "messageId": "1"}),
            json!({"type": "alias", "userId": "ann", "previousId": "a1", "timestamp": at(1, 10),
                "messageId": "2"}),
            json!({"type": "track", "event": "Order Completed", "userId": "ann",
                "properties": {"revenue": 40, "order_id": "o1",
                    "products": [{"product_id": "tent", "category": "camping", "price": 30, "quantity": 1},
                        {"product_id": 7, "category": "camping", "price": 5, "quantity": 2}]},
                "timestamp": at(3, 12), "messageId": "3"}),
            json!({"type": "track", "event": "Email Opened", "userId": "ann",
                "timestamp": at(4, 20), "messageId": "4"}),
            json!({"type": "track", "event": "Segment Entered", "userId": "ann",
                "properties": {"segment_id": "vip"}, "timestamp": at(5, 9), "messageId": "lv-9"}),
            json!({"type": "track", "event": "Message Received", "userId": "bob",
                "properties": {"text": "where is my order?"}, "timestamp": at(5, 8),
                "messageId": "5"}),
        ] {
            t.push(&event(e));
        }
        let h = read(&t, i64::MIN, i64::MAX, chrono_tz::UTC);
        assert_eq!(h.persons.len(), 2);
        let ann = &h.persons[0];
        assert_eq!(ann.keys, ["a:a1", "u:ann"]);
        let d = |n: i64| {
            local_day(
                DateTime::parse_from_rfc3339(&at(n as u32, 0))
                    .expect("t")
                    .to_utc(),
                chrono_tz::UTC,
            )
        };
        assert_eq!(ann.active_days, [d(1), d(3), d(4)]);
        assert_eq!(ann.purchases, [(d(3), 40.0)]);
        assert_eq!(ann.engagement_hours, [20]);
        let products: Vec<(&str, Action)> = ann
            .products
            .iter()
            .map(|(p, a, _)| (p.as_str(), *a))
            .collect();
        assert_eq!(
            products,
            [
                ("tent", Action::View),
                ("tent", Action::Purchase),
                ("7", Action::Purchase)
            ]
        );
        assert_eq!(
            h.persons[1].texts,
            [(d(5), "where is my order?".to_owned())]
        );
        assert_eq!(h.days.len(), 5);
        let camping = &h.categories["camping"][&d(3)];
        assert_eq!((camping.revenue, camping.orders), (40.0, 1.0));
        assert_eq!(h.days[2].1.revenue, 40.0);
        assert_eq!(h.days[1].1.active_persons, 0.0);
        assert_eq!(
            weekday(local_day(
                DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
                    .expect("t")
                    .to_utc(),
                chrono_tz::UTC
            )),
            0
        );
    }
}
