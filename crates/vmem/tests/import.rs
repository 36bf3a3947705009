//! Nested arenas, user import/release callbacks, the limit, reclaim,
//! blocking allocation, and the metadata allocator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use kmem_vmem::{Builder, Constraints, ImportFns, Policy, Vmem, VmemError};

/// A parent arena over `[base, base + size)` in `quantum`-byte quanta.
fn parent(base: usize, size: usize, quantum: usize) -> Vmem {
    Vmem::builder("parent")
        .span(base, size)
        .quantum(quantum)
        .build()
        .unwrap()
}

/// A child of `parent` in the same quanta that borrows it as its source,
/// importing in multiples of `import_quantum` bytes; add settings, then
/// build.
fn child_of(parent: &Vmem, import_quantum: usize) -> Builder<Global, &Vmem> {
    Vmem::builder("child")
        .quantum(parent.quantum())
        .source(parent, import_quantum)
}

/// A parent of 1 MiB in 4 KiB quanta, and a child that shares it through
/// an `Arc` and imports 64 KiB spans.
fn parent_and_child() -> (Arc<Vmem>, Vmem<Global, Arc<Vmem>>) {
    let parent = Arc::new(parent(0x10_0000, 0x10_0000, 0x1000));
    let child = Vmem::builder("child")
        .quantum(0x1000)
        .source(parent.clone(), 0x1_0000)
        .build()
        .unwrap();
    (parent, child)
}

#[test]
fn a_child_imports_from_its_parent_and_releases_whole_spans() {
    let (parent, child) = parent_and_child();
    let a = child.alloc(0x1000, Policy::InstantFit).unwrap();
    let b = child.alloc(0x1000, Policy::BestFit).unwrap();
    assert_eq!(child.stats().imports, 1, "one 64 KiB import serves both");
    assert_eq!(parent.stats().allocated, 0x1_0000);
    let big = child.alloc(0x2_1000, Policy::InstantFit).unwrap();
    assert_eq!(child.stats().imports, 2);
    assert_eq!(parent.stats().allocated, 0x1_0000 + 0x3_0000);
    child.check().unwrap();
    child.free(big, 0x2_1000).unwrap();
    assert_eq!(child.stats().releases, 1);
    child.free(a, 0x1000).unwrap();
    assert_eq!(parent.stats().allocated, 0x1_0000);
    child.free(b, 0x1000).unwrap();
    let s = child.stats();
    assert_eq!((s.total, s.imported, s.spans, s.releases), (0, 0, 0, 2));
    assert_eq!(parent.stats().allocated, 0);
    parent.check().unwrap();
    child.check().unwrap();
}

#[test]
fn an_exclusive_free_releases_a_wholly_free_span_to_the_parent() {
    let (parent, mut child) = parent_and_child();
    let x = child.alloc_mut(0x3000, Policy::InstantFit).unwrap();
    assert_eq!(parent.stats().allocated, 0x1_0000, "the miss imported");
    child.free_mut(x, 0x3000).unwrap();
    assert_eq!(child.stats().releases, 1);
    assert_eq!(parent.stats().allocated, 0);
    child.check().unwrap();
}

#[test]
fn an_aligned_request_imports_a_padded_span() {
    let parent = parent(0x1000, 1 << 24, 0x1000);
    let child = child_of(&parent, 0x1000).build().unwrap();
    let c = kmem_vmem::Constraints {
        align: 0x10_0000,
        ..Default::default()
    };
    let x = child.xalloc(0x1000, &c, Policy::InstantFit).unwrap();
    assert_eq!(x % 0x10_0000, 0);
    assert_eq!(child.stats().imported, 2 * 0x10_0000 + 0x1000);
    child.xfree(x, 0x1000).unwrap();
    assert_eq!(parent.stats().allocated, 0);
}

