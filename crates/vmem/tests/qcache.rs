//! Quantum caches, and a multi-threaded stress test of a child arena with
//! quantum caches importing from a parent.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use kmem_vmem::{Constraints, Mode, Policy, Vmem, VmemError};

const MODES: [Mode; 2] = [Mode::PerCpu, Mode::PerThread];

#[test]
fn small_sizes_come_from_the_quantum_caches() {
    for mode in MODES {
        small_sizes_come_from_the_quantum_caches_in(mode);
    }
}

fn small_sizes_come_from_the_quantum_caches_in(mode: Mode) {
    let a = Vmem::builder("qc")
        .span(0x1000, 0x10_0000)
        .quantum(16)
        .qcache_max(4 * 16)
        .qcache_mode(mode)
        .build()
        .unwrap();
    assert_eq!(a.qcache_mode(), Some(mode));
    assert_eq!(a.stats().qcache_max, 64);
    let x = a.alloc(20, Policy::BestFit).unwrap(); // 2 quanta: the 32-byte cache
    // SAFETY: `x` was allocated with this size (rounded) and is freed once.
    unsafe { a.free_cached(x, 20) }.unwrap();
    assert_eq!(
        a.alloc(32, Policy::InstantFit).unwrap(),
        x,
        "LIFO reuse from the magazine"
    );
    let s = a.stats();
    assert!(s.qcache_allocs >= 1 && s.qcache_frees == 1, "{s:?}");
    // The cache imported a batch: all of it counts as allocated in the arena.
    assert!(
        s.allocated > 32 && s.allocated == s.qcache_cached + 32,
        "{s:?}"
    );
    // Larger sizes go to the arena.
    let y = a.alloc(80, Policy::InstantFit).unwrap();
    a.free(y, 80).unwrap();
    // The checked free of a cached size goes to the arena, not the cache.
    let cached = a.stats().qcache_cached;
    a.free(x, 32).unwrap();
    let s = a.stats();
    assert_eq!((s.qcache_frees, s.qcache_cached), (1, cached), "{s:?}");
    a.drain_qcaches();
    let s = a.stats();
    assert_eq!((s.allocated, s.qcache_cached, s.free_segments), (0, 0, 1));
    a.check().unwrap();
}

#[test]
fn arena_pressure_drains_the_caches_before_failing() {
    let a = Vmem::builder("p")
        .span(0, 16 * 16)
        .quantum(16)
        .qcache_max(16)
        .build()
        .unwrap();
    let x = a.alloc(16, Policy::InstantFit).unwrap();
    // SAFETY: `x` was allocated with this size and is freed once.
    unsafe { a.free_cached(x, 16) }.unwrap();
    assert!(a.stats().qcache_cached > 0);
    // The whole span is needed: only a drain makes it free.
    let all = a.alloc(16 * 16, Policy::InstantFit).unwrap();
    assert_eq!(all, 0);
    assert!(a.stats().reclaims >= 1);
    a.free(all, 16 * 16).unwrap();
    a.check().unwrap();
}

#[test]
fn a_bad_free_of_a_cached_size_is_an_error_and_changes_nothing() {
    for mode in MODES {
        let a = Vmem::builder("d")
            .span(0, 0x1000)
            .quantum(16)
            .qcache_max(64)
            .qcache_mode(mode)
            .build()
            .unwrap();
        let x = a.alloc(16, Policy::InstantFit).unwrap();
        let before = a.stats();
        for (addr, size) in [(x + 16 * 100, 16), (x, 32), (0x10_0000, 16)] {
            let e = a.free(addr, size).unwrap_err();
            assert!(e.to_string().contains("arena d"), "{e}");
        }
        a.free(x, 16).unwrap();
        // A double free: the segment is no longer allocated.
        assert!(matches!(
            a.free(x, 16),
            Err(VmemError::NotAllocated { addr, size: 16, .. }) if addr == x
        ));
        let s = a.stats();
        assert_eq!(s.bad_frees, 4, "{mode:?}");
        assert_eq!(s.allocated, before.allocated - 16, "{mode:?}");
        // The cache never got `x` twice: two allocations, two segments.
        let (y, z) = (
            a.alloc(16, Policy::InstantFit).unwrap(),
            a.alloc(16, Policy::InstantFit).unwrap(),
        );
        assert_ne!(y, z, "{mode:?}");
        a.check().unwrap();
    }
}

