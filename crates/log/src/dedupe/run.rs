//! Run files of the dedupe index: a frozen, sorted set of (fingerprint, minute) entries on
//! disk, memory-mapped, with a Bloom filter in front.
//!
//! # Format, version 1 (all integers little-endian)
//!
//! ```text
//! header   64 bytes
//!   0  magic          8 bytes  "LVDEDUPR"
//!   8  version        u32      1
//!  12  reserved       u32      0
//!  16  count          u64      entries
//!  24  filter_blocks  u64      32-byte filter blocks (at least 1)
//!  32  min_minute     u32      oldest append minute of an entry (0 when empty)
//!  36  max_minute     u32      newest append minute of an entry (0 when empty)
//!  40  body_crc       u32      CRC-32C of the filter and the entries
//!  44  reserved       16 bytes zero
//!  60  header_crc     u32      CRC-32C of bytes 0..60
//! filter   filter_blocks x 32 bytes: a split-block Bloom filter (eight u32 words a block)
//! entries  count x 16 bytes: fingerprint words k0, k1, k2 then the minute, each a u32,
//!          sorted ascending by (k2, k1, k0), each fingerprint once
//! ```
//!
//! The file is exactly `64 + 32 * filter_blocks + 16 * count` bytes. A key's filter block is
//! chosen by its top 32 bits (`k2`), so entries in key order visit the blocks in order and the
//! filter is written as a stream beside the entries, in constant memory. Within a block, one
//! bit of each word is set from `k0` and a fixed salt (the split-block filter of Parquet);
//! at [`BITS_PER_KEY`] bits a key it answers "maybe" for about 0.5% of absent keys, and a
//! "maybe" is settled by a binary search of the entries.
//!
//! Runs are scratch: the log is the source of truth and the index is rebuilt from it on open,
//! which deletes every file of the directory first. A file that fails any check of
//! [`Run::open`] is refused; the caller keeps the entries in memory instead.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::Key;

pub(crate) const MAGIC: &[u8; 8] = b"LVDEDUPR";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 64;
const BLOCK_LEN: usize = 32;
const ENTRY_LEN: usize = 16;
/// Filter bits a key: about 0.5% false "maybe"s with eight bits set a key.
pub(crate) const BITS_PER_KEY: u64 = 12;

const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// The order of entries in a run: by k2, then k1, then k0.
pub(crate) fn order(key: Key) -> u128 {
    (u128::from(key.0[2]) << 64) | (u128::from(key.0[1]) << 32) | u128::from(key.0[0])
}

pub(crate) fn filter_blocks(count: u64) -> u64 {
    count.saturating_mul(BITS_PER_KEY).div_ceil(256).max(1)
}

fn block_of(key: Key, blocks: u64) -> u64 {
    (u64::from(key.0[2]) * blocks) >> 32
}

fn masks(key: Key) -> [u32; 8] {
    let x = key.0[0];
    SALT.map(|s| 1u32 << (x.wrapping_mul(s) >> 27))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn entry_at(entries: &[u8], i: usize) -> (Key, u32) {
    let at = i * ENTRY_LEN;
    (
        Key([
            u32_at(entries, at),
            u32_at(entries, at + 4),
            u32_at(entries, at + 8),
        ]),
        u32_at(entries, at + 12),
    )
}

/// Why a run file was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid dedupe run {path}: {reason}")]
    Invalid { path: PathBuf, reason: &'static str },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A run file, mapped read-only.
pub(crate) struct Run {
    pub id: u64,
    pub path: PathBuf,
    map: Mmap,
    pub count: u64,
    blocks: u64,
    pub min_minute: u32,
    pub max_minute: u32,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.id)
            .field("count", &self.count)
            .field("min_minute", &self.min_minute)
            .field("max_minute", &self.max_minute)
            .finish()
    }
}

impl Run {
    /// Maps `path` and checks everything: magic, version, both CRCs, the length. A file that
    /// passes is one this code wrote whole.
    pub fn open(id: u64, path: &Path) -> Result<Run, RunError> {
        let bad = |reason| RunError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len < HEADER_LEN as u64 {
            return Err(bad("shorter than its header"));
        }
        // SAFETY: run files live in the log's directory, which the log holds locked; they are
        // written whole under a temporary name, renamed, and never modified afterwards (only
        // deleted, which leaves the mapping valid). Nothing else writes or truncates them.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io(path))?;
        let h = &map[..HEADER_LEN];
        if &h[..8] != MAGIC {
            return Err(bad("not a dedupe run (magic)"));
        }
        if crc32c::crc32c(&h[..60]) != u32_at(h, 60) {
            return Err(bad("header checksum mismatch"));
        }
        if u32_at(h, 8) != VERSION {
            return Err(bad("unknown format version"));
        }
        let count = u64_at(h, 16);
        let blocks = u64_at(h, 24);
        let expected = count
            .checked_mul(ENTRY_LEN as u64)
            .and_then(|e| blocks.checked_mul(BLOCK_LEN as u64)?.checked_add(e))
            .and_then(|b| b.checked_add(HEADER_LEN as u64));
        if blocks == 0 || expected != Some(len) {
            return Err(bad("length does not match the header"));
        }
        if crc32c::crc32c(&map[HEADER_LEN..]) != u32_at(h, 40) {
            return Err(bad("body checksum mismatch"));
        }
        let _ = map.advise(memmap2::Advice::Random);
        Ok(Run {
            id,
            path: path.to_owned(),
            count,
            blocks,
            min_minute: u32_at(h, 32),
            max_minute: u32_at(h, 36),
            map,
        })
    }

