//! Trends: a metric of an event per day, ISO week or month in the tenant's time zone, with an
//! optional breakdown by a property (top N values and `$other`) and the previous range for
//! comparison.
//!
//! Metrics: `count` (events), `unique_persons` (merged identities), and `sum`, `avg`, `min`,
//! `max` of a numeric property (events without a number there are skipped by those). The
//! range is whole periods: from the one containing `from` to the one containing the instant
//! before `to`. Buckets with no value give `0` for count, unique persons and sum, and `null`
//! for avg, min and max.
//!
//! Breakdown values are ranked by event count (ties: by value); events without the property
//! form the series with `breakdown: null`. The scan is split across cores by row range; each
//! part keeps per-(series, period) accumulators in flat vectors.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use livora_columnar::Table;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::funnel::{Matcher, Source, Step};
use crate::period::{Period, Periods};
use crate::person_props::PersonColumn;

/// The most breakdown series returned.
pub const MAX_BREAKDOWN: usize = 100;
/// The most distinct breakdown values a query may meet.
pub const MAX_SERIES: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendsQuery {
    pub event: Step,
    pub metric: Metric,
    pub interval: Period,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    #[serde(default)]
    pub compare_previous: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Metric {
    Count,
    UniquePersons,
    Sum {
        property: String,
    },
    Avg {
        property: String,
    },
    Min {
        property: String,
    },
    Max {
        property: String,
    },
    /// The `percentile` (0 to 100) of a numeric property, interpolated between the two
    /// nearest values (DuckDB's `quantile_cont`, ClickHouse's `quantileExactInclusive`).
    Percentile {
        property: String,
        percentile: f64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    pub property: String,
    #[serde(default)]
    pub source: Source,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    10
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendsResult {
    pub buckets: Vec<DateTime<Utc>>,
    pub series: Vec<Series>,
    /// The same number of periods just before, when `compare_previous` is set.
    pub previous: Option<Box<TrendsResult>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The breakdown value; `null` for events without the property (or without a breakdown);
    /// `$other` for the values beyond the limit.
    pub breakdown: Option<String>,
    pub values: Vec<Option<f64>>,
    pub total: Option<f64>,
}

/// One (series, period) cell.
#[derive(Debug, Clone, Copy)]
struct Acc {
    events: u64,
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Acc {
    fn default() -> Self {
        Self {
            events: 0,
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Acc {
    fn merge(&mut self, o: &Acc) {
        self.events += o.events;
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// What one part of the scan found: cells per series (series 0 = no value, then value id + 1
/// in order of appearance), and (series, period, person) triples for unique counts.
#[derive(Default)]
struct Part {
    series_of_value: hashbrown::HashMap<u32, usize>,
    values: Vec<Option<u32>>,
    cells: Vec<Vec<Acc>>,
    persons: Vec<(usize, u32, u32)>,
    /// (series, bucket, value) for percentiles.
    samples: Vec<(usize, u32, f64)>,
}

impl TrendsQuery {
    fn validate(&self) -> Result<(), Error> {
        self.event.validate("`event`")?;
        if let Some(b) = &self.breakdown
            && !(1..=MAX_BREAKDOWN).contains(&b.limit)
        {
            return Err(Error::Invalid(format!(
                "`breakdown.limit` must be between 1 and {MAX_BREAKDOWN}"
            )));
        }
        match &self.metric {
            Metric::Sum { property }
            | Metric::Avg { property }
            | Metric::Min { property }
            | Metric::Max { property }
            | Metric::Percentile { property, .. }
                if property.is_empty() =>
            {
                Err(Error::Invalid("the metric needs a `property`".into()))
            }
            Metric::Percentile { percentile, .. } if !(0.0..=100.0).contains(percentile) => Err(
                Error::Invalid("`percentile` must be between 0 and 100".into()),
            ),
            _ => Ok(()),
        }
    }
}

pub fn trends(
    t: &Table,
    redirects: &[u32],
    q: &TrendsQuery,
    tz: Tz,
) -> Result<TrendsResult, Error> {
    q.validate()?;
    let periods = Periods::covering(tz, q.interval, q.from, q.to)?;
    let mut result = run(t, redirects, q, &periods)?;
    if q.compare_previous {
        result.previous = Some(Box::new(run(t, redirects, q, &periods.previous()?)?));
    }
    Ok(result)
}

fn run(
    t: &Table,
    redirects: &[u32],
    q: &TrendsQuery,
    periods: &Periods,
) -> Result<TrendsResult, Error> {
    let matcher = Matcher::new(t, &q.event);
    let number_key = match &q.metric {
        Metric::Sum { property }
        | Metric::Avg { property }
        | Metric::Min { property }
        | Metric::Max { property }
        | Metric::Percentile { property, .. } => Some(t.keys.get(property)),
        _ => None,
    };
    let breakdown_key = q
        .breakdown
        .as_ref()
        .filter(|b| b.source == Source::Event)
        .map(|b| t.keys.get(&b.property));
    let person_breakdown = q
        .breakdown
        .as_ref()
        .filter(|b| b.source == Source::Person)
        .map(|b| PersonColumn::build(t, redirects, &b.property));
    // The columns themselves, looked up once, not per row.
    let breakdown_col = breakdown_key.flatten().and_then(|k| t.strings.get(&k));
    let number_col = number_key.flatten().and_then(|k| t.numbers.get(&k));
    let unique = q.metric == Metric::UniquePersons;
    let sampled = matches!(q.metric, Metric::Percentile { .. });
    let buckets = periods.len();
    let (first, last) = (
        periods.bounds.first().copied().unwrap_or(0),
        periods.bounds.last().copied().unwrap_or(0),
    );
    let parts: Vec<Result<Part, Error>> = crate::parallel::ranges_over(&t.ranges_with(
        first,
        last - 1,
        Some(matcher.names()),
    ))
        .into_par_iter()
        .map(|range| {
            let mut part = Part::default();
            for row in matcher.rows(t, range) {
                let Some(bucket) = periods.index(t.ts[row]) else {
                    continue;
                };
                let value = match &person_breakdown {
                    Some(col) => {
                        let p = t.person[row] as usize;
                        let c = redirects.get(p).copied().unwrap_or(p as u32) as usize;
                        col.strs.get(c).copied()
                    }
                    None => breakdown_col.and_then(|c| c.get(row)),
                }
                .filter(|v| *v != 0);
                // Key 0 is "no value"; a value is its id + 1, as in the string column.
                let key = value.unwrap_or(0);
                let series = match part.series_of_value.get(&key) {
                    Some(s) => *s,
                    None => {
                        if part.values.len() >= MAX_SERIES {
                            return Err(Error::Invalid(format!(
                                "the breakdown property has more than {MAX_SERIES} values; filter the event first"
                            )));
                        }
                        part.values.push(value.map(|v| v - 1));
                        part.cells.push(vec![Acc::default(); buckets]);
                        part.series_of_value.insert(key, part.values.len() - 1);
                        part.values.len() - 1
                    }
                };
                let cell = &mut part.cells[series][bucket];
                cell.events += 1;
                if let Some(x) = number_col
                    .and_then(|c| c.get(row))
                    .filter(|x| !x.is_nan())
                {
                    cell.n += 1;
                    cell.sum += x;
                    cell.min = cell.min.min(x);
                    cell.max = cell.max.max(x);
                    if sampled {
                        part.samples.push((series, bucket as u32, x));
                    }
                }
                if unique {
                    let p = t.person[row] as usize;
                    let person = redirects.get(p).copied().unwrap_or(p as u32);
                    part.persons.push((series, bucket as u32, person));
                }
            }
            Ok(part)
        })
        .collect();

    // Merge the parts by breakdown value.
    let mut index: hashbrown::HashMap<Option<u32>, usize> = hashbrown::HashMap::new();
    let mut values: Vec<Option<u32>> = Vec::new();
    let mut cells: Vec<Vec<Acc>> = Vec::new();
    let mut persons: Vec<(usize, u32, u32)> = Vec::new();
    let mut samples: Vec<(usize, u32, f64)> = Vec::new();
    for part in parts {
        let part = part?;
        let mut map = Vec::with_capacity(part.values.len());
        for (s, v) in part.values.iter().enumerate() {
            let target = *index.entry(*v).or_insert_with(|| {
                values.push(*v);
                cells.push(vec![Acc::default(); buckets]);
                values.len() - 1
            });
            for (a, b) in cells[target].iter_mut().zip(&part.cells[s]) {
                a.merge(b);
            }
            map.push(target);
        }
        persons.extend(part.persons.iter().map(|(s, b, p)| (map[*s], *b, *p)));
        samples.extend(part.samples.iter().map(|(s, b, x)| (map[*s], *b, *x)));
    }

    // Rank: by event count, then value; keep the top `limit`, fold the rest into `$other`.
    let events = |s: usize| cells[s].iter().map(|c| c.events).sum::<u64>();
    let name = |v: Option<u32>| v.and_then(|v| t.values.value(v)).map(str::to_owned);
    let mut order: Vec<usize> = (0..values.len()).filter(|s| values[*s].is_some()).collect();
    order.sort_by(|a, b| {
        events(*b)
            .cmp(&events(*a))
            .then_with(|| name(values[*a]).cmp(&name(values[*b])))
    });
    let limit = q.breakdown.as_ref().map_or(usize::MAX, |b| b.limit);
    // Output series: the kept values, then `$other`, then the no-value series.
    let mut out_of: Vec<Option<usize>> = vec![None; values.len()];
    let mut labels: Vec<Option<String>> = Vec::new();
    for (rank, s) in order.iter().enumerate() {
        if rank < limit {
            out_of[*s] = Some(labels.len());
            labels.push(name(values[*s]));
        }
    }
    if order.len() > limit {
        let other = labels.len();
        labels.push(Some("$other".into()));
        for s in &order[limit..] {
            out_of[*s] = Some(other);
        }
    }
    if let Some(none) = values.iter().position(Option::is_none) {
        out_of[none] = Some(labels.len());
        labels.push(None);
    }
    let mut merged = vec![vec![Acc::default(); buckets]; labels.len()];
    for (s, target) in out_of.iter().enumerate() {
        if let Some(target) = target {
            for (a, b) in merged[*target].iter_mut().zip(&cells[s]) {
                a.merge(b);
            }
        }
    }
    // Unique persons per (series, bucket) and per series over the range.
    let mut per_cell = vec![vec![0u64; buckets]; labels.len()];
    let mut per_series = vec![0u64; labels.len()];
    if unique {
        let mut triples: Vec<(usize, u32, u32)> = persons
            .iter()
            .filter_map(|(s, b, p)| out_of[*s].map(|o| (o, *b, *p)))
            .collect();
        triples.par_sort_unstable();
        triples.dedup();
        for (s, b, _) in &triples {
            per_cell[*s][*b as usize] += 1;
        }
        let mut pairs: Vec<(usize, u32)> = triples.iter().map(|(s, _, p)| (*s, *p)).collect();
        pairs.par_sort_unstable();
        pairs.dedup();
        for (s, _) in pairs {
            per_series[s] += 1;
        }
    }
    // Percentiles per (series, bucket) and per series over the range.
    let mut pct_cell = vec![vec![None; buckets]; labels.len()];
    let mut pct_series = vec![None; labels.len()];
    if let Metric::Percentile { percentile, .. } = q.metric {
        let mut by_cell: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); buckets]; labels.len()];
        for (s, b, x) in &samples {
            if let Some(o) = out_of[*s] {
                by_cell[o][*b as usize].push(*x);
            }
        }
        for (o, row) in by_cell.iter_mut().enumerate() {
            let mut all = Vec::new();
            for (b, xs) in row.iter_mut().enumerate() {
                all.extend_from_slice(xs);
                pct_cell[o][b] = quantile(xs, percentile / 100.0);
            }
            pct_series[o] = quantile(&mut all, percentile / 100.0);
        }
    }
    let series = labels
        .into_iter()
        .enumerate()
        .map(|(s, breakdown)| {
            let row = &merged[s];
            let mut all = Acc::default();
            for c in row {
                all.merge(c);
            }
            let value = |c: &Acc, unique_count: u64, pct: Option<f64>| -> Option<f64> {
                match q.metric {
                    Metric::Percentile { .. } => pct,
                    Metric::Count => Some(c.events as f64),
                    Metric::UniquePersons => Some(unique_count as f64),
                    Metric::Sum { .. } => Some(c.sum),
                    Metric::Avg { .. } => (c.n > 0).then(|| c.sum / c.n as f64),
                    Metric::Min { .. } => (c.n > 0).then_some(c.min),
                    Metric::Max { .. } => (c.n > 0).then_some(c.max),
                }
            };
            Series {
                breakdown,
                values: row
                    .iter()
                    .enumerate()
                    .map(|(b, c)| value(c, per_cell[s][b], pct_cell[s][b]))
                    .collect(),
                total: value(&all, per_series[s], pct_series[s]),
            }
        })
        .collect();
    Ok(TrendsResult {
        buckets: periods.starts.clone(),
        series,
        previous: None,
    })
}

/// The `q` quantile (0 to 1) of `xs`, interpolated linearly between closest ranks.
pub(crate) fn quantile(xs: &mut [f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_unstable_by(f64::total_cmp);
    let pos = q * (xs.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests;
