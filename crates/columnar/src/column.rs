//! Growable columns that live on the heap while small and in a memory-mapped scratch file once
//! large, so the bulk of a table's history is held by the kernel's page cache instead of the
//! process's heap.
//!
//! A [`Column`] reads as a slice (`Deref<Target = [T]>`), whichever its backing, so the query
//! kernels index one set of columns by global row as before. It starts as a `Vec`; when it
//! would grow past [`Spill::min_bytes`] it moves to an unnamed file in the spill directory
//! (`O_TMPFILE`: nothing is left behind by a crash), mapped shared and read and written in
//! place, and grows by doubling the file and mapping it again.
//!
//! With [`Spill::named`] the files have names (`<id>.col`, kept until the column is dropped
//! and no image names them), so the column store can keep its sealed rows across a restart
//! (see [`crate::image`]); they remain a cache of the Parquet segments, which are the
//! source of truth (see ARCHITECTURE.md). What the files buy at run time is that a
//! mapped column's pages are the kernel's to reclaim: [`Column::evict`] drops a column's
//! pages from the process (`MADV_DONTNEED` on a shared file mapping: the data stays in the
//! file and the page cache, and the next read faults it back), which is how the store keeps
//! its resident size under `[analytics] memory_limit` whatever the history.
//!
//! Hand-written (over `memmap2`): the column type under every kernel, where a `Vec` with a
//! file behind it is the whole job.

use std::fmt;
use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hashbrown::{HashMap, HashSet};

use memmap2::{MmapMut, MmapOptions, UncheckedAdvice};

/// A value a column holds: plain old data of 1, 2, 4 or 8 bytes, any bit pattern valid.
pub trait Plain: Copy + Send + Sync + fmt::Debug + 'static + private::Sealed {
    /// The value's bits, as a key that tells values apart (`f64`: by bit pattern).
    fn key(self) -> u64;
}

macro_rules! plain_int {
    ($($t:ty),*) => {$(
        impl Plain for $t {
            fn key(self) -> u64 {
                self as u64
            }
        }
        impl private::Sealed for $t {}
    )*};
}

plain_int!(u8, u16, u32, u64, i64);

impl Plain for f64 {
    fn key(self) -> u64 {
        self.to_bits()
    }
}
impl private::Sealed for f64 {}

mod private {
    pub trait Sealed {}
}

/// Where large columns go, shared by every column of a store.
#[derive(Debug)]
pub struct Spill {
    dir: PathBuf,
    /// A column moves to a file when it would hold more than this many bytes.
    pub min_bytes: usize,
    /// Bytes of file mapped by live columns.
    mapped: AtomicUsize,
    /// Files made so far.
    files: AtomicU64,
    /// Named files (`None`: unnamed, gone with their column).
    names: Option<Names>,
}

/// The named files of a [`Spill::named`] directory: which are open, and which an image
/// still names (a file is deleted once neither).
#[derive(Debug, Default)]
struct Names {
    next: AtomicU64,
    state: Mutex<NameState>,
}

#[derive(Debug, Default)]
struct NameState {
    live: HashSet<u64>,
    pinned: HashMap<String, HashSet<u64>>,
}

