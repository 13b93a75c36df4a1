//! Sparse columns: the property columns of a table, which most rows do not have.
//!
//! A property column used to hold a value (or an "absent" marker) for every row, so each
//! string property cost 4 bytes and each number 8 bytes per event whether the event had it or
//! not: at 20 M demo events, 92 of the 124 bytes a row took on disk. A [`Sparse`] column
//! holds the values that exist, in row order, and a presence bitmap with a rank directory to
//! find a row's value in constant time:
//!
//! - `bits`: bit `r % 64` of word `r / 64 - first` is set when row `r` has a value, where
//!   `first` is the word of the column's first value (a key that appears late in a history
//!   costs nothing before it);
//! - `ranks`: for every block of [`BLOCK_WORDS`] words, the number of values before it;
//! - `values`: the values, in row order.
//!
//! The value of row `r` is `values[ranks[b] + popcount(the block's words before r's) +
//! popcount(r's word below r)]`. An absent row costs 1/8 byte plus 1/128 for the directory.
//! The three parts are [`Column`]s, so they spill to files and are what the column image
//! names (see [`crate::image`]). Rows are added in order; the bits of rows past
//! [`Sparse::len`] are always clear.
//!
//! Hand-written: the access path of every property read by the query kernels.

use std::ops::Range;
use std::sync::Arc;

use crate::column::{Column, Plain, Spill};

/// Words of presence bits per rank entry (512 rows).
pub const BLOCK_WORDS: usize = 8;

/// A column with a value for some rows (see the module doc).
#[derive(Debug)]
pub struct Sparse<T: Plain> {
    /// Rows covered: rows at or past it have no value.
    rows: usize,
    /// The word (64 rows) `bits[0]` is for: rows before it have no value.
    first: usize,
    bits: Column<u64>,
    ranks: Column<u32>,
    values: Column<T>,
}

impl<T: Plain> Default for Sparse<T> {
    fn default() -> Self {
        Self::new(None)
    }
}

/// Why stored parts do not make a sparse column.
#[derive(Debug, thiserror::Error)]
#[error("a sparse column's parts disagree: {0}")]
pub struct Inconsistent(String);

impl<T: Plain> Sparse<T> {
    /// An empty column whose parts spill to `spill` once large.
    pub fn new(spill: Option<Arc<Spill>>) -> Self {
        Self {
            rows: 0,
            first: 0,
            bits: Column::new(spill.clone()),
            ranks: Column::new(spill.clone()),
            values: Column::new(spill),
        }
    }

    /// Rows covered (the last row with a value, plus one, or more after [`Sparse::pad`]).
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Values held.
    pub fn count(&self) -> usize {
        self.values.len()
    }

    /// The value of `row`, if it has one.
    #[inline]
    pub fn get(&self, row: usize) -> Option<&T> {
        let w = (row / 64).checked_sub(self.first)?;
        let word = *self.bits.get(w)?;
        let bit = 1u64 << (row % 64);
        if word & bit == 0 {
            return None;
        }
        self.values.get(self.rank_in(w, word & (bit - 1)))
    }

    /// The number of values before `bits[w]`, plus the set bits of `below` (part of it).
    #[inline]
    fn rank_in(&self, w: usize, below: u64) -> usize {
        let b = w / BLOCK_WORDS;
        let words = &self.bits[b * BLOCK_WORDS..w];
        self.ranks[b] as usize
            + words.iter().map(|x| x.count_ones() as usize).sum::<usize>()
            + below.count_ones() as usize
    }

    /// The number of values of rows before `row`.
    pub fn rank(&self, row: usize) -> usize {
        let Some(w) = (row / 64).checked_sub(self.first) else {
            return 0;
        };
        match self.bits.get(w) {
            Some(word) if row < self.rows => self.rank_in(w, word & ((1u64 << (row % 64)) - 1)),
            _ => self.values.len(),
        }
    }

    /// Whether any row of `rows` has a value.
    pub fn any_in(&self, rows: Range<usize>) -> bool {
        let end = rows.end.min(self.rows);
        rows.start < end && self.rank(rows.start) < self.rank(end)
    }

