//! Address-space reservations: reserve, commit, decommit, release.
//!
//! This is the user-space counterpart of the kernel's split between virtual
//! address space and backing pages (FreeBSD `vm_kern.c`: `kva_alloc` hands out
//! address space, `kmem_back` backs it with pages, `kmem_unback` takes them
//! away). Here:
//!
//! | kernel idea            | here                         | Linux call |
//! |------------------------|------------------------------|------------|
//! | reserve KVA            | [`Reservation::new`]         | `mmap(PROT_NONE, MAP_NORESERVE)` |
//! | back pages             | [`Reservation::commit`]      | `mprotect(PROT_READ|PROT_WRITE)`; pages appear zeroed on first touch |
//! | unback pages           | [`Reservation::decommit`]    | `mmap(MAP_FIXED, PROT_NONE)` over the range: the pages are dropped (resident size falls) and the range faults again |
//! | free KVA               | [`Reservation::release`] / drop | `munmap` |

use core::ptr::NonNull;

use crate::error::SysError;
use crate::page::{is_page_aligned, page_size, round_to_pages};

/// A range of address space reserved with no access.
///
/// Sub-ranges are committed (made readable and writable, demand-zero) and
/// decommitted (pages returned to the OS, access removed) by page-aligned
/// offset. Dropping the reservation releases the whole range; any reference
/// into it must be gone by then.
///
/// ```
/// use kmem_sys::{page_size, Reservation};
///
/// let p = page_size();
/// let r = Reservation::new(16 * p)?;
/// r.commit(0, 2 * p)?;
/// // SAFETY: the first two pages are committed and nobody else uses them.
/// unsafe { r.base().as_ptr().write(7) };
/// r.decommit(0, 2 * p)?;       // the page goes back to the OS
/// assert!(r.commit(p, 3).is_err()); // lengths are whole pages
/// # Ok::<(), kmem_sys::SysError>(())
/// ```
#[derive(Debug)]
pub struct Reservation {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: a reservation is an address range; all operations on it are system
// calls that the kernel serialises, so it may be used from any thread.
unsafe impl Send for Reservation {}
// SAFETY: as above; `&self` methods only issue system calls on sub-ranges.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Reserves `size` bytes (rounded up to whole pages) at a page-aligned
    /// address chosen by the OS. No memory is committed.
    pub fn new(size: usize) -> Result<Self, SysError> {
        Self::with_align(size, page_size())
    }

    /// Reserves `size` bytes (rounded up to whole pages) whose base is a
    /// multiple of `align` (a power of two; values below the page size mean
    /// page alignment).
    pub fn with_align(size: usize, align: usize) -> Result<Self, SysError> {
        if !align.is_power_of_two() {
            return Err(SysError::InvalidAlign {
                op: "reserve",
                align,
            });
        }
        let size = match round_to_pages(size) {
            Some(s) if s != 0 => s,
            _ => {
                return Err(SysError::InvalidSize {
                    op: "reserve",
                    size,
                });
            }
        };
        let base = map_aligned(size, align, libc::PROT_NONE, "reserve")?;
        Ok(Reservation { base, size })
    }

