//! Large blocks (above the size classes) for `kmem_alloc` and `Kmem`, with
//! a small cache of recently freed ones.
//!
//! The page layer discards every block it takes back (`kmem_unback`), so a
//! program that frees and re-allocates a big buffer pays a `madvise` and a
//! page fault per page each time. Like the seed's quantum caches in front of
//! an arena, a bounded FIFO of freed blocks sits in front of the page layer
//! here: at most [`SLOTS`] blocks and [`MAX_BYTES`] in all stay mapped and
//! dirty, a request of the same page count reuses one, and [`flush`] (run by
//! every reap) gives them all back. Cached blocks carry the owner tag
//! [`CACHED`], so freeing one twice is still caught.
//!
//! A block is not the request's page count but the next of four sizes per
//! power of two ([`block_size`], jemalloc's large size classes): a freed
//! block then fits the next request of a nearby size instead of only one of
//! exactly its page count, which with random sizes rarely came (mstress
//! faulted in some 40 MiB of fresh pages that way). The pages past the
//! request are address space only until touched, at most a quarter more.

use core::ptr::NonNull;

use kmem_sys::sync::Mutex;
use kmem_sys::{page_size, round_to_pages};

use crate::error::KmemError;
use crate::page::{MAX_OWNER, NO_OWNER, PageLayer};

/// Blocks kept at most.
pub const SLOTS: usize = 32;
/// Bytes kept at most; a block above a quarter of this is never kept.
pub const MAX_BYTES: usize = 64 << 20;
/// Owner tag of a cached block.
const CACHED: u32 = MAX_OWNER;

struct Cache {
    blocks: [(usize, usize); SLOTS],
    len: usize,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    blocks: [(0, 0); SLOTS],
    len: 0,
    bytes: 0,
});

/// The bytes a large block of `size` occupies: whole pages, rounded up to
/// one of four steps between consecutive powers of two.
pub(crate) fn block_size(size: usize) -> Option<usize> {
    let pages = round_to_pages(size)?;
    let step = (pages.checked_next_power_of_two()? / 8).max(page_size());
    Some(pages.checked_add(step - 1)? & !(step - 1))
}

/// Allocates `size` bytes at `align` from the cache or the page layer;
/// with `zero`, the memory reads as zero.
pub(crate) fn alloc(size: usize, align: usize, zero: bool) -> Option<NonNull<u8>> {
    let layer = PageLayer::global();
    let pages = block_size(size)?;
    if align <= page_size()
        && let Some(p) = take(pages)
    {
        // The block stays tagged CACHED until here; give it back to callers.
        layer.retag(p, pages, CACHED, NO_OWNER).ok()?;
        if zero {
            // SAFETY: `pages` bytes of ours, dirty from their last use.
            unsafe { p.as_ptr().write_bytes(0, size) };
        }
        return Some(p);
    }
    layer.alloc(pages, align).ok()
}

fn take(pages: usize) -> Option<NonNull<u8>> {
    let mut c = CACHE.lock();
    let i = c.blocks[..c.len].iter().rposition(|&(_, n)| n == pages)?;
    let (addr, n) = c.blocks[i];
    let len = c.len;
    c.blocks.copy_within(i + 1..len, i);
    c.len -= 1;
    c.bytes -= n;
    NonNull::new(addr as *mut u8)
}

/// Frees a block from [`alloc`] of `size` bytes.
///
/// # Errors
///
/// [`KmemError::BadFree`] if `[ptr, ptr + size)` is not a live large block.
///
/// # Safety
///
/// The caller does not use the block again.
pub(crate) unsafe fn free(ptr: NonNull<u8>, size: usize) -> Result<(), KmemError> {
    let layer = PageLayer::global();
    let pages = block_size(size).unwrap_or(size);
    if pages > MAX_BYTES / 4 {
        // SAFETY: forwarded; the layer checks the range.
        return unsafe { layer.free(ptr, pages) };
    }
    layer.retag(ptr, pages, NO_OWNER, CACHED)?;
    let evicted = {
        let mut c = CACHE.lock();
        let mut out = [(0usize, 0usize); SLOTS];
        let mut k = 0;
        while c.len == SLOTS || c.bytes + pages > MAX_BYTES {
            out[k] = c.blocks[0];
            k += 1;
            c.bytes -= c.blocks[0].1;
            let len = c.len;
            c.blocks.copy_within(1..len, 0);
            c.len -= 1;
        }
        let len = c.len;
        c.blocks[len] = (ptr.as_ptr() as usize, pages);
        c.len += 1;
        c.bytes += pages;
        (out, k)
    };
    let (out, k) = evicted;
    out[..k].iter().for_each(|&(a, n)| release(layer, a, n));
    Ok(())
}

