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

#[cfg(test)]
mod tests {
    use super::*;

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
