//! How much heap a query's kernel will take: its per-person arrays, the rows it gathers and
//! its partial results, which no eviction can reach. With `[analytics] memory_limit_mb`, the
//! column store makes room for this before the kernel runs (`ColumnStore::reserve`), instead
//! of finding the process over its limit halfway through (at 100 M events and 10 M persons a
//! lifecycle query's per-person arrays alone are 240 MB, and paths over the whole history group
//! every row: 400 MB).
//!
//! The figures follow each kernel's data structures (bytes per element, times the growth of
//! vectors filled by pushing: up to twice their length, and a merged copy beside the parts),
//! over four sizes of the table: persons (every id, merged or not), rows in the query's
//! span, rows of the query's events in it, and rows the person-ordered projection does not
//! cover. The rows of the query's events are estimated from a sample of the span's rows, so
//! the estimate costs a few thousand row reads, not a scan. `tests/heap.rs` holds every kind
//! to at least what the allocator sees it take, and to at most three times that.

use std::ops::Range;

use livora_columnar::Table;

use crate::Query;
use crate::funnel::{Source, Step};
use crate::trends::Metric;

/// Rows of a span read to estimate the share of a query's events.
const SAMPLE: usize = 2_048;

/// What every kernel takes whatever the sizes: parts per core, small maps, the answer.
const BASE: u64 = 256 << 10;

/// The sizes a kernel's heap grows with.
struct Sizes<'a> {
    t: &'a Table,
    /// Ids a per-person array is indexed by.
    persons: u64,
}

impl<'a> Sizes<'a> {
    fn new(t: &'a Table) -> Self {
        let persons = t.persons.len() as u64;
        Self { t, persons }
    }

    /// Rows with `from <= ts <= to` (an upper bound: whole chunks).
    fn rows(&self, from: i64, to: i64) -> u64 {
        total(&self.t.ranges_within(from, to))
    }

    /// Rows of these steps' events in the span, estimated from a sample of the chunks that
    /// hold any of them.
    fn matching(&self, steps: &[&Step], from: i64, to: i64) -> u64 {
        let names = self.names(steps);
        if names.is_empty() {
            return 0;
        }
        self.sampled(&names, &self.t.ranges_with(from, to, Some(&names)))
    }

