//! [`Magazines`]: a depot with a front end of per-CPU slots, per-thread
//! pairs, or both.
//!
//! The per-CPU slots are the seed's `cache_cpu[]` (`KMEM_CPU_CACHE`): one
//! [`MagazinePair`] per CPU behind a lock, indexed by `kmem_sys::current_cpu`. In
//! [`Mode::PerThread`] each thread gets its own pair through the registry in
//! [`crate::thread`]; the slots remain as the fallback for a thread whose
//! table is gone (thread teardown) or when every registry id is taken.
//!
//! Backend calls (`import`, `release`) and magazine allocation happen with no
//! slot lock held, as the seed drops `cc_lock` around `kmem_slab_alloc` and
//! the magazine allocation in `kmem_cache_free`. Lock order: registry id →
//! CPU slot → depot.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{Allocator, Global};
use kmem_sys::PerCpu;

use crate::depot::{Depot, Import};
use crate::pair::MagazinePair;
use crate::stats::Stats;
use crate::sync::SlotMutex;
use crate::thread::{self, Handle, Owner};
use crate::{Backend, Config, MagazineError, Mode};

/// The state a [`Magazines`] keeps at a fixed address (the registry and
/// thread-exit hooks point at it).
struct Inner<B: Backend, A: Allocator + Clone> {
    depot: Depot<B, A>,
    slots: PerCpu<SlotMutex<MagazinePair<B::Item>>, A>,
}

/// A thread's pair for one cache, on the cache's node list; aligned to a
/// cache-line pair so two threads' pairs never share a line.
#[repr(align(128))]
struct Node<T> {
    next: *mut Node<T>,
    pair: MagazinePair<T>,
}

/// The per-thread hit path of one [`Magazines`], copied out of it: a
/// registry id and serial, two words. Per-CPU caches hand out a path that
/// always misses.
///
/// A wrapper that keeps this beside its `Magazines` reaches the calling
/// thread's loaded magazine with one TLS load and a compare, without first
/// testing which front end the cache has.
///
/// ```
/// # use core::mem::MaybeUninit;
/// # use kmem_magazine::{Backend, Config, Magazines, Mode};
/// # struct Ints;
/// # impl Backend for Ints {
/// #     type Item = usize;
/// #     fn import(&self, out: &mut [MaybeUninit<usize>]) -> usize {
/// #         out.iter_mut().for_each(|s| { s.write(7); });
/// #         out.len()
/// #     }
/// #     fn release(&self, _: &[usize]) {}
/// # }
/// let cache = Magazines::new(Ints, Config::new("ints", 8).mode(Mode::PerThread))?;
/// let hot = cache.hot_path();
/// let x = cache.alloc().unwrap(); // loads this thread's magazine
/// // SAFETY: `cache` outlives every use of `hot`.
/// unsafe {
///     assert_eq!(hot.free_hit(x), Ok(()));
///     assert_eq!(hot.alloc_hit(), Some(x));
/// }
/// cache.free(x);
/// # Ok::<(), kmem_magazine::MagazineError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HotPath<T> {
    handle: Handle,
    _items: PhantomData<fn(T) -> T>,
}

impl<T: Copy> HotPath<T> {
    /// A path that always misses, for wrappers whose cache has no per-thread
    /// magazines (or none at all).
    pub const MISS: Self = HotPath {
        handle: Handle::NONE,
        _items: PhantomData,
    };

    /// [`Magazines::alloc_hit`] of the cache this path came from.
    ///
    /// # Safety
    ///
    /// That cache is still alive (its nodes are freed when it drops, and a
    /// stale thread entry would still match the serial).
    #[inline(always)]
    pub unsafe fn alloc_hit(self) -> Option<T> {
        let node = thread::lookup(self.handle).cast::<Node<T>>();
        if node.is_null() {
            return None;
        }
        // SAFETY: a node found under a live cache's serial is this thread's
        // node of that cache, whose items are `T`; no other reference to it
        // exists during this call.
        unsafe { (*node).pair.alloc_hit() }
    }

