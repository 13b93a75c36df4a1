//! The profiles of one tenant by person: decoded while hot, encoded while cold, so that the
//! memory profiles take is set by `[profiles] memory_limit_mb` rather than by the number of
//! persons.
//!
//! - A **hot** profile is a decoded [`Profile`] behind an `Arc` (shared with a snapshot's
//!   [frozen](People::frozen) copy until changed), about 1.5 KB at the bench's shop; the
//!   budget counts it by [`Profile::heap_bytes`], which `tests/heap.rs` checks against the
//!   allocator.
//! - A **cold** profile is its compact MessagePack encoding (the snapshot's encoding of one
//!   profile) in an append-only arena: chunks of [`CHUNK`] bytes; a full chunk is written to
//!   an unnamed scratch file (`O_TMPFILE` in the budget's directory: nothing is left behind
//!   by a crash), encrypted under a key held in this process's memory only (profiles hold
//!   decrypted traits; see [`Scratch`]), and mapped read-only, so its pages are the kernel's
//!   to reclaim. The table
//!   then holds 12 bytes of location per cold person.
//! - Without a [`Budget`] every profile stays hot (as before this module). With one, every
//!   profile that is promoted (read for a change, or created) may first push others out: the
//!   oldest hot profile not used since it was last passed over (a clock, "second chance")
//!   goes cold. A profile that was not changed since it went cold keeps its encoding, so
//!   going cold again costs nothing. Reads under `&self` decode a cold profile without
//!   promoting it.
//! - The arena's garbage (encodings of profiles changed or removed since) is compacted away
//!   when it outgrows the live part.
//!
//! The scratch files are a cache, not a store: snapshots write every profile decoded, in the
//! format they always had. Encoding and the clock are hand-written here: a profile table
//! with a cold tier is the job of this module, and no crate does it over our types.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use memmap2::Mmap;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::identity::PersonId;
use crate::profile::Profile;

/// Bytes of encodings gathered before they go to a scratch file of their own.
pub const CHUNK: usize = 4 << 20;

/// The heap a hot profile takes: what it holds, and itself with the `Arc`'s counts.
fn hot_size(profile: &Profile) -> usize {
    profile.heap_bytes() + size_of::<Profile>() + 2 * size_of::<usize>()
}

/// A first guess of a decoded profile's heap size, before any was measured.
const FIRST_GUESS: usize = 1536;

/// The memory profiles may take on a node, shared by every tenant's [`People`].
#[derive(Debug)]
pub struct Budget {
    scratch: Arc<Scratch>,
    limit: usize,
    /// Estimated heap bytes of hot profiles, every tenant.
    hot: AtomicUsize,
    /// Bytes of cold encodings (on the heap or mapped), every tenant.
    cold: AtomicUsize,
    evictions: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes, with scratch files in `dir` (created if missing; the files
    /// are unnamed, so nothing in it is removed or left behind).
    pub fn new(limit: usize, dir: impl AsRef<Path>) -> std::io::Result<Arc<Self>> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Self {
            scratch: Arc::new(Scratch {
                dir,
                key: rand::random(),
                chunks: AtomicU64::new(0),
            }),
            limit,
            hot: AtomicUsize::new(0),
            cold: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
        }))
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Estimated heap bytes of the decoded profiles.
    pub fn hot_bytes(&self) -> usize {
        self.hot.load(Ordering::Relaxed)
    }

    /// Bytes of encoded profiles (resident or not).
    pub fn cold_bytes(&self) -> usize {
        self.cold.load(Ordering::Relaxed)
    }

    /// Profiles moved from hot to cold since the start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.hot_bytes() > self.limit
    }
}

thread_local! {
    /// The budget a [`People`] read back on this thread takes (see [`reading_with`]).
    static READING: RefCell<Option<Arc<Budget>>> = const { RefCell::new(None) };
}

