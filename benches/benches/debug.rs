//! kmem debugging: the cost of a 64-byte `Cache` alloc+free pair with
//! debugging off (`kmem`), with `LITE` (`kmem lite`) and with the seed's
//! default flags, `AUDIT | DEADBEEF | REDZONE | CONTENTS` (`kmem default`),
//! beside mimalloc and jemalloc doing the same pair through `GlobalAlloc`.
//! Debugging off must cost what a cache cost before debugging existed.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kmem::Cache;
use kmem::debug::{Action, DebugFlags};
use kmem_benches::{global_pair, id};
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

const BENCH: &str = "64B Cache pair";

fn cache_pair(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    subject: &str,
    name: &'static str,
    flags: DebugFlags,
) {
    let cache = Cache::builder(name, 64, 8)
        .debug(flags)
        .on_error(Action::Abort)
        .build()
        .unwrap();
    g.bench_function(id(BENCH, subject), |b| {
        b.iter(|| {
            let p = cache.alloc().unwrap();
            // SAFETY: allocated just above, freed once.
            unsafe { cache.free(black_box(p)) }.unwrap();
        })
    });
}

fn peer_pair(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    subject: &str,
    a: &dyn GlobalAlloc,
) {
    let l = Layout::from_size_align(64, 8).unwrap();
    g.bench_function(id(BENCH, subject), |b| b.iter(|| global_pair(a, l)));
}

fn debug(c: &mut Criterion) {
    let mut g = c.benchmark_group("debug");
    cache_pair(&mut g, "kmem", "bench_debug_off", DebugFlags::NONE);
    cache_pair(&mut g, "kmem lite", "bench_debug_lite", DebugFlags::LITE);
    cache_pair(
        &mut g,
        "kmem default",
        "bench_debug_default",
        DebugFlags::DEFAULT,
    );
    peer_pair(&mut g, "mimalloc", &MiMalloc);
    peer_pair(&mut g, "jemalloc", &Jemalloc);
    g.finish();
}

criterion_group!(benches, debug);
criterion_main!(benches);