/// A constrained request no span of the parent can meet imports span
/// after span, as the seed does, until the parent is out; the failed call
/// then gives them all back, leaving the parent as it was.
#[test]
fn a_constrained_request_that_fails_gives_back_the_spans_it_imported() {
    const P: usize = 0x1000;
    let parent = parent(0, 256 * P, P);
    let child = child_of(&parent, P).build().unwrap();
    let kept = child.alloc(P, Policy::InstantFit).unwrap();
    let beyond = Constraints {
        min_addr: 512 * P,
        ..Constraints::default()
    };
    let e = child.xalloc(P, &beyond, Policy::BestFit).unwrap_err();
    assert!(matches!(e, VmemError::Exhausted { .. }), "{e}");
    let s = child.stats();
    assert_eq!(s.imports, 256, "it took every page the parent had");
    assert_eq!((s.releases, s.imported, s.allocated), (255, P, P));
    assert_eq!(parent.stats().allocated, P, "only the page in use is out");
    child.check().unwrap();
    parent.check().unwrap();
    // A waiting call that times out gives them back too.
    let e = child
        .xalloc_wait(P, &beyond, Policy::BestFit, Some(Duration::from_millis(10)))
        .unwrap_err();
    assert!(matches!(e, VmemError::TimedOut { .. }), "{e}");
    assert_eq!(parent.stats().allocated, P);
    child.free(kept, P).unwrap();
    assert_eq!(parent.stats().allocated, 0);
}

/// A constrained request that the parent can meet, past spans that cannot,
/// still imports until it gets one and succeeds, keeping the others (the
/// seed's behaviour).
#[test]
fn a_constrained_request_imports_until_a_span_meets_it() {
    const P: usize = 0x1000;
    let parent = parent(0, 64 * P, P);
    let child = child_of(&parent, P).build().unwrap();
    let high = Constraints {
        min_addr: 32 * P,
        ..Constraints::default()
    };
    let x = child.xalloc(P, &high, Policy::BestFit).unwrap();
    assert_eq!(x, 32 * P);
    let s = child.stats();
    assert_eq!((s.imports, s.releases, s.imported), (33, 0, 33 * P));
    child.xfree(x, P).unwrap();
    assert_eq!(child.stats().imported, 32 * P);
    child.check().unwrap();
}

#[test]
fn user_callbacks_see_every_import_and_release() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0x4000_0000));
    let (l1, l2, n) = (log.clone(), log.clone(), next.clone());
    let fns = ImportFns::new(
        move |size| {
            let base = n.fetch_add(size, Ordering::Relaxed);
            l1.lock().unwrap().push(("import", base, size));
            Some(base)
        },
        move |base, size| l2.lock().unwrap().push(("release", base, size)),
    );
    let a = Vmem::builder("cb")
        .quantum(16)
        .source(fns, 0x100)
        .build()
        .unwrap();
    let x = a.alloc(0x80, Policy::InstantFit).unwrap();
    let y = a.alloc(0x180, Policy::InstantFit).unwrap();
    a.free(x, 0x80).unwrap();
    a.free(y, 0x180).unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            ("import", 0x4000_0000, 0x100),
            ("import", 0x4000_0100, 0x200),
            ("release", 0x4000_0000, 0x100),
            ("release", 0x4000_0100, 0x200),
        ]
    );
}

#[test]
fn a_failing_or_bogus_import_is_an_error_not_a_corruption() {
    let a = Vmem::builder("none")
        .quantum(16)
        .source(ImportFns::new(|_| None, |_, _| {}), 0)
        .build()
        .unwrap();
    assert!(matches!(
        a.alloc(16, Policy::InstantFit),
        Err(VmemError::Exhausted { .. })
    ));
    assert_eq!(a.stats().import_failures, 1);
    let released = Arc::new(AtomicUsize::new(0));
    let r = released.clone();
    let b = Vmem::builder("bogus")
        .quantum(16)
        .source(
            ImportFns::new(
                |_| Some(8),
                move |_, _| {
                    r.fetch_add(1, Ordering::Relaxed);
                },
            ),
            0,
        )
        .build()
        .unwrap();
    assert!(matches!(
        b.alloc(16, Policy::InstantFit),
        Err(VmemError::InvalidSpan { .. })
    ));
    assert_eq!(
        released.load(Ordering::Relaxed),
        1,
        "the bad span went back"
    );
    b.check().unwrap();
}

#[test]
fn the_limit_caps_imported_bytes() {
    let parent = parent(0, 1 << 20, 0x100);
    let child = child_of(&parent, 0x1000).limit(0x2000).build().unwrap();
    child.alloc(0x1000, Policy::InstantFit).unwrap();
    child.alloc(0x1000, Policy::InstantFit).unwrap();
    assert!(child.alloc(0x100, Policy::InstantFit).is_err());
    let s = child.stats();
    assert_eq!((s.imported, s.limit), (0x2000, 0x2000));
}

