//! The hot, in-memory part of a tenant's events, column by column.
//!
//! One row per event: `person` (dense id, before merges), `ts` (event time, µs since the
//! epoch), `name` (dictionary id of the event name: the `track` event, or `$page`, `$screen`,
//! `$identify`, `$group`, `$alias`). Top-level scalar properties (and traits of `identify`) go
//! to one column per key and type: strings dictionary-encoded (`0` = absent), numbers as `f64`
//! (`NaN` = absent), booleans as the strings `"true"`/`"false"`. Columns are padded lazily:
//! a row past a column's end has no value for it. Page and screen names are the property
//! `$name`.

use hashbrown::HashMap;
use livora_model::{Event, EventType};
use serde_json::Value;

use crate::dict::Dictionary;
use crate::persons::{PersonId, Persons};

/// A string column: `0` = absent, else value id + 1.
pub type StrColumn = Vec<u32>;
/// A number column: `NaN` = absent.
pub type NumColumn = Vec<f64>;

#[derive(Debug, Default)]
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
            return;
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
        self.person.push(person);
        self.ts.push(e.timestamp.timestamp_micros());
        let name = self.names.intern(name);
        self.name.push(name);
        if let Some(n) = e.name.as_deref()
            && matches!(e.kind, EventType::Page | EventType::Screen)
        {
            self.set_str(row, "$name", n);
        }
        let props = match e.kind {
            EventType::Identify | EventType::Group => e.traits.as_deref(),
            _ => e.properties.as_deref(),
        };
        if let Some(raw) = props
            && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(raw.get())
        {
            for (k, v) in &map {
                match v {
                    Value::String(s) => self.set_str(row, k, s),
                    Value::Number(n) => {
                        if let Some(f) = n.as_f64() {
                            self.set_num(row, k, f);
                        }
                    }
                    Value::Bool(b) => self.set_str(row, k, if *b { "true" } else { "false" }),
                    _ => {}
                }
            }
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
