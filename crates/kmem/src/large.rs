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
//!
//! The bound that matters is [`MAX_BYTES`]; [`SLOTS`] only caps the scan,
//! and is high enough that a full cache of the smallest blocks above the
//! size classes (160 KiB) reaches the byte bound first. Every eviction is a
//! `MADV_DONTNEED` of part of a span the page layer advised for huge pages,
//! which splits that span's huge page: the rest of the span (slabs too) is
//! mapped with 4 KiB pages from then on, and the discarded pages fault back
//! one by one when the range is reused. With 32 slots, mstress (blocks of
//! 160 to 256 KiB, a few hundred live) evicted all the time and split the
//! huge page of nearly every span it used: ~10 000 more minor faults.

use core::ptr::NonNull;

use kmem_sys::sync::Mutex;
use kmem_sys::{page_size, round_to_pages};

use crate::error::KmemError;
use crate::page::{MAX_OWNER, NO_OWNER, PageLayer};

/// Blocks kept at most: enough that [`MAX_BYTES`] binds first for every
/// block above the size classes (64 MiB / 160 KiB = 409).
pub const SLOTS: usize = 512;
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
    // Evict the oldest blocks one at a time until this one fits, releasing
    // each outside the lock (a release is a `madvise` and an arena free).
    loop {
        let oldest = {
            let mut c = CACHE.lock();
            if c.len == 0 || (c.len < SLOTS && c.bytes + pages <= MAX_BYTES) {
                let len = c.len;
                c.blocks[len] = (ptr.as_ptr() as usize, pages);
                c.len += 1;
                c.bytes += pages;
                return Ok(());
            }
            let oldest = c.blocks[0];
            let len = c.len;
            c.blocks.copy_within(1..len, 0);
            c.len -= 1;
            c.bytes -= oldest.1;
            oldest
        };
        release(layer, oldest.0, oldest.1);
    }
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
    let layer = PageLayer::global();
    let mut n = 0;
    // One block a lock: the table is too big to copy out on the stack.
    loop {
        let last = {
            let mut c = CACHE.lock();
            if c.len == 0 {
                return n;
            }
            c.len -= 1;
            let last = c.blocks[c.len];
            c.bytes -= last.1;
            last
        };
        release(layer, last.0, last.1);
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether every byte of `b` is zero, compared a page at a time with a
    /// page of zeroes (`memcmp`, which Miri runs natively: a loop over the
    /// bytes takes minutes there).
    fn all_zero(b: &[u8]) -> bool {
        static ZEROES: [u8; 4096] = [0; 4096];
        b.chunks(ZEROES.len()).all(|c| c == &ZEROES[..c.len()])
    }

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
        assert!(all_zero(bytes));
        // SAFETY: freed once, with its size.
        unsafe { free(q, 150 * page + 1).unwrap() };
    }

    /// Part of the test below: a burst of frees of the smallest blocks
    /// above the classes stays cached whole (each eviction would split a
    /// huge page), and the next burst of allocations takes them all back.
    fn more_blocks_than_the_old_slot_count_stay_cached() {
        let size = crate::sizes::MAX_CACHED + 1;
        let n = 48;
        let blocks: Vec<NonNull<u8>> = (0..n).map(|_| alloc(size, 8, false).unwrap()).collect();
        for &p in &blocks {
            // SAFETY: a live block of `size` bytes, freed once.
            unsafe { free(p, size).unwrap() };
        }
        let pages = block_size(size).unwrap();
        let cached = {
            let c = CACHE.lock();
            c.blocks[..c.len]
                .iter()
                .filter(|&&(a, n)| {
                    n == pages && blocks.contains(&NonNull::new(a as *mut u8).unwrap())
                })
                .count()
        };
        assert_eq!(cached, n, "every freed block is still cached");
        let again: Vec<NonNull<u8>> = (0..n).map(|_| alloc(size, 8, false).unwrap()).collect();
        for q in &again {
            assert!(
                blocks.contains(q),
                "block {q:p} did not come from the cache"
            );
        }
        for &q in &again {
            // SAFETY: a live block of `size` bytes, freed once.
            unsafe { free(q, size).unwrap() };
        }
    }

    #[test]
    fn the_byte_bound_binds_before_the_slot_count() {
        let smallest = block_size(crate::sizes::MAX_CACHED + 1).unwrap();
        assert!(SLOTS * smallest >= MAX_BYTES, "{SLOTS} slots of {smallest}");
    }

    #[test]
    fn blocks_are_reused_bounded_and_flushed() {
        a_freed_block_serves_a_nearby_size();
        more_blocks_than_the_old_slot_count_stay_cached();
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
        assert!(all_zero(bytes), "a reused block comes back zeroed");
        // SAFETY: freed once.
        unsafe { free(q, size).unwrap() };
        assert!(CACHE.lock().bytes <= MAX_BYTES && CACHE.lock().len <= SLOTS);
        flush();
        assert_eq!(CACHE.lock().len, 0);
        assert_eq!(CACHE.lock().bytes, 0);
    }
}
