//! kmem facade: object caches and the global allocator beside mimalloc,
//! jemalloc and the system allocator.
//!
//! * `64B pair`: one alloc+free of a 64-byte object, single thread, hot
//!   (the loaded-magazine path): `Cache`, `ObjectCache<T>`, `Kmem` through
//!   `GlobalAlloc`, and each peer through its `GlobalAlloc`. All of them
//!   are also timed in interleaved rounds (`kmem_benches::interleaved`):
//!   `best of interleaved` rows.
//! * `64B batch of 100`: 100 allocations then 100 frees, per object (a
//!   magazine refill and drain every so often).
//! * `expensive ctor`: an object whose constructor fills a 256-entry table;
//!   `ObjectCache<T>` keeps it constructed, `Box::new(T::new())` pays each
//!   time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kmem::{Cache, Kmem, ObjectCache};
use kmem_benches::{Timed, global_pair, id, interleaved, ns_per};
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

const L64: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!("valid layout"),
};

fn pair_global(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    a: &dyn GlobalAlloc,
) {
    g.bench_function(id("64B pair", name), |b| b.iter(|| global_pair(a, L64)));
    g.bench_function(id("64B batch of 100", name), |b| {
        let mut held = Vec::with_capacity(100);
        b.iter(|| {
            for _ in 0..100 {
                // SAFETY: freed below with the same layout.
                held.push(unsafe { a.alloc(L64) });
            }
            for p in held.drain(..) {
                // SAFETY: allocated just above.
                unsafe { a.dealloc(black_box(p), L64) };
            }
        })
    });
}

/// An object worth caching constructed: a lookup table.
struct Table([u32; 256]);

impl Table {
    fn new() -> Self {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        Table(t)
    }
}

fn facade(c: &mut Criterion) {
    let mut g = c.benchmark_group("kmem");
    let cache = Cache::builder("bench64", 64, 8).build().unwrap();
    let cache_pair = || {
        let p = cache.alloc().unwrap();
        // SAFETY: allocated just above.
        unsafe { cache.free(black_box(p)).unwrap() };
    };
    g.bench_function(id("64B pair", "kmem Cache"), |b| b.iter(cache_pair));
    let objs = ObjectCache::new("bench64-typed", || [0u64; 8]);
    let objs_pair = || drop(black_box(objs.alloc()));
    g.bench_function(id("64B pair", "kmem ObjectCache"), |b| b.iter(objs_pair));
    static KMEM: Kmem = Kmem::new();
    pair_global(&mut g, "kmem", &KMEM);
    pair_global(&mut g, "mimalloc", &MiMalloc);
    pair_global(&mut g, "jemalloc", &Jemalloc);
    pair_global(&mut g, "system", &System);
    let pair_of = |a: &'static dyn GlobalAlloc| move |n| ns_per(n, || global_pair(a, L64));
    let subjects: Vec<Timed<'_>> = vec![
        ("kmem Cache", Box::new(|n| ns_per(n, cache_pair))),
        ("kmem ObjectCache", Box::new(|n| ns_per(n, objs_pair))),
        ("kmem", Box::new(pair_of(&KMEM))),
        ("mimalloc", Box::new(pair_of(&MiMalloc))),
        ("jemalloc", Box::new(pair_of(&Jemalloc))),
        ("system", Box::new(pair_of(&System))),
    ];
    interleaved("kmem", "64B pair", 1_000_000, subjects);
    g.throughput(Throughput::Elements(100));
    g.bench_function(id("64B batch of 100", "kmem Cache"), |b| {
        let mut held = Vec::with_capacity(100);
        b.iter(|| {
            held.extend((0..100).map(|_| cache.alloc().unwrap()));
            for p in held.drain(..) {
                // SAFETY: allocated just above.
                unsafe { cache.free(black_box(p)).unwrap() };
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("kmem ctor");
    let tables = ObjectCache::new("tables", Table::new);
    g.bench_function(id("expensive ctor", "kmem ObjectCache"), |b| {
        b.iter(|| black_box(tables.alloc().0[255]))
    });
    g.bench_function(id("expensive ctor", "Box::new"), |b| {
        b.iter(|| black_box(Box::new(Table::new()).0[255]))
    });
    g.finish();
}

criterion_group!(benches, facade);
criterion_main!(benches);