impl NameState {
    fn pinned(&self, id: u64) -> bool {
        self.pinned.values().any(|ids| ids.contains(&id))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The file of named column `id` in `dir`.
fn file_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.col"))
}

/// The id of a named column file, from its file name.
fn file_id(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".col")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

impl Spill {
    /// A spill directory (created if missing). Files in it are unnamed, so whatever an
    /// earlier process left there is not this one's; nothing is removed.
    pub fn new(dir: impl AsRef<Path>, min_bytes: usize) -> std::io::Result<Arc<Self>> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Self {
            dir,
            min_bytes,
            mapped: AtomicUsize::new(0),
            files: AtomicU64::new(0),
            names: None,
        }))
    }

    /// A spill directory whose files have names (`<id>.col`), so that what a column holds
    /// can outlive the process: a file is deleted when its column is dropped unless an
    /// image still names it ([`Spill::pin`]), then when no image does. Files an earlier
    /// process left are kept until [`Spill::sweep`].
    pub fn named(dir: impl AsRef<Path>, min_bytes: usize) -> std::io::Result<Arc<Self>> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let mut next = 0;
        for entry in std::fs::read_dir(&dir)? {
            if let Some(id) = entry?.file_name().to_str().and_then(file_id) {
                next = next.max(id + 1);
            }
        }
        let names = Names {
            next: AtomicU64::new(next),
            state: Mutex::default(),
        };
        Ok(Arc::new(Self {
            dir,
            min_bytes,
            mapped: AtomicUsize::new(0),
            files: AtomicU64::new(0),
            names: Some(names),
        }))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether columns' files have names ([`Spill::named`]).
    pub fn is_named(&self) -> bool {
        self.names.is_some()
    }

    /// Records that the image `owner` names the files `ids` (instead of those it named
    /// before), and deletes the files no image names any more and no column holds.
    pub fn pin(&self, owner: &str, ids: HashSet<u64>) {
        let Some(names) = &self.names else {
            return;
        };
        let mut st = lock(&names.state);
        let before = st.pinned.insert(owner.to_owned(), ids).unwrap_or_default();
        let gone: Vec<u64> = before
            .into_iter()
            .filter(|id| !st.live.contains(id) && !st.pinned(*id))
            .collect();
        drop(st);
        for id in gone {
            self.remove(id);
        }
    }

    /// Deletes the named files in the directory that no column holds and no image names:
    /// what an earlier process left behind. Call once every image has been read.
    pub fn sweep(&self) -> std::io::Result<usize> {
        let Some(names) = &self.names else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let Some(id) = entry?.file_name().to_str().and_then(file_id) else {
                continue;
            };
            let st = lock(&names.state);
            if !st.live.contains(&id) && !st.pinned(id) {
                drop(st);
                self.remove(id);
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn remove(&self, id: u64) {
        let path = file_path(&self.dir, id);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete a column file");
        }
    }

    /// A new file for a column: unnamed, or named and live.
    fn create(&self) -> std::io::Result<(File, Option<u64>)> {
        self.files.fetch_add(1, Ordering::Relaxed);
        let Some(names) = &self.names else {
            return Ok((tempfile::tempfile_in(&self.dir)?, None));
        };
        let id = names.next.fetch_add(1, Ordering::Relaxed);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(file_path(&self.dir, id))?;
        lock(&names.state).live.insert(id);
        Ok((file, Some(id)))
    }

    /// Opens named file `id` for a column.
    fn open(&self, id: u64) -> std::io::Result<File> {
        let Some(names) = &self.names else {
            return Err(std::io::Error::other(
                "the spill directory's files have no names",
            ));
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file_path(&self.dir, id))?;
        if !lock(&names.state).live.insert(id) {
            return Err(std::io::Error::other(format!(
                "column file {id:016x} is open twice"
            )));
        }
        Ok(file)
    }

    /// A column that failed to open named file `id` lets it go, without deleting it.
    fn retire_open(&self, id: u64) {
        if let Some(names) = &self.names {
            lock(&names.state).live.remove(&id);
        }
    }

    /// A column let its named file `id` go: deleted unless an image names it.
    fn retire(&self, id: u64) {
        let Some(names) = &self.names else {
            return;
        };
        let mut st = lock(&names.state);
        st.live.remove(&id);
        let keep = st.pinned(id);
        drop(st);
        if !keep {
            self.remove(id);
        }
    }

    /// Bytes of file currently mapped by columns (capacity, resident or not).
    pub fn mapped_bytes(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Scratch files made since the start.
    pub fn files_made(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }
}

/// A growable array of `T` (see the module doc). Reads are a pointer and a length, as a
/// `Vec`'s: no branch on the backing.
pub struct Column<T: Plain> {
    ptr: NonNull<T>,
    len: usize,
    /// The storage while on the heap (empty once mapped).
    heap: Vec<T>,
    mapped: Option<Mapped>,
    spill: Option<Arc<Spill>>,
}

// SAFETY: a column owns its storage (the vector, or a mapping of a file only it holds);
// `ptr` points into it and is only written through `&mut self`.
#[allow(unsafe_code)]
unsafe impl<T: Plain> Send for Column<T> {}
// SAFETY: as above; shared access only reads.
#[allow(unsafe_code)]
unsafe impl<T: Plain> Sync for Column<T> {}

struct Mapped {
    map: MmapMut,
    file: File,
    /// The file's id when it is named ([`Spill::named`]).
    id: Option<u64>,
    /// Capacity in elements.
    cap: usize,
}

impl<T: Plain> Default for Column<T> {
    fn default() -> Self {
        Self::new(None)
    }
}

impl<T: Plain> fmt::Debug for Column<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Column")
            .field("len", &self.len)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl<T: Plain> From<Vec<T>> for Column<T> {
    fn from(v: Vec<T>) -> Self {
        let mut c = Self::new(None);
        c.heap = v;
        c.heap_changed();
        c
    }
}

impl<T: Plain> Column<T> {
    /// An empty column that spills to `spill` once large (never, with `None`).
    pub fn new(spill: Option<Arc<Spill>>) -> Self {
        Self {
            ptr: NonNull::dangling(),
            len: 0,
            heap: Vec::new(),
            mapped: None,
            spill,
        }
    }

    /// `v` as a column, moved to a file at once if it is large enough to spill.
    pub fn from_vec(v: Vec<T>, spill: Option<Arc<Spill>>) -> Self {
        let mut c = Self::from(v);
        c.spill = spill;
        if let Err(e) = c.spill_if_large(c.len) {
            tracing::warn!(error = %e, "could not move a column to a spill file; kept on the heap");
        }
        c
    }

    /// Named file `id` of `spill` ([`Spill::named`]) as a column of its first `len`
    /// elements: what [`Column::file_id`] named when an earlier process wrote it. The file
    /// stays as large as it is (its capacity); rows appended go after `len`.
    pub fn open(spill: &Arc<Spill>, id: u64, len: usize) -> std::io::Result<Self> {
        let file = spill.open(id)?;
        let mapped = file.metadata().and_then(|m| {
            let cap = m.len() as usize / size_of::<T>();
            if cap < len.max(1) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("column file {id:016x} holds {cap} values, {len} expected"),
                ));
            }
            map_file::<T>(file, cap, Some(id))
        });
        let mut m = match mapped {
            Ok(m) => m,
            Err(e) => {
                spill.retire_open(id);
                return Err(e);
            }
        };
        spill.mapped.fetch_add(m.map.len(), Ordering::Relaxed);
        Ok(Self {
            ptr: ptr_of(&mut m),
            len,
            heap: Vec::new(),
            mapped: Some(m),
            spill: Some(spill.clone()),
        })
    }

    /// Moves the column to a named file if it is not in a file yet and its spill directory
    /// names its files (else nothing): what an image needs before it can name the column.
    pub fn persist(&mut self) -> std::io::Result<()> {
        if self.mapped.is_some() || !self.spill.as_ref().is_some_and(|s| s.is_named()) {
            return Ok(());
        }
        self.move_to_file(self.len.max(1))
    }

    /// The id of the column's named file, if it has one.
    pub fn file_id(&self) -> Option<u64> {
        self.mapped.as_ref().and_then(|m| m.id)
    }

    /// A handle on the column's file (to sync it without holding the column).
    pub fn file(&self) -> Option<std::io::Result<File>> {
        self.mapped.as_ref().map(|m| m.file.try_clone())
    }

    /// Whether the column lives in a file.
    pub fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// Capacity in elements.
    pub fn capacity(&self) -> usize {
        self.mapped.as_ref().map_or(self.heap.capacity(), |m| m.cap)
    }

    /// Heap bytes held (0 once mapped).
    pub fn heap_bytes(&self) -> usize {
        self.heap.capacity() * size_of::<T>()
    }

    /// File bytes mapped (0 while on the heap).
    pub fn mapped_bytes(&self) -> usize {
        self.mapped.as_ref().map_or(0, |m| m.map.len())
    }

    /// Drops the column's pages from the process's resident set; the next read faults them
    /// back from the page cache (or the file). Nothing on the heap is touched.
    pub fn evict(&self) {
        if let Some(m) = &self.mapped {
            // SAFETY: the mapping is shared and file-backed: `MADV_DONTNEED` unmaps its pages
            // from this process only; their contents stay in the page cache and the file
            // (dirty pages keep their dirty state) and read back unchanged, so borrowers of
            // the slice observe nothing.
            #[allow(unsafe_code)]
            let r = unsafe { m.map.unchecked_advise(UncheckedAdvice::DontNeed) };
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not drop a column's pages");
            }
        }
    }

    pub fn push(&mut self, v: T) {
        self.reserve(1);
        if self.mapped.is_some() {
            self.len += 1;
            let at = self.len - 1;
            self[at] = v;
        } else {
            self.heap.push(v);
            self.heap_changed();
        }
    }

    pub fn extend_from_slice(&mut self, vs: &[T]) {
        self.reserve(vs.len());
        if self.mapped.is_some() {
            let at = self.len;
            self.len += vs.len();
            self[at..].copy_from_slice(vs);
        } else {
            self.heap.extend_from_slice(vs);
            self.heap_changed();
        }
    }

    /// Resizes to `len`, filling new places with `v`.
    pub fn resize(&mut self, len: usize, v: T) {
        if len <= self.len {
            self.truncate(len);
            return;
        }
        self.reserve(len - self.len);
        if self.mapped.is_some() {
            let at = self.len;
            self.len = len;
            self[at..].fill(v);
        } else {
            self.heap.resize(len, v);
            self.heap_changed();
        }
    }

    pub fn truncate(&mut self, len: usize) {
        if self.mapped.is_some() {
            self.len = self.len.min(len);
        } else {
            self.heap.truncate(len);
            self.heap_changed();
        }
    }

    /// Makes room for `extra` more elements, moving the column to a file once it is large.
    pub fn reserve(&mut self, extra: usize) {
        let need = self.len + extra;
        let cap = self.capacity();
        if need <= cap {
            return;
        }
        let target = need.max(cap * 2).max(8);
        let grown = match self.mapped.is_some() {
            false => self.spill_if_large(target),
            true => self.grow_file(target),
        };
        if let Err(e) = grown {
            tracing::warn!(error = %e, "could not grow a column's spill file; the column stays on the heap");
            self.move_to_heap();
        }
        if self.mapped.is_none() {
            self.heap.reserve(need - self.heap.len());
            self.heap_changed();
        }
    }

    /// Moves a heap column that holds (or is about to hold) `cap` elements to a file when
    /// that is at least the spill threshold.
    fn spill_if_large(&mut self, cap: usize) -> std::io::Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        if self.mapped.is_some() || cap * size_of::<T>() < spill.min_bytes.max(1) {
            return Ok(());
        }
        self.move_to_file(cap)
    }

    /// Moves a heap column to a new file with room for `cap` elements.
    fn move_to_file(&mut self, cap: usize) -> std::io::Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        let (file, id) = spill.create()?;
        let mut m = match map_file::<T>(file, cap.max(self.len), id) {
            Ok(m) => m,
            Err(e) => {
                if let Some(id) = id {
                    spill.retire(id);
                }
                return Err(e);
            }
        };
        spill.mapped.fetch_add(m.map.len(), Ordering::Relaxed);
        let bytes = std::mem::size_of_val(self.heap.as_slice());
        // SAFETY: the mapping holds at least `cap >= len` elements' bytes; `heap` holds
        // `len` elements, which any byte copy preserves (`Plain`).
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.heap.as_ptr().cast::<u8>(),
                m.map.as_mut_ptr(),
                bytes,
            );
        }
        self.heap = Vec::new();
        self.ptr = ptr_of(&mut m);
        self.mapped = Some(m);
        Ok(())
    }

    /// Grows the file to `cap` elements and maps it again.
    fn grow_file(&mut self, cap: usize) -> std::io::Result<()> {
        let Some(m) = &mut self.mapped else {
            return Ok(());
        };
        let old = m.map.len();
        let mut grown = map_file::<T>(m.file.try_clone()?, cap, m.id)?;
        if let Some(spill) = &self.spill {
            spill.mapped.fetch_add(grown.map.len(), Ordering::Relaxed);
            spill.mapped.fetch_sub(old, Ordering::Relaxed);
        }
        self.ptr = ptr_of(&mut grown);
        *m = grown;
        Ok(())
    }

    /// Moves a mapped column back to the heap (when its file cannot grow), for good.
    fn move_to_heap(&mut self) {
        if self.mapped.is_none() {
            return;
        }
        self.heap = self.deref().to_vec();
        if let (Some(m), Some(spill)) = (self.mapped.take(), &self.spill) {
            spill.mapped.fetch_sub(m.map.len(), Ordering::Relaxed);
            if let Some(id) = m.id {
                spill.retire(id);
            }
        }
        self.spill = None;
        self.heap_changed();
    }

    /// After an operation on the vector: the pointer and length are its own.
    fn heap_changed(&mut self) {
        self.ptr = NonNull::new(self.heap.as_mut_ptr()).unwrap_or(NonNull::dangling());
        self.len = self.heap.len();
    }
}

