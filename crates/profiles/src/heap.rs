//! What the profiles engine takes on the heap: the estimates the profiles' memory budget
//! counts for a decoded profile ([`crate::people::Budget`]), and `Engine::heap_bytes` for
//! the rest (identity graph, tables, memberships).
//!
//! Counted as allocations request them (the allocator's own rounding and slack are not
//! here): a vector by its capacity, a string by its capacity, a `BTreeMap` by its nodes
//! (a node has room for eleven entries however few it holds), a JSON value by what its
//! strings, arrays and objects hold. `tests/heap.rs` checks these against a counting
//! allocator.

use std::mem::size_of;

use serde_json::Value;

/// Entries a `BTreeMap` node has room for.
const NODE: usize = 11;

/// The capacity a vector (or a `LiteMap`'s vector) grown one push at a time has at `len`
/// (what decoding gives is `len` exactly, so this is the larger of the two).
pub(crate) fn grown(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.next_power_of_two().max(4)
    }
}

/// Bytes of a vector of `len` `T`s grown one push at a time.
pub(crate) fn vec<T>(len: usize) -> usize {
    grown(len) * size_of::<T>()
}

/// Bytes of the nodes of a `BTreeMap<K, V>` (or set, `V = ()`) of `len` entries: one leaf
/// while it fits, then leaves counted half full (a leaf split by keys added in ascending
/// order, as person ids are, keeps six of its eleven), and the internal nodes above them.
pub(crate) fn btree<K, V>(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let leaf = 16 + NODE * (size_of::<K>() + size_of::<V>());
    let leaves = if len <= NODE {
        1
    } else {
        len.div_ceil(NODE / 2 + 1)
    };
    let internal = if leaves > 1 { leaves.div_ceil(6) } else { 0 };
    leaves * leaf + internal * (leaf + (NODE + 1) * size_of::<usize>())
}

/// Bytes of a hash table (`hashbrown`, `griddle`) with room for `capacity` entries: its
/// buckets (a power of two, at most 7/8 full) of an entry and a control byte each.
pub(crate) fn table<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two().max(4);
    buckets * (size_of::<(K, V)>() + 1) + 16
}

/// Heap bytes a JSON value holds (not the value itself).
pub(crate) fn json(v: &Value) -> usize {
    match v {
        Value::String(s) => s.capacity(),
        Value::Array(a) => a.capacity() * size_of::<Value>() + a.iter().map(json).sum::<usize>(),
        Value::Object(o) => {
            btree::<String, Value>(o.len())
                + o.iter().map(|(k, v)| k.capacity() + json(v)).sum::<usize>()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grown_follows_the_vectors_growth() {
        for len in 0..100usize {
            let mut v: Vec<u64> = Vec::new();
            for i in 0..len {
                v.push(i as u64);
            }
            assert_eq!(grown(len), v.capacity(), "len {len}");
        }
    }
}
