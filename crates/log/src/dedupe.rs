//! The dedupe index: which (tenant, id) pairs were appended within the window.
//!
//! Keys are the first 96 bits of the XXH3-128 hash of tenant and id (a false match among 10^8
//! live ids has a probability near 10^-13), mapped to the minute they were appended: 16 bytes
//! an entry in flat hash tables, swept every ten minutes. An id is remembered for at least the
//! window and at most ten minutes longer.
//!
//! The entries are spread over [`SHARDS`] tables by the key's top bits. One table of millions
//! of entries doubles all at once, and the writer thread (every append waits for it) stalled
//! for hundreds of milliseconds each time; a shard holds 1/256 of the entries, so its growth
//! costs well under a millisecond.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

use crate::format;
use crate::{Error, Shared};

const SWEEP_EVERY_MINUTES: u32 = 10;

/// How many tables the index is spread over.
const SHARDS: usize = 256;

/// The table of `key`: its top 8 bits, which the table hash (the low 64 bits) does not use.
fn shard_of(key: Key) -> usize {
    (key.0[2] >> 24) as usize
}

/// A 96-bit fingerprint of (tenant, id); `[u32; 3]` keeps table entries at 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key([u32; 3]);

impl std::hash::Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32));
    }
}

pub(crate) fn key(tenant: &Uuid, id: &[u8]) -> Key {
    let mut h = Xxh3::new();
    h.update(tenant.as_bytes());
    h.update(id);
    let d = h.digest128();
    Key([d as u32, (d >> 32) as u32, (d >> 64) as u32])
}

pub(crate) fn minute_of_us(us: i64) -> u32 {
    (us.max(0) / 60_000_000) as u32
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The keys are already uniform hashes: use their low 64 bits as the table hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

pub(crate) struct DedupeIndex {
    /// [`SHARDS`] tables, chosen by the key's top 8 bits (the table hash uses the low 64).
    seen: Vec<HashMap<Key, u32, KeyHasher>>,
    window_minutes: u32,
    last_sweep: u32,
}

impl DedupeIndex {
    pub fn new(window: Duration) -> Self {
        Self {
            seen: (0..SHARDS)
                .map(|_| HashMap::with_hasher(KeyHasher(0)))
                .collect(),
            window_minutes: (window.as_secs().div_ceil(60)) as u32,
            last_sweep: 0,
        }
    }

    /// Whether `key` was appended within the window before `minute`.
    pub fn contains(&self, key: Key, minute: u32) -> bool {
        self.shard(key)
            .get(&key)
            .is_some_and(|m| *m + self.window_minutes >= minute)
    }

    pub fn insert(&mut self, key: Key, minute: u32) {
        self.seen[shard_of(key)].insert(key, minute);
    }

    fn shard(&self, key: Key) -> &HashMap<Key, u32, KeyHasher> {
        &self.seen[shard_of(key)]
    }

    /// Forgets keys older than the window, at most every ten minutes.
    pub fn sweep(&mut self, minute: u32) {
        if minute < self.last_sweep + SWEEP_EVERY_MINUTES {
            return;
        }
        self.last_sweep = minute;
        let window = self.window_minutes;
        for shard in &mut self.seen {
            shard.retain(|_, m| *m + window >= minute);
        }
    }

    pub fn len(&self) -> usize {
        self.seen.iter().map(HashMap::len).sum()
    }
}

/// Rebuilds the index from the records of the last window.
pub(crate) fn rebuild(shared: &Shared) -> Result<DedupeIndex, Error> {
    let window = shared.opts.dedupe_window;
    let mut index = DedupeIndex::new(window);
    let now = now_us();
    let from_us = now - window.as_micros() as i64;
    let cutoff = SystemTime::now().checked_sub(window).unwrap_or(UNIX_EPOCH);
    let end = shared
        .durable_end
        .load(std::sync::atomic::Ordering::Acquire);
    for (_, path) in shared.segments.snapshot() {
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(Error::io(&path))?;
        if modified < cutoff {
            continue;
        }
        crate::reader::for_each_in_file(&path, end, |r: &format::RecordRef<'_>| {
            if r.appended_at_us >= from_us {
                index.insert(key(&r.tenant, r.id), minute_of_us(r.appended_at_us));
            }
        })?;
    }
    index.sweep(minute_of_us(now));
    tracing::info!(ids = index.len(), "dedupe index rebuilt from the log");
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<(Key, u32)>(), 16);
    }

    #[test]
    fn window_is_respected() {
        let mut d = DedupeIndex::new(Duration::from_secs(3600));
        let k = key(&Uuid::from_u128(1), b"m1");
        d.insert(k, 100);
        assert!(d.contains(k, 100));
        assert!(d.contains(k, 160));
        assert!(!d.contains(k, 161));
        assert!(
            !d.contains(key(&Uuid::from_u128(2), b"m1"), 100),
            "tenants differ"
        );
        d.sweep(200);
        assert_eq!(d.len(), 0);
    }
}
