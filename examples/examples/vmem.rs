//! vmem resource arenas, after FreeBSD `subr_vmem.c` (seed
//! `freebsd-subr_vmem.c.txt`) and Bonwick & Adams 2001.
//!
//! Two uses side by side:
//! 1. An ID allocator (quantum 1, next fit): look for freed IDs *not* being
//!    handed out again at once — the cursor moves on and wraps later. The
//!    arena belongs to `main` alone, so it is kept off the process-wide
//!    arena list and used through `&mut` (the `_mut` methods), which
//!    skips the arena lock.
//! 2. An address-space allocator: a parent arena of "virtual addresses"
//!    and a page-granular child that imports 64 KiB spans from it and keeps
//!    quantum caches for 1..=8 pages. Look for: few imports for many
//!    allocations, `qcache_allocs` counting cache hits (only a few per
//!    size and round: kmem-magazine sizes magazines by object size as
//!    illumos kmem does, so page-sized caches start with one-round
//!    magazines and grow them only under lock contention), the child's
//!    spans going back to the parent once everything is freed (`releases`,
//!    parent `allocated` back to 0), a constrained `xalloc`, and the
//!    seed's debugging walks: `whatis_all` and the DDB summary.
//!
//! Run with `cargo run -p kmem-examples --example vmem`.

use std::sync::Arc;

use kmem_vmem::{Constraints, Policy, Vmem, VmemError, VmemStats};

fn show(name: &str, s: &VmemStats) {
    println!(
        "  {name:<6} total {:>#10x}  allocated {:>#10x}  free {:>#10x}  largest free {:>#10x}",
        s.total, s.allocated, s.free, s.largest_free
    );
    println!(
        "         busy {:>5}  free segs {:>4}  imports {:>3}  releases {:>3}  qcache allocs {:>5}  metadata {} B",
        s.busy_segments, s.free_segments, s.imports, s.releases, s.qcache_allocs, s.metadata_bytes
    );
}

fn main() -> Result<(), VmemError> {
    println!("1. process IDs 1..=32767, next fit, owned by main (no lock)");
    let mut pids = Vmem::builder("pids").span(1, 32767).build()?;
    let first: Vec<usize> = (0..5)
        .map(|_| pids.alloc_mut(1, Policy::NextFit))
        .collect::<Result<_, _>>()?;
    println!("  allocated {first:?}");
    pids.free_mut(first[1], 1)?;
    pids.free_mut(first[3], 1)?;
    println!("  freed {} and {}", first[1], first[3]);
    let next: Vec<usize> = (0..3)
        .map(|_| pids.alloc_mut(1, Policy::NextFit))
        .collect::<Result<_, _>>()?;
    println!("  next three: {next:?}  (freed IDs are not reused yet)");
    match pids.free_mut(first[1], 1) {
        Err(e) => println!("  double free refused: {e}"),
        Ok(()) => println!("  double free accepted?!"),
    }
    show("pids", &pids.stats());

    println!("\n2. address space: parent arena of VA, child with quantum caches");
    const PAGE: usize = 4096;
    let va = Arc::new(
        Vmem::builder("va")
            .span(0x7f00_0000_0000, 1 << 32)
            .quantum(PAGE)
            .listed(true)
            .build()?,
    );
    let heap = Vmem::builder("heap")
        .quantum(PAGE)
        .qcache_max(8 * PAGE)
        .source(va.clone(), 16 * PAGE)
        .listed(true)
        .build()?;
    // Two rounds: the second finds the first round's small segments in
    // the quantum caches' magazines. `free` checks every free against the
    // arena and so bypasses the caches; `free_cached` is the seed's
    // unchecked path into them, for a caller sure of its frees.
    let mut live = Vec::new();
    for round in 0..2 {
        for (addr, size) in live.drain(..) {
            // SAFETY: every entry of `live` is a segment `heap` allocated
            // with that size, and `drain` takes each out once.
            unsafe { heap.free_cached(addr, size) }?;
        }
        for i in 0..200usize {
            let pages = (i + round) % 12 + 1; // 1..=8 pages: caches; 9..=12: arena
            live.push((heap.alloc(pages * PAGE, Policy::InstantFit)?, pages * PAGE));
        }
    }
    let c = Constraints {
        align: 16 * PAGE,
        nocross: 64 * PAGE,
        ..Constraints::default()
    };
    let aligned = heap.xalloc(4 * PAGE, &c, Policy::BestFit)?;
    println!("  xalloc 16-page aligned, not crossing 256 KiB: {aligned:#x}");
    println!("  after two rounds of 200 allocations:");
    show("va", &va.stats());
    show("heap", &heap.stats());
    // The seed's debugging walks: the arena holding an address (here both
    // the child and the parent it imported the span from), and the DDB
    // summary of the child by size class.
    println!("  whatis {:#x}:", aligned + PAGE);
    for w in kmem_vmem::whatis_all(aligned + PAGE) {
        println!("    {w}");
    }
    print!("{}", heap.summary());

    for (addr, size) in live {
        heap.free(addr, size)?;
    }
    heap.xfree(aligned, 4 * PAGE)?;
    heap.drain_qcaches();
    heap.check()?;
    println!("  after freeing everything and draining the caches:");
    show("va", &va.stats());
    show("heap", &heap.stats());
    Ok(())
}