    /// [`Magazines::free_hit`] of the cache this path came from.
    ///
    /// # Safety
    ///
    /// As for [`alloc_hit`](Self::alloc_hit); `item` is one the cache may
    /// hold.
    #[inline(always)]
    pub unsafe fn free_hit(self, item: T) -> Result<(), T> {
        let node = thread::lookup(self.handle).cast::<Node<T>>();
        if node.is_null() {
            return Err(item);
        }
        // SAFETY: as in `alloc_hit`.
        unsafe { (*node).pair.free_hit(item) }
    }
}

/// A magazine layer over a [`Backend`]: `alloc` and `free` served from
/// per-thread or per-CPU magazines, a depot behind them, the backend last.
///
/// ```
/// use core::mem::MaybeUninit;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use kmem_magazine::{Backend, Config, Magazines, Mode};
///
/// /// Hands out integers, counting what comes back.
/// #[derive(Default)]
/// struct Counter { next: AtomicUsize, back: AtomicUsize }
/// impl Backend for Counter {
///     type Item = usize;
///     fn import(&self, out: &mut [MaybeUninit<usize>]) -> usize {
///         for slot in out.iter_mut() {
///             slot.write(self.next.fetch_add(1, Ordering::Relaxed));
///         }
///         out.len()
///     }
///     fn release(&self, items: &[usize]) {
///         self.back.fetch_add(items.len(), Ordering::Relaxed);
///     }
/// }
///
/// let cache = Magazines::new(Counter::default(), Config::new("ints", 8).mode(Mode::PerCpu))?;
/// let x = cache.alloc().expect("backend never runs out");
/// cache.free(x);
/// assert_eq!(cache.alloc(), Some(x));
/// cache.free(x);
/// cache.purge();
/// let b = cache.backend();
/// assert_eq!(b.next.load(Ordering::Relaxed), b.back.load(Ordering::Relaxed));
/// # Ok::<(), kmem_magazine::MagazineError>(())
/// ```
pub struct Magazines<B: Backend, A: Allocator + Clone = Global> {
    inner: NonNull<Inner<B, A>>,
    /// Registry claim in per-thread mode; `None` in per-CPU mode.
    thread: Option<Handle>,
    alloc: A,
}

// SAFETY: `Inner` is owned by this value; its depot and slots are `Send`
// under these bounds (items are `Send`, slot pairs are behind locks).
unsafe impl<B: Backend, A: Allocator + Clone + Send + Sync> Send for Magazines<B, A> {}
// SAFETY: shared access goes through the depot lock, the slot locks, or the
// calling thread's own node, which no other thread touches while the cache
// is alive (thread exit touches only the exiting thread's node, under the
// registry lock).
unsafe impl<B: Backend, A: Allocator + Clone + Send + Sync> Sync for Magazines<B, A> {}

impl<B: Backend> Magazines<B> {
    /// A magazine layer over `backend`; metadata from the global allocator.
    pub fn new(backend: B, config: Config) -> Result<Self, MagazineError> {
        Self::new_in(backend, config, Global)
    }
}

impl<B: Backend, A: Allocator + Clone> Magazines<B, A> {
    /// A magazine layer over `backend` whose magazines, slots, per-thread
    /// nodes and own state all come from `alloc`.
    pub fn new_in(backend: B, config: Config, alloc: A) -> Result<Self, MagazineError> {
        let depot = Depot::new_in(backend, config, alloc.clone())?;
        let nslots = config.cpu_slots.unwrap_or_else(kmem_sys::cpu_count);
        let slots = PerCpu::with_len_in(
            nslots,
            |_| SlotMutex::new(MagazinePair::new()),
            alloc.clone(),
        );
        let layout = Layout::new::<Inner<B, A>>();
        let inner = alloc
            .allocate(layout)
            .map_err(|_| MagazineError::OutOfMemory {
                name: config.name,
                bytes: layout.size(),
            })?
            .cast::<Inner<B, A>>();
        // SAFETY: fresh allocation of the right layout.
        unsafe { inner.as_ptr().write(Inner { depot, slots }) };
        let thread = match config.mode {
            Mode::PerCpu => None,
            Mode::PerThread => {
                thread::register(inner.as_ptr().cast_const().cast(), flush_node::<B, A>)
            }
        };
        Ok(Magazines {
            inner,
            thread,
            alloc,
        })
    }

    #[inline(always)]
    fn inner(&self) -> &Inner<B, A> {
        // SAFETY: `inner` is live until drop.
        unsafe { self.inner.as_ref() }
    }

