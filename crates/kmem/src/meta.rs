//! Metadata memory that never touches the global allocator.
//!
//! Everything the allocator keeps about itself — vmem boundary tags and hash
//! tables, off-page slab headers, magazines, per-CPU arrays — is allocated
//! through [`Meta`], an `allocator_api2` allocator. illumos keeps such
//! bookkeeping in kmem caches of its own (`kmem_slab_cache`,
//! `kmem_bufctl_cache`, the magazine caches) and bootstraps them from a static
//! reserve; here the bootstrap problem is solved more simply: metadata comes
//! from segregated free lists carved out of 64 KiB chunks mapped straight
//! from the OS, and requests above 4 KiB are mapped whole. Nothing on this
//! path calls the global allocator or the page layer, so `Kmem` can sit under
//! `#[global_allocator]` and its own page layer can keep its tags here.
//!
//! Block sizes are 16, 32, 48 and 64 bytes, then four steps per power of two
//! (80, 96, 112, 128, 160, …, 3584, 4096), like the seeds' own
//! `kmem_alloc_sizes`: power-of-two blocks alone wasted 43% of every
//! 143-round magazine (1 176 bytes in a 2 KiB block), and magazines are most
//! of the metadata of a heap whose freed buffers sit in the depots — a
//! cached 16-byte buffer cost 14 bytes of magazine instead of 8. A block is
//! carved at a multiple of its size in a 64 KiB-aligned chunk, so it is
//! aligned to the largest power of two dividing its size; a request goes to
//! the smallest block that is both big and aligned enough.
//!
//! Chunks are cut from 1 MiB regions (one `mmap` per 16 chunks) and never
//! unmapped (metadata is long-lived and recycled through the free lists);
//! no lock is held while a region is mapped. Large blocks are their own
//! mappings: unmapped on free, and grown or shrunk in place or moved by
//! `mremap` (no copy, and the pages already touched stay resident rather
//! than faulting in again at a new address), which is how the slab hashes
//! and the page layer's smaller tag arrays grow (`kmem-vmem` moves a tag
//! array of 2 MiB or more to a fresh block instead, since a block moved by
//! `mremap` loses its transparent huge pages).

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use allocator_api2::alloc::{AllocError, Allocator};
use kmem_sys::sync::Mutex;
use kmem_sys::{OsPages, PageSource, page_size, round_to_pages};

/// Largest block carved from chunks; larger requests are mapped whole.
const MAX_SMALL: usize = 4096;
/// Block sizes of the free lists, smallest first.
const SIZES: [usize; 28] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
];
const NUM_LISTS: usize = SIZES.len();
/// Bytes a free list carves blocks from at a time.
const CHUNK: usize = 64 * 1024;
/// Bytes mapped at a time to cut chunks from: one `mmap` (and the `munmap`
/// of its alignment slack) per 16 chunks rather than per chunk. Pages are
/// resident only once carved, so the uncut rest costs address space only.
const REGION: usize = 16 * CHUNK;

/// The alignment every block of `size` bytes has: chunks are `CHUNK`-aligned
/// and blocks sit at multiples of their size.
const fn natural_align(size: usize) -> usize {
    1 << size.trailing_zeros()
}

struct FreeBlock {
    next: Option<NonNull<FreeBlock>>,
}

struct List {
    head: Option<NonNull<FreeBlock>>,
    /// Uncarved tail of the current chunk: `[cursor, end)`. Pointers, not
    /// addresses: blocks carved from them keep the region's provenance, so
    /// Miri sees every block, free or not, as reachable from the heap.
    cursor: *mut u8,
    end: *mut u8,
}

// SAFETY: the pointers in a list refer to memory owned by the heap, reached
// only with the list's lock held.
unsafe impl Send for List {}

