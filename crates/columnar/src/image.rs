//! The column store's image: a tenant's sealed rows as the query kernels read them (the
//! table's columns, dictionaries, chunks and the person-ordered projection), kept on the
//! local disk across restarts, so that a start maps them instead of decoding every Parquet
//! segment and rebuilding the projection (86 s and a peak far above the memory limit at
//! 100 M events before this).
//!
//! # Format, version 2
//!
//! In the named spill directory ([`Spill::named`], `<data_dir>/columns-cache`):
//!
//! - `<id>.col`: one column: its values (`u32`, `u64`, `i64` or `f64`, native byte order) one
//!   after the other from offset 0. The file may be longer than the column: its capacity, and
//!   rows not sealed yet. These are the live columns' own files (see [`crate::column`]): a
//!   seal writes nothing twice, it syncs them. A property column ([`Coded`] over [`Sparse`])
//!   is its presence words (`u64`), its rank directory (`u32`) and its values, `width` bytes
//!   each: 1- or 2-byte codes into a fourth file holding its distinct values (`u32` value ids
//!   or `f64`) by code, or the values themselves; its entry gives the rows it covers and the
//!   word (64 rows) its presence words start at (the word of its first value). The
//!   presence word holding the last claimed row may have bits set past it (rows sealed
//!   later, or hot): they are cleared when the image is read. A code past the value list
//!   reads as no value.
//! - `<tenant>.names.dict`, `<tenant>.keys.dict`, `<tenant>.values.dict`: a dictionary's values
//!   in id order, each a little-endian `u32` byte length and the UTF-8 bytes. Append-only.
//! - `<tenant>.image.json`: the [`Meta`]: format name and version, byte order, the segments
//!   (path and rows, in row order) whose rows the image holds, the rows it claims, each
//!   column's file and length, the chunks, the dictionaries' lengths and the projection's
//!   runs. Replaced atomically (written beside, synced, renamed) after every file it names
//!   is synced, so it never names bytes that are not on the disk.
//!
//! An image claims rows `0..rows` only. Rows past them in a file are not read, and the
//! process writes past them only: sealed rows never change in place.
//!
//! # Validity
//!
//! The Parquet segments stay the source of truth (what other engines read, what object
//! storage holds); the image is a cache of them in the kernels' own layout, its rows in the
//! order they were sealed (not the manifest's). At a load it serves the longest prefix of its
//! sources that are all segments of the manifest, each with all its rows; the manifest's
//! other segments (sealed after the image was written) are decoded from Parquet and appended.
//! A compaction renames its parts' sources to the merged file, so it keeps them served; an
//! expiry reloads the tenant from Parquet. Rows past the prefix are decoded again (into the
//! same files, after the image is withdrawn). An image that is
//! missing, unreadable, of another version or byte order, or inconsistent is dropped with a
//! warning and the tenant is loaded from Parquet, then a new image is written. Persons are
//! not in the image: their ids are stable and the segments' persons file holds them.
//!
//! Version 1 stored a property column as one file with a value for every row (`0` or `NaN`
//! for none); it is still read (converted to sparse columns at the load, after which a
//! version 2 image replaces it).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::by_person::{ByPerson, Run};
use crate::coded::{Coded, Codes, MAX_CODED};
use crate::column::{Column, Plain, Spill};
use crate::dict::Dictionary;
use crate::sparse::{self, Sparse};
use crate::storage::SegmentMeta;
use crate::table::{Chunk, Table};

/// The `format` field of every image.
pub const FORMAT: &str = "livora-column-image";
/// The image version this build writes and reads.
pub const VERSION: u32 = 2;
/// The oldest image version this build reads.
pub const OLDEST: u32 = 1;

/// A segment whose rows a table holds: its path and row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub path: String,
    pub rows: u64,
}

impl From<&SegmentMeta> for Source {
    fn from(m: &SegmentMeta) -> Self {
        Self {
            path: m.path.clone(),
            rows: m.rows,
        }
    }
}

