//! Home lines: which thread a small size-class buffer's cache line belongs
//! to, so that a buffer freed by another thread is not reused by the
//! freeing thread (passive false sharing, Hoard's `cache-scratch`).
//!
//! Per-thread magazines are LIFO: a thread that frees a buffer allocated
//! elsewhere gets that very buffer back on its next allocation, while its
//! neighbours in the same 64-byte line may still be written by the thread
//! that allocated them, and the line bounces between cores on every write.
//! The seeds' per-CPU magazines have the same effect; illumos avoids it by
//! rounding hot buffers to the coherency granule (`KMC_…` alignment, and the
//! 64-byte classes of `kmem_alloc_sizes`), which small classes cannot afford.
//!
//! So, like mimalloc's thread-local pages, ownership is recorded where the
//! buffers come from: a byte per 64-byte line of the page layer's
//! reservation holds the tag of the thread whose magazine last loaded a
//! buffer starting in that line (from the keg or the depot). On free, a
//! buffer whose line is not the freeing thread's goes to a separate
//! per-thread *remote* magazine pair that only ever hands full magazines to
//! the depot (the DESIGN's magazines → depot → keg path), never back to the
//! same thread's allocations. Classes whose size is a multiple of 64 never
//! share a line and skip the check.
//!
//! The map is demand-zero address space (1/64 of the reservation, committed
//! but touched only where small buffers live: about 1.6% of their pages).
//! Tags are 8 bits and wrap: two threads that share a tag only lose the
//! remote check between them. A line never stamped reads 0, as does the tag
//! of a thread that never allocated. Without a map (its reservation failed)
//! every free counts as local, as before.

use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::OnceLock;

use kmem_sys::Reservation;

use crate::sizes::{CLASS_SIZES, NUM_CLASSES};

/// `log2` of the line size the map tracks (the coherency granule).
pub(crate) const LINE_SHIFT: u32 = 6;

/// Classes below this index may share a line; every class from it on is a
/// multiple of the line size.
pub(crate) const LINE_CLASSES: usize = {
    let mut n = NUM_CLASSES;
    while n > 0 && CLASS_SIZES[n - 1].is_multiple_of(1 << LINE_SHIFT) {
        n -= 1;
    }
    n
};

/// Bit `c` is set when buffers of class `c` can share a cache line with a
/// neighbour (the class size is not a multiple of the line).
const SHARING: u64 = {
    assert!(NUM_CLASSES <= 64, "one bit per class");
    let mut mask = 0;
    let mut c = 0;
    while c < LINE_CLASSES {
        if !CLASS_SIZES[c].is_multiple_of(1 << LINE_SHIFT) {
            mask |= 1 << c;
        }
        c += 1;
    }
    mask
};

/// Whether buffers of class `c` can share a cache line with a neighbour
/// (one shift and test: this is on every free).
#[inline(always)]
pub(crate) fn shares_lines(c: usize) -> bool {
    c < 64 && SHARING & (1 << c) != 0
}

static RESERVATION: OnceLock<Option<Reservation>> = OnceLock::new();
static MAP: AtomicPtr<AtomicU8> = AtomicPtr::new(core::ptr::null_mut());
static BASE: AtomicUsize = AtomicUsize::new(0);
static LINES: AtomicUsize = AtomicUsize::new(0);
static NEXT_TAG: AtomicU32 = AtomicU32::new(0);

/// Creates the map over `size` bytes from `base` (the global page layer's
/// reservation); later calls do nothing.
#[cold]
pub(crate) fn init(base: usize, size: usize) {
    RESERVATION.get_or_init(|| {
        let lines = size >> LINE_SHIFT;
        let r = Reservation::new(lines).ok()?;
        r.commit(0, r.size()).ok()?;
        BASE.store(base, Ordering::Relaxed);
        LINES.store(lines, Ordering::Relaxed);
        MAP.store(r.base().cast::<AtomicU8>().as_ptr(), Ordering::Release);
        Some(r)
    });
}

