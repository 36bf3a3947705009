//! `Kmem` as the global allocator of this test binary: multi-threaded churn
//! of collections and trait objects, threads that come and go, every value
//! checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem::new();

trait Shape: Send {
    fn area(&self) -> u64;
}
struct Rect(u64, u64);
struct Square(u64);
impl Shape for Rect {
    fn area(&self) -> u64 {
        self.0 * self.1
    }
}
impl Shape for Square {
    fn area(&self) -> u64 {
        self.0 * self.0
    }
}

/// Bounds of one round's work: the same shapes under Miri, smaller (a hash
/// map of hundreds of formatted strings takes it seconds).
const MAX_VEC: u64 = if cfg!(miri) { 200 } else { 2000 };
const MAX_STRING: u64 = if cfg!(miri) { 60 } else { 300 };
const MAX_MAP: u64 = if cfg!(miri) { 20 } else { 500 };

/// Whether every byte of `b` is zero, compared a page at a time with a page
/// of zeroes (`memcmp`, which Miri runs natively: a loop over the bytes
/// takes it a minute for this file's blocks).
fn all_zero(b: &[u8]) -> bool {
    static ZEROES: [u8; 4096] = [0; 4096];
    b.chunks(ZEROES.len()).all(|c| c == &ZEROES[..c.len()])
}

/// One thread's share of work; returns a checksum the caller can verify.
fn churn(seed: u64, rounds: usize) -> u64 {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sum = 0u64;
    for r in 0..rounds {
        let n = (next() % MAX_VEC) as usize + 1;
        let v: Vec<u64> = (0..n as u64).collect();
        assert_eq!(v.iter().sum::<u64>(), n as u64 * (n as u64 - 1) / 2);
        let s: String = (0..(next() % MAX_STRING))
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        assert!(
            s.bytes()
                .enumerate()
                .all(|(i, b)| b == b'a' + (i % 26) as u8)
        );
        let mut m = HashMap::new();
        for k in 0..(next() % MAX_MAP) {
            m.insert(k, format!("v{k}"));
        }
        for (k, v) in &m {
            assert_eq!(*v, format!("v{k}"));
        }
        let shapes: Vec<Box<dyn Shape>> = (0..64u64)
            .map(|i| {
                if i % 2 == 0 {
                    Box::new(Rect(i, 2)) as Box<dyn Shape>
                } else {
                    Box::new(Square(i))
                }
            })
            .collect();
        let area: u64 = shapes.iter().map(|s| s.area()).sum();
        assert_eq!(
            area,
            (0..64u64)
                .map(|i| if i % 2 == 0 { i * 2 } else { i * i })
                .sum()
        );
        // A big block now and then: the page layer path and realloc growth
        // (grown by a copy of ones, which Miri makes in one step where a
        // `resize` writes byte by byte).
        if r % 16 == 0 {
            let mut big = vec![0u8; 300 << 10];
            big[299 << 10] = 9;
            big.extend_from_slice(&vec![1u8; 300 << 10]);
            assert_eq!(big[299 << 10], 9);
            assert_eq!(big[(600 << 10) - 1], 1);
        }
        sum = sum.wrapping_add(n as u64 + s.len() as u64 + m.len() as u64 + area);
    }
    sum
}

