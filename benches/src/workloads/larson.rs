//! `larson`: a server simulation after Larson & Krishnan's benchmark as run by
//! mimalloc-bench (`larson 5 8 1000 5000 100 4141 N`).
//!
//! Each of `threads()` threads owns an array of objects of 8..=1000 bytes and
//! replaces random ones (free the old, allocate one of a new random size).
//! After a round, the threads exit and a new generation starts, each thread
//! taking over the array of a different thread of the last generation, as
//! larson's threads hand their blocks to a successor: most frees then hit
//! blocks another thread allocated, and thread exit must not lose memory.

use std::thread;

use super::object::{Fill, Obj};
use super::{Scale, threads};
use crate::Rng;

const MIN_SIZE: u64 = 8;
const MAX_SIZE: u64 = 1000;

/// What one thread of one round did to its array.
struct Tally {
    allocated: u64,
    freed: u64,
}

fn size(rng: &mut Rng) -> usize {
    (MIN_SIZE + rng.below(MAX_SIZE - MIN_SIZE + 1)) as usize
}

fn round(objs: &mut [Obj], replacements: usize, seed: u64) -> Tally {
    let mut rng = Rng::new(seed);
    let mut t = Tally {
        allocated: 0,
        freed: 0,
    };
    for _ in 0..replacements {
        let i = rng.below(objs.len() as u64) as usize;
        let new = Obj::new(size(&mut rng), Fill::Ends);
        t.allocated += new.len() as u64;
        t.freed += std::mem::replace(&mut objs[i], new).len() as u64;
    }
    t
}

/// Runs the simulation; the checksum is the bytes allocated in all.
pub(super) fn run(scale: Scale) -> u64 {
    let n = threads();
    let per_thread = scale.pick(200, 1000, 1000);
    let rounds = scale.pick(3, 30, 30);
    let replacements = per_thread * scale.pick(2, 40, 100);

    let mut setup = Rng::new(4141);
    let mut allocated = 0;
    let mut freed = 0;
    let mut arrays: Vec<Vec<Obj>> = (0..n)
        .map(|_| {
            (0..per_thread)
                .map(|_| Obj::new(size(&mut setup), Fill::Ends))
                .collect()
        })
        .collect();
    allocated += arrays.iter().flatten().map(|o| o.len() as u64).sum::<u64>();

    for r in 0..rounds {
        let generation: Vec<_> = arrays
            .into_iter()
            .enumerate()
            .map(|(t, mut objs)| {
                let seed = (r * n + t) as u64 * 0x9e37_79b9 + 1;
                thread::spawn(move || {
                    let tally = round(&mut objs, replacements, seed);
                    (objs, tally)
                })
            })
            .collect();
        arrays = Vec::with_capacity(n);
        for h in generation {
            let (objs, tally) = h.join().expect("a larson thread panicked");
            allocated += tally.allocated;
            freed += tally.freed;
            arrays.push(objs);
        }
        // Hand each array to a different thread of the next generation.
        arrays.rotate_left(1);
    }
    freed += arrays.iter().flatten().map(|o| o.len() as u64).sum::<u64>();
    drop(arrays);
    assert_eq!(allocated, freed, "larson: bytes allocated and freed differ");
    allocated
}
