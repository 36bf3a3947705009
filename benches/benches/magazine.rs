//! kmem-magazine: the magazine hit path and the depot under contention.
//!
//! * `pair 64B`: one alloc+free pair through a loaded magazine, for each
//!   front end (`MagazinePair` held directly, `Magazines` per-thread and
//!   per-CPU), beside a 64-byte malloc+free pair of mimalloc, jemalloc and
//!   the system allocator called through `GlobalAlloc`.
//! * `two threads vs one`: pairs per second of two threads divided by one
//!   thread's (recorded, not timed by criterion).
//! * `depot contention`: two threads churning 40 items through 1-round
//!   magazines with a 2 ms resize interval; the time per alloc+free and the
//!   magazine size the depot settled at (recorded).

use std::alloc::{Layout, System};
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kmem_benches::{global_pair, id, quick, record};
use kmem_magazine::{Backend, Config, Depot, MagazinePair, Magazines, Mode};
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

const SUITE: &str = "magazine";

/// Hands out fresh integers (addresses in a vmem quantum cache look alike).
#[derive(Default)]
struct Ints(AtomicUsize);

impl Backend for Ints {
    type Item = usize;

    fn import(&self, out: &mut [MaybeUninit<usize>]) -> usize {
        let base = self.0.fetch_add(out.len(), Ordering::Relaxed);
        for (i, slot) in out.iter_mut().enumerate() {
            slot.write(base + i);
        }
        out.len()
    }

    fn release(&self, _items: &[usize]) {}
}

fn cache(mode: Mode) -> Magazines<Ints> {
    Magazines::new(Ints::default(), Config::new("bench", 64).mode(mode)).unwrap()
}

fn hit_path(c: &mut Criterion) {
    let mut g = c.benchmark_group(SUITE);
    let depot = Depot::new(Ints::default(), Config::new("bench-pair", 64)).unwrap();
    let mut pair = MagazinePair::new();
    g.bench_function(id("pair 64B", "kmem-magazine pair"), |b| {
        b.iter(|| {
            let x = pair.alloc(&depot).unwrap();
            pair.free(&depot, black_box(x));
        })
    });
    pair.flush(&depot);
    for (mode, name) in [
        (Mode::PerThread, "kmem-magazine per-thread"),
        (Mode::PerCpu, "kmem-magazine per-cpu"),
    ] {
        let m = cache(mode);
        g.bench_function(id("pair 64B", name), |b| {
            b.iter(|| {
                let x = m.alloc().unwrap();
                m.free(black_box(x));
            })
        });
    }
    let layout = Layout::from_size_align(64, 8).unwrap();
    g.bench_function(id("pair 64B", "mimalloc"), |b| {
        b.iter(|| global_pair(&MiMalloc, layout))
    });
    g.bench_function(id("pair 64B", "jemalloc"), |b| {
        b.iter(|| global_pair(&Jemalloc, layout))
    });
    g.bench_function(id("pair 64B", "system"), |b| {
        b.iter(|| global_pair(&System, layout))
    });
    g.finish();
}

/// Seconds for `threads` threads to do `n` pairs each through `f`.
fn run_threads(threads: usize, n: usize, f: &(dyn Fn() + Sync)) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..n {
                    f();
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn scaling(_c: &mut Criterion) {
    let n = if quick() { 2_000_000 } else { 10_000_000 };
    let layout = Layout::from_size_align(64, 8).unwrap();
    for (mode, name) in [
        (Mode::PerThread, "kmem-magazine per-thread"),
        (Mode::PerCpu, "kmem-magazine per-cpu"),
    ] {
        let m = cache(mode);
        let f = || {
            let x = m.alloc().unwrap();
            m.free(black_box(x));
        };
        run_threads(2, n / 10, &f); // warm both threads' pairs up
        let one = run_threads(1, n, &f);
        let two = run_threads(2, n, &f);
        record(
            SUITE,
            "two threads vs one",
            name,
            "throughput ratio",
            2.0 * one / two,
            "x",
        );
    }
    let f = || global_pair(&MiMalloc, layout);
    let one = run_threads(1, n, &f);
    let two = run_threads(2, n, &f);
    record(
        SUITE,
        "two threads vs one",
        "mimalloc",
        "throughput ratio",
        2.0 * one / two,
        "x",
    );
}

fn contention(c: &mut Criterion) {
    let mut g = c.benchmark_group(SUITE);
    let cfg = Config::new("bench-contention", 64)
        .mode(Mode::PerThread)
        .magazine_size(1)
        .interval(Duration::from_millis(2));
    let m = Magazines::new(Ints::default(), cfg).unwrap();
    g.bench_function(id("depot contention", "kmem-magazine"), |b| {
        b.iter_custom(|iters| {
            let batches = (iters / 40).max(1) as usize;
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        let mut v = Vec::with_capacity(40);
                        for _ in 0..batches.div_ceil(2) {
                            v.extend((0..40).map(|_| m.alloc().unwrap()));
                            for x in v.drain(..) {
                                m.free(x);
                            }
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
    let s = m.stats();
    record(
        SUITE,
        "depot contention",
        "kmem-magazine",
        "settled magazine size",
        s.magazine_size as f64,
        "rounds",
    );
    record(
        SUITE,
        "depot contention",
        "kmem-magazine",
        "resizes",
        s.resizes as f64,
        "count",
    );
    record(
        SUITE,
        "depot contention",
        "kmem-magazine",
        "depot contention",
        s.depot_contention as f64,
        "count",
    );
}

criterion_group!(benches, hit_path, scaling, contention);
criterion_main!(benches);