#[test]
fn threads_that_come_and_go_keep_every_value() {
    // Waves of threads and rounds per churn: under Miri, where each round
    // takes seconds (every allocation runs `Kmem` interpreted), fewer of
    // both; two waves still make threads come and go.
    const WAVES: u64 = if cfg!(miri) { 2 } else { 4 };
    const ROUNDS: usize = if cfg!(miri) { 1 } else { 60 };
    let done = Arc::new(AtomicUsize::new(0));
    for wave in 0..WAVES {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let done = done.clone();
                std::thread::spawn(move || {
                    let a = churn(wave * 10 + t, ROUNDS);
                    let b = churn(wave * 10 + t, ROUNDS);
                    assert_eq!(a, b, "same seed, same work, same checksum");
                    done.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker panicked");
        }
    }
    assert_eq!(done.load(Ordering::Relaxed), 4 * WAVES as usize);
    // Exited threads flushed their magazines: everything is accounted for.
    let rows = A.stats();
    assert!(
        rows.iter()
            .any(|r| r.name == "kmem_alloc_64" && r.allocs > 0),
        "{rows:?}"
    );
}

#[test]
fn values_cross_threads() {
    // Batches of 20 strings; under Miri, where each string takes
    // milliseconds (its allocation runs `Kmem` interpreted), fewer.
    const BATCHES: usize = if cfg!(miri) { 10 } else { 500 };
    // Allocated on one thread, freed on another (the xmalloc pattern).
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    let producer = std::thread::spawn(move || {
        for i in 0..BATCHES {
            tx.send((0..20).map(|j| format!("{i}:{j}")).collect())
                .unwrap();
        }
    });
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for (i, batch) in rx.iter().enumerate() {
            assert_eq!(batch[19], format!("{i}:19"));
            n += batch.len();
        }
        n
    });
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), 20 * BATCHES);
}

/// A boxed slice's pointer covers only its own length (Miri's Stacked
/// Borrows retags it so): grown in place within its class, the block must
/// be usable to its new length through the pointer `realloc` returns.
#[test]
fn a_block_grown_in_place_is_usable_to_its_new_size() {
    let b: Box<[u8]> = vec![1u8; 100].into_boxed_slice();
    let p = b.as_ptr();
    let mut v = b.into_vec();
    v.reserve_exact(10); // 110 bytes: the same 112-byte class
    assert_eq!(v.as_ptr(), p, "grown in place");
    v.extend_from_slice(&[2; 10]);
    assert_eq!(&v[98..102], &[1, 1, 2, 2]);
    assert_eq!(v.len(), 110);
}

/// A block freed through a pointer that covers only part of it (a boxed
/// slice's, under Miri's Stacked Borrows) comes back whole to the next
/// request of its class.
#[test]
fn a_block_freed_through_a_narrow_pointer_comes_back_whole() {
    let small: Box<[u8]> = vec![1u8; 42].into_boxed_slice(); // the 48-byte class
    let addr = small.as_ptr() as usize;
    drop(small);
    let big = Box::new([2u8; 48]);
    assert_eq!(big.as_ptr() as usize, addr, "the magazine hands it back");
    assert_eq!(*big, [2u8; 48]);
}

#[test]
fn zeroed_and_aligned_requests() {
    use std::alloc::{GlobalAlloc, Layout};
    for (size, align) in [
        (24, 8),
        (64, 64),
        (100, 256),
        (5000, 4096),
        (200_000, 8),
        (70_000, 1 << 16),
    ] {
        let l = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero layout; the block is freed with the same layout.
        unsafe {
            let p = A.alloc(l);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "{size}/{align}");
            p.write_bytes(0xff, size);
            A.dealloc(p, l);
            let z = A.alloc_zeroed(l);
            assert!(
                all_zero(std::slice::from_raw_parts(z, size)),
                "{size}/{align}"
            );
            A.dealloc(z, l);
        }
    }
}

#[test]
fn realloc_stays_in_place_within_a_class() {
    use std::alloc::{GlobalAlloc, Layout};
    let l = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: blocks are used within their sizes and freed once.
    unsafe {
        let p = A.alloc(l);
        p.write_bytes(3, 100);
        let q = A.realloc(p, l, 110); // 100 and 110 are both in the 112 class
        assert_eq!(p, q);
        let r = A.realloc(q, Layout::from_size_align(110, 8).unwrap(), 1000);
        assert_ne!(r, q);
        assert!(std::slice::from_raw_parts(r, 100).iter().all(|&b| b == 3));
        A.dealloc(r, Layout::from_size_align(1000, 8).unwrap());
    }
}
