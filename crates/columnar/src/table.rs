//! The hot, in-memory part of a tenant's events, column by column.
//!
//! One row per event: `person` (dense id, before merges), `ts` (event time, µs since the
//! epoch), `name` (dictionary id of the event name: the `track` event, or `$page`, `$screen`,
//! `$identify`, `$group`, `$alias`). Top-level scalar properties (and traits of `identify`) go
//! to one column per key and type: strings dictionary-encoded (`0` = absent), numbers as `f64`
//! (`NaN` = absent), booleans as the strings `"true"`/`"false"`. Columns are padded lazily:
//! a row past a column's end has no value for it. Page and screen names are the property
//! `$name`.
//!
//! The objects of an event's `products` array (the line items of Segment's e-commerce events,
//! such as `Order Completed`) are [`Lines`]: one line each, tied to the event's row, with their
//! scalar fields as columns in the same dictionaries.

use std::borrow::Cow;
use std::ops::Range;

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use livora_model::{Event, EventType};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use std::sync::Arc;

use crate::by_person::ByPerson;
use crate::coded::Coded;
use crate::column::{Column, Plain, Spill};
use crate::dict::Dictionary;
use crate::image::{Source, Written};
use crate::persons::{PersonId, Persons};

/// A string property column: value id + 1 for the rows that have one.
pub type StrColumn = Coded<u32>;
/// A number property column.
pub type NumColumn = Coded<f64>;

#[derive(Debug)]
pub struct Table {
    pub person: Column<PersonId>,
    pub ts: Column<i64>,
    pub name: Column<u32>,
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
    /// Line items of the events' `products` arrays.
    pub lines: Lines,
    /// Where columns go once large (`None`: they stay on the heap). Set before the first
    /// row ([`Table::with_spill`]).
    pub spill: Option<Arc<Spill>>,
    /// The segments the sealed rows came from, in row order (what an image of the table
    /// holds, see [`crate::image`]).
    pub sources: Vec<Source>,
    /// How much of the dictionaries the table's image files hold.
    pub image: Written,
}

/// How much an event name is used (see [`Table::names_within`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameUse {
    pub name: String,
    pub count: u64,
    /// The newest event's time (µs since the epoch).
    pub last_ts: i64,
}

/// Line items: the objects of events' `products` arrays, one line each, in row order (an
/// event's lines in array order). Columns as the table's: keyed by `keys`, strings as
/// `values` ids + 1 (`0` = absent), numbers `NaN` = absent, padded lazily.
#[derive(Debug, Default)]
pub struct Lines {
    /// The event row of each line, ascending.
    pub row: Column<u32>,
    pub strings: HashMap<u32, StrColumn>,
    pub numbers: HashMap<u32, NumColumn>,
}

impl Lines {
    pub fn len(&self) -> usize {
        self.row.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }

    /// The lines of event row `row`.
    pub fn of_row(&self, row: usize) -> Range<usize> {
        let row = row as u32;
        self.row.partition_point(|r| *r < row)..self.row.partition_point(|r| *r <= row)
    }

    /// The number value of field `key` on line `line`.
    pub fn num_at(&self, key: u32, line: usize) -> Option<f64> {
        self.numbers.get(&key)?.get(line)
    }

    /// The string value id + 1 of field `key` on line `line` (`0`: none).
    pub fn str_id(&self, key: u32, line: usize) -> u32 {
        self.strings
            .get(&key)
            .and_then(|c| c.get(line))
            .unwrap_or(0)
    }

    fn heap_bytes(&self) -> usize {
        self.row.heap_bytes()
            + self.strings.values().map(Coded::heap_bytes).sum::<usize>()
            + self.numbers.values().map(Coded::heap_bytes).sum::<usize>()
    }
}

/// A sealed range of rows and the time span it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub rows: Range<usize>,
    pub min_ts: i64,
    pub max_ts: i64,
    /// The event names (ids) of its rows, sorted: what lets a query for some events skip
    /// the chunks without them.
    pub names: Vec<u32>,
}

