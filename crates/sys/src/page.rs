//! The page size and rounding to it.

use std::sync::atomic::{AtomicUsize, Ordering};

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The system page size in bytes (a power of two), cached after the first call.
#[inline]
pub fn page_size() -> usize {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let n = if n > 0 { n as usize } else { 4096 };
    assert!(n.is_power_of_two(), "page size {n} is not a power of two");
    PAGE_SIZE.store(n, Ordering::Relaxed);
    n
}

/// Rounds `size` up to a multiple of the page size; `None` on overflow.
#[inline]
pub fn round_to_pages(size: usize) -> Option<usize> {
    let mask = page_size() - 1;
    size.checked_add(mask).map(|s| s & !mask)
}

/// Whether `value` is a multiple of the page size.
#[inline]
pub fn is_page_aligned(value: usize) -> bool {
    value & (page_size() - 1) == 0
}

/// The size of a transparent huge page on x86-64 and on 4 KiB-page arm64.
pub const HUGE_PAGE: usize = 2 << 20;

/// Advises the whole huge pages inside `[addr, addr + len)` for transparent
/// huge pages (`madvise(MADV_HUGEPAGE)`), for a large table that is touched
/// all over, so that its random accesses miss the TLB less. Returns whether
/// the kernel took the advice; `false` also when the range holds no whole
/// huge page, is not private anonymous memory, or the system has no THP
/// (and always under Miri, which has no `madvise`).
///
/// Safe to call on any range: the advice changes how the kernel backs
/// memory, never its contents or whether it is mapped.
pub fn advise_huge_pages(addr: usize, len: usize) -> bool {
    let lo = addr.next_multiple_of(HUGE_PAGE);
    let hi = addr.saturating_add(len) & !(HUGE_PAGE - 1);
    // Miri has no `madvise`; the advice never changes what a program sees.
    if hi <= lo || cfg!(miri) {
        return false;
    }
    // SAFETY: MADV_HUGEPAGE only sets a backing policy on the mappings in
    // the range; it reads and writes no memory, and on a range with
    // unmapped or unsuitable pages it fails with an error code.
    unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri has no madvise (the advice is always refused there) and cannot read /proc/self/smaps"
    )]
    fn huge_page_advice_covers_only_whole_huge_pages() {
        assert!(
            !advise_huge_pages(HUGE_PAGE + 1, HUGE_PAGE),
            "no whole huge page"
        );
        let r = crate::Reservation::new(3 * HUGE_PAGE).expect("reserve");
        r.commit(0, 3 * HUGE_PAGE).expect("commit");
        let base = r.base().as_ptr() as usize;
        assert!(advise_huge_pages(base, 3 * HUGE_PAGE));
        let inside = base.next_multiple_of(HUGE_PAGE);
        assert_eq!(crate::mem::huge_pages_advised(inside), Some(true));
    }

    #[test]
    fn rounding() {
        let p = page_size();
        assert!(p >= 4096 && p.is_power_of_two());
        assert_eq!(round_to_pages(0), Some(0));
        assert_eq!(round_to_pages(1), Some(p));
        assert_eq!(round_to_pages(p), Some(p));
        assert_eq!(round_to_pages(p + 1), Some(2 * p));
        assert_eq!(round_to_pages(usize::MAX), None);
        assert!(is_page_aligned(3 * p));
        assert!(!is_page_aligned(p + 8));
    }
}
