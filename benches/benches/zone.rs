//! kmem-zone-compat: the DragonFly `zalloc`+`zfree` pair beside general
//! allocators, for 64-byte items.
//!
//! * `alloc+free 64`: one pair at a time on one thread (the per-CPU list hit).
//! * `alloc+free 64 x2 threads`: the same on two threads at once, each
//!   timing its own pairs (the figure is wall time per pair per thread).
//! * `batch 256 x64`: 256 allocations then 256 frees, which crosses the
//!   burst size (128) so per-CPU refills from the global list are included.
//!
//! Subjects: `kmem-zone-compat` (`Zone::alloc`/`free`, CPU from
//! `sched_getcpu`), `kmem-zone-compat thread-slot` (the same zone indexed by
//! the per-thread slot, to show what `sched_getcpu` costs), a `kmem::Cache`
//! of the same size (the illumos/UMA lineage on the same job), and the system
//! allocator, mimalloc and jemalloc through `GlobalAlloc`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kmem_benches::id;
use kmem_sys::thread_slot;
use kmem_zone_compat::Zone;
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

const SIZE: usize = 64;

/// One allocator under test: allocate and free one 64-byte item.
trait Subject: Send + Sync {
    fn alloc(&self) -> NonNull<u8>;
    /// # Safety
    /// `p` came from `alloc` on this subject and is freed once.
    unsafe fn free(&self, p: NonNull<u8>);
}

struct ZoneCpu(Zone);
struct ZoneSlot(Zone);
struct Global<G>(G);
struct KmemCache(kmem::Cache);

/// [`Subject`] for wrappers whose inner type has `alloc()` and
/// `unsafe free(p)` of the subject's shape, returning `Result`s.
macro_rules! subject_by_methods {
    ($($t:ty),*) => {$(
        impl Subject for $t {
            #[inline]
            fn alloc(&self) -> NonNull<u8> {
                self.0.alloc().unwrap()
            }
            #[inline]
            unsafe fn free(&self, p: NonNull<u8>) {
                // SAFETY: passed on from the caller.
                unsafe { self.0.free(p).unwrap() }
            }
        }
    )*};
}

subject_by_methods!(KmemCache, ZoneCpu);

impl Subject for ZoneSlot {
    #[inline]
    fn alloc(&self) -> NonNull<u8> {
        self.0.alloc_on(thread_slot()).unwrap()
    }
    #[inline]
    unsafe fn free(&self, p: NonNull<u8>) {
        // SAFETY: passed on from the caller.
        unsafe { self.0.free_on(thread_slot(), p).unwrap() }
    }
}

const LAYOUT: Layout = match Layout::from_size_align(SIZE, 8) {
    Ok(l) => l,
    Err(_) => panic!("bad layout"),
};

impl<G: GlobalAlloc + Send + Sync> Subject for Global<G> {
    #[inline]
    fn alloc(&self) -> NonNull<u8> {
        // SAFETY: a non-zero-size layout.
        NonNull::new(unsafe { self.0.alloc(LAYOUT) }).expect("out of memory")
    }
    #[inline]
    unsafe fn free(&self, p: NonNull<u8>) {
        // SAFETY: allocated by this allocator with LAYOUT.
        unsafe { self.0.dealloc(p.as_ptr(), LAYOUT) }
    }
}

fn subjects() -> Vec<(&'static str, Arc<dyn Subject>)> {
    vec![
        (
            "kmem-zone-compat",
            Arc::new(ZoneCpu(Zone::new("bench", SIZE).unwrap())),
        ),
        (
            "kmem-zone-compat thread-slot",
            Arc::new(ZoneSlot(Zone::new("bench-slot", SIZE).unwrap())),
        ),
        (
            "kmem Cache",
            Arc::new(KmemCache(
                kmem::Cache::builder("bench-zone", SIZE, 8).build().unwrap(),
            )),
        ),
        ("system", Arc::new(Global(System))),
        ("mimalloc", Arc::new(Global(MiMalloc))),
        ("jemalloc", Arc::new(Global(Jemalloc))),
    ]
}

#[inline]
fn pair(s: &dyn Subject) {
    let p = s.alloc();
    // SAFETY: allocated just above, freed once.
    unsafe { s.free(black_box(p)) };
}

/// Runs `iters` pairs on each of `threads` threads started together and
/// returns the slowest thread's time.
fn threaded(s: &Arc<dyn Subject>, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = s.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Warm this thread's list before the clock starts.
                pair(&*s);
                barrier.wait();
                let t = Instant::now();
                for _ in 0..iters {
                    pair(&*s);
                }
                t.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap()
}

fn zone(c: &mut Criterion) {
    let mut g = c.benchmark_group("zone");
    for (name, s) in subjects() {
        g.bench_function(id("alloc+free 64", name), |b| b.iter(|| pair(&*s)));
        g.bench_function(id("alloc+free 64 x2 threads", name), |b| {
            b.iter_custom(|iters| threaded(&s, 2, iters))
        });
        let mut held = Vec::with_capacity(256);
        g.bench_function(id("batch 256 x64", name), |b| {
            b.iter(|| {
                for _ in 0..256 {
                    held.push(s.alloc());
                }
                for p in held.drain(..) {
                    // SAFETY: each allocated just above, freed once.
                    unsafe { s.free(p) };
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, zone);
criterion_main!(benches);
