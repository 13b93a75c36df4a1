//! The hot, in-memory part of a tenant's events, column by column.
//!
//! One row per event: `person` (dense id, before merges), `ts` (event time, µs since the
//! epoch), `name` (dictionary id of the event name: the `track` event, or `$page`, `$screen`,
//! `$identify`, `$group`, `$alias`). Top-level scalar properties (and traits of `identify`) go
//! to one column per key and type: strings dictionary-encoded (`0` = absent), numbers as `f64`
//! (`NaN` = absent), booleans as the strings `"true"`/`"false"`. Columns are padded lazily:
//! a row past a column's end has no value for it. Page and screen names are the property
//! `$name`.

use std::borrow::Cow;
use std::ops::Range;

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use livora_model::{Event, EventType};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::by_person::ByPerson;
use crate::dict::Dictionary;
use crate::persons::{PersonId, Persons};

/// A string column: `0` = absent, else value id + 1.
pub type StrColumn = Vec<u32>;
/// A number column: `NaN` = absent.
pub type NumColumn = Vec<f64>;

#[derive(Debug)]
pub struct Table {
    pub person: Vec<PersonId>,
    pub ts: Vec<i64>,
    pub name: Vec<u32>,
    pub names: Dictionary,
    pub keys: Dictionary,
    pub values: Dictionary,
    pub strings: HashMap<u32, StrColumn>,
    pub numbers: HashMap<u32, NumColumn>,
    pub persons: Persons,
    /// Events without a person (cannot happen for validated events; counted, not stored).
    pub skipped: u64,
    /// Rows `0..sealed` are in sealed segments (and immutable); the rest is the hot part.
    pub sealed: usize,
    /// The sealed rows, one chunk per segment file, with their time bounds: what queries
    /// use to skip rows outside their range.
    pub chunks: Vec<Chunk>,
    /// The newest event time sealed so far (µs); `i64::MIN` before the first seal.
    pub watermark: i64,
    /// Events that arrived older than [`Table::watermark`]: placed in their own day's
    /// segment at the next seal, and counted here.
    pub late: u64,
    /// The sealed rows ordered by person (see [`ByPerson`]); may cover fewer rows than are
    /// sealed until the store extends it after a seal.
    pub by_person: ByPerson,
}

/// A sealed range of rows and the time span it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub rows: Range<usize>,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            person: Vec::new(),
            ts: Vec::new(),
            name: Vec::new(),
            names: Dictionary::default(),
            keys: Dictionary::default(),
            values: Dictionary::default(),
            strings: HashMap::new(),
            numbers: HashMap::new(),
            persons: Persons::default(),
            skipped: 0,
            sealed: 0,
            chunks: Vec::new(),
            watermark: i64::MIN,
            late: 0,
            by_person: ByPerson::default(),
        }
    }
}

impl Table {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Appends one event.
    pub fn push(&mut self, e: &Event) {
        // Events come from the log as JSON; this path is for callers holding an `Event`.
        if let Ok(json) = serde_json::to_vec(e) {
            let _ = self.push_json(&json);
        }
    }

