//! DragonFly zones, ported line for line.
//!
//! Seed: `dragonfly-vm_zone.c.txt` (`zinit`, `zalloc`, `zfree`, the `vm.zone`
//! sysctl). This is the shape of a kernel subsystem that keeps its records in
//! zones: a pmap-style `pv_entry` zone that grows on demand, and an
//! interrupt-safe zone with a fixed reservation that runs dry instead of
//! growing. The C is shown in comments beside each port.
//!
//! What to look for in the output: the zone table with the seed's columns
//! (ITEM SIZE LIMIT USED FREE REQUESTS), SIZE rounded up to ZONE_ROUNDING
//! (48 → 64), the interrupt zone's LIMIT and its `zalloc` returning `None`
//! once the reservation is used up, and each CPU's free-list counts.
//!
//! Run: `cargo run -p kmem-examples --example zone`.

use std::ptr::NonNull;

use kmem_zone_compat::compat::*;

/// A physical-to-virtual mapping record, as a pmap keeps one per mapping.
/// The zone may overwrite the first two words while the record is free, so
/// they hold nothing that must survive a free (zones are type-stable past
/// them).
#[repr(C)]
struct PvEntry {
    next: usize,
    prev: usize,
    va: usize,
    pindex: u64,
    pmap: u32,
    flags: u32,
}

/// A timer-interrupt record: allocated where no sleeping is allowed.
#[repr(C)]
struct Callout {
    link: [usize; 2],
    when: u64,
    arg: usize,
}

fn main() {
    // pvzone = zinit("PV ENTRY", sizeof(struct pv_entry), 0, 0);
    let pvzone = zinit("PV ENTRY", size_of::<PvEntry>(), 0, ZONE_NONE).expect("zinit");
    // callout_zone = zinit("CALLOUT", sizeof(struct callout), 256,
    //                      ZONE_INTERRUPT);
    let callout_zone = zinit("CALLOUT", size_of::<Callout>(), 256, ZONE_INTERRUPT).expect("zinit");

    // pv = zalloc(pvzone); pv->pv_va = va; ...
    let mut mappings: Vec<NonNull<PvEntry>> = Vec::new();
    for i in 0..1000u64 {
        let pv = zalloc(&pvzone)
            .expect("pv zone grows on demand")
            .cast::<PvEntry>();
        // SAFETY: a fresh item of at least size_of::<PvEntry>() bytes, aligned
        // to ZONE_ROUNDING, that we own until zfree.
        unsafe {
            pv.as_ptr().write(PvEntry {
                next: 0,
                prev: 0,
                va: 0x4000_0000 + (i as usize) * 4096,
                pindex: i,
                pmap: 1,
                flags: 0,
            })
        };
        mappings.push(pv);
    }
    // Unmap every other page: zfree(pvzone, pv);
    let mut kept = Vec::new();
    for (i, pv) in mappings.into_iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: allocated above from pvzone, freed once, not used after.
            unsafe { zfree(&pvzone, pv.cast()) };
        } else {
            kept.push(pv);
        }
    }

    // The interrupt zone never grows: after its reservation, zalloc is NULL.
    let mut callouts = Vec::new();
    while let Some(c) = zalloc(&callout_zone) {
        // SAFETY: a fresh item large enough for a Callout.
        unsafe {
            c.cast::<Callout>().as_ptr().write(Callout {
                link: [0; 2],
                when: callouts.len() as u64,
                arg: 0,
            })
        };
        callouts.push(c);
    }
    println!(
        "CALLOUT zone ran dry after {} items (nentries 256, rounded up to whole pages)\n",
        callouts.len()
    );

    print!("{}", sysctl_vm_zone());

    // Tear down: the records go back, then the zones with their pages.
    for c in callouts {
        // SAFETY: allocated above from callout_zone, freed once.
        unsafe { zfree(&callout_zone, c) };
    }
    for pv in kept {
        // SAFETY: allocated above from pvzone, freed once.
        let va = unsafe { pv.as_ref().va };
        assert!(va >= 0x4000_0000);
        // SAFETY: as above.
        unsafe { zfree(&pvzone, pv.cast()) };
    }
    let c = zone_counters();
    println!(
        "\nvm.zone_kern_pages {}  vm.zone_kmem_pages {}  vm.zone_kmem_kvaspace {}",
        c.kern_pages, c.kmem_pages, c.kmem_kvaspace
    );
    // pvzone was not made ZONE_DESTROYABLE, so zdestroy refuses it, as the
    // seed panics; dropping the value still returns its pages.
    match zdestroy(pvzone) {
        Ok(()) => unreachable!("PV ENTRY is not destroyable"),
        Err(e) => println!("zdestroy refused: {}", e.error),
    }
}