    /// The ids of the steps' event names the table knows, sorted.
    fn names(&self, steps: &[&Step]) -> Vec<u32> {
        let mut names: Vec<u32> = steps
            .iter()
            .filter_map(|s| self.t.names.get(&s.event))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The rows of `ranges` with one of `names`, from evenly spaced samples.
    fn sampled(&self, names: &[u32], ranges: &[Range<usize>]) -> u64 {
        let rows = total(ranges);
        if rows == 0 || names.is_empty() {
            return 0;
        }
        let step = (rows as usize).div_ceil(SAMPLE).max(1);
        let (mut seen, mut hits) = (0u64, 0u64);
        let mut at = 0usize;
        for r in ranges {
            while at < r.len() {
                seen += 1;
                if names.binary_search(&self.t.name[r.start + at]).is_ok() {
                    hits += 1;
                }
                at += step;
            }
            at -= r.len();
        }
        // The share seen, with a margin of a few sampled rows (a rare event may be missed).
        (rows * (hits + 4)).div_ceil(seen.max(1)).min(rows)
    }

    /// Rows of the steps' events in the span that the person-ordered projection does not
    /// hold: gathered and grouped per query by the per-person kernels (`crate::grouped`),
    /// all of the span when the projection is not used; every row of the span with
    /// `unmatched` (strict funnels keep the rows that match no step).
    fn unprojected(&self, steps: &[&Step], from: i64, to: i64, unmatched: bool) -> u64 {
        let scan_from = crate::grouped::scan_from(self.t, from, to);
        let ranges: Vec<Range<usize>> = self
            .t
            .ranges_within(from, to)
            .into_iter()
            .map(|r| r.start.max(scan_from)..r.end)
            .filter(|r| !r.is_empty())
            .collect();
        if unmatched {
            total(&ranges)
        } else {
            self.sampled(&self.names(steps), &ranges)
        }
    }

    /// `crate::grouped::per_person`: the rows it gathers (person, row, 16-byte row: 24 bytes,
    /// in parts filled by pushing, then counting-sorted into a second array) and its two
    /// per-person offsets.
    fn grouped(&self, steps: &[&Step], from: i64, to: i64, unmatched: bool) -> u64 {
        72 * self.unprojected(steps, from, to, unmatched) + 8 * self.persons
    }

    /// A filter on a person property builds that property per person (`PersonColumn`: a
    /// string, a number and the two times they were set).
    fn person_filters(&self, steps: &[&Step]) -> u64 {
        let n = steps
            .iter()
            .flat_map(|s| &s.filters)
            .filter(|f| f.source == Source::Person)
            .count() as u64;
        n * 28 * self.persons
    }
}

fn total(ranges: &[Range<usize>]) -> u64 {
    ranges.iter().map(|r| r.len() as u64).sum()
}

impl Query {
    /// An estimate, in bytes, of the heap this query's kernel takes at its peak over `table`
    /// (see the module doc): what the column store makes room for under its memory limit.
    pub fn heap_estimate(&self, table: &Table) -> usize {
        let s = Sizes::new(table);
        let p = s.persons;
        let threads = rayon::current_num_threads().max(1) as u64;
        // `run` resolves merges into one canonical id per id.
        let redirects = 4 * p;
        let person_column = 28 * p;
        let bytes = match self {
            Query::Funnel(q) => {
                let (from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
                let to = to.saturating_add(q.window_seconds.saturating_mul(1_000_000));
                let steps: Vec<&Step> = q.steps.iter().collect();
                // Not validated yet (the kernel does that): a funnel may have no step.
                let first = &steps[..steps.len().min(1)];
                let entered = s.matching(first, from, to).min(p);
                // Conversion times (not in any order): one per person and step reached, in
                // parts and merged.
                let elapsed = match q.order {
                    crate::funnel::Order::Any => 0,
                    _ => 24 * q.steps.len() as u64 * entered,
                };
                let listed = if q.persons.is_some() { 12 * entered } else { 0 };
                let breakdown = match &q.breakdown {
                    Some(b) if b.source == Source::Person => person_column,
                    _ => 0,
                };
                let strict = q.order == crate::funnel::Order::Strict;
                s.grouped(&steps, from, to, strict)
                    + elapsed
                    + listed
                    + breakdown
                    + s.person_filters(&steps)
            }
            Query::Retention(q) => {
                let from = q.from.timestamp_micros();
                let steps = [&q.start_event, &q.return_event];
                s.grouped(&steps, from, i64::MAX, false) + s.person_filters(&steps)
            }
            Query::Trends(q) => {
                let (mut from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
                if q.compare_previous {
                    from = from.saturating_sub(to.saturating_sub(from));
                }
                let rows = s.matching(&[&q.event], from, to);
                // A person (or a sample) per matching row, 16 bytes, in parts and merged (and
                // a margin for the sample's error).
                let per_row = match q.metric {
                    Metric::UniquePersons | Metric::Percentile { .. } => 68 * rows,
                    _ => 0,
                };
                let breakdown = match &q.breakdown {
                    Some(b) if b.source == Source::Person => person_column,
                    _ => 0,
                };
                per_row + breakdown + s.person_filters(&[&q.event])
            }
            // The rows a walk can reach grouped by person, and two per-person offsets.
            Query::Paths(q) => {
                let (from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
                let rows: u64 = crate::paths::reachable(table, q.direction, from, to)
                    .iter()
                    .map(|(r, _)| r.len() as u64)
                    .sum();
                4 * rows + 8 * p + s.person_filters(&[&q.event])
            }
            Query::Stickiness(q) => {
                let (from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
                // (person, period) pairs: in parts filled by pushing, then collected.
                24 * s.matching(&[&q.event], from, to) + s.person_filters(&[&q.event])
            }
            Query::Lifecycle(q) => {
                let (from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
                // One period more in front: at most a month.
                let from = from.saturating_sub(31 * 86_400_000_000);
                let pairs = 24 * s.matching(&[&q.event], from, to);
                // The first time of every person, one array per core and the reduction's.
                let first = 8 * p * (threads + 1);
                pairs + first + s.person_filters(&[&q.event])
            }
            Query::Commerce(q) => {
                let (from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
                // Every visit in range (a person id, in parts filled by pushing), and per
                // buyer ever: a lifetime sum (a hash map per part and merged) and a set.
                let visits = 8 * s.rows(from, to);
                let orders = Step {
                    event: crate::commerce::ORDERED.to_owned(),
                    filters: Vec::new(),
                };
                let buyers = s.matching(&[&orders], i64::MIN, to).min(p);
                visits + 96 * buyers
            }
        };
        (BASE + redirects + bytes) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate runs before the kernel validates the query: invalid queries (no steps,
    /// reversed ranges, unknown events) get an estimate, not a panic, and the kernel's error.
    #[test]
    fn invalid_queries_are_estimated_without_panicking() {
        let mut t = Table::default();
        for i in 0..100 {
            let json = format!(
                r#"{{"type":"track","event":"Viewed","userId":"u{}","timestamp":"2026-05-0{}T10:00:00Z"}}"#,
                i % 7,
                1 + i % 5
            );
            t.push_json(json.as_bytes()).expect("push");
        }
        let days = t.order_hot();
        t.mark_sealed(&days);
        let queries = [
            serde_json::json!({"kind": "funnel", "steps": [], "window_seconds": 60,
                "from": "2026-05-01T00:00:00Z", "to": "2026-05-09T00:00:00Z"}),
            serde_json::json!({"kind": "funnel", "steps": [{"event": "Nope"}], "window_seconds": -5,
                "from": "2026-05-09T00:00:00Z", "to": "2026-05-01T00:00:00Z"}),
            serde_json::json!({"kind": "trends", "event": {"event": "Viewed"}, "interval": "day",
                "metric": {"kind": "unique_persons"}, "compare_previous": true,
                "from": "2026-05-09T00:00:00Z", "to": "2026-05-01T00:00:00Z"}),
            serde_json::json!({"kind": "lifecycle", "interval": "week", "event": {"event": ""},
                "from": "0001-01-01T00:00:00Z", "to": "9999-01-01T00:00:00Z"}),
            serde_json::json!({"kind": "commerce", "from": "2026-05-09T00:00:00Z",
                "to": "2026-05-01T00:00:00Z"}),
        ];
        for q in queries {
            let q: Query = serde_json::from_value(q).expect("parses");
            for table in [&Table::default(), &t] {
                assert!(q.heap_estimate(table) >= BASE as usize);
                // The kernel answers or refuses; neither panics.
                let _ = crate::run(table, &q, chrono_tz::UTC);
            }
        }
    }
}
