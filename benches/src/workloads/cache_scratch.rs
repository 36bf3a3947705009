//! `cache-scratch`: passive false sharing, after Hoard's `cache-scratch` as
//! run by mimalloc-bench (`cache-scratch N 1000 1 2000000 N`).
//!
//! The main thread allocates one small object per thread back to back (so
//! they likely share a cache line) and hands one to each thread. Each thread
//! frees it, then repeatedly allocates an object of the same size, writes
//! every byte of it many times, and frees it. An allocator that gives a
//! thread back the block it just freed, which sits in a cache line shared
//! with another thread's block, makes every write bounce that line between
//! cores; one that keeps each thread's blocks apart does not.

use std::ptr::{read_volatile, write_volatile};
use std::thread;

use super::object::{Fill, Obj};
use super::{Scale, threads};

const OBJ_SIZE: usize = 8;

/// One thread's part: returns the sum of the bytes it read back.
fn scratch(handed: Obj, iterations: usize, repetitions: usize) -> u64 {
    drop(handed);
    let mut sum = 0;
    for _ in 0..iterations {
        let o = Obj::new(OBJ_SIZE, Fill::Whole);
        let p = o.as_ptr();
        for _ in 0..repetitions {
            for j in 0..OBJ_SIZE {
                // SAFETY: `j < OBJ_SIZE`, inside the live block; volatile so
                // that every write reaches memory, as the benchmark intends.
                unsafe { write_volatile(p.add(j), read_volatile(p.add(j)).wrapping_add(1)) };
            }
        }
        // Put the tag back before the block is checked and freed.
        for j in 0..OBJ_SIZE {
            // SAFETY: as above.
            let v = unsafe { read_volatile(p.add(j)) };
            sum += u64::from(v);
            // SAFETY: as above.
            unsafe { write_volatile(p.add(j), v.wrapping_sub(repetitions as u8)) };
        }
        drop(o);
    }
    sum
}

/// Runs the benchmark; the checksum is the sum of every byte read back.
pub(super) fn run(scale: Scale) -> u64 {
    let n = threads();
    let iterations = scale.pick(50, 1000, 1000);
    let repetitions = scale.pick(100, 10_000, 50_000);
    let handed: Vec<Obj> = (0..n).map(|_| Obj::new(OBJ_SIZE, Fill::Whole)).collect();
    let sum: u64 = handed
        .into_iter()
        .map(|o| thread::spawn(move || scratch(o, iterations, repetitions)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("a cache-scratch thread panicked"))
        .sum();
    let tag = u64::from((OBJ_SIZE as u8) | 1);
    let per_byte = (tag + repetitions as u64) % 256;
    assert_eq!(
        sum,
        per_byte * (OBJ_SIZE * iterations * n) as u64,
        "cache-scratch: bytes read back differ from bytes written"
    );
    sum
}
