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

/// Allocates `size` bytes at `align` from the cache or the page layer;
/// with `zero`, the memory reads as zero.
pub(crate) fn alloc(size: usize, align: usize, zero: bool) -> Option<NonNull<u8>> {
    let layer = PageLayer::global();
    let pages = round_to_pages(size)?;
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
    layer.alloc(size, align).ok()
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
    let pages = round_to_pages(size).unwrap_or(size);
    if pages > MAX_BYTES / 4 {
        // SAFETY: forwarded; the layer checks the range.
        return unsafe { layer.free(ptr, size) };
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
    fn blocks_are_reused_bounded_and_flushed() {
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
