//! Fast RFC 3339 formatting and parsing of UTC times, for the hot paths that write and read
//! every event (hand-written: chrono's general parser is a fifth of the work of reading an
//! event back from the log).
//!
//! [`format`] writes exactly what chrono's serde impl writes (`2026-01-02T03:04:05.123456789Z`,
//! with 0, 3, 6 or 9 fractional digits) without going through `core::fmt`. [`parse`] reads
//! that form (any 1-9 fractional digits) directly and hands everything else (offsets, leap
//! seconds, other years) to chrono. Property tests compare both with chrono.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub fn format(t: &DateTime<Utc>) -> String {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    }
    let mut b = [0u8; 30];
    let put = |b: &mut [u8], at: usize, width: usize, mut v: u32| {
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut b, 0, 4, year as u32);
    b[4] = b'-';
    put(&mut b, 5, 2, t.month());
    b[7] = b'-';
    put(&mut b, 8, 2, t.day());
    b[10] = b'T';
    put(&mut b, 11, 2, t.hour());
    b[13] = b':';
    put(&mut b, 14, 2, t.minute());
    b[16] = b':';
    // A leap second is carried in the nanoseconds (>= 1e9): chrono prints second 60.
    let nanos = t.nanosecond();
    let (second, nanos) = if nanos >= 1_000_000_000 {
        (t.second() + 1, nanos - 1_000_000_000)
    } else {
        (t.second(), nanos)
    };
    put(&mut b, 17, 2, second);
    let mut len = 19;
    if nanos != 0 {
        b[19] = b'.';
        let (digits, value) = if nanos % 1_000_000 == 0 {
            (3, nanos / 1_000_000)
        } else if nanos % 1_000 == 0 {
            (6, nanos / 1_000)
        } else {
            (9, nanos)
        };
        put(&mut b, 20, digits, value);
        len = 20 + digits;
    }
    b[len] = b'Z';
    String::from_utf8_lossy(&b[..=len]).into_owned()
}

/// `text` as a UTC time, as chrono's `DateTime<Utc>::from_str` (what its serde impl uses)
/// reads it.
pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match parse_canonical(text.as_bytes()) {
        Some(t) => Ok(t),
        None => text.parse(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` with a valid date and a second below 60, else `None`.
fn parse_canonical(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20 || b.len() > 30 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |at: usize, width: usize| -> Option<u32> {
        b[at..at + width].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let nanos = match b.len() {
        20 => 0,
        22..=30 if b[19] == b'.' => {
            let digits = b.len() - 21;
            num(20, digits)? * 10u32.pow(9 - digits as u32)
        }
        _ => return None,
    };
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let (y, m, d) = (i64::from(year), i64::from(month), i64::from(day));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    DateTime::from_timestamp(secs, nanos)
}

/// Reads a time as chrono's serde impl does (see [`parse`]), without copying the text.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(TimeVisitor)
}

/// As [`deserialize`], for an optional time (`null`: `None`).
pub fn deserialize_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(Option::<Time>::deserialize(d)?.map(|t| t.0))
}

struct Time(DateTime<Utc>);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(Time)
    }
}

struct TimeVisitor;

impl serde::de::Visitor<'_> for TimeVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an RFC 3339 date and time")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse(text).map_err(E::custom)
    }
}

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(t))
}

pub fn serialize_option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Cheap cases; many, so that every branch of the near-canonical text is met.
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn matches_chrono(secs in -62_167_219_200i64..253_402_300_799, nanos in 0u32..1_000_000_000, round in 0u8..4) {
            let nanos = match round { 0 => 0, 1 => nanos / 1_000_000 * 1_000_000, 2 => nanos / 1000 * 1000, _ => nanos };
            let t = DateTime::from_timestamp(secs, nanos).expect("in range");
            prop_assert_eq!(format(&t), serde_json::to_value(t).expect("chrono").as_str().expect("str").to_owned());
        }

        /// What `format` writes reads back as the same instant, as chrono reads it.
        #[test]
        fn parses_what_it_writes(secs in -62_167_219_200i64..253_402_300_799, nanos in 0u32..1_000_000_000, round in 0u8..4) {
            let nanos = match round { 0 => 0, 1 => nanos / 1_000_000 * 1_000_000, 2 => nanos / 1000 * 1000, _ => nanos };
            let t = DateTime::from_timestamp(secs, nanos).expect("in range");
            let text = format(&t);
            prop_assert!(parse_canonical(text.as_bytes()).is_some());
            prop_assert_eq!(parse(&text), Ok(t));
            prop_assert_eq!(parse(&text), text.parse::<DateTime<Utc>>());
        }

        /// Near-canonical text (bad days, hours, digits, lengths, offsets) reads as chrono
        /// reads it, error or not.
        #[test]
        fn parses_as_chrono_does(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..26, mi in 0u32..62,
            s in 0u32..62, frac in "[0-9]{0,10}", end in prop::sample::select(vec!["Z", "z", "+00:00", "-01:30", "", "ZZ"]),
            sep in prop::sample::select(vec!["T", " ", "t"]),
        ) {
            let dot = if frac.is_empty() { String::new() } else { format!(".{frac}") };
            let text = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{dot}{end}");
            let ours = parse(&text).ok();
            let chrono = text.parse::<DateTime<Utc>>().ok();
            prop_assert_eq!(ours, chrono, "{}", text);
        }
    }

    #[test]
    fn deserializes_as_chrono_does() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "deserialize")]
            a: DateTime<Utc>,
            #[serde(default, deserialize_with = "deserialize_option")]
            b: Option<DateTime<Utc>>,
        }
        let t: T =
            serde_json::from_str(r#"{"a": "2026-02-28T23:59:59.5Z", "b": null}"#).expect("reads");
        assert_eq!(
            t.a,
            "2026-02-28T23:59:59.500Z"
                .parse::<DateTime<Utc>>()
                .expect("chrono")
        );
        assert_eq!(t.b, None);
        let t: T = serde_json::from_str(
            r#"{"a": "2026-03-01T01:00:00+01:00", "b": "2024-02-29T00:00:00Z"}"#,
        )
        .expect("reads");
        assert_eq!(t.a.to_rfc3339(), "2026-03-01T00:00:00+00:00");
        assert!(t.b.is_some());
        assert!(serde_json::from_str::<T>(r#"{"a": "2026-02-29T00:00:00Z"}"#).is_err());
    }
}
