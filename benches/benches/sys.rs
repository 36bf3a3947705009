//! kmem-sys: the costs every allocator above it pays for OS plumbing.
//!
//! * `current cpu`: `kmem_sys::current_cpu` (the rseq `cpu_id` load) beside
//!   `sched_getcpu` (the vDSO call it replaces), a thread-local read (the
//!   per-thread alternative) and `std::thread::current().id()`.
//! * `page map+unmap`: an `OsPages` page against the system allocator's
//!   page-sized malloc+free.
//! * `commit+decommit`: one page through a `Reservation`.
//! * `lock+unlock`: the non-allocating `kmem_sys::sync::Mutex` beside
//!   parking_lot's and std's, uncontended.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kmem_benches::id;
use kmem_sys::{OsPages, PageSource, Reservation, current_cpu, page_size, thread_slot};

fn cpu(c: &mut Criterion) {
    let mut g = c.benchmark_group("sys");
    g.bench_function(id("current cpu", "kmem-sys"), |b| {
        b.iter(|| black_box(current_cpu()))
    });
    g.bench_function(id("current cpu", "sched_getcpu"), |b| {
        // SAFETY: sched_getcpu has no preconditions.
        b.iter(|| black_box(unsafe { libc::sched_getcpu() }))
    });
    g.bench_function(id("current cpu", "thread-local"), |b| {
        b.iter(|| black_box(thread_slot()))
    });
    g.bench_function(id("current cpu", "std thread id"), |b| {
        b.iter(|| black_box(std::thread::current().id()))
    });

    let p = page_size();
    let os = OsPages::new();
    g.bench_function(id("page alloc+free", "kmem-sys"), |b| {
        b.iter(|| {
            let ptr = os.alloc_pages(p, p).unwrap();
            // SAFETY: the allocation made just above.
            unsafe { os.free_pages(black_box(ptr), p, p) };
        })
    });
    g.bench_function(id("page alloc+free", "system"), |b| {
        b.iter(|| {
            // SAFETY: plain malloc/free of one page.
            unsafe {
                let ptr = libc::malloc(p);
                libc::free(black_box(ptr));
            }
        })
    });

    let r = Reservation::new(p).unwrap();
    g.bench_function(id("commit+decommit", "kmem-sys"), |b| {
        b.iter(|| {
            r.commit(0, p).unwrap();
            // SAFETY: nothing uses the page between iterations.
            unsafe { r.decommit(0, p) }.unwrap();
        })
    });

    let ours = kmem_sys::sync::Mutex::new(0u64);
    let pl = parking_lot::Mutex::new(0u64);
    let std_m = std::sync::Mutex::new(0u64);
    g.bench_function(id("lock+unlock", "kmem-sys"), |b| {
        b.iter(|| *black_box(&ours).lock() += 1)
    });
    g.bench_function(id("lock+unlock", "parking_lot"), |b| {
        b.iter(|| *black_box(&pl).lock() += 1)
    });
    g.bench_function(id("lock+unlock", "std"), |b| {
        b.iter(|| *black_box(&std_m).lock().unwrap() += 1)
    });
    g.finish();
}

criterion_group!(benches, cpu);
criterion_main!(benches);