    /// The depot (for its statistics, or to drive [`MagazinePair`]s of your own).
    pub fn depot(&self) -> &Depot<B, A> {
        &self.inner().depot
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        self.depot().backend()
    }

    /// The front end in use: [`Mode::PerCpu`] also when per-thread mode was
    /// asked for but all [`MAX_THREAD_CACHES`](crate::MAX_THREAD_CACHES)
    /// registry ids were taken.
    pub fn mode(&self) -> Mode {
        if self.thread.is_some() {
            Mode::PerThread
        } else {
            Mode::PerCpu
        }
    }

    /// An item from the calling thread's loaded magazine, or
    /// `None` without trying anything slower (per-CPU mode always answers
    /// `None`). For callers that wrap the magazines in a fast path of their
    /// own and go to [`alloc`](Self::alloc) on a miss.
    #[inline(always)]
    pub fn alloc_hit(&self) -> Option<B::Item> {
        // SAFETY: the path is this live cache's.
        unsafe { self.hot_path().alloc_hit() }
    }

    /// This cache's per-thread fast path as a plain value, for a caller that
    /// keeps it beside the cache and wants the hit path without reaching
    /// through `Magazines` (see [`HotPath`]).
    pub fn hot_path(&self) -> HotPath<B::Item> {
        HotPath {
            handle: self.thread.unwrap_or(Handle::NONE),
            _items: PhantomData,
        }
    }

    /// Puts `item` in the calling thread's loaded magazine if it has room;
    /// otherwise hands it back untouched, for
    /// [`free`](Self::free) to take the slower way.
    #[inline(always)]
    pub fn free_hit(&self, item: B::Item) -> Result<(), B::Item> {
        // SAFETY: the path is this live cache's.
        unsafe { self.hot_path().free_hit(item) }
    }

