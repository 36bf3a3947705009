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
//!
//! # Under Miri
//!
//! Miri can neither map address space without access nor change a
//! mapping's protection, so under `cfg(miri)` a reservation is one zeroed
//! block from the system allocator (`calloc`, which Miri serves lazily,
//! so untouched address space costs nothing), over-allocated to reach the
//! requested alignment. The system allocator rather than the global one,
//! because the `kmem` facade reserves its own address space through this
//! type while it *is* the global allocator. The calls map as follows; their
//! argument checks and error values are the same as on the OS:
//!
//! | call                         | under Miri |
//! |------------------------------|------------|
//! | [`Reservation::new`] / [`with_align`](Reservation::with_align) | `calloc` of the size plus the alignment slack; a span of 2^46 bytes or more is refused with `ENOMEM`, as `mmap` refuses one larger than the address space (Miri would stop outright when its host cannot lend it that much) |
//! | [`Reservation::commit`]      | checks the range and succeeds: the memory is already there and keeps its contents |
//! | [`Reservation::decommit`], [`Reservation::discard`] | check the range and zero it, so that pages still read as zero when they come back |
//! | [`Reservation::advise_huge`] | checks the range and refuses with `EINVAL`, as a kernel without THP does |
//! | [`Reservation::resident_pages`] | checks the range and fails with [`std::io::ErrorKind::Unsupported`]: there is no resident size to read |
//! | [`Reservation::release`] / drop / [`leak`](Reservation::leak) | `free` / `free` / nothing |
//!
//! What the stand-in cannot check is access to a range that is reserved but
//! not committed (or decommitted): on the OS that faults, under Miri it
//! reads the zeroes or whatever was written since the last decommit. And
//! address space is not free there: Miri keeps a bit per byte of an
//! allocation once part of it is uninitialised, so a reservation of many
//! gigabytes costs gigabytes of host memory as soon as it holds a struct
//! with padding.

use core::ptr::NonNull;

use crate::error::SysError;
use crate::page::{is_page_aligned, page_size, round_to_pages};

#[cfg(not(miri))]
pub(crate) use os::{map_aligned, unmap};

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
/// // SAFETY: nothing uses the two pages any more.
/// unsafe { r.decommit(0, 2 * p)? }; // the pages go back to the OS
/// assert!(r.commit(p, 3).is_err()); // lengths are whole pages
/// # Ok::<(), kmem_sys::SysError>(())
/// ```
#[derive(Debug)]
pub struct Reservation {
    base: NonNull<u8>,
    size: usize,
    /// What [`os::release`] needs besides `base` and `size` (nothing on the
    /// OS; the allocated block under Miri).
    origin: os::Origin,
}