/// How much of a table's dictionaries its image files hold.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    names: DictMeta,
    keys: DictMeta,
    values: DictMeta,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct DictMeta {
    /// Values written.
    values: usize,
    /// Bytes of file they take.
    bytes: u64,
}

/// A column in an image: its file id and its length in values.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ColMeta {
    file: u64,
    len: usize,
}

/// A property column in an image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
enum PropMeta {
    /// Version 2: a [`Coded`] column covering `rows` rows: its [`Sparse`] parts, its
    /// values `width` bytes each (1 or 2: codes into `dict`; else the values themselves).
    Sparse {
        rows: usize,
        /// The word (64 rows) of the first presence word.
        first: usize,
        width: usize,
        bits: ColMeta,
        ranks: ColMeta,
        values: ColMeta,
        dict: Option<ColMeta>,
    },
    /// Version 1: a value for every row, `0` or `NaN` for none.
    Dense(ColMeta),
}

impl PropMeta {
    fn files(&self) -> Vec<u64> {
        match self {
            Self::Sparse {
                bits,
                ranks,
                values,
                dict,
                ..
            } => [bits, ranks, values]
                .into_iter()
                .chain(dict)
                .map(|c| c.file)
                .collect(),
            Self::Dense(c) => vec![c.file],
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ChunkMeta {
    rows: (usize, usize),
    min_ts: i64,
    max_ts: i64,
    names: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RunMeta {
    rows: (usize, usize),
    start: ColMeta,
    row: ColMeta,
    ts: ColMeta,
    name: ColMeta,
}

#[derive(Debug, Serialize, Deserialize)]
struct LinesMeta {
    /// Lines of the claimed rows.
    lines: usize,
    row: ColMeta,
    strings: Vec<(u32, PropMeta)>,
    numbers: Vec<(u32, PropMeta)>,
}

/// An image's description (`<tenant>.image.json`; see the module doc).
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: String,
    version: u32,
    little_endian: bool,
    segments: Vec<Source>,
    rows: usize,
    skipped: u64,
    chunks: Vec<ChunkMeta>,
    dicts: Written,
    person: ColMeta,
    ts: ColMeta,
    name: ColMeta,
    strings: Vec<(u32, PropMeta)>,
    numbers: Vec<(u32, PropMeta)>,
    lines: LinesMeta,
    runs: Vec<RunMeta>,
}

/// Why an image could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

fn meta_path(dir: &Path, tenant: Uuid) -> PathBuf {
    dir.join(format!("{tenant}.image.json"))
}

fn dict_path(dir: &Path, tenant: Uuid, which: &str) -> PathBuf {
    dir.join(format!("{tenant}.{which}.dict"))
}

/// The owner name under which a tenant's image pins its files ([`Spill::pin`]).
fn owner(tenant: Uuid) -> String {
    tenant.to_string()
}

/// What [`collect`] took from a table under its lock, for [`finish`] to write without it.
pub struct Pending {
    tenant: Uuid,
    meta: Meta,
    files: Vec<File>,
    ids: HashSet<u64>,
    dicts: [(Vec<u8>, DictMeta); 3],
}

/// The image of `t` as it stands, taken under the caller's lock: gives every claimed column
/// a file, notes each file and length, and copies the dictionary values not yet written.
pub fn collect(t: &mut Table, tenant: Uuid) -> Result<Pending, ImageError> {
    let rows = t.sealed;
    let from_sources: u64 = t.sources.iter().map(|s| s.rows).sum();
    if from_sources != rows as u64 {
        return Err(ImageError::Invalid(format!(
            "{rows} sealed rows, their segments hold {from_sources}"
        )));
    }
    let mut named = Named::default();
    let lines = t.lines.row.partition_point(|r| (*r as usize) < rows);
    let person = named.persisted(&mut t.person, rows)?;
    let ts = named.persisted(&mut t.ts, rows)?;
    let name = named.persisted(&mut t.name, rows)?;
    let mut strings = Vec::with_capacity(t.strings.len());
    for (k, c) in t.strings.iter_mut() {
        strings.push((*k, named.coded(c, rows)?));
    }
    let mut numbers = Vec::with_capacity(t.numbers.len());
    for (k, c) in t.numbers.iter_mut() {
        numbers.push((*k, named.coded(c, rows)?));
    }
    let line_row = named.persisted(&mut t.lines.row, lines)?;
    let mut line_strings = Vec::with_capacity(t.lines.strings.len());
    for (k, c) in t.lines.strings.iter_mut() {
        line_strings.push((*k, named.coded(c, lines)?));
    }
    let mut line_numbers = Vec::with_capacity(t.lines.numbers.len());
    for (k, c) in t.lines.numbers.iter_mut() {
        line_numbers.push((*k, named.coded(c, lines)?));
    }
    // The runs in order; the image holds the ones with files (all, unless a file could
    // not be made: then the rest are rebuilt at the next start).
    let mut runs = Vec::with_capacity(t.by_person.runs.len());
    for r in &t.by_person.runs {
        let ids = [
            r.start.file_id(),
            r.row.file_id(),
            r.ts.file_id(),
            r.name.file_id(),
        ];
        if r.rows.end > rows || ids.contains(&None) {
            break;
        }
        runs.push(RunMeta {
            rows: (r.rows.start, r.rows.end),
            start: named.entry(&r.start, usize::MAX)?,
            row: named.entry(&r.row, usize::MAX)?,
            ts: named.entry(&r.ts, usize::MAX)?,
            name: named.entry(&r.name, usize::MAX)?,
        });
    }
    let chunks = t
        .chunks
        .iter()
        .map(|c| ChunkMeta {
            rows: (c.rows.start, c.rows.end),
            min_ts: c.min_ts,
            max_ts: c.max_ts,
            names: c.names.clone(),
        })
        .collect();
    let w = t.image;
    let dicts = [
        appended(&t.names, w.names),
        appended(&t.keys, w.keys),
        appended(&t.values, w.values),
    ];
    let meta = Meta {
        format: FORMAT.to_owned(),
        version: VERSION,
        little_endian: cfg!(target_endian = "little"),
        segments: t.sources.clone(),
        rows,
        skipped: t.skipped,
        chunks,
        dicts: Written {
            names: dicts[0].1,
            keys: dicts[1].1,
            values: dicts[2].1,
        },
        person,
        ts,
        name,
        strings,
        numbers,
        lines: LinesMeta {
            lines,
            row: line_row,
            strings: line_strings,
            numbers: line_numbers,
        },
        runs,
    };
    Ok(Pending {
        tenant,
        meta,
        files: named.files,
        ids: named.ids,
        dicts,
    })
}

/// The dictionary values past `w` as records, and what the file holds once they are written.
fn appended(d: &Dictionary, w: DictMeta) -> (Vec<u8>, DictMeta) {
    let mut buf = Vec::new();
    for v in d.values().skip(w.values) {
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(v.as_bytes());
    }
    let next = DictMeta {
        values: d.len(),
        bytes: w.bytes + buf.len() as u64,
    };
    (buf, next)
}

/// Writes what [`collect`] took: syncs the column files, appends to the dictionaries, then
/// replaces the description. Returns what the dictionary files now hold (for the table).
pub fn finish(p: Pending, spill: &Spill) -> Result<Written, ImageError> {
    let dir = spill.dir();
    for f in &p.files {
        f.sync_data()?;
    }
    for (which, (buf, next)) in ["names", "keys", "values"].into_iter().zip(&p.dicts) {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(dict_path(dir, p.tenant, which))?;
        f.write_all_at(buf, next.bytes - buf.len() as u64)?;
        f.sync_data()?;
    }
    let path = meta_path(dir, p.tenant);
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&p.meta)?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    spill.pin(&owner(p.tenant), p.ids);
    Ok(p.meta.dicts)
}

/// Withdraws a tenant's image: its description goes first (so nothing names the files),
/// then its files are unpinned (deleted unless a live column holds them).
pub(crate) fn remove(spill: &Spill, tenant: Uuid) {
    let path = meta_path(spill.dir(), tenant);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a column image");
    }
    spill.pin(&owner(tenant), HashSet::new());
}

/// Deletes the images (descriptions and dictionaries) of tenants other than `keep`: those
/// whose segments are gone. Their column files go with [`Spill::sweep`].
pub(crate) fn remove_others(spill: &Spill, keep: &HashSet<Uuid>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(spill.dir())? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let ours = [
            ".image.json",
            ".image.json.tmp",
            ".names.dict",
            ".keys.dict",
            ".values.dict",
        ]
        .iter()
        .any(|ext| name.ends_with(ext));
        let tenant = name.split('.').next().and_then(|t| Uuid::parse_str(t).ok());
        if let (true, Some(tenant)) = (ours, tenant)
            && !keep.contains(&tenant)
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Loads into `t` (an empty table with its persons) the rows of the image of `tenant` for
/// the segments of the manifest (`segments`) it holds (see [`held`]); returns, for each of
/// `segments`, whether its rows are in `t` now (empty: none are). An image that cannot be
/// used is withdrawn with a warning.
pub fn load(
    spill: &Arc<Spill>,
    tenant: Uuid,
    segments: &[SegmentMeta],
    t: &mut Table,
) -> Vec<bool> {
    match try_load(spill, tenant, segments, t) {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "column image not used; loading the segments");
            remove(spill, tenant);
            Vec::new()
        }
    }
}

