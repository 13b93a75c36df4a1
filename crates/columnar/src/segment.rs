//! Sealed segments as Parquet: a range of a tenant's rows, and the tenant's persons.
//!
//! An events file holds one UTC day of one tenant, sorted by (person, time), zstd-compressed,
//! with Parquet's own dictionary encoding for the event name and string properties and
//! min/max statistics per column chunk. Its columns:
//!
//! | column | type | |
//! |---|---|---|
//! | `ts` | timestamp (µs, UTC) | event time |
//! | `person` | uint32 | dense person id within the tenant, before merges |
//! | `user_id`, `anonymous_id` | string, nullable | the id the person was created for |
//! | `event` | string | event name (`$page`, `$screen`, `$identify`… for other calls) |
//! | `properties.<key>` | string or double, nullable | top-level scalar properties |
//! | `properties.products` | string (JSON), nullable | the event's line items, as a JSON array of objects with their scalar fields (`livora:type` `lines`) |
//!
//! A key seen both as a string and as a number gets two columns, the number one named
//! `properties.<key>#number`. Every property column carries the field metadata
//! `livora:key` and `livora:type` (`string` / `number`), which is what the loader reads; the
//! names are for people and other engines (`SELECT * FROM 'x.parquet'` in DuckDB).
//!
//! A persons file holds every person id of the tenant at the time of the seal: `id`, `key`
//! (`u:<userId>` or `a:<anonymousId>`) and `parent` (the identity-merge forest).
//!
//! Both kinds carry the Livora format version as the key-value metadata `livora:format`
//! ([`crate::format`]; version 1, and a file without it is version 1); the decoders refuse
//! another with [`Error::UnsupportedFormat`]. See "Formats and versions" in [`crate::storage`]
//! for the fixtures.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use arrow_array::builder::{Float64Builder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;

use crate::Error;
use crate::coded::Coded;
use crate::format;
use crate::persons::Persons;
use crate::table::Table;

const KEY: &str = "livora:key";
const TYPE: &str = "livora:type";

fn writer_properties(sorted: bool) -> Result<WriterProperties, Error> {
    let level = ZstdLevel::try_new(3)?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(1 << 20))
        .set_created_by(format!("livora {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![format::key_value()]));
    if sorted {
        // (person, ts): columns 1 and 0.
        b = b.set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: 1,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            },
        ]));
    }
    Ok(b.build())
}

/// Encodes `rows` of `t` (already in (person, time) order) as a Parquet file.
pub fn encode_events(t: &Table, rows: Range<usize>) -> Result<Vec<u8>, Error> {
    write_events(t, rows, Vec::new(), true)
}

/// Writes every event of `t` (in storage order) as one Parquet file with the segment schema,
/// for other engines to read the same data (`livora demo generate --parquet`).
pub fn export_parquet<W: std::io::Write + Send>(t: &Table, out: W) -> Result<W, Error> {
    write_events(t, 0..t.len(), out, false)
}

/// Rows per record batch (and row group) when writing.
const BATCH_ROWS: usize = 1 << 20;

/// Rows copied per hold of the read lock by [`encode_events_shared`].
const PIECE_ROWS: usize = 1 << 16;

/// What an events file of a row range holds: its schema and the property columns it takes
/// (by key id), in schema order.
struct Plan {
    schema: Arc<Schema>,
    strings: Vec<u32>,
    numbers: Vec<u32>,
    lines: bool,
}

