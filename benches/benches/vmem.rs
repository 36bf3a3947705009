//! kmem-vmem beside its Rust peers on one workload.
//!
//! * `random N=<N>`: keep N live segments of 1..=64 quanta; each timed step
//!   frees a random live segment and allocates a random size in its place
//!   (time per free+alloc pair). Every subject replays the identical
//!   sequence from the same seed. Subjects: `kmem-vmem instant` and
//!   `kmem-vmem best` (the two policies), `kmem-vmem xalloc` (instant fit
//!   with a 4-quantum alignment and a 64-quantum boundary not to cross),
//!   all through `&mut self` (`alloc_mut`, `xfree_mut`: no lock) like the
//!   peers; `kmem-vmem instant &self` (through `&self`, taking the lock),
//!   `vmem 1.0` (best fit: its instant fit fails on this workload),
//!   `range-alloc` and `offset-allocator`; and `offset-allocator by
//!   address`, offset-allocator behind a hashbrown map from offset to
//!   handle, which frees by address as vmem does (not a goal peer: it
//!   shows what the lookup by address costs). Allocation failures are
//!   recorded as `failures` rows (a failed slot stays empty until picked
//!   again), and kmem-vmem's metadata bytes per live segment as
//!   `metadata` rows.
//!   At each N, kmem-vmem instant fit and the two fastest peers are also
//!   timed in interleaved rounds (`kmem_benches::interleaved`): `best of
//!   interleaved` rows. glibc's mmap threshold is pinned (see
//!   `fresh_mappings`), so no subject inherits another's huge pages.
//! * `qcache pair` / `arena pair`: alloc+free of 4 quanta through a quantum
//!   cache (`kmem-vmem`: the default per-CPU caches; `kmem-vmem per-thread`:
//!   `qcache_mode(Mode::PerThread)`), freed by the unchecked `free_cached`,
//!   and through the arena alone; `qcache pair checked free`: allocated
//!   from the cache, freed by the checked `free`, which goes to the arena.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use criterion::{Criterion, criterion_group, criterion_main};
use kmem_benches::{Rng, Timed, id, interleaved, ns_per, quick, record};
use kmem_vmem::{Constraints, Mode, Policy, Vmem};

const SUITE: &str = "vmem";
/// The quantum, in bytes, for the allocators that take byte sizes.
const Q: usize = 16;
const MAX_QUANTA: u64 = 64;
const SEED: u64 = 0x5eed_0fa1;

/// One allocator under test; sizes are in quanta.
trait Subject {
    type Handle: Copy;
    fn alloc(&mut self, quanta: usize) -> Option<Self::Handle>;
    fn free(&mut self, h: Self::Handle, quanta: usize);
}

/// The live set and the replayable sequence.
///
/// The quanta are kept as `NonZeroUsize`, so `Option` needs no tag of its
/// own: a live entry is 16 bytes for every subject (an 8-byte handle, or
/// offset-allocator's 8-byte `Allocation`, and the size). With a plain
/// `usize` the entry would be 24 bytes for an address handle but 16 for
/// offset-allocator's (its handle has a niche), and at a million segments
/// that difference alone is 8 MB more of the harness's own data competing
/// for the cache.
struct Workload<S: Subject> {
    subject: S,
    live: Vec<Option<(S::Handle, NonZeroUsize)>>,
    rng: Rng,
    failures: u64,
}

// Every subject's live entry is the same size (see `Workload`).
const _: () = {
    assert!(size_of::<Option<(usize, NonZeroUsize)>>() == 16);
    assert!(size_of::<Option<(u64, NonZeroUsize)>>() == 16);
    assert!(size_of::<Option<(u32, NonZeroUsize)>>() == 16);
    assert!(size_of::<Option<(offset_allocator::Allocation<u32>, NonZeroUsize)>>() == 16);
};

impl<S: Subject> Workload<S> {
    fn new(mut subject: S, n: usize) -> Self {
        let mut rng = Rng::new(SEED);
        let mut failures = 0;
        let live = (0..n)
            .map(|_| {
                let q = quanta(&mut rng);
                let h = subject.alloc(q.get());
                failures += u64::from(h.is_none());
                h.map(|h| (h, q))
            })
            .collect();
        Workload {
            subject,
            live,
            rng,
            failures,
        }
    }