    /// First byte of the range.
    #[inline]
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length of the range in bytes (a multiple of the page size).
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether `addr` lies inside the range.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base.as_ptr() as usize) < self.size
    }

    /// Makes `[offset, offset + len)` readable and writable. Pages read as zero
    /// until written and take memory only when first touched. Committing an
    /// already committed range is harmless and keeps its contents.
    pub fn commit(&self, offset: usize, len: usize) -> Result<(), SysError> {
        let addr = self.check("commit", offset, len)?;
        // SAFETY: the range lies inside our own mapping (checked above).
        let rc = unsafe {
            libc::mprotect(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            return Err(SysError::last_os("commit", addr, len));
        }
        Ok(())
    }

    /// Returns the pages of `[offset, offset + len)` to the OS and removes
    /// access: resident size drops, and touching the range faults until it is
    /// committed again (after which it reads as zero).
    pub fn decommit(&self, offset: usize, len: usize) -> Result<(), SysError> {
        let addr = self.check("decommit", offset, len)?;
        // Mapping fresh PROT_NONE pages over the range drops the old pages and
        // their commit charge in one call.
        // SAFETY: MAP_FIXED replaces only pages inside our own mapping.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(SysError::last_os("decommit", addr, len));
        }
        Ok(())
    }

    /// Drops the contents of `[offset, offset + len)` but keeps it committed:
    /// resident size drops and the range reads as zero on next touch
    /// (`MADV_DONTNEED`). Cheaper than decommit + commit.
    pub fn discard(&self, offset: usize, len: usize) -> Result<(), SysError> {
        self.advise("discard", offset, len, libc::MADV_DONTNEED)
    }

    /// Asks the OS to back `[offset, offset + len)` with transparent huge
    /// pages where it can (`MADV_HUGEPAGE`): fewer page faults and TLB misses
    /// for ranges touched densely, at the cost of resident size when they
    /// are touched sparsely. Only a hint: with THP set to `never` it has no
    /// effect, and a kernel built without THP refuses it with an error.
    pub fn advise_huge(&self, offset: usize, len: usize) -> Result<(), SysError> {
        self.advise("advise huge pages", offset, len, libc::MADV_HUGEPAGE)
    }

    /// `madvise(advice)` on `[offset, offset + len)`, reported as `op`.
    fn advise(
        &self,
        op: &'static str,
        offset: usize,
        len: usize,
        advice: i32,
    ) -> Result<(), SysError> {
        let addr = self.check(op, offset, len)?;
        // SAFETY: the range lies inside our own mapping, and the two advices
        // used here only zero-fill a private anonymous range (DONTNEED) or
        // change how the kernel backs it (HUGEPAGE).
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) };
        if rc != 0 {
            return Err(SysError::last_os(op, addr, len));
        }
        Ok(())
    }

    /// Number of pages of `[offset, offset + len)` that are resident now
    /// (`mincore`). For tests and statistics.
    pub fn resident_pages(&self, offset: usize, len: usize) -> Result<usize, SysError> {
        let addr = self.check("mincore", offset, len)?;
        resident_pages_at(addr, len)
    }

    /// Releases the whole range back to the OS. Same as dropping, but reports
    /// a failure instead of ignoring it.
    pub fn release(self) -> Result<(), SysError> {
        let (addr, len) = (self.base.as_ptr() as usize, self.size);
        core::mem::forget(self);
        // SAFETY: we own this mapping and are forgetting the only handle to it.
        unsafe { unmap(addr, len, "release") }
    }

    /// Gives up ownership: the range stays reserved for the rest of the
    /// process and `(base, size)` is returned.
    pub fn leak(self) -> (NonNull<u8>, usize) {
        let r = (self.base, self.size);
        core::mem::forget(self);
        r
    }

    fn check(&self, op: &'static str, offset: usize, len: usize) -> Result<usize, SysError> {
        if !is_page_aligned(offset) || !is_page_aligned(len) {
            return Err(SysError::Misaligned {
                op,
                offset,
                len,
                page_size: page_size(),
            });
        }
        if len == 0 || offset > self.size || len > self.size - offset {
            return Err(SysError::OutOfRange {
                op,
                offset,
                len,
                size: self.size,
            });
        }
        Ok(self.base.as_ptr() as usize + offset)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and it is going away with us. A failure
        // here cannot be reported from drop; `release` reports it.
        let _ = unsafe { unmap(self.base.as_ptr() as usize, self.size, "release") };
    }
}

/// Maps `size` bytes (a page multiple) with protection `prot`, at an address
/// that is a multiple of `align`, by over-mapping and trimming the ends.
pub(crate) fn map_aligned(
    size: usize,
    align: usize,
    prot: libc::c_int,
    op: &'static str,
) -> Result<NonNull<u8>, SysError> {
    let page = page_size();
    let align = align.max(page);
    let span = size
        .checked_add(align - page)
        .ok_or(SysError::InvalidSize { op, size })?;
    // SAFETY: an anonymous mapping at an address of the kernel's choosing.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            span,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(SysError::last_os(op, 0, span));
    }
    let start = p as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = span - head - size;
    // SAFETY: head and tail are whole pages of the mapping we just made that
    // lie outside the part we keep.
    unsafe {
        if head != 0 {
            unmap(start, head, op)?;
        }
        if tail != 0 {
            unmap(aligned + size, tail, op)?;
        }
    }
    // `aligned` is inside a successful mapping, so it is not null.
    NonNull::new(aligned as *mut u8).ok_or(SysError::InvalidSize { op, size })
}

/// # Safety
/// `[addr, addr + len)` must be a mapping (or part of one) that the caller
/// owns and that nothing refers to any more.
pub(crate) unsafe fn unmap(addr: usize, len: usize, op: &'static str) -> Result<(), SysError> {
    // SAFETY: the caller guarantees ownership of the range.
    let rc = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    if rc != 0 {
        return Err(SysError::last_os(op, addr, len));
    }
    Ok(())
}

/// Counts the resident pages of a mapped, page-aligned range with `mincore`.
pub(crate) fn resident_pages_at(addr: usize, len: usize) -> Result<usize, SysError> {
    let page = page_size();
    let mut vec = [0u8; 256];
    let mut count = 0;
    let mut at = addr;
    let end = addr + len;
    while at < end {
        let chunk = (end - at).min(vec.len() * page);
        // SAFETY: `vec` has room for chunk / page entries and the range is
        // page-aligned and mapped (mincore fails with ENOMEM otherwise).
        let rc = unsafe { libc::mincore(at as *mut libc::c_void, chunk, vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(SysError::last_os("mincore", at, chunk));
        }
        count += vec[..chunk / page].iter().filter(|&&b| b & 1 != 0).count();
        at += chunk;
    }
    Ok(count)
}
