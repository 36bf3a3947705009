//! Interrupt, boot, special, panic-fail and destroyable zones.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicPtr;

use kmem_sys::{OsPages, page_size};
use kmem_zone_compat::compat::{self, ZONE_DESTROYABLE, ZONE_INTERRUPT, ZONE_NONE};
use kmem_zone_compat::{SPECIAL_RESERVE, ZONE_MAXPGLOAD, Zone, ZoneError, ZoneFlags};

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn interrupt_zone_serves_exactly_its_reservation() {
    let os = Arc::new(OsPages::new());
    let n = 1024; // 64 KiB of 64-byte items: a whole number of pages
    let z = Zone::builder("intr", 64)
        .cpus(1)
        .flags(ZoneFlags::INTERRUPT)
        .nentries(n)
        .source(os.clone())
        .build()
        .unwrap();
    // The reservation is taken up front, and the first chunk carved.
    assert_eq!(os.bytes_in_use(), n * 64);
    let first = ZONE_MAXPGLOAD * page_size() / 64;
    assert_eq!((z.pcpu_free(0), z.global_free()), (1, first - 1));
    assert_eq!(z.stats().limit, n);

    let held: Vec<NonNull<u8>> = (0..n).map(|_| z.alloc_on(0).unwrap()).collect();
    match z.alloc_on(0) {
        Err(ZoneError::Exhausted { zone, limit }) => {
            assert_eq!((&*zone, limit), ("intr", n));
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(compat::zalloc(&z), None);
    // Never grew past the reservation.
    assert_eq!(os.bytes_in_use(), n * 64);
    assert_eq!(os.allocs(), 1);
    // Items are distinct and inside the reservation.
    let mut addrs: Vec<usize> = held.iter().map(|p| p.as_ptr() as usize).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), n);
    assert!(addrs[n - 1] - addrs[0] < n * 64);
    for p in held {
        // SAFETY: allocated above, freed once.
        unsafe { z.free_on(0, p).unwrap() };
    }
    z.check().unwrap();
    assert_eq!(z.outstanding(), 0);
    // And it serves them again.
    let again = z.alloc_on(0).unwrap();
    // SAFETY: as above.
    unsafe { z.free_on(0, again).unwrap() };
}

#[test]
fn interrupt_zone_rejects_bad_arguments() {
    let e = Zone::builder("intr0", 64)
        .flags(ZoneFlags::INTERRUPT)
        .build();
    assert!(matches!(e, Err(ZoneError::InvalidFlags { .. })));
    let e = Zone::builder("intr-d", 64)
        .flags(ZoneFlags::INTERRUPT | ZoneFlags::DESTROYABLE)
        .nentries(10)
        .build();
    assert!(e.unwrap_err().to_string().contains("intr-d"));
    assert!(compat::zinit("boot?", 64, 0, compat::ZONE_BOOT).is_none());
}

#[test]
fn panicfail_zone_panics_with_its_name() {
    let z = Zone::builder("pf-zone", 64)
        .cpus(1)
        .flags(ZoneFlags::INTERRUPT | ZoneFlags::PANICFAIL)
        .nentries(64)
        .build()
        .unwrap();
    let held: Vec<_> = (0..64).map(|_| z.alloc_on(0).unwrap()).collect();
    let err = catch_unwind(AssertUnwindSafe(|| compat::zalloc(&z))).unwrap_err();
    assert!(panic_text(err).contains("zalloc(pf-zone) failed"));
    for p in held {
        // SAFETY: allocated above, freed once.
        unsafe { z.free_on(0, p).unwrap() };
    }
    z.check().unwrap();
}

fn boot_memory(bytes: usize) -> &'static mut [u8] {
    /// Boot memory is never given back, as a kernel's is not. Keeping a
    /// pointer to it in a static says so to Miri, which would otherwise
    /// report it leaked.
    static KEPT: std::sync::Mutex<Vec<AtomicPtr<usize>>> = std::sync::Mutex::new(Vec::new());
    let words: &'static mut [usize] = Vec::leak(vec![0usize; bytes / size_of::<usize>()]);
    KEPT.lock()
        .unwrap()
        .push(AtomicPtr::new(words.as_mut_ptr()));
    // SAFETY: the leaked words are ours for good; u8 has no alignment needs.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), bytes) }
}

