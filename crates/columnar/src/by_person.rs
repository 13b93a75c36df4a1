//! A person-ordered projection of the sealed rows: what the per-person kernels (funnels,
//! retention) stream instead of grouping the table's rows by person on every query.
//!
//! The table keeps its rows time-partitioned (one chunk per sealed day file, so range queries
//! skip whole days); this projection holds, for the sealed rows only, each row's id, time and
//! event name ordered by (person, time, row), where the person is the canonical id when it was
//! built: every id merged into a person so far is in one group. Merges never split a person,
//! so merges made after the build need no rebuild: a query gathers the groups of the ids
//! merged into a person since. Like a ClickHouse projection, it costs memory (16 bytes per
//! sealed event, and 4 per person per run), and work at each seal: a new run of the rows just
//! sealed, merged size-tiered with the runs before ([`ByPerson::extended`]), so each row is
//! merged O(log n) times, not at every seal.
//!
//! Hand-written: the per-person counting sort and merge are the hot path of sealing.

use std::ops::Range;
use std::sync::Arc;

use crate::column::{Column, Plain, Spill};
use crate::table::Table;

/// The sealed rows `0..covered` as a few runs, each ordered by person. Each seal adds a run of
/// its rows; a run at least half the size of the one before it is merged into it
/// (size-tiered, as in an LSM tree), so each row is merged O(log n) times and there are
/// O(log n) runs. Runs are shared (`Arc`): extending copies none of the old ones.
#[derive(Debug, Default, Clone)]
pub struct ByPerson {
    pub runs: Vec<Arc<Run>>,
}

/// One run: the rows `rows`, ordered by (person, time, row), where the person is the
/// canonical id when the run was built.
#[derive(Debug, Default)]
pub struct Run {
    pub rows: Range<usize>,
    /// The entries of person `p` (and of the ids merged into it when this was built) are
    /// `start[p]..start[p + 1]`; persons past the end, and ids merged into another, have none.
    pub start: Column<u32>,
    pub row: Column<u32>,
    pub ts: Column<i64>,
    pub name: Column<u32>,
}

impl ByPerson {
    /// Rows `0..covered()` are in the runs.
    pub fn covered(&self) -> usize {
        self.runs.last().map_or(0, |r| r.rows.end)
    }

    pub fn heap_bytes(&self) -> usize {
        self.runs.iter().map(|r| r.heap_bytes()).sum()
    }

    /// Bytes of spill file the runs map.
    pub fn mapped_bytes(&self) -> usize {
        self.runs
            .iter()
            .map(|r| r.columns().map(|c| c.0).sum::<usize>())
            .sum()
    }

    /// Drops the runs' resident pages (see [`Column::evict`]).
    pub fn evict(&self) {
        for r in &self.runs {
            r.start.evict();
            r.row.evict();
            r.ts.evict();
            r.name.evict();
        }
    }

    /// This projection extended to every sealed row of `t`: a run of the rows sealed since,
    /// then size-tiered merges. Reads `t` only, so it can run beside queries and be swapped in
    /// afterwards.
    pub fn extended(&self, t: &Table) -> ByPerson {
        let mut runs = self.runs.clone();
        let lo = self.covered().min(t.sealed);
        if lo < t.sealed {
            runs.push(Arc::new(Run::build(t, &[], lo..t.sealed)));
        }
        while let [.., before, last] = runs.as_slice() {
            if last.len() * 2 < before.len() {
                break;
            }
            let merged = Run::build(t, &[before, last], 0..0);
            runs.truncate(runs.len() - 2);
            runs.push(Arc::new(merged));
        }
        ByPerson { runs }
    }
}

impl Run {
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

    /// Persons with a group (some empty).
    pub fn groups(&self) -> usize {
        self.start.len().saturating_sub(1)
    }

    pub fn heap_bytes(&self) -> usize {
        self.columns().map(|c| c.1).sum()
    }

    /// (mapped, heap) bytes of each column.
    fn columns(&self) -> impl Iterator<Item = (usize, usize)> {
        [
            (self.start.mapped_bytes(), self.start.heap_bytes()),
            (self.row.mapped_bytes(), self.row.heap_bytes()),
            (self.ts.mapped_bytes(), self.ts.heap_bytes()),
            (self.name.mapped_bytes(), self.name.heap_bytes()),
        ]
        .into_iter()
    }

    /// The groups of this run whose person has been merged into another since it was built
    /// (`redirects`: every id's canonical person now), by that person.
    pub fn merged_since(&self, redirects: &[u32], persons: usize) -> Merged {
        let moved = |g: &usize| {
            redirects.get(*g).is_some_and(|c| *c as usize != *g) && !self.entries(*g).is_empty()
        };
        if !(0..self.groups()).any(|g| moved(&g)) {
            return Merged::default();
        }
        let (start, groups) = group(
            persons,
            (0..self.groups())
                .filter(moved)
                .map(|g| (redirects[g] as usize, g as u32)),
        );
        Merged { start, groups }
    }

