//! kmem-slab: space and time of a keg.
//!
//! * `slab waste`, benchmark `size=<N>` for N in 16..=8192 step 16: the share
//!   of slab bytes not holding buffers when every slab is full, measured by
//!   filling two whole slabs and reading the page source's byte count
//!   (off-page headers are metadata and not counted). Beside it, subject
//!   `system`: glibc's `malloc_usable_size(p) − N` as a share of the usable
//!   size (its per-chunk header is not visible there and not counted).
//!   Buffers are 16-byte aligned, as malloc's are.
//! * `slab`, `alloc+free size=64`: one buffer out and back, beside
//!   `sharded-slab` (insert + remove of a 64-byte value) and the system
//!   allocator.
//! * `slab`, `batch32 alloc+free size=64`: 32 buffers out, then 32 back, per
//!   buffer (criterion `Throughput::Elements(32)`): `alloc_batch` /
//!   `free_batch` beside 32 single operations of each peer.

use std::hint::black_box;
use std::ptr::NonNull;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kmem_benches::{id, record};
use kmem_slab::Keg;

fn waste(_c: &mut Criterion) {
    let mut worst = (0.0f64, 0);
    for size in (16..=8192).step_by(16) {
        let keg = Keg::builder("waste", size, 16).build().expect("layout");
        let n = 2 * keg.layout().bufs_per_slab;
        let mut bufs = vec![NonNull::dangling(); n];
        assert_eq!(keg.alloc_batch(&mut bufs).expect("pages"), n);
        let stats = keg.stats();
        assert_eq!((stats.slabs, stats.full_slabs), (2, 2));
        let bytes = keg.source().bytes_in_use();
        let pct = 100.0 * (bytes - n * size) as f64 / bytes as f64;
        if pct > worst.0 {
            worst = (pct, size);
        }
        record(
            "slab waste",
            &format!("size={size}"),
            "kmem-slab",
            "waste",
            pct,
            "%",
        );
        // SAFETY: the buffers just allocated.
        unsafe { keg.free_batch(&bufs) }.expect("free");

        // SAFETY: malloc of a non-zero size, freed right after.
        let usable = unsafe {
            let p = libc::malloc(size);
            assert!(!p.is_null());
            let u = libc::malloc_usable_size(p);
            libc::free(p);
            u
        };
        let sys = 100.0 * (usable - size) as f64 / usable as f64;
        record(
            "slab waste",
            &format!("size={size}"),
            "system",
            "waste",
            sys,
            "%",
        );
    }
    println!("kmem-slab worst waste: {:.2}% at size {}", worst.0, worst.1);
}

fn time(c: &mut Criterion) {
    const SIZE: usize = 64;
    let mut g = c.benchmark_group("slab");
    let keg = Keg::builder("bench", SIZE, 16).build().expect("layout");
    // Warm one slab so the timed loop measures buffers, not slab creation.
    let warm = keg.alloc().expect("pages");
    g.bench_function(id("alloc+free size=64", "kmem-slab"), |b| {
        b.iter(|| {
            let p = keg.alloc().unwrap();
            // SAFETY: the buffer just allocated.
            unsafe { keg.free(black_box(p)) }.unwrap();
        })
    });
    let sharded = sharded_slab::Slab::<[u8; SIZE]>::new();
    g.bench_function(id("alloc+free size=64", "sharded-slab"), |b| {
        b.iter(|| {
            let k = sharded.insert([0u8; SIZE]).unwrap();
            assert!(sharded.remove(black_box(k)));
        })
    });
    g.bench_function(id("alloc+free size=64", "system"), |b| {
        b.iter(|| {
            // SAFETY: plain malloc/free.
            unsafe { libc::free(black_box(libc::malloc(SIZE))) }
        })
    });

    g.throughput(Throughput::Elements(32));
    let mut bufs = [NonNull::<u8>::dangling(); 32];
    g.bench_function(id("batch32 alloc+free size=64", "kmem-slab"), |b| {
        b.iter(|| {
            assert_eq!(keg.alloc_batch(&mut bufs).unwrap(), 32);
            // SAFETY: the buffers just allocated.
            unsafe { keg.free_batch(black_box(&bufs)) }.unwrap();
        })
    });
    let mut keys = [0usize; 32];
    g.bench_function(id("batch32 alloc+free size=64", "sharded-slab"), |b| {
        b.iter(|| {
            for k in keys.iter_mut() {
                *k = sharded.insert([0u8; SIZE]).unwrap();
            }
            for &k in black_box(&keys) {
                assert!(sharded.remove(k));
            }
        })
    });
    let mut ptrs = [std::ptr::null_mut::<libc::c_void>(); 32];
    g.bench_function(id("batch32 alloc+free size=64", "system"), |b| {
        b.iter(|| {
            // SAFETY: plain malloc/free of the pointers just allocated.
            unsafe {
                for p in ptrs.iter_mut() {
                    *p = libc::malloc(SIZE);
                }
                for &p in black_box(&ptrs) {
                    libc::free(p);
                }
            }
        })
    });
    g.finish();
    // SAFETY: the warm-up buffer.
    unsafe { keg.free(warm) }.unwrap();
}

criterion_group!(benches, waste, time);
criterion_main!(benches);