fn try_load(
    spill: &Arc<Spill>,
    tenant: Uuid,
    segments: &[SegmentMeta],
    t: &mut Table,
) -> Result<Vec<bool>, ImageError> {
    let dir = spill.dir();
    let bytes = match std::fs::read(meta_path(dir, tenant)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let meta: Meta = serde_json::from_slice(&bytes)?;
    if meta.format != FORMAT || !(OLDEST..=VERSION).contains(&meta.version) {
        return Err(ImageError::Invalid(format!(
            "format {} version {}; this build reads {FORMAT} versions {OLDEST} to {VERSION}",
            meta.format, meta.version
        )));
    }
    if meta.little_endian != cfg!(target_endian = "little") {
        return Err(ImageError::Invalid(
            "written on a machine of another byte order".into(),
        ));
    }
    let held = held(&meta.segments, segments);
    let rows: usize = meta.segments[..held].iter().map(|s| s.rows as usize).sum();
    let claimed: u64 = meta.segments.iter().map(|s| s.rows).sum();
    if claimed != meta.rows as u64 {
        return Err(ImageError::Invalid(format!(
            "claims {} rows, its segments hold {claimed}",
            meta.rows
        )));
    }
    // The kernels index these three by every row, and a run's columns by every entry.
    if [meta.person, meta.ts, meta.name]
        .iter()
        .any(|c| c.len < meta.rows)
        || meta
            .runs
            .iter()
            .any(|r| r.start.len == 0 || r.row.len != r.ts.len || r.row.len != r.name.len)
    {
        return Err(ImageError::Invalid(
            "a column is shorter than the rows it claims".into(),
        ));
    }
    if held == 0 {
        remove(spill, tenant);
        return Ok(Vec::new());
    }
    let open_u32 = |c: ColMeta, len: usize| open::<u32>(spill, c, len);
    let person = open_u32(meta.person, rows)?;
    let ts = open::<i64>(spill, meta.ts, rows)?;
    let name = open_u32(meta.name, rows)?;
    let mut strings = HashMap::with_capacity(meta.strings.len());
    for (k, c) in &meta.strings {
        strings.insert(*k, open_prop(spill, *c, rows, |v: &u32| *v != 0)?);
    }
    let mut numbers = HashMap::with_capacity(meta.numbers.len());
    for (k, c) in &meta.numbers {
        numbers.insert(*k, open_prop(spill, *c, rows, |v: &f64| !v.is_nan())?);
    }
    let mut line_row = open_u32(meta.lines.row, meta.lines.lines)?;
    let lines = line_row.partition_point(|r| (*r as usize) < rows);
    line_row.truncate(lines);
    let mut line_strings = HashMap::with_capacity(meta.lines.strings.len());
    for (k, c) in &meta.lines.strings {
        line_strings.insert(*k, open_prop(spill, *c, lines, |v: &u32| *v != 0)?);
    }
    let mut line_numbers = HashMap::with_capacity(meta.lines.numbers.len());
    for (k, c) in &meta.lines.numbers {
        line_numbers.insert(*k, open_prop(spill, *c, lines, |v: &f64| !v.is_nan())?);
    }
    let mut runs = Vec::new();
    for r in meta.runs.iter().take_while(|r| r.rows.1 <= rows) {
        runs.push(Arc::new(Run {
            rows: r.rows.0..r.rows.1,
            start: open_u32(r.start, r.start.len)?,
            row: open_u32(r.row, r.row.len)?,
            ts: open::<i64>(spill, r.ts, r.ts.len)?,
            name: open_u32(r.name, r.name.len)?,
        }));
    }
    if runs.windows(2).any(|w| w[0].rows.end != w[1].rows.start)
        || runs.first().is_some_and(|r| r.rows.start != 0)
        || runs.iter().any(|r| {
            r.start
                .last()
                .is_none_or(|&end| end as usize != r.row.len())
        })
    {
        return Err(ImageError::Invalid(
            "the projection's runs are not contiguous, or a run's groups do not end with it".into(),
        ));
    }
    let chunks: Vec<Chunk> = meta
        .chunks
        .iter()
        .filter(|c| c.rows.1 <= rows)
        .map(|c| Chunk {
            rows: c.rows.0..c.rows.1,
            min_ts: c.min_ts,
            max_ts: c.max_ts,
            names: c.names.clone(),
        })
        .collect();
    let contiguous = chunks
        .iter()
        .try_fold(0, |at, c| (c.rows.start == at).then_some(c.rows.end));
    if contiguous != Some(rows) {
        return Err(ImageError::Invalid(
            "the chunks do not cover the rows it serves".into(),
        ));
    }
    let names = read_dict(&dict_path(dir, tenant, "names"), meta.dicts.names)?;
    let keys = read_dict(&dict_path(dir, tenant, "keys"), meta.dicts.keys)?;
    let values = read_dict(&dict_path(dir, tenant, "values"), meta.dicts.values)?;
    if held < meta.segments.len() {
        // Rows past the prefix are about to be written again: nothing may name them.
        std::fs::remove_file(meta_path(dir, tenant))?;
    }
    spill.pin(&owner(tenant), all_files(&meta));
    t.person = person;
    t.ts = ts;
    t.name = name;
    t.strings = strings;
    t.numbers = numbers;
    t.lines.row = line_row;
    t.lines.strings = line_strings;
    t.lines.numbers = line_numbers;
    t.names = names;
    t.keys = keys;
    t.values = values;
    t.watermark = chunks.iter().map(|c| c.max_ts).max().unwrap_or(i64::MIN);
    t.chunks = chunks;
    t.sealed = rows;
    t.skipped = meta.skipped;
    t.by_person = ByPerson { runs };
    t.sources = meta.segments[..held].to_vec();
    t.image = meta.dicts;
    let paths: HashSet<&str> = t.sources.iter().map(|s| s.path.as_str()).collect();
    Ok(segments
        .iter()
        .map(|s| paths.contains(s.path.as_str()))
        .collect())
}

/// How many of an image's sources (from the first) it can serve: the longest prefix in
/// which every segment is one the manifest names, with all its rows. A compacted segment
/// appears once per file it replaced (its rows in the image are where those were), so a
/// prefix that holds only some of its parts does not count.
fn held(sources: &[Source], segments: &[SegmentMeta]) -> usize {
    let want: HashMap<&str, u64> = segments.iter().map(|s| (s.path.as_str(), s.rows)).collect();
    let mut got: HashMap<&str, u64> = HashMap::new();
    let mut incomplete = 0usize;
    let mut best = 0;
    for (k, s) in sources.iter().enumerate() {
        let Some(&total) = want.get(s.path.as_str()) else {
            break;
        };
        let n = got.entry(s.path.as_str()).or_default();
        if *n == 0 {
            incomplete += 1;
        }
        *n += s.rows;
        if *n > total {
            break;
        }
        if *n == total {
            incomplete -= 1;
        }
        if incomplete == 0 {
            best = k + 1;
        }
    }
    best
}

/// The files the image of `tenant` in `dir` names (`None`: no readable image).
pub fn files_named(dir: &Path, tenant: Uuid) -> Option<HashSet<u64>> {
    let meta: Meta = serde_json::from_slice(&std::fs::read(meta_path(dir, tenant)).ok()?).ok()?;
    Some(all_files(&meta))
}

/// The bytes the images in `dir` claim (what their rows need, not the files' capacity),
/// summed over tenants, by part: the time, person and name of every row, the person-ordered
/// projection, property values (with their value lists), property presence (bits and
/// ranks), and line items. Unreadable images are skipped. For reports (`bench memory`).
pub fn breakdown(dir: &Path) -> std::io::Result<Vec<(&'static str, u64)>> {
    let mut fixed = 0u64;
    let mut projection = 0u64;
    let mut values = 0u64;
    let mut presence = 0u64;
    let mut lines = 0u64;
    let prop = |p: &PropMeta, size: usize| -> (u64, u64) {
        match p {
            PropMeta::Sparse {
                width,
                bits,
                ranks,
                values,
                dict,
                ..
            } => (
                (values.len * width + dict.map_or(0, |d| d.len * size)) as u64,
                (bits.len * 8 + ranks.len * 4) as u64,
            ),
            PropMeta::Dense(c) => ((c.len * size) as u64, 0),
        }
    };
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".image.json") {
            continue;
        }
        let Ok(meta) = serde_json::from_slice::<Meta>(&std::fs::read(&path)?) else {
            continue;
        };
        fixed += (meta.person.len * 4 + meta.ts.len * 8 + meta.name.len * 4) as u64;
        for r in &meta.runs {
            projection += (r.start.len * 4 + r.row.len * 4 + r.ts.len * 8 + r.name.len * 4) as u64;
        }
        for (cols, size) in [(&meta.strings, 4), (&meta.numbers, 8)] {
            for (_, p) in cols {
                let (v, b) = prop(p, size);
                values += v;
                presence += b;
            }
        }
        lines += (meta.lines.row.len * 4) as u64;
        for (cols, size) in [(&meta.lines.strings, 4), (&meta.lines.numbers, 8)] {
            for (_, p) in cols {
                let (v, b) = prop(p, size);
                lines += v + b;
            }
        }
    }
    Ok(vec![
        ("time, person, name", fixed),
        ("projection", projection),
        ("property values", values),
        ("property presence", presence),
        ("line items", lines),
    ])
}

