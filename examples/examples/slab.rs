//! Kegs of slabs, after FreeBSD UMA and illumos kmem.
//!
//! Seeds: `freebsd-uma_core.c.txt` (`keg_ctor`, `zone_small_init` /
//! `zone_large_init`, `keg_fetch_slab`, `keg_drain`) and `illumos-kmem.c.txt`
//! (`kmem_cache_create`'s colouring, `kmem_slab_create`,
//! `kmem_partial_slab_cmp`). A keg is the layer under a cache: fixed-size
//! buffers cut from slabs of pages, no magazines and no constructors.
//!
//! What to look for in the output:
//! 1. the two layouts: a 40-byte keg on one page with the header at its end
//!    (`OnPage`), and a 1500-byte keg with an off-page header and a
//!    multi-page slab chosen to waste least per buffer (`OffPage`);
//! 2. colouring: each new slab's first buffer starts `align` bytes later
//!    than the last one's, wrapping to 0 past `max_colour`;
//! 3. usage order: partial slabs listed most-allocated first, and the next
//!    allocation taken from the head of that list;
//! 4. a bad free (double, mid-buffer, another keg's buffer) refused with an
//!    error that names the keg, and the keg still consistent;
//! 5. `reap` giving every empty slab back: `OsPages::bytes_in_use` drops to 0.
//!
//! Run: `cargo run -p kmem-examples --example slab`.

use std::ptr::NonNull;

use kmem_slab::{Keg, KegStats, Placement, SlabError, SlabId, SlabLayout};

fn show_layout(name: &str, l: &SlabLayout) {
    println!(
        "  {name:<6} {:?}: buf {} B, chunk {} B, slab {} B, {} buffers per slab, \
         waste {} B ({:.1}%), colours 0..={} step {}",
        l.placement,
        l.buf_size,
        l.chunk_size,
        l.slab_size,
        l.bufs_per_slab,
        l.waste_bytes(),
        100.0 * l.waste_fraction(),
        l.max_colour,
        l.align,
    );
}

fn show_stats(s: &KegStats) {
    println!("  {s}");
}