    fn filter(&self) -> &[u8] {
        &self.map[HEADER_LEN..HEADER_LEN + self.blocks as usize * BLOCK_LEN]
    }

    fn entries(&self) -> &[u8] {
        &self.map[HEADER_LEN + self.blocks as usize * BLOCK_LEN..]
    }

    /// Whether the filter lets `key` through (always, when the key is in the run).
    pub fn may_contain(&self, key: Key) -> bool {
        let at = block_of(key, self.blocks) as usize * BLOCK_LEN;
        let block = &self.filter()[at..at + BLOCK_LEN];
        masks(key)
            .iter()
            .enumerate()
            .all(|(i, m)| u32_at(block, i * 4) & m != 0)
    }

    /// The minute stored for `key`, if it is in the run.
    pub fn get(&self, key: Key) -> Option<u32> {
        if !self.may_contain(key) {
            return None;
        }
        self.search(key)
    }

    /// Binary search of the entries, without the filter.
    pub fn search(&self, key: Key) -> Option<u32> {
        let entries = self.entries();
        let want = order(key);
        let (mut lo, mut hi) = (0usize, self.count as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, m) = entry_at(entries, mid);
            match order(k).cmp(&want) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(m),
            }
        }
        None
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (Key, u32)> + '_ {
        let entries = self.entries();
        (0..self.count as usize).map(move |i| entry_at(entries, i))
    }

    /// Bytes of the file (page cache, not heap).
    pub fn file_len(&self) -> usize {
        self.map.len()
    }
}

/// Writes a run from entries given in key order, each key once: the filter and the entries
/// are streamed to their places in a temporary file, which [`RunWriter::finish`] renames.
pub(crate) struct RunWriter {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    /// Most entries the filter was sized for.
    max: u64,
    blocks: u64,
    block: u64,
    words: [u32; 8],
    filter_buf: Vec<u8>,
    filter_pos: u64,
    filter_crc: u32,
    entry_buf: Vec<u8>,
    entry_pos: u64,
    entry_crc: u32,
    count: u64,
    min_minute: u32,
    max_minute: u32,
    last: Option<u128>,
}

const BUF: usize = 1 << 16;

impl RunWriter {
    /// A writer for at most `max` entries, to `path` (through `path.tmp`).
    pub fn create(path: &Path, max: u64) -> Result<RunWriter, RunError> {
        let tmp = path.with_extension("run.tmp");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let blocks = filter_blocks(max);
        Ok(RunWriter {
            file,
            tmp,
            path: path.to_owned(),
            max,
            blocks,
            block: 0,
            words: [0; 8],
            filter_buf: Vec::with_capacity(BUF),
            filter_pos: HEADER_LEN as u64,
            filter_crc: 0,
            entry_buf: Vec::with_capacity(BUF),
            entry_pos: HEADER_LEN as u64 + blocks * BLOCK_LEN as u64,
            entry_crc: 0,
            count: 0,
            min_minute: u32::MAX,
            max_minute: 0,
            last: None,
        })
    }

    pub fn push(&mut self, key: Key, minute: u32) -> Result<(), RunError> {
        let o = order(key);
        if self.count == self.max || self.last.is_some_and(|l| l >= o) {
            return Err(RunError::Invalid {
                path: self.tmp.clone(),
                reason: "entries out of order or beyond the sized count",
            });
        }
        self.last = Some(o);
        let b = block_of(key, self.blocks);
        while self.block < b {
            self.end_block()?;
        }
        for (w, m) in self.words.iter_mut().zip(masks(key)) {
            *w |= m;
        }
        for w in [key.0[0], key.0[1], key.0[2], minute] {
            self.entry_buf.extend_from_slice(&w.to_le_bytes());
        }
        if self.entry_buf.len() >= BUF {
            self.flush_entries()?;
        }
        self.count += 1;
        self.min_minute = self.min_minute.min(minute);
        self.max_minute = self.max_minute.max(minute);
        Ok(())
    }