fn release(layer: &PageLayer, addr: usize, pages: usize) {
    let Some(p) = NonNull::new(addr as *mut u8) else {
        return;
    };
    let r = layer.retag(p, pages, CACHED, NO_OWNER);
    debug_assert!(r.is_ok(), "{r:?}");
    // SAFETY: a cached block nobody else can reach.
    let r = unsafe { layer.free(p, pages) };
    debug_assert!(r.is_ok(), "{r:?}");
}

/// Gives every cached block back to the page layer (and so to the OS);
/// returns how many.
pub(crate) fn flush() -> usize {
    let (blocks, n) = {
        let mut c = CACHE.lock();
        let out = (c.blocks, c.len);
        c.len = 0;
        c.bytes = 0;
        out
    };
    let layer = PageLayer::global();
    blocks[..n].iter().for_each(|&(a, p)| release(layer, a, p));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_four_steps_per_doubling() {
        let page = page_size();
        assert_eq!(block_size(1), Some(page));
        assert_eq!(block_size(4 * page), Some(4 * page));
        // (128, 256] pages: steps of 32 pages.
        assert_eq!(block_size(129 * page), Some(160 * page));
        assert_eq!(block_size(160 * page), Some(160 * page));
        assert_eq!(block_size(161 * page - 7), Some(192 * page));
        assert_eq!(block_size(usize::MAX), None);
        for n in 1..2000 {
            let b = block_size(n * page).unwrap();
            assert!(
                b >= n * page && b <= n * page + n * page / 4,
                "{n} pages -> {b}"
            );
        }
    }

    /// Part of the test below: another test's flush must not run between
    /// the free and the allocation.
    fn a_freed_block_serves_a_nearby_size() {
        let page = page_size();
        let p = alloc(130 * page, 8, false).unwrap();
        // SAFETY: 130 pages of ours.
        unsafe { p.as_ptr().write_bytes(0x5a, 130 * page) };
        // SAFETY: freed once, with its size.
        unsafe { free(p, 130 * page).unwrap() };
        let q = alloc(150 * page + 1, 8, true).unwrap();
        assert_eq!(q, p, "the cached 160-page block serves 150 pages");
        // SAFETY: asked for zeroed.
        let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), 150 * page + 1) };
        assert!(bytes.iter().all(|&b| b == 0));
        // SAFETY: freed once, with its size.
        unsafe { free(q, 150 * page + 1).unwrap() };
    }

    #[test]
    fn blocks_are_reused_bounded_and_flushed() {
        a_freed_block_serves_a_nearby_size();
        let size = 300 << 10;
        let p = alloc(size, 8, false).unwrap();
        // SAFETY: `size` bytes of ours.
        unsafe { p.as_ptr().write_bytes(0xab, size) };
        // SAFETY: freed once; the block goes to the cache.
        unsafe { free(p, size).unwrap() };
        // SAFETY: a second free of the cached block is refused.
        let again = unsafe { free(p, size) };
        assert!(again.is_err(), "double free of a cached block is caught");
        let q = alloc(size, 8, true).unwrap();
        // SAFETY: `size` bytes of ours, asked for zeroed.
        let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), size) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "a reused block comes back zeroed"
        );
        // SAFETY: freed once.
        unsafe { free(q, size).unwrap() };
        assert!(CACHE.lock().bytes <= MAX_BYTES && CACHE.lock().len <= SLOTS);
        flush();
        assert_eq!(CACHE.lock().len, 0);
        assert_eq!(CACHE.lock().bytes, 0);
    }
}
