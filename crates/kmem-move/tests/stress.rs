//! Concurrent allocation, free and moves: no object is lost, corrupted or
//! moved twice at once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kmem_move::{Consolidator, Move};

/// Slabs fragmented before the threads start. Under Miri 50: a desperate
/// defragment of 150 slabs alongside the workers takes about a minute there.
/// Below 101 slabs (`FRAG_MINSLABS`) no scan finds the keg fragmented, so
/// there only `defragment` queues moves; the caller and the consolidator
/// thread still run them side by side while the workers allocate and free.
const SLABS: usize = if cfg!(miri) { 50 } else { 150 };

#[test]
fn concurrent_alloc_free_and_moves_keep_every_object() {
    let c = client();
    let per = c.keg.layout().bufs_per_slab;
    let table = fragment(&c, per * SLABS, 6);
    let next_id = AtomicU64::new(1 << 32);
    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let inner = mover(table.clone());
    let f = in_flight.clone();
    let cons = Consolidator::spawn(
        c,
        move |old, new, size| -> Move {
            let a = old.as_ptr() as usize;
            assert!(f.lock().unwrap().insert(a), "{a:#x} moved twice at once");
            let r = inner(old, new, size);
            f.lock().unwrap().remove(&a);
            r
        },
        Duration::from_millis(2),
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for seed in 1..=2u64 {
            let (cons, table, next_id, done) = (&cons, &table, &next_id, &done);
            s.spawn(move || {
                worker(cons.client(), table, next_id, seed);
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let (cons, stop) = (&cons, &stop);
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                cons.defragment();
                cons.scan();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // Workers finish on their own; then stop the defragmenter.
        while done.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
    });
    cons.wait_idle();
    let st = cons.stats();
    assert!(st.yes > 100, "the consolidator moved objects: {st:?}");
    let c = cons.client();
    verify(c, &table);
    assert_eq!(c.keg.stats().bufs_in_use, table.lock().unwrap().by_id.len());
    assert!(in_flight.lock().unwrap().is_empty());
}

/// Operations per worker. Under Miri, where each takes milliseconds, 500.
const OPS: usize = if cfg!(miri) { 500 } else { 20_000 };

/// Allocates, frees and checks objects by id (their addresses change under
/// it), [`OPS`] operations.
fn worker(c: &TestClient, table: &Mutex<Table>, next_id: &AtomicU64, seed: u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut mine: Vec<u64> = Vec::new();
    for _ in 0..OPS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        match rng % 3 {
            0 | 1 if mine.len() < 3000 => {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let p = c.keg.alloc().unwrap();
                assert!(kmem_move::Client::construct(c, p));
                write(p, id);
                let mut t = table.lock().unwrap();
                t.by_id.insert(id, Obj(p));
                t.by_addr.insert(Obj(p).addr(), id);
                mine.push(id);
            }
            _ if !mine.is_empty() => {
                let id = mine.swap_remove((rng >> 8) as usize % mine.len());
                let o = {
                    let mut t = table.lock().unwrap();
                    let o = t.by_id.remove(&id).unwrap();
                    assert_eq!(read(o.0), [id, !id], "object {id} intact at its free");
                    t.by_addr.remove(&o.addr());
                    o
                };
                free(c, o.0);
            }
            _ => {}
        }
        if let Some(&id) = mine.last() {
            let t = table.lock().unwrap();
            let o = t.by_id[&id];
            assert_eq!(read(o.0), [id, !id], "object {id}");
            assert!(c.keg.is_allocated(o.0).unwrap());
        }
    }
    let mut t = table.lock().unwrap();
    for id in mine {
        let o = t.by_id.remove(&id).unwrap();
        t.by_addr.remove(&o.addr());
        drop(t);
        free(c, o.0);
        t = table.lock().unwrap();
    }
}
