//! Calendar periods (hour, day, ISO week, month) in a tenant's time zone, correct across DST.
//!
//! Hours are consecutive 3,600-second spans starting at the local hour that holds `from`
//! (so a 23- or 25-hour DST day has 23 or 25 of them).
//!
//! [`Periods`] computes the UTC instants where each local period starts, once per query, so
//! bucketing an event is a binary search instead of a time-zone conversion.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
}

/// The local date of the period containing `date`.
pub fn period_start(period: Period, date: NaiveDate) -> NaiveDate {
    match period {
        Period::Hour | Period::Day => date,
        Period::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
        Period::Month => date.with_day(1).unwrap_or(date),
    }
}

fn next_start(period: Period, start: NaiveDate) -> NaiveDate {
    match period {
        Period::Hour | Period::Day => start + Duration::days(1),
        Period::Week => start + Duration::days(7),
        Period::Month => start
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(start + Duration::days(31)),
    }
}

/// The UTC instant of local midnight starting `date` (the first valid local time that day,
/// when a DST gap swallows midnight).
fn local_midnight(tz: Tz, date: NaiveDate) -> Result<DateTime<Utc>, Error> {
    let mut t = date
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| Error::Invalid(format!("no midnight on {date}")))?;
    for _ in 0..4 {
        if let Some(local) = tz.from_local_datetime(&t).earliest() {
            return Ok(local.with_timezone(&Utc));
        }
        t += Duration::hours(1);
    }
    Err(Error::Invalid(format!(
        "no valid local time on {date} in {tz}"
    )))
}

/// The start of the local hour holding `t` (offsets are whole quarter hours, so this is
/// `t` truncated to the local hour and taken back to UTC).
fn hour_floor(tz: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Offset;
    let offset = i64::from(t.with_timezone(&tz).offset().fix().local_minus_utc());
    let local = t.timestamp() + offset;
    let floored = local - local.rem_euclid(3600) - offset;
    DateTime::from_timestamp(floored, 0).unwrap_or(t)
}

/// `count` consecutive periods starting with the one containing `from` (in `tz`).
#[derive(Debug, Clone)]
pub struct Periods {
    /// `count + 1` boundaries in µs: period `i` is `[bounds[i], bounds[i + 1])`.
    pub bounds: Vec<i64>,
    pub starts: Vec<DateTime<Utc>>,
    tz: Tz,
    period: Period,
    first_date: NaiveDate,
}

/// The most periods one query may cover.
pub const MAX_PERIODS: usize = 10_000;

impl Periods {
    pub fn new(tz: Tz, period: Period, from: DateTime<Utc>, count: usize) -> Result<Self, Error> {
        if period == Period::Hour {
            return Ok(Self::hours(tz, hour_floor(tz, from), count));
        }
        let first_date = period_start(period, from.with_timezone(&tz).date_naive());
        Self::from_date(tz, period, first_date, count)
    }

    fn from_date(
        tz: Tz,
        period: Period,
        first_date: NaiveDate,
        count: usize,
    ) -> Result<Self, Error> {
        let mut date = first_date;
        let mut starts = Vec::with_capacity(count + 1);
        for _ in 0..=count {
            starts.push(local_midnight(tz, date)?);
            date = next_start(period, date);
        }
        Ok(Self {
            bounds: starts.iter().map(DateTime::timestamp_micros).collect(),
            starts: starts[..count].to_vec(),
            tz,
            period,
            first_date,
        })
    }

    fn hours(tz: Tz, first: DateTime<Utc>, count: usize) -> Self {
        let starts: Vec<DateTime<Utc>> = (0..=count as i64)
            .map(|i| first + Duration::hours(i))
            .collect();
        Self {
            bounds: starts.iter().map(DateTime::timestamp_micros).collect(),
            starts: starts[..count].to_vec(),
            tz,
            period: Period::Hour,
            first_date: first.date_naive(),
        }
    }

