//! Computed attributes, maintained on every event and mergeable when two persons become one.
//!
//! Every field is a commutative summary (counts, sums, minimum and maximum times, a set of
//! session intervals, a set of active days), so the result does not depend on the order in
//! which events arrive, and merging two persons' attributes equals having seen all their
//! events on one (a property test checks both).
//!
//! - `first_seen` / `last_seen`: event times.
//! - `sessions`: runs of events with gaps of at most 30 minutes (what PostHog and Google
//!   Analytics call a session), counted from the event times, so a late event that bridges
//!   two sessions joins them.
//! - `orders`, `revenue`, `refunds`: `Order Completed` and `Order Refunded` with the same
//!   revenue rule as the analytics engine (`revenue`, else `total`).
//! - Derived at read time with the clock: average order value, days since the last order,
//!   purchase frequency (orders per 30 days since the first order, at least one period), and
//!   the engagement score.
//!
//! **Engagement score** (0-100): half recency, half frequency.
//! `50 × 2^(−days since last seen / 14) + 50 × ln(1 + active days in the last 30) / ln(31)`.
//! Someone active every day scores 100; someone last seen two weeks ago, on 3 days of the
//! last 30, scores 25 + 20 = 45; someone gone for good decays to 0.

use crate::sorted_map::SortedMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A session ends after this many seconds without an event.
pub const SESSION_GAP_SECS: i64 = 30 * 60;
pub const ORDER_COMPLETED: &str = "Order Completed";
pub const ORDER_REFUNDED: &str = "Order Refunded";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Computed {
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub first_seen: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub last_seen: Option<DateTime<Utc>>,
    pub events: u64,
    /// Events per name (`track` event names; `page`, `screen`, `identify`… for the others).
    pub event_counts: SortedMap<String, u64>,
    /// Session intervals `(start, end)` in Unix seconds, sorted and at least a gap apart.
    sessions: Vec<(i64, i64)>,
    pub orders: u64,
    pub revenue: f64,
    pub refunds: f64,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub first_order_at: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_microseconds_option")]
    pub last_order_at: Option<DateTime<Utc>>,
    /// Days (Unix day numbers) with at least one event, the most recent 64.
    active_days: Vec<i64>,
}

const KEEP_DAYS: usize = 64;

