//! Object caches: constructor semantics, UMA zone options, bad frees,
//! reaping, statistics.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kmem::{Cache, KmemError, ObjectCache};

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[test]
fn object_caching_constructs_once_per_slab_trip() {
    let (ctors, dtors) = (counter(), counter());
    let (c2, d2) = (ctors.clone(), dtors.clone());
    let cache = Cache::builder("oc", 64, 8)
        .ctor(move |p| {
            c2.fetch_add(1, Ordering::Relaxed);
            // SAFETY: a 64-byte buffer for us to construct.
            unsafe { p.cast::<u64>().as_ptr().write(0xfeed) };
            true
        })
        .dtor(move |_| {
            d2.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    let a = cache.alloc().unwrap();
    let built = ctors.load(Ordering::Relaxed);
    assert!(built >= 1, "the first allocation constructs");
    for _ in 0..1000 {
        // SAFETY: `a` is ours; freed and re-taken in turn.
        unsafe { cache.free(a).unwrap() };
        let b = cache.alloc().unwrap();
        // SAFETY: constructed state survives the round trip.
        assert_eq!(unsafe { *b.cast::<u64>().as_ptr() }, 0xfeed);
        assert_eq!(b, a, "the hot object comes back");
    }
    assert_eq!(
        ctors.load(Ordering::Relaxed),
        built,
        "magazine hits never construct"
    );
    assert_eq!(dtors.load(Ordering::Relaxed), 0);
    // SAFETY: still ours.
    unsafe { cache.free(a).unwrap() };
    cache.drain();
    assert_eq!(
        dtors.load(Ordering::Relaxed),
        ctors.load(Ordering::Relaxed),
        "draining destroys every constructed object"
    );
    assert_eq!(cache.stats().mem_in_use, 0, "and gives every slab back");
}

#[test]
fn per_alloc_mode_runs_ctor_and_dtor_every_time() {
    let (ctors, dtors) = (counter(), counter());
    let (c2, d2) = (ctors.clone(), dtors.clone());
    let cache = Cache::builder("uma", 32, 8)
        .ctor(move |_| {
            c2.fetch_add(1, Ordering::Relaxed);
            true
        })
        .dtor(move |_| {
            d2.fetch_add(1, Ordering::Relaxed);
        })
        .per_alloc()
        .build()
        .unwrap();
    for _ in 0..10 {
        let p = cache.alloc().unwrap();
        // SAFETY: ours, freed once.
        unsafe { cache.free(p).unwrap() };
    }
    assert_eq!(ctors.load(Ordering::Relaxed), 10);
    assert_eq!(dtors.load(Ordering::Relaxed), 10);
}

#[test]
fn a_refusing_ctor_is_an_error_and_loses_nothing() {
    let cache = Cache::builder("refuse", 16, 8)
        .ctor(|_| false)
        .build()
        .unwrap();
    let e = cache.alloc().unwrap_err();
    assert!(
        matches!(e, KmemError::CtorFailed { cache: "refuse" }),
        "{e}"
    );
    assert_eq!(cache.stats().alloc_fail, 1);
    assert_eq!(cache.stats().buf_in_use, 0);
    cache.drain();
    assert_eq!(cache.stats().mem_in_use, 0);
}

#[test]
fn secondary_caches_share_the_keg_with_their_own_ctor() {
    let primary = Cache::builder("primary", 48, 16).ctor(|p| {
        // SAFETY: 48 bytes to construct.
        unsafe { p.as_ptr().write(1) };
        true
    });
    let primary = primary.limit(64).build().unwrap();
    let second = primary
        .secondary("second")
        .ctor(|p| {
            // SAFETY: as above.
            unsafe { p.as_ptr().write(2) };
            true
        })
        .build()
        .unwrap();
    let a = primary.alloc().unwrap();
    let b = second.alloc().unwrap();
    // SAFETY: both constructed buffers are ours.
    unsafe {
        assert_eq!(*a.as_ptr(), 1);
        assert_eq!(*b.as_ptr(), 2);
        // Same keg: a buffer of one is a buffer of the other for the page map.
        primary.free(a).unwrap();
        second.free(b).unwrap();
    }
    assert_eq!(
        primary.stats().limit,
        second.stats().limit,
        "one keg, one limit"
    );
}

#[test]
fn the_limit_refuses_or_waits() {
    let cache = Cache::builder("limited", 256, 8)
        .no_magazines()
        .limit(1)
        .build()
        .unwrap();
    let limit = cache.stats().limit as usize;
    assert!(limit >= 1);
    let held: Vec<NonNull<u8>> = (0..limit).map(|_| cache.alloc().unwrap()).collect();
    let e = cache.alloc().unwrap_err();
    assert!(
        matches!(
            e,
            KmemError::Full {
                cache: "limited",
                ..
            }
        ),
        "{e}"
    );
    let e = cache
        .alloc_wait(Some(Duration::from_millis(20)))
        .unwrap_err();
    assert!(matches!(e, KmemError::TimedOut { .. }), "{e}");
    // A free on another thread wakes a waiter.
    let last = held[0].as_ptr() as usize;
    std::thread::scope(|s| {
        let c = cache.clone();
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: a buffer the main thread handed over and no longer uses.
            unsafe { c.free(NonNull::new(last as *mut u8).unwrap()).unwrap() };
        });
        let p = cache.alloc_wait(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(p.as_ptr() as usize, last);
        // SAFETY: ours.
        unsafe { cache.free(p).unwrap() };
    });
    for p in &held[1..] {
        // SAFETY: ours.
        unsafe { cache.free(*p).unwrap() };
    }
}

#[test]
fn foreign_pointers_are_refused() {
    let a = Cache::builder("cache-a", 64, 8).build().unwrap();
    let b = Cache::builder("cache-b", 64, 8).build().unwrap();
    let p = a.alloc().unwrap();
    // SAFETY: refused before anything is touched.
    let e = unsafe { b.free(p) }.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("cache-b") && text.contains(&format!("{:#x}", p.as_ptr() as usize)),
        "{text}"
    );
    let local = 5u64;
    // SAFETY: refused before anything is touched.
    let e = unsafe { a.free(NonNull::from(&local).cast()) }.unwrap_err();
    assert!(
        matches!(
            e,
            KmemError::BadFree {
                cache: "cache-a",
                ..
            }
        ),
        "{e}"
    );
    // SAFETY: ours.
    unsafe { a.free(p).unwrap() };
    a.check().unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads the resident size from /proc/self/statm, which Miri cannot open"
)]
fn draining_returns_memory_to_the_os() {
    let cache = Cache::builder("bulk", 4096, 4096).build().unwrap();
    let held: Vec<NonNull<u8>> = (0..8192)
        .map(|_| {
            let p = cache.alloc().unwrap();
            // SAFETY: a 4 KiB buffer of ours.
            unsafe { p.as_ptr().write_bytes(1, 4096) };
            p
        })
        .collect();
    let before = kmem_sys::mem::resident_bytes().unwrap();
    for p in held {
        // SAFETY: ours, freed once.
        unsafe { cache.free(p).unwrap() };
    }
    assert!(cache.drain() > 0);
    let after = kmem_sys::mem::resident_bytes().unwrap();
    assert!(
        before >= after + (16 << 20),
        "resident {before} -> {after} after draining 32 MiB"
    );
    assert_eq!(cache.stats().mem_in_use, 0);
}