/// Runs `f` (which reads a snapshot back) so that the profiles it reads go cold as they come
/// in, under `budget`, instead of all being decoded first: a snapshot of ten million
/// profiles is larger than the budget it is read under.
pub fn reading_with<R>(budget: Option<Arc<Budget>>, f: impl FnOnce() -> R) -> R {
    let before = READING.with(|r| r.replace(budget));
    let out = f();
    READING.with(|r| *r.borrow_mut() = before);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    chunk: u32,
    off: u32,
    len: u32,
}

#[derive(Clone)]
enum Slot {
    Hot {
        profile: Arc<Profile>,
        /// Where its encoding still holds (it did not change since it was cold).
        encoded: Option<Loc>,
        /// Used since the clock last passed it.
        used: bool,
    },
    Cold(Loc),
}

/// Where full chunks go, and the key they are written under.
///
/// Profiles hold decrypted traits (emails, names, phone numbers), and with encryption at
/// rest they must never reach the disk in the clear. A chunk is written encrypted with
/// AES-256 in counter mode under a key made at random when the budget is made and kept in
/// this process's memory alone, so what a scratch file leaves on the disk is unreadable
/// once the process is gone. Counter mode lets one profile be decrypted where it lies
/// (seek to its offset) without the rest of the chunk; each chunk has its own nonce (its
/// number). Integrity is not the point: the file is this process's own, unnamed.
struct Scratch {
    dir: PathBuf,
    key: [u8; 32],
    /// Chunks written so far: the next one's nonce.
    chunks: AtomicU64,
}

impl fmt::Debug for Scratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scratch").field("dir", &self.dir).finish()
    }
}

impl Scratch {
    /// Encrypts or decrypts `data`, found at `offset` of chunk `nonce`.
    fn apply(&self, nonce: u64, offset: u64, data: &mut [u8]) {
        use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&nonce.to_be_bytes());
        let mut c = ctr::Ctr64BE::<aes::Aes256>::new(&self.key.into(), &iv.into());
        c.seek(offset);
        c.apply_keystream(data);
    }
}

/// A full chunk: an unnamed scratch file, encrypted, mapped read-only; or (when the file
/// could not be made) the bytes on the heap.
enum Chunk {
    Mapped {
        map: Mmap,
        nonce: u64,
        scratch: Arc<Scratch>,
    },
    Heap(Vec<u8>),
}

/// The stored bytes of a cold profile (still encrypted if in a scratch file).
#[derive(Clone, Copy)]
pub struct Cold<'a> {
    bytes: &'a [u8],
    sealed: Option<(&'a Scratch, u64, u64)>,
}

impl<'a> Cold<'a> {
    /// The encoding in the clear.
    fn plain(self) -> Cow<'a, [u8]> {
        match self.sealed {
            None => Cow::Borrowed(self.bytes),
            Some((scratch, nonce, offset)) => {
                let mut out = self.bytes.to_vec();
                scratch.apply(nonce, offset, &mut out);
                Cow::Owned(out)
            }
        }
    }
}