    /// One run of the entries of `sources` (adjacent runs, in row order) and the table rows
    /// `new` (after them), grouped by the persons' current canonical ids.
    fn build(t: &Table, sources: &[&Arc<Run>], new: Range<usize>) -> Run {
        let redirects = t.persons.redirects();
        let persons = sources
            .iter()
            .map(|s| s.groups())
            .chain(t.person[new.clone()].iter().map(|p| *p as usize + 1))
            .fold(redirects.len(), usize::max);
        let canon = |p: usize| redirects.get(p).map_or(p, |c| *c as usize);
        // The new rows grouped by canonical person (counting sort, row order kept).
        let (new_start, new_rows) = group(
            persons,
            new.clone().map(|r| (canon(t.person[r] as usize), r as u32)),
        );
        // Per source, its groups whose person has been merged into another since it was built.
        let moved: Vec<Merged> = sources
            .iter()
            .map(|s| s.merged_since(&redirects, persons))
            .collect();
        let rows = sources
            .iter()
            .map(|s| s.rows.clone())
            .chain(std::iter::once(new).filter(|r| !r.is_empty()))
            .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
            .unwrap_or(0..0);
        let total = sources.iter().map(|s| s.len()).sum::<usize>() + new_rows.len();
        // Written straight into the columns (spill files when large), not built on the heap
        // and copied: at 100 M rows the copy doubled a restart's peak.
        let mut out = Built {
            start: with_room(persons + 1, &t.spill),
            row: with_room(total, &t.spill),
            ts: with_room(total, &t.spill),
            name: with_room(total, &t.spill),
        };
        out.start.push(0);
        let mut written_since_evict = 0usize;
        let mut entries: Vec<(i64, u32, u32)> = Vec::new();
        for c in 0..persons {
            if canon(c) == c {
                entries.clear();
                for (s, moved) in sources.iter().zip(&moved) {
                    let merged = moved.merged_into(c);
                    for g in std::iter::once(c as u32).chain(merged.iter().copied()) {
                        for i in s.entries(g as usize) {
                            entries.push((s.ts[i], s.row[i], s.name[i]));
                        }
                    }
                }
                for &r in &new_rows[new_start[c] as usize..new_start[c + 1] as usize] {
                    entries.push((t.ts[r as usize], r, t.name[r as usize]));
                }
                // Earlier runs' entries, then later rows: usually already in time order.
                if !entries.is_sorted_by_key(|(ts, row, _)| (*ts, *row)) {
                    entries.sort_unstable_by_key(|(ts, row, _)| (*ts, *row));
                }
                for (ts, row, name) in &entries {
                    out.ts.push(*ts);
                    out.row.push(*row);
                    out.name.push(*name);
                }
                written_since_evict += entries.len();
                if written_since_evict >= EVICT_EVERY {
                    written_since_evict = 0;
                    out.evict();
                }
            }
            out.start.push(out.row.len() as u32);
        }
        let mut run = Run {
            rows,
            start: out.start,
            row: out.row,
            ts: out.ts,
            name: out.name,
        };
        // In a named spill directory every column of a run gets its file now: the run is
        // shared (`Arc`) once built, and an image can only name a column with a file.
        let persisted = [
            run.start.persist(),
            run.row.persist(),
            run.ts.persist(),
            run.name.persist(),
        ];
        if let Some(Err(e)) = persisted.into_iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, "could not give a projection run its files; it stays out of the image");
        }
        run
    }
}

/// A run's columns while [`Run::build`] fills them.
struct Built {
    start: Column<u32>,
    row: Column<u32>,
    ts: Column<i64>,
    name: Column<u32>,
}

/// Entries [`Run::build`] writes between two evictions of the pages it wrote (64 MiB of a
/// spilled run): the build never reads them back, and a projection over a long history
/// would otherwise hold every page resident until the store's next trim.
const EVICT_EVERY: usize = 1 << 22;

/// An empty column with room for `n` values (in a spill file at once when that is large).
fn with_room<T: Plain>(n: usize, spill: &Option<Arc<Spill>>) -> Column<T> {
    let mut c = Column::new(spill.clone());
    c.reserve(n);
    c
}

impl Built {
    fn evict(&self) {
        self.row.evict();
        self.ts.evict();
        self.name.evict();
    }
}

/// A run's groups merged into other persons since it was built ([`Run::merged_since`]).
#[derive(Debug, Default)]
pub struct Merged {
    start: Vec<u32>,
    groups: Vec<u32>,
}

impl Merged {
    /// The groups merged into person `p` (none when nothing was merged).
    pub fn merged_into(&self, p: usize) -> &[u32] {
        match (self.start.get(p), self.start.get(p + 1)) {
            (Some(&a), Some(&b)) => &self.groups[a as usize..b as usize],
            _ => &[],
        }
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
                prop_assert_eq!(p.covered(), c);
                // Runs are adjacent and cover every sealed row once.
                let mut next = 0;
                let mut all = Vec::new();
                for run in &p.runs {
                    prop_assert_eq!(run.rows.start, next);
                    next = run.rows.end;
                    all.extend(run.row.iter().copied());
                    prop_assert!(run.rows.clone().all(|r| run.row.contains(&(r as u32))));
                }
                all.sort_unstable();
                prop_assert_eq!(all, (0..c as u32).collect::<Vec<_>>());
                prop_assert!(p.runs.len() <= 2 + (c.max(1) as f64).log2() as usize);
                // Each group: one person (as merged now), in (time, row) order, with its
                // entries' times and names.
                let redirects = t.persons.redirects();
                let canon = |r: u32| redirects[t.person[r as usize] as usize];
                for run in &p.runs {
                    for (g, person) in redirects.iter().enumerate().take(run.groups()) {
                        let e = run.entries(g);
                        for i in e.clone() {
                            prop_assert_eq!(canon(run.row[i]), *person);
                            prop_assert_eq!(run.ts[i], t.ts[run.row[i] as usize]);
                            prop_assert_eq!(run.name[i], t.name[run.row[i] as usize]);
                        }
                        let keys: Vec<(i64, u32)> = e.map(|i| (run.ts[i], run.row[i])).collect();
                        prop_assert!(keys.is_sorted());
                    }
                }
            }
        }
    }
}