/// A request so large that the imported bytes plus it overflow `usize`
/// is over any limit: refused like one, with nothing imported (the sum
/// used to panic in debug builds and wrap past the limit in release).
#[test]
fn a_request_whose_import_overflows_the_limit_sum_is_refused() {
    const P: usize = 0x1000;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let fns = ImportFns::new(
        move |size| {
            log.lock().unwrap().push(size);
            Some(0x100_0000)
        },
        |_, _| {},
    );
    let a = Vmem::builder("limited")
        .quantum(P)
        .limit(1 << 20)
        .source(fns, P)
        .build()
        .unwrap();
    a.alloc(P, Policy::InstantFit).unwrap();
    // Rounds to usize::MAX - P + 1, which overflows when added to the P
    // bytes imported so far.
    let e = a
        .alloc(usize::MAX - (P - 1), Policy::InstantFit)
        .unwrap_err();
    assert!(matches!(e, VmemError::Exhausted { .. }), "{e}");
    assert_eq!(*asked.lock().unwrap(), [P], "only the first import ran");
    let s = a.stats();
    assert_eq!((s.imported, s.imports, s.failures), (P, 1, 1));
    a.check().unwrap();
}

#[test]
fn reclaim_runs_before_failing_and_a_successful_one_retries() {
    let a = Arc::new(
        Vmem::builder("r")
            .span(0, 0x100)
            .quantum(0x10)
            .build()
            .unwrap(),
    );
    let hoard = a.alloc(0x100, Policy::InstantFit).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, a2) = (calls.clone(), a.clone());
    // The reclaim hook frees the hoard from another "subsystem".
    let b = Vmem::builder("rc")
        .quantum(0x10)
        .source(a.clone(), 0x100)
        .reclaim(move |name| {
            assert_eq!(name.as_str(), "rc");
            if c.fetch_add(1, Ordering::Relaxed) == 0 {
                a2.free(hoard, 0x100).unwrap();
            }
        })
        .build()
        .unwrap();
    // First attempt: import fails, reclaim frees the parent but not b itself,
    // so b has no more room and fails; the second attempt imports.
    let first = b.alloc(0x10, Policy::InstantFit);
    assert!(first.is_err());
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert!(b.alloc(0x10, Policy::InstantFit).is_ok());
    assert_eq!(b.stats().reclaims, 1);
}

#[test]
fn a_waiting_allocation_wakes_on_free() {
    let a = Arc::new(
        Vmem::builder("w")
            .span(0, 0x100)
            .quantum(0x10)
            .build()
            .unwrap(),
    );
    let x = a.alloc(0x100, Policy::InstantFit).unwrap();
    let a2 = a.clone();
    let waiter = thread::spawn(move || a2.alloc_wait(0x80, Policy::BestFit, None));
    while a.stats().waits == 0 {
        thread::yield_now();
    }
    a.free(x, 0x100).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 0);
}

#[test]
fn a_waiting_allocation_wakes_on_add() {
    let a = Arc::new(Vmem::builder("w").quantum(0x10).build().unwrap());
    let a2 = a.clone();
    let waiter = thread::spawn(move || {
        a2.alloc_wait(0x80, Policy::InstantFit, Some(Duration::from_secs(30)))
    });
    while a.stats().waits == 0 {
        thread::yield_now();
    }
    a.add(0x1000, 0x1000).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 0x1000);
}

/// A timeout too long for a deadline to be represented (`Duration::MAX`)
/// means waiting for ever; it used to panic computing the deadline.
#[test]
fn a_timeout_past_any_deadline_waits_for_ever() {
    let a = Arc::new(
        Vmem::builder("forever")
            .span(0, 0x100)
            .quantum(0x10)
            .build()
            .unwrap(),
    );
    let x = a
        .alloc_wait(0x100, Policy::InstantFit, Some(Duration::MAX))
        .unwrap();
    let a2 = a.clone();
    let waiter = thread::spawn(move || {
        a2.xalloc_wait(
            0x80,
            &Constraints::default(),
            Policy::BestFit,
            Some(Duration::MAX),
        )
    });
    while a.stats().waits == 0 {
        thread::yield_now();
    }
    a.free(x, 0x100).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(0));
}