#[test]
fn boot_zone_serves_caller_memory_then_grows_after_zinitna() {
    let mem = boot_memory(40 * 10);
    let base = mem.as_ptr() as usize;
    let z = compat::zbootinit("boot", 40, mem, 10).unwrap();
    assert_eq!(z.item_size(), 40); // no rounding for boot zones
    assert!(z.flags().contains(ZoneFlags::BOOT));
    let held: Vec<_> = (0..10).map(|_| z.alloc_on(0).unwrap()).collect();
    for p in &held {
        let off = p.as_ptr() as usize - base;
        assert!(off < 400 && off.is_multiple_of(40));
    }
    assert!(matches!(
        z.alloc_on(0),
        Err(ZoneError::Exhausted { limit: 10, .. })
    ));
    // zinitna: now it grows from pages.
    compat::zinitna(&z, 0, ZONE_NONE).unwrap();
    assert!(
        compat::zinitna(&z, 0, ZONE_NONE).is_err(),
        "zinitna applies once"
    );
    let extra = z.alloc_on(0).unwrap();
    assert!(!(base..base + 400).contains(&(extra.as_ptr() as usize)));
    // SAFETY: every item allocated above is freed once.
    unsafe {
        z.free_on(0, extra).unwrap();
        for p in held {
            z.free_on(0, p).unwrap();
        }
    }
    z.check().unwrap();
    assert_eq!(z.outstanding(), 0);
}

#[test]
fn boot_zone_rejects_small_or_odd_memory() {
    let e = compat::zbootinit("boot-small", 64, boot_memory(64), 2).unwrap_err();
    assert!(matches!(e, ZoneError::BootMemory { .. }));
    assert!(e.to_string().contains("boot-small"));
    let e = compat::zbootinit("boot-odd", 12, boot_memory(64), 2).unwrap_err();
    assert!(matches!(e, ZoneError::InvalidSize { size: 12, .. }));
}

#[test]
fn special_zone_keeps_a_per_cpu_reserve() {
    let z = Zone::builder("special", 64)
        .cpus(1)
        .flags(ZoneFlags::SPECIAL)
        .build()
        .unwrap();
    let per_grow = ZONE_MAXPGLOAD * page_size() / 64;
    let a = z.alloc_on(0).unwrap();
    assert_eq!(z.reserve_len(0), SPECIAL_RESERVE);
    assert_eq!(z.global_free(), per_grow - 1 - SPECIAL_RESERVE);
    let stats = z.stats();
    assert_eq!((stats.used, stats.free), (1, per_grow - 1));
    let r = z.reserve_alloc().unwrap();
    assert_ne!(r, a);
    // SAFETY: both allocated above, freed once.
    unsafe {
        z.reserve_free(r).unwrap();
        z.free_on(0, a).unwrap();
    }
    z.check().unwrap();
}

#[test]
fn destroyable_zone_returns_its_pages() {
    let os = Arc::new(OsPages::new());
    let z = Zone::builder("destroy-me", 128)
        .flags(ZoneFlags::DESTROYABLE)
        .source(os.clone())
        .build()
        .unwrap();
    let held: Vec<_> = (0..5000).map(|_| z.alloc().unwrap()).collect();
    let grows = 5000usize.div_ceil(ZONE_MAXPGLOAD * page_size() / 128);
    assert!(os.bytes_in_use() >= grows * ZONE_MAXPGLOAD * page_size());
    // Busy: refused, the zone comes back.
    let back = z.destroy().unwrap_err();
    assert!(matches!(back.error, ZoneError::Busy { used: 5000, .. }));
    let z = back.zone;
    for p in held {
        // SAFETY: allocated above, freed once.
        unsafe { z.free(p).unwrap() };
    }
    z.destroy().unwrap();
    assert_eq!(os.bytes_in_use(), 0);
    assert_eq!(os.allocs(), os.frees());
}

#[test]
fn undestroyable_zone_refuses_zdestroy() {
    let z = compat::zinit("keep-me", 64, 0, ZONE_NONE).unwrap();
    let err = compat::zdestroy(z).unwrap_err();
    assert!(matches!(err.error, ZoneError::NotDestroyable { .. }));
    assert!(err.to_string().contains("keep-me"));
    assert!(err.to_string().contains("undestroyable"));
    let z = compat::zinit("go", 64, 0, ZONE_DESTROYABLE).unwrap();
    let p = compat::zalloc(&z).unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { compat::zfree(&z, p) };
    compat::zdestroy(z).unwrap();
    let z = compat::zinit("intr-keep", 64, 10, ZONE_INTERRUPT).unwrap();
    assert!(compat::zdestroy(z).is_err());
}

#[test]
fn dropping_any_zone_returns_its_pages() {
    let os = Arc::new(OsPages::new());
    let z = Zone::builder("dropped", 64)
        .source(os.clone())
        .build()
        .unwrap();
    let p = z.alloc().unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { z.free(p).unwrap() };
    assert!(os.bytes_in_use() > 0);
    drop(z);
    assert_eq!(os.bytes_in_use(), 0);
}