/// Every file an image names.
fn all_files(meta: &Meta) -> HashSet<u64> {
    let mut ids: HashSet<u64> = [meta.person, meta.ts, meta.name, meta.lines.row]
        .iter()
        .map(|c| c.file)
        .collect();
    let keyed = [
        &meta.strings,
        &meta.numbers,
        &meta.lines.strings,
        &meta.lines.numbers,
    ];
    ids.extend(keyed.into_iter().flatten().flat_map(|(_, c)| c.files()));
    for r in &meta.runs {
        ids.extend([r.start.file, r.row.file, r.ts.file, r.name.file]);
    }
    ids
}

/// Column `c` of an image, its first `len` values (at most its claimed length).
fn open<T: Plain>(spill: &Arc<Spill>, c: ColMeta, len: usize) -> Result<Column<T>, ImageError> {
    Ok(Column::open(spill, c.file, c.len.min(len))?)
}

/// Property column `c` of an image, its first `rows` rows at most (a version 1 column is
/// converted: `present` tells its values from its blanks).
fn open_prop<T: Plain>(
    spill: &Arc<Spill>,
    c: PropMeta,
    rows: usize,
    present: impl Fn(&T) -> bool,
) -> Result<Coded<T>, ImageError> {
    match c {
        PropMeta::Sparse {
            rows: covered,
            first,
            width,
            bits,
            ranks,
            values,
            dict,
        } => {
            let rows = covered.min(rows);
            let words = rows.div_ceil(64).saturating_sub(first);
            let bits = open::<u64>(spill, bits, words)?;
            let ranks = open::<u32>(spill, ranks, words.div_ceil(sparse::BLOCK_WORDS))?;
            let bad = |e: sparse::Inconsistent| ImageError::Invalid(e.to_string());
            let codes = match width {
                1 => Codes::U8(
                    Sparse::from_parts(rows, first, bits, ranks, open(spill, values, values.len)?)
                        .map_err(bad)?,
                ),
                2 => Codes::U16(
                    Sparse::from_parts(rows, first, bits, ranks, open(spill, values, values.len)?)
                        .map_err(bad)?,
                ),
                w if w == size_of::<T>() => Codes::Plain(
                    Sparse::from_parts(rows, first, bits, ranks, open(spill, values, values.len)?)
                        .map_err(bad)?,
                ),
                w => {
                    return Err(ImageError::Invalid(format!(
                        "a property column of {w}-byte values"
                    )));
                }
            };
            let dict = match (width, dict) {
                (1 | 2, Some(d)) if d.len <= MAX_CODED => open::<T>(spill, d, d.len)?,
                (1 | 2, Some(d)) => {
                    return Err(ImageError::Invalid(format!(
                        "a property column of codes lists {} values, at most {MAX_CODED} are coded",
                        d.len
                    )));
                }
                (1 | 2, None) => {
                    return Err(ImageError::Invalid(
                        "a property column of codes without its values".into(),
                    ));
                }
                _ => Column::new(Some(spill.clone())),
            };
            Ok(Coded::from_parts(codes, dict, Some(spill.clone())))
        }
        PropMeta::Dense(c) => {
            let dense = open::<T>(spill, c, rows)?;
            let mut s = Coded::new(Some(spill.clone()));
            for (row, v) in dense.iter().enumerate().filter(|(_, v)| present(v)) {
                s.set(row, *v);
            }
            Ok(s)
        }
    }
}