    /// Appends one event from its stored JSON, reading only the fields the columns need
    /// (strings borrowed, `context` skipped, nested property values skipped).
    pub fn push_json(&mut self, json: &[u8]) -> Result<(), serde_json::Error> {
        let e: View<'_> = serde_json::from_slice(json)?;
        if e.kind == EventType::Alias
            && let (Some(prev), Some(user)) = (e.previous_id.as_deref(), e.user_id.as_deref())
        {
            self.persons.alias(prev, user);
        }
        let Some(person) = self
            .persons
            .resolve(e.user_id.as_deref(), e.anonymous_id.as_deref())
        else {
            self.skipped += 1;
            return Ok(());
        };
        let name = match e.kind {
            EventType::Track => e.event.as_deref().unwrap_or(""),
            EventType::Page => "$page",
            EventType::Screen => "$screen",
            EventType::Identify => "$identify",
            EventType::Group => "$group",
            EventType::Alias => "$alias",
        };
        let row = self.ts.len();
        let ts = e.timestamp.timestamp_micros();
        if ts < self.watermark {
            self.late += 1;
        }
        self.person.push(person);
        self.ts.push(ts);
        let name = self.names.intern(name);
        self.name.push(name);
        if let Some(n) = e.name.as_deref()
            && matches!(e.kind, EventType::Page | EventType::Screen)
        {
            self.set_str(row, "$name", n);
        }
        let props = match e.kind {
            EventType::Identify | EventType::Group => e.traits,
            _ => e.properties,
        };
        if let Some(raw) = props {
            let Props(list) = serde_json::from_str(raw.get())?;
            for (k, v) in list {
                match v {
                    Scalar::Str(s) => self.set_str(row, &k, &s),
                    Scalar::Num(n) => self.set_num(row, &k, n),
                    Scalar::Bool(b) => self.set_str(row, &k, if b { "true" } else { "false" }),
                    Scalar::Other => {}
                }
            }
        }
        Ok(())
    }

    /// Approximate heap bytes held by the columns, dictionaries and persons (capacities, not
    /// lengths; hash-map overhead estimated): what "memory per event" is measured with.
    pub fn heap_bytes(&self) -> usize {
        let vec = |cap: usize, size: usize| cap * size;
        let dict = |d: &Dictionary| d.heap_bytes();
        vec(self.person.capacity(), 4)
            + vec(self.ts.capacity(), 8)
            + vec(self.name.capacity(), 4)
            + dict(&self.names)
            + dict(&self.keys)
            + dict(&self.values)
            + self
                .strings
                .values()
                .map(|c| vec(c.capacity(), 4))
                .sum::<usize>()
            + self
                .numbers
                .values()
                .map(|c| vec(c.capacity(), 8))
                .sum::<usize>()
            + self.persons.heap_bytes()
            + vec(self.chunks.capacity(), std::mem::size_of::<Chunk>())
            + self.by_person.heap_bytes()
    }

    /// Rows not yet sealed.
    pub fn hot_len(&self) -> usize {
        self.len() - self.sealed
    }

