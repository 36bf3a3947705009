//! Behaviour of kegs per layout: colouring, batches, limits, reap, bad frees,
//! init/fini and the consolidator queries.

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kmem_slab::{Keg, KegBuilder, Placement, SlabError};
use kmem_sys::{OsPages, page_size};

/// Allocates `n` buffers, checks each is aligned and distinct, writes it.
fn fill<S: kmem_sys::PageSource>(keg: &Keg<S>, n: usize) -> Vec<NonNull<u8>> {
    let l = *keg.layout();
    let mut seen = HashSet::new();
    (0..n)
        .map(|i| {
            let p = keg.alloc().unwrap();
            assert_eq!(p.as_ptr() as usize % l.align, 0, "alignment");
            assert!(seen.insert(p), "buffer handed out twice");
            // SAFETY: a fresh buffer of buf_size bytes.
            unsafe { p.as_ptr().write_bytes(i as u8, l.buf_size) };
            p
        })
        .collect()
}

fn free_all<S: kmem_sys::PageSource>(keg: &Keg<S>, bufs: &[NonNull<u8>]) {
    for &p in bufs {
        // SAFETY: buffers of this keg, freed once.
        unsafe { keg.free(p) }.unwrap();
    }
}

fn round_trip(b: KegBuilder, placement: Placement) {
    let keg = b.build().unwrap();
    assert_eq!(keg.layout().placement, placement);
    let per = keg.layout().bufs_per_slab;
    let bufs = fill(&keg, 3 * per + 1);
    keg.check().unwrap();
    let s = keg.stats();
    // With one buffer per slab the fourth slab is full, not partial.
    let partial = usize::from(per > 1);
    assert_eq!(
        (s.slabs, s.full_slabs, s.partial_slabs),
        (4, 4 - partial, partial)
    );
    assert_eq!(s.bufs_in_use, 3 * per + 1);
    assert_eq!(keg.source().bytes_in_use(), 4 * keg.layout().slab_size);
    free_all(&keg, &bufs);
    keg.check().unwrap();
    assert_eq!(keg.stats().empty_slabs, 4);
    assert_eq!(keg.reap(), 4);
    assert_eq!(keg.source().bytes_in_use(), 0);
    let s = keg.stats();
    assert_eq!((s.slab_creates, s.slab_destroys, s.slabs), (4, 4, 0));
    keg.check().unwrap();
}

#[test]
fn on_page_layout_round_trip() {
    round_trip(Keg::builder("small", 40, 8), Placement::OnPage);
}

#[test]
fn off_page_layout_round_trip() {
    round_trip(Keg::builder("large", 1500, 16), Placement::OffPage);
    round_trip(
        Keg::builder("forced", 64, 64).off_page(),
        Placement::OffPage,
    );
    round_trip(Keg::builder("hashed", 32, 8).hash(), Placement::OffPage);
}

#[test]
fn single_buffer_layout_round_trip() {
    let b = Keg::builder("big", 3 * page_size() + 8, 64).single_buffer();
    round_trip(b, Placement::OffPage);
    let keg = Keg::builder("big", 10_000, 8)
        .single_buffer()
        .build()
        .unwrap();
    assert_eq!(keg.layout().bufs_per_slab, 1);
}

#[test]
fn colours_step_by_alignment_and_wrap() {
    let keg = Keg::builder("colour", 200, 64).build().unwrap();
    let l = *keg.layout();
    assert!(l.max_colour >= l.align, "needs slack to colour: {l:?}");
    let steps = l.max_colour / l.align + 1;
    let mut offsets = Vec::new();
    let mut all = Vec::new();
    for _ in 0..steps + 1 {
        let bufs = fill(&keg, l.bufs_per_slab);
        // The lowest buffer of a fresh slab sits at its colour.
        let first = bufs.iter().map(|p| p.as_ptr() as usize).min().unwrap();
        offsets.push(first & (l.slab_align - 1));
        all.extend(bufs);
    }
    let want: Vec<usize> = (0..steps).map(|c| c * l.align).chain([0]).collect();
    assert_eq!(offsets, want);
    free_all(&keg, &all);

    let plain = Keg::builder("plain", 200, 64).no_colour().build().unwrap();
    let a = fill(&plain, plain.layout().bufs_per_slab * 3);
    for p in &a {
        let off = p.as_ptr() as usize & (plain.layout().slab_align - 1);
        assert_eq!(off % plain.layout().chunk_size, 0);
    }
    free_all(&plain, &a);
}