// SAFETY: a reservation is an address range; all operations on it are system
// calls that the kernel serialises (under Miri: writes of zeroes to the
// range asked for, which the caller owns), so it may be used from any thread.
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
        let (base, origin) = os::reserve(size, align)?;
        Ok(Reservation { base, size, origin })
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
        let at = self.check("commit", offset, len)?;
        // SAFETY: the range lies inside our own mapping (checked above).
        unsafe { os::commit(at, len) }
    }

    /// Returns the pages of `[offset, offset + len)` to the OS and removes
    /// access: resident size drops, and touching the range faults until it is
    /// committed again (after which it reads as zero).
    ///
    /// # Safety
    ///
    /// Nothing may access the range, or rely on its contents, until it is
    /// committed again: no reference into it may be live, and no other
    /// holder of this reservation may be using it. (A shared `&Reservation`
    /// cannot tell its holders apart, so the call cannot be safe.)
    pub unsafe fn decommit(&self, offset: usize, len: usize) -> Result<(), SysError> {
        let at = self.check("decommit", offset, len)?;
        // SAFETY: the range lies inside our own mapping (checked above);
        // the caller vouches that nothing uses it.
        unsafe { os::decommit(at, len) }
    }

    /// Drops the contents of `[offset, offset + len)` but keeps it committed:
    /// resident size drops and the range reads as zero on next touch
    /// (`MADV_DONTNEED`). Cheaper than decommit + commit.
    ///
    /// # Safety
    ///
    /// Nothing may rely on the range's contents: no reference into it may
    /// be live, and no other holder of this reservation may be using it.
    pub unsafe fn discard(&self, offset: usize, len: usize) -> Result<(), SysError> {
        let at = self.check("discard", offset, len)?;
        // SAFETY: the range lies inside our own mapping (checked above);
        // the caller vouches that nothing relies on its contents.
        unsafe { os::discard(at, len) }
    }

    /// Asks the OS to back `[offset, offset + len)` with transparent huge
    /// pages where it can (`MADV_HUGEPAGE`): fewer page faults and TLB misses
    /// for ranges touched densely, at the cost of resident size when they
    /// are touched sparsely. Only a hint: with THP set to `never` it has no
    /// effect, and a kernel built without THP (or Miri) refuses it with an
    /// error.
    pub fn advise_huge(&self, offset: usize, len: usize) -> Result<(), SysError> {
        let at = self.check("advise huge pages", offset, len)?;
        // SAFETY: the range lies inside our own mapping (checked above).
        unsafe { os::advise_huge(at, len) }
    }

    /// Number of pages of `[offset, offset + len)` that are resident now
    /// (`mincore`). For tests and statistics. Always an error under Miri,
    /// which has no resident size.
    pub fn resident_pages(&self, offset: usize, len: usize) -> Result<usize, SysError> {
        let at = self.check("mincore", offset, len)?;
        os::resident_pages(at, len)
    }

    /// Releases the whole range back to the OS. Same as dropping, but reports
    /// a failure instead of ignoring it.
    pub fn release(self) -> Result<(), SysError> {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: we own this range and `me` is the only handle to it, which
        // is not dropped.
        unsafe { os::release(me.base, me.size, &me.origin) }
    }

    /// Gives up ownership: the range stays reserved for the rest of the
    /// process and `(base, size)` is returned.
    pub fn leak(self) -> (NonNull<u8>, usize) {
        let r = (self.base, self.size);
        core::mem::forget(self);
        r
    }

    /// Checks that `[offset, offset + len)` is whole pages inside the range
    /// and returns its first byte.
    fn check(&self, op: &'static str, offset: usize, len: usize) -> Result<*mut u8, SysError> {
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
        // In bounds (checked above), so the pointer keeps the range's
        // provenance.
        Ok(self.base.as_ptr().wrapping_add(offset))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: we own this range and it is going away with us. A failure
        // here cannot be reported from drop; `release` reports it.
        let _ = unsafe { os::release(self.base, self.size, &self.origin) };
    }
}

/// What to ask for so that `size` bytes aligned to `align` fit wherever the
/// block lands: returns the alignment (at least a page) and the span, `size`
/// plus `align - page` bytes of slack. [`SysError::InvalidSize`] for `op`
/// when the span overflows. Both the OS path and the Miri path over-allocate
/// by this span.
fn aligned_span(size: usize, align: usize, op: &'static str) -> Result<(usize, usize), SysError> {
    let page = page_size();
    let align = align.max(page);
    let span = size
        .checked_add(align - page)
        .ok_or(SysError::InvalidSize { op, size })?;
    Ok((align, span))
}

/// The reservation's system calls: `mmap`, `mprotect`, `madvise`, `mincore`
/// and `munmap` on the kernel's address space.
#[cfg(not(miri))]
mod os {
    use core::ptr::NonNull;

    use super::aligned_span;
    use crate::error::SysError;
    use crate::page::page_size;

    /// Nothing beyond base and size is needed to unmap.
    pub(super) type Origin = ();

    /// A fresh `PROT_NONE` mapping of `size` bytes aligned to `align`.
    pub(super) fn reserve(size: usize, align: usize) -> Result<(NonNull<u8>, Origin), SysError> {
        Ok((map_aligned(size, align, libc::PROT_NONE, "reserve")?, ()))
    }

