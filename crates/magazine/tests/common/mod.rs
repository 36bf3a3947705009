//! A backend that counts and checks every item it hands out.

#![allow(dead_code)]

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kmem_magazine::Backend;

/// Hands out integers `0..limit`, records which are out, and panics on a
/// release of an item that is not out (a double release or a stranger).
pub struct Counting {
    next: AtomicUsize,
    limit: usize,
    out: Mutex<HashSet<usize>>,
    /// Items released, ever.
    pub released: AtomicUsize,
    /// Calls to import.
    pub imports: AtomicUsize,
}

impl Counting {
    pub fn new(limit: usize) -> Counting {
        Counting {
            next: AtomicUsize::new(0),
            limit,
            out: Mutex::new(HashSet::new()),
            released: AtomicUsize::new(0),
            imports: AtomicUsize::new(0),
        }
    }

    /// Items imported and not released.
    pub fn outstanding(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    /// Items imported, ever.
    pub fn imported(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }
}

impl Backend for Counting {
    type Item = usize;

    fn import(&self, slots: &mut [MaybeUninit<usize>]) -> usize {
        self.imports.fetch_add(1, Ordering::Relaxed);
        let mut out = self.out.lock().unwrap();
        let mut n = 0;
        for slot in slots.iter_mut() {
            let i = self.next.load(Ordering::Relaxed);
            if i >= self.limit {
                break;
            }
            self.next.store(i + 1, Ordering::Relaxed);
            assert!(out.insert(i));
            slot.write(i);
            n += 1;
        }
        n
    }

    fn release(&self, items: &[usize]) {
        let mut out = self.out.lock().unwrap();
        for &i in items {
            assert!(out.remove(&i), "item {i} released but not out");
        }
        self.released.fetch_add(items.len(), Ordering::Relaxed);
    }
}