    /// Entries pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn end_block(&mut self) -> Result<(), RunError> {
        for w in self.words {
            self.filter_buf.extend_from_slice(&w.to_le_bytes());
        }
        self.words = [0; 8];
        self.block += 1;
        if self.filter_buf.len() >= BUF {
            self.flush_filter()?;
        }
        Ok(())
    }

    fn flush_filter(&mut self) -> Result<(), RunError> {
        self.file
            .write_all_at(&self.filter_buf, self.filter_pos)
            .map_err(io(&self.tmp))?;
        self.filter_crc = crc32c::crc32c_append(self.filter_crc, &self.filter_buf);
        self.filter_pos += self.filter_buf.len() as u64;
        self.filter_buf.clear();
        Ok(())
    }

    fn flush_entries(&mut self) -> Result<(), RunError> {
        self.file
            .write_all_at(&self.entry_buf, self.entry_pos)
            .map_err(io(&self.tmp))?;
        self.entry_crc = crc32c::crc32c_append(self.entry_crc, &self.entry_buf);
        self.entry_pos += self.entry_buf.len() as u64;
        self.entry_buf.clear();
        Ok(())
    }

    /// Completes the file, renames it into place and maps it. Run files are scratch (rebuilt
    /// from the log on open), so nothing is synced.
    pub fn finish(mut self, id: u64) -> Result<Run, RunError> {
        while self.block < self.blocks {
            self.end_block()?;
        }
        self.flush_filter()?;
        self.flush_entries()?;
        let body_len = self.entry_pos - HEADER_LEN as u64 - self.blocks * BLOCK_LEN as u64;
        let body_crc = crc32c::crc32c_combine(self.filter_crc, self.entry_crc, body_len as usize);
        let (min, max) = if self.count == 0 {
            (0, 0)
        } else {
            (self.min_minute, self.max_minute)
        };
        let header = header(self.count, self.blocks, min, max, body_crc);
        self.file.write_all_at(&header, 0).map_err(io(&self.tmp))?;
        self.file.set_len(self.entry_pos).map_err(io(&self.tmp))?;
        drop(self.file);
        fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        Run::open(id, &self.path)
    }

    /// Removes the temporary file of an abandoned write.
    pub fn abandon(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.tmp);
    }
}

pub(crate) fn header(
    count: u64,
    blocks: u64,
    min_minute: u32,
    max_minute: u32,
    body_crc: u32,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..32].copy_from_slice(&blocks.to_le_bytes());
    h[32..36].copy_from_slice(&min_minute.to_le_bytes());
    h[36..40].copy_from_slice(&max_minute.to_le_bytes());
    h[40..44].copy_from_slice(&body_crc.to_le_bytes());
    let crc = crc32c::crc32c(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::key;
    use uuid::Uuid;

    fn keys(n: u64) -> Vec<Key> {
        let mut k: Vec<Key> = (0..n)
            .map(|i| key(&Uuid::from_u128(7), format!("id-{i}").as_bytes()))
            .collect();
        k.sort_by_key(|k| order(*k));
        k
    }

    fn write(dir: &Path, keys: &[Key]) -> Run {
        let path = dir.join("1.run");
        let mut w = RunWriter::create(&path, keys.len() as u64 + 3).expect("create");
        for (i, k) in keys.iter().enumerate() {
            w.push(*k, 100 + i as u32 % 50).expect("push");
        }
        w.finish(1).expect("finish")
    }

    #[test]
    fn finds_every_entry_and_few_absent_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = keys(20_000);
        let run = write(dir.path(), &ks);
        assert_eq!(run.count, 20_000);
        assert_eq!((run.min_minute, run.max_minute), (100, 149));
        for (i, k) in ks.iter().enumerate() {
            assert_eq!(run.get(*k), Some(100 + i as u32 % 50));
        }
        let absent = 100_000;
        let maybes = (0..absent)
            .filter(|i| run.may_contain(key(&Uuid::from_u128(8), format!("x{i}").as_bytes())))
            .count();
        // About 0.5% expected; the filter was sized for 3 more keys than it holds.
        assert!(maybes < absent / 100, "{maybes} false maybes of {absent}");
        assert!(run.iter().map(|(k, _)| order(k)).is_sorted());
    }

    #[test]
    fn an_empty_run_is_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = write(dir.path(), &[]);
        assert_eq!(run.count, 0);
        assert_eq!(run.get(key(&Uuid::nil(), b"a")), None);
    }

    #[test]
    fn out_of_order_entries_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = keys(2);
        let mut w = RunWriter::create(&dir.path().join("1.run"), 2).expect("create");
        w.push(ks[1], 1).expect("push");
        assert!(w.push(ks[0], 1).is_err());
        assert!(w.push(ks[1], 1).is_err(), "a key twice");
        w.abandon();
    }

    #[test]
    fn damaged_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = keys(500);
        let good = std::fs::read(write(dir.path(), &ks).path).expect("read");
        let path = dir.path().join("2.run");
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"hello".to_vec(),
            good[..good.len() - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
        ];
        for at in [0, 9, 17, 33, 41, 61, HEADER_LEN + 3, good.len() - 5] {
            let mut b = good.clone();
            b[at] ^= 0x20;
            cases.push(b);
        }
        // A future version with a correct header checksum.
        let mut v2 = good.clone();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&v2[..60]);
        v2[60..64].copy_from_slice(&crc.to_le_bytes());
        cases.push(v2);
        for (i, bytes) in cases.iter().enumerate() {
            std::fs::write(&path, bytes).expect("write");
            assert!(Run::open(2, &path).is_err(), "case {i} accepted");
        }
        std::fs::write(&path, &good).expect("write");
        assert_eq!(Run::open(2, &path).expect("good").count, 500);
    }
}
