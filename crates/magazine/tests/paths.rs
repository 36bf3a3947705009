//! Each path of alloc and free, resizing and reaping with a manual clock.

mod common;

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::Counting;
use kmem_magazine::{Config, Depot, MagazinePair, Magazines, ManualClock, Mode};

fn modes() -> [Mode; 2] {
    [Mode::PerCpu, Mode::PerThread]
}

#[test]
fn loaded_magazine_serves_lifo() {
    for mode in modes() {
        let m = Magazines::new(
            Counting::new(1000),
            Config::new("lifo", 64).mode(mode).cpu_slots(1),
        )
        .unwrap();
        let a = m.alloc().unwrap();
        let b = m.alloc().unwrap();
        assert_ne!(a, b);
        m.free(a);
        m.free(b);
        assert_eq!(m.alloc(), Some(b));
        assert_eq!(m.alloc(), Some(a));
        let s = m.stats();
        assert_eq!(
            s.counts.alloc_misses, 1,
            "{mode:?}: only the first alloc imports"
        );
        assert_eq!(s.counts.alloc_hits, 3);
        assert_eq!(s.import_calls, 1);
        assert_eq!(
            s.imported, 15,
            "a 64-byte cache starts with 15-round magazines"
        );
        m.free(a);
        m.free(b);
        m.check().unwrap();
    }
}

#[test]
fn previous_magazine_is_swapped_in() {
    for mode in modes() {
        let m = Magazines::new(
            Counting::new(1000),
            Config::new("prev", 64).mode(mode).cpu_slots(1),
        )
        .unwrap();
        let n = m.depot().magazine_size();
        let items: Vec<_> = (0..2 * n).map(|_| m.alloc().unwrap()).collect();
        // Fill the loaded magazine, then the next free swaps in the empty
        // previous magazine (no depot visit).
        for &i in &items {
            m.free(i);
        }
        let s = m.stats();
        assert_eq!(s.cached, 2 * n, "{mode:?}");
        let before = s.depot_free;
        // Allocating 2n now drains loaded, swaps to previous, drains it.
        let again: HashSet<_> = (0..2 * n).map(|_| m.alloc().unwrap()).collect();
        assert_eq!(again, items.iter().copied().collect());
        let s = m.stats();
        assert_eq!(s.depot_free, before);
        assert_eq!(s.import_calls, 2, "{mode:?}: served from the pair");
        for i in again {
            m.free(i);
        }
    }
}

#[test]
fn depot_exchanges_full_and_empty_magazines() {
    for mode in modes() {
        let m = Magazines::new(
            Counting::new(10_000),
            Config::new("depot", 64).mode(mode).cpu_slots(1),
        )
        .unwrap();
        let n = m.depot().magazine_size();
        let items: Vec<_> = (0..5 * n).map(|_| m.alloc().unwrap()).collect();
        for &i in &items {
            m.free(i);
        }
        let s = m.stats();
        assert!(
            s.full_magazines >= 2,
            "{mode:?}: frees pushed full magazines to the depot: {s:?}"
        );
        let imports = s.import_calls;
        let again: HashSet<_> = (0..5 * n).map(|_| m.alloc().unwrap()).collect();
        assert_eq!(again.len(), 5 * n);
        let s = m.stats();
        assert_eq!(
            s.import_calls, imports,
            "{mode:?}: served from depot magazines"
        );
        assert!(s.depot_alloc >= 2);
        m.check().unwrap();
        for i in again {
            m.free(i);
        }
    }
}

#[test]
fn exhausted_backend_gives_none_and_purge_returns_everything() {
    for mode in modes() {
        let m = Magazines::new(
            Counting::new(40),
            Config::new("small", 64).mode(mode).cpu_slots(2),
        )
        .unwrap();
        let items: Vec<_> = std::iter::from_fn(|| m.alloc()).collect();
        assert_eq!(items.len(), 40);
        assert_eq!(m.alloc(), None);
        for &i in &items {
            m.free(i);
        }
        m.purge();
        let s = m.stats();
        assert_eq!(s.cached, 0);
        assert_eq!(m.backend().outstanding(), 0, "{mode:?}");
        assert_eq!(s.released, 40);
    }
}

#[test]
fn drop_returns_everything_to_the_backend() {
    let backend = Counting::new(1000);
    {
        let m = Magazines::new(&backend, Config::new("drop", 64)).unwrap();
        let items: Vec<_> = (0..100).map(|_| m.alloc().unwrap()).collect();
        for i in items {
            m.free(i);
        }
    }
    assert_eq!(backend.outstanding(), 0);
}