    /// The rows with a value and their values, in row order, from `from` on.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = (usize, T)> + '_ {
        let rank = self.rank(from);
        let (start, mask) = match (from / 64).checked_sub(self.first) {
            Some(w) => (w, u64::MAX << (from % 64)),
            None => (0, u64::MAX),
        };
        let mut words = self.bits.get(start..).unwrap_or(&[]).iter();
        let mut w = self.first + start;
        let mut word = words.next().map_or(0, |x| x & mask);
        let mut values = self.values.get(rank..).unwrap_or(&[]).iter();
        std::iter::from_fn(move || {
            while word == 0 {
                word = *words.next()?;
                w += 1;
            }
            let row = w * 64 + word.trailing_zeros() as usize;
            word &= word - 1;
            values.next().map(|v| (row, *v))
        })
    }

    /// Sets the value of `row`. Rows at or past the last row with a value are appended in
    /// constant time; an earlier row rewrites the rows after it.
    pub fn set(&mut self, row: usize, v: T) {
        let last = self.rows.checked_sub(1);
        if last.is_some_and(|l| row < l) {
            let tail: Vec<(usize, T)> = self.iter_from(row).filter(|(r, _)| *r != row).collect();
            let rows = self.rows;
            self.truncate(row);
            self.push(row, v);
            for (r, x) in tail {
                self.push(r, x);
            }
            self.pad(rows);
            return;
        }
        let bit = 1u64 << (row % 64);
        if let Some(word) = (row / 64)
            .checked_sub(self.first)
            .and_then(|w| self.bits.get(w))
            && word & bit != 0
        {
            // The last row has a value already: replace it.
            let at = self.values.len() - 1;
            self.values[at] = v;
            return;
        }
        self.push(row, v);
    }

    /// Appends a value for `row`, which is past every row with a value.
    fn push(&mut self, row: usize, v: T) {
        if self.bits.is_empty() {
            self.first = row / 64;
        }
        let w = row / 64 - self.first;
        while self.bits.len() <= w {
            if self.bits.len().is_multiple_of(BLOCK_WORDS) {
                self.ranks.push(self.values.len() as u32);
            }
            self.bits.push(0);
        }
        self.bits[w] |= 1u64 << (row % 64);
        self.values.push(v);
        self.rows = self.rows.max(row + 1);
    }

    /// Covers `rows` rows (the new ones without values); never shrinks.
    pub fn pad(&mut self, rows: usize) {
        self.rows = self.rows.max(rows);
    }

    /// Keeps rows `0..rows`.
    pub fn truncate(&mut self, rows: usize) {
        if rows >= self.rows {
            return;
        }
        let keep = self.rank(rows);
        self.values.truncate(keep);
        let words = rows.div_ceil(64).saturating_sub(self.first);
        self.bits.truncate(words);
        if let Some(last) = self.bits.get_mut(words.wrapping_sub(1))
            && self.first + words == rows.div_ceil(64)
            && !rows.is_multiple_of(64)
        {
            *last &= (1u64 << (rows % 64)) - 1;
        }
        self.ranks.truncate(self.bits.len().div_ceil(BLOCK_WORDS));
        self.rows = rows;
    }

    /// Heap bytes held by the parts (0 once they are in files).
    pub fn heap_bytes(&self) -> usize {
        self.bits.heap_bytes() + self.ranks.heap_bytes() + self.values.heap_bytes()
    }

    /// File bytes mapped by the parts.
    pub fn mapped_bytes(&self) -> usize {
        self.bits.mapped_bytes() + self.ranks.mapped_bytes() + self.values.mapped_bytes()
    }

    /// Drops the parts' pages from the process (see [`Column::evict`]).
    pub fn evict(&self) {
        self.bits.evict();
        self.ranks.evict();
        self.values.evict();
    }

    /// The parts, for an image to name: presence words, rank directory, values.
    pub(crate) fn parts_mut(&mut self) -> (&mut Column<u64>, &mut Column<u32>, &mut Column<T>) {
        (&mut self.bits, &mut self.ranks, &mut self.values)
    }

    /// The word the presence bits start at (see [`Sparse::from_parts`]).
    pub(crate) fn first(&self) -> usize {
        self.first
    }

    /// The lengths of the parts that hold rows `0..rows`: (words, rank entries, values).
    pub(crate) fn lengths(&self, rows: usize) -> (usize, usize, usize) {
        let rows = rows.min(self.rows);
        let words = rows
            .div_ceil(64)
            .saturating_sub(self.first)
            .min(self.bits.len());
        (words, words.div_ceil(BLOCK_WORDS), self.rank(rows))
    }

    /// A column of `rows` rows from its stored parts (at least as long as its rows need;
    /// what is past them is dropped). Checks that they agree, so that no read of the
    /// column can go out of bounds.
    pub(crate) fn from_parts(
        rows: usize,
        first: usize,
        mut bits: Column<u64>,
        mut ranks: Column<u32>,
        mut values: Column<T>,
    ) -> Result<Self, Inconsistent> {
        // Rows past the last word have no value (the column was padded past it).
        let needed = rows.div_ceil(64).saturating_sub(first);
        let words = needed.min(bits.len());
        if ranks.len() < words.div_ceil(BLOCK_WORDS) {
            return Err(Inconsistent(format!(
                "{words} presence words need {} ranks, {} stored",
                words.div_ceil(BLOCK_WORDS),
                ranks.len()
            )));
        }
        bits.truncate(words);
        ranks.truncate(words.div_ceil(BLOCK_WORDS));
        // Bits past the rows are rows sealed later, or hot: not the image's.
        if words > 0 && words == needed && !rows.is_multiple_of(64) {
            let mask = (1u64 << (rows % 64)) - 1;
            if bits[words - 1] & !mask != 0 {
                bits[words - 1] &= mask;
            }
        }
        let mut seen = 0usize;
        for (i, w) in bits.iter().enumerate() {
            if i % BLOCK_WORDS == 0 && ranks[i / BLOCK_WORDS] as usize != seen {
                return Err(Inconsistent(format!(
                    "rank {} is {}, the bits before it hold {seen}",
                    i / BLOCK_WORDS,
                    ranks[i / BLOCK_WORDS]
                )));
            }
            seen += w.count_ones() as usize;
        }
        if values.len() < seen {
            return Err(Inconsistent(format!(
                "the bits hold {seen} values, {} stored",
                values.len()
            )));
        }
        values.truncate(seen);
        Ok(Self {
            rows,
            first,
            bits,
            ranks,
            values,
        })
    }
}