impl List {
    /// A block of `block` bytes from the free list or the current chunk.
    fn take(&mut self, block: usize) -> Option<NonNull<u8>> {
        if let Some(head) = self.head {
            // SAFETY: `head` is a free block of this list, so it holds a link.
            self.head = unsafe { head.as_ref().next };
            return Some(head.cast());
        }
        if self.end.addr() - self.cursor.addr() < block {
            return None;
        }
        let p = self.cursor;
        // Stays inside the chunk (or one past it): checked above.
        self.cursor = p.wrapping_add(block);
        // Carved from a live chunk, so never null.
        NonNull::new(p)
    }
}

/// The uncut rest of the current region: `[cursor, end)`.
struct Region {
    cursor: *mut u8,
    end: *mut u8,
}

// SAFETY: the pointers refer to memory owned by the heap, reached only with
// the region's lock held.
unsafe impl Send for Region {}

/// The heap behind [`Meta`]. One static instance serves the whole process.
pub struct MetaHeap {
    lists: [Mutex<List>; NUM_LISTS],
    /// Uncut rest of the current region.
    region: Mutex<Region>,
    /// Chunks and large blocks.
    pages: OsPages,
    /// Bytes handed out and not yet freed (rounded to block sizes).
    in_use: AtomicUsize,
}

static HEAP: MetaHeap = MetaHeap::new();

/// How a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// From free list `i`.
    Small(usize),
    /// A mapping of its own, `len` bytes (whole pages), resizable with
    /// `mremap` when `movable` (page alignment suffices).
    Large { len: usize, movable: bool },
}

/// How a block of `layout` is served, or `None` if its size overflows.
#[inline]
fn kind(layout: Layout) -> Option<Kind> {
    let (size, align) = (layout.size(), layout.align());
    if size <= MAX_SMALL
        && let Some(i) = list_index(size, align)
    {
        return Some(Kind::Small(i));
    }
    Some(Kind::Large {
        len: round_to_pages(size)?,
        movable: align <= page_size(),
    })
}

impl MetaHeap {
    const fn new() -> Self {
        MetaHeap {
            lists: [const {
                Mutex::new(List {
                    head: None,
                    cursor: core::ptr::null_mut(),
                    end: core::ptr::null_mut(),
                })
            }; NUM_LISTS],
            region: Mutex::new(Region {
                cursor: core::ptr::null_mut(),
                end: core::ptr::null_mut(),
            }),
            pages: OsPages::new(),
            in_use: AtomicUsize::new(0),
        }
    }

    fn alloc(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        match kind(layout).ok_or(AllocError)? {
            Kind::Small(i) => self.alloc_small(i),
            Kind::Large { len, .. } => self.alloc_large(len, layout.align()),
        }
    }

    fn alloc_small(&self, i: usize) -> Result<NonNull<u8>, AllocError> {
        let block = SIZES[i];
        if let Some(p) = self.lists[i].lock().take(block) {
            self.in_use.fetch_add(block, Ordering::Relaxed);
            return Ok(p);
        }
        // Get a chunk without the list's lock: other threads keep using the
        // list meanwhile (mapping a region takes microseconds).
        let chunk = self.chunk()?;
        let mut list = self.lists[i].lock();
        // Another thread may have freed a block or mapped a chunk for this
        // list meanwhile; the fresh chunk replaces the current tail either
        // way (an abandoned tail was never touched, so it is address space
        // only, and such races are rare).
        list.cursor = chunk.as_ptr();
        list.end = chunk.as_ptr().wrapping_add(CHUNK);
        let p = list.take(block).ok_or(AllocError)?;
        drop(list);
        self.in_use.fetch_add(block, Ordering::Relaxed);
        Ok(p)
    }

