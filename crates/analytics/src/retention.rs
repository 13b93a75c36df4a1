//! Retention: of the persons who did the start event in a period, how many did the return
//! event 1, 2, … periods later.
//!
//! - `cohort: first` (default): a person belongs to the period of their first start event
//!   ever (not just in range); persons whose first start event lies before `from` are in no
//!   cohort.
//! - `cohort: any`: a person belongs to every period in which they did the start event.
//!
//! Periods are days, ISO weeks or months in the tenant's time zone ([`crate::period`]).
//! `counts[0]` is the cohort's size; `counts[k]` is how many of them did the return event in
//! the k-th period after their cohort's. Persons are merged identities.
//!
//! The kernel keeps per-person state in flat arrays indexed by canonical person id (first
//! start time, bitsets of periods), one pass over the table, no sort.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use livora_columnar::Table;
use serde::{Deserialize, Serialize};

use rayon::prelude::*;

use crate::Error;
use crate::funnel::{Matcher, Step};
use crate::period::{Period, Periods};

/// The most periods a retention query may span.
pub const MAX_RETENTION_PERIODS: usize = 370;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cohort {
    #[default]
    First,
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionQuery {
    pub start_event: Step,
    pub return_event: Step,
    pub period: Period,
    /// How many periods, starting with the one containing `from`.
    pub periods: usize,
    pub from: DateTime<Utc>,
    #[serde(default)]
    pub cohort: Cohort,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionResult {
    pub cohorts: Vec<CohortRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortRow {
    /// Start of the cohort's period (local midnight, as UTC).
    pub start: DateTime<Utc>,
    pub size: u64,
    /// `counts[k]`: persons active in the k-th period after the cohort's (`counts[0] = size`).
    pub counts: Vec<u64>,
    /// `counts[k] / size` (0 when the cohort is empty).
    pub percentages: Vec<f64>,
}

impl RetentionQuery {
    fn validate(&self) -> Result<(), Error> {
        self.start_event.validate("`start_event`")?;
        self.return_event.validate("`return_event`")?;
        if !(1..=MAX_RETENTION_PERIODS).contains(&self.periods) {
            return Err(Error::Invalid(format!(
                "`periods` must be between 1 and {MAX_RETENTION_PERIODS}"
            )));
        }
        Ok(())
    }
}

/// Runs a retention query over a tenant's table in time zone `tz`.
// The person loop indexes several flat per-person arrays at once.
#[allow(clippy::needless_range_loop)]
pub fn retention(
    t: &Table,
    redirects: &[u32],
    q: &RetentionQuery,
    tz: Tz,
) -> Result<RetentionResult, Error> {
    q.validate()?;
    let n = q.periods;
    let periods = Periods::new(tz, q.period, q.from, n)?;
    let start = Matcher::new(t, &q.start_event);
    let back = Matcher::new(t, &q.return_event);
    let persons = redirects.len().max(t.persons.len());
    let words = n.div_ceil(64);
    let first_cohort = q.cohort == Cohort::First;
    // One pass over the rows, split across cores; each part keeps flat per-person state,
    // merged afterwards (minimum of first times, union of period bits).
    let parts: Vec<State> = crate::parallel::per_core(t.len())
        .into_par_iter()
        .map(|range| {
            let mut st = State::new(persons, words, first_cohort);
            for row in range {
                let is_start = start.matches(t, row);
                let is_return = back.matches(t, row);
                if !is_start && !is_return {
                    continue;
                }
                let ts = t.ts[row];
                let p = t.person[row] as usize;
                let person = redirects.get(p).map_or(p, |r| *r as usize);
                if is_start {
                    if first_cohort {
                        st.first[person] = st.first[person].min(ts);
                    } else if let Some(i) = periods.index(ts) {
                        st.starts[person * words + i / 64] |= 1 << (i % 64);
                    }
                }
                if is_return && let Some(i) = periods.index(ts) {
                    st.returns[person * words + i / 64] |= 1 << (i % 64);
                }
            }
            st
        })
        .collect();
    let mut parts = parts.into_iter();
    let mut st = parts
        .next()
        .unwrap_or_else(|| State::new(persons, words, first_cohort));
    for other in parts {
        st.merge(&other);
    }
    let State {
        first,
        starts,
        returns,
    } = st;
    let bit = |v: &[u64], person: usize, i: usize| v[person * words + i / 64] >> (i % 64) & 1 == 1;
    let mut counts = vec![vec![0u64; n]; n];
    for person in 0..persons {
        let mut add = |c: usize| {
            for (k, slot) in counts[c].iter_mut().enumerate().take(n - c) {
                if k == 0 || bit(&returns, person, c + k) {
                    *slot += 1;
                }
            }
        };
        match q.cohort {
            Cohort::First => {
                if first[person] != i64::MAX
                    && let Some(c) = periods.index(first[person])
                {
                    add(c);
                }
            }
            Cohort::Any => {
                for c in 0..n {
                    if bit(&starts, person, c) {
                        add(c);
                    }
                }
            }
        }
    }
    let cohorts = counts
        .into_iter()
        .enumerate()
        .map(|(c, mut row)| {
            row.truncate(n - c);
            let size = row[0];
            CohortRow {
                start: periods.starts[c],
                size,
                percentages: row
                    .iter()
                    .map(|k| {
                        if size == 0 {
                            0.0
                        } else {
                            *k as f64 / size as f64
                        }
                    })
                    .collect(),
                counts: row,
            }
        })
        .collect();
    Ok(RetentionResult { cohorts })
}

/// Per-person state of one part of the scan.
struct State {
    /// First start event time (`i64::MAX`: none), for `cohort: first`.
    first: Vec<i64>,
    /// Periods with a start event, for `cohort: any`.
    starts: Vec<u64>,
    /// Periods with a return event.
    returns: Vec<u64>,
}

impl State {
    fn new(persons: usize, words: usize, first_cohort: bool) -> Self {
        Self {
            first: vec![i64::MAX; if first_cohort { persons } else { 0 }],
            starts: vec![0; if first_cohort { 0 } else { persons * words }],
            returns: vec![0; persons * words],
        }
    }

    fn merge(&mut self, other: &State) {
        for (a, b) in self.first.iter_mut().zip(&other.first) {
            *a = (*a).min(*b);
        }
        for (a, b) in self.starts.iter_mut().zip(&other.starts) {
            *a |= *b;
        }
        for (a, b) in self.returns.iter_mut().zip(&other.returns) {
            *a |= *b;
        }
    }
}

#[cfg(test)]
mod tests;