#[test]
fn allocation_drains_the_most_used_slab() {
    let keg = Keg::builder("order", 256, 8).no_colour().build().unwrap();
    let per = keg.layout().bufs_per_slab;
    let bufs = fill(&keg, 3 * per);
    // Slab A keeps 1 buffer, slab B keeps per-2, slab C stays full.
    let (a, rest) = bufs.split_at(per);
    let (b, _c) = rest.split_at(per);
    free_all(&keg, &a[1..]);
    free_all(&keg, &b[2..]);
    let infos = keg.partial_slabs();
    assert_eq!(infos.len(), 2);
    assert_eq!((infos[0].allocated, infos[1].allocated), (2, 1));
    let slab_b = keg.slab_of(b[0]).unwrap();
    assert_eq!(infos[0].id, slab_b);
    // New allocations go to B (the most used) until it is full.
    for _ in 0..per - 2 {
        let p = keg.alloc().unwrap();
        assert_eq!(keg.slab_of(p).unwrap(), slab_b);
    }
    assert_eq!(keg.stats().full_slabs, 2);
    keg.check().unwrap();
}

#[test]
fn batches_fill_and_return() {
    let keg = Keg::builder("batch", 96, 16).build().unwrap();
    let mut out = [NonNull::dangling(); 100];
    assert_eq!(keg.alloc_batch(&mut out).unwrap(), 100);
    let distinct: HashSet<_> = out.iter().collect();
    assert_eq!(distinct.len(), 100);
    keg.check().unwrap();
    assert_eq!(keg.stats().bufs_in_use, 100);
    // SAFETY: the buffers just allocated.
    unsafe { keg.free_batch(&out) }.unwrap();
    assert_eq!(keg.stats().bufs_in_use, 0);
    // A batch with one bad pointer frees the good ones and reports the bad.
    let n = keg.alloc_batch(&mut out[..4]).unwrap();
    assert_eq!(n, 4);
    out[2] = out[1];
    // SAFETY: pointers into this keg's slabs.
    let e = unsafe { keg.free_batch(&out[..4]) }.unwrap_err();
    assert!(matches!(e, SlabError::AlreadyFree { .. }), "{e}");
    assert_eq!(keg.stats().bufs_in_use, 1);
    keg.check().unwrap();
}

#[test]
fn limits_refuse_then_wait() {
    let keg = Keg::builder("limited", 512, 8).limit(10).build().unwrap();
    let per = keg.layout().bufs_per_slab;
    let cap = 10usize.div_ceil(per) * per;
    assert_eq!(keg.stats().limit, Some(cap));
    let bufs = fill(&keg, cap);
    let e = keg.alloc().unwrap_err();
    assert!(matches!(e, SlabError::Full { keg: "limited", .. }), "{e}");
    assert!(e.to_string().contains("limited"));
    let mut out = [NonNull::dangling(); 4];
    assert!(matches!(
        keg.alloc_batch(&mut out),
        Err(SlabError::Full { .. })
    ));
    let t = keg.alloc_wait(Some(Duration::from_millis(10)));
    assert!(matches!(t, Err(SlabError::Full { .. })));
    let s = keg.stats();
    assert!(s.alloc_fails >= 3 && s.sleeps >= 1);

    let keg = Arc::new(keg);
    let victim = bufs[0].as_ptr() as usize;
    let k2 = Arc::clone(&keg);
    let waiter = std::thread::spawn(move || k2.alloc_wait(None).map(|p| p.as_ptr() as usize));
    std::thread::sleep(Duration::from_millis(30));
    // SAFETY: a buffer of this keg.
    unsafe { keg.free(bufs[0]) }.unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), victim);
    assert_eq!(keg.set_limit(None), None);
    let extra = keg.alloc().unwrap();
    free_all(&keg, &bufs[1..]);
    free_all(&keg, &[extra, NonNull::new(victim as *mut u8).unwrap()]);
    keg.check().unwrap();
}

