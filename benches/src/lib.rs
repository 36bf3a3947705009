//! Shared plumbing for the kmem-rs benchmarks.
//!
//! Timings are taken by criterion; `cargo xtask bench` reads criterion's
//! output and these extra records into `docs/bench/results.csv`.
//!
//! Naming: a criterion group is a *suite*, a function id is a *benchmark* and a
//! parameter is the *subject* (our crate, e.g. `kmem-sys`, or a peer, e.g.
//! `system`). Use [`id`] so every bench follows it.
//!
//! Figures that are not times (waste, resident size, counts) go through
//! [`record`], which appends a CSV row to the file named by the
//! `KMEM_BENCH_EXTRA` environment variable that xtask sets.
//!
//! Whole-program workloads (larson, cache-scratch, xmalloc, mstress,
//! collections) live in [`workloads`]: they run under any global allocator,
//! one process per allocator, so that each reports its own peak resident size.

use std::io::Write;

pub mod workloads;

/// Whether `cargo xtask bench --quick` is running: benches shrink their
/// largest inputs so the whole run stays within a few minutes.
pub fn quick() -> bool {
    std::env::var_os("KMEM_BENCH_QUICK").is_some_and(|v| v == "1")
}

/// The criterion id for `benchmark` measured on `subject`.
pub fn id(benchmark: &str, subject: &str) -> criterion::BenchmarkId {
    criterion::BenchmarkId::new(benchmark, subject)
}

/// One allocate/deallocate pair of `layout` through a `GlobalAlloc`: the
/// peers' (and the kmem facade's) timed step in every pair benchmark.
#[inline]
pub fn global_pair<G: std::alloc::GlobalAlloc + ?Sized>(g: &G, layout: std::alloc::Layout) {
    // SAFETY: a plain allocate/deallocate pair with the same layout.
    unsafe {
        let p = g.alloc(layout);
        g.dealloc(std::hint::black_box(p), layout);
    }
}

/// Records one non-time figure, e.g. `record("slab", "waste 64", "kmem-slab",
/// "waste", 3.1, "%")`. Without `KMEM_BENCH_EXTRA` (a plain `cargo bench`) the
/// row is printed instead.
pub fn record(suite: &str, benchmark: &str, subject: &str, metric: &str, value: f64, unit: &str) {
    let row = format!("{suite},{benchmark},{subject},{metric},{value},{unit}\n");
    match std::env::var_os("KMEM_BENCH_EXTRA") {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.to_string_lossy()));
            f.write_all(row.as_bytes())
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.to_string_lossy()));
        }
        None => print!("record: {row}"),
    }
}

/// One subject of [`interleaved`]: its name, and a closure that runs the
/// operation `n` times and returns nanoseconds per operation (see
/// [`ns_per`]).
pub type Timed<'a> = (&'a str, Box<dyn FnMut(u64) -> f64 + 'a>);

/// Runs `op` `n` times; nanoseconds per run.
#[inline]
pub fn ns_per(n: u64, mut op: impl FnMut()) -> f64 {
    let t = std::time::Instant::now();
    for _ in 0..n {
        op();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Times each subject for `n` operations in turn, round after round, and
/// records each one's best round as metric `best of interleaved` (ns).
///
/// Criterion measures one subject after another, so a burst of load from
/// this machine's other tenants lands on whichever subject runs then: the
/// same code has read 11 to 23 ns for a 64-byte pair across runs, and at
/// 100k live vmem segments, where every operation waits on memory, ratios
/// moved by tens of per cent. Interleaving puts every subject under the same
/// bursts, as the workloads suite does; the best round is the least
/// disturbed one.
///
/// Each round first runs the subject `n` times untimed, as criterion warms
/// up before it measures: the subject before it has just filled the caches
/// with its own data, and refilling them is not what the benchmark asks
/// about. Without the warm-up, rounds of 100k vmem pairs at 100k live
/// segments read 129 ns for kmem-vmem against 80 ns under criterion, and
/// the ratio to offset-allocator measured whose working set came back into
/// the cache faster.
pub fn interleaved(suite: &str, benchmark: &str, n: u64, mut subjects: Vec<Timed<'_>>) {
    let rounds = if quick() { 5 } else { 9 };
    let mut best = vec![f64::INFINITY; subjects.len()];
    for _ in 0..rounds {
        for (b, (_, run)) in best.iter_mut().zip(subjects.iter_mut()) {
            run(n);
            *b = b.min(run(n));
        }
    }
    for ((name, _), b) in subjects.iter().zip(best) {
        record(suite, benchmark, name, "best of interleaved", b, "ns");
    }
}

/// A small, fast, seedable PRNG (xorshift64*), so every subject of a
/// benchmark can replay the identical sequence of sizes and choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let (x, y) = (a.below(10), b.below(10));
            assert_eq!(x, y);
            assert!(x < 10);
        }
        let mut c = Rng::new(8);
        assert_ne!(Rng::new(7).next_u64(), c.next_u64());
    }
}
