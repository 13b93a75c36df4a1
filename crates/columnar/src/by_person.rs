//! A person-ordered projection of the sealed rows: what the per-person kernels (funnels,
//! retention) stream instead of grouping the table's rows by person on every query.
//!
//! The table keeps its rows time-partitioned (one chunk per sealed day file, so range queries
//! skip whole days); this projection holds, for the sealed rows only, each row's id, time and
//! event name ordered by (person, time, row), where the person is the canonical id when it was
//! built: every id merged into a person so far is in one group. Merges never split a person,
//! so merges made after the build need no rebuild: a query gathers the groups of the ids
//! merged into a person since. Like a ClickHouse projection, it costs memory (16 bytes per
//! sealed event and 4 per person) and a merge at each seal ([`ByPerson::extended`], linear in
//! the sealed rows).
//!
//! Hand-written: the per-person counting sort and merge are the hot path of sealing.

use std::ops::Range;

use crate::table::Table;

/// The sealed rows `0..covered`, ordered by (canonical person when built, time, row).
#[derive(Debug, Default, Clone)]
pub struct ByPerson {
    /// Rows `0..covered` are in the projection.
    pub covered: usize,
    /// The entries of person `p` (and of the ids merged into it when this was built) are
    /// `start[p]..start[p + 1]`; persons past the end, and ids merged into another, have none.
    pub start: Vec<u32>,
    pub row: Vec<u32>,
    pub ts: Vec<i64>,
    pub name: Vec<u32>,
}

impl ByPerson {
    /// The entries of person `p`.
    pub fn entries(&self, p: usize) -> Range<usize> {
        match (self.start.get(p), self.start.get(p + 1)) {
            (Some(&a), Some(&b)) => a as usize..b as usize,
            _ => 0..0,
        }
    }

    pub fn len(&self) -> usize {
        self.row.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        self.start.capacity() * 4
            + self.row.capacity() * 4
            + self.ts.capacity() * 8
            + self.name.capacity() * 4
    }

    /// This projection extended to every sealed row of `t` (rows `covered..t.sealed` merged
    /// in), regrouped by the persons' current canonical ids. Reads `t` only, so it can run
    /// beside queries and be swapped in afterwards.
    pub fn extended(&self, t: &Table) -> ByPerson {
        let (lo, hi) = (self.covered.min(t.sealed), t.sealed);
        let redirects = t.persons.redirects();
        let persons = redirects.len().max(self.start.len().saturating_sub(1)).max(
            t.person[lo..hi]
                .iter()
                .map(|p| *p as usize + 1)
                .max()
                .unwrap_or(0),
        );
        let canon = |p: usize| redirects.get(p).map_or(p, |c| *c as usize);
        // The new rows grouped by canonical person (counting sort, row order kept).
        let (new_start, new_rows) = group(
            persons,
            (lo..hi).map(|r| (canon(t.person[r] as usize), r as u32)),
        );
        // Old groups whose person has been merged into another since the last build.
        let (moved_start, moved) = group(
            persons,
            (0..self.start.len().saturating_sub(1))
                .filter(|g| canon(*g) != *g && !self.entries(*g).is_empty())
                .map(|g| (canon(g), g as u32)),
        );
        let total = self.len() + new_rows.len();
        let mut out = ByPerson {
            covered: hi,
            start: Vec::with_capacity(persons + 1),
            row: Vec::with_capacity(total),
            ts: Vec::with_capacity(total),
            name: Vec::with_capacity(total),
        };
        out.start.push(0);
        let mut entries: Vec<(i64, u32, u32)> = Vec::new();
        for c in 0..persons {
            if canon(c) == c {
                entries.clear();
                let old = std::iter::once(c as u32).chain(
                    moved[moved_start[c] as usize..moved_start[c + 1] as usize]
                        .iter()
                        .copied(),
                );
                for g in old {
                    for i in self.entries(g as usize) {
                        entries.push((self.ts[i], self.row[i], self.name[i]));
                    }
                }
                for &r in &new_rows[new_start[c] as usize..new_start[c + 1] as usize] {
                    entries.push((t.ts[r as usize], r, t.name[r as usize]));
                }
                // Old entries, then new ones (later rows): usually already in time order.
                if !entries.is_sorted_by_key(|(ts, row, _)| (*ts, *row)) {
                    entries.sort_unstable_by_key(|(ts, row, _)| (*ts, *row));
                }
                for (ts, row, name) in &entries {
                    out.ts.push(*ts);
                    out.row.push(*row);
                    out.name.push(*name);
                }
            }
            out.start.push(out.row.len() as u32);
        }
        out
    }
}

