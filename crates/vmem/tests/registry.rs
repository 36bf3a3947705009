//! The process-wide arena list (the seed's `vmem_list`): arenas of every
//! type join it when built and leave it when dropped, walkers see each
//! arena whole, and a drop waits for a walker using the arena.
//!
//! Tests of one binary run at once and share the list, so each test looks
//! only at arenas whose names start with its own prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use kmem_vmem::{ImportFns, Policy, Summary, Vmem, for_each_arena, whatis_all};

/// The names on the list that start with `prefix`, in list order.
fn listed(prefix: &str) -> Vec<String> {
    let mut names = vec![];
    for_each_arena(|a| {
        if a.name().starts_with(prefix) {
            names.push(a.name().to_owned());
        }
    });
    names
}

/// A metadata allocator of its own type, counting its live bytes.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

// SAFETY: every call forwards to `Global`, which upholds the contract.
unsafe impl Allocator for Counting {
    fn allocate(&self, layout: Layout) -> Result<std::ptr::NonNull<[u8]>, AllocError> {
        self.0.fetch_add(layout.size(), Ordering::Relaxed);
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: std::ptr::NonNull<u8>, layout: Layout) {
        self.0.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `Global.allocate` with this layout.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

/// A summary must add up: its classes hold every busy and free byte.
fn assert_whole(s: &Summary) {
    let busy: usize = s.classes().map(|c| c.busy_bytes).sum();
    let free: usize = s.classes().map(|c| c.free_bytes).sum();
    let tags: usize = s.classes().map(|c| c.busy).sum();
    assert_eq!((busy, free, tags), (s.inuse, s.free, s.busy_tags), "{s}");
    assert_eq!(s.inuse + s.free, s.size, "{s}");
}

#[test]
fn arenas_of_every_type_join_the_list_and_leave_it_when_dropped() {
    let meta = Counting::default();
    let plain = Vmem::builder("types plain")
        .listed(true)
        .span(0x1000, 0x1000)
        .quantum(16)
        .build()
        .unwrap();
    let counted = Vmem::builder("types counted")
        .listed(true)
        .span(0x10_0000, 0x1000)
        .metadata(meta.clone())
        .build()
        .unwrap();
    let parent = Arc::new(
        Vmem::builder("types parent")
            .listed(true)
            .span(0x100_0000, 0x10_0000)
            .quantum(0x1000)
            .build()
            .unwrap(),
    );
    let child = Vmem::builder("types child")
        .listed(true)
        .quantum(0x1000)
        .qcache_max(0x2000)
        .source(parent.clone(), 0x1_0000)
        .build()
        .unwrap();
    let fns = Vmem::builder("types fns")
        .listed(true)
        .quantum(16)
        .source(ImportFns::new(|_| Some(0x4000_0000), |_, _| {}), 0x1000)
        .build()
        .unwrap();
    let unlisted = Vmem::builder("types unlisted")
        .span(0x1000, 0x1000)
        .build()
        .unwrap();
    assert!(meta.0.load(Ordering::Relaxed) > 0);
    // Most recently built first, as the seed inserts at the list's head.
    let all = [
        "types fns",
        "types child",
        "types parent",
        "types counted",
        "types plain",
    ];
    assert_eq!(listed("types "), all);

    let p = child.alloc(0x1000, Policy::InstantFit).unwrap();
    let x = plain.alloc(64, Policy::InstantFit).unwrap();
    let f = fns.alloc(32, Policy::InstantFit).unwrap();
    assert_eq!(unlisted.alloc(64, Policy::InstantFit).unwrap(), x);
    // Both the child and the parent it imported the span from hold `p`;
    // `x` is in `plain` alone (the unlisted arena is not walked).
    let hits = |addr| {
        let mut hits: Vec<_> = whatis_all(addr)
            .into_iter()
            .filter(|w| w.arena.as_str().starts_with("types "))
            .map(|w| (w.arena.to_string(), w.start, w.size, w.allocated, w.offset))
            .collect();
        hits.sort();
        hits
    };
    assert_eq!(
        hits(p + 0x10),
        [
            ("types child".to_owned(), p, 0x1000, true, 0x10),
            ("types parent".to_owned(), p, 0x1_0000, true, 0x10),
        ]
    );
    assert_eq!(hits(x + 8), [("types plain".to_owned(), x, 64, true, 8)]);
    assert_eq!(
        hits(f + 40),
        [("types fns".to_owned(), f + 32, 0x1000 - 32, false, 8)]
    );
    assert_eq!(
        hits(0x10_0800),
        [("types counted".to_owned(), 0x10_0000, 0x1000, false, 0x800)]
    );

    // What a walker sees of each arena is what the arena itself reports.
    let mut compared = 0;
    for_each_arena(|a| {
        let own = match a.name() {
            "types plain" => (plain.summary(), plain.dump()),
            "types counted" => (counted.summary(), counted.dump()),
            "types child" => (child.summary(), child.dump()),
            _ => return,
        };
        compared += 1;
        assert_whole(&a.summary());
        assert_eq!(a.summary().to_string(), own.0.to_string());
        assert_eq!(a.dump().tags(), own.1.tags());
        assert_eq!(a.dump().to_string(), own.1.to_string());
    });
    assert_eq!(compared, 3);

    drop(child);
    assert_eq!(
        listed("types "),
        ["types fns", "types parent", "types counted", "types plain"]
    );
    assert!(hits(p).iter().all(|h| h.0 != "types child"));
    assert_eq!(parent.stats().allocated, 0, "the child gave its span back");
    drop((plain, counted, fns, unlisted));
    assert_eq!(listed("types "), ["types parent"]);
    drop(parent);
    assert!(listed("types ").is_empty());
    assert_eq!(meta.0.load(Ordering::Relaxed), 0);
}

/// One thread builds and drops arenas of three types, allocating in each,
/// while others walk the list: every walk sees whole arenas, and once the
/// builder is done none of its arenas is left on the list.
#[test]
fn walks_run_while_arenas_come_and_go() {
    let rounds = if cfg!(miri) { 6 } else { 300 };
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            for round in 0..rounds {
                let parent = Vmem::builder("churn parent")
                    .listed(true)
                    .span(0x100_0000, 0x10_0000)
                    .quantum(0x1000)
                    .build()
                    .unwrap();
                let child = Vmem::builder("churn child")
                    .listed(true)
                    .quantum(0x1000)
                    .source(&parent, 0x4000)
                    .build()
                    .unwrap();
                let counted = Vmem::builder("churn counted")
                    .listed(true)
                    .span(0, 0x1_0000)
                    .quantum(16)
                    .metadata(Counting::default())
                    .build()
                    .unwrap();
                for i in 0..(round % 7 + 1) {
                    child.alloc(0x1000 * (i + 1), Policy::InstantFit).unwrap();
                    counted.alloc(16 * (i + 1), Policy::BestFit).unwrap();
                }
                // Drop in varying orders; the child always before the
                // parent it borrows.
                if round % 2 == 0 {
                    drop(counted);
                    drop(child);
                } else {
                    drop(child);
                    drop(counted);
                }
                drop(parent);
            }
            done.store(true, Ordering::Release);
        });
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    for_each_arena(|a| {
                        if a.name().starts_with("churn ") {
                            let s = a.summary();
                            assert_whole(&s);
                            assert_eq!(s.name.as_str(), a.name());
                            let d = a.dump();
                            assert_eq!(d.tags().iter().filter(|t| t.size == 0).count(), 0);
                        }
                    });
                    // The parent's span, and the child's first import,
                    // start there.
                    for w in whatis_all(0x100_0000) {
                        if w.arena.as_str().starts_with("churn ") {
                            assert_eq!((w.start, w.offset), (0x100_0000, 0), "{w}");
                        }
                    }
                }
            });
        }
    });
    assert!(listed("churn ").is_empty());
}