fn plan(t: &Table, rows: &Range<usize>) -> Plan {
    let mut fields = vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("person", DataType::UInt32, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("anonymous_id", DataType::Utf8, true),
        Field::new("event", DataType::Utf8, false),
    ];
    // Property columns with at least one value in range, in key order (stable files).
    let mut strings: Vec<(&str, u32)> = t
        .strings
        .iter()
        .filter(|(_, c)| c.any_in(rows.clone()))
        .filter_map(|(k, _)| Some((t.keys.value(*k)?, *k)))
        .collect();
    strings.sort_by_key(|(k, _)| *k);
    let mut numbers: Vec<(&str, u32)> = t
        .numbers
        .iter()
        .filter(|(_, c)| c.any_in(rows.clone()))
        .filter_map(|(k, _)| Some((t.keys.value(*k)?, *k)))
        .collect();
    numbers.sort_by_key(|(k, _)| *k);
    for (key, _) in &strings {
        fields.push(property_field(format!("properties.{key}"), key, "string"));
    }
    for (key, _) in &numbers {
        let name = if strings.binary_search_by_key(key, |(k, _)| *k).is_ok() {
            format!("properties.{key}#number")
        } else {
            format!("properties.{key}")
        };
        fields.push(property_field(name, key, "number"));
    }
    // Line items, when any row in range has some.
    let first_line = t.lines.row.partition_point(|r| (*r as usize) < rows.start);
    let lines = t
        .lines
        .row
        .get(first_line)
        .is_some_and(|r| (*r as usize) < rows.end);
    if lines {
        fields.push(property_field(
            "properties.products".into(),
            "products",
            "lines",
        ));
    }
    Plan {
        schema: Arc::new(Schema::new(fields)),
        strings: strings.into_iter().map(|(_, k)| k).collect(),
        numbers: numbers.into_iter().map(|(_, k)| k).collect(),
        lines,
    }
}

fn write_events<W: std::io::Write + Send>(
    t: &Table,
    rows: Range<usize>,
    out: W,
    sorted: bool,
) -> Result<W, Error> {
    let plan = plan(t, &rows);
    let mut w = ArrowWriter::try_new(out, plan.schema.clone(), Some(writer_properties(sorted)?))?;
    let mut start = rows.start;
    loop {
        let chunk = start..(start + BATCH_ROWS).min(rows.end);
        let columns = batch_columns(t, chunk.clone(), &plan);
        w.write(&RecordBatch::try_new(plan.schema.clone(), columns)?)?;
        start = chunk.end;
        if start >= rows.end {
            break;
        }
    }
    Ok(w.into_inner()?)
}

/// [`encode_events`] for a table that the follower appends to meanwhile: the schema, and then
/// each piece of [`PIECE_ROWS`] rows, are copied under the read lock, and compressed outside
/// it, so the appender waits milliseconds at a time rather than for the whole encoding.
/// `rows` must not move meanwhile: rows are only appended past the end, and only the sealer
/// reorders the hot part.
pub fn encode_events_shared(t: &RwLock<Table>, rows: Range<usize>) -> Result<Vec<u8>, Error> {
    let read = || t.read().unwrap_or_else(|e| e.into_inner());
    let plan = plan(&read(), &rows);
    let mut w = ArrowWriter::try_new(
        Vec::new(),
        plan.schema.clone(),
        Some(writer_properties(true)?),
    )?;
    let mut start = rows.start;
    while start < rows.end {
        let piece = start..(start + PIECE_ROWS).min(rows.end);
        let columns = batch_columns(&read(), piece.clone(), &plan);
        w.write(&RecordBatch::try_new(plan.schema.clone(), columns)?)?;
        start = piece.end;
    }
    Ok(w.into_inner()?)
}