/// The start of a mapping as a `T` pointer.
fn ptr_of<T: Plain>(m: &mut Mapped) -> NonNull<T> {
    NonNull::new(m.map.as_mut_ptr().cast::<T>()).unwrap_or(NonNull::dangling())
}

/// Sets `file` to `cap` elements of `T` and maps all of it, shared.
fn map_file<T: Plain>(file: File, cap: usize, id: Option<u64>) -> std::io::Result<Mapped> {
    let bytes = cap.max(1) * size_of::<T>();
    file.set_len(bytes as u64)?;
    // SAFETY: the file is unnamed (`O_TMPFILE`), or named in a directory this process owns
    // (the data directory) and opened by this column alone ([`Spill::open`] refuses a second
    // opening): nothing else truncates or writes it while it is mapped.
    #[allow(unsafe_code)]
    let map = unsafe { MmapOptions::new().len(bytes).map_mut(&file)? };
    Ok(Mapped {
        map,
        file,
        id,
        cap: cap.max(1),
    })
}

impl<T: Plain> Deref for Column<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points at `len` initialised elements of the vector or the mapping
        // (page-aligned, so aligned for `T`; every bit pattern a valid `T`), which live as
        // long as `self` and change only through `&mut self`.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr(), self.len)
        }
    }
}