impl Chunk {
    /// Whether any row of the chunk has one of `names`.
    pub fn has_any(&self, names: &[u32]) -> bool {
        names.iter().any(|n| self.names.binary_search(n).is_ok())
    }
}

impl Default for Table {
    fn default() -> Self {
        Self {
            person: Column::default(),
            ts: Column::default(),
            name: Column::default(),
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
            lines: Lines::default(),
            spill: None,
            sources: Vec::new(),
            image: Written::default(),
        }
    }
}

impl Table {
    /// An empty table whose columns move to `spill` once large.
    pub fn with_spill(spill: Option<Arc<Spill>>) -> Self {
        Self {
            person: Column::new(spill.clone()),
            ts: Column::new(spill.clone()),
            name: Column::new(spill.clone()),
            lines: Lines {
                row: Column::new(spill.clone()),
                ..Lines::default()
            },
            spill,
            ..Self::default()
        }
    }

    /// Drops the resident pages of every column in a spill file (see [`Column::evict`]):
    /// the next query reads them back from the page cache or the disk.
    pub fn evict(&self) {
        self.person.evict();
        self.ts.evict();
        self.name.evict();
        self.lines.row.evict();
        for c in self.strings.values().chain(self.lines.strings.values()) {
            c.evict();
        }
        for c in self.numbers.values().chain(self.lines.numbers.values()) {
            c.evict();
        }
        self.by_person.evict();
    }

