//! [`Vmem`], the public arena: the quantum caches in front of the core
//! (the seed's `vmem_alloc` / `vmem_free` choosing between `qc_cache` and
//! `vmem_xalloc` / `vmem_xfree`).

use core::alloc::Layout;
use core::ptr::NonNull;
use std::time::Duration;

use allocator_api2::alloc::{Allocator, Global};
use kmem_magazine::Mode;

use crate::error::VmemError;
use crate::fit::{Constraints, Policy};
use crate::inner::Core;
use crate::introspect::{self, Dump, Introspect, Summary, Whatis};
use crate::registry;
use crate::source::{ImportWait, NoSource, Source};
use crate::stats::VmemStats;

mod exclusive;

/// A resource arena: hands out ranges of `usize` (addresses, IDs, offsets)
/// in multiples of its quantum. See the [crate docs](crate) for the theory;
/// build one with [`Vmem::builder`].
///
/// `A` is the allocator its metadata comes from, `S` the [`Source`] it
/// imports spans from. Every method takes `&self`, so share an arena
/// between threads with an `Arc`, a reference or a `static`; an owner with
/// `&mut` access can skip the arena lock with the `_mut` twins ([`alloc_mut`](Self::alloc_mut) and others).
pub struct Vmem<A: Allocator + Clone + Send + Sync = Global, S: Source = NoSource> {
    /// The core, allocated from `alloc` at a fixed address because the
    /// quantum caches' backends point at it.
    core: NonNull<Core<A, S>>,
    qshift: u32,
    qcache_max: usize,
    /// Whether code outside this `Vmem`'s methods can reach the core from
    /// other threads: the exit hooks of threads holding per-thread
    /// quantum-cache magazines flush them into the caches' depots, inside
    /// the core, and walkers of the arena list reach a listed core. Then
    /// the `_mut` methods lock as the `&self` ones do. One flag, so the
    /// unlocked fast path tests one byte.
    shared: bool,
    /// Whether the core is on the arena list.
    listed: bool,
    alloc: A,
}

// SAFETY: the core is owned by this value and is `Send` and `Sync` under
// these bounds (its state is behind its lock, its caches are `Sync`).
unsafe impl<A: Allocator + Clone + Send + Sync, S: Source> Send for Vmem<A, S> {}
// SAFETY: as for `Send`: all shared access to the core goes through `&Core`.
unsafe impl<A: Allocator + Clone + Send + Sync, S: Source> Sync for Vmem<A, S> {}

