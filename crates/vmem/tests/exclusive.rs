//! The `_mut` methods: through `&mut self` they skip the arena lock (in
//! an arena off the arena list, as these are built), and must behave
//! exactly as the `&self` methods do.

use std::sync::Arc;
use std::thread;

use kmem_vmem::{Constraints, Mode, Policy, Vmem, VmemError};

/// xorshift64*: the same sequence for both arenas.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
#[cfg_attr(miri, ignore = "thousands of random steps: minutes under Miri")]
fn exclusive_and_shared_calls_place_every_segment_alike() {
    let build = || {
        Vmem::builder("twin")
            .span(0x1000, 0x10_0000)
            .quantum(16)
            .build()
            .unwrap()
    };
    let (mut mine, shared) = (build(), build());
    let cons = Constraints {
        align: 64,
        nocross: 4096,
        ..Constraints::default()
    };
    let mut rng = Rng(0x5eed);
    let mut live: Vec<Option<(usize, usize, bool)>> = vec![None; 64];
    for step in 0..20_000 {
        let i = rng.below(live.len() as u64) as usize;
        if let Some((x, size, constrained)) = live[i].take() {
            if constrained {
                mine.xfree_mut(x, size).unwrap();
            } else {
                mine.free_mut(x, size).unwrap();
            }
            shared.xfree(x, size).unwrap();
        }
        let size = 16 * (rng.below(64) as usize + 1);
        let policy = [Policy::InstantFit, Policy::BestFit, Policy::NextFit][step % 3];
        let constrained = step % 5 == 0;
        let (a, b) = if constrained {
            (
                mine.xalloc_mut(size, &cons, policy),
                shared.xalloc(size, &cons, policy),
            )
        } else {
            (mine.alloc_mut(size, policy), shared.alloc(size, policy))
        };
        assert_eq!(a, b, "step {step}: size {size}, {policy:?}");
        live[i] = a.ok().map(|x| (x, size, constrained));
    }
    mine.check().unwrap();
    let (m, s) = (mine.stats(), shared.stats());
    assert_eq!(
        (
            m.allocated,
            m.free_segments,
            m.instant_fit,
            m.best_fit,
            m.next_fit
        ),
        (
            s.allocated,
            s.free_segments,
            s.instant_fit,
            s.best_fit,
            s.next_fit
        )
    );
    assert_eq!((m.frees, m.constrained), (s.frees, s.constrained));
}

#[test]
fn exclusive_bad_frees_are_errors_that_change_nothing() {
    let mut a = Vmem::builder("bad")
        .span(0, 4096)
        .quantum(16)
        .build()
        .unwrap();
    let x = a.alloc_mut(64, Policy::InstantFit).unwrap();
    let before = a.stats();
    assert!(matches!(
        a.free_mut(x + 16, 64),
        Err(VmemError::NotAllocated { .. })
    ));
    assert!(matches!(
        a.xfree_mut(x, 32),
        Err(VmemError::WrongSize { allocated: 64, .. })
    ));
    assert!(matches!(
        a.xfree_mut(x, 0),
        Err(VmemError::WrongSize { allocated: 64, .. })
    ));
    assert!(matches!(
        a.xfree_mut(x, usize::MAX),
        Err(VmemError::WrongSize { allocated: 64, .. })
    ));
    // 48 rounds up to 48, not to the 64 allocated.
    assert!(matches!(
        a.xfree_mut(x, 48),
        Err(VmemError::WrongSize { allocated: 64, .. })
    ));
    let after = a.stats();
    assert_eq!(after.allocated, before.allocated);
    assert_eq!(after.bad_frees, 5);
    // A size that rounds up to the segment's frees it, as at allocation.
    a.free_mut(x, 49).unwrap();
    assert_eq!(a.stats().allocated, 0);
    a.check().unwrap();
}

