//! Fast RFC 3339 formatting of UTC times for the ingestion hot path.
//!
//! Writes exactly what chrono's serde impl writes (`2026-01-02T03:04:05.123456789Z`, with 0, 3,
//! 6 or 9 fractional digits) without going through `core::fmt`; a property test compares the
//! two. Years outside 0..=9999 fall back to chrono.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

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
        #[test]
        fn matches_chrono(secs in -62_167_219_200i64..253_402_300_799, nanos in 0u32..1_000_000_000, round in 0u8..4) {
            let nanos = match round { 0 => 0, 1 => nanos / 1_000_000 * 1_000_000, 2 => nanos / 1000 * 1000, _ => nanos };
            let t = DateTime::from_timestamp(secs, nanos).expect("in range");
            prop_assert_eq!(format(&t), serde_json::to_value(t).expect("chrono").as_str().expect("str").to_owned());
        }
    }
}
