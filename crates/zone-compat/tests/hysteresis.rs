//! The per-CPU / global list rules of `vm_zone.c` `zalloc`, `zfree` and
//! `zinitna`, with exact list sizes. Every zone here has one per-CPU list and
//! is driven through `alloc_on(0)` / `free_on(0, ..)`, so nothing depends on
//! which CPU the test thread runs on.

use std::ptr::NonNull;

use kmem_sys::page_size;
use kmem_zone_compat::{ZMAX_PCPU_DEFAULT, ZONE_MAXPGLOAD, Zone, ZoneFlags};

fn items_per_grow(size: usize) -> usize {
    ZONE_MAXPGLOAD * page_size() / size
}

#[test]
fn refill_moves_bursts_and_keeps_zfreemin() {
    let z = Zone::builder("refill", 64)
        .cpus(1)
        .burst(128)
        .build()
        .unwrap();
    let per_grow = items_per_grow(64);
    let zfreemin = page_size() / 64;
    assert_eq!(z.zfreemin(), zfreemin);
    assert_eq!(z.zmax_pcpu(), ZMAX_PCPU_DEFAULT);

    // Empty zone: zget carves one chunk, keeps one, the rest go global.
    let mut held = vec![z.alloc_on(0).unwrap()];
    assert_eq!((z.pcpu_free(0), z.global_free()), (0, per_grow - 1));

    // Each per-CPU miss moves min(burst, global - zfreemin) items.
    let mut global = per_grow - 1;
    let mut pcpu = 0;
    loop {
        held.push(z.alloc_on(0).unwrap());
        if pcpu == 0 {
            if global <= zfreemin {
                // Only zfreemin left: the zone grows instead of refilling.
                global += per_grow - 1;
                assert_eq!((z.pcpu_free(0), z.global_free()), (0, global));
                break;
            }
            let moved = 128.min(global - zfreemin);
            global -= moved;
            pcpu = moved - 1;
        } else {
            pcpu -= 1;
        }
        assert_eq!((z.pcpu_free(0), z.global_free()), (pcpu, global));
    }
    assert_eq!(z.stats().total, 2 * per_grow);
    assert_eq!(z.outstanding(), held.len());
    for p in held {
        // SAFETY: allocated above, freed once.
        unsafe { z.free_on(0, p).unwrap() };
    }
    z.check().unwrap();
    assert_eq!(z.outstanding(), 0);
}

#[test]
fn free_spills_a_burst_at_zmax_pcpu() {
    let burst = 10;
    let z = Zone::builder("spill", 32)
        .cpus(1)
        .burst(burst)
        .build()
        .unwrap();
    let zmax = z.zmax_pcpu();
    let mut held: Vec<NonNull<u8>> = (0..zmax + 2 * burst)
        .map(|_| z.alloc_on(0).unwrap())
        .collect();
    let (pcpu0, global0) = (z.pcpu_free(0), z.global_free());
    // Fill the per-CPU list to one below the bound: nothing moves.
    let mut freed = 0;
    while z.pcpu_free(0) < zmax - 1 {
        // SAFETY: each item allocated above is freed once.
        unsafe { z.free_on(0, held.pop().unwrap()).unwrap() };
        freed += 1;
        assert_eq!(z.global_free(), global0);
    }
    assert_eq!(pcpu0 + freed, zmax - 1);
    // The free that reaches zmax_pcpu moves min(zmax/2, burst) items.
    // SAFETY: as above.
    unsafe { z.free_on(0, held.pop().unwrap()).unwrap() };
    assert_eq!(
        (z.pcpu_free(0), z.global_free()),
        (zmax - burst, global0 + burst)
    );
    // And again after `burst` more frees, not before.
    for i in 1..=burst {
        // SAFETY: as above.
        unsafe { z.free_on(0, held.pop().unwrap()).unwrap() };
        let expect = if i == burst {
            (zmax - burst, global0 + 2 * burst)
        } else {
            (zmax - burst + i, global0 + burst)
        };
        assert_eq!((z.pcpu_free(0), z.global_free()), expect, "free {i}");
    }
    for p in held {
        // SAFETY: as above.
        unsafe { z.free_on(0, p).unwrap() };
    }
    z.check().unwrap();
}

#[test]
fn spilled_items_come_back_most_recent_first() {
    let z = Zone::builder("order", 64).cpus(2).burst(4).build().unwrap();
    // CPU 1 allocates, CPU 0 frees: the lists are independent.
    let a = z.alloc_on(1).unwrap();
    let before = z.global_free();
    // SAFETY: `a` is freed once.
    unsafe { z.free_on(0, a).unwrap() };
    assert_eq!(
        (z.pcpu_free(0), z.pcpu_free(1), z.global_free()),
        (1, 0, before)
    );
    // CPU 0's next allocation hits its own list and gets `a` back.
    assert_eq!(z.alloc_on(0).unwrap(), a);
    // SAFETY: as above.
    unsafe { z.free_on(0, a).unwrap() };
}

#[test]
fn zmax_pcpu_follows_the_seed_formula() {
    let page = page_size();
    // Ordinary zones: 8192.
    assert_eq!(Zone::new("plain", 100).unwrap().zmax_pcpu(), 8192);
    // Interrupt zones: zmax / ncpus / 64, at least 1024 ...
    let small = Zone::builder("intr-small", 64)
        .cpus(2)
        .flags(ZoneFlags::INTERRUPT)
        .nentries(1000)
        .build()
        .unwrap();
    assert_eq!(small.zmax_pcpu(), 1024);
    let big = Zone::builder("intr-big", 32)
        .cpus(4)
        .flags(ZoneFlags::INTERRUPT)
        .nentries(1 << 20)
        .build()
        .unwrap();
    assert_eq!(big.zmax_pcpu(), (1 << 20) / 4 / 64);
    // ... and at most 16 MiB worth of items.
    let huge = Zone::builder("intr-huge", 32 * 1024)
        .cpus(1)
        .flags(ZoneFlags::INTERRUPT)
        .nentries(1)
        .build()
        .unwrap();
    assert_eq!(huge.zmax_pcpu(), 16 * 1024 * 1024 / (32 * 1024));
    // zfreemin: a page's worth, or one item for items over a page.
    assert_eq!(small.zfreemin(), page / 64);
    assert_eq!(huge.zfreemin(), 1);
}

#[test]
fn size_is_rounded_to_zone_rounding() {
    assert_eq!(Zone::new("r1", 1).unwrap().item_size(), 32);
    assert_eq!(Zone::new("r33", 33).unwrap().item_size(), 64);
    assert_eq!(Zone::new("r64", 64).unwrap().item_size(), 64);
    assert!(Zone::new("r0", 0).is_err());
}
