//! Models of the per-CPU slot and of the depot exchange: under every
//! interleaving loom explores, no item is handed out twice and none is lost.

use core::mem::MaybeUninit;
use std::collections::HashSet;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use crate::{Backend, Config, Depot, MagazinePair, Magazines, ManualClock, Mode};

static CLOCK: ManualClock = ManualClock::new();

/// Hands out `0..limit`; tracks what is out in a loom-visible bitmask.
struct Bits {
    next: AtomicUsize,
    out: AtomicUsize,
    limit: usize,
}

impl Bits {
    fn new(limit: usize) -> Bits {
        Bits {
            next: AtomicUsize::new(0),
            out: AtomicUsize::new(0),
            limit,
        }
    }
}

impl Backend for Bits {
    type Item = usize;

    fn import(&self, slots: &mut [MaybeUninit<usize>]) -> usize {
        let mut n = 0;
        for slot in slots.iter_mut() {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.limit {
                return n;
            }
            let was = self.out.fetch_or(1 << i, Ordering::Relaxed);
            assert_eq!(was & (1 << i), 0, "item {i} imported twice");
            slot.write(i);
            n += 1;
        }
        n
    }

    fn release(&self, items: &[usize]) {
        for &i in items {
            let was = self.out.fetch_and(!(1 << i), Ordering::Relaxed);
            assert_ne!(was & (1 << i), 0, "item {i} released but not out");
        }
    }
}

/// Marks items held by a user; a second holder of the same item fails.
struct Held(AtomicUsize);

impl Held {
    fn take(&self, i: usize) {
        let was = self.0.fetch_or(1 << i, Ordering::Relaxed);
        assert_eq!(was & (1 << i), 0, "item {i} handed out twice");
    }

    fn give(&self, i: usize) {
        self.0.fetch_and(!(1 << i), Ordering::Relaxed);
    }
}

fn config(name: &str) -> Config {
    Config::new(name, 64)
        .magazine_size(1)
        .resizing(false)
        .clock(&CLOCK)
}

#[test]
fn loom_percpu_slot_shared_by_two_threads() {
    loom::model(|| {
        let cfg = config("loom-slot").mode(Mode::PerCpu).cpu_slots(1);
        let m = Arc::new(Magazines::new(Bits::new(8), cfg).unwrap());
        let held = Arc::new(Held(AtomicUsize::new(0)));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (m, held) = (m.clone(), held.clone());
                thread::spawn(move || {
                    let a = m.alloc().unwrap();
                    held.take(a);
                    let b = m.alloc().unwrap();
                    held.take(b);
                    held.give(a);
                    m.free(a);
                    held.give(b);
                    m.free(b);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        m.check().unwrap();
        m.purge();
        assert_eq!(m.backend().out.load(Ordering::Relaxed), 0, "items lost");
    });
}

#[test]
fn loom_depot_exchange_between_pairs() {
    loom::model(|| {
        let depot = Arc::new(Depot::new(Bits::new(8), config("loom-depot")).unwrap());
        let held = Arc::new(Held(AtomicUsize::new(0)));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (depot, held) = (depot.clone(), held.clone());
                thread::spawn(move || {
                    let mut pair = MagazinePair::new();
                    let mut got = HashSet::new();
                    for _ in 0..2 {
                        let i = pair.alloc(&depot).unwrap();
                        held.take(i);
                        got.insert(i);
                    }
                    for i in got {
                        held.give(i);
                        pair.free(&depot, i);
                    }
                    pair.flush(&depot);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        depot.check().unwrap();
        depot.purge();
        assert_eq!(depot.backend().out.load(Ordering::Relaxed), 0, "items lost");
    });
}