fn batch_columns(t: &Table, rows: Range<usize>, plan: &Plan) -> Vec<ArrayRef> {
    let n = rows.len();
    let ts = TimestampMicrosecondArray::from(t.ts[rows.clone()].to_vec()).with_timezone("UTC");
    let person = UInt32Array::from(t.person[rows.clone()].to_vec());
    let (mut user, mut anon) = (StringBuilder::new(), StringBuilder::new());
    let mut event = StringBuilder::new();
    for row in rows.clone() {
        match t.persons.describe(t.person[row]) {
            Some((true, id)) => {
                user.append_value(id);
                anon.append_null();
            }
            Some((false, id)) => {
                user.append_null();
                anon.append_value(id);
            }
            None => {
                user.append_null();
                anon.append_null();
            }
        }
        event.append_value(t.names.value(t.name[row]).unwrap_or(""));
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(ts),
        Arc::new(person),
        Arc::new(user.finish()),
        Arc::new(anon.finish()),
        Arc::new(event.finish()),
    ];
    for k in &plan.strings {
        let mut b = StringBuilder::with_capacity(n, n * 8);
        // Values are id + 1; a 0 (never written) reads as no value, as before.
        for_each_row(t.strings.get(k), rows.clone(), |v| {
            b.append_option(v.and_then(|v| t.values.value(v.checked_sub(1)?)))
        });
        columns.push(Arc::new(b.finish()));
    }
    for k in &plan.numbers {
        let mut b = Float64Builder::with_capacity(n);
        for_each_row(t.numbers.get(k), rows.clone(), |v| b.append_option(v));
        columns.push(Arc::new(b.finish()));
    }
    if plan.lines {
        let mut b = StringBuilder::new();
        for row in rows {
            b.append_option(t.lines_json(row));
        }
        columns.push(Arc::new(b.finish()));
    }
    columns
}

fn property_field(name: String, key: &str, kind: &str) -> Field {
    let data_type = if kind == "number" {
        DataType::Float64
    } else {
        DataType::Utf8
    };
    Field::new(name, data_type, true).with_metadata(HashMap::from([
        (KEY.to_owned(), key.to_owned()),
        (TYPE.to_owned(), kind.to_owned()),
    ]))
}

/// Calls `f` with the value (or none) of each row of `rows` in `col`, in order.
fn for_each_row<T: crate::column::Plain>(
    col: Option<&Coded<T>>,
    rows: Range<usize>,
    mut f: impl FnMut(Option<T>),
) {
    let start = rows.start;
    let mut values = col
        .into_iter()
        .flat_map(move |c| c.iter_from(start))
        .peekable();
    for row in rows {
        match values.next_if(|(r, _)| *r == row) {
            Some((_, v)) => f(Some(v)),
            None => f(None),
        }
    }
}

fn write(schema: Schema, columns: Vec<ArrayRef>, sorted: bool) -> Result<Vec<u8>, Error> {
    let schema = Arc::new(schema);
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(writer_properties(sorted)?))?;
    w.write(&batch)?;
    Ok(w.into_inner()?)
}

/// Appends the rows of an events file to `t`, whose persons must already hold every person
/// the file names. Returns the number of rows appended.
pub fn decode_events(bytes: Bytes, t: &mut Table) -> Result<usize, Error> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    format::check(builder.metadata(), "events file")?;
    let reader = builder.with_batch_size(64 * 1024).build()?;
    let mut total = 0;
    for batch in reader {
        let batch = batch?;
        total += append_batch(&batch, t)?;
    }
    Ok(total)
}

fn column<'a, A: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a A, Error> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<A>())
        .ok_or_else(|| Error::Segment(format!("column {name:?} missing or of the wrong type")))
}

