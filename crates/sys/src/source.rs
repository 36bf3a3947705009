//! Where allocators get whole pages: the [`PageSource`] trait and the default
//! OS-backed [`OsPages`].

use core::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::SysError;
use crate::page::{is_page_aligned, page_size};

/// A supplier of page-aligned, readable and writable memory in whole pages.
///
/// `kmem-slab` and `kmem-zone-compat` take their slabs from a `PageSource`;
/// the `kmem` facade implements it over its page layer, and [`OsPages`] is the
/// standalone default.
///
/// # Safety
/// An implementation must hand out ranges that are valid for reads and writes
/// of `size` bytes, aligned to `align`, and disjoint from every other range it
/// has handed out and not yet taken back, until they are passed to
/// [`free_pages`](PageSource::free_pages). Callers rely on this for memory
/// safety.
pub unsafe trait PageSource: Send + Sync {
    /// Allocates `size` bytes (a non-zero multiple of the page size) aligned to
    /// `align` (a power of two; at least page alignment is always given).
    /// The contents are unspecified.
    fn alloc_pages(&self, size: usize, align: usize) -> Result<NonNull<u8>, SysError>;

    /// Like [`alloc_pages`](PageSource::alloc_pages) but the memory reads as
    /// zero. The default zeroes with a memset; sources that hand out fresh
    /// pages override it to skip that.
    fn alloc_pages_zeroed(&self, size: usize, align: usize) -> Result<NonNull<u8>, SysError> {
        let p = self.alloc_pages(size, align)?;
        // SAFETY: alloc_pages returned `size` writable bytes at `p`.
        unsafe { p.as_ptr().write_bytes(0, size) };
        Ok(p)
    }

    /// Returns a range to the source.
    ///
    /// # Safety
    /// `ptr`, `size` and `align` must be exactly those of one earlier
    /// allocation from this source that has not been freed, and nothing may
    /// use the memory afterwards.
    unsafe fn free_pages(&self, ptr: NonNull<u8>, size: usize, align: usize);
}

/// Implements [`PageSource`] for pointers to a source by forwarding every
/// method, `alloc_pages_zeroed` too: a pointer that took the default would
/// memset pages the source hands out zeroed already.
macro_rules! forward_page_source {
    ($($pointer:ty),+) => {$(
        // SAFETY: forwards to a source that upholds the contract.
        unsafe impl<S: PageSource + ?Sized> PageSource for $pointer {
            fn alloc_pages(&self, size: usize, align: usize) -> Result<NonNull<u8>, SysError> {
                (**self).alloc_pages(size, align)
            }
            fn alloc_pages_zeroed(
                &self,
                size: usize,
                align: usize,
            ) -> Result<NonNull<u8>, SysError> {
                (**self).alloc_pages_zeroed(size, align)
            }
            unsafe fn free_pages(&self, ptr: NonNull<u8>, size: usize, align: usize) {
                // SAFETY: the caller's guarantees are passed on unchanged.
                unsafe { (**self).free_pages(ptr, size, align) }
            }
        }
    )+};
}

forward_page_source!(&S, Arc<S>);

/// Pages straight from the OS: one anonymous `mmap` per allocation (over-mapped
/// and trimmed when more than page alignment is asked), `munmap` on free.
/// Fresh pages are zero, so [`alloc_pages_zeroed`](PageSource::alloc_pages_zeroed)
/// costs nothing extra. Under Miri, which cannot make or trim such mappings,
/// the same calls take zeroed memory from the system allocator instead, so
/// that code built on this source can be checked there.
///
/// It counts what it has handed out, which tests use to prove that everything
/// came back.
///
/// ```
/// use kmem_sys::{page_size, OsPages, PageSource};
///
/// let os = OsPages::new();
/// let p = os.alloc_pages(4 * page_size(), 16 * page_size())?;
/// assert_eq!(p.as_ptr() as usize % (16 * page_size()), 0);
/// assert_eq!(os.bytes_in_use(), 4 * page_size());
/// // SAFETY: exactly the allocation made above, no longer used.
/// unsafe { os.free_pages(p, 4 * page_size(), 16 * page_size()) };
/// assert_eq!(os.bytes_in_use(), 0);
/// # Ok::<(), kmem_sys::SysError>(())
/// ```
#[derive(Debug, Default)]
pub struct OsPages {
    in_use: AtomicUsize,
    allocs: AtomicUsize,
    frees: AtomicUsize,
}

impl OsPages {
    /// A source with its counters at zero.
    pub const fn new() -> Self {
        OsPages {
            in_use: AtomicUsize::new(0),
            allocs: AtomicUsize::new(0),
            frees: AtomicUsize::new(0),
        }
    }

    /// Bytes handed out and not yet freed.
    pub fn bytes_in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Number of successful allocations so far.
    pub fn allocs(&self) -> usize {
        self.allocs.load(Ordering::Relaxed)
    }