/// `(key, item)` pairs grouped by key (`0..keys`) with a counting sort, keeping their order:
/// the start of each key's items, and the items.
fn group(keys: usize, pairs: impl Iterator<Item = (usize, u32)> + Clone) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; keys + 1];
    for (k, _) in pairs.clone() {
        start[k + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut items = vec![0u32; start[keys] as usize];
    let mut next = start.clone();
    for (k, item) in pairs {
        items[next[k] as usize] = item;
        next[k] += 1;
    }
    (start, items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Events by `u<who>` or, when `anon`, `a<who>`; `merge` makes `a<who>` into `u<who>`
    /// with an identify at that point.
    fn push(t: &mut Table, events: &[(u8, i64, bool, bool)], first: usize) {
        for (i, (who, secs, anon, merge)) in events.iter().enumerate() {
            let i = first + i;
            if *merge {
                let json = format!(
                    r#"{{"type":"identify","userId":"u{who}","anonymousId":"a{who}","timestamp":"2026-01-01T00:00:00Z","receivedAt":"2026-01-01T00:00:00Z"}}"#
                );
                t.push_json(json.as_bytes()).expect("push");
            }
            let id = if *anon {
                format!(r#""anonymousId":"a{who}""#)
            } else {
                format!(r#""userId":"u{who}""#)
            };
            let json = format!(
                r#"{{"type":"track","event":"e{}",{id},"timestamp":"{}","receivedAt":"2026-01-01T00:00:00Z"}}"#,
                i % 3,
                chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0)
                    .expect("time")
                    .to_rfc3339()
            );
            t.push_json(json.as_bytes()).expect("push");
        }
    }

    proptest! {
        /// Built in several seals or in one, with identity merges between them, the
        /// projection is every sealed row once, by (canonical person, time, row).
        #[test]
        fn extending_in_steps_orders_every_sealed_row(
            events in prop::collection::vec((0u8..6, 0i64..50, any::<bool>(), prop::bool::weighted(0.05)), 0..120),
            cuts in prop::collection::vec(0usize..120, 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(events.len())).collect();
            cuts.sort_unstable();
            cuts.push(events.len());
            let mut t = Table::default();
            let mut p = ByPerson::default();
            let mut done = 0;
            for cut in cuts {
                // Events (and merges) up to the cut, then a seal.
                push(&mut t, &events[done..cut], done);
                done = cut;
                let c = t.len();
                t.sealed = c;
                p = p.extended(&t);
                prop_assert_eq!(p.covered, c);
                let redirects = t.persons.redirects();
                let canon = |r: u32| redirects[t.person[r as usize] as usize];
                let mut want: Vec<u32> = (0..c as u32).collect();
                want.sort_by_key(|r| (canon(*r), t.ts[*r as usize], *r));
                prop_assert_eq!(&p.row, &want);
                for (i, r) in p.row.iter().enumerate() {
                    prop_assert_eq!(p.ts[i], t.ts[*r as usize]);
                    prop_assert_eq!(p.name[i], t.name[*r as usize]);
                }
                for person in 0..t.persons.len() {
                    for i in p.entries(person) {
                        prop_assert_eq!(canon(p.row[i]) as usize, person);
                    }
                }
            }
        }
    }
}
