//! Property columns with narrow codes: a [`Sparse`] column of 1- or 2-byte codes into the
//! column's own list of distinct values while it has few, of the values themselves once it
//! has many.
//!
//! Most property keys take few values (a currency, a category, a plan, a page path, a
//! product's price): a value id of 4 bytes or a number of 8 is mostly zeros. A column starts
//! with 1-byte codes, widens to 2 bytes at its 257th distinct value and to the plain values
//! (string value ids, numbers) at its 65,537th; widening rewrites the values part only (the
//! presence bits and ranks stay). Codes are never reused or removed (rows dropped by a
//! truncation leave their values in the list, harmless), so a code read from a file means
//! the same value whenever it was written.
//!
//! Hand-written: the value path of every property read by the query kernels.

use std::ops::Range;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::column::{Column, Plain, Spill};
use crate::sparse::Sparse;

/// Distinct values a column codes before it holds the values themselves.
pub const MAX_CODED: usize = 1 << 16;

/// The codes or values of a [`Coded`] column's rows.
#[derive(Debug)]
pub(crate) enum Codes<T: Plain> {
    U8(Sparse<u8>),
    U16(Sparse<u16>),
    Plain(Sparse<T>),
}

/// A property column (see the module doc).
#[derive(Debug)]
pub struct Coded<T: Plain> {
    codes: Codes<T>,
    /// The distinct values, by code (unused once the column holds its values).
    dict: Column<T>,
    /// Code by value key ([`Plain::key`]); rebuilt from `dict` when read from an image.
    index: HashMap<u64, u32>,
    spill: Option<Arc<Spill>>,
}

impl<T: Plain> Default for Coded<T> {
    fn default() -> Self {
        Self::new(None)
    }
}

macro_rules! each {
    ($codes:expr, $s:ident => $e:expr) => {
        match $codes {
            Codes::U8($s) => $e,
            Codes::U16($s) => $e,
            Codes::Plain($s) => $e,
        }
    };
}

impl<T: Plain> Coded<T> {
    /// An empty column whose parts spill to `spill` once large.
    pub fn new(spill: Option<Arc<Spill>>) -> Self {
        Self {
            codes: Codes::U8(Sparse::new(spill.clone())),
            dict: Column::new(spill.clone()),
            index: HashMap::new(),
            spill,
        }
    }

