//! The depot: full and empty magazine lists under one lock, the backend
//! behind them, contention counting, magazine resizing and working-set reaping.
//!
//! Follows `illumos-kmem.c.txt`: `kmem_depot_alloc` / `kmem_depot_free` (list
//! exchange; a failed `mutex_tryenter` counts as contention),
//! `kmem_depot_ws_update` / `kmem_depot_ws_reap` (working set),
//! `kmem_cache_update` (once per interval: working-set update and the
//! contention test against `kmem_depot_contention`),
//! `kmem_cache_magazine_resize` (purge, then the next `kmem_magtype` row) and
//! `kmem_magazine_destroy` (rounds back to the layer below, magazine freed).

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU64 as StaticU64;
use std::time::Duration;

use allocator_api2::alloc::{Allocator, Global};
use kmem_sys::CachePadded;

use crate::magazine::{Chain, Header, MagList, alloc_magazine, free_magazine, items};
use crate::magtype::{MAGAZINE_TYPES, MagazineType};
use crate::stats::{PairCounts, Stats};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::{Backend, Config, MagazineError};

/// Source of depot serial numbers; 0 is never handed out (it marks an
/// unbound [`MagazinePair`](crate::MagazinePair)).
static NEXT_SERIAL: StaticU64 = StaticU64::new(1);

/// What [`Depot::import`] got from the backend.
pub(crate) enum Import<T> {
    /// A magazine holding `rounds > 0` imported items.
    Magazine(NonNull<Header>, usize),
    /// One item, imported without a magazine (metadata memory ran out).
    Single(T),
    /// The backend had nothing.
    Exhausted,
}

/// The state behind the depot lock (the seed's `cache_depot_lock` covers the
/// same fields of `kmem_cache_t`).
struct State<T> {
    full: MagList<T>,
    empty: MagList<T>,
    /// Current row of [`MAGAZINE_TYPES`].
    type_index: usize,
    /// Lock acquisitions that found the lock held (`cache_depot_contention`).
    contention: u64,
    /// `contention` at the last interval (`cache_depot_contention_prev`).
    contention_prev: u64,
    /// Skip one contention test after a resize (the seed adds `INT_MAX` to
    /// `cache_depot_contention_prev` for the same effect).
    cooldown: bool,
    /// When the next interval update is due.
    next_update: Duration,
    resizes: u64,
    reaped: u64,
    /// Hit and miss counts folded in by pairs when they visit the depot.
    counts: PairCounts,
}

/// Full and empty magazines shared by every CPU slot or thread of one cache,
/// with the [`Backend`] behind them.
///
/// [`Magazines`](crate::Magazines) owns one; a [`MagazinePair`](crate::MagazinePair)
/// embedded elsewhere (e.g. in a facade's own thread-local struct) is given
/// one by reference on each call. All magazine storage comes from `A`.
pub struct Depot<B: Backend, A: Allocator + Clone = Global> {
    serial: u64,
    backend: B,
    alloc: A,
    config: Config,
    state: CachePadded<Mutex<State<B::Item>>>,
    /// Rounds of a new magazine; read without the lock to spot magazines made
    /// before a resize.
    cap: AtomicUsize,
    /// `State::next_update` in nanoseconds, for [`Depot::tick`] to read
    /// without the lock.
    next_update: AtomicU64,
    imported: AtomicU64,
    import_calls: AtomicU64,
    released: AtomicU64,
    release_calls: AtomicU64,
}

// SAFETY: the raw magazine pointers in `State` are owned by the depot and
// only touched under its lock; items are `Send`; `B` and `A` are `Send`.
unsafe impl<B: Backend, A: Allocator + Clone + Send> Send for Depot<B, A> {}
// SAFETY: every `&self` method either takes the depot lock or uses atomics;
// `B: Sync`, and `A` is only used to allocate and free (requires `A: Sync`).
unsafe impl<B: Backend, A: Allocator + Clone + Send + Sync> Sync for Depot<B, A> {}