    /// An item: from the calling thread's (or CPU's) magazines, the depot, or
    /// the backend. `None` when the backend is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<B::Item> {
        // Per-CPU caches skip the thread table: no hit can come from it.
        let Some(h) = self.thread else {
            return self.alloc_cpu();
        };
        if let Some(item) = self.alloc_hit() {
            return Some(item);
        }
        // A miss looks the thread's node up again: one more TLS load on
        // the way to the depot.
        self.alloc_thread(thread::lookup(h).cast())
    }

    /// Gives an item back to the magazines (or, failing magazine memory, to
    /// the backend). The item must have come from this cache's backend.
    #[inline]
    pub fn free(&self, item: B::Item) {
        let Some(h) = self.thread else {
            return self.free_cpu(item);
        };
        let Err(item) = self.free_hit(item) else {
            return;
        };
        self.free_thread(thread::lookup(h).cast(), item)
    }

    #[cold]
    fn alloc_thread(&self, node: *mut Node<B::Item>) -> Option<B::Item> {
        let Some(node) = NonNull::new(node).or_else(|| self.create_node()) else {
            return self.alloc_cpu();
        };
        let depot = self.depot();
        // SAFETY: the node is this thread's; the borrow ends before any call
        // that could re-enter this cache (import, tick).
        if let Some(item) = unsafe { (*node.as_ptr()).pair.alloc_cached(depot) } {
            depot.tick();
            return Some(item);
        }
        match depot.import() {
            // SAFETY: as above; the import has returned.
            Import::Magazine(hdr, rounds) => unsafe {
                let pair = &mut (*node.as_ptr()).pair;
                pair.install_full(depot, hdr, rounds);
                pair.take()
            },
            Import::Single(item) => Some(item),
            Import::Exhausted => None,
        }
    }

    #[cold]
    fn free_thread(&self, node: *mut Node<B::Item>, item: B::Item) {
        let Some(node) = NonNull::new(node).or_else(|| self.create_node()) else {
            return self.free_cpu(item);
        };
        let depot = self.depot();
        // SAFETY: as in `alloc_thread`.
        let Err(item) = (unsafe { (*node.as_ptr()).pair.free_cached(depot, item) }) else {
            depot.tick();
            return;
        };
        match depot.new_magazine() {
            // SAFETY: as in `alloc_thread`; the magazine allocation returned.
            Some(empty) => unsafe { (*node.as_ptr()).pair.free_into_new(depot, empty, item) },
            None => depot.release(&[item]),
        }
    }

    /// The calling thread's node, made and registered now; `None` if the
    /// thread is exiting or metadata memory ran out.
    #[cold]
    fn create_node(&self) -> Option<NonNull<Node<B::Item>>> {
        let h = self.thread?;
        if !thread::can_create() {
            return None;
        }
        let layout = Layout::new::<Node<B::Item>>();
        let node = self.alloc.allocate(layout).ok()?.cast::<Node<B::Item>>();
        let mut owner = thread::REGISTRY[h.id].0.lock();
        debug_assert_eq!(owner.serial, h.serial, "a live cache owns its id");
        // SAFETY: fresh allocation of the right layout.
        unsafe {
            node.as_ptr().write(Node {
                next: owner.nodes.cast(),
                pair: MagazinePair::new(),
            })
        };
        owner.nodes = node.as_ptr().cast();
        drop(owner);
        thread::set(h, node.as_ptr().cast());
        Some(node)
    }

    fn alloc_cpu(&self) -> Option<B::Item> {
        let inner = self.inner();
        let slot = inner.slots.current();
        {
            let mut pair = slot.lock();
            if let Some(item) = pair.alloc_hit() {
                return Some(item);
            }
            let got = pair.alloc_cached(&inner.depot);
            drop(pair);
            if got.is_some() {
                inner.depot.tick();
                return got;
            }
        }
        // The backend is called with no lock held (the seed's
        // `kmem_slab_alloc` after `mutex_exit(&ccp->cc_lock)`).
        match inner.depot.import() {
            Import::Magazine(hdr, rounds) => {
                let mut pair = slot.lock();
                // Another thread on this CPU may have refilled the slot while
                // the lock was dropped; then the new magazine went to the
                // depot and the item comes from the slot's rounds or the
                // depot, never `None` while a full magazine exists.
                pair.install_full(&inner.depot, hdr, rounds);
                pair.take().or_else(|| pair.alloc_cached(&inner.depot))
            }
            Import::Single(item) => Some(item),
            Import::Exhausted => None,
        }
    }

    fn free_cpu(&self, item: B::Item) {
        let inner = self.inner();
        let slot = inner.slots.current();
        let item = {
            let mut pair = slot.lock();
            if let Err(item) = pair.free_hit(item) {
                match pair.free_cached(&inner.depot, item) {
                    Ok(()) => {
                        drop(pair);
                        inner.depot.tick();
                        return;
                    }
                    Err(item) => item,
                }
            } else {
                return;
            }
        };
        // A new magazine is allocated with no lock held, as the seed drops
        // `cc_lock` around `kmem_cache_alloc(mtp->mt_cache)`.
        match inner.depot.new_magazine() {
            Some(empty) => slot.lock().free_into_new(&inner.depot, empty, item),
            None => inner.depot.release(&[item]),
        }
    }

    /// Runs the periodic update if an interval has passed on the configured
    /// clock (depot slow paths do this on their own).
    pub fn update(&self) {
        self.depot().update();
    }

    /// Ends a working-set interval now ([`Depot::update_now`]).
    pub fn update_now(&self) {
        self.depot().update_now();
    }

    /// Releases depot magazines beyond the working set (`kmem_cache_reap`).
    pub fn reap(&self) {
        self.depot().reap();
    }

    /// Returns every cached item it can reach to the backend
    /// (`kmem_cache_magazine_purge`): every CPU slot, the calling thread's
    /// pair, and the depot. Other threads' pairs are theirs until they exit
    /// or the cache is dropped.
    pub fn purge(&self) {
        let inner = self.inner();
        for slot in inner.slots.iter() {
            slot.lock().flush(&inner.depot);
        }
        if let Some(h) = self.thread {
            let node = thread::lookup(h).cast::<Node<B::Item>>();
            if !node.is_null() {
                // SAFETY: this thread's node; no other borrow is live.
                unsafe { (*node).pair.flush(&inner.depot) };
            }
        }
        inner.depot.purge();
    }

    /// Counters: the depot's, every CPU slot's, and the calling thread's
    /// (other threads' hits show up once they visit the depot).
    pub fn stats(&self) -> Stats {
        let inner = self.inner();
        let mut s = inner.depot.stats();
        for slot in inner.slots.iter() {
            let pair = slot.lock();
            s.counts.add(&pair.counts());
            s.cached += pair.cached();
        }
        if let Some(h) = self.thread {
            let node = thread::lookup(h).cast::<Node<B::Item>>();
            if !node.is_null() {
                // SAFETY: this thread's node; read only.
                let pair = unsafe { &(*node).pair };
                s.counts.add(&pair.counts());
                s.cached += pair.cached();
            }
        }
        s
    }

    /// Full consistency check of the depot lists and every CPU slot.
    pub fn check(&self) -> Result<(), MagazineError> {
        let inner = self.inner();
        inner.depot.check()?;
        let name = inner.depot.config().name;
        for (i, slot) in inner.slots.iter().enumerate() {
            slot.lock().check(name.as_str(), &format!("cpu slot {i}"))?;
        }
        Ok(())
    }
}

