//! The arena behind its lock, with importing from the source, releasing to
//! it, draining the quantum caches and reclaim (the seed's `vmem_xalloc`
//! loop, `vmem_import`, `vmem_xfree`, `vmem_add`, `vmem_size`); waiting is
//! in `wait.rs`. [`Vmem`](crate::Vmem) puts the quantum caches in front.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box;
use kmem_sys::sync::{Condvar, Mutex, MutexGuard};

use crate::arena::Arena;
use crate::error::{ArenaName, VmemError};
use crate::fit::{Constraints, Policy, Request};
use crate::qcache::QCaches;
use crate::registry::Node;
use crate::source::Source;
use crate::stats::VmemStats;
use crate::tag::{Kind, NIL};
use crate::wait::Wait;

/// The boxed reclaim callback, in the metadata allocator.
pub(crate) type ReclaimFn<A> = Box<dyn Fn(&ArenaName) + Send + Sync, A>;

/// Everything of an arena but its front: it lives at a fixed address (the
/// quantum caches' backends point at it).
pub(crate) struct Core<A: Allocator + Clone + Send + Sync, S: Source> {
    pub(crate) name: ArenaName,
    qshift: u32,
    import_quantum: usize,
    limit: usize,
    pub(crate) source: S,
    reclaim: Option<ReclaimFn<A>>,
    pub(crate) arena: Mutex<Arena<A>>,
    /// Signalled on free, add and import when a thread waits (`vm_cv`).
    pub(crate) cv: Condvar,
    /// Times waiters were woken, bumped under the arena lock: a waiter that
    /// sees it move while its lock was dropped looks again before sleeping,
    /// and one blocked in the source stops waiting there.
    pub(crate) wakeups: AtomicU64,
    /// Waiters blocked in the source's `import_wait`. Changed and read
    /// under the arena lock.
    pub(crate) in_source: AtomicUsize,
    /// One magazine cache per multiple of the quantum up to `qcache_max`.
    pub qcaches: QCaches<A, S>,
    /// The arena's place on the arena list (`vm_alllist`).
    pub(crate) node: Node,
}