/// `thread::scope` returns once a thread's closure is done, before its
/// exit hook flushes its magazines into the depot, so a cache dropped right
/// after the scope may meet that hook. Both must get through: under Miri a
/// drop that claimed the cache's state exclusively before shutting the
/// hooks out was a data race.
/// Rounds, as the two meet only in some interleavings.
#[test]
fn drop_right_after_a_scoped_thread_used_the_cache() {
    for round in 0..16 {
        let backend = Counting::new(1000);
        {
            let m = Magazines::new(
                &backend,
                Config::new("scoped-drop", 64).mode(Mode::PerThread),
            )
            .unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    let items: Vec<_> = (0..20).map(|_| m.alloc().unwrap()).collect();
                    for i in items {
                        m.free(i);
                    }
                });
            });
        }
        assert_eq!(backend.outstanding(), 0, "round {round}");
    }
}

#[test]
fn pair_against_an_explicit_depot() {
    let depot = Depot::new(Counting::new(1000), Config::new("pair", 64)).unwrap();
    let mut pair = MagazinePair::new();
    let a = pair.alloc(&depot).unwrap();
    assert_eq!(pair.cached(), depot.magazine_size() - 1);
    pair.free(&depot, a);
    assert_eq!(pair.alloc_hit(), Some(a));
    pair.free(&depot, a);
    pair.flush(&depot);
    assert_eq!(depot.stats().cached, depot.magazine_size());
    depot.purge();
    assert_eq!(depot.backend().outstanding(), 0);
}

#[test]
fn pair_refuses_a_second_depot_and_stays_whole() {
    let d1 = Depot::new(Counting::new(100), Config::new("one", 64)).unwrap();
    let d2 = Depot::new(Counting::new(100), Config::new("two", 64)).unwrap();
    let mut pair = MagazinePair::new();
    let a = pair.alloc(&d1).unwrap();
    pair.free(&d1, a);
    // Drain the loaded magazine so the next alloc visits a depot.
    let mut held = Vec::new();
    while let Some(x) = pair.alloc_hit() {
        held.push(x);
    }
    let refused = std::panic::catch_unwind(AssertUnwindSafe(|| pair.alloc(&d2)));
    let msg = refused
        .expect_err("a pair bound to one depot must refuse another")
        .downcast::<String>()
        .expect("a formatted panic message");
    assert!(msg.contains("bound to another depot"), "{msg}");
    // The refusal changed nothing: everything goes back to the first depot.
    for x in held {
        pair.free(&d1, x);
    }
    pair.flush(&d1);
    d1.purge();
    assert_eq!(d1.backend().outstanding(), 0);
    assert_eq!(d2.backend().imported(), 0);
}

static RESIZE_CLOCK: ManualClock = ManualClock::new();

#[test]
#[cfg_attr(
    miri,
    ignore = "two threads churning until the depot is contended: minutes under Miri"
)]
fn contention_grows_the_magazine_size() {
    let cfg = Config::new("resize", 64)
        .clock(&RESIZE_CLOCK)
        .contention_threshold(0)
        .mode(Mode::PerCpu)
        .cpu_slots(4);
    let m = std::sync::Arc::new(Magazines::new(Counting::new(usize::MAX), cfg).unwrap());
    assert_eq!(m.depot().magazine_size(), 15);
    // Contend for the depot from two threads with 1-in-flight churn so every
    // round trip crosses magazine boundaries.
    let mut grew = false;
    for _ in 0..200 {
        std::thread::scope(|s| {
            for _ in 0..2 {
                let m = &m;
                s.spawn(move || {
                    for _ in 0..2000 {
                        let v: Vec<_> = (0..40).map(|_| m.alloc().unwrap()).collect();
                        for i in v {
                            m.free(i);
                        }
                    }
                });
            }
        });
        RESIZE_CLOCK.advance(Duration::from_secs(15));
        m.update();
        if m.depot().magazine_size() > 15 {
            grew = true;
            break;
        }
    }
    let s = m.stats();
    assert!(s.depot_contention > 0, "{s:?}");
    assert!(grew, "magazines never grew: {s:?}");
    assert_eq!(s.resizes, 1);
    assert_eq!(s.magazine_size, 31);
    m.check().unwrap();
}

/// One CPU slot on `clock`, no resizing, with `mags` magazines' worth of
/// items allocated and freed, so they sit full in the depot. Returns the
/// magazines, the magazine size and the number of full magazines.
fn filled(
    name: &str,
    clock: &'static ManualClock,
    mags: usize,
) -> (Magazines<Counting>, usize, usize) {
    let cfg = Config::new(name, 64)
        .clock(clock)
        .mode(Mode::PerCpu)
        .cpu_slots(1)
        .resizing(false);
    let m = Magazines::new(Counting::new(10_000), cfg).unwrap();
    let n = m.depot().magazine_size();
    let items: Vec<_> = (0..mags * n).map(|_| m.alloc().unwrap()).collect();
    for &i in &items {
        m.free(i);
    }
    let full = m.stats().full_magazines;
    (m, n, full)
}

static REAP_CLOCK: ManualClock = ManualClock::new();

