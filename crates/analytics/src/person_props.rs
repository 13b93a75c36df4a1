//! Person properties, computed at query time from `identify` traits.
//!
//! A person's property is the value of the trait in their latest `identify` call (by event
//! time; ties by arrival) that set it, over every id merged into the person, as Segment
//! and PostHog keep traits (`$set`). Nothing is stored: the column store already holds the
//! traits of `$identify` rows, so the value follows merges and late events without rewrites.

use livora_columnar::Table;

/// One person property per canonical person.
pub(crate) struct PersonColumn {
    /// `0` = not set, else the value id + 1 (in the table's value dictionary).
    pub strs: Vec<u32>,
    /// `NaN` = not set.
    pub nums: Vec<f64>,
}

impl PersonColumn {
    pub fn build(t: &Table, redirects: &[u32], key: &str) -> Self {
        let persons = redirects.len().max(t.persons.len());
        let mut strs = vec![0u32; persons];
        let mut nums = vec![f64::NAN; persons];
        let mut at_s = vec![i64::MIN; persons];
        let mut at_n = vec![i64::MIN; persons];
        let (Some(identify), Some(k)) = (t.names.get("$identify"), t.keys.get(key)) else {
            return Self { strs, nums };
        };
        let scol = t.strings.get(&k);
        let ncol = t.numbers.get(&k);
        for row in 0..t.len() {
            if t.name[row] != identify {
                continue;
            }
            let p = t.person[row] as usize;
            let c = redirects.get(p).copied().unwrap_or(p as u32) as usize;
            let ts = t.ts[row];
            if let Some(v) = scol.and_then(|c| c.get(row)).filter(|v| *v != 0)
                && ts >= at_s[c]
            {
                (strs[c], at_s[c]) = (v, ts);
            }
            if let Some(x) = ncol.and_then(|c| c.get(row)).filter(|x| !x.is_nan())
                && ts >= at_n[c]
            {
                (nums[c], at_n[c]) = (x, ts);
            }
        }
        Self { strs, nums }
    }

    pub fn str_at<'t>(&self, t: &'t Table, person: usize) -> Option<&'t str> {
        match self.strs.get(person).copied().unwrap_or(0) {
            0 => None,
            v => t.values.value(v - 1),
        }
    }

    pub fn num_at(&self, person: usize) -> Option<f64> {
        self.nums.get(person).copied().filter(|x| !x.is_nan())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use crate::funnel::{Op, PropertyFilter, Source, Step};
    use crate::period::Period;
    use crate::trends::{Breakdown, Metric, TrendsQuery, trends};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Trends broken down by, and filtered on, a person property equal a plain reference:
        /// each person's latest `plan` trait (by time, ties by arrival) over merged ids.
        #[test]
        fn person_property_breakdown_and_filter_match_reference(
            raw in proptest::collection::vec((0u8..6, 0u8..4, 0i64..100, any::<bool>()), 1..60),
            merges in proptest::collection::vec((0u8..6, 0u8..6), 0..3),
        ) {
            let mut t = livora_columnar::Table::default();
            let time = |s: i64| Utc.timestamp_opt(1_767_225_600 + s, 0).single().expect("time").to_rfc3339();
            for (a, u) in &merges {
                t.push_json(format!(r#"{{"type":"identify","userId":"u{u}","anonymousId":"u{a}x","timestamp":"{}"}}"#, time(0)).as_bytes()).expect("push");
                t.push_json(format!(r#"{{"type":"alias","previousId":"u{a}","userId":"u{u}","timestamp":"{}"}}"#, time(0)).as_bytes()).expect("push");
            }
            for (p, kind, ts, pro) in &raw {
                let json = if *kind == 0 {
                    let plan = if *pro { "pro" } else { "free" };
                    format!(r#"{{"type":"identify","userId":"u{p}","timestamp":"{}","traits":{{"plan":"{plan}"}}}}"#, time(*ts))
                } else {
                    format!(r#"{{"type":"track","event":"Buy","userId":"u{p}","timestamp":"{}"}}"#, time(*ts))
                };
                t.push_json(json.as_bytes()).expect("push");
            }
            let r = t.persons.redirects();
            // Reference: the latest plan per canonical person, then Buy events per plan.
            let mut plan: BTreeMap<u32, (i64, usize, String)> = BTreeMap::new();
            let identify = t.names.get("$identify");
            let key = t.keys.get("plan");
            for row in 0..t.len() {
                if Some(t.name[row]) != identify { continue; }
                let Some(v) = key.and_then(|k| t.str_at(k, row)) else { continue };
                let c = r[t.person[row] as usize];
                let e = plan.entry(c).or_insert((i64::MIN, 0, String::new()));
                if (t.ts[row], row) >= (e.0, e.1) {
                    *e = (t.ts[row], row, v.to_owned());
                }
            }
            let buy = t.names.get("Buy");
            let mut want: BTreeMap<Option<String>, u64> = BTreeMap::new();
            let mut want_pro = 0u64;
            for row in 0..t.len() {
                if Some(t.name[row]) != buy { continue; }
                let v = plan.get(&r[t.person[row] as usize]).map(|e| e.2.clone());
                want_pro += u64::from(v.as_deref() == Some("pro"));
                *want.entry(v).or_default() += 1;
            }
            let mut q = TrendsQuery {
                event: Step { event: "Buy".into(), filters: vec![] },
                metric: Metric::Count,
                interval: Period::Month,
                from: Utc.timestamp_opt(1_767_225_600, 0).single().expect("time"),
                to: Utc.timestamp_opt(1_767_225_600 + 86_400, 0).single().expect("time"),
                breakdown: Some(Breakdown { property: "plan".into(), limit: 10, source: Source::Person }),
                compare_previous: false,
            };
            let got = trends(&t, &r, &q, chrono_tz::Tz::UTC).expect("trends");
            let got: BTreeMap<Option<String>, u64> = got.series.iter().map(|s| (s.breakdown.clone(), s.total.unwrap_or(0.0) as u64)).filter(|(_, n)| *n > 0).collect();
            prop_assert_eq!(got, want);
            q.breakdown = None;
            q.event.filters = vec![PropertyFilter { property: "plan".into(), op: Op::Eq, value: Some("pro".into()), source: Source::Person }];
            let got = trends(&t, &r, &q, chrono_tz::Tz::UTC).expect("trends");
            prop_assert_eq!(got.series.first().and_then(|s| s.total).unwrap_or(0.0) as u64, want_pro);
        }
    }
}