/// A drain that frees whole imported spans hands them back to the parent:
/// the child gains no free bytes (its total shrinks as much as its use),
/// yet the parent now has room, so the import is tried again.
#[test]
fn a_drain_that_releases_spans_retries_the_import() {
    for mode in MODES {
        const P: usize = 4096;
        let parent = Vmem::builder("parent")
            .span(0, 2 * P)
            .quantum(P)
            .build()
            .unwrap();
        let child = Vmem::builder("child")
            .quantum(P)
            .qcache_max(P)
            .qcache_mode(mode)
            .source(&parent, P)
            .build()
            .unwrap();
        // Two one-page spans, both segments then cached: the parent is full.
        let x = child.alloc(P, Policy::InstantFit).unwrap();
        let y = child.alloc(P, Policy::InstantFit).unwrap();
        // SAFETY: `x` and `y` were allocated with this size, freed once.
        unsafe {
            child.free_cached(x, P).unwrap();
            child.free_cached(y, P).unwrap();
        }
        assert_eq!(parent.stats().free, 0);
        let both = child.alloc(2 * P, Policy::InstantFit).unwrap();
        assert_eq!(both, 0, "{mode:?}");
        let s = child.stats();
        assert_eq!((s.releases, s.imports, s.allocated), (2, 3, 2 * P));
        child.free(both, 2 * P).unwrap();
        assert_eq!(parent.stats().allocated, 0);
        child.check().unwrap();
    }
}

/// A free into a quantum cache leaves the segment busy in the arena, so it
/// must wake a waiter, which drains the caches and takes it. Per-CPU
/// caches only: a per-thread magazine is out of other threads' reach.
#[test]
fn a_free_into_a_quantum_cache_wakes_a_waiter() {
    let a = Arc::new(
        Vmem::builder("qw")
            .span(0, 32)
            .quantum(16)
            .qcache_max(16)
            .build()
            .unwrap(),
    );
    let x = a.alloc(16, Policy::InstantFit).unwrap();
    let y = a.alloc(16, Policy::InstantFit).unwrap();
    let a2 = a.clone();
    // The timeout only bounds a failure; success does not wait for it.
    let waiter =
        thread::spawn(move || a2.alloc_wait(16, Policy::InstantFit, Some(Duration::from_secs(30))));
    // `waits` moves under the arena lock just before the waiter sleeps.
    while a.stats().waits == 0 {
        thread::yield_now();
    }
    // SAFETY: `x` was allocated with this size and is freed once.
    unsafe { a.free_cached(x, 16) }.unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(x));
    a.free(y, 16).unwrap();
    a.free(x, 16).unwrap();
    a.drain_qcaches();
    assert_eq!(a.stats().allocated, 0);
    a.check().unwrap();
}

#[cfg(debug_assertions)]
#[test]
fn an_unchecked_free_is_checked_in_debug_builds() {
    let a = Vmem::builder("d")
        .span(0, 0x1000)
        .quantum(16)
        .qcache_max(64)
        .build()
        .unwrap();
    let x = a.alloc(16, Policy::InstantFit).unwrap();
    // SAFETY: not upheld on purpose; debug builds check before the cache
    // takes the segment, and refuse these.
    unsafe {
        assert!(a.free_cached(x + 16 * 100, 16).is_err());
        assert!(a.free_cached(x, 32).is_err());
        a.free_cached(x, 16).unwrap();
    }
    assert_eq!(a.stats().bad_frees, 2);
}

#[test]
fn dropping_an_arena_with_cached_segments_returns_everything() {
    let parent = Vmem::builder("p")
        .span(0, 1 << 24)
        .quantum(64)
        .build()
        .unwrap();
    {
        let child = Vmem::builder("c")
            .quantum(64)
            .qcache_max(8 * 64)
            .source(&parent, 1 << 16)
            .build()
            .unwrap();
        let xs: Vec<usize> = (1..=8)
            .map(|q| child.alloc(q * 64, Policy::InstantFit).unwrap())
            .collect();
        for (q, x) in (1..=8).zip(xs) {
            // SAFETY: each `x` was allocated with this size, freed once.
            unsafe { child.free_cached(x, q * 64) }.unwrap();
        }
        assert!(child.stats().qcache_cached > 0);
    }
    assert_eq!(parent.stats().allocated, 0);
    parent.check().unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "threads hammering for thousands of rounds: far too slow under Miri"
)]
fn threads_hammer_a_child_with_quantum_caches_and_a_parent() {
    for mode in MODES {
        hammer(mode);
    }
}

#[test]
fn an_arena_without_quantum_caches_has_no_qcache_mode() {
    let a = Vmem::builder("none").span(0, 4096).build().unwrap();
    assert_eq!(a.qcache_mode(), None);
}

