//! Each (merged) person's events in time order: what the per-person kernels (funnels,
//! retention) run on.
//!
//! Two sources, combined per person:
//! - the sealed rows covered by the table's person-ordered projection
//!   ([`livora_columnar::ByPerson`]), streamed in person order: used when the query's time
//!   span covers at least a quarter of them (a narrow range scans the time-partitioned rows
//!   instead, skipping whole days);
//! - every other row in the span, grouped per query with a counting sort over the dense
//!   person ids (row order kept).
//!
//! A person's events are ordered by (time, lowest matching step, row): ties in time in step
//! order, as ClickHouse sorts its (time, step) pairs, then arrival order. Identity merges are
//! applied here: a canonical person gathers its projection group, the groups merged into it
//! since the projection was built, and its other rows.
//!
//! Hand-written: this is the hot path of the funnel and retention kernels.

use std::ops::Range;

use livora_columnar::Table;
use livora_columnar::by_person::Merged;
use rayon::prelude::*;

use crate::funnel::Row;

/// Options of one grouping pass.
pub(crate) struct Span {
    /// Events with `from <= ts <= to` are selected.
    pub from: i64,
    pub to: i64,
    /// Keep events that match no step (mask `0`): strict funnels need them.
    pub keep_unmatched: bool,
    /// Give each person's events in order; when false they come in any order (for kernels
    /// that only take minimums and sets, like retention), which saves the merge and sort.
    pub ordered: bool,
}

/// The first row [`per_person`] scans for `from..=to` instead of taking it from the
/// projection: the rows the projection covers when the span holds at least a quarter of
/// them (a narrow range scans its rows instead, skipping whole days: 0).
pub(crate) fn scan_from(t: &Table, from: i64, to: i64) -> usize {
    let covered = t.by_person.covered().min(t.sealed);
    let projected: usize = t
        .chunks
        .iter()
        .filter(|c| c.rows.end <= covered && c.max_ts >= from && c.min_ts <= to)
        .map(|c| c.rows.len())
        .sum();
    if covered > 0 && projected * 4 >= covered {
        covered
    } else {
        0
    }
}