    /// Bytes of spill file mapped by this table's columns.
    pub fn mapped_bytes(&self) -> usize {
        let strs = self.strings.values().chain(self.lines.strings.values());
        let nums = self.numbers.values().chain(self.lines.numbers.values());
        self.person.mapped_bytes()
            + self.ts.mapped_bytes()
            + self.name.mapped_bytes()
            + self.lines.row.mapped_bytes()
            + strs.map(|c| c.mapped_bytes()).sum::<usize>()
            + nums.map(|c| c.mapped_bytes()).sum::<usize>()
            + self.by_person.mapped_bytes()
    }

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
                    Scalar::Items(items) if k == "products" => {
                        for item in items.into_iter().flatten() {
                            self.push_line(row, item);
                        }
                    }
                    Scalar::Items(_) | Scalar::Object(_) | Scalar::Other => {}
                }
            }
        }
        Ok(())
    }

    /// Appends the lines of event row `row` from a JSON array of objects (as a sealed
    /// segment stores them); entries that are not objects are skipped.
    pub fn push_lines_json(&mut self, row: usize, json: &str) -> Result<(), serde_json::Error> {
        let items: Vec<Option<Props<'_>>> = serde_json::from_str::<Items<'_>>(json)?.0;
        for item in items.into_iter().flatten() {
            self.push_line(row, item);
        }
        Ok(())
    }

    fn push_line(&mut self, row: usize, item: Props<'_>) {
        let line = self.lines.row.len();
        self.lines.row.push(row as u32);
        for (k, v) in item.0 {
            let key = self.keys.intern(&k);
            match v {
                Scalar::Str(s) => {
                    let v = self.values.intern(&s) + 1;
                    put(&mut self.lines.strings, &self.spill, key, line, v);
                }
                Scalar::Bool(b) => {
                    let v = self.values.intern(if b { "true" } else { "false" }) + 1;
                    put(&mut self.lines.strings, &self.spill, key, line, v);
                }
                Scalar::Num(n) => put(&mut self.lines.numbers, &self.spill, key, line, n),
                Scalar::Items(_) | Scalar::Object(_) | Scalar::Other => {}
            }
        }
    }

    /// The lines of event row `row` as a JSON array of objects (what a sealed segment
    /// stores), or `None` when it has none.
    pub fn lines_json(&self, row: usize) -> Option<String> {
        let lines = self.lines.of_row(row);
        if lines.is_empty() {
            return None;
        }
        let mut keys: Vec<(&str, u32, bool)> = self
            .lines
            .strings
            .keys()
            .map(|k| (*k, false))
            .chain(self.lines.numbers.keys().map(|k| (*k, true)))
            .filter_map(|(k, num)| Some((self.keys.value(k)?, k, num)))
            .collect();
        keys.sort_unstable();
        let items: Vec<serde_json::Value> = lines
            .map(|line| {
                let mut obj = serde_json::Map::new();
                for (name, k, num) in &keys {
                    let value = if *num {
                        self.lines
                            .num_at(*k, line)
                            .and_then(serde_json::Number::from_f64)
                            .map(serde_json::Value::Number)
                    } else {
                        match self.lines.str_id(*k, line) {
                            0 => None,
                            v => self.values.value(v - 1).map(|s| s.into()),
                        }
                    };
                    if let Some(v) = value {
                        obj.insert((*name).to_owned(), v);
                    }
                }
                serde_json::Value::Object(obj)
            })
            .collect();
        Some(serde_json::Value::Array(items).to_string())
    }

    /// Approximate heap bytes held by the columns, dictionaries and persons (capacities, not
    /// lengths; hash-map overhead estimated): what "memory per event" is measured with.
    pub fn heap_bytes(&self) -> usize {
        self.heap_breakdown().iter().map(|(_, b)| b).sum()
    }

    /// [`Table::heap_bytes`] part by part, for reports.
    pub fn heap_breakdown(&self) -> Vec<(&'static str, usize)> {
        let vec = |cap: usize, size: usize| cap * size;
        vec![
            (
                "fixed columns",
                self.person.heap_bytes() + self.ts.heap_bytes() + self.name.heap_bytes(),
            ),
            (
                "string columns",
                self.strings.values().map(Coded::heap_bytes).sum(),
            ),
            (
                "number columns",
                self.numbers.values().map(Coded::heap_bytes).sum(),
            ),
            (
                "dictionaries",
                self.names.heap_bytes() + self.keys.heap_bytes() + self.values.heap_bytes(),
            ),
            ("persons", self.persons.heap_bytes()),
            (
                "chunks",
                vec(self.chunks.capacity(), std::mem::size_of::<Chunk>())
                    + self
                        .chunks
                        .iter()
                        .map(|c| c.names.capacity() * 4)
                        .sum::<usize>(),
            ),
            ("by person", self.by_person.heap_bytes()),
            ("lines", self.lines.heap_bytes()),
        ]
    }

    /// Rows not yet sealed.
    pub fn hot_len(&self) -> usize {
        self.len() - self.sealed
    }

    /// The row ranges that may hold events with `from <= ts <= to`: the sealed chunks whose
    /// time span overlaps, and the hot part. Adjacent ranges are joined.
    pub fn ranges_within(&self, from: i64, to: i64) -> Vec<Range<usize>> {
        self.ranges_with(from, to, None)
    }

    /// As [`Table::ranges_within`], skipping also the sealed chunks without any of `names`
    /// (event name ids; `None`: any name). The hot rows are always included.
    pub fn ranges_with(&self, from: i64, to: i64, names: Option<&[u32]>) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let hot = self.sealed..self.len();
        let overlapping = self
            .chunks
            .iter()
            .filter(|c| c.max_ts >= from && c.min_ts <= to)
            .filter(|c| names.is_none_or(|n| c.has_any(n)))
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
            permute_columns(&mut self.strings, &mut self.numbers, start, &order);
            self.move_lines(start, &order);
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

    /// Follows the hot rows' reordering (`order`, as [`permute`] takes it) with their lines,
    /// keeping lines in row order.
    fn move_lines(&mut self, start: usize, order: &[u32]) {
        let first = self.lines.row.partition_point(|r| (*r as usize) < start);
        let total = self.lines.len();
        if first == total {
            return;
        }
        let mut new_row = vec![0u32; order.len()];
        for (i, &o) in order.iter().enumerate() {
            new_row[o as usize] = (start + i) as u32;
        }
        let rows: Vec<u32> = self.lines.row[first..]
            .iter()
            .map(|r| new_row[*r as usize - start])
            .collect();
        let mut by_row: Vec<u32> = (0..rows.len() as u32).collect();
        by_row.sort_by_key(|i| rows[*i as usize]);
        self.lines.row.truncate(first);
        self.lines
            .row
            .extend(by_row.iter().map(|i| rows[*i as usize]));
        let lines = &mut self.lines;
        permute_columns(&mut lines.strings, &mut lines.numbers, first, &by_row);
    }

    /// Marks the given ranges (the hot rows, as [`Table::order_hot`] returned them) sealed.
    pub fn mark_sealed(&mut self, ranges: &[Range<usize>]) {
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            let (min_ts, max_ts) = self.ts[r.clone()]
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            self.watermark = self.watermark.max(max_ts);
            let mut seen = vec![false; self.names.len()];
            for &n in &self.name[r.clone()] {
                if let Some(s) = seen.get_mut(n as usize) {
                    *s = true;
                }
            }
            let names = (0..seen.len() as u32)
                .filter(|&n| seen[n as usize])
                .collect();
            self.chunks.push(Chunk {
                rows: r.clone(),
                min_ts,
                max_ts,
                names,
            });
            self.sealed = self.sealed.max(r.end);
        }
    }

    /// The event names used by events with `from <= ts <= to` (µs), most used first (ties
    /// by name): what the dashboard suggests where an event is named.
    pub fn names_within(&self, from: i64, to: i64) -> Vec<NameUse> {
        // (count, newest time) by name id.
        let mut uses = vec![(0u64, i64::MIN); self.names.len()];
        for r in self.ranges_within(from, to) {
            for row in r {
                let ts = self.ts[row];
                if ts < from || ts > to {
                    continue;
                }
                if let Some(u) = uses.get_mut(self.name[row] as usize) {
                    u.0 += 1;
                    u.1 = u.1.max(ts);
                }
            }
        }
        let mut out: Vec<NameUse> = uses
            .into_iter()
            .enumerate()
            .filter(|(_, (count, _))| *count > 0)
            .filter_map(|(id, (count, last_ts))| {
                Some(NameUse {
                    name: self.names.value(id as u32)?.to_owned(),
                    count,
                    last_ts,
                })
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        out
    }

    /// The scalar property keys the columns hold (event properties and `identify` traits),
    /// with whether each has held text (booleans count as text) and numbers; sorted by key.
    pub fn property_keys(&self) -> Vec<(&str, bool, bool)> {
        let mut out: Vec<(&str, bool, bool)> = (0..self.keys.len() as u32)
            .filter_map(|k| {
                let text = self.strings.contains_key(&k);
                let number = self.numbers.contains_key(&k);
                Some((self.keys.value(k)?, text, number)).filter(|_| text || number)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The string value of property `key` at `row`.
    pub fn str_at(&self, key: u32, row: usize) -> Option<&str> {
        let v = self.strings.get(&key)?.get(row)?;
        self.values.value(v.checked_sub(1)?)
    }

    /// The number value of property `key` at `row`.
    pub fn num_at(&self, key: u32, row: usize) -> Option<f64> {
        self.numbers.get(&key)?.get(row)
    }

    fn set_str(&mut self, row: usize, key: &str, value: &str) {
        let k = self.keys.intern(key);
        let v = self.values.intern(value) + 1;
        put(&mut self.strings, &self.spill, k, row, v);
    }

    fn set_num(&mut self, row: usize, key: &str, value: f64) {
        let k = self.keys.intern(key);
        put(&mut self.numbers, &self.spill, k, row, value);
    }
}

/// Sets `cols[key][at] = value`.
fn put<T: Plain>(
    cols: &mut HashMap<u32, Coded<T>>,
    spill: &Option<Arc<Spill>>,
    key: u32,
    at: usize,
    value: T,
) {
    cols.entry(key)
        .or_insert_with(|| Coded::new(spill.clone()))
        .set(at, value);
}

/// Applies [`Coded::permute_from`] from `start` to every column that reaches past it.
fn permute_columns(
    strings: &mut HashMap<u32, StrColumn>,
    numbers: &mut HashMap<u32, NumColumn>,
    start: usize,
    order: &[u32],
) {
    for col in strings.values_mut() {
        col.permute_from(start, order);
    }
    for col in numbers.values_mut() {
        col.permute_from(start, order);
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

/// A property value: scalars are kept; the array under a `products` key is kept as its
/// objects (line items); other arrays and objects are skipped.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    /// An array: its objects (`None` for elements that are not objects).
    Items(Vec<Option<Props<'a>>>),
    Object(Props<'a>),
    Other,
}

/// Deserialises a [`Scalar`]; arrays and objects are kept only when `0` is true (the value of
/// a `products` key, and the elements of its array), and skipped unparsed otherwise.
struct ScalarSeed(bool);

impl<'de> de::DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        struct V(bool);
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
                if self.0 {
                    return Ok(Scalar::Items(items(s)?));
                }
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scalar<'de>, A::Error> {
                if self.0 {
                    return Ok(Scalar::Object(props(m)?));
                }
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V(self.0))
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
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Props<'de>, A::Error> {
                props(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// An object's (key, value) pairs, in order.
fn props<'de, A: MapAccess<'de>>(mut m: A) -> Result<Props<'de>, A::Error> {
    let mut out = Vec::new();
    while let Some(k) = m.next_key::<Cow<'de, str>>()? {
        // Only line items are parsed below the top level: other nested values are skipped.
        let keep = k == "products";
        out.push((k, m.next_value_seed(ScalarSeed(keep))?));
    }
    Ok(Props(out))
}

/// The elements of an array: objects as [`Props`], anything else `None` (and skipped).
fn items<'de, A: de::SeqAccess<'de>>(mut s: A) -> Result<Vec<Option<Props<'de>>>, A::Error> {
    let mut out = Vec::new();
    while let Some(MaybeProps(p)) = s.next_element::<MaybeProps<'de>>()? {
        out.push(p);
    }
    Ok(out)
}

/// A JSON array of line items, as a sealed segment stores an event's lines.
struct Items<'a>(Vec<Option<Props<'a>>>);

impl<'de> Deserialize<'de> for Items<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, s: A) -> Result<Items<'de>, A::Error> {
                Ok(Items(items(s)?))
            }
        }
        d.deserialize_seq(V)
    }
}