#[test]
fn bad_frees_are_refused_with_the_keg_named() {
    let keg = Keg::builder("victim", 64, 16).build().unwrap();
    let other = Keg::builder("other", 64, 16).build().unwrap();
    let off = Keg::builder("offpage", 2000, 16).build().unwrap();
    let p = keg.alloc().unwrap();
    let q = other.alloc().unwrap();
    let r = off.alloc().unwrap();
    let stack = [0u8; 64];
    let outside = NonNull::from(&stack).cast::<u8>();
    let heap = vec![0u8; 4 * page_size()];
    // SAFETY: every pointer points into mapped memory (each call).
    unsafe {
        let e = keg.free(p.add(8)).unwrap_err();
        assert!(matches!(e, SlabError::Misaligned { offset: 8, .. }), "{e}");
        let e = keg.free(q).unwrap_err();
        assert!(matches!(e, SlabError::WrongKeg { .. }), "{e}");
        // The on-page keg reads where a header would sit in the stack
        // array's page: mapped memory, all the contract asks, but outside
        // the array, which Miri's abstract machine refuses.
        if !cfg!(miri) {
            let e = keg.free(outside).unwrap_err();
            assert!(matches!(e, SlabError::OutsideSlabs { .. }), "{e}");
        }
        let e = keg
            .free(NonNull::new(heap.as_ptr().add(page_size()) as *mut u8).unwrap())
            .unwrap_err();
        assert!(matches!(e, SlabError::OutsideSlabs { .. }), "{e}");
        let e = off.free(p).unwrap_err();
        assert!(
            matches!(e, SlabError::OutsideSlabs { keg: "offpage", .. }),
            "{e}"
        );
        let e = off.free(r.add(16)).unwrap_err();
        assert!(matches!(e, SlabError::Misaligned { .. }), "{e}");
        keg.free(p).unwrap();
        let e = keg.free(p).unwrap_err();
        assert!(
            matches!(e, SlabError::AlreadyFree { keg: "victim", .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("{:#x}", p.as_ptr() as usize))
        );
        // A free buffer never handed out is refused too.
        let e = off.free(r.add(off.layout().chunk_size)).unwrap_err();
        assert!(matches!(e, SlabError::AlreadyFree { .. }), "{e}");
        off.free(r).unwrap();
        other.free(q).unwrap();
    }
    for k in [&keg, &other, &off] {
        k.check().unwrap();
        assert_eq!(k.stats().bufs_in_use, 0);
    }
}

#[test]
fn init_and_fini_run_once_per_buffer_per_slab() {
    let inits = Arc::new(AtomicUsize::new(0));
    let finis = Arc::new(AtomicUsize::new(0));
    let (i2, f2) = (Arc::clone(&inits), Arc::clone(&finis));
    let keg = Keg::builder("init", 48, 8)
        .init(move |p| {
            // SAFETY: a buffer of 48 bytes.
            unsafe { p.as_ptr().write_bytes(0x5a, 48) };
            i2.fetch_add(1, Ordering::Relaxed);
            true
        })
        .fini(move |p| {
            // SAFETY: as above; init left the pattern.
            assert_eq!(unsafe { *p.as_ptr().add(47) }, 0x5a);
            f2.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    assert!(keg.layout().link_offset >= 48);
    let per = keg.layout().bufs_per_slab;
    let p = keg.alloc().unwrap();
    // SAFETY: a buffer of this keg.
    unsafe { keg.free(p) }.unwrap();
    let q = keg.alloc().unwrap();
    // Free buffers keep their initialised contents.
    // SAFETY: a live buffer of 48 bytes.
    let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr(), 48) };
    assert!(bytes.iter().all(|&b| b == 0x5a));
    // SAFETY: as above.
    unsafe { keg.free(q) }.unwrap();
    assert_eq!(inits.load(Ordering::Relaxed), per);
    assert_eq!(keg.reap(), 1);
    assert_eq!(finis.load(Ordering::Relaxed), per);

    let refused = Keg::builder("refuse", 48, 8)
        .init(|_| false)
        .build()
        .unwrap();
    let e = refused.alloc().unwrap_err();
    assert!(
        matches!(e, SlabError::InitFailed { keg: "refuse", .. }),
        "{e}"
    );
    assert_eq!(refused.source().bytes_in_use(), 0);
}

#[test]
fn consolidator_queries() {
    let keg = Keg::builder("move", 128, 8).build().unwrap();
    let per = keg.layout().bufs_per_slab;
    let bufs = fill(&keg, 2 * per);
    let a = keg.slab_of(bufs[0]).unwrap();
    let b = keg.slab_of(bufs[per]).unwrap();
    assert_ne!(a, b);
    free_all(&keg, &bufs[1..per]);
    free_all(&keg, &bufs[per + 3..]);
    assert!(keg.is_allocated(bufs[0]).unwrap());
    assert!(!keg.is_allocated(bufs[1]).unwrap());
    assert_eq!(keg.allocated_buffers(a).unwrap(), vec![bufs[0]]);
    assert_eq!(keg.allocated_buffers(b).unwrap().len(), 3);
    // The destination avoids the source slab and prefers the most used.
    let d = keg.alloc_avoiding(b).unwrap();
    assert_eq!(keg.slab_of(d).unwrap(), a);
    let d2 = keg.alloc_avoiding(a).unwrap();
    assert_eq!(keg.slab_of(d2).unwrap(), b);
    // A pinned empty slab survives reap.
    keg.pin_slab(a).unwrap();
    free_all(&keg, &[bufs[0], d]);
    assert_eq!(keg.reap(), 0);
    assert!(keg.partial_slabs().iter().all(|s| s.id == b));
    keg.unpin_slab(a).unwrap();
    assert!(keg.unpin_slab(a).is_err());
    assert_eq!(keg.reap(), 1);
    assert!(matches!(
        keg.allocated_buffers(a),
        Err(SlabError::UnknownSlab { .. })
    ));
    assert!(matches!(
        keg.alloc_avoiding(b),
        Err(SlabError::NoDestination { .. })
    ));
    free_all(&keg, &[d2]);
    free_all(&keg, &bufs[per..per + 3]);
    keg.check().unwrap();
}

#[test]
fn hash_grows_with_the_slab_count() {
    let keg = Keg::builder("grow", 3000, 8)
        .single_buffer()
        .build()
        .unwrap();
    let start = keg.stats().hash_size;
    let bufs = fill(&keg, 4 * start);
    let s = keg.stats();
    assert!(s.hash_size > start && s.hash_size.is_power_of_two(), "{s}");
    assert!(s.hash_lookups == 0, "no frees yet");
    keg.check().unwrap();
    free_all(&keg, &bufs);
    assert!(keg.stats().hash_lookups >= bufs.len() as u64);
    assert_eq!(keg.reap(), 4 * start);
}

#[test]
fn dropping_a_keg_returns_every_page() {
    let os = Arc::new(OsPages::new());
    let keg = Keg::builder("drop", 72, 8)
        .source(Arc::clone(&os))
        .build()
        .unwrap();
    let _live = fill(&keg, 500);
    assert!(os.bytes_in_use() > 0);
    drop(keg);
    assert_eq!(os.bytes_in_use(), 0);
}

#[test]
fn debug_tag_room_is_reserved() {
    let keg = Keg::builder("tagged", 40, 8).debug_tag(16).build().unwrap();
    let p = keg.alloc().unwrap();
    let t = keg.tag_of(p).unwrap();
    assert!(t.as_ptr() as usize >= p.as_ptr() as usize + 40);
    assert!(keg.layout().chunk_size >= 56);
    // SAFETY: the tag's 16 bytes belong to this buffer's chunk.
    unsafe { t.as_ptr().write_bytes(0xbb, 16) };
    let q = keg.alloc().unwrap();
    assert!(q.as_ptr() as usize >= t.as_ptr() as usize + 16 || q < p);
    // SAFETY: buffers of this keg.
    unsafe { keg.free_batch(&[p, q]) }.unwrap();
    keg.check().unwrap();
}

#[test]
fn threads_share_a_keg() {
    let keg = Keg::builder("shared", 80, 16).limit(4000).build().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let keg = &keg;
            s.spawn(move || {
                let mut mine = Vec::new();
                for round in 0..300usize {
                    let p = keg.alloc().unwrap();
                    // SAFETY: a fresh 80-byte buffer owned by this thread.
                    unsafe { p.as_ptr().write_bytes(t, 80) };
                    mine.push(p);
                    if round % 3 == 2 {
                        let q = mine.swap_remove(round % mine.len());
                        // SAFETY: still ours; nobody else wrote it.
                        let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr(), 80) };
                        assert!(bytes.iter().all(|&b| b == t));
                        // SAFETY: a buffer of this keg, freed once.
                        unsafe { keg.free(q) }.unwrap();
                    }
                }
                // SAFETY: the thread's remaining buffers.
                unsafe { keg.free_batch(&mine) }.unwrap();
            });
        }
    });
    keg.check().unwrap();
    assert_eq!(keg.stats().bufs_in_use, 0);
    keg.reap();
    assert_eq!(keg.source().bytes_in_use(), 0);
}

#[test]
fn alloc_in_fills_only_a_partial_slab() {
    let keg = Keg::builder("alloc-in", 128, 8).build().unwrap();
    let per = keg.layout().bufs_per_slab;
    let bufs = fill(&keg, 2 * per);
    let a = keg.slab_of(bufs[0]).unwrap();
    let b = keg.slab_of(bufs[per]).unwrap();
    // Full: nothing to take.
    assert_eq!(keg.alloc_in(a).unwrap(), None);
    free_all(&keg, &bufs[1..3]);
    assert_eq!(keg.slab_info(a).unwrap().allocated, per - 2);
    let p = keg.alloc_in(a).unwrap().expect("a is partial");
    assert_eq!(keg.slab_info(a).unwrap().allocated, per - 1);
    assert_eq!(keg.slab_of(p).unwrap(), a);
    // Empty: never refilled this way.
    free_all(&keg, &bufs[per..]);
    assert_eq!(keg.alloc_in(b).unwrap(), None);
    assert!(keg.is_allocated(p).unwrap());
    free_all(&keg, &[p]);
    free_all(&keg, &[bufs[0]]);
    free_all(&keg, &bufs[3..per]);
    keg.check().unwrap();
}