/// A dictionary file's first `m.values` values, as a dictionary with the same ids.
fn read_dict(path: &Path, m: DictMeta) -> Result<Dictionary, ImageError> {
    let mut d = Dictionary::default();
    if m.values == 0 {
        return Ok(d);
    }
    let bytes = std::fs::read(path)?;
    let bad = || ImageError::Invalid(format!("{} is shorter than its image says", path.display()));
    let mut rest = bytes.get(..m.bytes as usize).ok_or_else(bad)?;
    for id in 0..m.values {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len) as usize;
        let (v, tail) = tail.split_at_checked(len).ok_or_else(bad)?;
        let v = std::str::from_utf8(v).map_err(|_| {
            ImageError::Invalid(format!(
                "{} holds a value that is not UTF-8",
                path.display()
            ))
        })?;
        if d.intern(v) as usize != id {
            return Err(ImageError::Invalid(format!(
                "{} repeats a value",
                path.display()
            )));
        }
        rest = tail;
    }
    Ok(d)
}

/// The files an image being written names: to sync, then to pin.
#[derive(Default)]
struct Named {
    files: Vec<File>,
    ids: HashSet<u64>,
}

impl Named {
    /// Column `c` as an image entry of at most `len` values, its file noted.
    fn entry<T: Plain>(&mut self, c: &Column<T>, len: usize) -> Result<ColMeta, ImageError> {
        let (Some(file), Some(handle)) = (c.file_id(), c.file()) else {
            return Err(ImageError::Invalid("a column has no named file".into()));
        };
        self.files.push(handle?);
        self.ids.insert(file);
        Ok(ColMeta {
            file,
            len: c.len().min(len),
        })
    }