fn append_batch(b: &RecordBatch, t: &mut Table) -> Result<usize, Error> {
    let ts: &TimestampMicrosecondArray = column(b, "ts")?;
    let person: &UInt32Array = column(b, "person")?;
    let event: &StringArray = column(b, "event")?;
    let n = b.num_rows();
    let base = t.len();
    let persons = t.persons.len();
    if let Some(p) = person.values().iter().find(|p| **p as usize >= persons) {
        return Err(Error::Segment(format!(
            "person {p} is not in the persons snapshot ({persons} persons)"
        )));
    }
    if ts.null_count() > 0 || event.null_count() > 0 {
        return Err(Error::Segment("null ts or event".into()));
    }
    t.ts.extend_from_slice(ts.values());
    t.person.extend_from_slice(person.values());
    // Event names repeat: remember the last one instead of hashing every row.
    let mut last: Option<(&str, u32)> = None;
    t.name.reserve(n);
    for name in event.iter().flatten() {
        let id = match last {
            Some((s, id)) if s == name => id,
            _ => {
                let id = t.names.intern(name);
                last = Some((name, id));
                id
            }
        };
        t.name.push(id);
    }
    for (i, field) in b.schema().fields().iter().enumerate() {
        let meta = field.metadata();
        let (Some(key), Some(kind)) = (meta.get(KEY), meta.get(TYPE)) else {
            continue;
        };
        let k = t.keys.intern(key);
        let array = b.column(i);
        match kind.as_str() {
            "string" => {
                let a = array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| Error::Segment(format!("{key:?} is not a string column")))?;
                let col = t
                    .strings
                    .entry(k)
                    .or_insert_with(|| Coded::new(t.spill.clone()));
                let mut last: Option<(&str, u32)> = None;
                for (i, v) in a.iter().enumerate() {
                    let id = match (v, last) {
                        (None, _) => continue,
                        (Some(v), Some((s, id))) if s == v => id,
                        (Some(v), _) => {
                            let id = t.values.intern(v) + 1;
                            last = Some((v, id));
                            id
                        }
                    };
                    col.set(base + i, id);
                }
            }
            "number" => {
                let a = array
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .ok_or_else(|| Error::Segment(format!("{key:?} is not a number column")))?;
                let col = t
                    .numbers
                    .entry(k)
                    .or_insert_with(|| Coded::new(t.spill.clone()));
                for (i, v) in a.iter().enumerate() {
                    if let Some(v) = v {
                        col.set(base + i, v);
                    }
                }
            }
            "lines" => {
                let a = array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| Error::Segment(format!("{key:?} is not a string column")))?;
                for (i, v) in a.iter().enumerate() {
                    if let Some(json) = v {
                        t.push_lines_json(base + i, json).map_err(|e| {
                            Error::Segment(format!("the line items of row {}: {e}", base + i))
                        })?;
                    }
                }
            }
            other => return Err(Error::Segment(format!("unknown column type {other:?}"))),
        }
    }
    Ok(n)
}

/// Encodes every person of `p` (id order).
pub fn encode_persons(p: &Persons) -> Result<Vec<u8>, Error> {
    write(persons_schema(), persons_columns(p), false)
}

/// [`encode_persons`] of a table's persons, copied under the read lock and compressed
/// outside it. Returns the file and how many persons it holds.
pub fn encode_persons_shared(t: &RwLock<Table>) -> Result<(Vec<u8>, u64), Error> {
    let (columns, count) = {
        let t = t.read().unwrap_or_else(|e| e.into_inner());
        (persons_columns(&t.persons), t.persons.len() as u64)
    };
    Ok((write(persons_schema(), columns, false)?, count))
}

fn persons_schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::UInt32, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("parent", DataType::UInt32, false),
    ])
}

fn persons_columns(p: &Persons) -> Vec<ArrayRef> {
    let (keys, parents) = p.snapshot();
    let ids = UInt32Array::from_iter_values(0..keys.len() as u32);
    let keys = StringArray::from_iter_values(keys);
    let parents = UInt32Array::from(parents.to_vec());
    vec![Arc::new(ids), Arc::new(keys), Arc::new(parents)]
}