#[test]
fn an_exclusive_allocation_that_needs_a_cache_drain_gets_it() {
    // 32 quanta, all soaked up by the quantum cache of one quantum: the
    // request for all 32 fits only once the caches are drained, which runs
    // on the shared path (the drain reaches the arena through the caches'
    // own pointers, never under the `&mut` borrow).
    let mut a = Vmem::builder("drain")
        .span(0, 32 * 16)
        .quantum(16)
        .qcache_max(16)
        .build()
        .unwrap();
    let mut xs = Vec::new();
    while let Ok(x) = a.alloc_mut(16, Policy::InstantFit) {
        xs.push(x);
    }
    assert_eq!(xs.len(), 32);
    for x in xs {
        // SAFETY: each `x` was allocated with this size, freed once.
        unsafe { a.free_cached(x, 16) }.unwrap();
    }
    assert_eq!(a.stats().qcache_cached, 32 * 16);
    let all = a.alloc_mut(32 * 16, Policy::InstantFit).unwrap();
    assert_eq!(all, 0);
    assert_eq!(a.stats().qcache_cached, 0);
    a.free_mut(all, 32 * 16).unwrap();
    a.check().unwrap();
}

#[test]
fn exclusive_calls_use_quantum_caches_of_either_mode() {
    for mode in [Mode::PerCpu, Mode::PerThread] {
        let mut a = Vmem::builder("qc")
            .span(0, 1 << 20)
            .quantum(16)
            .qcache_max(4 * 16)
            .qcache_mode(mode)
            .build()
            .unwrap();
        let x = a.alloc_mut(32, Policy::InstantFit).unwrap();
        // SAFETY: `x` was allocated with this size, freed once.
        unsafe { a.free_cached(x, 32) }.unwrap();
        assert!(
            a.stats().qcache_cached >= 32,
            "{mode:?}: x went to its cache"
        );
        assert_eq!(a.alloc_mut(32, Policy::InstantFit), Ok(x), "{mode:?}");
        a.free_mut(x, 32).unwrap();
        let big = a.alloc_mut(4096, Policy::InstantFit).unwrap();
        a.free_mut(big, 4096).unwrap();
        // With per-thread caches other threads' exit hooks flush into the
        // caches' depots inside the arena's core, so the `_mut` calls must
        // still take the lock: run them while such threads come and go.
        let a = Arc::new(std::sync::Mutex::new(a));
        thread::scope(|s| {
            for _ in 0..2 {
                let a = &a;
                s.spawn(move || {
                    for round in 0..200 {
                        let t = thread::spawn({
                            let a = Arc::clone(a);
                            move || {
                                let x = a.lock().unwrap().alloc_mut(48, Policy::InstantFit);
                                let x = x.unwrap();
                                // SAFETY: `x` was allocated with this
                                // size and is freed once.
                                unsafe { a.lock().unwrap().free_cached(x, 48) }.unwrap();
                            }
                        });
                        let mut g = a.lock().unwrap();
                        let y = g.alloc_mut(16 * (round % 8 + 5), Policy::BestFit).unwrap();
                        g.free_mut(y, 16 * (round % 8 + 5)).unwrap();
                        drop(g);
                        t.join().unwrap();
                    }
                });
            }
        });
        let a = Arc::into_inner(a).unwrap().into_inner().unwrap();
        a.drain_qcaches();
        assert_eq!(a.stats().allocated, 0, "{mode:?}");
        a.check().unwrap();
    }
}

fn plain_arena(base: usize, size: usize, q: usize) -> Vmem {
    Vmem::builder("t")
        .span(base, size)
        .quantum(q)
        .build()
        .unwrap()
}

/// A 70-quantum hole, on the list of 64..=71 quanta: instant fit for 70
/// finds no list whose every member fits and must fall back to best fit.
fn hole_of_70() -> (Vmem, usize) {
    let a = plain_arena(0, 160 * 16, 16);
    let x = a.alloc(70 * 16, Policy::BestFit).unwrap();
    a.alloc(90 * 16, Policy::BestFit).unwrap();
    a.free(x, 70 * 16).unwrap();
    (a, x)
}

