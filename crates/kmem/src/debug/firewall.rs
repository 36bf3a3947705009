//! Firewall blocks (illumos `KMF_FIREWALL`, `kmem_firewall_va_alloc`,
//! libumem's `firewall=SIZE`): a buffer placed so that it ends where an
//! unmapped page begins, so the first byte written past it faults.
//!
//! A block is `round_to_pages(size)` backed bytes plus one guard page, taken
//! from the page layer with the caller's owner tag (so frees are routed
//! and checked as for any block of that owner); the guard page is then
//! decommitted (`PROT_NONE`). The buffer starts `round_up(size, align)`
//! bytes before the guard, so for alignments up to a page the block's start
//! is the buffer's page, and a free needs only the pointer and the size.

use core::ptr::NonNull;

use kmem_sys::{page_size, round_to_pages};

use crate::error::KmemError;
use crate::page::PageLayer;

/// Allocates a firewalled buffer of `size` bytes aligned to `align` (at
/// most a page), its pages tagged `owner`.
pub(crate) fn alloc(size: usize, align: usize, owner: u32) -> Option<NonNull<u8>> {
    let page = page_size();
    debug_assert!(align <= page);
    let len = round_to_pages(size.max(1))?;
    let layer = PageLayer::global();
    let base = layer.alloc_owned(len + page, page, owner).ok()?;
    // SAFETY: the guard page is the last page of the block just allocated.
    let guard = unsafe { base.add(len) };
    // SAFETY: nothing uses the guard page.
    if unsafe { layer.unback(guard, page) }.is_err() {
        // SAFETY: the block is ours and unused.
        let _ = unsafe { layer.free(base, len + page) };
        return None;
    }
    // SAFETY: `round_up(size, align) <= len`, so this stays in the block.
    Some(unsafe { guard.sub(size.next_multiple_of(align.max(1))) })
}

/// Frees a firewalled buffer of `size` bytes at `p` whose pages are
/// tagged `owner`.
///
/// # Errors
///
/// [`KmemError::BadFree`] if `p` and `size` are not a live firewall block
/// of `owner`; nothing changes then.
///
/// # Safety
///
/// The caller gives the buffer up.
pub(crate) unsafe fn free(p: NonNull<u8>, size: usize, owner: u32) -> Result<(), KmemError> {
    let page = page_size();
    let addr = p.as_ptr() as usize;
    let bad = |why: &str| KmemError::BadFree {
        cache: "kmem_firewall",
        addr,
        why: why.to_string(),
    };
    let len = round_to_pages(size.max(1)).ok_or_else(|| bad("size overflows"))?;
    let base = addr & !(page - 1);
    let layer = PageLayer::global();
    let guard = base + len;
    if addr + size > guard
        || layer.owner_of(base) != Some(owner)
        || layer.owner_of(guard) != Some(owner)
    {
        return Err(bad("not a live firewall block of this size"));
    }
    let (base, guard) = (
        p.with_addr(base.try_into().map_err(|_| bad("null"))?),
        p.with_addr(guard.try_into().map_err(|_| bad("null"))?),
    );
    layer.back(guard, page)?;
    // SAFETY: the whole block, guard page backed again; the caller gives it up.
    unsafe { layer.free(base, len + page) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_ends_at_the_guard_page() {
        let p = alloc(100, 8, 0).unwrap();
        let end = p.as_ptr() as usize + 104;
        assert_eq!(end % page_size(), 0);
        // SAFETY: 100 bytes of ours.
        unsafe { p.as_ptr().write_bytes(1, 100) };
        // SAFETY: freed once with its size.
        unsafe { free(p, 100, 0) }.unwrap();
        // SAFETY: a second free is refused without touching memory.
        assert!(unsafe { free(p, 100, 0) }.is_err());
    }
}