impl<A, S> Core<A, S>
where
    A: Allocator + Clone + Send + Sync,
    S: Source,
{
    pub(crate) fn new(
        arena: Arena<A>,
        source: S,
        import_quantum: usize,
        limit: usize,
        reclaim: Option<ReclaimFn<A>>,
    ) -> Self {
        let qcaches = QCaches::new(arena.tags.allocator().clone());
        Core {
            name: arena.name,
            node: Node::new(arena.name),
            qshift: arena.qshift,
            import_quantum,
            limit,
            source,
            reclaim,
            arena: Mutex::new(arena),
            cv: Condvar::new(),
            wakeups: AtomicU64::new(0),
            in_source: AtomicUsize::new(0),
            qcaches,
        }
    }

    /// Threads in the slow path of a waiting allocation. Changed under the
    /// arena lock; read without it by a free into a quantum cache, which
    /// must wake them ([`notice_cached_free`](Self::notice_cached_free)).
    /// It lives beside the quantum caches' table, in the cache line such a
    /// free has just read.
    #[inline(always)]
    pub(crate) fn waiters(&self) -> &AtomicUsize {
        &self.qcaches.waiters
    }

    /// The arena's name as stored.
    pub(crate) fn name_raw(&self) -> ArenaName {
        self.name
    }

    /// The arena's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The arena's quantum.
    #[inline]
    pub fn quantum(&self) -> usize {
        1 << self.qshift
    }

    /// `size` rounded up to the quantum (`vmem_roundup_size`), refusing 0
    /// and sizes that overflow.
    #[inline]
    pub(crate) fn round(&self, size: usize) -> Result<usize, VmemError> {
        let mask = self.quantum() - 1;
        match size.checked_add(mask) {
            Some(s) if size != 0 => Ok(s & !mask),
            _ => Err(self.bad_size(size)),
        }
    }

    #[cold]
    fn bad_size(&self, size: usize) -> VmemError {
        let what = if size == 0 {
            "the size is zero"
        } else {
            "the size overflows when rounded to the quantum"
        };
        VmemError::InvalidSize {
            arena: self.name,
            size,
            what,
        }
    }

    /// The request for `size` bytes rounded up to the quantum, under the
    /// constraints `c` if any, with the size and constraints checked.
    #[inline]
    pub(crate) fn request(
        &self,
        size: usize,
        c: Option<&Constraints>,
    ) -> Result<Request, VmemError> {
        let size = self.round(size)?;
        match c {
            None => Ok(Request::plain(size, self.quantum())),
            Some(c) => Request::new(self.name, size, self.quantum(), c),
        }
    }

    /// Allocates `size` bytes (rounded up to the quantum) placed by
    /// `policy`, without waiting (`vmem_alloc(..., M_NOWAIT)`).
    ///
    /// # Errors
    ///
    /// [`VmemError::Exhausted`] when no free segment, import or reclaim
    /// can satisfy it; [`VmemError::InvalidSize`] for 0.
    #[inline]
    pub fn alloc(&self, size: usize, policy: Policy) -> Result<usize, VmemError> {
        let size = self.round(size)?;
        if let Some(x) = self.arena.lock().try_place_plain(size, policy) {
            return Ok(x);
        }
        let req = Request::plain(size, self.quantum());
        self.place_slow(&req, policy, Wait::No)
    }

    /// Allocates `size` bytes placed within the constraints `c`
    /// (`vmem_xalloc`); see [`Constraints`] for what each field means.
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc), and [`VmemError::InvalidConstraints`] for
    /// constraints that are malformed or can never be met.
    pub fn xalloc(&self, size: usize, c: &Constraints, policy: Policy) -> Result<usize, VmemError> {
        self.place(&self.request(size, Some(c))?, policy, Wait::No)
    }

    /// The fast path: one lock, one placement.
    #[inline]
    pub(crate) fn place(
        &self,
        req: &Request,
        policy: Policy,
        wait: Wait<'_>,
    ) -> Result<usize, VmemError> {
        if let Some(x) = self.arena.lock().try_place(req, policy) {
            return Ok(x);
        }
        self.place_slow(req, policy, wait)
    }

    /// The fast path of [`alloc`](Self::alloc) (`c` is `None`) or
    /// [`xalloc`](Self::xalloc) without taking the lock: `&mut self` proves
    /// that no other thread can reach the arena. `None` when no free
    /// segment fits at once or the request is refused: the caller then
    /// takes the shared path, which reports errors and runs the slow steps
    /// (import, quantum-cache drain, reclaim). Those call back into the
    /// core through other pointers, so they must not run under this borrow.
    #[inline(always)]
    pub fn try_alloc_mut(
        &mut self,
        size: usize,
        c: Option<&Constraints>,
        policy: Policy,
    ) -> Option<usize> {
        let Some(c) = c else {
            let size = self.round(size).ok()?;
            return self.arena.get_mut().try_place_plain(size, policy);
        };
        let req = self.request(size, Some(c)).ok()?;
        self.arena.get_mut().try_place(&req, policy)
    }

    /// The seed's `vmem_xalloc` loop: fill tags, search, import, drain the
    /// quantum caches and reclaim, then wait or fail.
    #[cold]
    fn place_slow(
        &self,
        req: &Request,
        policy: Policy,
        wait: Wait<'_>,
    ) -> Result<usize, VmemError> {
        self.place_slow_from(req, policy, wait, true)
    }

    /// [`place_slow`](Self::place_slow); `drain` says whether arena
    /// pressure may drain the quantum caches (not when a quantum cache is
    /// importing).
    pub(crate) fn place_slow_from(
        &self,
        req: &Request,
        policy: Policy,
        wait: Wait<'_>,
        drain: bool,
    ) -> Result<usize, VmemError> {
        let mut g = self.arena.lock();
        // A waiting allocation counts as a waiter from here on, not only
        // while it sleeps: a free into a quantum cache tells waiters only
        // by this count, so it must be up before the loop's drain looks at
        // the caches (see `notice_cached_free`).
        let waiting = matches!(wait, Wait::Until(..));
        if waiting {
            self.waiters().fetch_add(1, Ordering::Relaxed);
        }
        let imports = g.counters.imports;
        let placed = self.place_loop(&mut g, req, policy, wait, drain);
        if waiting {
            self.waiters().fetch_sub(1, Ordering::Relaxed);
        }
        if placed.is_err() {
            g.counters.failures += 1;
            // Spans imported for a request they could not satisfy (its
            // address window is beyond what the source gives, say) go back,
            // so a failed call leaves the source as it found it.
            if g.counters.imports != imports {
                self.give_back_free_spans(&mut g);
            }
        }
        placed
    }

    /// Releases to the source every imported span that is wholly free (see
    /// [`Arena::take_free_span`]): those this failed call imported, and
    /// any an earlier constrained call imported in vain and kept (the
    /// seed keeps them; a successful call still does). Then wakes the
    /// waiters, whose imports may now succeed.
    #[cold]
    fn give_back_free_spans(&self, g: &mut MutexGuard<'_, Arena<A>>) {
        let mut from = 0;
        while let Some((base, size)) = g.take_free_span(from) {
            g.counters.releases += 1;
            MutexGuard::unlocked(g, || self.source.release(base, size));
            // The list may have changed with the lock dropped: go on from
            // the address after this span, if there is one.
            let Some(next) = base.checked_add(size) else {
                break;
            };
            from = next;
        }
        self.wake_relocking(g);
    }

    /// The loop of [`place_slow_from`](Self::place_slow_from), with the
    /// lock held between its steps.
    fn place_loop(
        &self,
        g: &mut MutexGuard<'_, Arena<A>>,
        req: &Request,
        policy: Policy,
        wait: Wait<'_>,
        drain: bool,
    ) -> Result<usize, VmemError> {
        let drain = drain && !self.qcaches.is_empty();
        loop {
            g.reserve()?;
            if let Some(x) = g.alloc_counted(req, policy) {
                return Ok(x);
            }
            let before = self.room(g);
            if self.source.imports() && self.import(g, req)? {
                continue;
            }
            let pressed = drain || self.reclaim.is_some();
            if pressed {
                g.counters.reclaims += 1;
                MutexGuard::unlocked(g, || {
                    if drain {
                        self.qcaches.drain();
                    }
                    self.run_reclaim();
                });
            }
            // A waiter also looks again after a failed import, during which
            // the lock was dropped: it waits only if nothing made room
            // since its search.
            let gained = self.room(g).gained_since(before);
            let Wait::Until(until) = wait else {
                if pressed && gained {
                    continue;
                }
                return Err(self.exhausted(req));
            };
            if gained {
                continue;
            }
            if let Some(x) = self.wait_for_room(g, req, policy, &until, before)? {
                return Ok(x);
            }
        }
    }

    fn run_reclaim(&self) {
        if let Some(f) = &self.reclaim {
            f(&self.name);
        }
    }

    /// Imports a span big enough for `req` (`vmem_import`), without
    /// waiting. `Ok(false)` if the source has none or the limit forbids it.
    fn import(&self, g: &mut MutexGuard<'_, Arena<A>>, req: &Request) -> Result<bool, VmemError> {
        let Some(size) = self.import_size(g, req) else {
            return Ok(false);
        };
        // Count the span as imported while the lock is dropped, so racing
        // imports cannot overshoot the limit together.
        g.importing += size;
        let got = MutexGuard::unlocked(g, || self.source.import(size));
        g.importing -= size;
        let Some(base) = got else {
            g.counters.import_failures += 1;
            return Ok(false);
        };
        self.add_import(g, base, size).map(|()| true)
    }

    /// The size of the span to import for `req`: padded by twice the
    /// alignment when that is above the quantum, and rounded to the import
    /// quantum. `None` if that overflows or the limit forbids it.
    pub(crate) fn import_size(&self, g: &Arena<A>, req: &Request) -> Option<usize> {
        let padded = if req.align != self.quantum() {
            req.align
                .checked_mul(2)
                .and_then(|a| a.checked_add(req.size))
        } else {
            Some(req.size)
        };
        let size = padded?.checked_next_multiple_of(self.import_quantum)?;
        // A sum that overflows is over any limit.
        if self.limit != 0
            && (g.imported.checked_add(g.importing))
                .and_then(|n| n.checked_add(size))
                .is_none_or(|n| n > self.limit)
        {
            return None;
        }
        Some(size)
    }

    /// Adds the span `[base, base + size)` the source supplied; gives it
    /// back if it is bad or no tags are left for it.
    pub(crate) fn add_import(
        &self,
        g: &mut MutexGuard<'_, Arena<A>>,
        base: usize,
        size: usize,
    ) -> Result<(), VmemError> {
        if let Err(e) = g
            .reserve()
            .and_then(|()| g.add_span(base, size, Kind::Span))
        {
            g.counters.import_failures += 1;
            MutexGuard::unlocked(g, || self.source.release(base, size));
            return Err(e);
        }
        g.counters.imports += 1;
        self.wake_relocking(g);
        Ok(())
    }

    /// Frees a segment that [`xalloc`](Self::xalloc) returned
    /// (`vmem_xfree`), merging it with free neighbours; a span imported from
    /// the source is released once it is wholly free.
    ///
    /// # Errors
    ///
    /// As [`Vmem::free`](crate::Vmem::free).
    #[inline]
    pub fn xfree(&self, addr: usize, size: usize) -> Result<(), VmemError> {
        let mut g = self.arena.lock();
        let released = g.free_counted(addr, size)?;
        let in_source = self.wake(&g);
        drop(g);
        self.release(released);
        if in_source {
            self.wake_source();
        }
        Ok(())
    }

    /// [`xfree`](Self::xfree) without taking the lock, as
    /// [`try_alloc_mut`](Self::try_alloc_mut); no waiter can exist to wake,
    /// and nothing it calls reaches this core through another pointer (a
    /// released span goes to the source, another arena or callback).
    #[inline(always)]
    pub fn xfree_mut(&mut self, addr: usize, size: usize) -> Result<(), VmemError> {
        let released = self.arena.get_mut().free_counted(addr, size)?;
        self.release(released);
        Ok(())
    }

    /// Gives a span that a free left wholly free back to the source, with
    /// the lock not held.
    #[inline]
    fn release(&self, span: Option<(usize, usize)>) {
        if let Some((base, size)) = span {
            self.source.release(base, size);
        }
    }

    /// Adds the span `[base, base + size)` to the arena, wholly free
    /// (`vmem_add`). It is never released to the source.
    ///
    /// # Errors
    ///
    /// [`VmemError::InvalidSpan`] if it is empty, not a multiple of the
    /// quantum, wraps past `usize::MAX` or overlaps a span of the arena.
    pub fn add(&self, base: usize, size: usize) -> Result<(), VmemError> {
        let mut g = self.arena.lock();
        g.reserve()?;
        g.add_span(base, size, Kind::StaticSpan)?;
        self.wake_unlocking(g);
        Ok(())
    }

    /// Walks every invariant of the arena (address order, tiling of spans,
    /// no overlap, no adjacent free segments, free lists and their bitmap,
    /// the busy hash, the accounting) and reports the first violation.
    ///
    /// # Errors
    ///
    /// [`VmemError::Corrupt`] naming the tag's address and the broken rule.
    pub fn check(&self) -> Result<(), VmemError> {
        self.arena.lock().check()
    }

    /// A snapshot of the arena's sizes and counters (`vmem_size` and more).
    pub fn stats(&self) -> VmemStats {
        let qc = self.qcaches.stats();
        let g = self.arena.lock();
        let c = &g.counters;
        VmemStats {
            quantum: self.quantum(),
            allocated: g.inuse,
            free: g.total - g.inuse,
            total: g.total,
            largest_free: g.largest_free(),
            imported: g.imported,
            limit: self.limit,
            spans: g.n_spans,
            busy_segments: g.hash.len(),
            free_segments: g.n_free_segs,
            instant_fit: c.instant_fit,
            best_fit: c.best_fit,
            next_fit: c.next_fit,
            instant_fallbacks: c.instant_fallbacks,
            constrained: c.constrained,
            frees: c.frees,
            bad_frees: c.bad_frees,
            failures: c.failures,
            imports: c.imports,
            import_failures: c.import_failures,
            releases: c.releases,
            waits: c.waits,
            timeouts: c.timeouts,
            reclaims: c.reclaims,
            qcache_max: self.qcaches.max(),
            qcache_allocs: qc.allocs,
            qcache_frees: qc.frees,
            qcache_cached: qc.cached_bytes,
            tags: g.tags.capacity(),
            unused_tags: g.tags.n_unused(),
            hash_buckets: g.hash.buckets(),
            metadata_bytes: size_of::<Self>() + g.metadata_bytes() + qc.metadata_bytes,
        }
    }
}

impl<A, S> Drop for Core<A, S>
where
    A: Allocator + Clone + Send + Sync,
    S: Source,
{
    /// Returns every imported span to the source, busy segments and all
    /// (they die with the arena), unlike the seed's `vmem_destroy`, which
    /// requires an empty arena and keeps them.
    fn drop(&mut self) {
        let arena = self.arena.get_mut();
        let mut t = arena.span_head;
        while t != NIL {
            let span = *arena.tags.get(t);
            if span.is(Kind::Span) {
                self.source.release(span.start, span.size);
            }
            t = span.lnext;
        }
    }
}