fn min_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Computed {
    /// Counts one event named `name` at `at`; `revenue` for orders and refunds.
    pub fn record(&mut self, name: &str, at: DateTime<Utc>, revenue: Option<f64>) {
        self.first_seen = min_time(self.first_seen, Some(at));
        self.last_seen = max_time(self.last_seen, Some(at));
        self.events += 1;
        match self.event_counts.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.event_counts.insert(name.to_owned(), 1);
            }
        }
        let t = at.timestamp();
        self.add_session(t, t);
        self.add_day(t.div_euclid(86_400));
        match name {
            ORDER_COMPLETED => {
                self.orders += 1;
                self.revenue += revenue.unwrap_or(0.0);
                self.first_order_at = min_time(self.first_order_at, Some(at));
                self.last_order_at = max_time(self.last_order_at, Some(at));
            }
            ORDER_REFUNDED => self.refunds += revenue.unwrap_or(0.0),
            _ => {}
        }
    }

    fn add_session(&mut self, mut start: i64, mut end: i64) {
        // Every interval within a gap of [start, end] joins it.
        let lo = self
            .sessions
            .partition_point(|&(_, e)| e + SESSION_GAP_SECS < start);
        let hi = self
            .sessions
            .partition_point(|&(s, _)| s - SESSION_GAP_SECS <= end);
        if lo < hi {
            start = start.min(self.sessions[lo].0);
            end = end.max(self.sessions[hi - 1].1);
        }
        self.sessions.splice(lo..hi, [(start, end)]);
    }

    fn add_day(&mut self, day: i64) {
        if let Err(i) = self.active_days.binary_search(&day) {
            self.active_days.insert(i, day);
            if self.active_days.len() > KEEP_DAYS {
                self.active_days.remove(0);
            }
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Days with an event in the 30 days up to `now`.
    pub fn active_days_30(&self, now: DateTime<Utc>) -> usize {
        let today = now.timestamp().div_euclid(86_400);
        self.active_days
            .iter()
            .filter(|&&d| d <= today && d > today - 30)
            .count()
    }

    pub fn average_order_value(&self) -> Option<f64> {
        (self.orders > 0).then(|| self.revenue / self.orders as f64)
    }

    pub fn days_since_last_order(&self, now: DateTime<Utc>) -> Option<i64> {
        self.last_order_at.map(|t| (now - t).num_days().max(0))
    }

    pub fn days_since_last_seen(&self, now: DateTime<Utc>) -> Option<i64> {
        self.last_seen.map(|t| (now - t).num_days().max(0))
    }

    /// Orders per 30 days since the first order (at least one 30-day period).
    pub fn purchase_frequency(&self, now: DateTime<Utc>) -> Option<f64> {
        let first = self.first_order_at?;
        let periods = ((now - first).num_seconds() as f64 / (30.0 * 86_400.0)).max(1.0);
        Some(self.orders as f64 / periods)
    }

    /// The engagement score (module doc), 0 for someone never seen.
    pub fn engagement(&self, now: DateTime<Utc>) -> f64 {
        let Some(last) = self.last_seen else {
            return 0.0;
        };
        let days = ((now - last).num_seconds() as f64 / 86_400.0).max(0.0);
        let recency = 2f64.powf(-days / 14.0);
        let frequency = (1.0 + self.active_days_30(now) as f64).ln() / 31f64.ln();
        (50.0 * recency + 50.0 * frequency).clamp(0.0, 100.0)
    }

    /// Adds another person's attributes, as if their events had been recorded here.
    pub fn merge(&mut self, other: &Computed) {
        self.first_seen = min_time(self.first_seen, other.first_seen);
        self.last_seen = max_time(self.last_seen, other.last_seen);
        self.events += other.events;
        for (k, n) in &other.event_counts {
            *self.event_counts.entry(k.clone()).or_default() += n;
        }
        for &(s, e) in &other.sessions {
            self.add_session(s, e);
        }
        for &d in &other.active_days {
            self.add_day(d);
        }
        self.orders += other.orders;
        self.revenue += other.revenue;
        self.refunds += other.refunds;
        self.first_order_at = min_time(self.first_order_at, other.first_order_at);
        self.last_order_at = max_time(self.last_order_at, other.last_order_at);
    }

    /// The computed attributes at `now`, by name, as the API shows them and templates and
    /// workflow conditions see them.
    pub fn to_json(&self, now: DateTime<Utc>) -> serde_json::Value {
        serde_json::json!({
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "events": self.events,
            "sessions": self.sessions(),
            "orders": self.orders,
            "revenue": self.revenue - self.refunds,
            "refunds": self.refunds,
            "average_order_value": self.average_order_value(),
            "first_order_at": self.first_order_at,
            "last_order_at": self.last_order_at,
            "days_since_last_order": self.days_since_last_order(now),
            "days_since_last_seen": self.days_since_last_seen(now),
            "purchase_frequency": self.purchase_frequency(now),
            "engagement": (self.engagement(now) * 10.0).round() / 10.0,
        })
    }

    /// Estimated heap bytes (see [`crate::heap`]).
    pub fn heap_bytes(&self) -> usize {
        crate::heap::vec::<(String, u64)>(self.event_counts.len())
            + self
                .event_counts
                .keys()
                .map(String::capacity)
                .sum::<usize>()
            + self.sessions.capacity() * size_of::<(i64, i64)>()
            + self.active_days.capacity() * size_of::<i64>()
    }
}

impl Computed {
    /// What RFM ranks a customer by: the last order's time (Unix seconds), the orders and the
    /// net revenue; `None` for a person without an order.
    pub fn rfm_key(&self) -> Option<[f64; 3]> {
        Some([
            self.last_order_at?.timestamp() as f64,
            self.orders as f64,
            self.revenue - self.refunds,
        ])
    }
}

/// RFM scores, 1-5 each (5 best), from quintiles among the persons with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rfm {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
}

impl Rfm {
    /// The three digits as one code, e.g. `"545"`.
    pub fn code(&self) -> String {
        format!("{}{}{}", self.recency, self.frequency, self.monetary)
    }
}