impl Chunk {
    fn cold(&self, off: usize, len: usize) -> Cold<'_> {
        match self {
            Chunk::Mapped {
                map,
                nonce,
                scratch,
            } => Cold {
                bytes: map.get(off..off + len).unwrap_or_default(),
                sealed: Some((scratch, *nonce, off as u64)),
            },
            Chunk::Heap(v) => Cold {
                bytes: v.get(off..off + len).unwrap_or_default(),
                sealed: None,
            },
        }
    }

    fn seal(mut bytes: Vec<u8>, scratch: Option<&Arc<Scratch>>) -> Chunk {
        let Some(scratch) = scratch else {
            return Chunk::Heap(bytes);
        };
        let nonce = scratch.chunks.fetch_add(1, Ordering::Relaxed);
        scratch.apply(nonce, 0, &mut bytes);
        let mapped = tempfile::tempfile_in(&scratch.dir).and_then(|mut f| {
            f.write_all(&bytes)?;
            #[allow(unsafe_code)]
            // SAFETY: the file is unnamed and this process's alone, and is never written
            // again: the mapping's bytes cannot change under the slices read from it.
            unsafe {
                Mmap::map(&f)
            }
        });
        match mapped {
            Ok(map) => Chunk::Mapped {
                map,
                nonce,
                scratch: scratch.clone(),
            },
            Err(e) => {
                tracing::warn!(error = %e, dir = %scratch.dir.display(),
                    "cannot write cold profiles to a scratch file; they stay on the heap");
                scratch.apply(nonce, 0, &mut bytes);
                Chunk::Heap(bytes)
            }
        }
    }

    fn evict(&self) {
        if let Chunk::Mapped { map: m, .. } = self {
            // SAFETY: a read-only mapping of a file: dropped pages are read back from it.
            #[allow(unsafe_code)]
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

/// Encodings, append-only.
#[derive(Clone, Default)]
struct Arena {
    full: Vec<Arc<Chunk>>,
    open: Vec<u8>,
    /// Bytes still referenced by a slot.
    live: usize,
    /// Bytes written.
    written: usize,
}

impl Arena {
    fn put(&mut self, bytes: &[u8], scratch: Option<&Arc<Scratch>>) -> Option<Loc> {
        let len = u32::try_from(bytes.len()).ok()?;
        if !self.open.is_empty() && self.open.len() + bytes.len() > CHUNK {
            let open = std::mem::replace(&mut self.open, Vec::with_capacity(CHUNK));
            self.full.push(Arc::new(Chunk::seal(open, scratch)));
        }
        let loc = Loc {
            chunk: u32::try_from(self.full.len()).ok()?,
            off: u32::try_from(self.open.len()).ok()?,
            len,
        };
        self.open.extend_from_slice(bytes);
        self.live += bytes.len();
        self.written += bytes.len();
        Some(loc)
    }

    fn get(&self, loc: Loc) -> Cold<'_> {
        let (off, len) = (loc.off as usize, loc.len as usize);
        match self.full.get(loc.chunk as usize) {
            Some(c) => c.cold(off, len),
            None => Cold {
                bytes: self.open.get(off..off + len).unwrap_or_default(),
                sealed: None,
            },
        }
    }

    fn evict(&self) {
        for c in &self.full {
            c.evict();
        }
    }
}

fn encode(p: &Profile) -> Option<Vec<u8>> {
    rmp_serde::to_vec(p).ok()
}

fn decode(bytes: &[u8]) -> Profile {
    rmp_serde::from_slice(bytes).unwrap_or_else(|e| {
        // Bytes this process wrote: only a failing disk under the scratch file gets here.
        tracing::error!(error = %e, "a cold profile cannot be read back; it reads as empty");
        Profile::default()
    })
}

/// A profile as stored: decoded, or encoded (decode with [`Stored::load`]).
#[derive(Clone, Copy)]
pub enum Stored<'a> {
    Hot(&'a Profile),
    Cold(Cold<'a>),
}

impl<'a> Stored<'a> {
    pub fn load(self) -> Cow<'a, Profile> {
        match self {
            Stored::Hot(p) => Cow::Borrowed(p),
            Stored::Cold(c) => Cow::Owned(decode(&c.plain())),
        }
    }
}

impl Serialize for Stored<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.load().serialize(s)
    }
}

/// The profiles of one tenant (see the module doc).
pub struct People {
    table: crate::Table<PersonId, Slot>,
    arena: Arena,
    budget: Option<Arc<Budget>>,
    /// Hot persons in the order the clock visits them (entries of persons gone cold or
    /// removed since are skipped when met).
    clock: VecDeque<PersonId>,
    hot: usize,
    /// Estimated heap bytes of one hot profile (a moving average of those that went cold).
    each: usize,
    /// What this table counts in the budget: `(hot bytes, cold bytes)`.
    charged: (usize, usize),
    last_page_eviction: Option<Instant>,
    /// Each customer's RFM key, once asked for (see [`People::with_rfm_keys`]).
    rfm: Mutex<RfmKeys>,
}