#[test]
fn a_waiting_allocation_times_out() {
    let a = Vmem::builder("t")
        .span(0, 0x100)
        .quantum(0x10)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let e = a
        .alloc_wait(0x200, Policy::InstantFit, Some(Duration::from_millis(30)))
        .unwrap_err();
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert!(matches!(e, VmemError::TimedOut { .. }), "{e}");
    let s = a.stats();
    assert_eq!((s.waits, s.timeouts, s.failures), (1, 1, 1));
}

/// The timeout that bounds the waiting tests below if a wake-up is lost;
/// none of them waits for it to pass when the code is right.
const FAILURE_BOUND: Option<Duration> = Some(Duration::from_secs(30));

/// Spins until `waits()`, the waits counted by the arenas a waiter may
/// sleep in, is above zero: an arena counts a wait under its lock just
/// before sleeping, so a free after this cannot be missed.
fn until_asleep(waits: impl Fn() -> u64) {
    while waits() == 0 {
        thread::yield_now();
    }
}

/// A child with no room waits inside its parent (`M_WAITOK` passed down to
/// the import), so a free in the parent wakes it; it used to sleep in the
/// child, where only the child's frees woke it.
#[test]
fn a_child_waiter_wakes_when_the_parent_frees() {
    const P: usize = 0x1000;
    let parent = Arc::new(parent(0, P, P));
    let child = Arc::new(
        Vmem::builder("child")
            .quantum(P)
            .source(parent.clone(), P)
            .build()
            .unwrap(),
    );
    let held = parent.alloc(P, Policy::InstantFit).unwrap();
    let c = child.clone();
    let waiter = thread::spawn(move || c.alloc_wait(P, Policy::InstantFit, FAILURE_BOUND));
    until_asleep(|| parent.stats().waits + child.stats().waits);
    parent.free(held, P).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(held));
    assert_eq!(child.stats().imports, 1);
    let (p, c) = (parent.stats(), child.stats());
    assert!(p.waits >= 1 && c.waits == 0, "it waited in the parent");
}

type Child = Vmem<Global, Arc<Vmem>>;
type Waiter = thread::JoinHandle<Result<usize, VmemError>>;

/// A child (quantum caches up to `qcache_max`) holding both pages of a
/// two-page parent as one span, both allocated, and a thread asleep in the
/// parent waiting for a third: the parent, the child, one of the pages, and
/// the waiter.
fn a_child_waiting_in_its_parent(qcache_max: usize) -> (Arc<Vmem>, Arc<Child>, usize, Waiter) {
    const P: usize = 0x1000;
    let parent = Arc::new(parent(0, 2 * P, P));
    let child = Arc::new(
        Vmem::builder("child")
            .quantum(P)
            .qcache_max(qcache_max)
            .source(parent.clone(), 2 * P)
            .build()
            .unwrap(),
    );
    let a = child.alloc(P, Policy::InstantFit).unwrap();
    child.alloc(P, Policy::InstantFit).unwrap();
    let c = child.clone();
    let waiter = thread::spawn(move || c.alloc_wait(P, Policy::InstantFit, FAILURE_BOUND));
    until_asleep(|| parent.stats().waits + child.stats().waits);
    (parent, child, a, waiter)
}

/// A child waiter blocked in its parent still wakes when the child gets
/// room: a free of a segment of a span that stays imported.
#[test]
fn a_child_waiter_blocked_in_the_parent_wakes_when_the_child_frees() {
    let (parent, child, a, waiter) = a_child_waiting_in_its_parent(0);
    child.free(a, 0x1000).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(a));
    let (p, c) = (parent.stats(), child.stats());
    assert!(p.waits >= 1 && c.waits == 0, "it waited in the parent");
    assert_eq!(c.imports, 1, "the span was not given back");
    parent.check().unwrap();
    child.check().unwrap();
}

/// The same through a quantum cache: the free leaves the segment busy in
/// the child, cached, and the waiter must leave the parent to drain it.
#[test]
fn a_child_waiter_blocked_in_the_parent_wakes_on_a_cached_free() {
    let (parent, child, a, waiter) = a_child_waiting_in_its_parent(0x1000);
    // SAFETY: `a` is a page the child allocated and nothing freed.
    unsafe { child.free_cached(a, 0x1000) }.unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(a));
    let (p, c) = (parent.stats(), child.stats());
    assert!(p.waits >= 1 && c.waits == 0, "it waited in the parent");
    parent.check().unwrap();
    child.check().unwrap();
}