/// In per-thread mode the worker threads' magazines reach the depot when
/// they exit, so the end-of-test accounting holds in both modes.
fn hammer(mode: Mode) {
    const Q: usize = 4096;
    let parent = Arc::new(
        Vmem::builder("parent")
            .span(0x1_0000_0000, 1 << 32)
            .quantum(Q)
            .build()
            .unwrap(),
    );
    let child = Arc::new(
        Vmem::builder("child")
            .quantum(Q)
            .qcache_max(8 * Q)
            .qcache_mode(mode)
            .source(parent.clone(), 64 * Q)
            .build()
            .unwrap(),
    );
    // Every live segment of every thread, to catch cross-thread overlap.
    let owners = Arc::new(Mutex::new(BTreeMap::<usize, usize>::new()));
    let threads = 4;
    let rounds = if cfg!(debug_assertions) {
        3_000
    } else {
        50_000
    };
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let child = child.clone();
            let owners = owners.clone();
            thread::spawn(move || {
                let mut seed = 0x1234_5678_9abc_def1u64 ^ (t as u64) << 32;
                let mut rnd = move |n: usize| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % n as u64) as usize
                };
                // Constrained segments go back by `xfree`; the others by
                // the checked `free` or, every other size, into their cache.
                let release = |x: usize, size: usize, constrained: bool| {
                    if constrained {
                        child.xfree(x, size).unwrap();
                    } else if size.is_multiple_of(2 * Q) {
                        child.free(x, size).unwrap();
                    } else {
                        // SAFETY: `x` is this thread's live segment of
                        // `size`, taken off `live` before this free.
                        unsafe { child.free_cached(x, size) }.unwrap();
                    }
                };
                let mut live: Vec<(usize, usize, bool)> = Vec::new();
                for _ in 0..rounds {
                    if live.len() < 64 && rnd(3) != 0 {
                        let size = (rnd(24) + 1) * Q;
                        let (x, constrained) = if rnd(4) == 0 {
                            let c = Constraints {
                                align: 4 * Q,
                                nocross: 64 * Q,
                                ..Constraints::default()
                            };
                            let x = child.xalloc(size.min(16 * Q), &c, Policy::BestFit).unwrap();
                            assert_eq!(x % (4 * Q), 0);
                            (x, true)
                        } else {
                            (
                                child
                                    .alloc(size, [Policy::InstantFit, Policy::BestFit][rnd(2)])
                                    .unwrap(),
                                false,
                            )
                        };
                        let size = if constrained { size.min(16 * Q) } else { size };
                        // Nobody else holds any byte of it.
                        {
                            let mut o = owners.lock().unwrap();
                            if let Some((&y, &s)) = o.range(..x + size).next_back() {
                                assert!(y + s <= x, "{x:#x}+{size:#x} overlaps {y:#x}+{s:#x}");
                            }
                            o.insert(x, size);
                        }
                        live.push((x, size, constrained));
                    } else if !live.is_empty() {
                        let (x, size, constrained) = live.swap_remove(rnd(live.len()));
                        owners.lock().unwrap().remove(&x);
                        release(x, size, constrained);
                    }
                }
                for (x, size, constrained) in live {
                    owners.lock().unwrap().remove(&x);
                    release(x, size, constrained);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    child.check().unwrap();
    child.drain_qcaches();
    let s = child.stats();
    assert_eq!(s.allocated, 0, "{s:?}");
    assert!(s.imports > 0 && s.releases > 0, "{s:?}");
    assert_eq!(parent.stats().allocated, s.imported);
    drop(child);
    assert_eq!(parent.stats().allocated, 0);
    parent.check().unwrap();
}

#[test]
fn per_thread_caches_drain_other_threads_only_when_they_exit() {
    let a = Arc::new(
        Vmem::builder("pt")
            .span(0, 1 << 20)
            .quantum(16)
            .qcache_max(16)
            .qcache_mode(Mode::PerThread)
            .build()
            .unwrap(),
    );
    let (freed, done) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let worker = {
        let (a, freed, done) = (a.clone(), freed.clone(), done.clone());
        thread::spawn(move || {
            let x = a.alloc(16, Policy::InstantFit).unwrap();
            // SAFETY: `x` was allocated with this size and is freed once.
            unsafe { a.free_cached(x, 16) }.unwrap();
            freed.wait();
            done.wait(); // stay alive, magazines loaded, while main drains
        })
    };
    freed.wait();
    a.drain_qcaches();
    assert!(a.stats().allocated > 0, "a live thread keeps its magazines");
    done.wait();
    // A join (unlike the end of a `thread::scope`) waits for the thread's
    // exit hooks, which put its magazines in the depot.
    worker.join().unwrap();
    a.drain_qcaches();
    assert_eq!(a.stats().allocated, 0);
    a.check().unwrap();
}
