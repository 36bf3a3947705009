//! Metadata memory that never touches the global allocator.
//!
//! Everything the allocator keeps about itself — vmem boundary tags and hash
//! tables, off-page slab headers, magazines, per-CPU arrays — is allocated
//! through [`Meta`], an `allocator_api2` allocator. illumos keeps such
//! bookkeeping in kmem caches of its own (`kmem_slab_cache`,
//! `kmem_bufctl_cache`, the magazine caches) and bootstraps them from a static
//! reserve; here the bootstrap problem is solved more simply: metadata comes
//! from power-of-two free lists carved out of 64 KiB chunks mapped straight
//! from the OS, and requests above 4 KiB are mapped whole. Nothing on this
//! path calls the global allocator or the page layer, so `Kmem` can sit under
//! `#[global_allocator]` and its own page layer can keep its tags here.
//!
//! Small chunks are never unmapped (metadata is long-lived and recycled
//! through the free lists); large blocks are unmapped on free.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use allocator_api2::alloc::{AllocError, Allocator};
use kmem_sys::sync::Mutex;
use kmem_sys::{OsPages, PageSource, page_size, round_to_pages};

/// Smallest block: room for the free-list link and then some.
const MIN_SHIFT: u32 = 4;
/// Largest block carved from chunks; larger requests are mapped whole.
const MAX_SMALL: usize = 4096;
const NUM_LISTS: usize = (MAX_SMALL.trailing_zeros() - MIN_SHIFT + 1) as usize;
/// Bytes mapped at a time to carve small blocks from.
const CHUNK: usize = 64 * 1024;

struct FreeBlock {
    next: Option<NonNull<FreeBlock>>,
}

struct List {
    head: Option<NonNull<FreeBlock>>,
    /// Uncarved tail of the current chunk: `[cursor, end)`.
    cursor: usize,
    end: usize,
}

// SAFETY: the pointers in a list refer to memory owned by the heap, reached
// only with the list's lock held.
unsafe impl Send for List {}

/// The heap behind [`Meta`]. One static instance serves the whole process.
pub struct MetaHeap {
    lists: [Mutex<List>; NUM_LISTS],
    pages: OsPages,
    /// Bytes handed out and not yet freed (rounded to block sizes).
    in_use: AtomicUsize,
}

static HEAP: MetaHeap = MetaHeap::new();

impl MetaHeap {
    const fn new() -> Self {
        MetaHeap {
            lists: [const {
                Mutex::new(List {
                    head: None,
                    cursor: 0,
                    end: 0,
                })
            }; NUM_LISTS],
            pages: OsPages::new(),
            in_use: AtomicUsize::new(0),
        }
    }

    fn alloc(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        let size = layout.size().max(layout.align());
        match list_index(size) {
            Some(i) => self.alloc_small(i),
            None => self.alloc_large(size, layout.align()),
        }
    }

    fn alloc_small(&self, i: usize) -> Result<NonNull<u8>, AllocError> {
        let block = 1usize << (i as u32 + MIN_SHIFT);
        let mut list = self.lists[i].lock();
        let p = if let Some(head) = list.head {
            // SAFETY: `head` is a free block of this list, so it holds a link.
            list.head = unsafe { head.as_ref().next };
            head.cast::<u8>()
        } else {
            if list.cursor == list.end {
                let chunk = self
                    .pages
                    .alloc_pages(CHUNK, CHUNK)
                    .map_err(|_| AllocError)?;
                list.cursor = chunk.as_ptr() as usize;
                list.end = list.cursor + CHUNK;
            }
            let p = list.cursor;
            list.cursor += block;
            // Carved from a live chunk, so never null.
            NonNull::new(p as *mut u8).ok_or(AllocError)?
        };
        self.in_use.fetch_add(block, Ordering::Relaxed);
        Ok(p)
    }

    #[cold]
    fn alloc_large(&self, size: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let len = round_to_pages(size).ok_or(AllocError)?;
        let p = self
            .pages
            .alloc_pages(len, align.max(page_size()))
            .map_err(|_| AllocError)?;
        self.in_use.fetch_add(len, Ordering::Relaxed);
        Ok(p)
    }

    /// # Safety
    /// `ptr` came from `alloc` with this `layout` and is not used again.
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        let size = layout.size().max(layout.align());
        match list_index(size) {
            Some(i) => {
                let block = 1usize << (i as u32 + MIN_SHIFT);
                let mut list = self.lists[i].lock();
                let node = ptr.cast::<FreeBlock>();
                // SAFETY: the block is ours again, at least 16 bytes and
                // aligned to its size, so it can hold the link.
                unsafe { node.as_ptr().write(FreeBlock { next: list.head }) };
                list.head = Some(node);
                self.in_use.fetch_sub(block, Ordering::Relaxed);
            }
            None => {
                // `alloc_large` rounded the same way, so this cannot fail.
                let len = round_to_pages(size).unwrap_or(size);
                // SAFETY: the caller returns exactly one large block of ours.
                unsafe {
                    self.pages
                        .free_pages(ptr, len, layout.align().max(page_size()))
                };
                self.in_use.fetch_sub(len, Ordering::Relaxed);
            }
        }
    }
}