impl<T: Plain> Sparse<T> {
    /// The same rows with each value mapped by `f` (the presence bits and ranks are kept;
    /// the values move to a new column).
    pub fn map_values<U: Plain>(self, spill: Option<Arc<Spill>>, f: impl Fn(T) -> U) -> Sparse<U> {
        let mut values = Column::new(spill);
        values.reserve(self.values.len());
        values.extend(self.values.iter().map(|v| f(*v)));
        Sparse {
            rows: self.rows,
            first: self.first,
            bits: self.bits,
            ranks: self.ranks,
            values,
        }
    }

    /// Reorders rows `start..start + order.len()` so that row `start + i` holds what row
    /// `start + order[i]` held; rows past `start` only are rewritten.
    pub fn permute_from(&mut self, start: usize, order: &[u32]) {
        if self.rows <= start {
            return;
        }
        let rows = self.rows.max(start + order.len());
        let mut tail: Vec<Option<T>> = vec![None; rows - start];
        for (r, v) in self.iter_from(start) {
            tail[r - start] = Some(v);
        }
        self.truncate(start);
        for (i, &o) in order.iter().enumerate() {
            if let Some(v) = tail.get(o as usize).copied().flatten() {
                self.push(start + i, v);
            }
        }
        for (i, v) in tail.iter().enumerate().skip(order.len()) {
            if let Some(v) = v {
                self.push(start + i, *v);
            }
        }
        self.pad(rows);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One step against a column and its reference (a value or none per row).
    #[derive(Debug, Clone)]
    enum Op {
        Set(usize, u32),
        Truncate(usize),
        Pad(usize),
        Permute(usize, Vec<u32>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3000usize, 1..u32::MAX).prop_map(|(r, v)| Op::Set(r, v)),
            1 => (0..3000usize).prop_map(Op::Truncate),
            1 => (0..3000usize).prop_map(Op::Pad),
            1 => (0..3000usize, 0..200usize).prop_flat_map(|(s, n)| {
                Just((0..n as u32).collect::<Vec<_>>())
                    .prop_shuffle()
                    .prop_map(move |o| Op::Permute(s, o))
            }),
        ]
    }