    /// The row ranges that may hold events with `from <= ts <= to`: the sealed chunks whose
    /// time span overlaps, and the hot part. Adjacent ranges are joined.
    pub fn ranges_within(&self, from: i64, to: i64) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let hot = self.sealed..self.len();
        let overlapping = self
            .chunks
            .iter()
            .filter(|c| c.max_ts >= from && c.min_ts <= to)
            .map(|c| c.rows.clone());
        for r in overlapping.chain(std::iter::once(hot)) {
            if r.is_empty() {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// Puts the hot rows in segment order: by UTC day, then person, then time (ties keep
    /// arrival order). Returns the row range of each day, in order. Rows move only within
    /// the hot part, so sealed rows and what queries read of them do not change.
    pub fn order_hot(&mut self) -> Vec<Range<usize>> {
        const DAY: i64 = 86_400_000_000;
        let start = self.sealed;
        let len = self.len();
        let day = |ts: i64| ts.div_euclid(DAY);
        let mut order: Vec<u32> = (0..(len - start) as u32).collect();
        order.sort_by_key(|&i| {
            let r = start + i as usize;
            (day(self.ts[r]), self.person[r], self.ts[r])
        });
        if !order.iter().enumerate().all(|(i, &o)| i as u32 == o) {
            permute(&mut self.ts, start, &order);
            permute(&mut self.person, start, &order);
            permute(&mut self.name, start, &order);
            for col in self.strings.values_mut() {
                if col.len() > start {
                    col.resize(len, 0);
                    permute(col, start, &order);
                }
            }
            for col in self.numbers.values_mut() {
                if col.len() > start {
                    col.resize(len, f64::NAN);
                    permute(col, start, &order);
                }
            }
        }
        let mut days: Vec<Range<usize>> = Vec::new();
        for r in start..len {
            match days.last_mut() {
                Some(d) if day(self.ts[d.start]) == day(self.ts[r]) => d.end = r + 1,
                _ => days.push(r..r + 1),
            }
        }
        days
    }

    /// Marks the given ranges (the hot rows, as [`Table::order_hot`] returned them) sealed.
    pub fn mark_sealed(&mut self, ranges: &[Range<usize>]) {
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            let (min_ts, max_ts) = self.ts[r.clone()]
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            self.watermark = self.watermark.max(max_ts);
            self.chunks.push(Chunk {
                rows: r.clone(),
                min_ts,
                max_ts,
            });
            self.sealed = self.sealed.max(r.end);
        }
    }

    /// The string value of property `key` at `row`.
    pub fn str_at(&self, key: u32, row: usize) -> Option<&str> {
        let v = *self.strings.get(&key)?.get(row)?;
        if v == 0 {
            None
        } else {
            self.values.value(v - 1)
        }
    }

    /// The number value of property `key` at `row`.
    pub fn num_at(&self, key: u32, row: usize) -> Option<f64> {
        let v = *self.numbers.get(&key)?.get(row)?;
        (!v.is_nan()).then_some(v)
    }

    fn set_str(&mut self, row: usize, key: &str, value: &str) {
        let k = self.keys.intern(key);
        let v = self.values.intern(value) + 1;
        let col = self.strings.entry(k).or_default();
        col.resize(row, 0);
        col.push(v);
    }

    fn set_num(&mut self, row: usize, key: &str, value: f64) {
        let k = self.keys.intern(key);
        let col = self.numbers.entry(k).or_default();
        col.resize(row, f64::NAN);
        col.push(value);
    }
}

/// Reorders `v[start..]` so that position `i` holds what was at `start + order[i]`.
fn permute<T: Copy>(v: &mut [T], start: usize, order: &[u32]) {
    let tail: Vec<T> = order.iter().map(|&o| v[start + o as usize]).collect();
    v[start..start + tail.len()].copy_from_slice(&tail);
}

/// The fields of a stored event the columns need.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct View<'a> {
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    anonymous_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    previous_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    timestamp: DateTime<Utc>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
}

/// A top-level property value: scalars are kept, objects and arrays skipped.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Scalar<'de>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scalar<'de>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A properties object as (key, scalar) pairs, in order.
struct Props<'a>(Vec<(Cow<'a, str>, Scalar<'a>)>);

impl<'de> Deserialize<'de> for Props<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Props<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Props<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    out.push((k, m.next_value::<Scalar<'de>>()?));
                }
                Ok(Props(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_hold_scalar_properties_by_key_and_type() {
        let mut t = Table::default();
        t.push_json(br#"{"type":"track","event":"Buy","userId":"u","timestamp":"2026-01-01T00:00:00Z","receivedAt":"2026-01-01T00:00:00Z","context":{"big":[1,2,3]},"properties":{"sku":"A\"1","price":9.5,"gift":true,"items":[{"a":1}],"none":null}}"#).expect("push");
        t.push_json(br#"{"type":"page","name":"Home","anonymousId":"a","timestamp":"2026-01-01T00:00:01Z","receivedAt":"2026-01-01T00:00:01Z"}"#).expect("push");
        assert_eq!(t.len(), 2);
        let key = |k: &str| t.keys.get(k).expect("key");
        assert_eq!(t.str_at(key("sku"), 0), Some("A\"1"));
        assert_eq!(t.num_at(key("price"), 0), Some(9.5));
        assert_eq!(t.str_at(key("gift"), 0), Some("true"));
        assert_eq!(t.keys.get("items"), None, "nested values are not columns");
        assert_eq!(t.str_at(key("sku"), 1), None, "padding reads as absent");
        assert_eq!(t.str_at(key("$name"), 1), Some("Home"));
        assert_eq!(t.names.value(t.name[1]), Some("$page"));
        assert!(t.push_json(b"{}").is_err());
    }
}