    /// # Safety
    ///
    /// `[at, at + len)` is page-aligned and inside a reservation.
    pub(super) unsafe fn commit(at: *mut u8, len: usize) -> Result<(), SysError> {
        // SAFETY: the caller's promise: the range is ours.
        let rc = unsafe { libc::mprotect(at.cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
        if rc != 0 {
            return Err(SysError::last_os("commit", at as usize, len));
        }
        Ok(())
    }

    /// # Safety
    ///
    /// As [`commit`].
    pub(super) unsafe fn decommit(at: *mut u8, len: usize) -> Result<(), SysError> {
        // Mapping fresh PROT_NONE pages over the range drops the old pages
        // and their commit charge in one call.
        // SAFETY: MAP_FIXED replaces only pages inside our own mapping.
        let p = unsafe {
            libc::mmap(
                at.cast(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(SysError::last_os("decommit", at as usize, len));
        }
        Ok(())
    }

    /// # Safety
    ///
    /// As [`commit`].
    pub(super) unsafe fn discard(at: *mut u8, len: usize) -> Result<(), SysError> {
        // SAFETY: the caller's promise; DONTNEED only zero-fills a private
        // anonymous range.
        unsafe { advise("discard", at, len, libc::MADV_DONTNEED) }
    }

    /// # Safety
    ///
    /// As [`commit`].
    pub(super) unsafe fn advise_huge(at: *mut u8, len: usize) -> Result<(), SysError> {
        // SAFETY: the caller's promise; HUGEPAGE only changes how the kernel
        // backs the range.
        unsafe { advise("advise huge pages", at, len, libc::MADV_HUGEPAGE) }
    }

    /// `madvise(advice)` on `[at, at + len)`, reported as `op`.
    ///
    /// # Safety
    ///
    /// As [`commit`], and `advice` changes no memory the caller relies on.
    unsafe fn advise(
        op: &'static str,
        at: *mut u8,
        len: usize,
        advice: i32,
    ) -> Result<(), SysError> {
        // SAFETY: the caller's promise.
        let rc = unsafe { libc::madvise(at.cast(), len, advice) };
        if rc != 0 {
            return Err(SysError::last_os(op, at as usize, len));
        }
        Ok(())
    }

    /// Counts the resident pages of `[at, at + len)`, page-aligned and
    /// mapped, with `mincore`.
    pub(super) fn resident_pages(at: *mut u8, len: usize) -> Result<usize, SysError> {
        let page = page_size();
        let mut vec = [0u8; 256];
        let mut count = 0;
        let mut at = at as usize;
        let end = at + len;
        while at < end {
            let chunk = (end - at).min(vec.len() * page);
            // SAFETY: `vec` has room for chunk / page entries and the range
            // is page-aligned and mapped (mincore fails with ENOMEM
            // otherwise).
            let rc = unsafe { libc::mincore(at as *mut libc::c_void, chunk, vec.as_mut_ptr()) };
            if rc != 0 {
                return Err(SysError::last_os("mincore", at, chunk));
            }
            count += vec[..chunk / page].iter().filter(|&&b| b & 1 != 0).count();
            at += chunk;
        }
        Ok(count)
    }

    /// # Safety
    ///
    /// `base` and `size` are one whole reservation that nothing refers to
    /// any more.
    pub(super) unsafe fn release(
        base: NonNull<u8>,
        size: usize,
        _origin: &Origin,
    ) -> Result<(), SysError> {
        // SAFETY: the caller's promise.
        unsafe { unmap(base.as_ptr() as usize, size, "release") }
    }

    /// Maps `size` bytes (a page multiple) with protection `prot`, at an
    /// address that is a multiple of `align`, by over-mapping and trimming
    /// the ends.
    pub(crate) fn map_aligned(
        size: usize,
        align: usize,
        prot: libc::c_int,
        op: &'static str,
    ) -> Result<NonNull<u8>, SysError> {
        let (align, span) = aligned_span(size, align, op)?;
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
        // SAFETY: head and tail are whole pages of the mapping we just made
        // that lie outside the part we keep.
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
    /// `[addr, addr + len)` must be a mapping (or part of one) that the
    /// caller owns and that nothing refers to any more.
    pub(crate) unsafe fn unmap(addr: usize, len: usize, op: &'static str) -> Result<(), SysError> {
        // SAFETY: the caller guarantees ownership of the range.
        let rc = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        if rc != 0 {
            return Err(SysError::last_os(op, addr, len));
        }
        Ok(())
    }
}

/// The reservation under Miri: one zeroed block from the system allocator;
/// see [the module docs](self#under-miri).
#[cfg(miri)]
mod os {
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::NonNull;
    use std::alloc::System;
    use std::io;

    use super::aligned_span;
    use crate::error::SysError;
    use crate::page::page_size;

    /// Spans from this size on are refused with `ENOMEM` rather than asked
    /// of Miri, which stops the program when its host cannot lend it the
    /// memory. Far above any reservation a test makes, below what the host
    /// lends lazily.
    const MAX_SPAN: usize = 1 << 46;

    /// Alignment of the block itself: what `calloc` gives, so that the
    /// system allocator zeroes it lazily instead of with a memset.
    const BLOCK_ALIGN: usize = 16;

    /// The block the reservation lies in, to give back on release.
    #[derive(Debug)]
    pub(super) struct Origin {
        block: NonNull<u8>,
        layout: Layout,
    }

    fn enomem(op: &'static str, len: usize) -> SysError {
        SysError::Os {
            op,
            addr: 0,
            len,
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        }
    }

    /// `size` zeroed bytes aligned to `align`, inside a larger block.
    pub(super) fn reserve(size: usize, align: usize) -> Result<(NonNull<u8>, Origin), SysError> {
        let op = "reserve";
        let (align, span) = aligned_span(size, align, op)?;
        let page = page_size();
        // The block is only 16-aligned: it needs the rest of the page too.
        let block_size = span.checked_add(page).filter(|&s| s < MAX_SPAN);
        let layout = block_size
            .and_then(|s| Layout::from_size_align(s, BLOCK_ALIGN).ok())
            .ok_or_else(|| enomem(op, span))?;
        // SAFETY: the layout's size is at least a page, so not zero.
        let block =
            NonNull::new(unsafe { System.alloc_zeroed(layout) }).ok_or_else(|| enomem(op, span))?;
        let start = block.as_ptr().addr();
        let head = start.next_multiple_of(align) - start;
        // SAFETY: `head < align`, and the block holds `align - 1` bytes of
        // slack before `size` bytes, so `base` and the `size` bytes after it
        // are inside the block.
        let base = unsafe { block.add(head) };
        Ok((base, Origin { block, layout }))
    }

    /// # Safety
    ///
    /// `[at, at + len)` is inside a reservation.
    pub(super) unsafe fn commit(_at: *mut u8, _len: usize) -> Result<(), SysError> {
        // The block is readable and writable throughout already.
        Ok(())
    }

    /// # Safety
    ///
    /// `[at, at + len)` is inside a reservation.
    pub(super) unsafe fn decommit(at: *mut u8, len: usize) -> Result<(), SysError> {
        // SAFETY: the caller's promise: the range is inside the block, and
        // `at` carries the block's provenance. Dropping the contents is what
        // decommit is for; whoever still reads them sees zeroes, as they
        // would (after a fault) on the OS.
        unsafe { at.write_bytes(0, len) };
        Ok(())
    }

    /// # Safety
    ///
    /// As [`decommit`].
    pub(super) unsafe fn discard(at: *mut u8, len: usize) -> Result<(), SysError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { decommit(at, len) }
    }

    /// # Safety
    ///
    /// As [`commit`].
    pub(super) unsafe fn advise_huge(at: *mut u8, len: usize) -> Result<(), SysError> {
        // What a kernel without transparent huge pages answers.
        Err(SysError::Os {
            op: "advise huge pages",
            addr: at as usize,
            len,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })
    }

    /// There is no resident size under Miri.
    pub(super) fn resident_pages(at: *mut u8, len: usize) -> Result<usize, SysError> {
        Err(SysError::Os {
            op: "mincore",
            addr: at as usize,
            len,
            source: io::ErrorKind::Unsupported.into(),
        })
    }

    /// # Safety
    ///
    /// `origin` is that of one whole reservation that nothing refers to
    /// any more.
    pub(super) unsafe fn release(
        _base: NonNull<u8>,
        _size: usize,
        origin: &Origin,
    ) -> Result<(), SysError> {
        // SAFETY: the caller's promise: the block came from `reserve` with
        // this layout and is not used again.
        unsafe { System.dealloc(origin.block.as_ptr(), origin.layout) };
        Ok(())
    }
}