    /// Number of frees so far.
    pub fn frees(&self) -> usize {
        self.frees.load(Ordering::Relaxed)
    }

    /// Resizes an allocation of `old` bytes to `new` (whole pages) with
    /// `mremap`, in place or by moving its pages, so the contents up to the
    /// smaller size come along without a copy. On error nothing changed.
    ///
    /// # Safety
    ///
    /// `ptr` is a live allocation of exactly `old` bytes from this source,
    /// made with at most page alignment (a moved one is only page-aligned).
    /// On success the returned pointer replaces it and `ptr` is not used
    /// again.
    pub unsafe fn resize_pages(
        &self,
        ptr: NonNull<u8>,
        old: usize,
        new: usize,
    ) -> Result<NonNull<u8>, SysError> {
        if new == 0 || !is_page_aligned(new) {
            return Err(SysError::InvalidSize {
                op: "resize_pages",
                size: new,
            });
        }
        // SAFETY: the caller's promise: `ptr` is one whole allocation of
        // `old` bytes of ours, with at most page alignment.
        let q = unsafe { pages::remap(ptr, old, new)? };
        if new > old {
            self.in_use.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.in_use.fetch_sub(old - new, Ordering::Relaxed);
        }
        Ok(q)
    }
}

/// Where [`OsPages`] gets its memory: anonymous mappings from the kernel
/// (`mmap`, `munmap`, `mremap`).
#[cfg(not(miri))]
mod pages {
    use core::ptr::NonNull;

    use crate::error::SysError;
    use crate::reserve::{map_aligned, unmap as unmap_range};

    /// `size` fresh zeroed bytes at a multiple of `align` (at least a page).
    pub(super) fn map(size: usize, align: usize) -> Result<NonNull<u8>, SysError> {
        map_aligned(
            size,
            align,
            libc::PROT_READ | libc::PROT_WRITE,
            "alloc_pages",
        )
    }

    /// # Safety
    ///
    /// `ptr` and `size` are one live range from [`map`]; nothing uses it
    /// afterwards.
    pub(super) unsafe fn unmap(
        ptr: NonNull<u8>,
        size: usize,
        _align: usize,
    ) -> Result<(), SysError> {
        // SAFETY: the caller's promise.
        unsafe { unmap_range(ptr.as_ptr() as usize, size, "free_pages") }
    }

    /// # Safety
    ///
    /// `ptr` is one live range of `old` bytes from [`map`] with at most page
    /// alignment; on success it is replaced by the result.
    pub(super) unsafe fn remap(
        ptr: NonNull<u8>,
        old: usize,
        new: usize,
    ) -> Result<NonNull<u8>, SysError> {
        // SAFETY: the caller's promise: `[ptr, ptr + old)` is one whole
        // mapping of ours, which MAYMOVE may move.
        let q = unsafe { libc::mremap(ptr.as_ptr().cast(), old, new, libc::MREMAP_MAYMOVE) };
        if q == libc::MAP_FAILED {
            return Err(SysError::last_os(
                "resize_pages",
                ptr.as_ptr() as usize,
                new,
            ));
        }
        NonNull::new(q.cast::<u8>()).ok_or(SysError::InvalidSize {
            op: "resize_pages",
            size: new,
        })
    }
}

/// Where [`OsPages`] gets its memory under Miri, which can neither make our
/// mappings nor trim them: the system allocator, with the same sizes and
/// alignments, so that the crates above run their tests under Miri. Not the
/// global allocator: `kmem`'s `Kmem` takes its metadata from `OsPages` while
/// it *is* the global allocator, and would call itself back.
#[cfg(miri)]
mod pages {
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::NonNull;
    use std::alloc::System;
    use std::io;

    use crate::error::SysError;
    use crate::page::page_size;

    fn layout(op: &'static str, size: usize, align: usize) -> Result<Layout, SysError> {
        Layout::from_size_align(size, align).map_err(|_| SysError::InvalidSize { op, size })
    }

    fn get(op: &'static str, layout: Layout) -> Result<NonNull<u8>, SysError> {
        // SAFETY: `layout` has a non-zero size (callers check it).
        NonNull::new(unsafe { System.alloc_zeroed(layout) }).ok_or(SysError::Os {
            op,
            addr: 0,
            len: layout.size(),
            source: io::ErrorKind::OutOfMemory.into(),
        })
    }

    pub(super) fn map(size: usize, align: usize) -> Result<NonNull<u8>, SysError> {
        get("alloc_pages", layout("alloc_pages", size, align)?)
    }

    /// # Safety
    ///
    /// `ptr`, `size` and `align` are those of one live range from [`map`].
    pub(super) unsafe fn unmap(
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
    ) -> Result<(), SysError> {
        let layout = layout("free_pages", size, align)?;
        // SAFETY: the caller's promise: allocated with this layout.
        unsafe { System.dealloc(ptr.as_ptr(), layout) };
        Ok(())
    }