/// Runs `visit(state, person, events)` for every canonical person with selected events, split
/// across cores by person range; returns one state per part. `select(row, name)` gives an
/// event's step mask and value (the name is passed so that projected entries need not read
/// the name column).
pub(crate) fn per_person<P, S, I, V>(
    t: &Table,
    redirects: &[u32],
    span: &Span,
    select: S,
    init: I,
    visit: V,
) -> Vec<P>
where
    P: Send,
    S: Fn(usize, u32) -> (u32, u32) + Sync,
    I: Fn() -> P + Sync,
    V: Fn(&mut P, usize, &mut [Row]) + Sync,
{
    let persons = redirects.len().max(t.persons.len());
    let runs = &t.by_person.runs;
    let scan_from = scan_from(t, span.from, span.to);
    let use_projection = scan_from > 0;
    let ranges: Vec<Range<usize>> = t
        .ranges_within(span.from, span.to)
        .into_iter()
        .filter_map(|r| {
            let r = r.start.max(scan_from)..r.end;
            (!r.is_empty()).then_some(r)
        })
        .collect();

    // The rows outside the projection: selected and grouped by canonical person.
    let parts: Vec<Vec<(u32, u32, Row)>> = crate::parallel::ranges_over(&ranges)
        .into_par_iter()
        .map(|range| {
            let mut out = Vec::new();
            for row in range {
                let ts = t.ts[row];
                if ts < span.from || ts > span.to {
                    continue;
                }
                let (mask, value) = select(row, t.name[row]);
                if mask != 0 || span.keep_unmatched {
                    let p = t.person[row] as usize;
                    let person = redirects.get(p).copied().unwrap_or(p as u32);
                    out.push((person, row as u32, Row { ts, mask, value }));
                }
            }
            out
        })
        .collect();
    let mut rest_start = vec![0u32; persons + 1];
    for (person, _, _) in parts.iter().flatten() {
        rest_start[*person as usize + 1] += 1;
    }
    for i in 1..rest_start.len() {
        rest_start[i] += rest_start[i - 1];
    }
    let empty = Row {
        ts: 0,
        mask: 0,
        value: 0,
    };
    let mut rest = vec![(0u32, empty); rest_start[persons] as usize];
    let mut next = rest_start.clone();
    for (person, row, r) in parts.iter().flatten() {
        let slot = &mut next[*person as usize];
        rest[*slot as usize] = (*row, *r);
        *slot += 1;
    }
    drop(parts);

    // Per run, its groups merged into another person since it was built (usually few).
    let members: Vec<Merged> = if use_projection {
        runs.iter()
            .map(|run| run.merged_since(redirects, persons))
            .collect()
    } else {
        Vec::new()
    };

    crate::parallel::ranges(persons)
        .into_par_iter()
        .map(|range| {
            let mut state = init();
            let mut rows: Vec<Row> = Vec::new();
            let mut ids: Vec<u32> = Vec::new();
            let mut heads: Vec<usize> = Vec::new();
            let mut moved: Vec<Row> = Vec::new();
            // Per source: first and last time, and its rows.
            let mut blocks: Vec<(i64, i64, Range<usize>)> = Vec::new();
            for c in range {
                if redirects.get(c).is_some_and(|r| *r as usize != c) {
                    continue;
                }
                rows.clear();
                ids.clear();
                blocks.clear();
                for (run, members) in runs.iter().zip(&members) {
                    let merged = members.merged_into(c);
                    for m in std::iter::once(c).chain(merged.iter().map(|m| *m as usize)) {
                        let before = rows.len();
                        let e = run.entries(m);
                        gather(
                            span,
                            &select,
                            (&run.ts[e.clone()], &run.row[e.clone()], &run.name[e]),
                            &mut rows,
                            &mut ids,
                        );
                        if rows.len() > before {
                            blocks.push((
                                rows[before].ts,
                                rows[rows.len() - 1].ts,
                                before..rows.len(),
                            ));
                        }
                    }
                }
                let own = &rest[rest_start[c] as usize..rest_start[c + 1] as usize];
                if !own.is_empty() {
                    let before = rows.len();
                    rows.extend(own.iter().map(|(_, r)| *r));
                    if span.ordered {
                        ids.extend(own.iter().map(|(id, _)| *id));
                    }
                    blocks.push((rows[before].ts, rows[rows.len() - 1].ts, before..rows.len()));
                }
                if rows.is_empty() {
                    continue;
                }
                // Each source (block) is in (time, row) order; several are merged into that
                // order (a k-way merge: a person has a few ids, one per anonymous session).
                let disjoint = blocks.windows(2).all(|w| w[0].1 < w[1].0);
                if span.ordered && blocks.len() > 1 && !disjoint {
                    moved.clear();
                    heads.clear();
                    heads.extend(blocks.iter().map(|b| b.2.start));
                    loop {
                        let mut best: Option<((i64, u32), usize)> = None;
                        for (k, b) in blocks.iter().enumerate() {
                            let h = heads[k];
                            if h < b.2.end {
                                let key = (rows[h].ts, ids[h]);
                                if best.is_none_or(|(bk, _)| key < bk) {
                                    best = Some((key, k));
                                }
                            }
                        }
                        let Some((_, k)) = best else { break };
                        moved.push(rows[heads[k]]);
                        heads[k] += 1;
                    }
                    std::mem::swap(&mut rows, &mut moved);
                }
                // Then ties in time in step order: a stable sort keeps rows in order.
                let key = |r: &Row| (r.ts, r.mask.trailing_zeros());
                if span.ordered && !rows.is_sorted_by_key(key) {
                    rows.sort_by_key(key);
                }
                visit(&mut state, c, &mut rows);
            }
            state
        })
        .collect()
}

/// Appends the selected entries of one projection group to `rows` (and their row ids to
/// `ids` when the span is ordered). Out of line so that its loop keeps its few values in
/// registers.
#[inline(never)]
fn gather<S: Fn(usize, u32) -> (u32, u32)>(
    span: &Span,
    select: &S,
    (ts, row, name): (&[i64], &[u32], &[u32]),
    rows: &mut Vec<Row>,
    ids: &mut Vec<u32>,
) {
    let (from, to, keep, ordered) = (span.from, span.to, span.keep_unmatched, span.ordered);
    for ((&ts, &row), &name) in ts.iter().zip(row).zip(name) {
        if ts < from || ts > to {
            continue;
        }
        let (mask, value) = select(row as usize, name);
        if mask != 0 || keep {
            rows.push(Row { ts, mask, value });
            // Row ids only order interleaved sources.
            if ordered {
                ids.push(row);
            }
        }
    }
}