#[test]
fn reap_releases_magazines_outside_the_working_set() {
    let (m, _, full) = filled("reap", &REAP_CLOCK, 10);
    assert!(full >= 8);
    // Within the first interval nothing is outside the working set yet.
    m.reap();
    assert_eq!(m.stats().full_magazines, full);
    // Two quiet intervals: the lists never dipped, so all of them may go.
    REAP_CLOCK.advance(Duration::from_secs(15));
    m.update();
    REAP_CLOCK.advance(Duration::from_secs(15));
    m.update();
    m.reap();
    let s = m.stats();
    assert_eq!(s.full_magazines, 0, "{s:?}");
    assert!(s.reaped as usize >= full, "{s:?}");
    assert_eq!(m.backend().outstanding(), s.cached);
}

#[test]
fn reap_keeps_the_working_set() {
    static CLOCK: ManualClock = ManualClock::new();
    let (m, n, full) = filled("ws", &CLOCK, 10);
    CLOCK.advance(Duration::from_secs(15));
    m.update();
    // This interval uses 4 magazines' worth: the list dips by about 4.
    let used: Vec<_> = (0..4 * n).map(|_| m.alloc().unwrap()).collect();
    for i in used {
        m.free(i);
    }
    CLOCK.advance(Duration::from_secs(15));
    m.update();
    m.reap();
    let left = m.stats().full_magazines;
    assert!(
        left > 0 && left < full,
        "kept the working set: {left} of {full}"
    );
}

#[test]
fn update_now_ends_an_interval_without_the_clock() {
    static CLOCK: ManualClock = ManualClock::new();
    let (m, _, full) = filled("now", &CLOCK, 6);
    assert!(full >= 4);
    // The clock never moves: the timed update is a no-op ...
    m.update();
    m.update();
    m.reap();
    assert_eq!(m.stats().full_magazines, full);
    // ... but two forced intervals let the idle magazines go.
    m.update_now();
    m.update_now();
    m.reap();
    let s = m.stats();
    assert_eq!(s.full_magazines, 0, "{s:?}");
    assert_eq!(m.backend().outstanding(), s.cached);
}

#[test]
fn bad_config_is_an_error_naming_the_cache() {
    let e = Magazines::new(Counting::new(1), Config::new("bad", 64).magazine_size(0))
        .err()
        .unwrap();
    assert!(e.to_string().contains("\"bad\""), "{e}");
    let e = Magazines::new(Counting::new(1), Config::new("bad2", 64).magazine_size(500))
        .err()
        .unwrap();
    assert!(e.to_string().contains("magazine size"), "{e}");
}

#[test]
fn hunt_swaps_a_round_out_of_a_full_depot_magazine() {
    let depot = Depot::new(Counting::new(1000), Config::new("hunt", 64)).unwrap();
    let mut pair = MagazinePair::new();
    let first = pair.alloc(&depot).unwrap();
    // One full magazine of the rounds the pair still holds goes to the depot.
    let mut held = vec![first];
    while pair.cached() > 0 {
        held.push(pair.alloc(&depot).unwrap());
    }
    let target = held[3];
    let swap_in = pair.alloc(&depot).unwrap(); // imports a new magazine
    for &i in &held {
        pair.free(&depot, i);
    }
    pair.flush(&depot);
    assert!(
        depot.hunt(target, swap_in),
        "the round is in a depot magazine"
    );
    assert!(!depot.hunt(target, swap_in), "and is gone after the swap");
    assert!(!depot.hunt(99_999, 0), "an item never cached is not found");
    depot.check().unwrap();
    // The caller owns `target` now; give it back the ordinary way.
    pair.free(&depot, target);
    pair.flush(&depot);
    depot.purge();
    assert_eq!(depot.backend().outstanding(), 0);
}

#[test]
fn hot_path_hits_only_per_thread_magazines_of_its_cache() {
    let threaded = Magazines::new(
        Counting::new(1000),
        Config::new("hot", 64).mode(Mode::PerThread),
    )
    .unwrap();
    let per_cpu = Magazines::new(
        Counting::new(1000),
        Config::new("cold", 64).mode(Mode::PerCpu).cpu_slots(1),
    )
    .unwrap();
    let a = threaded.alloc().unwrap();
    let b = per_cpu.alloc().unwrap();
    let hot = threaded.hot_path();
    // SAFETY: both caches outlive every use of their paths.
    unsafe {
        assert_eq!(hot.free_hit(a), Ok(()));
        assert_eq!(hot.alloc_hit(), Some(a));
        assert_eq!(
            per_cpu.hot_path().free_hit(b),
            Err(b),
            "per-CPU: always a miss"
        );
        assert_eq!(per_cpu.hot_path().alloc_hit(), None);
        assert_eq!(kmem_magazine::HotPath::<usize>::MISS.alloc_hit(), None);
    }
    // A thread that never touched the cache has no node: the path misses.
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: as above.
            unsafe { assert_eq!(hot.alloc_hit(), None) };
        });
    });
    assert_eq!(threaded.stats().counts.alloc_hits, 1);
    threaded.free(a);
    per_cpu.free(b);
    threaded.check().unwrap();
}