impl<B: Backend> Depot<B> {
    /// A depot over `backend` with magazine storage from the global allocator.
    pub fn new(backend: B, config: Config) -> Result<Self, MagazineError> {
        Self::new_in(backend, config, Global)
    }
}

impl<B: Backend, A: Allocator + Clone> Depot<B, A> {
    /// A depot over `backend` whose magazines are allocated from `alloc`.
    pub fn new_in(backend: B, config: Config, alloc: A) -> Result<Self, MagazineError> {
        config.validate()?;
        let type_index = config.start_index();
        let now = config.clock.now();
        Ok(Depot {
            serial: NEXT_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            backend,
            alloc,
            state: CachePadded::new(Mutex::new(State {
                full: MagList::new(),
                empty: MagList::new(),
                type_index,
                contention: 0,
                contention_prev: 0,
                cooldown: false,
                next_update: now + config.interval,
                resizes: 0,
                reaped: 0,
                counts: PairCounts::default(),
            })),
            cap: AtomicUsize::new(MAGAZINE_TYPES[type_index].rounds),
            next_update: AtomicU64::new((now + config.interval).as_nanos() as u64),
            config,
            imported: AtomicU64::new(0),
            import_calls: AtomicU64::new(0),
            released: AtomicU64::new(0),
            release_calls: AtomicU64::new(0),
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The configuration the depot was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The allocator magazines come from.
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// Rounds per magazine now (grows under contention).
    pub fn magazine_size(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// Takes the lock, counting a failed try as contention
    /// (`kmem_depot_alloc`).
    #[inline]
    fn lock_counted(&self) -> MutexGuard<'_, State<B::Item>> {
        match self.state.try_lock() {
            Some(g) => g,
            None => {
                let mut g = self.state.lock();
                g.contention += 1;
                g
            }
        }
    }

    /// Runs [`Depot::update`] if an interval has passed. Front ends call it
    /// after a depot exchange, once no slot lock or pair borrow is held
    /// (a resize releases items to the backend).
    #[inline]
    pub fn tick(&self) {
        let now = self.config.clock.now().as_nanos() as u64;
        if now >= self.next_update.load(Ordering::Relaxed) {
            self.update();
        }
    }

    /// Exchanges for a full magazine: pops one off the full list and, if one
    /// came, pushes `empty` (the pair's old previous magazine) onto the empty
    /// list, in one lock hold. Folds `counts` into the depot's totals.
    pub(crate) fn exchange_full(
        &self,
        empty: Option<NonNull<Header>>,
        counts: &mut PairCounts,
    ) -> Option<(NonNull<Header>, usize)> {
        let (got, stale) = {
            let mut st = self.lock_counted();
            st.counts.add(counts);
            *counts = PairCounts::default();
            let got = st.full.pop();
            let mut stale = None;
            if let (Some(_), Some(e)) = (got, empty) {
                if self.is_current(e) {
                    // SAFETY: the pair hands over ownership of `e`.
                    unsafe { st.empty.push(e, 0) };
                } else {
                    stale = Some(e);
                }
            }
            (got, stale)
        };
        if let Some(e) = stale {
            // SAFETY: an empty magazine from before a resize, owned by us.
            unsafe { free_magazine::<B::Item, A>(&self.alloc, e) };
        }
        got
    }

    /// Exchanges for an empty magazine: pops one off the empty list and, if
    /// one came, pushes `full` (with its rounds) onto the full list.
    pub(crate) fn exchange_empty(
        &self,
        full: Option<(NonNull<Header>, usize)>,
        counts: &mut PairCounts,
    ) -> Option<NonNull<Header>> {
        let mut st = self.lock_counted();
        st.counts.add(counts);
        *counts = PairCounts::default();
        let got = st.empty.pop().map(|(h, _)| h);
        if let (Some(_), Some((f, rounds))) = (got, full) {
            // SAFETY: the pair hands over ownership of `f`.
            unsafe { push_full(&mut st, f, rounds) };
        }
        got
    }

    /// Takes back a magazine holding `rounds` items (`kmem_depot_free`):
    /// onto the full list if it holds any, else onto the empty list, or
    /// freed if it is empty and of a size from before a resize.
    pub(crate) fn put(&self, hdr: NonNull<Header>, rounds: usize) {
        if rounds == 0 && !self.is_current(hdr) {
            // SAFETY: the caller hands over ownership of an empty magazine.
            unsafe { free_magazine::<B::Item, A>(&self.alloc, hdr) };
            return;
        }
        let mut st = self.state.lock();
        // SAFETY: the caller hands over ownership.
        unsafe {
            if rounds == 0 {
                st.empty.push(hdr, 0);
            } else {
                push_full(&mut st, hdr, rounds);
            }
        }
    }

    /// Folds a pair's counts into the depot's totals.
    pub(crate) fn fold(&self, counts: &mut PairCounts) {
        self.state.lock().counts.add(counts);
        *counts = PairCounts::default();
    }

    /// Whether `hdr` has the current magazine size.
    #[inline]
    fn is_current(&self, hdr: NonNull<Header>) -> bool {
        // SAFETY: the caller owns the live magazine.
        unsafe { (*hdr.as_ptr()).cap == self.magazine_size() }
    }

    /// A new empty magazine of the current size, or `None` if the metadata
    /// allocator is out of memory.
    pub(crate) fn new_magazine(&self) -> Option<NonNull<Header>> {
        let t = MAGAZINE_TYPES[MagazineType::index_for_rounds(self.magazine_size())?];
        alloc_magazine::<B::Item, A>(&self.alloc, t.rounds, t.align)
    }

    /// Fills an empty magazine from the backend (UMA's `zone_alloc_bucket`;
    /// the seed's `kmem_slab_alloc` brings one buffer at a time). Runs with
    /// no lock held.
    #[cold]
    pub(crate) fn import(&self) -> Import<B::Item> {
        let hdr = self.state.lock().empty.pop().map(|(h, _)| h);
        let Some(hdr) = hdr.or_else(|| self.new_magazine()) else {
            let mut one = [MaybeUninit::uninit()];
            return match self.import_into(&mut one) {
                // SAFETY: the backend initialised the one item it counted.
                1 => Import::Single(unsafe { one[0].assume_init() }),
                _ => Import::Exhausted,
            };
        };
        // SAFETY: `hdr` is a live magazine we own, with `cap` rounds of
        // storage after the header.
        let slots = unsafe {
            let cap = (*hdr.as_ptr()).cap;
            core::slice::from_raw_parts_mut(items::<B::Item>(hdr.as_ptr()).cast(), cap)
        };
        match self.import_into(slots) {
            0 => {
                self.put(hdr, 0);
                Import::Exhausted
            }
            n => Import::Magazine(hdr, n),
        }
    }

    fn import_into(&self, slots: &mut [MaybeUninit<B::Item>]) -> usize {
        let n = self.backend.import(slots);
        assert!(
            n <= slots.len(),
            "magazine cache {}: backend imported {n} items into {} slots",
            self.config.name,
            slots.len()
        );
        self.import_calls.fetch_add(1, Ordering::Relaxed);
        self.imported.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Returns items to the backend.
    pub(crate) fn release(&self, items: &[B::Item]) {
        if items.is_empty() {
            return;
        }
        self.release_calls.fetch_add(1, Ordering::Relaxed);
        self.released
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        self.backend.release(items);
    }

    /// Releases a magazine's rounds and frees it (`kmem_magazine_destroy`).
    pub(crate) fn destroy(&self, hdr: NonNull<Header>, rounds: usize) {
        // SAFETY: the caller owns the magazine; its first `rounds` rounds are
        // initialised items.
        unsafe {
            let items = core::slice::from_raw_parts(items::<B::Item>(hdr.as_ptr()), rounds);
            self.release(items);
            free_magazine::<B::Item, A>(&self.alloc, hdr);
        }
    }

    fn destroy_chain(&self, chain: Chain<B::Item>) {
        for (hdr, rounds) in chain {
            self.destroy(hdr, rounds);
        }
    }

    /// The periodic maintenance of `kmem_cache_update`, run when an interval
    /// has passed (depot slow paths call it; callers may too): moves the
    /// working set on, and grows the magazines if more than
    /// `contention_threshold` lock acquisitions had to wait this interval.
    pub fn update(&self) {
        self.update_at(false);
    }

    /// [`update`](Self::update) whether or not an interval has passed, for
    /// a caller that keeps the timer itself, as the seed's `kmem_update`
    /// timeout does (the `kmem` facade's background reaper): each call ends
    /// a working-set interval.
    pub fn update_now(&self) {
        self.update_at(true);
    }

    fn update_at(&self, force: bool) {
        let grow = {
            let mut st = self.state.lock();
            let now = self.config.clock.now();
            if !force && now < st.next_update {
                return;
            }
            st.next_update = now + self.config.interval;
            self.next_update
                .store(st.next_update.as_nanos() as u64, Ordering::Relaxed);
            ws_update(&mut st);
            let busy = st.contention - st.contention_prev > self.config.contention_threshold;
            let grow = self.config.resizing
                && !st.cooldown
                && busy
                && MagazineType::can_grow(st.type_index, self.config.object_size);
            st.cooldown = false;
            st.contention_prev = st.contention;
            grow
        };
        if grow {
            self.resize();
        }
    }

    /// Moves to the next magazine type (`kmem_cache_magazine_resize`): the
    /// depot's magazines are released first; magazines held by pairs keep
    /// their size until they come back, when empty ones are freed.
    #[cold]
    fn resize(&self) {
        self.purge();
        let mut st = self.state.lock();
        if MagazineType::can_grow(st.type_index, self.config.object_size) {
            st.type_index += 1;
            st.resizes += 1;
            st.cooldown = true;
            self.cap
                .store(MAGAZINE_TYPES[st.type_index].rounds, Ordering::Relaxed);
        }
    }

    /// Releases the depot magazines beyond the working set
    /// (`kmem_depot_ws_reap`): as many full and empty magazines as the lists
    /// never dipped below in both the last and the current interval.
    pub fn reap(&self) {
        let (full, empty) = {
            let mut st = self.state.lock();
            let nfull = st.full.reaplimit.min(st.full.min);
            let nempty = st.empty.reaplimit.min(st.empty.min);
            let full = st.full.take(nfull);
            let empty = st.empty.take(nempty);
            st.reaped += (nfull + nempty) as u64;
            (full, empty)
        };
        self.destroy_chain(full);
        self.destroy_chain(empty);
    }

    /// Releases every item and magazine in the depot (the depot half of
    /// `kmem_cache_magazine_purge`: two working-set updates, then a reap).
    pub fn purge(&self) {
        {
            let mut st = self.state.lock();
            ws_update(&mut st);
            ws_update(&mut st);
        }
        self.reap();
    }

    /// Looks for `item` in the depot's full magazines and, if found, puts
    /// `replacement` in its place and returns `true`: the caller owns `item`
    /// from then on (illumos `kmem_hunt_mag` over `cache_full`, as
    /// `kmem_hunt_mags` does for a consolidator). Magazines held by CPU slots
    /// or threads are not searched.
    pub fn hunt(&self, item: B::Item, replacement: B::Item) -> bool
    where
        B::Item: PartialEq,
    {
        let st = self.state.lock();
        for (hdr, rounds) in st.full.iter() {
            // SAFETY: a live magazine on the full list, whose first `rounds`
            // rounds are initialised; the depot lock is held.
            let slots = unsafe { items::<B::Item>(hdr.as_ptr()) };
            for i in 0..rounds {
                // SAFETY: as above, i < rounds.
                let round = unsafe { &mut *slots.add(i) };
                if *round == item {
                    *round = replacement;
                    return true;
                }
            }
        }
        false
    }

    /// Counters of the depot, with the pair counts folded into it so far.
    /// [`Magazines::stats`](crate::Magazines::stats) adds its slots to this.
    pub fn stats(&self) -> Stats {
        let st = self.state.lock();
        Stats {
            magazine_size: MAGAZINE_TYPES[st.type_index].rounds,
            magazine_type: st.type_index,
            resizes: st.resizes,
            counts: st.counts,
            depot_alloc: st.full.taken,
            depot_free: st.empty.taken,
            depot_contention: st.contention,
            full_magazines: st.full.total,
            empty_magazines: st.empty.total,
            cached: st.full.rounds(),
            imported: self.imported.load(Ordering::Relaxed),
            import_calls: self.import_calls.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            release_calls: self.release_calls.load(Ordering::Relaxed),
            reaped: st.reaped,
        }
    }

    /// Walks both lists and checks every magazine and count.
    pub fn check(&self) -> Result<(), MagazineError> {
        let st = self.state.lock();
        let cap = self.magazine_size();
        let bad = |what: &str, hdr: NonNull<Header>, detail: String| MagazineError::Corrupt {
            name: self.config.name.to_string(),
            what: what.into(),
            addr: hdr.as_ptr() as usize,
            detail,
        };
        for (list, what, full) in [
            (&st.full, "depot full list", true),
            (&st.empty, "depot empty list", false),
        ] {
            let mut n = 0;
            for (hdr, rounds) in list.iter() {
                n += 1;
                // SAFETY: list magazines are live while the lock is held.
                let mcap = unsafe { (*hdr.as_ptr()).cap };
                if full && (rounds == 0 || rounds > mcap) {
                    return Err(bad(
                        what,
                        hdr,
                        format!("{rounds} rounds in a magazine of {mcap}"),
                    ));
                }
                if !full && (rounds != 0 || mcap != cap) {
                    return Err(bad(
                        what,
                        hdr,
                        format!("{rounds} rounds, capacity {mcap} (current {cap})"),
                    ));
                }
            }
            if n != list.total || list.min > list.total {
                return Err(MagazineError::Corrupt {
                    name: self.config.name.to_string(),
                    what: what.into(),
                    addr: 0,
                    detail: format!(
                        "{n} magazines linked, total {} min {}",
                        list.total, list.min
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Pushes a magazine holding `rounds > 0` items onto the full list.
///
/// # Safety
/// The caller hands over ownership of `hdr`.
unsafe fn push_full<T>(st: &mut State<T>, hdr: NonNull<Header>, rounds: usize) {
    debug_assert!(rounds > 0);
    // SAFETY: forwarded from the caller.
    unsafe { st.full.push(hdr, rounds) };
}

/// `kmem_depot_ws_update`: last interval's minimum becomes the reap limit.
fn ws_update<T>(st: &mut State<T>) {
    for list in [&mut st.full, &mut st.empty] {
        list.reaplimit = list.min;
        list.min = list.total;
    }
}

impl<B: Backend, A: Allocator + Clone> Drop for Depot<B, A> {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        let full = st.full.take(usize::MAX);
        let empty = st.empty.take(usize::MAX);
        self.destroy_chain(full);
        self.destroy_chain(empty);
    }
}

impl<B: Backend + core::fmt::Debug, A: Allocator + Clone> core::fmt::Debug for Depot<B, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Depot")
            .field("name", &self.config.name)
            .field("backend", &self.backend)
            .field("magazine_size", &self.magazine_size())
            .finish_non_exhaustive()
    }
}
