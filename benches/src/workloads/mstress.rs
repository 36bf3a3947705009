//! `mstress`: churn over a large live set, after mimalloc's `test-stress`
//! (mimalloc-bench's `mstress`).
//!
//! Each of `threads()` threads keeps an array of slots, most of them holding
//! a live object, and for many steps picks a random slot and either replaces
//! its object, empties it, refills it, or swaps it with one of a shared
//! transfer array, so objects migrate and die on other threads. Sizes are
//! mostly small (8..=128 bytes), some medium (up to 4 KiB) and a few large
//! (up to 256 KiB); every byte is written, so the peak resident size tells
//! how much memory the allocator holds for the live set, and churn shows how
//! well it reuses what was freed.

use std::sync::Mutex;
use std::thread;

use super::object::{Fill, Obj};
use super::{Scale, threads};
use crate::Rng;

/// Slots in the transfer array shared by all threads.
const TRANSFER: usize = 1000;

fn size(rng: &mut Rng) -> usize {
    let r = rng.below(1000);
    let (lo, hi) = match r {
        0..890 => (8, 128),
        890..998 => (129, 4096),
        _ => (4097, 256 << 10),
    };
    (lo + rng.below(hi - lo + 1)) as usize
}

/// Bytes a thread allocated and freed.
#[derive(Default)]
struct Tally {
    allocated: u64,
    freed: u64,
}

impl Tally {
    fn alloc(&mut self, rng: &mut Rng) -> Obj {
        let o = Obj::new(size(rng), Fill::Whole);
        self.allocated += o.len() as u64;
        o
    }

    fn free(&mut self, o: Option<Obj>) {
        self.freed += o.map_or(0, |o| o.len() as u64);
    }
}

fn stress(transfer: &[Mutex<Option<Obj>>], live: usize, steps: usize, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut t = Tally::default();
    let mut slots: Vec<Option<Obj>> = (0..live).map(|_| Some(t.alloc(&mut rng))).collect();
    for _ in 0..steps {
        let i = rng.below(live as u64) as usize;
        match rng.below(100) {
            // Replace (or refill): free the old object, allocate a new one.
            0..70 => {
                let new = t.alloc(&mut rng);
                t.free(slots[i].replace(new));
            }
            // Empty the slot.
            70..90 => t.free(slots[i].take()),
            // Swap with the transfer array: this object will die elsewhere.
            _ => {
                let j = rng.below(TRANSFER as u64) as usize;
                let mut shared = transfer[j].lock().expect("no mstress thread panics");
                std::mem::swap(&mut *shared, &mut slots[i]);
            }
        }
    }
    for o in slots {
        t.free(o);
    }
    t
}

/// Runs the stress; the checksum is the bytes allocated in all.
pub(super) fn run(scale: Scale) -> u64 {
    let n = threads();
    let live = scale.pick(2_000, 40_000, 100_000);
    let steps = live * scale.pick(5, 10, 20);
    let transfer: Vec<Mutex<Option<Obj>>> = (0..TRANSFER).map(|_| Mutex::new(None)).collect();
    let tallies: Vec<Tally> = thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|t| {
                let transfer = &transfer;
                s.spawn(move || stress(transfer, live, steps, 0xc0ff_ee00 + t as u64))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an mstress thread panicked"))
            .collect()
    });
    let allocated: u64 = tallies.iter().map(|t| t.allocated).sum();
    let mut freed: u64 = tallies.iter().map(|t| t.freed).sum();
    for slot in transfer {
        let o = slot.into_inner().expect("no mstress thread panics");
        freed += o.map_or(0, |o| o.len() as u64);
    }
    assert_eq!(
        allocated, freed,
        "mstress: bytes allocated and freed differ"
    );
    allocated
}
