//! [`Kmem`]: the allocator as a Rust `GlobalAlloc`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::time::Duration;

use crate::alloc::{
    alloc_aligned, class_alloc_hit, class_free, class_free_fast, large_alloc, large_free,
    owner_class, reap_classes,
};
use crate::provenance::rederive_raw;
use crate::sizes::{class_for, class_for_nonzero};
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
/// the new size falls in the same class (or the same large block size: a
/// quarter-power-of-two step of pages).
///
/// All `Kmem` values share one process-wide state, created on first use.
/// Its metadata comes from the page layer's own heap, never from the global
/// allocator, so it can sit under `#[global_allocator]`.
///
/// Memory goes back to the OS when the caches are reaped: by [`reap`](Self::reap),
/// [`stats::reap_all`](crate::stats::reap_all), a [`reaper`](crate::reaper)
/// you start, or the one [`with_reaper`](Self::with_reaper) starts itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kmem {
    /// Interval of the process-wide reaper to start on first use, if any.
    reap_interval: Option<Duration>,
}

impl Kmem {
    /// The allocator handle (usable in a `static`), with no reaper: caches
    /// are reaped only when asked.
    pub const fn new() -> Self {
        Kmem {
            reap_interval: None,
        }
    }

    /// The allocator handle with a background reaper that updates the
    /// working sets and reaps every cache each `interval`
    /// ([`reaper::REAP_INTERVAL`](crate::reaper::REAP_INTERVAL), 15 s, is
    /// the seed's `kmem_reap_interval`), started by the first allocation.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// #[global_allocator]
    /// static A: kmem::Kmem = kmem::Kmem::with_reaper(kmem::reaper::REAP_INTERVAL);
    ///
    /// fn main() {
    ///     let burst: Vec<Box<[u8; 100]>> = (0..100_000).map(|_| Box::new([1; 100])).collect();
    ///     drop(burst);
    ///     // Two intervals later the burst's memory is back with the OS.
    ///     std::thread::sleep(2 * kmem::reaper::REAP_INTERVAL + Duration::from_secs(1));
    ///     assert!(kmem::reaper::global_ticks() >= 2);
    /// }
    /// ```
    pub const fn with_reaper(interval: Duration) -> Self {
        Kmem {
            reap_interval: Some(interval),
        }
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

impl Kmem {
    /// Everything [`GlobalAlloc::alloc`] does past a magazine hit: starting
    /// the reaper (a thread's first allocation always gets here, since its
    /// magazines start empty), refilling magazines, and page-layer blocks.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> *mut u8 {
        if let Some(interval) = self.reap_interval {
            crate::reaper::ensure_global(interval);
        }
        match alloc_aligned(layout.size().max(1), layout.align()) {
            Some(p) => p.as_ptr(),
            None => ptr::null_mut(),
        }
    }
}

/// Everything [`GlobalAlloc::dealloc`] does past a magazine hit: full
/// magazines, page-layer blocks, and contract violations (which abort).
/// (It takes the layout's parts in `dealloc`'s argument order, so the fast
/// path jumps here without moving them.)
#[cold]
#[inline(never)]
fn dealloc_slow(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: the parts of the caller's valid layout.
    let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
    let Some(p) = NonNull::new(ptr) else { return };
    let size = size.max(1);
    match (class_for(size, align), owner_class(p)) {
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

/// Reports a broken `dealloc` contract and aborts: a global allocator must
/// not unwind, and going on would corrupt the heap.
#[cold]
fn die(what: &str, ptr: *mut u8, layout: Layout) -> ! {
    fatal(format_args!(
        "kmem: {what}: dealloc({ptr:p}, size {}, align {})\n",
        layout.size(),
        layout.align()
    ))
}

/// Writes `message` to standard error and aborts, without allocating: it
/// runs inside the global allocator, whose state may be what failed (a
/// panic there would allocate to format its message, and unwinding out of
/// an allocator is not allowed). Messages are cut at 255 bytes, and a cut
/// one still ends its line.
#[cold]
pub(crate) fn fatal(message: core::fmt::Arguments<'_>) -> ! {
    /// A fixed buffer that keeps what fits.
    struct Buf {
        bytes: [u8; 256],
        len: usize,
    }
    impl core::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.bytes.len() - self.len);
            self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut buf = Buf {
        bytes: [0; 256],
        len: 0,
    };
    if core::fmt::write(&mut buf, message).is_err() || buf.len == buf.bytes.len() {
        buf.bytes[buf.bytes.len() - 1] = b'\n';
    }
    // SAFETY: writing our own initialised bytes to stderr.
    unsafe { libc::write(2, buf.bytes.as_ptr().cast(), buf.len) };
    std::process::abort()
}

// SAFETY: blocks come from the class caches or the page layer, are at least
// `layout.size()` bytes, aligned to `layout.align()` (class_for only picks
// classes whose natural alignment suffices; the page layer aligns
// explicitly), and stay valid until dealloc.
unsafe impl GlobalAlloc for Kmem {
    /// The fast path is a class lookup (one table load) and a round of this
    /// thread's loaded magazine for the class; the rest is out of line.
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Size 0 (outside the contract) goes the slow way, which rounds it up.
        if let Some(c) = class_for_nonzero(layout.size(), layout.align())
            && let Some(p) = class_alloc_hit(c)
        {
            return p.as_ptr();
        }
        self.alloc_slow(layout)
    }

    /// The fast path checks the layout against the page map's owner tag
    /// (the layout's class must be the block's class) and puts the block in
    /// this thread's loaded magazine; the rest is out of line.
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Whatever reaches a magazine or a slab is handed on whole.
        let ptr = rederive_raw(ptr);
        if let Some(c) = class_for_nonzero(layout.size(), layout.align())
            && class_free_fast(c, ptr)
        {
            return;
        }
        dealloc_slow(ptr, layout.size(), layout.align())
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
            (None, None) => crate::large::block_size(old) == crate::large::block_size(new),
            _ => false,
        };
        // KMEM_DEBUG keeps the requested size in the buffer's tag: move.
        if same && !crate::debug::classes_debug() {
            // The same block, but not the caller's pointer: its provenance
            // may cover only the old size, and the caller goes on to the
            // new size through what we return.
            return rederive_raw(ptr);
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