/// Three levels: the waiter blocks in the grandparent, and a free in the
/// child, two sources down, wakes it.
#[test]
fn a_waiter_blocked_two_sources_up_wakes_when_its_arena_frees() {
    const P: usize = 0x1000;
    let grandparent = Arc::new(parent(0, 2 * P, P));
    let parent = Arc::new(
        Vmem::builder("parent")
            .quantum(P)
            .source(grandparent.clone(), 2 * P)
            .build()
            .unwrap(),
    );
    let child = Arc::new(
        Vmem::builder("child")
            .quantum(P)
            .source(parent.clone(), 2 * P)
            .build()
            .unwrap(),
    );
    let a = child.alloc(P, Policy::InstantFit).unwrap();
    let _b = child.alloc(P, Policy::InstantFit).unwrap();
    let c = child.clone();
    let waiter = thread::spawn(move || c.alloc_wait(P, Policy::InstantFit, FAILURE_BOUND));
    until_asleep(|| grandparent.stats().waits + parent.stats().waits + child.stats().waits);
    child.free(a, P).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(a));
    assert!(grandparent.stats().waits >= 1);
    assert_eq!(parent.stats().allocated, 2 * P);
}

/// A source that cannot wait (the default `import_wait`, as `ImportFns`
/// have) leaves the waiter asleep in its own arena, where its frees wake
/// it.
#[test]
fn a_waiter_over_a_source_that_cannot_wait_sleeps_in_its_arena() {
    let a = Arc::new(
        Vmem::builder("fns")
            .span(0, 0x100)
            .quantum(0x10)
            .source(ImportFns::new(|_| None, |_, _| {}), 0)
            .build()
            .unwrap(),
    );
    let x = a.alloc(0x100, Policy::InstantFit).unwrap();
    let a2 = a.clone();
    let waiter = thread::spawn(move || a2.alloc_wait(0x10, Policy::InstantFit, FAILURE_BOUND));
    until_asleep(|| a.stats().waits);
    a.free(x, 0x100).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(0));
    assert!(a.stats().import_failures >= 1, "it asked the source first");
}