    /// # Safety
    ///
    /// `ptr` is one live range of `old` bytes from [`map`] with page
    /// alignment; on success it is replaced by the result.
    pub(super) unsafe fn remap(
        ptr: NonNull<u8>,
        old: usize,
        new: usize,
    ) -> Result<NonNull<u8>, SysError> {
        let q = get("resize_pages", layout("resize_pages", new, page_size())?)?;
        // SAFETY: both ranges are live and distinct; the copy stays within
        // the smaller one.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), q.as_ptr(), old.min(new)) };
        // SAFETY: the caller's promise, as in `unmap`.
        unsafe { unmap(ptr, old, page_size())? };
        Ok(q)
    }
}

// SAFETY: every range is a fresh private mapping of `size` bytes at an
// `align`-aligned address, so ranges are disjoint and valid until unmapped.
unsafe impl PageSource for OsPages {
    fn alloc_pages(&self, size: usize, align: usize) -> Result<NonNull<u8>, SysError> {
        if size == 0 || !is_page_aligned(size) {
            return Err(SysError::InvalidSize {
                op: "alloc_pages",
                size,
            });
        }
        if !align.is_power_of_two() {
            return Err(SysError::InvalidAlign {
                op: "alloc_pages",
                align,
            });
        }
        let p = pages::map(size, align.max(page_size()))?;
        self.in_use.fetch_add(size, Ordering::Relaxed);
        self.allocs.fetch_add(1, Ordering::Relaxed);
        Ok(p)
    }

    fn alloc_pages_zeroed(&self, size: usize, align: usize) -> Result<NonNull<u8>, SysError> {
        // Anonymous mappings are zero-filled by the kernel.
        self.alloc_pages(size, align)
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        // SAFETY: the caller passes back exactly one live allocation of ours,
        // made with this size and alignment.
        let r = unsafe { pages::unmap(ptr, size, align.max(page_size())) };
        if let Err(e) = r {
            // munmap of a range we mapped can only fail if the contract was
            // broken; carrying on would leak or corrupt silently.
            panic!("OsPages::free_pages: {e}");
        }
        self.in_use.fetch_sub(size, Ordering::Relaxed);
        self.frees.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_sizes_and_alignments() {
        let os = OsPages::new();
        let p = page_size();
        assert!(matches!(
            os.alloc_pages(0, p),
            Err(SysError::InvalidSize { .. })
        ));
        assert!(matches!(
            os.alloc_pages(p + 1, p),
            Err(SysError::InvalidSize { .. })
        ));
        assert!(matches!(
            os.alloc_pages(p, 3 * p),
            Err(SysError::InvalidAlign { .. })
        ));
        assert_eq!(os.allocs(), 0);
    }

    #[test]
    fn resize_pages_keeps_contents_and_counts_bytes() {
        let os = OsPages::new();
        let p = page_size();
        let a = os.alloc_pages(p, p).unwrap();
        // SAFETY: `a` is a fresh allocation of `p` bytes.
        unsafe { a.as_ptr().write(7) };
        // SAFETY: `a` is live, `p` bytes, page-aligned; not used again.
        let b = unsafe { os.resize_pages(a, p, 64 * p) }.unwrap();
        assert_eq!(os.bytes_in_use(), 64 * p);
        // SAFETY: `b` holds 64 pages, the first carried over from `a`.
        let ends = unsafe { (b.as_ptr().read(), b.as_ptr().add(63 * p).read()) };
        assert_eq!(ends, (7, 0));
        // SAFETY: as above; a size that is not whole pages changes nothing.
        let bad = unsafe { os.resize_pages(b, 64 * p, p + 1) };
        assert!(matches!(bad, Err(SysError::InvalidSize { .. })));
        // SAFETY: `b` is live, `64 * p` bytes; not used again.
        let c = unsafe { os.resize_pages(b, 64 * p, p) }.unwrap();
        assert_eq!(os.bytes_in_use(), p);
        // SAFETY: `c` is the one live allocation of `p` bytes.
        unsafe {
            assert_eq!(c.as_ptr().read(), 7);
            os.free_pages(c, p, p);
        }
        assert_eq!(os.bytes_in_use(), 0);
    }

    #[test]
    fn large_alignment_is_honoured_and_memory_is_zero() {
        let os = OsPages::new();
        let p = page_size();
        for align in [p, 2 * p, 64 * p, 512 * p] {
            let ptr = os.alloc_pages_zeroed(3 * p, align).unwrap();
            assert_eq!(ptr.as_ptr() as usize % align, 0);
            // SAFETY: three fresh pages.
            let bytes = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), 3 * p) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(0xa5);
            // SAFETY: the allocation made above.
            unsafe { os.free_pages(ptr, 3 * p, align) };
        }
        assert_eq!(os.bytes_in_use(), 0);
        assert_eq!(os.allocs(), os.frees());
    }
}