    #[inline]
    fn pair(&mut self) {
        let i = self.rng.below(self.live.len() as u64) as usize;
        if let Some((h, q)) = self.live[i].take() {
            self.subject.free(h, q.get());
        }
        let q = quanta(&mut self.rng);
        match self.subject.alloc(q.get()) {
            Some(h) => self.live[i] = Some((h, q)),
            None => self.failures += 1,
        }
    }
}

/// A random size of 1..=`MAX_QUANTA` quanta.
#[inline]
fn quanta(rng: &mut Rng) -> NonZeroUsize {
    NonZeroUsize::new(rng.below(MAX_QUANTA) as usize + 1).expect("at least one quantum")
}

/// kmem-vmem with a policy, through `&mut self` (the `_mut` methods, no
/// lock) as the peers are, or through `&self` when `SHARED`. Each way is
/// its own type, so the timed loop pays no dispatch the peers do not.
struct Ours<const SHARED: bool> {
    arena: Vmem,
    policy: Policy,
}

fn arena(n: usize) -> Vmem {
    // Off the arena list, so that the `_mut` subjects skip the lock.
    Vmem::builder("bench")
        .span(0, n * 2 * MAX_QUANTA as usize * Q)
        .quantum(Q)
        .build()
        .expect("arena")
}

impl<const SHARED: bool> Ours<SHARED> {
    fn new(n: usize, policy: Policy) -> Self {
        Ours {
            arena: arena(n),
            policy,
        }
    }
}

impl Subject for Ours<false> {
    type Handle = usize;
    #[inline]
    fn alloc(&mut self, quanta: usize) -> Option<usize> {
        self.arena.alloc_mut(quanta * Q, self.policy).ok()
    }
    #[inline]
    fn free(&mut self, h: usize, quanta: usize) {
        self.arena.xfree_mut(h, quanta * Q).expect("free");
    }
}

impl Subject for Ours<true> {
    type Handle = usize;
    #[inline]
    fn alloc(&mut self, quanta: usize) -> Option<usize> {
        self.arena.alloc(quanta * Q, self.policy).ok()
    }
    #[inline]
    fn free(&mut self, h: usize, quanta: usize) {
        self.arena.xfree(h, quanta * Q).expect("free");
    }
}

/// kmem-vmem instant fit under constraints, through `&mut self`.
struct Constrained {
    arena: Vmem,
    constraints: Constraints,
}

impl Subject for Constrained {
    type Handle = usize;
    #[inline]
    fn alloc(&mut self, quanta: usize) -> Option<usize> {
        let c = &self.constraints;
        self.arena
            .xalloc_mut(quanta * Q, c, Policy::InstantFit)
            .ok()
    }
    #[inline]
    fn free(&mut self, h: usize, quanta: usize) {
        self.arena.xfree_mut(h, quanta * Q).expect("free");
    }
}

/// The `vmem` 1.0 crate needs a lock type and a tag allocator of ours.
#[derive(Default)]
struct PlLock(parking_lot::Mutex<()>);

// SAFETY: the guard is a real mutex guard: one holder at a time.
unsafe impl vmem::Lock for PlLock {
    type Guard<'a> = parking_lot::MutexGuard<'a, ()>;
    fn lock(&self) -> Self::Guard<'_> {
        self.0.lock()
    }
}

/// One boundary tag per global allocation, as the crate intends.
struct BtAlloc;

// SAFETY: allocate/deallocate pair through the global allocator with the
// layout of a tag.
unsafe impl vmem::Allocator for BtAlloc {
    fn allocate(&self) -> Option<NonNull<vmem::Bt>> {
        // SAFETY: a tag has a non-zero size.
        NonNull::new(unsafe { std::alloc::alloc(std::alloc::Layout::new::<vmem::Bt>()) }.cast())
    }
    unsafe fn deallocate(&self, ptr: NonNull<vmem::Bt>) {
        // SAFETY: `ptr` came from `allocate` with this layout.
        unsafe { std::alloc::dealloc(ptr.as_ptr().cast(), std::alloc::Layout::new::<vmem::Bt>()) }
    }
}

struct Vmem1 {
    arena: vmem::Arena<'static, 'static, BtAlloc, PlLock>,
    policy: vmem::AllocPolicy,
}

impl Vmem1 {
    fn new(n: usize, policy: vmem::AllocPolicy) -> Self {
        let arena = vmem::Arena::create("bench", Q, None, BtAlloc).expect("vmem 1.0 arena");
        // Base Q: the crate reserves nothing, but keep 0 out of its way.
        arena
            .add_span(Q, n * 2 * MAX_QUANTA as usize * Q)
            .expect("vmem 1.0 span");
        Vmem1 { arena, policy }
    }
}