/// Each customer's [`crate::computed::Computed::rfm_key`], so that one person's RFM scores
/// need no pass over every profile (which decodes the cold ones). Built at the first
/// question; from then on, the persons changed since the last question are read again
/// (`dirty`, filled by [`People::promote`] and [`People::remove`]).
#[derive(Debug, Default)]
struct RfmKeys {
    built: bool,
    keys: hashbrown::HashMap<PersonId, [f64; 3]>,
    dirty: hashbrown::HashSet<PersonId>,
}

impl Default for People {
    fn default() -> Self {
        Self {
            table: crate::Table::new(),
            arena: Arena::default(),
            budget: None,
            clock: VecDeque::new(),
            hot: 0,
            each: FIRST_GUESS,
            charged: (0, 0),
            last_page_eviction: None,
            rfm: Mutex::default(),
        }
    }
}

impl Drop for People {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.hot.fetch_sub(self.charged.0, Ordering::Relaxed);
            b.cold.fetch_sub(self.charged.1, Ordering::Relaxed);
        }
    }
}

impl Clone for People {
    /// A copy outside any budget (see [`People::frozen`]).
    fn clone(&self) -> Self {
        self.frozen()
    }
}

impl fmt::Debug for People {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("People")
            .field("len", &self.table.len())
            .field("hot", &self.hot)
            .field("cold_bytes", &self.arena.live)
            .finish()
    }
}

impl People {
    /// Puts the table under `budget` (`None`: every profile hot), going cold at once as far
    /// as the budget asks.
    pub fn set_budget(&mut self, budget: Option<Arc<Budget>>) {
        if let Some(old) = &self.budget {
            old.hot.fetch_sub(self.charged.0, Ordering::Relaxed);
            old.cold.fetch_sub(self.charged.1, Ordering::Relaxed);
        }
        self.charged = (0, 0);
        self.budget = budget;
        self.clock.clear();
        if self.budget.is_some() {
            let hot: Vec<PersonId> = self
                .table
                .iter()
                .filter(|(_, s)| matches!(s, Slot::Hot { .. }))
                .map(|(p, _)| *p)
                .collect();
            self.clock.extend(hot);
        }
        self.recharge();
        self.enforce();
    }

    /// A copy for a snapshot to write, taken in a fraction of the time writing takes: hot
    /// profiles and full chunks are shared; outside any budget.
    pub fn frozen(&self) -> Self {
        Self {
            table: self.table.clone(),
            arena: self.arena.clone(),
            budget: None,
            clock: VecDeque::new(),
            hot: self.hot,
            each: self.each,
            charged: (0, 0),
            last_page_eviction: None,
            rfm: Mutex::default(),
        }
    }

    /// Calls `f` with every customer's RFM key (persons without an order have none),
    /// brought up to date first: built with one pass over every profile at the first call,
    /// then by reading again only the persons changed since the call before.
    pub fn with_rfm_keys<R>(
        &self,
        f: impl FnOnce(&hashbrown::HashMap<PersonId, [f64; 3]>) -> R,
    ) -> R {
        let mut r = self.rfm.lock().unwrap_or_else(PoisonError::into_inner);
        let r = &mut *r;
        if !r.built || r.dirty.len() > self.table.len() / 4 {
            r.keys.clear();
            for (p, stored) in self.iter() {
                if let Some(k) = stored.load().computed.rfm_key() {
                    r.keys.insert(p, k);
                }
            }
            r.keys.shrink_to_fit();
            r.built = true;
        } else {
            for p in r.dirty.iter() {
                match self.get(p).and_then(|prof| prof.computed.rfm_key()) {
                    Some(k) => r.keys.insert(*p, k),
                    None => r.keys.remove(p),
                };
            }
        }
        r.dirty = hashbrown::HashSet::new();
        f(&r.keys)
    }