#[test]
fn instant_fit_falls_back_to_best_fit_alike_with_and_without_the_lock() {
    for exclusive in [false, true] {
        let (mut a, x) = hole_of_70();
        let before = a.stats();
        let got = if exclusive {
            a.alloc_mut(70 * 16, Policy::InstantFit)
        } else {
            a.alloc(70 * 16, Policy::InstantFit)
        };
        assert_eq!(got, Ok(x), "exclusive {exclusive}");
        let s = a.stats();
        assert_eq!(s.instant_fit - before.instant_fit, 1);
        assert_eq!(s.best_fit - before.best_fit, 0);
        assert_eq!(s.instant_fallbacks - before.instant_fallbacks, 1);
        assert_eq!(s.constrained, 0);
        a.check().unwrap();
    }
}

#[test]
fn a_plain_instant_fit_hit_counts_one_instant_fit_and_no_fallback() {
    let mut a = plain_arena(0, 0x1000, 16);
    let x = a.alloc(100, Policy::InstantFit).unwrap();
    let y = a.alloc_mut(100, Policy::InstantFit).unwrap();
    let s = a.stats();
    assert_eq!((s.instant_fit, s.best_fit, s.next_fit), (2, 0, 0));
    assert_eq!((s.instant_fallbacks, s.constrained), (0, 0));
    a.free(x, 100).unwrap();
    a.free_mut(y, 97).unwrap();
    let s = a.stats();
    assert_eq!((s.frees, s.bad_frees, s.allocated), (2, 0, 0));
}

/// A free names its segment exactly when its size rounds up to the
/// segment's, checked against `round_size` for sizes around the segment's
/// and at both ends of `usize`, by the locked and the exclusive free.
#[test]
fn a_free_matches_exactly_the_sizes_that_round_to_the_segment() {
    for shift in [0u32, 1, 4, 12] {
        let q = 1usize << shift;
        for quanta in [1usize, 2, 3, 64, 70] {
            let allocated = quanta * q;
            let mut a = plain_arena(0, 1 << 20, q);
            let x = a.alloc(allocated, Policy::InstantFit).unwrap();
            let mut sizes = vec![0, 1, usize::MAX, usize::MAX - q + 1, usize::MAX - q];
            // Every boundary of the rounding: a quantum either side, and
            // one unit either side of those.
            for d in [0, 1, q - 1, q, q + 1, 2 * q - 1, 2 * q] {
                sizes.push(allocated.wrapping_sub(d));
                sizes.push(allocated.wrapping_add(d));
            }
            for size in sizes {
                let rounds = a.round_size(size).ok() == Some(allocated);
                let bad = a.stats().bad_frees;
                let r = if size % 2 == 0 {
                    a.free(x, size)
                } else {
                    a.free_mut(x, size)
                };
                match r {
                    Ok(()) => {
                        assert!(rounds, "q {q} allocated {allocated}: size {size} freed");
                        assert_eq!(a.alloc(allocated, Policy::InstantFit), Ok(x));
                    }
                    Err(VmemError::WrongSize {
                        allocated: got,
                        size: s,
                        ..
                    }) => {
                        assert!(!rounds, "q {q} allocated {allocated}: size {size} refused");
                        assert_eq!((got, s), (allocated, size));
                        assert_eq!(a.stats().bad_frees, bad + 1);
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            a.check().unwrap();
        }
    }
}

#[test]
fn a_free_of_a_segment_reaching_the_top_of_the_address_space() {
    let q = 16;
    let top = usize::MAX - q + 1;
    let a = plain_arena(0, top, q);
    let x = a.alloc(top, Policy::InstantFit).unwrap();
    assert_eq!(x, 0);
    for size in [usize::MAX, top + 1, 0, 1, top - q] {
        assert!(
            matches!(a.free(x, size), Err(VmemError::WrongSize { allocated, .. }) if allocated == top),
            "{size:#x}"
        );
    }
    a.free(x, top - q + 1).unwrap();
    assert_eq!(a.stats().allocated, 0);
    a.check().unwrap();
}