    /// A fresh `CHUNK`-aligned chunk, cut from the current region or a new
    /// one. No lock is held while a region is mapped; a region mapped by
    /// two threads at once leaves the loser's rest uncut (never touched).
    #[cold]
    fn chunk(&self) -> Result<NonNull<u8>, AllocError> {
        {
            let mut r = self.region.lock();
            if r.end.addr() - r.cursor.addr() >= CHUNK
                && let Some(c) = NonNull::new(r.cursor)
            {
                // Stays inside the region (or one past it): checked above.
                r.cursor = r.cursor.wrapping_add(CHUNK);
                return Ok(c);
            }
        }
        let base = self
            .pages
            .alloc_pages(REGION, CHUNK)
            .map_err(|_| AllocError)?;
        // Blocks given back are re-derived from this (`free`).
        base.expose_provenance();
        *self.region.lock() = Region {
            cursor: base.as_ptr().wrapping_add(CHUNK),
            end: base.as_ptr().wrapping_add(REGION),
        };
        Ok(base)
    }

    #[cold]
    fn alloc_large(&self, len: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let p = self.pages.alloc_pages(len, align).map_err(|_| AllocError)?;
        // Blocks given back are re-derived from this (`free`, `resize`).
        p.expose_provenance();
        self.in_use.fetch_add(len, Ordering::Relaxed);
        Ok(p)
    }

    /// # Safety
    /// `ptr` came from `alloc` (or `resize`) with this `layout` and is not
    /// used again.
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // The free list hands the block on whole.
        let ptr = crate::provenance::rederive(ptr);
        // `alloc` computed the same kind, so this cannot fail.
        let Some(k) = kind(layout) else { return };
        match k {
            Kind::Small(i) => {
                let mut list = self.lists[i].lock();
                let node = ptr.cast::<FreeBlock>();
                // SAFETY: the block is ours again, at least 16 bytes and
                // 16-byte aligned, so it can hold the link.
                unsafe { node.as_ptr().write(FreeBlock { next: list.head }) };
                list.head = Some(node);
                drop(list);
                self.in_use.fetch_sub(SIZES[i], Ordering::Relaxed);
            }
            Kind::Large { len, .. } => {
                // SAFETY: the caller returns exactly one large block of ours.
                unsafe { self.pages.free_pages(ptr, len, layout.align()) };
                self.in_use.fetch_sub(len, Ordering::Relaxed);
            }
        }
    }

    /// Resizes a large, page-aligned block to `new` in place or by moving
    /// its pages (`mremap`), if both layouts are of that kind; `None` (and
    /// nothing changed) otherwise or when the kernel refuses, so that the
    /// caller copies.
    ///
    /// # Safety
    /// `ptr` came from `alloc` with `old`; on `Some` it is not used again.
    unsafe fn resize(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Option<NonNull<u8>> {
        let (
            Kind::Large {
                len: old_len,
                movable: true,
            },
            Kind::Large {
                len: new_len,
                movable: true,
            },
        ) = (kind(old)?, kind(new)?)
        else {
            return None;
        };
        // The caller goes on to the new size through what we return, so
        // it must not be the caller's pointer, whose provenance may cover
        // less than the block: even with the page count unchanged the
        // block goes through `resize_pages` (`mremap` to the same size
        // changes nothing), whose result is a pointer of the mapping's own.
        let ptr = crate::provenance::rederive(ptr);
        // SAFETY: a movable large block is one whole page-aligned
        // allocation of `old_len` bytes from `pages` (earlier resizes kept
        // it so); on success the Allocator contract retires `ptr`.
        let q = unsafe { self.pages.resize_pages(ptr, old_len, new_len) }.ok()?;
        // It may have moved: as in `alloc_large`.
        q.expose_provenance();
        if new_len > old_len {
            self.in_use.fetch_add(new_len - old_len, Ordering::Relaxed);
        } else {
            self.in_use.fetch_sub(old_len - new_len, Ordering::Relaxed);
        }
        Some(q)
    }
}

/// Index of the free list whose blocks fit `size` bytes at `align`, or
/// `None` if no block up to [`MAX_SMALL`] does.
#[inline]
fn list_index(size: usize, align: usize) -> Option<usize> {
    let first = SIZES.partition_point(|&s| s < size);
    (first..NUM_LISTS).find(|&i| natural_align(SIZES[i]) >= align)
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

    /// Bytes mapped from the OS for metadata: regions (chunks in use, on
    /// free lists or not yet cut) plus large blocks.
    pub fn bytes_mapped() -> usize {
        HEAP.pages.bytes_in_use()
    }
}

