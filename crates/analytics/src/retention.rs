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
//! The kernel visits each person's matching events in time order ([`crate::grouped`]) and
//! adds the person to the counts matrix directly: no per-person state outlives the visit.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use livora_columnar::Table;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::funnel::{Matcher, Step, StepMasks};
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
pub fn retention(
    t: &Table,
    redirects: &[u32],
    q: &RetentionQuery,
    tz: Tz,
) -> Result<RetentionResult, Error> {
    q.validate()?;
    let n = q.periods;
    let periods = Periods::new(tz, q.period, q.from, n)?;
    let matchers = [
        Matcher::new(t, &q.start_event),
        Matcher::new(t, &q.return_event),
    ];
    let masks = StepMasks::new(t, &matchers);
    let words = n.div_ceil(64);
    let first_cohort = q.cohort == Cohort::First;
    let last = periods.bounds.last().copied().unwrap_or(i64::MIN);
    // Bit 0: a start event; bit 1: a return event.
    let select = |row: usize, name: u32| (masks.mask(t, row, name), 0);
    let span = crate::grouped::Span {
        // A first cohort needs the first start event ever.
        from: if first_cohort {
            i64::MIN
        } else {
            periods.bounds.first().copied().unwrap_or(i64::MIN)
        },
        to: last.saturating_sub(1),
        keep_unmatched: false,
        // Only the earliest start event and the set of return periods count.
        ordered: false,
    };
    // Per core: the matrix of counts, and one person's period bits (starts, returns).
    let parts = crate::grouped::per_person(
        t,
        redirects,
        &span,
        select,
        || (vec![0u64; n * n], vec![0u64; words], vec![0u64; words]),
        |(counts, starts, returns), _, rows| {
            starts.iter_mut().for_each(|w| *w = 0);
            returns.iter_mut().for_each(|w| *w = 0);
            let mut first: Option<i64> = None;
            for r in rows.iter() {
                if r.mask & 1 != 0 {
                    if first_cohort {
                        first = Some(first.map_or(r.ts, |f| f.min(r.ts)));
                    } else if let Some(i) = periods.index(r.ts) {
                        starts[i / 64] |= 1 << (i % 64);
                    }
                }
                if r.mask & 2 != 0
                    && let Some(i) = periods.index(r.ts)
                {
                    returns[i / 64] |= 1 << (i % 64);
                }
            }
            let bit = |v: &[u64], i: usize| v[i / 64] >> (i % 64) & 1 == 1;
            let mut add = |c: usize| {
                for k in 0..n - c {
                    if k == 0 || bit(returns, c + k) {
                        counts[c * n + k] += 1;
                    }
                }
            };
            if first_cohort {
                if let Some(c) = first.and_then(|ts| periods.index(ts)) {
                    add(c);
                }
            } else {
                for c in 0..n {
                    if bit(starts, c) {
                        add(c);
                    }
                }
            }
        },
    );
    let mut counts = vec![vec![0u64; n]; n];
    for (part, _, _) in parts {
        for (c, row) in counts.iter_mut().enumerate() {
            for (k, slot) in row.iter_mut().enumerate() {
                *slot += part[c * n + k];
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

#[cfg(test)]
mod tests;
