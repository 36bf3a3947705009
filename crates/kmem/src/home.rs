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

use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::OnceLock;

use kmem_sys::Reservation;

use crate::fill::Buf;
use crate::page::{MapView, PageLayer};
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

static MAPS: OnceLock<Maps> = OnceLock::new();
static NEXT_TAG: AtomicU32 = AtomicU32::new(0);

/// The page map and the line map in one value: what a free reads to check
/// a buffer's class and its line, with no pointer chase. The line map
/// covers exactly the page map's reservation, so a page inside one has its
/// lines inside the other. Each thread's cache keeps a copy
/// ([`EMPTY`](Self::EMPTY) until its first slow path), so the fast path
/// reads it relative to the thread pointer rather than through statics.
#[derive(Clone, Copy)]
pub(crate) struct Maps {
    page: MapView,
    /// A byte per line of the reservation, biased by the reservation's
    /// first line so that the line of `addr` is at `lines + (addr >> 6)`
    /// (null without a line map).
    lines: *mut AtomicU8,
    /// Classes whose frees look at the line map: [`SHARING`], or 0 without
    /// a line map.
    sharing: u64,
}

// SAFETY: the maps are atomics that live for the program (the line map's
// reservation is leaked, never released); every access is an atomic load
// or store.
unsafe impl Send for Maps {}
// SAFETY: as above.
unsafe impl Sync for Maps {}

impl Maps {
    /// No maps yet: every address is outside them.
    pub(crate) const EMPTY: Maps = Maps {
        page: MapView::EMPTY,
        lines: core::ptr::null_mut(),
        sharing: 0,
    };

    /// The line of `addr`.
    ///
    /// # Safety
    ///
    /// `self.sharing` is not 0 (there is a line map) and `addr` is inside
    /// the reservation.
    #[inline(always)]
    unsafe fn line(&self, addr: usize) -> &AtomicU8 {
        // SAFETY: with `sharing` set, the biased `lines` plus the line
        // number of an address inside the reservation is that line's byte
        // of the map, which is committed and never unmapped.
        unsafe { &*self.lines.wrapping_add(addr >> LINE_SHIFT) }
    }

    /// For a free of `addr` as class `c`, whose page-map tag is `owner`, by
    /// the thread tagged `tag`: `None` if the page map does not give the
    /// page to `owner` (or nothing is known yet), else whether the free is
    /// local (see [`is_local`](Self::is_local)).
    #[inline(always)]
    pub(crate) fn check_free(&self, addr: usize, c: usize, owner: u32, tag: u8) -> Option<bool> {
        if self.page.tag(addr)? != owner {
            return None;
        }
        // SAFETY: the page map has a tag for `addr`, so it is inside.
        Some(unsafe { self.is_local_inside(addr, c, tag) })
    }

    /// Whether a free of `addr` (class `c`) by the thread tagged `tag` is
    /// local: the class never shares lines, there is no line map, `addr` is
    /// outside it, or its line is the thread's.
    #[inline(always)]
    pub(crate) fn is_local(&self, addr: usize, c: usize, tag: u8) -> bool {
        match self.page.offset(addr) {
            // SAFETY: `offset` found `addr` inside.
            Some(_) => unsafe { self.is_local_inside(addr, c, tag) },
            None => true,
        }
    }

    /// [`is_local`](Self::is_local) for an `addr` known to be inside the
    /// reservation: the class never shares lines (or there is no line map),
    /// or the line of `addr` is the thread's.
    ///
    /// # Safety
    ///
    /// `addr` is inside the page map's reservation.
    #[inline(always)]
    unsafe fn is_local_inside(&self, addr: usize, c: usize, tag: u8) -> bool {
        // SAFETY: the line is read only when `sharing` is set, so there is a
        // line map; the caller vouches that `addr` is inside.
        self.sharing & (1 << c) == 0 || unsafe { self.line(addr) }.load(Ordering::Relaxed) == tag
    }

    /// Makes the lines of `bufs` the thread `tag`'s; each is written only
    /// on change, so a line of the map stays in the cache of the core that
    /// owns it.
    #[inline]
    pub(crate) fn stamp(&self, bufs: &[Buf], tag: u8) {
        if self.sharing == 0 {
            return;
        }
        for &Buf(p) in bufs {
            let addr = p.as_ptr() as usize;
            if self.page.offset(addr).is_some() {
                // SAFETY: `sharing` is set and `addr` is inside.
                let s = unsafe { self.line(addr) };
                if s.load(Ordering::Relaxed) != tag {
                    s.store(tag, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Creates the line map over the global page layer's reservation; later
/// calls do nothing.
#[cold]
pub(crate) fn init() {
    MAPS.get_or_init(|| {
        let page = PageLayer::global().map_view();
        let (base, size) = page.span();
        // The line map lives for the program: its reservation is leaked.
        let lines = Reservation::new(size >> LINE_SHIFT).ok().and_then(|r| {
            r.commit(0, r.size()).ok()?;
            Some(r.leak().0)
        });
        match lines {
            Some(l) => Maps {
                page,
                lines: l
                    .cast::<AtomicU8>()
                    .as_ptr()
                    .wrapping_sub(base >> LINE_SHIFT),
                sharing: SHARING,
            },
            // Without a line map every free counts as local.
            None => Maps {
                page,
                ..Maps::EMPTY
            },
        }
    });
}

/// The global maps, once [`init`] has run (else [`Maps::EMPTY`]).
pub(crate) fn maps() -> Maps {
    MAPS.get().copied().unwrap_or(Maps::EMPTY)
}

/// A fresh thread tag, never 0.
pub(crate) fn new_tag() -> u8 {
    (NEXT_TAG.fetch_add(1, Ordering::Relaxed) % 255) as u8 + 1
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
        init();
        let m = maps();
        let layer = crate::page::PageLayer::global();
        let owner = crate::page::MAX_OWNER;
        let p = layer.alloc_owned(4096, 4096, owner).unwrap().as_ptr() as usize;
        let (a, b) = (new_tag(), new_tag());
        assert_ne!(a, b);
        // Class 0 (8 bytes) shares lines, class 7 (64 bytes) never does.
        let (small, whole) = (0, 7);
        let buf = |a: usize| Buf(NonNull::new(a as *mut u8).unwrap());
        m.stamp(&[buf(p)], a);
        m.stamp(&[buf(p + 64), buf(p + 72)], b);
        assert!(m.is_local(p + 8, small, a) && !m.is_local(p + 8, small, b));
        assert!(m.is_local(p + 127, small, b) && !m.is_local(p + 127, small, a));
        assert!(m.is_local(p + 8, whole, b));
        // The free check reads the page's owner first, then the line.
        assert_eq!(m.check_free(p + 8, small, owner, a), Some(true));
        assert_eq!(m.check_free(p + 8, small, owner, b), Some(false));
        assert_eq!(m.check_free(p + 8, whole, owner, b), Some(true));
        assert_eq!(m.check_free(p + 8, small, owner - 1, a), None);
        // Outside the reservation nothing is known: no owner, every free
        // is local.
        assert!(m.is_local(16, small, a) && m.is_local(16, small, b));
        assert_eq!(m.check_free(16, small, owner, a), None);
        assert_eq!(Maps::EMPTY.check_free(p + 8, small, owner, a), None);
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