impl Subject for Vmem1 {
    type Handle = usize;
    fn alloc(&mut self, quanta: usize) -> Option<usize> {
        self.arena.alloc(quanta * Q, self.policy).ok()
    }
    fn free(&mut self, h: usize, _quanta: usize) {
        self.arena.free(h).expect("vmem 1.0 free");
    }
}

struct RangeAlloc(range_alloc::RangeAllocator<u64>);

impl Subject for RangeAlloc {
    type Handle = u64;
    fn alloc(&mut self, quanta: usize) -> Option<u64> {
        self.0.allocate_range(quanta as u64).ok().map(|r| r.start)
    }
    fn free(&mut self, h: u64, quanta: usize) {
        self.0.free_range(h..h + quanta as u64);
    }
}

struct OffsetAlloc(offset_allocator::Allocator<u32>);

impl Subject for OffsetAlloc {
    type Handle = offset_allocator::Allocation<u32>;
    fn alloc(&mut self, quanta: usize) -> Option<Self::Handle> {
        self.0.allocate(quanta as u32)
    }
    fn free(&mut self, h: Self::Handle, _quanta: usize) {
        self.0.free(h);
    }
}

/// offset-allocator behind a map from offset to its `Allocation`: the free
/// by address that vmem (and range-alloc) offer, built on offset-allocator
/// the way a user would, with hashbrown. Not a peer the goal is measured
/// against; beside offset-allocator it shows what finding a segment by its
/// address costs an allocator whose free is given a handle.
struct OffsetAllocByAddress {
    oa: offset_allocator::Allocator<u32>,
    map: hashbrown::HashMap<u32, offset_allocator::Allocation<u32>>,
}

impl Subject for OffsetAllocByAddress {
    type Handle = u32;
    fn alloc(&mut self, quanta: usize) -> Option<u32> {
        let a = self.oa.allocate(quanta as u32)?;
        self.map.insert(a.offset, a);
        Some(a.offset)
    }
    fn free(&mut self, h: u32, _quanta: usize) {
        let a = self
            .map
            .remove(&h)
            .expect("offset-allocator: a live offset");
        self.oa.free(a);
    }
}

fn run<S: Subject>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
    name: &str,
    s: S,
) -> Workload<S> {
    let mut w = Workload::new(s, n);
    c.bench_function(id(&format!("random N={n}"), name), |b| b.iter(|| w.pair()));
    record(
        SUITE,
        &format!("random N={n}"),
        name,
        "failures",
        w.failures as f64,
        "count",
    );
    w
}