/// A fresh thread tag, never 0.
pub(crate) fn new_tag() -> u8 {
    (NEXT_TAG.fetch_add(1, Ordering::Relaxed) % 255) as u8 + 1
}

#[inline(always)]
fn slot(addr: usize) -> Option<&'static AtomicU8> {
    let map = MAP.load(Ordering::Acquire);
    if map.is_null() {
        return None;
    }
    let line = addr.wrapping_sub(BASE.load(Ordering::Relaxed)) >> LINE_SHIFT;
    if line >= LINES.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: `map` holds `LINES` committed bytes (published after them,
    // never unmapped) and `line` is below that.
    Some(unsafe { &*map.add(line) })
}

/// Whether the line of `addr` belongs to the thread tagged `tag` (or
/// nothing is known about it).
#[inline(always)]
pub(crate) fn is_home(addr: usize, tag: u8) -> bool {
    slot(addr).is_none_or(|s| s.load(Ordering::Relaxed) == tag)
}

/// Makes the line of `addr` the thread `tag`'s; written only on change, so
/// a line stays in the cache of the core that owns it.
#[inline]
pub(crate) fn stamp(addr: usize, tag: u8) {
    if let Some(s) = slot(addr)
        && s.load(Ordering::Relaxed) != tag
    {
        s.store(tag, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use core::ptr::NonNull;

    use super::*;

    #[test]
    fn only_classes_below_the_bound_share_lines() {
        const { assert!(LINE_CLASSES < NUM_CLASSES) };
        for (c, size) in CLASS_SIZES.iter().enumerate() {
            assert_eq!(shares_lines(c), size % 64 != 0, "class {size}");
        }
    }

    #[test]
    fn stamps_are_per_line() {
        let layer = crate::page::PageLayer::global();
        let (base, size) = crate::page::global_span().unwrap();
        init(base, size);
        let p = layer.alloc(4096, 4096).unwrap().as_ptr() as usize;
        let (a, b) = (new_tag(), new_tag());
        assert_ne!(a, b);
        stamp(p, a);
        stamp(p + 64, b);
        assert!(is_home(p + 8, a) && !is_home(p + 8, b));
        assert!(is_home(p + 127, b) && !is_home(p + 127, a));
        // Outside the reservation nothing is known: every free is local.
        assert!(is_home(16, a) && is_home(16, b));
        // SAFETY: the page from above, no longer used.
        unsafe {
            layer
                .free(NonNull::new(p as *mut u8).unwrap(), 4096)
                .unwrap()
        };
    }

    #[test]
    fn a_remote_free_is_not_reused_by_the_freeing_thread() {
        // A local free comes straight back (LIFO).
        let mine = crate::kmem_alloc(8).unwrap();
        // SAFETY: freed once.
        unsafe { crate::kmem_free(mine, 8).unwrap() };
        let again = crate::kmem_alloc(8).unwrap();
        assert_eq!(again, mine);
        // A neighbour from this thread's magazine, as cache-scratch hands
        // them out, freed by another thread.
        let theirs = crate::kmem_alloc(8).unwrap();
        let addr = theirs.as_ptr() as usize;
        let reused = std::thread::spawn(move || {
            let theirs = NonNull::new(addr as *mut u8).unwrap();
            // SAFETY: the buffer is handed over whole and not used again.
            unsafe { crate::kmem_free(theirs, 8).unwrap() };
            let next = crate::kmem_alloc(8).unwrap();
            let same = next.as_ptr() as usize == addr;
            // SAFETY: freed once.
            unsafe { crate::kmem_free(next, 8).unwrap() };
            same
        })
        .join()
        .unwrap();
        assert!(
            !reused,
            "a thread got back the buffer it freed for another thread"
        );
        // SAFETY: freed once.
        unsafe { crate::kmem_free(again, 8).unwrap() };
    }
}