    /// The periods from the one containing `from` to the one containing the instant before
    /// `to`.
    pub fn covering(
        tz: Tz,
        period: Period,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Self, Error> {
        if from >= to {
            return Err(Error::Invalid("`from` must be before `to`".into()));
        }
        if period == Period::Hour {
            let first = hour_floor(tz, from);
            let count = (to - first).num_seconds().div_euclid(3600)
                + i64::from((to - first).num_seconds() % 3600 != 0);
            if count as usize > MAX_PERIODS {
                return Err(Error::Invalid(format!(
                    "the range holds more than {MAX_PERIODS} hours; use a longer interval"
                )));
            }
            return Ok(Self::hours(tz, first, count as usize));
        }
        let mut date = period_start(period, from.with_timezone(&tz).date_naive());
        let mut count = 0;
        while local_midnight(tz, date)? < to {
            count += 1;
            if count > MAX_PERIODS {
                return Err(Error::Invalid(format!(
                    "the range holds more than {MAX_PERIODS} {period:?} periods; use a longer interval"
                )));
            }
            date = next_start(period, date);
        }
        Self::new(tz, period, from, count)
    }

    /// The same number of periods immediately before these.
    pub fn previous(&self) -> Result<Self, Error> {
        let count = self.starts.len();
        if self.period == Period::Hour {
            let first = self.starts.first().copied().unwrap_or_else(|| {
                DateTime::from_timestamp_micros(self.bounds[0]).unwrap_or_default()
            });
            return Ok(Self::hours(
                self.tz,
                first - Duration::hours(count as i64),
                count,
            ));
        }
        let first = match self.period {
            Period::Hour | Period::Day => self.first_date - Duration::days(count as i64),
            Period::Week => self.first_date - Duration::days(7 * count as i64),
            Period::Month => self
                .first_date
                .checked_sub_months(chrono::Months::new(count as u32))
                .ok_or_else(|| {
                    Error::Invalid("the previous range is out of the calendar".into())
                })?,
        };
        Self::from_date(self.tz, self.period, first, count)
    }

    /// These periods with one more in front (index 0 is the period just before).
    pub fn previous_one(&self) -> Result<Self, Error> {
        let count = self.starts.len() + 1;
        let first_instant = DateTime::from_timestamp_micros(self.bounds[0])
            .ok_or_else(|| Error::Invalid("the range is out of the calendar".into()))?;
        let first = match self.period {
            Period::Hour => {
                return Ok(Self::hours(
                    self.tz,
                    first_instant - Duration::hours(1),
                    count,
                ));
            }
            Period::Day => self.first_date - Duration::days(1),
            Period::Week => self.first_date - Duration::days(7),
            Period::Month => self
                .first_date
                .checked_sub_months(chrono::Months::new(1))
                .ok_or_else(|| Error::Invalid("the range is out of the calendar".into()))?,
        };
        Self::from_date(self.tz, self.period, first, count)
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The period index of `ts_us`, if inside.
    pub fn index(&self, ts_us: i64) -> Option<usize> {
        let first = *self.bounds.first()?;
        let last = *self.bounds.last()?;
        if ts_us < first || ts_us >= last {
            return None;
        }
        Some(self.bounds.partition_point(|b| *b <= ts_us) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_follow_dst_in_the_tenant_zone() {
        let tz: Tz = "Europe/Paris".parse().expect("tz");
        let from: DateTime<Utc> = "2026-03-28T12:00:00Z".parse().expect("time");
        let p = Periods::new(tz, Period::Day, from, 3).expect("periods");
        // 28 March is 24 h, 29 March (clocks go forward) is 23 h.
        let hours: Vec<i64> = p
            .bounds
            .windows(2)
            .map(|w| (w[1] - w[0]) / 3_600_000_000)
            .collect();
        assert_eq!(hours, vec![24, 23, 24]);
        assert_eq!(p.starts[0].to_rfc3339(), "2026-03-27T23:00:00+00:00");
        // 23:30 UTC on 28 March is already 29 March in Paris.
        let t: DateTime<Utc> = "2026-03-28T23:30:00Z".parse().expect("time");
        assert_eq!(p.index(t.timestamp_micros()), Some(1));
    }

    #[test]
    fn covering_and_previous_ranges() {
        let tz: Tz = "UTC".parse().expect("tz");
        let from: DateTime<Utc> = "2026-03-10T10:00:00Z".parse().expect("time");
        let to: DateTime<Utc> = "2026-03-13T00:00:00Z".parse().expect("time");
        let p = Periods::covering(tz, Period::Day, from, to).expect("periods");
        assert_eq!(p.len(), 3, "10, 11, 12 March");
        let prev = p.previous().expect("previous");
        assert_eq!(prev.starts[0].to_rfc3339(), "2026-03-07T00:00:00+00:00");
        assert_eq!(prev.bounds.last(), p.bounds.first());
        assert!(Periods::covering(tz, Period::Day, to, from).is_err());
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let tz: Tz = "UTC".parse().expect("tz");
        let from: DateTime<Utc> = "2026-01-15T10:00:00Z".parse().expect("time"); // a Thursday
        let w = Periods::new(tz, Period::Week, from, 2).expect("periods");
        assert_eq!(w.starts[0].to_rfc3339(), "2026-01-12T00:00:00+00:00");
        let m = Periods::new(tz, Period::Month, from, 2).expect("periods");
        assert_eq!(m.starts[1].to_rfc3339(), "2026-02-01T00:00:00+00:00");
        assert_eq!(m.index(from.timestamp_micros()), Some(0));
        assert_eq!(m.index(0), None);
    }
}