/// Unlinks `node` from the cache's list, flushes its pair into the depot and
/// frees it.
///
/// # Safety
/// `owner` is the locked registry entry of a live cache of this type, and
/// `node` is on its list with no other reference to it.
unsafe fn flush_node<B: Backend, A: Allocator + Clone>(owner: &mut Owner, node: *mut ()) {
    let node = node.cast::<Node<B::Item>>();
    // SAFETY: caller's contract: the cache and its nodes are live.
    unsafe {
        let inner = &*owner.cache.cast::<Inner<B, A>>();
        let mut link: *mut *mut Node<B::Item> = ptr::addr_of_mut!(owner.nodes).cast();
        while !(*link).is_null() && *link != node {
            link = ptr::addr_of_mut!((**link).next);
        }
        debug_assert_eq!(*link, node, "node is on its cache's list");
        *link = (*node).next;
        free_node(inner, node);
    }
}

/// Flushes and frees an unlinked node.
///
/// # Safety
/// `node` is a live node of the cache owning `inner`, referenced by no one.
unsafe fn free_node<B: Backend, A: Allocator + Clone>(
    inner: &Inner<B, A>,
    node: *mut Node<B::Item>,
) {
    // SAFETY: caller's contract.
    unsafe {
        (*node).pair.flush(&inner.depot);
        ptr::drop_in_place(node);
        inner.depot.allocator().deallocate(
            NonNull::new_unchecked(node).cast(),
            Layout::new::<Node<B::Item>>(),
        );
    }
}

impl<B: Backend, A: Allocator + Clone> Drop for Magazines<B, A> {
    fn drop(&mut self) {
        // `&mut self` means no alloc or free of ours is running, but another
        // thread's exit hook may be flushing its node into the depot through
        // a shared `Inner` right now, under the registry lock: so `Inner` is
        // only shared until that lock has shut the hooks out.
        if let Some(h) = self.thread {
            let mut owner = thread::REGISTRY[h.id].0.lock();
            // SAFETY: `inner` is live; exit hooks read it only under the
            // registry lock, which we hold.
            let inner = unsafe { self.inner.as_ref() };
            let mut node = owner.nodes.cast::<Node<B::Item>>();
            while !node.is_null() {
                // SAFETY: every listed node is live and, with the registry
                // lock held and `&mut self`, used by no one.
                unsafe {
                    let next = (*node).next;
                    free_node(inner, node);
                    node = next;
                }
            }
            owner.serial = 0;
            owner.nodes = ptr::null_mut();
            owner.cache = ptr::null();
            owner.flush = None;
        }
        // SAFETY: `inner` is live, and now ours alone: an exit hook that
        // takes the registry lock after us finds the serial cleared and
        // leaves the cache alone; one that held it before us is done.
        let inner = unsafe { self.inner.as_mut() };
        for slot in inner.slots.iter_mut() {
            slot.get_mut().flush(&inner.depot);
        }
        // SAFETY: `inner` came from `self.alloc` with this layout; the depot's
        // drop releases every item and magazine.
        unsafe {
            ptr::drop_in_place(inner);
            self.alloc
                .deallocate(self.inner.cast(), Layout::new::<Inner<B, A>>());
        }
    }
}

impl<B: Backend + core::fmt::Debug, A: Allocator + Clone> core::fmt::Debug for Magazines<B, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Magazines")
            .field("mode", &self.mode())
            .field("depot", self.depot())
            .finish_non_exhaustive()
    }
}