/// RFM scores of every customer: `(last order time, orders, revenue)` in, one score per
/// input out, in the same order. A score is the quintile of the customer's rank (ties share
/// the best quintile their value reaches): recency ranks by the last order (more recent is
/// better), frequency by orders, monetary by revenue.
pub fn rfm_scores(customers: &[(DateTime<Utc>, u64, f64)]) -> Vec<Rfm> {
    let n = customers.len();
    let score = |key: &dyn Fn(usize) -> f64| -> Vec<u8> {
        let mut sorted: Vec<f64> = (0..n).map(key).collect();
        sorted.sort_by(f64::total_cmp);
        (0..n)
            .map(|i| {
                // How many customers are strictly below this one, as a share of all.
                let below = sorted.partition_point(|v| v.total_cmp(&key(i)).is_lt());
                1 + ((below * 5) / n.max(1)).min(4) as u8
            })
            .collect()
    };
    let r = score(&|i| customers[i].0.timestamp() as f64);
    let f = score(&|i| customers[i].1 as f64);
    let m = score(&|i| customers[i].2);
    (0..n)
        .map(|i| Rfm {
            recency: r[i],
            frequency: f[i],
            monetary: m[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn sessions_join_when_a_late_event_bridges_them() {
        let mut c = Computed::default();
        c.record("a", t(0), None);
        c.record("a", t(3600), None);
        assert_eq!(c.sessions(), 2);
        c.record("a", t(1800), None);
        assert_eq!(c.sessions(), 1, "30 minutes from both");
        c.record("a", t(3600 + 1801), None);
        assert_eq!(c.sessions(), 2);
    }

    #[test]
    fn orders_and_derived_values() {
        let mut c = Computed::default();
        c.record(ORDER_COMPLETED, t(0), Some(30.0));
        c.record(ORDER_COMPLETED, t(86_400 * 10), Some(10.0));
        c.record(ORDER_REFUNDED, t(86_400 * 11), Some(10.0));
        assert_eq!(c.orders, 2);
        assert_eq!(c.average_order_value(), Some(20.0));
        let now = t(86_400 * 70);
        assert_eq!(c.days_since_last_order(now), Some(60));
        let f = c.purchase_frequency(now).expect("frequency");
        assert!((f - 2.0 / (70.0 / 30.0)).abs() < 1e-9);
        assert_eq!(c.refunds, 10.0);
    }

    #[test]
    fn engagement_matches_its_definition() {
        let mut c = Computed::default();
        let now = t(86_400 * 100);
        assert_eq!(c.engagement(now), 0.0);
        for d in 0..30 {
            c.record("a", now - chrono::Duration::days(d), None);
        }
        assert!((c.engagement(now) - 100.0).abs() < 1e-9);
        let mut c = Computed::default();
        for d in [14, 20, 25] {
            c.record("a", now - chrono::Duration::days(d), None);
        }
        let expect = 25.0 + 50.0 * 4f64.ln() / 31f64.ln();
        assert!((c.engagement(now) - expect).abs() < 1e-9);
    }

    #[test]
    fn rfm_quintiles() {
        let customers: Vec<_> = (0..10)
            .map(|i| (t(i * 1000), i as u64 + 1, i as f64 * 10.0))
            .collect();
        let s = rfm_scores(&customers);
        assert_eq!(
            s[0],
            Rfm {
                recency: 1,
                frequency: 1,
                monetary: 1
            }
        );
        assert_eq!(
            s[9],
            Rfm {
                recency: 5,
                frequency: 5,
                monetary: 5
            }
        );
        assert_eq!(s[9].code(), "555");
        // Ties share a score.
        let same = rfm_scores(&[(t(0), 1, 5.0), (t(0), 1, 5.0)]);
        assert_eq!(same[0], same[1]);
        assert!(rfm_scores(&[]).is_empty());
    }

    /// A simple reference: sessions from the sorted list of event times.
    fn reference_sessions(times: &[i64]) -> usize {
        let mut v = times.to_vec();
        v.sort_unstable();
        v.windows(2)
            .filter(|w| w[1] - w[0] > SESSION_GAP_SECS)
            .count()
            + usize::from(!v.is_empty())
    }

    proptest! {
        #[test]
        fn order_and_merging_do_not_matter(
            events in prop::collection::vec((0i64..20_000, 0u8..3, 0u32..100), 0..60),
            cut in 0usize..60,
        ) {
            let name = |k: u8| [ORDER_COMPLETED, "Page Viewed", ORDER_REFUNDED][k as usize];
            let mut all = Computed::default();
            for &(s, k, r) in &events {
                all.record(name(k), t(s * 10), Some(f64::from(r)));
            }
            let mut rev = Computed::default();
            for &(s, k, r) in events.iter().rev() {
                rev.record(name(k), t(s * 10), Some(f64::from(r)));
            }
            prop_assert_eq!(&all, &rev);
            let times: Vec<i64> = events.iter().map(|e| t(e.0 * 10).timestamp()).collect();
            prop_assert_eq!(all.sessions(), reference_sessions(&times));
            let cut = cut.min(events.len());
            let mut left = Computed::default();
            let mut right = Computed::default();
            for (i, &(s, k, r)) in events.iter().enumerate() {
                let side = if i < cut { &mut left } else { &mut right };
                side.record(name(k), t(s * 10), Some(f64::from(r)));
            }
            left.merge(&right);
            // Sums of floats in another order may differ in the last bits.
            prop_assert!((left.revenue - all.revenue).abs() < 1e-6);
            left.revenue = all.revenue;
            left.refunds = all.refunds;
            prop_assert_eq!(left, all);
        }
    }
}