/// A workload as a subject of [`interleaved`].
fn timed<'a, S: Subject + 'a>(name: &'a str, mut w: Workload<S>) -> Timed<'a> {
    (name, Box::new(move |n| ns_per(n, || w.pair())))
}

/// Pins glibc's mmap threshold at its initial 128 KiB, so every large
/// buffer of every subject is a fresh mapping, unmapped when freed.
///
/// By default glibc raises the threshold to the size of the largest mapped
/// block freed so far, and later large buffers come from the heap instead,
/// possibly from a range an earlier subject advised for transparent huge
/// pages (kmem-vmem advises its tag array): which subject then ran on huge
/// pages depended on the order the subjects ran in.
fn fresh_mappings() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of the C allocator; it
    // is called before this benchmark allocates anything large.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn random(c: &mut Criterion) {
    fresh_mappings();
    let mut g = c.benchmark_group(SUITE);
    // Quick mode keeps every N (the curve needs them) but counts the
    // failures of vmem 1.0's instant fit over fewer pairs.
    let probe = if quick() { 2_000 } else { 10_000 };
    for n in [10, 1000, 100_000, 1_000_000] {
        let bench = format!("random N={n}");
        let w = run(
            &mut g,
            n,
            "kmem-vmem instant",
            Ours::<false>::new(n, Policy::InstantFit),
        );
        let s = w.subject.arena.stats();
        let per = s.metadata_bytes as f64 / s.busy_segments.max(1) as f64;
        record(
            SUITE,
            &bench,
            "kmem-vmem instant",
            "metadata per segment",
            per,
            "bytes",
        );
        drop(w);
        run(
            &mut g,
            n,
            "kmem-vmem instant &self",
            Ours::<true>::new(n, Policy::InstantFit),
        );
        run(
            &mut g,
            n,
            "kmem-vmem best",
            Ours::<false>::new(n, Policy::BestFit),
        );
        let cons = Constraints {
            align: 4 * Q,
            nocross: MAX_QUANTA as usize * Q,
            ..Constraints::default()
        };
        run(
            &mut g,
            n,
            "kmem-vmem xalloc",
            Constrained {
                arena: arena(n),
                constraints: cons,
            },
        );
        let cap = (n * 2 * MAX_QUANTA as usize) as u32;
        let oa = || {
            OffsetAlloc(offset_allocator::Allocator::with_max_allocs(
                cap,
                (2 * n + 1024) as u32,
            ))
        };
        let ra = || RangeAlloc(range_alloc::RangeAllocator::new(0..u64::from(cap)));
        run(&mut g, n, "offset-allocator", oa());
        let by_address = OffsetAllocByAddress {
            oa: oa().0,
            map: hashbrown::HashMap::with_capacity(n),
        };
        run(&mut g, n, "offset-allocator by address", by_address);
        let mut fastest = vec![
            timed(
                "kmem-vmem instant",
                Workload::new(Ours::<false>::new(n, Policy::InstantFit), n),
            ),
            timed("offset-allocator", Workload::new(oa(), n)),
        ];
        // range-alloc and vmem 1.0 scan linearly: past 100k live segments
        // a run would take minutes.
        let scanning_peers = n <= 100_000;
        if scanning_peers {
            fastest.push(timed("range-alloc", Workload::new(ra(), n)));
        }
        let pairs = if quick() { 100_000 } else { 300_000 };
        interleaved(SUITE, &bench, pairs, fastest);
        if scanning_peers {
            run(&mut g, n, "range-alloc", ra());
            run(
                &mut g,
                n,
                "vmem 1.0",
                Vmem1::new(n, vmem::AllocPolicy::BestFit),
            );
            // Its instant fit is not timed: count how often it fails on the
            // same sequence instead.
            let mut w = Workload::new(Vmem1::new(n, vmem::AllocPolicy::InstantFit), n);
            for _ in 0..probe {
                w.pair();
            }
            record(
                SUITE,
                &bench,
                "vmem 1.0 instant",
                "failures",
                w.failures as f64,
                "count",
            );
        }
    }
    g.finish();
}

fn qcache(c: &mut Criterion) {
    let mut g = c.benchmark_group(SUITE);
    let build = |qcache_max, mode| {
        Vmem::builder("pair")
            .span(0, 1 << 30)
            .quantum(Q)
            .qcache_max(qcache_max)
            .qcache_mode(mode)
            .build()
            .expect("arena")
    };
    // A few live segments so the arena is not trivially empty.
    let fill = |a: &Vmem| {
        let mut rng = Rng::new(SEED);
        for _ in 0..1000 {
            a.xalloc(
                (rng.below(MAX_QUANTA) as usize + 1) * Q,
                &Constraints::default(),
                Policy::InstantFit,
            )
            .expect("fill");
        }
    };
    for (mode, name) in [
        (Mode::PerCpu, "kmem-vmem"),
        (Mode::PerThread, "kmem-vmem per-thread"),
    ] {
        let cached = build(16 * Q, mode);
        fill(&cached);
        g.bench_function(id("qcache pair", name), |b| {
            b.iter(|| {
                let x = cached.alloc(4 * Q, Policy::InstantFit).expect("alloc");
                // SAFETY: `x` was just allocated with this size.
                unsafe { cached.free_cached(black_box(x), 4 * Q) }.expect("free");
            })
        });
    }
    // The checked `free` of a cached size goes to the arena: an allocation
    // from the cache, a free under the arena lock.
    let cached = build(16 * Q, Mode::PerCpu);
    fill(&cached);
    g.bench_function(id("qcache pair checked free", "kmem-vmem"), |b| {
        b.iter(|| {
            let x = cached.alloc(4 * Q, Policy::InstantFit).expect("alloc");
            cached.free(black_box(x), 4 * Q).expect("free");
        })
    });
    let plain = build(0, Mode::PerCpu);
    fill(&plain);
    g.bench_function(id("arena pair", "kmem-vmem"), |b| {
        b.iter(|| {
            let x = plain.alloc(4 * Q, Policy::InstantFit).expect("alloc");
            plain.free(black_box(x), 4 * Q).expect("free");
        })
    });
    g.finish();
}

criterion_group!(benches, random, qcache);
criterion_main!(benches);