/// An array element: an object, or anything else (skipped).
struct MaybeProps<'a>(Option<Props<'a>>);

impl<'de> Deserialize<'de> for MaybeProps<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(MaybeProps(
            match de::DeserializeSeed::deserialize(ScalarSeed(true), d)? {
                Scalar::Object(p) => Some(p),
                _ => None,
            },
        ))
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

    #[test]
    fn event_names_are_counted_within_a_time_range_sealed_or_hot() {
        let mut t = Table::default();
        let ev = |name: &str, day: u32, secs: u32| {
            format!(
                r#"{{"type":"track","event":"{name}","userId":"u{secs}","timestamp":"2026-01-{day:02}T00:00:{secs:02}Z","properties":{{"plan":"pro","price":3}}}}"#
            )
        };
        for (name, day, secs) in [
            ("View", 1, 1),
            ("Buy", 1, 2),
            ("View", 2, 3),
            ("View", 3, 4),
            ("Buy", 3, 5),
            ("Old", 1, 0),
        ] {
            t.push_json(ev(name, day, secs).as_bytes()).expect("push");
        }
        // Days 1 and 2 sealed, day 3 hot.
        let days = t.order_hot();
        t.mark_sealed(&days[..2]);
        t.push_json(ev("Hot", 3, 7).as_bytes()).expect("push");
        let us = |day: u32, secs: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 1, day)
                .and_then(|d| d.and_hms_opt(0, 0, secs))
                .map(|d| d.and_utc().timestamp_micros())
                .expect("date")
        };
        let used = t.names_within(us(1, 2), us(3, 7));
        let got: Vec<(&str, u64, i64)> = used
            .iter()
            .map(|u| (u.name.as_str(), u.count, u.last_ts))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Buy", 2, us(3, 5)),
                ("View", 2, us(3, 4)),
                ("Hot", 1, us(3, 7))
            ],
            "most used first, ties by name; `Old` and the first `View` fall before the range"
        );
        assert!(t.names_within(us(4, 0), us(5, 0)).is_empty());
        // Chunk statistics: day 2 has only `View`, so a query for `Buy` skips it (and
        // `Old`, never in day 2 either); the hot rows are always read.
        let id = |n: &str| t.names.get(n).expect("name");
        let rows = |names: Option<&[u32]>| t.ranges_with(i64::MIN, i64::MAX, names);
        let (day1, day2) = (days[0].clone(), days[1].clone());
        assert_eq!(day1.end, day2.start);
        let hot = t.sealed..t.len();
        assert_eq!(rows(None), vec![day1.start..hot.end]);
        assert_eq!(rows(Some(&[id("Buy")])), vec![day1.clone(), hot.clone()]);
        assert_eq!(rows(Some(&[id("View")])), vec![day1.start..hot.end]);
        assert_eq!(rows(Some(&[id("Hot")])), vec![hot.clone()]);
        assert_eq!(rows(Some(&[])), vec![hot]);
        assert_eq!(
            t.property_keys(),
            vec![("plan", true, false), ("price", false, true)]
        );
    }

    #[test]
    fn products_arrays_become_lines_that_follow_their_rows() {
        let mut t = Table::default();
        let order = |who: &str, secs: u32, products: &str| {
            format!(
                r#"{{"type":"track","event":"Order Completed","userId":"{who}","timestamp":"2026-01-01T00:00:{secs:02}Z","properties":{{"revenue":30,"products":{products},"tags":[{{"a":1}}]}}}}"#
            )
        };
        t.push_json(order("b", 5, r#"[{"category":"Shoes","price":10,"quantity":2},7,{"category":"Tops","price":10,"gift":true}]"#).as_bytes()).expect("push");
        t.push_json(order("a", 9, r#"[]"#).as_bytes())
            .expect("push");
        t.push_json(order("a", 1, r#"[{"category":"Hats","price":5.5}]"#).as_bytes())
            .expect("push");
        t.push_json(order("c", 3, r#""not an array""#).as_bytes())
            .expect("push");
        assert_eq!(t.lines.len(), 3, "objects only, from `products` only");
        let json_before: Vec<Option<String>> = (0..t.len()).map(|r| t.lines_json(r)).collect();
        // Sealing reorders the rows (by day, person, time): lines move with their rows.
        let days = t.order_hot();
        t.mark_sealed(&days);
        assert!(t.lines.row.is_sorted());
        let key = |k: &str| t.keys.get(k).expect("key");
        let category = |line: usize| {
            t.values
                .value(t.lines.str_id(key("category"), line) - 1)
                .map(str::to_owned)
        };
        let row_of = |who: &str, secs: i64| {
            (0..t.len())
                .find(|r| {
                    t.persons.describe(t.person[*r]).map(|d| d.1.to_owned()) == Some(who.into())
                        && t.ts[*r] % 60_000_000 == secs * 1_000_000
                })
                .expect("row")
        };
        let b = row_of("b", 5);
        let lines: Vec<usize> = t.lines.of_row(b).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(category(lines[0]).as_deref(), Some("Shoes"));
        assert_eq!(t.lines.num_at(key("quantity"), lines[0]), Some(2.0));
        assert_eq!(category(lines[1]).as_deref(), Some("Tops"));
        assert_eq!(t.lines.num_at(key("quantity"), lines[1]), None);
        let a = row_of("a", 1);
        assert_eq!(
            t.lines.of_row(a).map(category).collect::<Vec<_>>(),
            vec![Some("Hats".to_owned())]
        );
        assert!(t.lines.of_row(row_of("a", 9)).is_empty());
        // The JSON a segment stores brings the same lines back.
        let json = t.lines_json(b).expect("lines");
        assert!(json_before.contains(&Some(json.clone())));
        let mut u = Table::default();
        u.push_json(order("b", 5, "[]").as_bytes()).expect("push");
        u.push_lines_json(0, &json).expect("lines");
        assert_eq!(u.lines_json(0), Some(json));
        assert!(u.push_lines_json(0, "{").is_err());
    }
}