    /// `p`'s profile may change: its RFM key is read again at the next question.
    fn touched(&mut self, p: PersonId) {
        let r = self.rfm.get_mut().unwrap_or_else(PoisonError::into_inner);
        if r.built {
            r.dirty.insert(p);
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Decoded profiles held.
    pub fn hot(&self) -> usize {
        self.hot
    }

    pub fn contains(&self, p: &PersonId) -> bool {
        self.table.contains_key(p)
    }

    fn stored<'a>(&'a self, slot: &'a Slot) -> Stored<'a> {
        match slot {
            Slot::Hot { profile, .. } => Stored::Hot(profile),
            Slot::Cold(loc) => Stored::Cold(self.arena.get(*loc)),
        }
    }

    /// A profile, decoded if cold (without making it hot).
    pub fn get(&self, p: &PersonId) -> Option<Cow<'_, Profile>> {
        self.table.get(p).map(|s| self.stored(s).load())
    }

    /// Every profile, in the table's order.
    pub fn iter(&self) -> impl Iterator<Item = (PersonId, Stored<'_>)> {
        self.table.iter().map(|(p, s)| (*p, self.stored(s)))
    }

    /// Every person.
    pub fn ids(&self) -> impl Iterator<Item = PersonId> + '_ {
        self.table.keys().copied()
    }

    /// Every profile, hot ones in the order they sit in memory, then cold ones in the order
    /// of their encodings: a walk over all of them (a recompute, a snapshot) waits on
    /// memory, and neighbours in memory then come one after another.
    pub fn in_memory_order(&self) -> Vec<(PersonId, Stored<'_>)> {
        let mut all: Vec<(PersonId, &Slot)> = self.table.iter().map(|(p, s)| (*p, s)).collect();
        all.sort_unstable_by_key(|&(_, s)| match s {
            Slot::Hot { profile, .. } => (0, Arc::as_ptr(profile) as usize, 0),
            Slot::Cold(l) => (1, l.chunk as usize, l.off),
        });
        all.into_iter().map(|(p, s)| (p, self.stored(s))).collect()
    }

    /// A profile to change (`None`: no such person), made hot.
    pub fn get_mut(&mut self, p: PersonId) -> Option<&mut Profile> {
        if !self.table.contains_key(&p) {
            return None;
        }
        Some(self.promote(p))
    }

    /// A profile to change, made hot, created empty if missing.
    pub fn entry(&mut self, p: PersonId) -> &mut Profile {
        if !self.table.contains_key(&p) {
            self.enforce();
            self.table.insert(
                p,
                Slot::Hot {
                    profile: Arc::default(),
                    encoded: None,
                    used: true,
                },
            );
            self.became_hot(p);
        }
        self.promote(p)
    }

    /// Takes a person's profile out.
    pub fn remove(&mut self, p: &PersonId) -> Option<Profile> {
        self.touched(*p);
        let out = match self.table.remove(p)? {
            Slot::Hot {
                profile, encoded, ..
            } => {
                self.hot -= 1;
                if let Some(l) = encoded {
                    self.arena.live -= l.len as usize;
                }
                Arc::unwrap_or_clone(profile)
            }
            Slot::Cold(l) => {
                let profile = decode(&self.arena.get(l).plain());
                self.arena.live -= l.len as usize;
                profile
            }
        };
        self.recharge();
        Some(out)
    }