/// More threads than pages, each taking a page with `alloc_wait` and
/// giving it back, in a child with quantum caches over a parent: waiters
/// sleep in the parent and in the child, frees go to the caches, to the
/// child and, with whole spans, to the parent. A lost wake-up leaves a
/// thread waiting until its timeout, which fails the test.
#[test]
fn threads_waiting_for_pages_of_a_child_all_get_them() {
    const P: usize = 0x1000;
    let parent = Arc::new(parent(0, 4 * P, P));
    let child = Arc::new(
        Vmem::builder("child")
            .quantum(P)
            .qcache_max(P)
            .source(parent.clone(), 2 * P)
            .build()
            .unwrap(),
    );
    let rounds = if cfg!(miri) { 10 } else { 2_000 };
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let child = child.clone();
            thread::spawn(move || {
                for i in 0..rounds {
                    let x = child
                        .alloc_wait(P, Policy::InstantFit, FAILURE_BOUND)
                        .unwrap();
                    if (i + t) % 3 == 0 {
                        thread::yield_now();
                    }
                    child.free(x, P).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    child.drain_qcaches();
    assert_eq!(child.stats().allocated, 0);
    assert_eq!(parent.stats().allocated, child.stats().imported);
    child.check().unwrap();
    parent.check().unwrap();
}

/// A child waiter whose deadline passes in the parent times out in the
/// child, naming the child, and does not sleep in the child after. (The
/// parent may or may not have slept before the deadline, on a slow
/// machine: its timeout is what it counts either way.)
#[test]
fn a_child_waiter_times_out_in_the_parent() {
    const P: usize = 0x1000;
    let parent = parent(0, P, P);
    let child = child_of(&parent, P).build().unwrap();
    let _held = parent.alloc(P, Policy::InstantFit).unwrap();
    let e = child
        .alloc_wait(P, Policy::InstantFit, Some(Duration::from_millis(30)))
        .unwrap_err();
    assert!(
        matches!(e, VmemError::TimedOut { arena, .. } if arena.as_str() == "child"),
        "{e}"
    );
    let (p, c) = (parent.stats(), child.stats());
    assert_eq!(p.timeouts, 1, "it waited in the parent");
    assert_eq!((c.waits, c.timeouts, c.failures), (0, 1, 1));
}

/// Freeing in the parent a span a child imported is not caught there (the
/// parent cannot tell it from its own segments); the child's free that
/// gives the span back then panics, saying what happened.
#[test]
#[should_panic(
    expected = "no longer has it allocated: was it freed in parent behind the child's back?"
)]
fn a_span_freed_in_the_parent_behind_the_childs_back_is_named_when_the_child_frees() {
    let parent = parent(0, 0x10_0000, 0x1000);
    let child = child_of(&parent, 0x1_0000).build().unwrap();
    let x = child.alloc(0x1000, Policy::InstantFit).unwrap();
    parent.free(x, 0x1_0000).unwrap();
    let _ = child.free(x, 0x1000);
}

#[test]
fn dropping_a_child_returns_its_spans() {
    let parent = parent(0, 1 << 20, 0x100);
    {
        let child = child_of(&parent, 0x1000).build().unwrap();
        child.alloc(0x100, Policy::InstantFit).unwrap();
        child.alloc(0x2000, Policy::InstantFit).unwrap();
        assert_eq!(parent.stats().allocated, 0x3000);
    }
    assert_eq!(parent.stats().allocated, 0);
    parent.check().unwrap();
}

/// Random allocations and frees, all policies, some constrained, in an
/// arena that imports spans (back to back or with gaps, beside a static
/// span): every step keeps every invariant, spans are released when wholly
/// free, and freeing everything returns every span to the source.
#[test]
#[cfg_attr(miri, ignore = "thousands of random steps: minutes under Miri")]
fn random_imports_and_releases_keep_every_invariant() {
    for seed in 1..13u64 {
        let spans: Arc<Mutex<BTreeMap<usize, usize>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0x1000_0000));
        let gap = if seed % 2 == 0 { 0x1000 } else { 0 };
        let (s1, s2, n) = (spans.clone(), spans.clone(), next.clone());
        let fns = ImportFns::new(
            move |size| {
                let base = n.fetch_add(size + gap, Ordering::Relaxed);
                s1.lock().unwrap().insert(base, size);
                Some(base)
            },
            move |base, size| assert_eq!(s2.lock().unwrap().remove(&base), Some(size)),
        );
        let a = Vmem::builder("random")
            .quantum(16)
            .source(fns, 0x400)
            .build()
            .unwrap();
        if seed % 3 == 0 {
            a.add(0x0fff_f000, 0x1000).unwrap();
        }
        let mut state = seed;
        let mut below = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let mut live: Vec<(usize, usize)> = vec![];
        for _ in 0..3000 {
            if below(10) < 5 || live.is_empty() {
                let most = if below(8) == 0 { 200 } else { 70 };
                let size = (below(most) as usize + 1) * 16;
                let policy =
                    [Policy::InstantFit, Policy::BestFit, Policy::NextFit][below(3) as usize];
                let x = if below(3) == 0 {
                    let c = Constraints {
                        align: 16 << below(6),
                        ..Constraints::default()
                    };
                    a.xalloc(size, &c, policy)
                } else {
                    a.alloc(size, policy)
                };
                live.push((x.unwrap(), size));
            } else {
                let (x, size) = live.swap_remove(below(live.len() as u64) as usize);
                a.free(x, size).unwrap();
            }
            a.check().unwrap();
        }
        assert!(a.stats().releases > 0, "seed {seed}: no span was released");
        for (x, size) in live {
            a.free(x, size).unwrap();
        }
        a.check().unwrap();
        assert_eq!(a.stats().imported, 0);
        assert!(spans.lock().unwrap().is_empty(), "seed {seed}: spans kept");
    }
}

/// A metadata allocator that counts its bytes and can be told to fail:
/// everything (`fail`), or only requests of one alignment (`fail_align`;
/// the tag array asks for 16, its bitmap and the busy hash for less).
#[derive(Clone, Default)]
struct Counting {
    live: Arc<AtomicUsize>,
    fail: Arc<AtomicUsize>,
    fail_align: Arc<AtomicUsize>,
}