pub fn decode_persons(bytes: Bytes) -> Result<Persons, Error> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    format::check(builder.metadata(), "persons file")?;
    let reader = builder.build()?;
    let mut persons = Persons::new();
    for batch in reader {
        let batch = batch?;
        let id: &UInt32Array = column(&batch, "id")?;
        let key: &StringArray = column(&batch, "key")?;
        let parent: &UInt32Array = column(&batch, "parent")?;
        for (i, &id) in id.values().iter().enumerate() {
            if id as usize != persons.len() {
                return Err(Error::Segment(format!("persons out of order at id {id}")));
            }
            if key.is_null(i) {
                return Err(Error::Segment(format!("person {id} has no key")));
            }
            persons
                .restore_next(key.value(i), parent.value(i))
                .map_err(Error::Segment)?;
        }
    }
    Ok(persons)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_say_they_are_sorted_and_zstd_compressed() {
        let mut t = Table::default();
        t.push_json(br#"{"type":"track","event":"Buy","userId":"u","timestamp":"2026-01-01T00:00:00Z","properties":{"k":"v","n":1,"both":"x"}}"#).expect("push");
        t.push_json(br#"{"type":"track","event":"Buy","anonymousId":"a","timestamp":"2026-01-01T00:00:01Z","properties":{"both":2}}"#).expect("push");
        let bytes = Bytes::from(encode_events(&t, 0..2).expect("encode"));
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).expect("read");
        let rg = builder.metadata().row_group(0);
        let sorting: Vec<i32> = rg
            .sorting_columns()
            .expect("sorting columns")
            .iter()
            .map(|c| c.column_idx)
            .collect();
        assert_eq!(sorting, vec![1, 0], "(person, ts)");
        assert!(
            rg.columns()
                .iter()
                .all(|c| matches!(c.compression(), Compression::ZSTD(_)))
        );
        assert!(rg.column(0).statistics().is_some(), "min/max statistics");
        let names: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert!(names.contains(&"properties.both".to_owned()));
        assert!(names.contains(&"properties.both#number".to_owned()));
        let mut back = Table {
            persons: t.persons.clone(),
            ..Table::default()
        };
        assert_eq!(decode_events(bytes, &mut back).expect("decode"), 2);
        let both = back.keys.get("both").expect("key");
        assert_eq!(back.str_at(both, 0), Some("x"));
        assert_eq!(back.num_at(both, 1), Some(2.0));
        assert_eq!(back.num_at(both, 0), None);
        // A file naming a person the snapshot does not have is refused.
        let mut empty = Table::default();
        let bytes = Bytes::from(encode_events(&t, 0..2).expect("encode"));
        assert!(decode_events(bytes, &mut empty).is_err());
    }

    #[test]
    fn line_items_go_through_a_segment() {
        let mut t = Table::default();
        t.push_json(
            br#"{"type":"track","event":"Page","userId":"u","timestamp":"2026-01-01T00:00:00Z"}"#,
        )
        .expect("push");
        t.push_json(br#"{"type":"track","event":"Order Completed","userId":"u","timestamp":"2026-01-01T00:00:01Z","properties":{"products":[{"sku":"A","price":2.5,"quantity":3},{"sku":"B","sale":true}]}}"#).expect("push");
        t.push_json(
            br#"{"type":"track","event":"Page","userId":"v","timestamp":"2026-01-01T00:00:02Z"}"#,
        )
        .expect("push");
        // A file of rows without line items has no products column.
        let plain = Bytes::from(encode_events(&t, 0..1).expect("encode"));
        let schema = ParquetRecordBatchReaderBuilder::try_new(plain)
            .expect("read")
            .schema()
            .clone();
        assert!(schema.field_with_name("properties.products").is_err());
        let bytes = Bytes::from(encode_events(&t, 0..3).expect("encode"));
        let mut back = Table {
            persons: t.persons.clone(),
            ..Table::default()
        };
        assert_eq!(decode_events(bytes, &mut back).expect("decode"), 3);
        assert_eq!(&back.lines.row[..], &[1, 1]);
        assert_eq!(back.lines_json(1), t.lines_json(1));
        assert_eq!(
            back.lines_json(1).as_deref(),
            Some(r#"[{"price":2.5,"quantity":3.0,"sku":"A"},{"sale":"true","sku":"B"}]"#)
        );
        assert_eq!(back.lines_json(0), None);
    }
}