    fn check(c: &Sparse<u32>, r: &[Option<u32>]) {
        assert_eq!(c.len(), r.len());
        for (row, v) in r.iter().enumerate() {
            assert_eq!(c.get(row).copied(), *v, "row {row}");
        }
        assert_eq!(c.get(r.len()), None);
        assert_eq!(c.get(r.len() + 100), None);
        let want: Vec<(usize, u32)> = r
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i, (*v)?)))
            .collect();
        assert_eq!(c.iter_from(0).collect::<Vec<_>>(), want);
        for from in [0, 1, 63, 64, 65, 511, 512, 513, r.len() / 2, r.len()] {
            let tail: Vec<_> = want.iter().filter(|(i, _)| *i >= from).copied().collect();
            assert_eq!(c.iter_from(from).collect::<Vec<_>>(), tail, "from {from}");
            assert_eq!(c.rank(from), want.len() - tail.len(), "rank {from}");
            assert_eq!(
                c.any_in(from..from + 70),
                tail.iter().any(|(i, _)| *i < from + 70)
            );
        }
    }

    fn apply(c: &mut Sparse<u32>, r: &mut Vec<Option<u32>>, op: &Op) {
        match op {
            Op::Set(row, v) => {
                c.set(*row, *v);
                if r.len() <= *row {
                    r.resize(row + 1, None);
                }
                r[*row] = Some(*v);
            }
            Op::Truncate(n) => {
                c.truncate(*n);
                r.truncate(*n);
            }
            Op::Pad(n) => {
                c.pad(*n);
                if r.len() < *n {
                    r.resize(*n, None);
                }
            }
            Op::Permute(start, order) => {
                c.permute_from(*start, order);
                if r.len() > *start {
                    let len = r.len().max(start + order.len());
                    r.resize(len, None);
                    let moved: Vec<_> = order.iter().map(|o| r[start + *o as usize]).collect();
                    r[*start..start + order.len()].copy_from_slice(&moved);
                }
            }
        }
    }

    proptest! {
        /// Every read of a sparse column agrees with a plain vector of optional values,
        /// after any sequence of sets, truncations, pads and reorderings, on the heap and
        /// in spill files; and its stored parts read back as the same column.
        #[test]
        fn a_sparse_column_reads_as_a_vector_of_options(
            ops in prop::collection::vec(op(), 1..60),
            spilled in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().expect("tmp");
            let spill = spilled.then(|| Spill::new(dir.path(), 64).expect("spill"));
            let mut c = Sparse::new(spill);
            let mut r = Vec::new();
            for op in &ops {
                apply(&mut c, &mut r, op);
                check(&c, &r);
            }
            let rows = r.len() / 2;
            let (w, k, v) = c.lengths(rows);
            // Exactly the parts the rows need, and the parts with what follows them.
            for (w, k) in [(w, k), (c.bits.len(), c.ranks.len())] {
                let back = Sparse::from_parts(
                    rows,
                    c.first,
                    Column::from(c.bits[..w].to_vec()),
                    Column::from(c.ranks[..k].to_vec()),
                    Column::from(c.values.to_vec()),
                )
                .expect("parts of a column");
                prop_assert_eq!(back.count(), v);
                check(&back, &r[..rows]);
            }
        }
    }

    /// A column whose first value is late in the rows holds no presence words before it.
    #[test]
    fn a_late_column_costs_nothing_before_its_first_value() {
        let mut c = Sparse::<u32>::new(None);
        c.set(1_000_003, 7);
        c.set(1_000_100, 8);
        assert_eq!((c.first, c.bits.len(), c.ranks.len()), (15_625, 2, 1));
        assert_eq!(c.get(1_000_002), None);
        assert_eq!(c.get(5), None);
        assert_eq!(c.get(1_000_003), Some(&7));
        assert_eq!(c.get(1_000_100), Some(&8));
        assert_eq!((c.rank(0), c.rank(1_000_004), c.rank(2_000_000)), (0, 1, 2));
        assert_eq!(
            c.iter_from(3).collect::<Vec<_>>(),
            [(1_000_003, 7), (1_000_100, 8)]
        );
        assert!(!c.any_in(0..1_000_003) && c.any_in(0..1_000_004));
        // A value before the first word moves the start back.
        c.set(70, 1);
        assert_eq!(c.first, 1);
        assert_eq!(c.iter_from(0).count(), 3);
        c.truncate(1_000_050);
        assert_eq!(
            c.iter_from(0).collect::<Vec<_>>(),
            [(70, 1), (1_000_003, 7)]
        );
        c.truncate(60);
        assert_eq!((c.len(), c.count(), c.bits.len()), (60, 0, 0));
        c.set(500, 2);
        assert_eq!((c.first, c.get(500)), (7, Some(&2)));
    }

    #[test]
    fn parts_that_disagree_are_refused() {
        let mut c = Sparse::<u32>::new(None);
        for row in (0..2000).step_by(3) {
            c.set(row, row as u32 + 1);
        }
        let parts = |c: &Sparse<u32>| {
            (
                Column::from(c.bits.to_vec()),
                Column::from(c.ranks.to_vec()),
                Column::from(c.values.to_vec()),
            )
        };
        let (b, k, v) = parts(&c);
        assert!(Sparse::from_parts(2000, c.first, b, k, v).is_ok());
        let (b, mut k, v) = parts(&c);
        k[1] += 1;
        assert!(Sparse::from_parts(2000, c.first, b, k, v).is_err());
        let (b, k, mut v) = parts(&c);
        v.truncate(10);
        assert!(Sparse::from_parts(2000, c.first, b, k, v).is_err());
        let (b, mut k, v) = parts(&c);
        k.truncate(1);
        assert!(Sparse::from_parts(2000, c.first, b, k, v).is_err());
    }
}
