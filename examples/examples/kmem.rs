//! The kmem facade: object caches, `kmem_alloc`, and kmem as the global
//! allocator.
//!
//! Seed: `illumos-kmem.c.txt` (`kmem_cache_create` / `_alloc` / `_free`,
//! object caching with constructors that run only when a buffer leaves the
//! slab layer, `kmem_alloc` / `kmem_free` over the `kmem_alloc_<size>`
//! caches, `kmem_reap`, the `::kmastat` table), with UMA's
//! `uma_zone_set_max` and `uma_zsecond_create` (`freebsd-uma_core.c.txt`)
//! for the cache limit and secondary zones.
//!
//! What to look for in the output:
//! 1. the `ObjectCache`'s constructor count: the first `alloc` builds a
//!    whole magazine of objects; freeing one and allocating again hands back
//!    the same, still-constructed object and builds nothing;
//! 2. a `Cache` with ctor/dtor and a limit of 100 objects, rounded up to
//!    whole slabs: allocation stops with `Full` exactly there, and draining
//!    runs the destructor once for every constructor call; a secondary
//!    cache (UMA `uma_zsecond_create`) on the same keg runs its own
//!    constructor and shares the limit;
//! 3. `kmem_free` with the wrong size refused as `WrongSize` (nothing
//!    freed), then freed with the right one;
//! 4. the statistics table: the `kmem_alloc_*` classes this program's own
//!    `Vec`s and `String`s used (kmem is the global allocator), and the two
//!    caches; then `reap`, which keeps the working set and this thread's
//!    magazines (so it may free nothing yet), and `purge`, which empties
//!    them first and gives the `kmem_alloc_112` slab back. Rows of the
//!    `kmem_alloc_*` classes count the calling thread's magazine activity
//!    only once it reaches the depot, so before the purge "in use" includes
//!    buffers cached in this thread's magazines.
//!
//! Run: `cargo run -p kmem-examples --example kmem`.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kmem::{KmemError, ObjectCache, kmem_alloc, kmem_free};

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem::new();

/// A connection record whose construction is worth caching: it owns a
/// pre-sized buffer.
struct Conn {
    buf: Vec<u8>,
    peer: u32,
}

static BUILT: AtomicUsize = AtomicUsize::new(0);

