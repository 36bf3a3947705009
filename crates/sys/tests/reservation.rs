//! Reservations really move memory in and out of the process.

use kmem_sys::{Reservation, SysError, mem::resident_bytes, page_size};

const PAGES: usize = 2048; // 8 MiB with 4 KiB pages: far above RSS noise

fn touch_all(r: &Reservation, len: usize) {
    let p = page_size();
    for off in (0..len).step_by(p) {
        // SAFETY: the range was committed by the caller and is ours alone.
        unsafe { r.base().as_ptr().add(off).write_volatile(1) };
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "counts resident pages with mincore, which Miri cannot run"
)]
fn reserve_takes_no_memory_and_commit_is_demand_zero() {
    let p = page_size();
    let r = Reservation::new(PAGES * p).unwrap();
    assert_eq!(r.resident_pages(0, PAGES * p).unwrap(), 0);
    r.commit(0, PAGES * p).unwrap();
    assert_eq!(
        r.resident_pages(0, PAGES * p).unwrap(),
        0,
        "commit alone must not fault pages in"
    );
    // SAFETY: committed above.
    let first = unsafe { r.base().as_ptr().read() };
    assert_eq!(first, 0);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads the resident size from /proc and mincore, which Miri cannot"
)]
fn commit_and_decommit_change_resident_size() {
    let p = page_size();
    let len = PAGES * p;
    let r = Reservation::new(len).unwrap();
    r.commit(0, len).unwrap();
    let before = resident_bytes().unwrap();
    touch_all(&r, len);
    assert_eq!(r.resident_pages(0, len).unwrap(), PAGES);
    let touched = resident_bytes().unwrap();
    assert!(
        touched >= before + len * 3 / 4,
        "RSS grew only from {before} to {touched} after touching {len} bytes"
    );

    // SAFETY: nothing uses the range any more.
    unsafe { r.decommit(0, len) }.unwrap();
    assert_eq!(r.resident_pages(0, len).unwrap(), 0);
    let after = resident_bytes().unwrap();
    assert!(
        after + len * 3 / 4 <= touched,
        "RSS fell only from {touched} to {after} after decommitting {len} bytes"
    );

    // Recommitted memory reads as zero, not as the old contents.
    r.commit(0, p).unwrap();
    // SAFETY: committed just above.
    assert_eq!(unsafe { r.base().as_ptr().read() }, 0);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "counts resident pages with mincore, which Miri cannot run"
)]
fn partial_decommit_keeps_the_rest() {
    let p = page_size();
    let r = Reservation::new(8 * p).unwrap();
    r.commit(0, 8 * p).unwrap();
    touch_all(&r, 8 * p);
    // SAFETY: nothing uses pages 2..5 any more.
    unsafe { r.decommit(2 * p, 3 * p) }.unwrap();
    assert_eq!(r.resident_pages(0, 8 * p).unwrap(), 5);
    // SAFETY: page 0 is still committed and holds what touch_all wrote.
    assert_eq!(unsafe { r.base().as_ptr().read() }, 1);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "counts resident pages with mincore, which Miri cannot run"
)]
fn discard_zeroes_but_stays_usable() {
    let p = page_size();
    let r = Reservation::new(4 * p).unwrap();
    r.commit(0, 4 * p).unwrap();
    touch_all(&r, 4 * p);
    // SAFETY: nothing relies on the contents any more.
    unsafe { r.discard(0, 4 * p) }.unwrap();
    assert_eq!(r.resident_pages(0, 4 * p).unwrap(), 0);
    // SAFETY: still committed after discard.
    assert_eq!(unsafe { r.base().as_ptr().add(p).read() }, 0);
}

/// What a program sees of commit, decommit and discard: contents, not
/// resident size, so it holds under Miri's stand-in as on the OS.
#[test]
fn contents_follow_commit_decommit_and_discard() {
    let p = page_size();
    let r = Reservation::new(8 * p).unwrap();
    let at = |page: usize| r.base().as_ptr().wrapping_add(page * p + 8);
    r.commit(0, 8 * p).unwrap();
    for page in 0..8 {
        // SAFETY: every page is committed and ours alone.
        unsafe {
            assert_eq!(at(page).read(), 0, "page {page} of a fresh commit");
            at(page).write(page as u8 + 1);
        }
    }
    // Committing again keeps the contents.
    r.commit(0, 4 * p).unwrap();
    // SAFETY: committed, written above.
    assert_eq!(unsafe { at(3).read() }, 4);
    // SAFETY: no reference into the pages is live, and the test reads
    // them only after committing again, expecting zeros.
    unsafe {
        r.decommit(2 * p, 3 * p).unwrap();
        r.discard(6 * p, p).unwrap();
    }
    r.commit(2 * p, 3 * p).unwrap();
    for (page, want) in [1, 2, 0, 0, 0, 6, 0, 8].into_iter().enumerate() {
        // SAFETY: every page is committed again (discard keeps pages
        // committed) and ours alone.
        let got = unsafe { at(page).read() };
        assert_eq!(got, want, "page {page} after decommit 2..5 and discard 6");
    }
}

