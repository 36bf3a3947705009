//! kmem-move: the fragmenting workload of the slab consolidator.
//!
//! Suite `move`, benchmark `fragmented 90%`: 200 000 objects (40 000 with
//! `--quick`) of 64, 128, 192 and 256 bytes, spread at random over four
//! caches, then a random 90% freed, then consolidation: subject `kmem-move`
//! calls `Cache::defragment` on each cache until its partial-slab count
//! stops falling; subject `kmem no-move` is the same workload on caches
//! without a move callback, consolidated by `Cache::drain` (all it can do).
//! Recorded per subject: slab bytes before and after, live bytes, the ratio
//! after / live (goal ≤ 1.25), moves made and the time consolidation took.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use kmem::{Cache, Move};
use kmem_benches::{Rng, quick, record};

const SIZES: [usize; 4] = [64, 128, 192, 256];

/// Live objects of one cache: address → id (the object's first word).
type Table = Arc<Mutex<HashMap<usize, u64>>>;

fn mover(t: Table) -> impl Fn(NonNull<u8>, NonNull<u8>, usize) -> Move + Send + Sync {
    move |old, new, size| {
        let mut t = t.lock().expect("table");
        let Some(id) = t.remove(&(old.as_ptr() as usize)) else {
            return Move::DontKnow;
        };
        // SAFETY: `old` is a live object (it is in the table, under its
        // lock) and `new` a constructed buffer of the same size.
        unsafe { core::ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), size) };
        t.insert(new.as_ptr() as usize, id);
        Move::Yes
    }
}

fn run(subject: &str, moving: bool) {
    let n = if quick() { 40_000 } else { 200_000 };
    let names = ["move-64", "move-128", "move-192", "move-256"];
    let caches: Vec<(Cache, Table)> = SIZES
        .iter()
        .zip(names)
        .map(|(&size, name)| {
            let c = Cache::builder(name, size, 8).build().expect("cache");
            let t: Table = Arc::default();
            if moving {
                c.set_move(mover(t.clone())).expect("fresh cache");
            }
            (c, t)
        })
        .collect();
    let mut rng = Rng::new(0x5eed);
    let mut objs = Vec::with_capacity(n);
    for id in 0..n as u64 {
        let k = rng.below(SIZES.len() as u64) as usize;
        let p = caches[k].0.alloc().expect("alloc");
        // SAFETY: a fresh buffer of at least 64 bytes.
        unsafe { p.cast::<u64>().write(id) };
        objs.push((k, p));
    }
    for (k, p) in objs {
        if rng.below(10) == 0 {
            caches[k]
                .1
                .lock()
                .expect("table")
                .insert(p.as_ptr() as usize, 0);
        } else {
            // SAFETY: allocated above, freed once.
            unsafe { caches[k].0.free(p).expect("free") };
        }
    }
    let slab_bytes =
        |cs: &[(Cache, Table)]| cs.iter().map(|(c, _)| c.stats().mem_in_use).sum::<u64>();
    let live: u64 = caches
        .iter()
        .map(|(c, t)| (t.lock().expect("table").len() * c.buf_size()) as u64)
        .sum();
    let before = slab_bytes(&caches);
    let t0 = Instant::now();
    for (c, _) in &caches {
        if moving {
            while let Ok(d) = c.defragment() {
                if d.partial_after >= d.partial_before {
                    break;
                }
            }
        } else {
            c.drain();
        }
    }
    let took = t0.elapsed();
    let after = slab_bytes(&caches);
    let moves: u64 = caches.iter().map(|(c, _)| c.stats().moves.yes).sum();
    let b = "fragmented 90%";
    record("move", b, subject, "slab bytes before", before as f64, "B");
    record("move", b, subject, "slab bytes after", after as f64, "B");
    record("move", b, subject, "live bytes", live as f64, "B");
    record(
        "move",
        b,
        subject,
        "after/live",
        after as f64 / live as f64,
        "x",
    );
    record("move", b, subject, "moves", moves as f64, "count");
    record("move", b, subject, "time", took.as_secs_f64() * 1e3, "ms");
    for (c, t) in &caches {
        for (&p, _) in t.lock().expect("table").iter() {
            // SAFETY: live objects of `c`, freed once.
            unsafe {
                c.free(NonNull::new(p as *mut u8).expect("non-null"))
                    .expect("free")
            };
        }
    }
}

fn consolidate(_c: &mut Criterion) {
    run("kmem-move", true);
    run("kmem no-move", false);
}

criterion_group!(benches, consolidate);
criterion_main!(benches);