    /// A property column's parts as an image entry for its rows below `rows`.
    fn coded<T: Plain>(&mut self, c: &mut Coded<T>, rows: usize) -> Result<PropMeta, ImageError> {
        let (codes, dict) = c.parts_mut();
        let (rows, first, width, [bits, ranks, values]) = match codes {
            Codes::U8(s) => self.sparse(s, rows)?,
            Codes::U16(s) => self.sparse(s, rows)?,
            Codes::Plain(s) => self.sparse(s, rows)?,
        };
        let dict = if width <= 2 {
            Some(self.persisted(dict, usize::MAX)?)
        } else {
            None
        };
        Ok(PropMeta::Sparse {
            rows,
            first,
            width,
            bits,
            ranks,
            values,
            dict,
        })
    }

    /// A sparse column's three parts for its rows below `rows`: rows covered, first word,
    /// value width, and the entries of its presence words, ranks and values.
    fn sparse<U: Plain>(
        &mut self,
        s: &mut Sparse<U>,
        rows: usize,
    ) -> Result<(usize, usize, usize, [ColMeta; 3]), ImageError> {
        let covered = rows.min(s.len());
        let (words, ranks, values) = s.lengths(covered);
        let parts = s.parts_mut();
        let entries = [
            self.persisted(parts.0, words)?,
            self.persisted(parts.1, ranks)?,
            self.persisted(parts.2, values)?,
        ];
        Ok((covered, s.first(), size_of::<U>(), entries))
    }