#[test]
fn reap_runs_the_reclaim_callback() {
    let calls = counter();
    let c2 = calls.clone();
    let cache = Cache::builder("reclaimable", 128, 8)
        .reclaim(move || {
            c2.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    cache.reap();
    cache.reap();
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[test]
fn statistics_track_use() {
    let cache = Cache::builder("counted", 100, 4).build().unwrap();
    let ps: Vec<_> = (0..10).map(|_| cache.alloc().unwrap()).collect();
    let s = cache.stats();
    assert_eq!(s.name, "counted");
    assert!(s.buf_size >= 100);
    assert_eq!(s.buf_in_use, 10);
    assert_eq!(s.allocs, 10);
    assert!(s.mem_in_use >= 1000);
    for p in ps {
        // SAFETY: ours.
        unsafe { cache.free(p).unwrap() };
    }
    let s = cache.stats();
    assert_eq!(s.buf_in_use, 0);
    assert_eq!(s.frees, 10);
    let table = kmem::stats::Table(&[s]).to_string();
    assert!(table.contains("counted"), "{table}");
}

#[test]
fn object_cache_keeps_objects_constructed_and_drops_them_at_the_end() {
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    struct Tracked(Vec<u32>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
    // Allocations per thread; Miri interleaves the threads at random
    // points of its own and takes about a minute over the full count.
    const ROUNDS: usize = if cfg!(miri) { 100 } else { 2000 };
    {
        let objs = ObjectCache::new("tracked", || {
            LIVE.fetch_add(1, Ordering::Relaxed);
            Tracked(vec![7; 16])
        });
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        let mut o = objs.alloc();
                        assert_eq!(o.0, vec![7; 16]);
                        o.0[0] = 8;
                        o.0[0] = 7; // back to the constructed state
                    }
                });
            }
        });
        assert!(
            LIVE.load(Ordering::Relaxed) > 0,
            "objects stay constructed while cached"
        );
    }
    assert_eq!(
        LIVE.load(Ordering::Relaxed),
        0,
        "dropping the cache drops every object"
    );
}