impl<A, S> Vmem<A, S>
where
    A: Allocator + Clone + Send + Sync,
    S: Source,
{
    /// Places `core` in memory from `alloc`, puts `qcache_quanta`
    /// quantum caches in front of it, and puts it on the arena list if
    /// `listed`. The list reaches arenas of any allocator type, so the
    /// allocator must not borrow: a `Vmem` may be leaked without being
    /// dropped, and the list would then reach its tags after their memory
    /// was gone.
    pub(crate) fn new_in(
        core: Core<A, S>,
        (qcache_quanta, qcache_mode): (usize, Mode),
        alloc: A,
        listed: bool,
    ) -> Result<Self, VmemError>
    where
        A: 'static,
    {
        let arena = core.name_raw();
        let no_meta = || VmemError::NoMetadata { arena };
        let qshift = core.quantum().trailing_zeros();
        let ptr = alloc
            .allocate(Layout::new::<Core<A, S>>())
            .map_err(|_| no_meta())?
            .cast::<Core<A, S>>();
        // SAFETY: a fresh allocation with the layout of `Core`.
        unsafe { ptr.as_ptr().write(core) };
        let mut vmem = Vmem {
            core: ptr,
            qshift,
            qcache_max: qcache_quanta << qshift,
            shared: listed,
            listed,
            alloc,
        };
        // SAFETY: nothing else refers to the core yet, so this is the only
        // reference; the caches get the pointer, and `Drop` clears them
        // before it frees the core.
        unsafe {
            (*ptr.as_ptr()).qcaches.fill(
                ptr,
                arena.as_str(),
                qshift,
                qcache_quanta,
                qcache_mode,
            )?;
        }
        vmem.shared |= vmem.core().qcaches.any_per_thread();
        if listed {
            let core = vmem.core();
            // SAFETY: the core stays at this address until `drop` frees it,
            // and `drop` unregisters it first; nothing borrows it mutably
            // meanwhile (`core_mut` refuses while it is listed).
            unsafe { registry::register(&core.node, &core.arena) };
        }
        Ok(vmem)
    }

    #[inline(always)]
    fn core(&self) -> &Core<A, S> {
        // SAFETY: the core is live until `drop` and only shared from here.
        unsafe { self.core.as_ref() }
    }

    /// The arena's name.
    pub fn name(&self) -> &str {
        self.core().name()
    }

    /// The arena's quantum.
    #[inline]
    pub fn quantum(&self) -> usize {
        1 << self.qshift
    }

    /// `size` rounded up to the quantum (`vmem_roundup_size`): the bytes
    /// an allocation of `size` takes from the arena, and that its free
    /// gives back.
    ///
    /// ```
    /// use kmem_vmem::Vmem;
    ///
    /// let pages = Vmem::builder("pages").span(0, 1 << 20).quantum(4096).build()?;
    /// assert_eq!(pages.round_size(1)?, 4096);
    /// assert_eq!(pages.round_size(8192)?, 8192);
    /// assert!(pages.round_size(0).is_err());
    /// # Ok::<(), kmem_vmem::VmemError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`VmemError::InvalidSize`] for 0 and for a size that overflows
    /// when rounded up (the seed's macro wraps around instead), as
    /// [`alloc`](Self::alloc) refuses them.
    pub fn round_size(&self, size: usize) -> Result<usize, VmemError> {
        self.core().round(size)
    }

    /// Allocates `size` bytes (rounded up to the quantum) placed by
    /// `policy`, without waiting (`vmem_alloc(..., M_NOWAIT)`). Sizes up to
    /// `qcache_max` come from the quantum cache of that size, whatever the
    /// policy, unless it is empty and the arena has no room for a new batch.
    ///
    /// # Errors
    ///
    /// [`VmemError::Exhausted`] when no free segment, import, quantum-cache
    /// drain or reclaim can satisfy it; [`VmemError::InvalidSize`] for 0.
    #[inline]
    pub fn alloc(&self, size: usize, policy: Policy) -> Result<usize, VmemError> {
        match self.qcache_alloc(size) {
            Some(x) => Ok(x),
            None => self.core().alloc(size, policy),
        }
    }

    /// Whether `size` is a quantum-cached size (1 to `qcache_max` bytes).
    #[inline(always)]
    fn qcached(&self, size: usize) -> bool {
        size <= self.qcache_max && size != 0
    }

    /// A segment from the quantum cache for `size`, if it has one to give.
    #[inline]
    fn qcache_alloc(&self, size: usize) -> Option<usize> {
        if !self.qcached(size) {
            return None;
        }
        let quanta = (size + self.quantum() - 1) >> self.qshift;
        self.core().qcaches.get(quanta)?.alloc()
    }

    /// Allocates `size` bytes placed within the constraints `c`
    /// (`vmem_xalloc`); see [`Constraints`] for what each field means. It
    /// never uses the quantum caches.
    ///
    /// An arena with a source imports spans until one meets the
    /// constraints or the source has no more; if the call fails, the spans
    /// it imported go back to the source (see the [crate docs](crate)).
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc), and [`VmemError::InvalidConstraints`] for
    /// constraints that are malformed or can never be met.
    pub fn xalloc(&self, size: usize, c: &Constraints, policy: Policy) -> Result<usize, VmemError> {
        self.core().xalloc(size, c, policy)
    }

    /// Like [`alloc`](Self::alloc), but when the arena is exhausted waits
    /// for room (`M_WAITOK`): for ever if `timeout` is `None` or so long
    /// that its deadline cannot be represented (`Duration::MAX`).
    ///
    /// Before it waits it drains the quantum caches and calls reclaim, as
    /// [`alloc`](Self::alloc) does before it fails. An arena with a source
    /// that can wait ([`Source::import_wait`]), such as a parent `Vmem`,
    /// waits in the source, as the seed passes `M_WAITOK` down to the
    /// import: a free in the parent (or further up) wakes it. Otherwise it
    /// waits in this arena. Either way anything that makes room here wakes
    /// it: a free (into a quantum cache too), an [`add`](Self::add), an
    /// import by another thread.
    ///
    /// ```
    /// use kmem_vmem::{Policy, Vmem};
    /// use std::{sync::Arc, thread, time::Duration};
    ///
    /// let parent = Arc::new(Vmem::builder("parent").span(0, 4096).quantum(4096).build()?);
    /// let child = Vmem::builder("child").quantum(4096).source(parent.clone(), 4096).build()?;
    /// let page = parent.alloc(4096, Policy::InstantFit)?;
    /// let freer = thread::spawn({
    ///     let parent = parent.clone();
    ///     move || {
    ///         while parent.stats().waits == 0 {
    ///             thread::yield_now(); // until the child's waiter sleeps in the parent
    ///         }
    ///         parent.free(page, 4096)
    ///     }
    /// });
    /// let got = child.alloc_wait(4096, Policy::InstantFit, Some(Duration::from_secs(30)))?;
    /// assert_eq!(got, page);
    /// freer.join().unwrap()?;
    /// # Ok::<(), kmem_vmem::VmemError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`VmemError::TimedOut`] when the timeout passes first.
    pub fn alloc_wait(
        &self,
        size: usize,
        policy: Policy,
        timeout: Option<Duration>,
    ) -> Result<usize, VmemError> {
        match self.qcache_alloc(size) {
            Some(x) => Ok(x),
            None => self.core().alloc_wait(size, policy, timeout),
        }
    }

    /// Like [`xalloc`](Self::xalloc), waiting as
    /// [`alloc_wait`](Self::alloc_wait) does.
    ///
    /// # Errors
    ///
    /// As [`xalloc`](Self::xalloc), and [`VmemError::TimedOut`].
    pub fn xalloc_wait(
        &self,
        size: usize,
        c: &Constraints,
        policy: Policy,
        timeout: Option<Duration>,
    ) -> Result<usize, VmemError> {
        self.core().xalloc_wait(size, c, policy, timeout)
    }

    /// Frees the segment `[addr, addr + size)` that [`alloc`](Self::alloc)
    /// returned (`vmem_free`), checked in every build: to the arena, merging
    /// it with free neighbours, whatever its size. `size` is the size
    /// allocated, or any size that rounds up to the same number of quanta.
    ///
    /// A quantum cache cannot tell a double free from a free: its
    /// magazines keep no per-segment state, and every segment it holds is
    /// busy in the arena. So this checked free bypasses the caches, as
    /// [`xfree`](Self::xfree) does; the caches still serve allocations and
    /// refill in batches. [`free_cached`](Self::free_cached) is the seed's
    /// unchecked path into the cache, for callers that can promise the
    /// free is right.
    ///
    /// # Errors
    ///
    /// [`VmemError::NotAllocated`] or [`VmemError::WrongSize`] if that is
    /// not exactly an allocated segment (an unknown address, a wrong size
    /// — 0 and sizes that overflow when rounded among them —, a double
    /// free, an address inside another segment); the arena is left
    /// unchanged.
    #[inline]
    pub fn free(&self, addr: usize, size: usize) -> Result<(), VmemError> {
        self.core().xfree(addr, size)
    }

    /// Frees a segment of a quantum-cached size into its cache, taking no
    /// arena lock while a magazine has room: `vmem_free` of the seed, whose
    /// magazines do not check frees. Other sizes are freed as by
    /// [`free`](Self::free), checked. A cached segment stays allocated in
    /// the arena; if an allocation is waiting
    /// ([`alloc_wait`](Self::alloc_wait)), it is woken to drain the caches
    /// and take the segment. A segment that lands in the calling thread's
    /// own per-thread magazine wakes no one: no other thread can reach it.
    ///
    /// ```
    /// use kmem_vmem::{Policy, Vmem};
    ///
    /// let a = Vmem::builder("pages").span(0, 1 << 20).quantum(16).qcache_max(64).build()?;
    /// let x = a.alloc(32, Policy::InstantFit)?;
    /// // SAFETY: `x` was allocated with this size and is freed once.
    /// unsafe { a.free_cached(x, 32) }?;
    /// assert_eq!(a.stats().qcache_frees, 1);
    /// # Ok::<(), kmem_vmem::VmemError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`free`](Self::free) for sizes that are not cached. A cached
    /// size is checked against the arena in debug builds only (the check
    /// takes the arena lock the caches exist to avoid).
    ///
    /// # Safety
    ///
    /// `[addr, addr + size)` was returned by an allocation from this arena
    /// of that size and has not been freed since. A free that breaks this
    /// puts a segment in a cache twice or puts one there that the arena
    /// never gave out, and the cache then hands it to two callers, or hands
    /// out a range that is not the arena's: for an arena of memory
    /// addresses, two owners of the same memory. The arena finds out only
    /// when the cache gives the segment back, and panics there.
    #[inline]
    pub unsafe fn free_cached(&self, addr: usize, size: usize) -> Result<(), VmemError> {
        if self.qcached(size) {
            let rounded = (size + self.quantum() - 1) & !(self.quantum() - 1);
            if let Some(qc) = self.core().qcaches.get(rounded >> self.qshift) {
                #[cfg(debug_assertions)]
                self.core().check_busy(addr, size)?;
                // A segment put in this thread's own magazine is beyond
                // every other thread's reach, a drain's too: no waiter
                // could take it, so none is told, and the per-thread hit
                // stays as it was. Anywhere else it stays busy in the
                // arena until a drain, so waiters must be told.
                match qc.mode() {
                    Mode::PerThread => match qc.free_hit(addr) {
                        Ok(()) => return Ok(()),
                        Err(addr) => qc.free(addr),
                    },
                    Mode::PerCpu => qc.free(addr),
                }
                self.core().notice_cached_free();
                return Ok(());
            }
        }
        self.core().xfree(addr, size)
    }

    /// Frees a segment that [`xalloc`](Self::xalloc) returned
    /// (`vmem_xfree`), merging it with free neighbours; a span imported from
    /// the source is released once it is wholly free. Never goes through
    /// the quantum caches.
    ///
    /// # Errors
    ///
    /// As [`free`](Self::free).
    #[inline]
    pub fn xfree(&self, addr: usize, size: usize) -> Result<(), VmemError> {
        self.core().xfree(addr, size)
    }

    /// Adds the span `[base, base + size)` to the arena, wholly free
    /// (`vmem_add`). It is never released to the source.
    ///
    /// # Errors
    ///
    /// [`VmemError::InvalidSpan`] if it is empty, not a multiple of the
    /// quantum, wraps past `usize::MAX` or overlaps a span of the arena.
    pub fn add(&self, base: usize, size: usize) -> Result<(), VmemError> {
        self.core().add(base, size)
    }

    /// The quantum caches' front end: `None` without caches, otherwise
    /// [`Mode::PerThread`] only if every cache got a per-thread id (see
    /// [`Builder::qcache_mode`](crate::Builder::qcache_mode)).
    pub fn qcache_mode(&self) -> Option<Mode> {
        self.core().qcaches.mode()
    }

    /// Returns every segment the quantum caches hold to the arena
    /// (`qc_drain`); allocation does this by itself before it fails.
    pub fn drain_qcaches(&self) {
        self.core().qcaches.drain();
    }

    /// Walks every invariant of the arena (address order, tiling of spans,
    /// no overlap, no adjacent free segments, free lists and their bitmap,
    /// the busy hash, the accounting) and reports the first violation.
    ///
    /// # Errors
    ///
    /// [`VmemError::Corrupt`] naming the tag's address and the broken rule.
    pub fn check(&self) -> Result<(), VmemError> {
        self.core().check()
    }

    /// A snapshot of the arena's sizes and counters (`vmem_size` and more).
    pub fn stats(&self) -> VmemStats {
        self.core().stats()
    }

    /// The segment holding `addr`, free or allocated, and where in it
    /// `addr` lies (`vmem_whatis`); `None` if no span of the arena holds
    /// it. It walks the arena's spans, then the segments of the one
    /// holding `addr`, under the arena lock, and never allocates.
    ///
    /// ```
    /// use kmem_vmem::{Policy, Vmem};
    ///
    /// let a = Vmem::builder("heap").span(0x1000, 0x1000).quantum(16).build()?;
    /// let x = a.alloc(64, Policy::InstantFit)?;
    /// let w = a.whatis(x + 20).unwrap();
    /// assert_eq!((w.start, w.size, w.allocated, w.offset), (x, 64, true, 20));
    /// assert_eq!(w.to_string(), "0x1014 is 0x1000+0x14 in vmem 'heap' (allocated)");
    /// assert!(!a.whatis(x + 64).unwrap().allocated); // the free rest of the span
    /// assert!(a.whatis(0x2000).is_none());
    /// # Ok::<(), kmem_vmem::VmemError>(())
    /// ```
    pub fn whatis(&self, addr: usize) -> Option<Whatis> {
        self.core().arena.lock().whatis(addr)
    }

    /// A snapshot of every span and segment in address order, and of
    /// every non-empty free list (`vmem_dump`); print it, or read its
    /// [`tags`](Dump::tags) and [`free_lists`](Dump::free_lists).
    ///
    /// This debugging call allocates the snapshot from the global
    /// allocator. It does so with the arena lock dropped, and fills it
    /// under the lock, so it is safe to call on an arena that a global
    /// allocator is built on, but never from *inside* a global allocator
    /// (it would re-enter it). [`whatis`](Self::whatis) and
    /// [`summary`](Self::summary) do not allocate.
    ///
    /// ```
    /// use kmem_vmem::{Policy, TagKind, Vmem};
    ///
    /// let a = Vmem::builder("ids").span(0, 100).build()?;
    /// let x = a.alloc(10, Policy::InstantFit)?;
    /// let kinds: Vec<_> = a.dump().tags().iter().map(|t| (t.start, t.size, t.kind)).collect();
    /// assert_eq!(
    ///     kinds,
    ///     [(0, 100, TagKind::StaticSpan), (x, 10, TagKind::Busy), (10, 90, TagKind::Free)]
    /// );
    /// print!("{}", a.dump());
    /// # Ok::<(), kmem_vmem::VmemError>(())
    /// ```
    pub fn dump(&self) -> Dump {
        introspect::dump(&self.core().arena)
    }

    /// The arena's sizes and tag counts, and its busy and free segments
    /// counted by the seed's size classes (DDB `show vmem`); its
    /// `Display` is the seed's table. Taken under the arena lock, without
    /// allocating.
    ///
    /// ```
    /// use kmem_vmem::{Policy, Vmem};
    ///
    /// let a = Vmem::builder("pages").span(0, 1 << 20).quantum(4096).build()?;
    /// a.alloc(4096, Policy::InstantFit)?;
    /// a.alloc(4096, Policy::InstantFit)?;
    /// let s = a.summary();
    /// assert_eq!((s.inuse, s.busy_tags), (8192, 2));
    /// let one_page = s.classes().next().unwrap();
    /// assert_eq!((one_page.min_size, one_page.busy, one_page.busy_bytes), (4096, 2, 8192));
    /// # Ok::<(), kmem_vmem::VmemError>(())
    /// ```
    pub fn summary(&self) -> Summary {
        self.core().arena.lock().summary()
    }
}