/// Index of the free list whose blocks fit `size` bytes, or `None` for a large
/// block. Blocks are powers of two, so a block of the right size is also
/// aligned to any alignment up to that size (chunks are 64 KiB aligned).
#[inline]
fn list_index(size: usize) -> Option<usize> {
    if size > MAX_SMALL {
        return None;
    }
    let shift = size
        .max(1 << MIN_SHIFT)
        .next_power_of_two()
        .trailing_zeros();
    Some((shift - MIN_SHIFT) as usize)
}

/// The allocator handle for metadata: a zero-sized, copyable reference to the
/// process-wide metadata heap. Pass it to `kmem-vmem`, `kmem-slab` and
/// `kmem-magazine` as their `Allocator` parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta;

impl Meta {
    /// Bytes of metadata in use right now.
    pub fn bytes_in_use() -> usize {
        HEAP.in_use.load(Ordering::Relaxed)
    }

    /// Bytes mapped from the OS for metadata: chunks (in use or on free
    /// lists) plus large blocks.
    pub fn bytes_mapped() -> usize {
        HEAP.pages.bytes_in_use()
    }
}

// SAFETY: blocks are disjoint, live until deallocated, at least `size` bytes
// and aligned to `layout.align()` (power-of-two blocks carved at multiples of
// their size inside 64 KiB-aligned chunks, or whole page-aligned mappings).
unsafe impl Allocator for Meta {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // A dangling, well-aligned pointer: nothing to free later.
            let p = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        let p = HEAP.alloc(layout)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the Allocator contract gives us back one of our blocks.
            unsafe { HEAP.free(ptr, layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::vec::Vec;

    #[test]
    fn blocks_fit_their_layouts() {
        assert_eq!(list_index(1), Some(0));
        assert_eq!(list_index(16), Some(0));
        assert_eq!(list_index(17), Some(1));
        assert_eq!(list_index(4096), Some(NUM_LISTS - 1));
        assert_eq!(list_index(4097), None);
        for (size, align) in [
            (1, 1),
            (24, 8),
            (100, 64),
            (3000, 1024),
            (5000, 8),
            (3, 8192),
        ] {
            let l = Layout::from_size_align(size, align).unwrap();
            let p = Meta.allocate(l).unwrap();
            assert_eq!(p.as_ptr() as *mut u8 as usize % align, 0, "{size}/{align}");
            // SAFETY: just allocated with `l`; writing its bytes is in bounds.
            unsafe {
                p.cast::<u8>().as_ptr().write_bytes(0xa5, size);
                Meta.deallocate(p.cast(), l);
            }
        }
    }

    #[test]
    fn freed_blocks_are_reused_and_counted() {
        // A private heap, so other tests cannot disturb the figures.
        let heap = MetaHeap::new();
        let l = Layout::from_size_align(48, 8).unwrap();
        let a = heap.alloc(l).unwrap();
        assert_eq!(
            heap.in_use.load(Ordering::Relaxed),
            64,
            "48 bytes take a 64-byte block"
        );
        assert_eq!(heap.pages.bytes_in_use(), CHUNK, "one chunk mapped");
        // SAFETY: `a` came from `alloc(l)` and is not used again.
        unsafe { heap.free(a, l) };
        assert_eq!(heap.in_use.load(Ordering::Relaxed), 0);
        let b = heap.alloc(l).unwrap();
        assert_eq!(a, b, "the freed block is reused first");
        let big = Layout::from_size_align(10_000, 8).unwrap();
        let c = heap.alloc(big).unwrap();
        assert_eq!(
            heap.in_use.load(Ordering::Relaxed),
            64 + 12_288,
            "large blocks are whole pages"
        );
        // SAFETY: both came from `alloc` with these layouts.
        unsafe {
            heap.free(c, big);
            heap.free(b, l);
        }
        assert_eq!(heap.in_use.load(Ordering::Relaxed), 0);
        assert_eq!(
            heap.pages.bytes_in_use(),
            CHUNK,
            "large blocks are unmapped, chunks kept"
        );
    }

    #[test]
    fn containers_work_on_meta() {
        let mut v: Vec<u64, Meta> = Vec::new_in(Meta);
        for i in 0..10_000 {
            v.push(i);
        }
        assert_eq!(v.iter().sum::<u64>(), 10_000 * 9_999 / 2);
        let mut m = hashbrown::HashMap::new_in(Meta);
        for i in 0..1000u32 {
            m.insert(i, i * 2);
        }
        assert_eq!(m[&999], 1998);
    }

    #[test]
    fn concurrent_use_keeps_blocks_disjoint() {
        std::thread::scope(|s| {
            for t in 0..4u8 {
                s.spawn(move || {
                    let l = Layout::from_size_align(32, 8).unwrap();
                    let mut held = std::vec::Vec::new();
                    for _ in 0..2000 {
                        let p = Meta.allocate(l).unwrap().cast::<u8>();
                        // SAFETY: a fresh 32-byte block owned by this thread.
                        unsafe { p.as_ptr().write_bytes(t, 32) };
                        held.push(p);
                    }
                    for p in held {
                        // SAFETY: still ours; no other thread wrote it.
                        let ok = unsafe { core::slice::from_raw_parts(p.as_ptr(), 32) }
                            .iter()
                            .all(|&b| b == t);
                        assert!(ok, "block {p:?} was overwritten by another thread");
                        // SAFETY: allocated above with `l`.
                        unsafe { Meta.deallocate(p, l) };
                    }
                });
            }
        });
    }
}
