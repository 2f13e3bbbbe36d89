//! The symbol directory: symbols the edge knows the topics carry, whether or
//! not it consumes their partitions (`/symbols` lists them with the cached
//! ones, so a page's search finds symbols nobody here subscribes to yet).
//!
//! Filled by `ingest::directory`, which samples the record keys of every
//! partition; here it is only a bounded, sorted list that the reader
//! replaces whole after each pass. It never does I/O.

use std::sync::{Arc, RwLock};

use crate::market::Symbol;

/// The symbols of the last directory pass, sorted.
#[derive(Default)]
pub struct Directory {
    symbols: RwLock<Arc<Vec<Symbol>>>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Replaces the directory with `symbols` (sorted and deduplicated here).
    pub fn replace(&self, mut symbols: Vec<Symbol>) {
        symbols.sort();
        symbols.dedup();
        *self.symbols.write().unwrap() = Arc::new(symbols);
    }

    /// The directory's symbols, sorted.
    pub fn symbols(&self) -> Arc<Vec<Symbol>> {
        self.symbols.read().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.symbols.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The union of two sorted lists, sorted, each symbol once.
pub fn union_sorted<'a>(a: &'a [Symbol], b: &'a [Symbol]) -> Vec<&'a Symbol> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(&a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(&b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(&a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend(&a[i..]);
    out.extend(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms(v: &[&str]) -> Vec<Symbol> {
        v.iter().map(|s| Symbol::parse(s).unwrap()).collect()
    }

    #[test]
    fn replace_sorts_and_the_union_merges() {
        let d = Directory::new();
        d.replace(syms(&["MSFT", "AAPL", "MSFT"]));
        assert_eq!(*d.symbols(), syms(&["AAPL", "MSFT"]));
        let cached = syms(&["AAPL", "IBM"]);
        let listed = d.symbols();
        let all: Vec<&str> = union_sorted(&cached, &listed)
            .into_iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(all, ["AAPL", "IBM", "MSFT"]);
    }
}