    /// Applies `f` to every profile; `f` answers whether it changed it. Cold profiles are
    /// changed where they are (encoded again), without making them hot.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut Profile) -> bool) {
        // Any profile may change: the RFM keys are built again at the next question.
        *self.rfm.get_mut().unwrap_or_else(PoisonError::into_inner) = RfmKeys::default();
        let scratch = self.budget.as_ref().map(|b| b.scratch.clone());
        let mut changed_cold: Vec<(PersonId, Loc, Vec<u8>)> = Vec::new();
        for (p, slot) in self.table.iter_mut() {
            match slot {
                Slot::Hot {
                    profile, encoded, ..
                } => {
                    // Copied first only if a snapshot still holds it.
                    if f(Arc::make_mut(profile))
                        && let Some(l) = encoded.take()
                    {
                        self.arena.live -= l.len as usize;
                    }
                }
                Slot::Cold(l) => {
                    let mut profile = decode(&self.arena.get(*l).plain());
                    if f(&mut profile)
                        && let Some(bytes) = encode(&profile)
                    {
                        changed_cold.push((*p, *l, bytes));
                    }
                }
            }
        }
        for (p, old, bytes) in changed_cold {
            self.arena.live -= old.len as usize;
            match self.arena.put(&bytes, scratch.as_ref()) {
                Some(loc) => {
                    self.table.insert(p, Slot::Cold(loc));
                }
                None => {
                    self.table.insert(
                        p,
                        Slot::Hot {
                            profile: Arc::new(decode(&bytes)),
                            encoded: None,
                            used: true,
                        },
                    );
                    self.became_hot(p);
                }
            }
        }
        self.compact_if_wasteful();
        self.recharge();
    }

    /// Estimated heap bytes (see [`crate::heap`]): the table, the hot profiles, the cold
    /// encodings not yet in a scratch file (those in one are the page cache's), the clock
    /// and the RFM keys once asked for.
    pub fn heap_bytes(&self) -> usize {
        use crate::heap;
        let rfm = {
            let r = self.rfm.lock().unwrap_or_else(PoisonError::into_inner);
            heap::table::<PersonId, [f64; 3]>(r.keys.capacity())
                + heap::table::<PersonId, ()>(r.dirty.capacity())
        };
        let hot = self
            .table
            .values()
            .map(|s| match s {
                Slot::Hot { profile, .. } => hot_size(profile),
                Slot::Cold(_) => 0,
            })
            .sum::<usize>();
        let chunks = self
            .arena
            .full
            .iter()
            .map(|c| {
                2 * size_of::<usize>()
                    + size_of::<Chunk>()
                    + match &**c {
                        Chunk::Heap(b) => b.capacity(),
                        Chunk::Mapped { .. } => 0,
                    }
            })
            .sum::<usize>();
        rfm + hot
            + chunks
            + heap::table::<PersonId, Slot>(self.table.capacity())
            + self.arena.open.capacity()
            + self.arena.full.capacity() * size_of::<usize>()
            + self.clock.capacity() * size_of::<PersonId>()
    }

    /// Bytes of live encodings.
    pub fn cold_bytes(&self) -> usize {
        self.arena.live
    }

    /// Makes `p` (present) hot and answers it for a change.
    fn promote(&mut self, p: PersonId) -> &mut Profile {
        self.touched(p);
        if let Some(Slot::Cold(_)) = self.table.get(&p) {
            self.enforce();
            let Some(Slot::Cold(loc)) = self.table.get(&p).cloned() else {
                unreachable!("checked above; enforcing moves hot profiles only")
            };
            let profile = decode(&self.arena.get(loc).plain());
            self.table.insert(
                p,
                Slot::Hot {
                    profile: Arc::new(profile),
                    encoded: Some(loc),
                    used: true,
                },
            );
            self.became_hot(p);
        }
        let mut dropped = false;
        if let Some(Slot::Hot { encoded, used, .. }) = self.table.get_mut(&p) {
            *used = true;
            // Changed from here on: its encoding no longer holds.
            if let Some(l) = encoded.take() {
                self.arena.live -= l.len as usize;
                dropped = true;
            }
        }
        if dropped {
            self.recharge();
        }
        match self.table.get_mut(&p) {
            Some(Slot::Hot { profile, .. }) => Arc::make_mut(profile),
            _ => unreachable!("made hot above"),
        }
    }

    fn became_hot(&mut self, p: PersonId) {
        self.hot += 1;
        if self.budget.is_some() {
            self.clock.push_back(p);
        }
        self.recharge();
    }

    /// Tells the budget what this table holds now.
    fn recharge(&mut self) {
        let Some(b) = &self.budget else {
            return;
        };
        let now = (self.hot * self.each, self.arena.live);
        if now.0 >= self.charged.0 {
            b.hot.fetch_add(now.0 - self.charged.0, Ordering::Relaxed);
        } else {
            b.hot.fetch_sub(self.charged.0 - now.0, Ordering::Relaxed);
        }
        if now.1 >= self.charged.1 {
            b.cold.fetch_add(now.1 - self.charged.1, Ordering::Relaxed);
        } else {
            b.cold.fetch_sub(self.charged.1 - now.1, Ordering::Relaxed);
        }
        self.charged = now;
    }

    /// Moves hot profiles to cold while the budget is over and this table has any; drops
    /// the pages of the cold chunks (at most once a second) while hot and cold together are
    /// over it.
    pub fn enforce(&mut self) {
        let Some(budget) = self.budget.clone() else {
            return;
        };
        if budget.hot_bytes() + budget.cold_bytes() > budget.limit
            && self
                .last_page_eviction
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.arena.evict();
            self.last_page_eviction = Some(Instant::now());
        }
        if !budget.over() {
            return;
        }
        // Under the limit by a margin, so the next promotions do not each evict one.
        let target = budget.limit - budget.limit / 16;
        let mut passes = self.clock.len() * 2;
        let mut gone = 0u64;
        while budget.hot_bytes() > target && passes > 0 {
            passes -= 1;
            let Some(p) = self.clock.pop_front() else {
                break;
            };
            let Some(slot) = self.table.get_mut(&p) else {
                continue;
            };
            let Slot::Hot {
                profile,
                encoded,
                used,
            } = slot
            else {
                continue;
            };
            if *used {
                *used = false;
                self.clock.push_back(p);
                continue;
            }
            let size = hot_size(profile);
            let loc = match *encoded {
                Some(l) => Some(l),
                None => {
                    encode(profile).and_then(|bytes| self.arena.put(&bytes, Some(&budget.scratch)))
                }
            };
            let Some(loc) = loc else {
                // Cannot be encoded (larger than 4 GiB): stays hot.
                continue;
            };
            *slot = Slot::Cold(loc);
            self.hot -= 1;
            self.each = (self.each * 15 + size) / 16;
            gone += 1;
            self.recharge();
        }
        budget.evictions.fetch_add(gone, Ordering::Relaxed);
        self.compact_if_wasteful();
    }

    /// Writes the live encodings into fresh chunks once the garbage outweighs them (and a
    /// few chunks' worth): profiles changed or removed after going cold leave theirs behind.
    fn compact_if_wasteful(&mut self) {
        let garbage = self.arena.written - self.arena.live;
        if garbage <= self.arena.live.max(4 * CHUNK) {
            return;
        }
        let scratch = self.budget.as_ref().map(|b| b.scratch.clone());
        let old = std::mem::take(&mut self.arena);
        for slot in self.table.values_mut() {
            let loc = match slot {
                Slot::Cold(l) => l,
                Slot::Hot {
                    encoded: Some(l), ..
                } => l,
                Slot::Hot { encoded: None, .. } => continue,
            };
            let bytes = old.get(*loc).plain();
            match self.arena.put(&bytes, scratch.as_ref()) {
                Some(new) => *loc = new,
                None => unreachable!("it fitted before"),
            }
        }
        self.recharge();
    }
}

#[cfg(test)]
impl People {
    /// The bytes the slots reference, counted from the table.
    fn live_from_slots(&self) -> usize {
        self.table
            .values()
            .map(|s| match s {
                Slot::Cold(l)
                | Slot::Hot {
                    encoded: Some(l), ..
                } => l.len as usize,
                Slot::Hot { encoded: None, .. } => 0,
            })
            .sum()
    }
}

impl Serialize for People {
    /// Every profile decoded, as a map by person, in [`People::in_memory_order`].
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.in_memory_order())
    }
}

impl<'de> Deserialize<'de> for People {
    /// As written, under the budget of [`reading_with`] if any.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = People;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("profiles by person")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<People, A::Error> {
                let mut people = People::default();
                people.set_budget(READING.with(|r| r.borrow().clone()));
                while let Some((p, profile)) = m.next_entry::<PersonId, Profile>()? {
                    people.enforce();
                    people.table.insert(
                        p,
                        Slot::Hot {
                            profile: Arc::new(profile),
                            encoded: None,
                            used: false,
                        },
                    );
                    people.became_hot(p);
                }
                people.enforce();
                Ok(people)
            }
        }
        d.deserialize_map(Each)
    }
}

#[cfg(test)]
mod tests;