// SAFETY: blocks are disjoint, live until deallocated, at least `size` bytes
// and aligned to `layout.align()` (blocks carved at multiples of their size
// inside 64 KiB-aligned chunks, of a size whose natural alignment covers the
// request, or whole page-aligned mappings); `grow`/`shrink` keep the
// contents up to the smaller size (`mremap` moves the pages themselves, the
// defaults copy) and leave the old block valid when they fail.
unsafe impl Allocator for Meta {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // A dangling, well-aligned pointer: nothing to free later.
            let p = NonNull::new(core::ptr::without_provenance_mut(layout.align()))
                .ok_or(AllocError)?;
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

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's block and layouts (new.size() >= old.size()).
        unsafe { self.resize(ptr, old, new, false) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: as for `grow`.
        unsafe { self.resize(ptr, old, new, true) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's block and layouts (new.size() <= old.size()).
        unsafe { self.resize(ptr, old, new, false) }
    }
}

impl Meta {
    /// `grow`, `grow_zeroed` and `shrink`: `mremap` for large page-aligned
    /// blocks, else a new block, a copy of the smaller size and a free.
    ///
    /// # Safety
    /// `ptr` is a live block of ours allocated with `old`; `new.align()`
    /// equals `old.align()` or the Allocator contract's rules hold.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() != 0
            && new.size() != 0
            // SAFETY: forwarded.
            && let Some(q) = unsafe { HEAP.resize(ptr, old, new) }
        {
            // Pages `mremap` adds are fresh anonymous memory, zero already;
            // only the tail of the old last page may hold old bytes.
            if zero && new.size() > old.size() {
                let end = round_to_pages(old.size())
                    .unwrap_or(old.size())
                    .min(new.size());
                // SAFETY: `[old.size(), end)` lies inside the resized block.
                unsafe { q.as_ptr().add(old.size()).write_bytes(0, end - old.size()) };
            }
            return Ok(NonNull::slice_from_raw_parts(q, new.size()));
        }
        let q = if zero {
            self.allocate_zeroed(new)?
        } else {
            self.allocate(new)?
        };
        // SAFETY: both blocks are live and distinct; copy the smaller size,
        // then give the old block back.
        unsafe {
            core::ptr::copy_nonoverlapping(
                ptr.as_ptr(),
                q.cast::<u8>().as_ptr(),
                old.size().min(new.size()),
            );
            self.deallocate(ptr, old);
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::vec::Vec;

    #[test]
    fn blocks_fit_their_layouts() {
        assert_eq!(list_index(1, 1), Some(0));
        assert_eq!(list_index(16, 8), Some(0));
        assert_eq!(list_index(17, 8), Some(1));
        assert_eq!(SIZES[list_index(40, 8).unwrap()], 48);
        assert_eq!(
            SIZES[list_index(40, 32).unwrap()],
            64,
            "48 is only 16-aligned"
        );
        assert_eq!(SIZES[list_index(1000, 8).unwrap()], 1024);
        assert_eq!(list_index(4096, 8), Some(NUM_LISTS - 1));
        assert_eq!(list_index(4097, 8), None);
        assert_eq!(list_index(16, 8192), None);
        for w in SIZES.windows(2) {
            assert!(w[0] < w[1] && w[1] <= w[0] * 2, "{w:?}");
            assert!(CHUNK.is_multiple_of(natural_align(w[1])));
        }
        for (size, align) in [
            (1, 1),
            (24, 8),
            (40, 16),
            (100, 64),
            (1176, 64),
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
        // A private heap, so other tests cannot disturb the figures; a
        // static, as heaps never unmap their chunks (Miri would call them
        // leaked).
        static PRIVATE: MetaHeap = MetaHeap::new();
        let heap = &PRIVATE;
        let l = Layout::from_size_align(40, 8).unwrap();
        let a = heap.alloc(l).unwrap();
        assert_eq!(
            heap.in_use.load(Ordering::Relaxed),
            48,
            "40 bytes take a 48-byte block"
        );
        assert_eq!(heap.pages.bytes_in_use(), REGION, "one region mapped");
        // SAFETY: `a` came from `alloc(l)` and is not used again.
        unsafe { heap.free(a, l) };
        assert_eq!(heap.in_use.load(Ordering::Relaxed), 0);
        let b = heap.alloc(l).unwrap();
        assert_eq!(a, b, "the freed block is reused first");
        let big = Layout::from_size_align(10_000, 8).unwrap();
        let c = heap.alloc(big).unwrap();
        assert_eq!(
            heap.in_use.load(Ordering::Relaxed),
            48 + 12_288,
            "large blocks are whole pages"
        );
        assert_eq!(heap.pages.bytes_in_use(), REGION + 12_288);
        // SAFETY: both came from `alloc` with these layouts.
        unsafe {
            heap.free(c, big);
            heap.free(b, l);
        }
        assert_eq!(heap.in_use.load(Ordering::Relaxed), 0);
        assert_eq!(
            heap.pages.bytes_in_use(),
            REGION,
            "large blocks are unmapped, chunks kept"
        );
        // Other lists cut their chunks from the same region.
        let blocks: std::vec::Vec<_> = [16, 100, 1000, 4000]
            .map(|n| {
                (
                    heap.alloc(Layout::from_size_align(n, 8).unwrap()).unwrap(),
                    n,
                )
            })
            .into();
        assert_eq!(heap.pages.bytes_in_use(), REGION, "still one region");
        for (p, n) in blocks {
            // SAFETY: allocated above with this layout.
            unsafe { heap.free(p, Layout::from_size_align(n, 8).unwrap()) };
        }
    }

    #[test]
    fn magazines_waste_little() {
        // A 143-round magazine of pointers: a 32-byte header and 1 144
        // bytes of rounds, 64-byte aligned. A power-of-two heap gave it
        // 2 KiB; every cached buffer then cost 14 bytes of metadata.
        for rounds in [15, 31, 47, 63, 95, 143] {
            let size = 32 + rounds * 8;
            let block = SIZES[list_index(size, 64).unwrap()];
            assert!(
                block - size <= size / 3,
                "{rounds} rounds ({size} bytes) take a {block}-byte block"
            );
        }
        // Private and static, as above.
        static PRIVATE: MetaHeap = MetaHeap::new();
        let heap = &PRIVATE;
        let l = Layout::from_size_align(32 + 143 * 8, 64).unwrap();
        let a = heap.alloc(l).unwrap();
        let b = heap.alloc(l).unwrap();
        assert_eq!(a.as_ptr() as usize % 64, 0);
        assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 1280);
        // SAFETY: both came from `alloc(l)`.
        unsafe {
            heap.free(a, l);
            heap.free(b, l);
        }
    }

    /// Minor faults of the calling thread so far.
    fn minor_faults() -> i64 {
        // SAFETY: getrusage fills the struct we pass.
        unsafe {
            let mut u: libc::rusage = core::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut u);
            u.ru_minflt
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "counts minor page faults with getrusage, which Miri cannot call"
    )]
    fn large_blocks_grow_without_copying() {
        let mib = 1 << 20;
        let old = Layout::from_size_align(mib, 8).unwrap();
        let p = Meta.allocate(old).unwrap().cast::<u8>();
        // SAFETY: `mib` bytes of ours.
        unsafe {
            for i in (0..mib).step_by(page_size()) {
                p.as_ptr().add(i).write((i / page_size()) as u8);
            }
        }
        let before = minor_faults();
        let new = Layout::from_size_align(2 * mib, 8).unwrap();
        // SAFETY: `p` was allocated with `old`; the new size is larger.
        let q = unsafe { Meta.grow_zeroed(p, old, new) }
            .unwrap()
            .cast::<u8>();
        // SAFETY: the grown block holds `2 * mib` bytes.
        let kept = unsafe {
            (0..mib)
                .step_by(page_size())
                .all(|i| *q.as_ptr().add(i) == (i / page_size()) as u8)
        };
        let faults = minor_faults() - before;
        assert!(kept, "grow lost the contents");
        // A copy faults in every page it writes (256 for the first MiB);
        // moved pages stay resident.
        assert!(faults < 64, "{faults} minor faults: the pages were copied");
        // SAFETY: as above.
        let zero = unsafe { (mib..2 * mib).step_by(512).all(|i| *q.as_ptr().add(i) == 0) };
        assert!(zero, "grow_zeroed left garbage");
        let small = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: `q` is the live grown block; shrinking keeps 100 bytes.
        let r = unsafe { Meta.shrink(q, new, small) }.unwrap().cast::<u8>();
        // SAFETY: 100 bytes of ours, then freed once.
        unsafe {
            assert_eq!(*r.as_ptr().add(4096 % 100), 0);
            assert_eq!(*r.as_ptr(), 0);
            Meta.deallocate(r, small);
        }
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
        // Blocks per thread: enough to cut several chunks; under Miri, whose
        // scheduler interleaves the threads at random points, a few dozen
        // (2000 take it minutes).
        const BLOCKS: usize = if cfg!(miri) { 100 } else { 2000 };
        std::thread::scope(|s| {
            for t in 0..4u8 {
                s.spawn(move || {
                    let l = Layout::from_size_align(32, 8).unwrap();
                    let mut held = std::vec::Vec::new();
                    for _ in 0..BLOCKS {
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

    /// A caller may hand a block back through a pointer whose provenance
    /// covers less than the block (one derived from a reference to a part
    /// of it, as a narrowed `Box` has). The next owner of the block, and a
    /// resize that keeps it in place, must still reach all of it: under
    /// Miri this fails if the heap hands the caller's pointer on.
    #[test]
    fn narrowed_pointers_given_back_do_not_narrow_the_block() {
        let l = Layout::from_size_align(16, 8).unwrap();
        for _ in 0..2 {
            let p = Meta.allocate(l).unwrap().cast::<u8>();
            // SAFETY: `p` holds 16 bytes; the reference covers the first one.
            let narrow = NonNull::from(unsafe { &mut *p.as_ptr() });
            // SAFETY: our block, allocated with `l`, not used again.
            unsafe { Meta.deallocate(narrow, l) };
        }
        let q = Meta.allocate(l).unwrap().cast::<u8>();
        // SAFETY: a fresh 16-byte block.
        unsafe {
            q.as_ptr().write_bytes(1, 16);
            Meta.deallocate(q, l);
        }
        // A large block grown within its last page.
        let old = Layout::from_size_align(5000, 8).unwrap();
        let new = Layout::from_size_align(6000, 8).unwrap();
        let p = Meta.allocate(old).unwrap().cast::<u8>();
        // SAFETY: `p` holds 5000 bytes.
        unsafe { p.as_ptr().add(4999).write(9) };
        // SAFETY: `p` holds 5000 bytes; the slice covers them.
        let narrow =
            NonNull::from(unsafe { &mut *core::ptr::slice_from_raw_parts_mut(p.as_ptr(), 5000) })
                .cast::<u8>();
        // SAFETY: our block, allocated with `old`; 6000 >= 5000.
        let g = unsafe { Meta.grow(narrow, old, new) }.unwrap().cast::<u8>();
        // SAFETY: the grown block holds 6000 bytes, the first 5000 kept.
        unsafe {
            assert_eq!(g.as_ptr().add(4999).read(), 9);
            g.as_ptr().write_bytes(2, 6000);
            Meta.deallocate(g, new);
        }
    }
}