    /// As [`Named::entry`], after giving the column its file if it has none.
    fn persisted<T: Plain>(
        &mut self,
        c: &mut Column<T>,
        len: usize,
    ) -> Result<ColMeta, ImageError> {
        c.persist()?;
        self.entry(c, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &str, rows: u64) -> Source {
        Source {
            path: path.to_owned(),
            rows,
        }
    }

    fn seg(path: &str, rows: u64) -> SegmentMeta {
        SegmentMeta {
            path: path.to_owned(),
            rows,
            bytes: 0,
            min_ts: 0,
            max_ts: 0,
        }
    }

    /// An image serves the longest prefix of its sources in which every segment is whole
    /// and named by the manifest, whatever the manifest's order.
    #[test]
    fn an_image_serves_the_whole_segments_the_manifest_names() {
        let m = [seg("b", 3), seg("m", 3)];
        // `m` merged `a` (2 rows, first) and `c` (1 row, third): its parts are both held.
        assert_eq!(held(&[src("m", 2), src("b", 3), src("m", 1)], &m), 3);
        // A source the manifest no longer names (expired, or merged before the image knew)
        // ends the prefix; a segment of which only a part is before it does not count.
        assert_eq!(held(&[src("b", 3), src("a", 2), src("m", 1)], &m), 1);
        assert_eq!(held(&[src("m", 2), src("x", 3), src("m", 1)], &m), 0);
        // More rows than the manifest says: not the same file.
        assert_eq!(held(&[src("b", 4)], &m), 0);
        // Segments sealed after the image are simply not held.
        assert_eq!(held(&[src("b", 3)], &[seg("b", 3), seg("n", 9)]), 1);
        assert_eq!(held(&[], &m), 0);
    }
}