fn main() -> Result<(), KmemError> {
    // Ordinary Rust allocations already go through kmem.
    let words: Vec<String> = (0..200).map(|i| format!("word-{i}")).collect();
    let total: usize = words.iter().map(String::len).sum();
    assert_eq!(words[199], "word-199");

    println!("1. ObjectCache<Conn>: constructors run once per object");
    let conns = ObjectCache::new("conns", || {
        BUILT.fetch_add(1, Ordering::Relaxed);
        Conn {
            buf: Vec::with_capacity(4096),
            peer: 0,
        }
    });
    let mut c = conns.alloc();
    let first = BUILT.load(Ordering::Relaxed);
    let addr = c.as_ptr();
    println!("  first alloc: {first} constructed (a magazine's worth)");
    assert!(first >= 1);
    c.peer = 7;
    c.buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
    // Back to the constructed state before it returns to the cache.
    c.buf.clear();
    c.peer = 0;
    drop(c);
    let again = conns.alloc();
    let second = BUILT.load(Ordering::Relaxed);
    println!(
        "  second alloc: same object {}, {second} constructed in all, capacity {}",
        again.as_ptr() == addr,
        again.buf.capacity()
    );
    assert_eq!(second, first, "a magazine hit constructs nothing");
    assert_eq!(again.as_ptr(), addr, "LIFO: the hot object comes back");
    assert!(again.buf.capacity() >= 4096);
    drop(again);

    println!("\n2. Cache with ctor, dtor and a limit");
    let ctors = Arc::new(AtomicUsize::new(0));
    let dtors = Arc::new(AtomicUsize::new(0));
    let (nc, nd) = (ctors.clone(), dtors.clone());
    let sessions = kmem::Cache::builder("sessions", 256, 64)
        .ctor(move |p| {
            nc.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the cache hands the constructor a 256-byte buffer.
            unsafe { p.as_ptr().write_bytes(0xa5, 256) };
            true
        })
        .dtor(move |_| {
            nd.fetch_add(1, Ordering::Relaxed);
        })
        .limit(100)
        .build()?;
    let limit = sessions.stats().limit as usize;
    let mut held: Vec<NonNull<u8>> = Vec::new();
    let err = loop {
        match sessions.alloc() {
            Ok(p) => held.push(p),
            Err(e) => break e,
        }
    };
    println!(
        "  limit 100 -> {limit} (whole slabs); allocated {}, then: {err}",
        held.len()
    );
    assert!(limit >= 100);
    assert_eq!(held.len(), limit);
    assert!(matches!(err, KmemError::Full { .. }));
    // SAFETY: a live 256-byte buffer of this cache.
    assert_eq!(unsafe { *held[0].as_ptr().add(255) }, 0xa5, "constructed");
    for p in held.drain(..) {
        // SAFETY: from this cache, still in its constructed state, freed once.
        unsafe { sessions.free(p)? };
    }
    let slabs = sessions.drain();
    let (c, d) = (ctors.load(Ordering::Relaxed), dtors.load(Ordering::Relaxed));
    println!("  freed all, drained {slabs} slabs: {c} constructed, {d} destroyed");
    assert_eq!(c, limit);
    assert_eq!(
        d, c,
        "every constructed object destroyed once on its way down"
    );
    assert_eq!(sessions.stats().mem_in_use, 0);

    // UMA's secondary zone (`uma_zsecond_create`): a second cache over the
    // same keg, with its own constructor and magazines, sharing the limit.
    let audit = sessions
        .secondary("sessions-audit")
        .ctor(|p| {
            // SAFETY: a raw 256-byte buffer for the constructor.
            unsafe { p.as_ptr().write(0x5a) };
            true
        })
        .build()?;
    let (s1, a1) = (sessions.alloc()?, audit.alloc()?);
    // SAFETY: both are constructed buffers of ours.
    let (t1, t2) = unsafe { (*s1.as_ptr(), *a1.as_ptr()) };
    println!(
        "  secondary cache on the same keg: first bytes {t1:#04x} (sessions) and {t2:#04x} (audit), limit {} shared",
        audit.stats().limit
    );
    assert_ne!(t1, t2, "each cache runs its own constructor");
    assert_eq!(audit.stats().limit, sessions.stats().limit);
    // SAFETY: each goes back to the cache it came from, once.
    unsafe {
        sessions.free(s1)?;
        audit.free(a1)?;
    }
    audit.drain();
    sessions.drain();

    println!("\n3. kmem_alloc / kmem_free");
    let p = kmem_alloc(100)?;
    // SAFETY: 100 bytes of ours.
    unsafe { p.as_ptr().write_bytes(1, 100) };
    // SAFETY: a kmem_alloc buffer; a wrong size is refused and frees nothing.
    let wrong = unsafe { kmem_free(p, 300) };
    println!("  kmem_free(p, 300): {}", wrong.as_ref().unwrap_err());
    // The class holds 112 bytes; under KMEM_DEBUG the buffer's tag
    // remembers the 100 asked for, and the error says so.
    assert!(matches!(
        wrong,
        Err(KmemError::WrongSize {
            given: 300,
            actual: 100 | 112,
            ..
        })
    ));
    // SAFETY: still ours (the refused free changed nothing); freed once.
    unsafe {
        assert_eq!(*p.as_ptr().add(99), 1);
        kmem_free(p, 100)?;
    }
    let big = kmem::kmem_zalloc(200 * 1024)?;
    // SAFETY: 200 KiB of zeroed memory of ours, then freed once.
    unsafe {
        assert_eq!(*big.as_ptr().add(200 * 1024 - 1), 0);
        kmem_free(big, 200 * 1024)?;
    }
    println!("  100 B from kmem_alloc_112 and 200 KiB from the page layer, freed");

    println!("\n4. kmem::stats::caches()");
    let rows = kmem::stats::caches();
    print!("{}", kmem::stats::Table(&rows));
    let row = |name: &str| rows.iter().find(|r| r.name == name);
    assert!(row("kmem_alloc_112").is_some());
    assert!(
        row("kmem_alloc_16").is_some_and(|r| r.allocs > 0),
        "the Strings"
    );
    assert!(row("conns").is_some_and(|r| r.allocs == 2 && r.buf_in_use == 0));
    assert!(row("sessions").is_some_and(|r| r.buf_in_use == 0 && r.limit == limit as u64));
    let slabs = A.reap();
    println!("A.reap(): {slabs} empty slabs given back");
    // reap keeps the working set (and this thread's magazines); purge
    // empties the magazines first, so kmem_alloc_112's one slab goes.
    let slabs = A.purge();
    println!("A.purge(): {slabs} empty slabs given back");
    let after = A.stats();
    let r112 = after
        .iter()
        .find(|r| r.name == "kmem_alloc_112")
        .expect("row");
    println!(
        "  kmem_alloc_112 now: {} in use, {} bytes of slabs",
        r112.buf_in_use, r112.mem_in_use
    );
    assert_eq!((r112.buf_in_use, r112.mem_in_use), (0, 0));
    assert_eq!(total, words.iter().map(String::len).sum::<usize>());
    Ok(())
}
