//! A loaded and a previous magazine: the seed's `kmem_cpu_cache_t` without
//! the CPU and without the lock.
//!
//! The rules are `kmem_cache_alloc` / `kmem_cache_free` (and
//! `kmem_cpu_reload`) in `illumos-kmem.c.txt`:
//!
//! * alloc: pop from the loaded magazine; else, if the previous one holds
//!   rounds, swap the two; else trade the previous (empty) magazine to the
//!   depot for a full one and load it; else go to the backend.
//! * free: push into the loaded magazine; else, if the previous one is empty,
//!   swap; else trade the previous (full) magazine for an empty one from the
//!   depot; else allocate a new empty magazine; else release the item.
//!
//! The backend fill follows UMA's `cache_alloc` → `zone_alloc_bucket`: a
//! whole magazine is imported at once rather than one buffer.
//!
//! Whoever owns a pair serialises access to it: [`Magazines`](crate::Magazines)
//! keeps one per CPU slot under a lock and one per thread without one; a
//! facade can embed pairs in its own thread-local struct.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::Allocator;

use crate::Backend;
use crate::depot::{Depot, Import};
use crate::magazine::{Header, items};
use crate::stats::PairCounts;

/// A loaded and a previous magazine of `T`s, used against an explicit
/// [`Depot`].
///
/// This is the building block under both front ends of
/// [`Magazines`](crate::Magazines), public so a caller can keep pairs where a
/// per-instance lookup would cost too much — e.g. one per size class in its
/// own thread-local struct. A hit (`alloc` with rounds in the loaded
/// magazine, `free` with room in it) is a bounds test, one load or store and
/// a counter increment: no lock, no atomic, no call.
///
/// A pair binds to the first depot it is used with and panics if later given
/// another (its magazines belong to that depot's allocator). Before dropping
/// a pair that holds magazines, [`flush`](Self::flush) it into its depot;
/// otherwise its items and magazines are leaked (a debug build panics).
/// The backend must not re-enter the same pair (it may use other caches).
///
/// ```
/// use core::mem::MaybeUninit;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use kmem_magazine::{Backend, Config, Depot, MagazinePair};
///
/// struct Ids(AtomicUsize);
/// impl Backend for Ids {
///     type Item = usize;
///     fn import(&self, out: &mut [MaybeUninit<usize>]) -> usize {
///         for slot in out.iter_mut() {
///             slot.write(self.0.fetch_add(1, Ordering::Relaxed));
///         }
///         out.len()
///     }
///     fn release(&self, _items: &[usize]) {}
/// }
///
/// let depot = Depot::new(Ids(AtomicUsize::new(0)), Config::new("ids", 8))?;
/// let mut pair = MagazinePair::new();
/// let a = pair.alloc(&depot).unwrap();
/// pair.free(&depot, a);
/// assert_eq!(pair.alloc(&depot), Some(a)); // LIFO: the hot item comes back
/// pair.free(&depot, a);
/// pair.flush(&depot);
/// # Ok::<(), kmem_magazine::MagazineError>(())
/// ```
pub struct MagazinePair<T> {
    /// Loaded magazine (`cc_loaded`), null if none.
    loaded: *mut Header,
    /// Rounds in it (`cc_rounds`).
    rounds: usize,
    /// Its capacity (0 if none), cached off the header for the free hit.
    cap: usize,
    /// Previous magazine (`cc_ploaded`), null if none.
    prev: *mut Header,
    /// Rounds in it (`cc_prounds`).
    prounds: usize,
    counts: PairCounts,
    /// Serial of the depot this pair is bound to (0: none yet).
    depot: u64,
    _item: PhantomData<T>,
}

// SAFETY: the pair owns its magazines outright and the items in them are
// `Send`; nothing in it is shared.
unsafe impl<T: Send> Send for MagazinePair<T> {}