// SAFETY: every call forwards to `Global`, which upholds the contract.
unsafe impl Allocator for Counting {
    fn allocate(&self, layout: Layout) -> Result<std::ptr::NonNull<[u8]>, AllocError> {
        if self.fail.load(Ordering::Relaxed) != 0
            || self.fail_align.load(Ordering::Relaxed) == layout.align()
        {
            return Err(AllocError);
        }
        self.live.fetch_add(layout.size(), Ordering::Relaxed);
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: std::ptr::NonNull<u8>, layout: Layout) {
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `Global.allocate` with this layout.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

/// An arena of `size` bytes in 16-byte quanta, its metadata from a new
/// [`Counting`].
fn counted(size: usize) -> (Counting, Vmem<Counting>) {
    let meta = Counting::default();
    let a = Vmem::builder("counted")
        .span(0, size)
        .quantum(16)
        .metadata(meta.clone())
        .build()
        .unwrap();
    (meta, a)
}

#[test]
fn metadata_comes_from_the_given_allocator_and_its_failure_is_clean() {
    let (meta, a) = counted(1 << 30);
    let mut xs = vec![];
    while meta.fail.load(Ordering::Relaxed) == 0 {
        xs.push(a.alloc(16, Policy::InstantFit).unwrap());
        if xs.len() == 300 {
            meta.fail.store(1, Ordering::Relaxed);
        }
    }
    assert!(meta.live.load(Ordering::Relaxed) > 0);
    // Run allocations until the tag pool is out; each failure is clean.
    let mut failed = false;
    for _ in 0..2000 {
        match a.alloc(16, Policy::InstantFit) {
            Ok(x) => xs.push(x),
            Err(e) => {
                assert!(matches!(e, VmemError::NoMetadata { .. }), "{e}");
                failed = true;
                break;
            }
        }
    }
    assert!(failed);
    a.check().unwrap();
    meta.fail.store(0, Ordering::Relaxed);
    for x in xs {
        a.free(x, 16).unwrap();
    }
    a.check().unwrap();
    drop(a);
    assert_eq!(meta.live.load(Ordering::Relaxed), 0);
}

/// Grows the tag pool past `tags`, then refuses only the tag array's own
/// memory, so that a growth fails after the bitmaps beside it grew: every
/// failure must leave the arena whole, and growing later must work.
fn refused_tag_growth_is_clean(tags: usize) {
    let (meta, a) = counted(1 << 40);
    let mut xs = vec![];
    while a.stats().tags < tags {
        xs.push((a.alloc(16, Policy::InstantFit).unwrap(), 16));
    }
    // Free every other one, so free tags (and their bits) are everywhere.
    let kept: Vec<(usize, usize)> = xs.iter().step_by(2).copied().collect();
    for &(x, size) in xs.iter().skip(1).step_by(2) {
        a.free(x, size).unwrap();
    }
    xs = kept;
    a.check().unwrap();
    meta.fail_align.store(16, Ordering::Relaxed);
    let before = a.stats().tags;
    let mut refused = 0;
    while refused < 3 {
        match a.alloc(1 << 14, Policy::InstantFit) {
            Ok(x) => xs.push((x, 1 << 14)),
            Err(e) => {
                assert!(matches!(e, VmemError::NoMetadata { .. }), "{e}");
                a.check().unwrap();
                refused += 1;
            }
        }
    }
    assert_eq!(a.stats().tags, before, "a refused growth kept no tags");
    meta.fail_align.store(0, Ordering::Relaxed);
    for _ in 0..before / 4 {
        xs.push((a.alloc(16, Policy::BestFit).unwrap(), 16));
    }
    assert!(a.stats().tags > before);
    a.check().unwrap();
    for (x, size) in xs {
        a.free(x, size).unwrap();
    }
    a.check().unwrap();
    assert_eq!(a.stats().busy_segments, 0);
    assert_eq!(a.stats().free_segments, 1);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "grows the tag pool to thousands of tags: minutes under Miri"
)]
fn a_refused_tag_growth_after_the_bitmap_grew_is_clean() {
    refused_tag_growth_is_clean(3_000);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "grows the tag pool past a huge page: far too slow under Miri"
)]
fn a_refused_tag_growth_on_the_huge_page_path_is_clean() {
    // Past 65 536 tags (2 MiB) the array moves to a fresh buffer.
    refused_tag_growth_is_clean(70_000);
}