/// A drop waits for a walker that is using the arena: it leaves the list
/// under the list lock, which the walker holds.
#[test]
fn a_drop_waits_for_the_walker_using_the_arena() {
    let arena = Vmem::builder("waits")
        .listed(true)
        .span(0, 0x1000)
        .build()
        .unwrap();
    let (inside, finished) = (AtomicBool::new(false), AtomicBool::new(false));
    thread::scope(|s| {
        s.spawn(|| {
            for_each_arena(|a| {
                if a.name() == "waits" {
                    inside.store(true, Ordering::Release);
                    // Give the drop time to run, were it not waiting.
                    thread::sleep(Duration::from_millis(50));
                    assert_eq!(a.summary().size, 0x1000);
                    finished.store(true, Ordering::Release);
                }
            });
        });
        while !inside.load(Ordering::Acquire) {
            thread::yield_now();
        }
        drop(arena);
        assert!(finished.load(Ordering::Acquire), "the drop did not wait");
    });
    assert!(listed("waits").is_empty());
}

/// `&mut` access to a listed arena takes the lock, as walkers on other
/// threads reach the arena meanwhile (Miri checks that no access races).
#[test]
fn exclusive_calls_on_a_listed_arena_share_it_with_walkers() {
    let mut arena = Vmem::builder("exclusive listed")
        .listed(true)
        .span(0, 0x1_0000)
        .quantum(16)
        .build()
        .unwrap();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                for_each_arena(|a| {
                    if a.name() == "exclusive listed" {
                        assert_whole(&a.summary());
                    }
                });
            }
        });
        let mut live = vec![];
        for i in 0..if cfg!(miri) { 20 } else { 2000 } {
            if i % 3 == 2 {
                let (x, size) = live.swap_remove(i % live.len());
                arena.free_mut(x, size).unwrap();
            } else {
                let size = 16 * (i % 5 + 1);
                live.push((arena.alloc_mut(size, Policy::InstantFit).unwrap(), size));
            }
        }
        done.store(true, Ordering::Release);
    });
    arena.check().unwrap();
}

#[test]
fn unlisted_arenas_may_come_and_go_inside_a_walk() {
    let _listed = Vmem::builder("inside walk").listed(true).build().unwrap();
    let mut got = None;
    for_each_arena(|a| {
        if a.name() == "inside walk" {
            // Building or dropping a listed arena here would wait for the
            // list lock this walk holds; an unlisted one never takes it.
            let tmp = Vmem::builder("inside tmp").span(0x40, 64).build().unwrap();
            got = Some(tmp.alloc(8, Policy::InstantFit).unwrap());
        }
    });
    assert_eq!(got, Some(0x40));
}