#[test]
fn kmem_alloc_routes_sizes_and_catches_wrong_sizes() {
    for size in [
        1,
        8,
        9,
        64,
        100,
        1000,
        4096,
        5000,
        65536,
        131072,
        131073,
        1 << 20,
    ] {
        let p = kmem::kmem_alloc(size).unwrap();
        if size % 64 == 0 && size <= 4096 {
            assert_eq!(p.as_ptr() as usize % 64, 0, "size {size}");
        }
        // SAFETY: `size` bytes of ours.
        unsafe {
            p.as_ptr().write_bytes(1, size);
            kmem::kmem_free(p, size).unwrap();
        }
    }
    let p = kmem::kmem_alloc(100).unwrap();
    // SAFETY: refused before anything is freed.
    let e = unsafe { kmem::kmem_free(p, 300) }.unwrap_err();
    assert!(
        matches!(
            e,
            KmemError::WrongSize {
                given: 300,
                actual: 112,
                ..
            }
        ),
        "{e}"
    );
    // SAFETY: now the right size.
    unsafe { kmem::kmem_free(p, 100).unwrap() };
    let z = kmem::kmem_zalloc(3000).unwrap();
    // SAFETY: 3000 bytes of ours.
    unsafe {
        assert!(
            std::slice::from_raw_parts(z.as_ptr(), 3000)
                .iter()
                .all(|&b| b == 0)
        );
        kmem::kmem_free(z, 3000).unwrap();
    }
    assert!(kmem::kmem_alloc(0).is_err());
}

#[test]
fn a_cache_of_its_own_page_source_takes_and_returns_its_pages() {
    let os = Arc::new(kmem_sys::OsPages::new());
    let cache = Cache::builder("own-pages", 64, 8)
        .page_source(os.clone())
        .build()
        .unwrap();
    let held: Vec<NonNull<u8>> = (0..200).map(|_| cache.alloc().unwrap()).collect();
    assert!(os.bytes_in_use() >= 200 * 64, "slabs come from the source");
    for p in &held {
        // SAFETY: a 64-byte buffer of ours.
        unsafe { p.as_ptr().write_bytes(3, 64) };
    }
    // A pointer narrowed to the buffer's first byte, as a reference to part
    // of it makes: the buffer goes back whole (under Miri, the next owner's
    // writes to all 64 bytes would otherwise fail).
    // SAFETY: the buffer is live; the reference covers its first byte.
    let narrow = NonNull::from(unsafe { &mut *held[0].as_ptr() });
    // SAFETY: ours, freed once (through `narrow`, not `held[0]`).
    unsafe { cache.free(narrow).unwrap() };
    let again = cache.alloc().unwrap();
    // SAFETY: a 64-byte buffer of ours.
    unsafe { again.as_ptr().write_bytes(4, 64) };
    for p in held.iter().skip(1).chain([&again]) {
        // SAFETY: ours, freed once.
        unsafe { cache.free(*p).unwrap() };
    }
    cache.check().unwrap();
    assert!(cache.drain() > 0);
    assert_eq!(os.bytes_in_use(), 0, "every slab went back to the source");
}
