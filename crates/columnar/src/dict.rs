//! String dictionaries: event names, property keys and low-cardinality values as dense `u32`s.

use hashbrown::HashMap;

#[derive(Debug, Default, Clone)]
pub struct Dictionary {
    ids: HashMap<String, u32>,
    values: Vec<String>,
}

impl Dictionary {
    /// The id of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }

    /// The id of `s` if it was ever interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub fn value(&self, id: u32) -> Option<&str> {
        self.values.get(id as usize).map(String::as_str)
    }

    /// Approximate heap bytes: each string twice (the list and the map key), plus the map's
    /// slots.
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self.values.iter().map(|v| v.capacity() + 24).sum();
        2 * strings + self.ids.capacity() * 8
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
