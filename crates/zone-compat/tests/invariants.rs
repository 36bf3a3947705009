//! The seed's INVARIANTS checks (feature `invariants`, on in these tests).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use kmem_zone_compat::compat;
use kmem_zone_compat::{ZENTRY_FREE, Zone, ZoneError};

#[test]
fn double_free_is_already_free() {
    let z = Zone::builder("dfree", 64).cpus(1).build().unwrap();
    let p = z.alloc_on(0).unwrap();
    // SAFETY: first free of a live item.
    unsafe { z.free_on(0, p).unwrap() };
    let before = z.stats();
    // SAFETY: deliberately wrong; the check refuses before touching the lists.
    let e = unsafe { z.free_on(0, p) }.unwrap_err();
    let addr = p.as_ptr() as usize;
    assert!(
        matches!(&e, ZoneError::AlreadyFree { zone, addr: a } if zone == "dfree" && *a == addr)
    );
    let text = e.to_string();
    assert!(text.contains("dfree") && text.contains(&format!("{addr:#x}")));
    assert_eq!(z.stats(), before, "a refused free changes nothing");
    z.check().unwrap();
}

#[test]
fn foreign_and_misaligned_addresses_are_invalid() {
    let z = Zone::builder("inval", 64).cpus(1).build().unwrap();
    let other = Zone::new("other", 64).unwrap();
    let mine = z.alloc_on(0).unwrap();
    let theirs = other.alloc().unwrap();
    let mut local = [0u64; 8];
    let inside = NonNull::new(mine.as_ptr().wrapping_add(8)).unwrap();
    for bad in [theirs, NonNull::from(&mut local).cast(), inside] {
        // SAFETY: deliberately wrong; refused before anything is written.
        let e = unsafe { z.free_on(0, bad) }.unwrap_err();
        let addr = bad.as_ptr() as usize;
        assert!(
            matches!(&e, ZoneError::InvalidAddress { zone, addr: a } if zone == "inval" && *a == addr)
        );
        assert!(e.to_string().contains(&format!("{addr:#x}")));
    }
    // The compat zfree panics as zerror does.
    // SAFETY: as above.
    let err = catch_unwind(AssertUnwindSafe(|| unsafe { compat::zfree(&z, theirs) })).unwrap_err();
    let text = err.downcast_ref::<String>().unwrap();
    assert!(text.contains("inval") && text.contains("not an item"));
    // SAFETY: each freed once, to its own zone.
    unsafe {
        z.free_on(0, mine).unwrap();
        other.free(theirs).unwrap();
    }
    z.check().unwrap();
}

#[test]
fn write_after_free_is_not_free_on_allocation() {
    let z = Zone::builder("scribble", 64).cpus(1).build().unwrap();
    let p = z.alloc_on(0).unwrap();
    // SAFETY: first free of a live item.
    unsafe { z.free_on(0, p).unwrap() };
    // A use-after-free overwrites the marker word (the zone's memory stays
    // mapped, so this write is what a buggy caller would do).
    // SAFETY: the item is still mapped zone memory, word-aligned.
    unsafe {
        let marker = p.as_ptr().cast::<usize>().add(1);
        assert_eq!(marker.read(), ZENTRY_FREE);
        marker.write(0xdead_beef);
    }
    let err = catch_unwind(AssertUnwindSafe(|| z.alloc_on(0))).unwrap_err();
    let text = err.downcast_ref::<String>().unwrap();
    let addr = format!("{:#x}", p.as_ptr() as usize);
    assert!(
        text.contains("scribble") && text.contains(&addr) && text.contains("not free"),
        "{text}"
    );
    assert!(text.contains("0xdeadbeef"));
}

#[test]
fn check_catches_a_scribbled_free_list() {
    let z = Zone::builder("walk", 64).cpus(1).build().unwrap();
    let a = z.alloc_on(0).unwrap();
    let b = z.alloc_on(0).unwrap();
    // SAFETY: both freed once.
    unsafe {
        z.free_on(0, a).unwrap();
        z.free_on(0, b).unwrap();
    }
    z.check().unwrap();
    // Overwrite b's link (it heads the per-CPU list) with a wild pointer.
    // SAFETY: b is mapped zone memory.
    unsafe { b.as_ptr().cast::<usize>().write(0x1000) };
    let e = z.check().unwrap_err();
    assert!(matches!(e, ZoneError::Corrupt { .. }));
    assert!(e.to_string().contains("0x1000"), "{e}");
    // Repair so the zone drops cleanly.
    // SAFETY: as above.
    unsafe { b.as_ptr().cast::<*mut u8>().write(a.as_ptr()) };
    z.check().unwrap();
}