    /// Rows covered.
    pub fn len(&self) -> usize {
        each!(&self.codes, s => s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values held (rows with a value).
    pub fn count(&self) -> usize {
        each!(&self.codes, s => s.count())
    }

    /// Bytes a value takes: 1, 2, or the value's own size.
    pub fn width(&self) -> usize {
        match &self.codes {
            Codes::U8(_) => 1,
            Codes::U16(_) => 2,
            Codes::Plain(_) => size_of::<T>(),
        }
    }

    #[inline]
    fn decode(&self, code: usize) -> Option<T> {
        self.dict.get(code).copied()
    }

    /// The value of `row`, if it has one.
    #[inline]
    pub fn get(&self, row: usize) -> Option<T> {
        match &self.codes {
            Codes::U8(s) => self.decode(*s.get(row)? as usize),
            Codes::U16(s) => self.decode(*s.get(row)? as usize),
            Codes::Plain(s) => s.get(row).copied(),
        }
    }

    /// Whether any row of `rows` has a value.
    pub fn any_in(&self, rows: Range<usize>) -> bool {
        each!(&self.codes, s => s.any_in(rows))
    }

    /// The rows with a value and their values, in row order, from `from` on.
    pub fn iter_from(&self, from: usize) -> Box<dyn Iterator<Item = (usize, T)> + '_> {
        match &self.codes {
            Codes::U8(s) => Box::new(
                s.iter_from(from)
                    .filter_map(|(r, c)| Some((r, self.decode(c as usize)?))),
            ),
            Codes::U16(s) => Box::new(
                s.iter_from(from)
                    .filter_map(|(r, c)| Some((r, self.decode(c as usize)?))),
            ),
            Codes::Plain(s) => Box::new(s.iter_from(from)),
        }
    }

    /// Sets the value of `row` (see [`Sparse::set`]).
    pub fn set(&mut self, row: usize, v: T) {
        if let Codes::Plain(s) = &mut self.codes {
            s.set(row, v);
            return;
        }
        let code = match self.index.get(&v.key()) {
            Some(c) => *c,
            None => {
                let code = self.dict.len();
                if code == MAX_CODED {
                    self.widen_to_plain();
                    return self.set(row, v);
                }
                if code == 256 {
                    self.widen_to_u16();
                }
                self.dict.push(v);
                self.index.insert(v.key(), code as u32);
                code as u32
            }
        };
        match &mut self.codes {
            Codes::U8(s) => s.set(row, code as u8),
            Codes::U16(s) => s.set(row, code as u16),
            Codes::Plain(s) => s.set(row, v),
        }
    }

    fn widen_to_u16(&mut self) {
        let placeholder = Codes::Plain(Sparse::new(None));
        if let Codes::U8(s) = std::mem::replace(&mut self.codes, placeholder) {
            self.codes = Codes::U16(s.map_values(self.spill.clone(), u16::from));
        }
    }

    fn widen_to_plain(&mut self) {
        let dict = std::mem::replace(&mut self.dict, Column::new(self.spill.clone()));
        let at = |c: usize| dict[c];
        let placeholder = Codes::Plain(Sparse::new(None));
        self.codes = match std::mem::replace(&mut self.codes, placeholder) {
            Codes::U8(s) => Codes::Plain(s.map_values(self.spill.clone(), |c| at(c as usize))),
            Codes::U16(s) => Codes::Plain(s.map_values(self.spill.clone(), |c| at(c as usize))),
            plain => plain,
        };
        self.index = HashMap::new();
    }

    /// Keeps rows `0..rows`.
    pub fn truncate(&mut self, rows: usize) {
        each!(&mut self.codes, s => s.truncate(rows))
    }

    /// See [`Sparse::permute_from`].
    pub fn permute_from(&mut self, start: usize, order: &[u32]) {
        each!(&mut self.codes, s => s.permute_from(start, order))
    }

    pub fn heap_bytes(&self) -> usize {
        each!(&self.codes, s => s.heap_bytes())
            + self.dict.heap_bytes()
            + self.index.capacity() * (size_of::<(u64, u32)>() + 1)
    }

    pub fn mapped_bytes(&self) -> usize {
        each!(&self.codes, s => s.mapped_bytes()) + self.dict.mapped_bytes()
    }

    /// Drops the parts' pages from the process (see [`crate::Column::evict`]).
    pub fn evict(&self) {
        each!(&self.codes, s => s.evict());
        self.dict.evict();
    }

    /// The parts, for an image to name.
    pub(crate) fn parts_mut(&mut self) -> (&mut Codes<T>, &mut Column<T>) {
        (&mut self.codes, &mut self.dict)
    }

    /// A column from its stored parts: the codes (or values) and, for codes, the distinct
    /// values. A code past the list reads as no value.
    pub(crate) fn from_parts(codes: Codes<T>, dict: Column<T>, spill: Option<Arc<Spill>>) -> Self {
        let index = match codes {
            Codes::Plain(_) => HashMap::new(),
            _ => dict
                .iter()
                .enumerate()
                .map(|(c, v)| (v.key(), c as u32))
                .collect(),
        };
        Self {
            codes,
            dict,
            index,
            spill,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A coded column reads as a vector of optional values through every width it goes
        /// through, on the heap and in spill files.
        #[test]
        fn a_coded_column_reads_as_a_vector_of_options(
            sets in prop::collection::vec((0..4000usize, 0..3u32), 1..400),
            cut in 0..4000usize,
            spilled in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().expect("tmp");
            let spill = spilled.then(|| Spill::new(dir.path(), 64).expect("spill"));
            let mut c = Coded::<f64>::new(spill);
            let mut r: Vec<Option<f64>> = Vec::new();
            // Rows in order; a spread of 1 or 2 gives every row its own value, so that a
            // long enough case widens from 1-byte to 2-byte codes part way (plain values
            // are `a_column_widens_from_bytes_to_plain_values`).
            let mut rows: Vec<(usize, u32)> = sets;
            rows.sort_by_key(|s| s.0);
            for (i, (row, spread)) in rows.iter().enumerate() {
                let v = match spread {
                    0 => (i % 7) as f64,
                    1 => (i * 300) as f64 + 0.5,
                    _ => -((i * 1000) as f64),
                };
                c.set(*row, v);
                if r.len() <= *row {
                    r.resize(row + 1, None);
                }
                r[*row] = Some(v);
            }
            let check = |c: &Coded<f64>, r: &[Option<f64>]| {
                for (row, v) in r.iter().enumerate() {
                    assert_eq!(c.get(row), *v, "row {row}");
                }
                let want: Vec<_> =
                    r.iter().enumerate().filter_map(|(i, v)| Some((i, (*v)?))).collect();
                assert_eq!(c.iter_from(0).collect::<Vec<_>>(), want);
            };
            check(&c, &r);
            c.truncate(cut);
            r.truncate(cut);
            check(&c, &r);
        }
    }

    #[test]
    fn a_column_widens_from_bytes_to_plain_values() {
        let mut c = Coded::<u32>::new(None);
        assert_eq!(c.width(), 1);
        for row in 0..256 {
            c.set(row, row as u32 * 10);
        }
        assert_eq!(c.width(), 1);
        c.set(256, 7);
        assert_eq!(c.width(), 2);
        for row in 257..MAX_CODED + 10 {
            c.set(row, row as u32 * 10);
        }
        assert_eq!(c.width(), 4);
        assert_eq!(c.get(0), Some(0));
        assert_eq!(c.get(256), Some(7));
        assert_eq!(c.get(MAX_CODED + 9), Some((MAX_CODED as u32 + 9) * 10));
        // A value seen before the last widening keeps its meaning.
        c.set(MAX_CODED + 20, 7);
        assert_eq!(c.get(MAX_CODED + 20), Some(7));
    }
}