impl<A: Allocator + Clone + Send + Sync, S: Source> Drop for Vmem<A, S> {
    fn drop(&mut self) {
        if self.listed {
            // Off the list before anything of the core changes: once this
            // returns, no walker of the list can reach it.
            registry::unregister(&self.core().node);
        }
        let p = self.core.as_ptr();
        // SAFETY: the core is live. The `&mut` to its caches ends once they
        // are moved out; dropping them returns their segments through shared
        // references to the core, valid until `drop_in_place` below.
        unsafe {
            let caches = (*p).qcaches.take();
            drop(caches);
            p.drop_in_place();
            self.alloc
                .deallocate(self.core.cast(), Layout::new::<Core<A, S>>());
        }
    }
}

/// A child arena imports from its parent through `alloc` and releases with
/// `free` (the seed's `vmem_create(..., vmem_alloc, vmem_free, parent)`).
impl<A, S> Source for Vmem<A, S>
where
    A: Allocator + Clone + Send + Sync,
    S: Source,
{
    fn import(&self, size: usize) -> Option<usize> {
        self.alloc(size, Policy::InstantFit).ok()
    }

    /// Waits in this arena as [`alloc_wait`](Vmem::alloc_wait) does, until
    /// the child's deadline or until the child cancels.
    fn import_wait(&self, size: usize, wait: &ImportWait<'_>) -> Option<usize> {
        match self.qcache_alloc(size) {
            Some(x) => Some(x),
            None => self.core().import_wait(size, wait),
        }
    }

    fn wake_waiting_imports(&self) {
        self.core().wake_now();
    }

    /// # Panics
    ///
    /// If this arena has no such allocation: the span was freed here
    /// behind the child's back (or the child's source is not this arena).
    /// The message names this arena; the child is the arena whose free,
    /// `xfree` or drop is on the stack.
    fn release(&self, base: usize, size: usize) {
        if let Err(e) = self.free(base, size) {
            let parent = self.name();
            panic!(
                "vmem: a child arena gave back the span of {size:#x} bytes at {base:#x} that it \
                 imported from arena {parent}, but {parent} no longer has it allocated: was it \
                 freed in {parent} behind the child's back? ({e})"
            );
        }
    }
}