impl<T: Plain> DerefMut for Column<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len)
        }
    }
}

impl<T: Plain> Drop for Column<T> {
    fn drop(&mut self) {
        if let (Some(m), Some(spill)) = (self.mapped.take(), &self.spill) {
            spill.mapped.fetch_sub(m.map.len(), Ordering::Relaxed);
            if let Some(id) = m.id {
                drop(m);
                spill.retire(id);
            }
        }
    }
}

impl<T: Plain> Extend<T> for Column<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.reserve(iter.size_hint().0);
        for v in iter {
            self.push(v);
        }
    }
}

impl<T: Plain> PartialEq for Column<T>
where
    T: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        self.deref() == other.deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Extend(Vec<u32>),
        Resize(usize, u32),
        Truncate(usize),
        Set(usize, u32),
        Evict,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Push),
            2 => proptest::collection::vec(any::<u32>(), 0..300).prop_map(Op::Extend),
            1 => (0usize..2000, any::<u32>()).prop_map(|(n, v)| Op::Resize(n, v)),
            1 => (0usize..2000).prop_map(Op::Truncate),
            2 => (any::<usize>(), any::<u32>()).prop_map(|(i, v)| Op::Set(i, v)),
            1 => Just(Op::Evict),
        ]
    }

    proptest! {
        /// A column behaves as a `Vec` whatever its backing, across the move to a file,
        /// growth by remapping, and evicted pages.
        #[test]
        fn a_column_is_a_vec_whichever_its_backing(
            ops in proptest::collection::vec(op(), 1..60),
            min_bytes in prop_oneof![Just(0usize), Just(64), Just(4096), Just(usize::MAX)],
        ) {
            let dir = tempfile::tempdir().expect("tmp");
            let spill = Spill::new(dir.path(), min_bytes).expect("spill");
            let mut c: Column<u32> = Column::new(Some(spill.clone()));
            let mut v: Vec<u32> = Vec::new();
            for op in ops {
                match op {
                    Op::Push(x) => { c.push(x); v.push(x); }
                    Op::Extend(xs) => { c.extend_from_slice(&xs); v.extend_from_slice(&xs); }
                    Op::Resize(n, x) => { c.resize(n, x); v.resize(n, x); }
                    Op::Truncate(n) => { c.truncate(n); v.truncate(n); }
                    Op::Set(i, x) if !v.is_empty() => {
                        let i = i % v.len();
                        c[i] = x;
                        v[i] = x;
                    }
                    Op::Set(..) => {}
                    Op::Evict => c.evict(),
                }
                prop_assert_eq!(&c[..], &v[..]);
                prop_assert!(c.capacity() >= c.len());
            }
            if min_bytes == usize::MAX {
                prop_assert!(!c.is_mapped());
            }
            prop_assert_eq!(spill.mapped_bytes(), c.mapped_bytes());
            drop(c);
            prop_assert_eq!(spill.mapped_bytes(), 0);
        }
    }

    #[test]
    fn a_large_column_moves_to_an_unnamed_file_and_survives_eviction() {
        let dir = tempfile::tempdir().expect("tmp");
        let spill = Spill::new(dir.path(), 1 << 16).expect("spill");
        let mut c: Column<i64> = Column::new(Some(spill.clone()));
        for i in 0..100_000 {
            c.push(i * 3);
        }
        assert!(c.is_mapped(), "800 KB is past the 64 KB threshold");
        assert_eq!(c.heap_bytes(), 0);
        assert!(spill.mapped_bytes() >= 800_000);
        assert_eq!(spill.files_made(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "the file has no name: a crash leaves nothing behind"
        );
        c.evict();
        assert!(c.iter().enumerate().all(|(i, v)| *v == i as i64 * 3));
        let small: Column<f64> = Column::from_vec(vec![1.5; 10], Some(spill.clone()));
        assert!(!small.is_mapped());
        let big: Column<f64> = Column::from_vec(vec![2.5; 100_000], Some(spill));
        assert!(big.is_mapped());
        assert!(big.iter().all(|v| *v == 2.5));
    }
}