#[test]
fn misaligned_and_out_of_range_requests_are_refused() {
    let p = page_size();
    let r = Reservation::new(4 * p).unwrap();
    let e = r.commit(1, p).unwrap_err();
    assert!(
        matches!(
            e,
            SysError::Misaligned {
                op: "commit",
                offset: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not page-aligned"), "{e}");
    let e = r.commit(0, p + 8).unwrap_err();
    assert!(matches!(e, SysError::Misaligned { .. }), "{e}");
    let e = r.commit(3 * p, 2 * p).unwrap_err();
    assert!(
        matches!(e, SysError::OutOfRange { op: "commit", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("outside"), "{e}");
    // SAFETY: refused before anything is touched.
    let e = unsafe { r.decommit(8 * p, p) }.unwrap_err();
    assert!(
        matches!(e, SysError::OutOfRange { op: "decommit", .. }),
        "{e}"
    );
    let e = r.commit(0, 0).unwrap_err();
    assert!(matches!(e, SysError::OutOfRange { .. }), "{e}");
    assert!(matches!(
        Reservation::new(0),
        Err(SysError::InvalidSize { .. })
    ));
    assert!(matches!(
        Reservation::with_align(p, 3 * p),
        Err(SysError::InvalidAlign { .. })
    ));
}

#[test]
fn aligned_reservations_and_release() {
    let p = page_size();
    for align in [p, 4 * p, 1 << 21] {
        let r = Reservation::with_align(3 * p, align).unwrap();
        let base = r.base().as_ptr() as usize;
        assert_eq!(base % align, 0);
        assert_eq!(r.size(), 3 * p);
        assert!(r.contains(base) && r.contains(base + 3 * p - 1));
        assert!(!r.contains(base + 3 * p) && !r.contains(base.wrapping_sub(1)));
        r.release().unwrap();
    }
    // Sizes are rounded up to whole pages.
    assert_eq!(Reservation::new(1).unwrap().size(), p);
}

#[test]
fn os_errors_carry_the_errno() {
    // More address space than any machine has: the kernel says ENOMEM.
    let e = Reservation::new(usize::MAX / 2).unwrap_err();
    match &e {
        SysError::Os { op, source, .. } => {
            assert_eq!(*op, "reserve");
            assert_eq!(source.raw_os_error(), Some(libc_enomem()));
        }
        other => panic!("expected an OS error, got {other}"),
    }
}

/// Miri's stand-in has no resident size and no huge pages, and says so
/// rather than making figures up; a range outside is still refused first.
#[cfg(miri)]
#[test]
fn under_miri_residency_and_huge_page_advice_are_refused() {
    let p = page_size();
    let r = Reservation::new(2 * p).unwrap();
    let e = r.resident_pages(0, p).unwrap_err();
    assert!(
        matches!(&e, SysError::Os { op: "mincore", source, .. }
            if source.kind() == std::io::ErrorKind::Unsupported),
        "{e}"
    );
    let e = r.advise_huge(0, 2 * p).unwrap_err();
    assert!(
        matches!(&e, SysError::Os { op: "advise huge pages", source, .. }
            if source.raw_os_error() == Some(22)),
        "{e}"
    );
    let e = r.advise_huge(p, 2 * p).unwrap_err();
    assert!(matches!(e, SysError::OutOfRange { .. }), "{e}");
}

fn libc_enomem() -> i32 {
    12 // ENOMEM on Linux
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads VmFlags from /proc/self/smaps, which Miri cannot open"
)]
fn huge_page_advice_marks_only_its_range() {
    let huge = kmem_sys::HUGE_PAGE;
    let r = Reservation::with_align(2 * huge, huge).unwrap();
    let base = r.base().as_ptr() as usize;
    r.commit(0, huge).unwrap();
    match r.advise_huge(0, huge) {
        Ok(()) => assert_eq!(kmem_sys::mem::huge_pages_advised(base), Some(true)),
        // A kernel built without THP refuses the advice; the range is
        // unchanged and still usable.
        Err(SysError::Os { op, .. }) => {
            assert_eq!(op, "advise huge pages");
            assert_eq!(kmem_sys::mem::huge_pages_advised(base), Some(false));
        }
        Err(other) => panic!("unexpected error {other}"),
    }
    assert_eq!(kmem_sys::mem::huge_pages_advised(base + huge), Some(false));
    touch_all(&r, huge);
    assert!(matches!(
        r.advise_huge(huge, 2 * huge),
        Err(SysError::OutOfRange { .. })
    ));
}
