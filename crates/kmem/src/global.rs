//! [`Kmem`]: the allocator as a Rust `GlobalAlloc`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use crate::alloc::{alloc_aligned, class_free, large_alloc, large_free, owner_class, reap_classes};
use crate::sizes::class_for;
use crate::stats::CacheStats;

/// The kmem allocator as a global allocator.
///
/// ```no_run
/// #[global_allocator]
/// static A: kmem::Kmem = kmem::Kmem::new();
///
/// fn main() {
///     let v: Vec<u64> = (0..1000).collect();
///     assert_eq!(v.iter().sum::<u64>(), 499_500);
///     print!("{}", kmem::stats::Table(&A.stats()));
/// }
/// ```
///
/// Small requests (up to 128 KiB, at alignments the size classes give) go
/// through the calling thread's magazines to the `kmem_alloc_<size>`
/// caches; larger or more aligned ones to the page layer, which hands out
/// zero-filled pages, so [`alloc_zeroed`](GlobalAlloc::alloc_zeroed) writes
/// nothing for them (only a block reused from the small cache of recently
/// freed large blocks is cleared). [`realloc`](GlobalAlloc::realloc) keeps the block when
/// the new size falls in the same class (or the same number of pages).
///
/// All `Kmem` values share one process-wide state, created on first use.
/// Its metadata comes from the page layer's own heap, never from the global
/// allocator, so it can sit under `#[global_allocator]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kmem;

impl Kmem {
    /// The allocator handle (usable in a `static`).
    pub const fn new() -> Self {
        Kmem
    }

    /// Statistics rows for every size class in use and every live
    /// [`Cache`](crate::Cache).
    pub fn stats(&self) -> Vec<CacheStats> {
        crate::stats::caches()
    }

    /// Gives memory back to the OS: depot magazines beyond the working set
    /// and empty slabs of every size class (`kmem_reap`). Returns the slabs
    /// freed.
    pub fn reap(&self) -> usize {
        reap_classes(false)
    }

    /// Like [`reap`](Self::reap), but first returns every magazine round of
    /// the depots and of the calling thread (`kmem_cache_magazine_purge` on
    /// every class).
    pub fn purge(&self) -> usize {
        reap_classes(true)
    }
}

/// Reports a broken `dealloc` contract and aborts: a global allocator must
/// not unwind, and going on would corrupt the heap.
#[cold]
fn die(what: &str, ptr: *mut u8, layout: Layout) -> ! {
    let msg = format!(
        "kmem: {what}: dealloc({ptr:p}, size {}, align {})\n",
        layout.size(),
        layout.align()
    );
    // SAFETY: writing a valid buffer to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

// SAFETY: blocks come from the class caches or the page layer, are at least
// `layout.size()` bytes, aligned to `layout.align()` (class_for only picks
// classes whose natural alignment suffices; the page layer aligns
// explicitly), and stay valid until dealloc.
unsafe impl GlobalAlloc for Kmem {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match alloc_aligned(layout.size().max(1), layout.align()) {
            Some(p) => p.as_ptr(),
            None => ptr::null_mut(),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(p) = NonNull::new(ptr) else { return };
        let size = layout.size().max(1);
        match (class_for(size, layout.align()), owner_class(p)) {
            (Some(c), Some(Some(o))) if c == o => class_free(c, p, size),
            (None, Some(None)) => {
                // SAFETY: a page-layer block of this size; the caller is done with it.
                if unsafe { large_free(p, size, layout.align()) }.is_err() {
                    die("bad free of a page-layer block", ptr, layout);
                }
            }
            (_, None) => die("pointer not allocated by kmem", ptr, layout),
            _ => die("layout does not match the allocation", ptr, layout),
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size().max(1);
        if class_for(size, layout.align()).is_none() {
            // Fresh page-layer blocks are zero already; cached ones are cleared.
            return large_alloc(size, layout.align(), true)
                .map_or(ptr::null_mut(), NonNull::as_ptr);
        }
        let Some(p) = alloc_aligned(size, layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: `size` bytes of ours.
        unsafe { p.as_ptr().write_bytes(0, size) };
        p.as_ptr()
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (layout.size().max(1), new_size.max(1));
        let same = match (
            class_for(old, layout.align()),
            class_for(new, layout.align()),
        ) {
            (Some(a), Some(b)) => a == b,
            (None, None) => kmem_sys::round_to_pages(old) == kmem_sys::round_to_pages(new),
            _ => false,
        };
        // KMEM_DEBUG keeps the requested size in the buffer's tag: move.
        if same && !crate::debug::classes_debug() {
            return ptr;
        }
        // SAFETY: the new layout keeps the (valid) alignment; size checked non-zero.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new, layout.align()) };
        // SAFETY: forwarding the caller's contract.
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; copy the smaller size.
            unsafe {
                ptr::copy_nonoverlapping(ptr, q, old.min(new));
                self.dealloc(ptr, layout);
            }
        }
        q
    }
}