fn main() -> Result<(), SlabError> {
    println!("1. layouts");
    // Small buffers: on-page slabs of one page.
    let small = Keg::builder("small", 40, 8).build()?;
    // Buffers bigger than 1/8 page: off-page header, multi-page slab.
    let large = Keg::builder("large", 1500, 8).build()?;
    let (sl, ll) = (*small.layout(), *large.layout());
    show_layout("small", &sl);
    show_layout("large", &ll);
    assert_eq!(sl.placement, Placement::OnPage);
    assert_eq!(sl.slab_size, kmem_sys::page_size());
    assert!(sl.max_colour >= sl.align, "room to colour");
    assert_eq!(ll.placement, Placement::OffPage);
    assert!(ll.bufs_per_slab >= 2 && ll.bufs_per_slab * ll.chunk_size <= ll.slab_size);
    assert!(ll.off_page_header_bytes() > 0);

    println!("\n2. colouring: the first buffer of each new slab");
    let per = sl.bufs_per_slab;
    let mut bufs: Vec<NonNull<u8>> = (0..6 * per)
        .map(|_| small.alloc())
        .collect::<Result<_, _>>()?;
    // A new slab is made only when every slab is full, so each run of `per`
    // buffers is one slab, in the order the slabs were made.
    let mut order: Vec<(SlabId, Vec<NonNull<u8>>)> = Vec::new();
    for run in bufs.chunks(per) {
        let id = small.slab_of(run[0])?;
        for &b in run {
            assert_eq!(small.slab_of(b)?, id);
        }
        order.push((id, run.to_vec()));
    }
    for (i, (id, run)) in order.iter().enumerate() {
        let first = run.iter().map(|p| p.as_ptr() as usize).min().unwrap_or(0);
        println!(
            "  slab {i} at {:#x}: first buffer at +{}",
            id.addr(),
            first - id.addr()
        );
    }
    let mut want = 0;
    for (id, run) in &order {
        let c = run.iter().map(|p| p.as_ptr() as usize).min().unwrap_or(0) - id.addr();
        assert_eq!(c, want, "colours step by align and wrap past max_colour");
        want = if want + sl.align > sl.max_colour {
            0
        } else {
            want + sl.align
        };
    }

    println!("\n3. usage order: partial slabs, most allocated first");
    // Keep 3/4 of slab 0, 1/4 of slab 1, half of slab 2, one buffer of
    // slab 3; slab 4 stays full and slab 5 goes empty: neither is partial.
    let keep_frac = [3 * per / 4, per / 4, per / 2, 1, per, 0];
    let mut kept = Vec::new();
    for ((_, slab_bufs), keep) in order.iter().zip(keep_frac) {
        // SAFETY: buffers of this keg, not used after this point.
        unsafe { small.free_batch(&slab_bufs[keep..])? };
        kept.extend_from_slice(&slab_bufs[..keep]);
    }
    bufs.clear();
    let partial = small.partial_slabs();
    for p in &partial {
        println!(
            "  {:#x}: {:>3} of {} allocated",
            p.id.addr(),
            p.allocated,
            p.capacity
        );
    }
    assert_eq!(partial.len(), 4);
    assert!(partial.windows(2).all(|w| w[0].allocated > w[1].allocated));
    let s = small.stats();
    assert_eq!((s.partial_slabs, s.full_slabs, s.empty_slabs), (4, 1, 1));
    let next = small.alloc()?;
    println!(
        "  next alloc came from {:#x}, the head of the list",
        small.slab_of(next)?.addr()
    );
    assert_eq!(small.slab_of(next)?, partial[0].id);
    kept.push(next);

    println!("\n4. bad frees are refused and change nothing");
    let victim = kept.pop().expect("one buffer");
    // SAFETY: a buffer of this keg, freed once here and never used again.
    unsafe { small.free(victim)? };
    // SAFETY: `victim` still lies in a mapped slab of this keg (the slab holds
    // other allocated buffers), so reading its page header is fine.
    let double = unsafe { small.free(victim) };
    println!("  double free: {}", double.as_ref().unwrap_err());
    assert!(matches!(double, Err(SlabError::AlreadyFree { .. })));
    // SAFETY: one byte into a live buffer of this keg: mapped memory.
    let inside = unsafe { small.free(kept[0].add(1)) };
    println!("  mid-buffer: {}", inside.as_ref().unwrap_err());
    assert!(matches!(inside, Err(SlabError::Misaligned { .. })));
    let other = Keg::builder("other", 40, 8).build()?;
    let foreign = other.alloc()?;
    // SAFETY: a live buffer of another keg: mapped memory.
    let wrong = unsafe { small.free(foreign) };
    println!("  other keg's buffer: {}", wrong.as_ref().unwrap_err());
    assert!(matches!(wrong, Err(SlabError::WrongKeg { .. })));
    // SAFETY: as above; the off-page keg looks it up in its hash only.
    let outside = unsafe { large.free(foreign) };
    println!("  same, off-page keg: {}", outside.as_ref().unwrap_err());
    assert!(matches!(outside, Err(SlabError::OutsideSlabs { .. })));
    // SAFETY: freed once, not used after.
    unsafe { other.free(foreign)? };
    small.check()?;

    println!("\n5. the off-page keg at work");
    let big: Vec<NonNull<u8>> = (0..3 * ll.bufs_per_slab + 1)
        .map(|_| large.alloc())
        .collect::<Result<_, _>>()?;
    for (i, &b) in big.iter().enumerate() {
        // SAFETY: each buffer is 1500 writable bytes we own.
        unsafe { b.as_ptr().write_bytes(i as u8, 1500) };
    }
    let s = large.stats();
    show_stats(&s);
    assert_eq!(s.slabs, 4);
    assert_eq!((s.full_slabs, s.partial_slabs), (3, 1));
    assert_eq!(s.bufs_in_use, big.len());

    println!("\n6. free everything, then reap");
    // SAFETY: all buffers of their kegs, not used after.
    unsafe {
        small.free_batch(&kept)?;
        large.free_batch(&big)?;
    }
    for keg in [&small, &large] {
        let s = keg.stats();
        show_stats(&s);
        assert_eq!(s.bufs_in_use, 0);
        assert_eq!(s.empty_slabs, s.slabs);
        let before = keg.source().bytes_in_use();
        let reaped = keg.reap();
        let after = keg.source().bytes_in_use();
        println!(
            "  {}: reap gave back {reaped} slabs; pages in use {before} B -> {after} B",
            keg.name()
        );
        assert_eq!(reaped, s.slabs);
        assert_eq!(before, s.page_bytes());
        assert_eq!(after, 0);
        keg.check()?;
    }
    show_stats(&small.stats());
    Ok(())
}