impl<T: Copy> Default for MagazinePair<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy> MagazinePair<T> {
    /// An empty pair (no magazines yet), usable in a `const` thread-local.
    pub const fn new() -> Self {
        MagazinePair {
            loaded: ptr::null_mut(),
            rounds: 0,
            cap: 0,
            prev: ptr::null_mut(),
            prounds: 0,
            counts: PairCounts {
                alloc_hits: 0,
                alloc_misses: 0,
                free_hits: 0,
                free_misses: 0,
            },
            depot: 0,
            _item: PhantomData,
        }
    }

    /// Hits and misses counted since the pair last visited its depot (each
    /// visit folds them into [`Depot::stats`]).
    pub fn counts(&self) -> PairCounts {
        self.counts
    }

    /// Items held in the two magazines.
    pub fn cached(&self) -> usize {
        self.rounds + self.prounds
    }

    /// The rounds of the loaded magazine, the next one to be allocated
    /// last (empty if no magazine is loaded). A caller that tags what it
    /// hands out, as the `kmem` facade tags its threads' cache lines, reads
    /// them after a reload.
    ///
    /// ```
    /// # use core::mem::MaybeUninit;
    /// # use kmem_magazine::{Backend, Config, Depot, MagazinePair};
    /// struct Count;
    /// impl Backend for Count {
    ///     type Item = usize;
    ///     fn import(&self, out: &mut [MaybeUninit<usize>]) -> usize {
    ///         out.iter_mut().enumerate().for_each(|(i, o)| { o.write(i); });
    ///         out.len()
    ///     }
    ///     fn release(&self, _items: &[usize]) {}
    /// }
    /// let depot = Depot::new(Count, Config::new("count", 8))?;
    /// let mut pair = MagazinePair::new();
    /// assert!(pair.loaded_rounds().is_empty());
    /// let top = pair.alloc(&depot).unwrap();
    /// assert_eq!(pair.loaded_rounds().len(), pair.cached());
    /// assert!(!pair.loaded_rounds().contains(&top));
    /// pair.free(&depot, top);
    /// assert_eq!(pair.loaded_rounds().last(), Some(&top));
    /// pair.flush(&depot);
    /// # Ok::<(), kmem_magazine::MagazineError>(())
    /// ```
    pub fn loaded_rounds(&self) -> &[T] {
        if self.rounds == 0 {
            return &[];
        }
        // SAFETY: rounds > 0 implies a loaded magazine whose first `rounds`
        // rounds are initialised; the borrow of `self` keeps them in place.
        unsafe { core::slice::from_raw_parts(items::<T>(self.loaded), self.rounds) }
    }

    /// Takes an item from the loaded magazine, or `None` if it is empty: the
    /// whole fast path (a test, a load, two increments).
    #[inline(always)]
    pub fn alloc_hit(&mut self) -> Option<T> {
        let item = self.take()?;
        self.counts.alloc_hits += 1;
        Some(item)
    }

    /// Puts an item in the loaded magazine, or gives it back if it is full.
    #[inline(always)]
    pub fn free_hit(&mut self, item: T) -> Result<(), T> {
        self.put(item)?;
        self.counts.free_hits += 1;
        Ok(())
    }

    /// Pops a round from the loaded magazine, uncounted.
    #[inline(always)]
    pub(crate) fn take(&mut self) -> Option<T> {
        if self.rounds == 0 {
            return None;
        }
        self.rounds -= 1;
        // SAFETY: rounds > 0 implies a loaded magazine whose first `rounds+1`
        // rounds are initialised.
        Some(unsafe { *items::<T>(self.loaded).add(self.rounds) })
    }

    /// Pushes a round into the loaded magazine, uncounted.
    #[inline(always)]
    fn put(&mut self, item: T) -> Result<(), T> {
        if self.rounds >= self.cap {
            return Err(item);
        }
        // SAFETY: rounds < cap implies a loaded magazine with room at `rounds`.
        unsafe { items::<T>(self.loaded).add(self.rounds).write(item) };
        self.rounds += 1;
        Ok(())
    }

