//! The page layer: zero-filled pages, bad frees, owners, memory given back.

use kmem::KmemError;
use kmem::page::PageLayer;
use kmem_sys::page_size;

fn layer() -> PageLayer {
    PageLayer::new(256 << 20).expect("reserve 256 MiB of address space")
}

#[test]
fn pages_come_zeroed_even_after_reuse() {
    let l = layer();
    let n = 4 * page_size();
    let p = l.alloc(n, page_size()).unwrap();
    // SAFETY: four fresh pages of ours.
    unsafe {
        assert!(
            std::slice::from_raw_parts(p.as_ptr(), n)
                .iter()
                .all(|&b| b == 0)
        );
        p.as_ptr().write_bytes(0xee, n);
        l.free(p, n).unwrap();
    }
    let q = l.alloc(n, page_size()).unwrap();
    assert_eq!(q, p, "instant fit hands the same range back");
    // SAFETY: as above.
    unsafe {
        assert!(
            std::slice::from_raw_parts(q.as_ptr(), n)
                .iter()
                .all(|&b| b == 0)
        );
        l.free(q, n).unwrap();
    }
}

#[test]
fn large_alignments_are_met() {
    let l = layer();
    for align in [8192, 64 << 10, 1 << 20, 4 << 20] {
        let p = l.alloc(3 * page_size(), align).unwrap();
        assert_eq!(p.as_ptr() as usize % align, 0, "align {align}");
        // SAFETY: just allocated with this size.
        unsafe { l.free(p, 3 * page_size()).unwrap() };
    }
    assert_eq!(l.stats().allocated, 0);
}

#[test]
fn bad_frees_are_refused_and_change_nothing() {
    let l = layer();
    let ps = page_size();
    let p = l.alloc(4 * ps, ps).unwrap();
    // SAFETY: refused before any memory is touched (checked below).
    let inside = unsafe { l.free(p.byte_add(ps), ps) }.unwrap_err();
    assert!(
        inside.to_string().contains("inside an allocation"),
        "{inside}"
    );
    // SAFETY: refused before any memory is touched (checked below).
    let small = unsafe { l.free(p, 2 * ps) }.unwrap_err();
    assert!(small.to_string().contains("smaller"), "{small}");
    // SAFETY: refused before any memory is touched (checked below).
    let big = unsafe { l.free(p, 8 * ps) }.unwrap_err();
    assert!(big.to_string().contains("larger"), "{big}");
    // SAFETY: refused before any memory is touched (checked below).
    let foreign = unsafe { l.free(std::ptr::NonNull::from(&ps).cast(), ps) }.unwrap_err();
    assert!(matches!(foreign, KmemError::BadFree { .. }), "{foreign}");
    // Still intact: the bytes survive and the real free works once.
    // SAFETY: `p` is still allocated.
    unsafe {
        p.as_ptr().add(3 * ps).write(9);
        assert_eq!(*p.as_ptr().add(3 * ps), 9);
        l.free(p, 4 * ps).unwrap();
    }
    // SAFETY: refused before any memory is touched (checked below).
    let twice = unsafe { l.free(p, 4 * ps) }.unwrap_err();
    assert!(twice.to_string().contains("double free"), "{twice}");
    assert!(
        twice
            .to_string()
            .contains(&format!("{:#x}", p.as_ptr() as usize)),
        "{twice}"
    );
}

#[test]
fn owners_are_found_from_any_address() {
    let l = layer();
    let ps = page_size();
    let p = l.alloc_owned(3 * ps, ps, 17).unwrap();
    let q = l.alloc(ps, ps).unwrap();
    assert_eq!(l.owner_of(p.as_ptr() as usize), Some(17));
    assert_eq!(l.owner_of(p.as_ptr() as usize + 3 * ps - 1), Some(17));
    assert_eq!(l.owner_of(q.as_ptr() as usize), Some(kmem::page::NO_OWNER));
    // SAFETY: both are live allocations of these sizes.
    unsafe {
        l.free(p, 3 * ps).unwrap();
        l.free(q, ps).unwrap();
    }
    assert_eq!(l.owner_of(p.as_ptr() as usize), None);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads the resident size from /proc/self/statm, which Miri cannot open"
)]
fn freeing_returns_memory_to_the_os() {
    let l = layer();
    let n = 32 << 20;
    let p = l.alloc(n, page_size()).unwrap();
    // SAFETY: `n` fresh bytes of ours.
    unsafe { p.as_ptr().write_bytes(1, n) };
    let touched = kmem_sys::mem::resident_bytes().unwrap();
    // SAFETY: freed once, not used again.
    unsafe { l.free(p, n).unwrap() };
    let after = kmem_sys::mem::resident_bytes().unwrap();
    assert!(
        touched >= after + n / 2,
        "resident size fell only from {touched} to {after} after freeing {n} bytes"
    );
    assert_eq!(
        l.stats().committed,
        0,
        "the wholly free span was decommitted"
    );
}

#[test]
fn kva_can_be_backed_and_unbacked_by_hand() {
    let l = layer();
    let ps = page_size();
    let va = l.kva_alloc(8 * ps).unwrap();
    l.back(va, 2 * ps).unwrap();
    // SAFETY: the first two pages are backed.
    unsafe {
        va.as_ptr().write(5);
        assert_eq!(*va.as_ptr(), 5);
        l.unback(va, 2 * ps).unwrap();
    }
    l.kva_free(va, 8 * ps).unwrap();
    assert!(
        l.kva_free(va, 8 * ps).is_err(),
        "double kva_free is refused"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads VmFlags from /proc/self/smaps, which Miri cannot open"
)]
fn spans_are_advised_for_huge_pages_unless_turned_off() {
    let advised = |l: &PageLayer| {
        let p = l.alloc(page_size(), page_size()).unwrap();
        let a = kmem_sys::mem::huge_pages_advised(p.as_ptr() as usize);
        // SAFETY: the page just allocated, unused.
        unsafe { l.free(p, page_size()).unwrap() };
        a.expect("the page is mapped")
    };
    let on = layer();
    assert!(on.huge_pages(), "on by default");
    // Where the kernel has no THP the advice is refused and nothing is marked.
    let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
    assert_eq!(advised(&on), thp);
    let off = layer();
    off.set_huge_pages(false);
    assert!(!off.huge_pages());
    assert!(!advised(&off));
}