    /// Allocates an item: the loaded magazine, the previous one, the depot,
    /// then the backend. `None` only when the backend is exhausted.
    #[inline]
    pub fn alloc<B, A>(&mut self, depot: &Depot<B, A>) -> Option<T>
    where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        match self.alloc_hit() {
            Some(item) => Some(item),
            None => self.alloc_slow(depot),
        }
    }

    /// Frees an item: the loaded magazine, the previous one, an empty
    /// magazine from the depot or a new one, else straight to the backend.
    #[inline]
    pub fn free<B, A>(&mut self, depot: &Depot<B, A>, item: T)
    where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        if let Err(item) = self.free_hit(item) {
            self.free_slow(depot, item);
        }
    }

    #[cold]
    fn alloc_slow<B, A>(&mut self, depot: &Depot<B, A>) -> Option<T>
    where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        if let Some(item) = self.alloc_cached(depot) {
            depot.tick();
            return Some(item);
        }
        match depot.import() {
            Import::Magazine(hdr, rounds) => {
                self.install_full(depot, hdr, rounds);
                self.take()
            }
            Import::Single(item) => Some(item),
            Import::Exhausted => None,
        }
    }

    #[cold]
    fn free_slow<B, A>(&mut self, depot: &Depot<B, A>, item: T)
    where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        let Err(item) = self.free_cached(depot, item) else {
            depot.tick();
            return;
        };
        match depot.new_magazine() {
            Some(empty) => self.free_into_new(depot, empty, item),
            None => {
                self.counts.free_misses += 1;
                depot.release(&[item]);
            }
        }
    }

    fn bind<B: Backend<Item = T>, A: Allocator + Clone>(&mut self, depot: &Depot<B, A>) {
        if self.depot != depot.serial() {
            assert!(
                self.depot == 0,
                "magazine cache {}: a magazine pair bound to another depot was used with this one",
                depot.config().name
            );
            self.depot = depot.serial();
        }
    }

    #[inline]
    fn cap_of(hdr: *mut Header) -> usize {
        if hdr.is_null() {
            0
        } else {
            // SAFETY: a non-null magazine of the pair is live.
            unsafe { (*hdr).cap }
        }
    }

    /// Swaps loaded and previous (`kmem_cpu_reload` with the previous one).
    #[inline]
    fn swap(&mut self) {
        core::mem::swap(&mut self.loaded, &mut self.prev);
        core::mem::swap(&mut self.rounds, &mut self.prounds);
        self.cap = Self::cap_of(self.loaded);
    }

    /// Loads `hdr`, demoting the loaded magazine to previous.
    #[inline]
    fn reload(&mut self, hdr: NonNull<Header>, rounds: usize) {
        self.prev = self.loaded;
        self.prounds = self.rounds;
        self.loaded = hdr.as_ptr();
        self.rounds = rounds;
        self.cap = Self::cap_of(self.loaded);
        debug_assert!(self.rounds <= self.cap);
    }

    /// The alloc rules short of the backend: previous magazine, then the
    /// depot's full list. Takes no lock but the depot's.
    pub(crate) fn alloc_cached<B, A>(&mut self, depot: &Depot<B, A>) -> Option<T>
    where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        if let Some(item) = self.alloc_hit() {
            return Some(item);
        }
        if self.prounds > 0 {
            self.swap();
            return self.alloc_hit();
        }
        self.bind(depot);
        self.counts.alloc_misses += 1;
        let prev = NonNull::new(self.prev);
        let (full, rounds) = depot.exchange_full(prev, &mut self.counts)?;
        // The depot took the empty previous magazine.
        self.prev = ptr::null_mut();
        self.prounds = 0;
        self.reload(full, rounds);
        self.take()
    }

    /// Takes a magazine just filled from the backend: loads it if both
    /// magazines are empty, else (another thread refilled a shared slot
    /// meanwhile) hands it to the depot.
    pub(crate) fn install_full<B, A>(
        &mut self,
        depot: &Depot<B, A>,
        hdr: NonNull<Header>,
        rounds: usize,
    ) where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        self.bind(depot);
        if self.rounds == 0 && self.prounds == 0 {
            if let Some(prev) = NonNull::new(self.prev) {
                depot.put(prev, 0);
            }
            self.prev = ptr::null_mut();
            self.reload(hdr, rounds);
        } else {
            depot.put(hdr, rounds);
        }
    }

    /// The free rules short of allocating a magazine: previous magazine, then
    /// the depot's empty list.
    pub(crate) fn free_cached<B, A>(&mut self, depot: &Depot<B, A>, item: T) -> Result<(), T>
    where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        let item = match self.free_hit(item) {
            Ok(()) => return Ok(()),
            Err(item) => item,
        };
        if !self.prev.is_null() && self.prounds == 0 {
            self.swap();
            return self.free_hit(item);
        }
        self.bind(depot);
        let full = NonNull::new(self.prev).map(|p| (p, self.prounds));
        let Some(empty) = depot.exchange_empty(full, &mut self.counts) else {
            return Err(item);
        };
        self.counts.free_misses += 1;
        if full.is_some() {
            self.prev = ptr::null_mut();
            self.prounds = 0;
        }
        self.reload(empty, 0);
        self.put(item)
    }

    /// Frees `item` into `empty`, a magazine allocated with no lock held,
    /// unless the pair found room meanwhile (then `empty` goes to the depot).
    pub(crate) fn free_into_new<B, A>(
        &mut self,
        depot: &Depot<B, A>,
        empty: NonNull<Header>,
        item: T,
    ) where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        self.bind(depot);
        self.counts.free_misses += 1;
        let item = match self.put(item) {
            Ok(()) => {
                depot.put(empty, 0);
                return;
            }
            Err(item) => item,
        };
        if let Some(prev) = NonNull::new(self.prev) {
            depot.put(prev, self.prounds);
        }
        self.prev = ptr::null_mut();
        self.prounds = 0;
        self.reload(empty, 0);
        let stored = self.put(item).is_ok();
        debug_assert!(stored, "a new magazine has room");
    }

    /// Hands both magazines (with whatever they hold) and the counts to the
    /// depot, leaving the pair empty. Nothing is released to the backend;
    /// [`Depot::purge`] or [`Depot::reap`] does that later.
    pub fn flush<B, A>(&mut self, depot: &Depot<B, A>)
    where
        B: Backend<Item = T>,
        A: Allocator + Clone,
    {
        if self.loaded.is_null() && self.prev.is_null() && self.counts == PairCounts::default() {
            return;
        }
        self.bind(depot);
        for (hdr, rounds) in [(self.loaded, self.rounds), (self.prev, self.prounds)] {
            if let Some(hdr) = NonNull::new(hdr) {
                depot.put(hdr, rounds);
            }
        }
        depot.fold(&mut self.counts);
        self.loaded = ptr::null_mut();
        self.prev = ptr::null_mut();
        self.rounds = 0;
        self.prounds = 0;
        self.cap = 0;
    }

    /// Checks the pair's invariants; `what` names it in the error.
    pub(crate) fn check(&self, name: &str, what: &str) -> Result<(), crate::MagazineError> {
        for (hdr, rounds, cap) in [
            (self.loaded, self.rounds, self.cap),
            (self.prev, self.prounds, Self::cap_of(self.prev)),
        ] {
            let real = Self::cap_of(hdr);
            if rounds > real || cap != real {
                return Err(crate::MagazineError::Corrupt {
                    name: name.into(),
                    what: what.into(),
                    addr: hdr as usize,
                    detail: format!("{rounds} rounds, capacity {cap}, magazine holds {real}"),
                });
            }
        }
        Ok(())
    }
}

impl<T> Drop for MagazinePair<T> {
    fn drop(&mut self) {
        debug_assert!(
            std::thread::panicking() || (self.loaded.is_null() && self.prev.is_null()),
            "a MagazinePair holding magazines was dropped without flush()"
        );
    }
}

impl<T> core::fmt::Debug for MagazinePair<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MagazinePair")
            .field("rounds", &self.rounds)
            .field("cap", &self.cap)
            .field("prounds", &self.prounds)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}
