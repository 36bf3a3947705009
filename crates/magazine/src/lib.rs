//! Bonwick's magazine layer as a library: per-CPU or per-thread magazines
//! over a depot, magazine resizing and working-set reaping, generic over a
//! [`Backend`] that imports and releases batches of items.
//!
//! # Theory
//!
//! A *magazine* is an array of *rounds* (cached items, here any `Copy + Send`
//! value: object pointers for caches, `usize` addresses for vmem quantum
//! caches). Each CPU (or thread) keeps a [`MagazinePair`]: a *loaded*
//! magazine it allocates from and frees into, and the *previous* one. Only
//! when both are empty (alloc) or full (free) does it visit the [`Depot`],
//! which keeps a list of full and a list of empty magazines under one lock
//! and trades whole magazines: so the depot lock is taken once per magazine,
//! not once per item, and the [`Backend`] is asked for a whole magazine of
//! items at a time.
//!
//! | part | module | follows |
//! |---|---|---|
//! | loaded/previous rules | [`pair`](MagazinePair) | `kmem_cache_alloc`, `kmem_cache_free`, `kmem_cpu_reload` (illumos-kmem.c.txt); UMA `cache_alloc`/`zone_alloc_bucket` for the batch fill (freebsd-uma_core.c.txt) |
//! | depot lists, contention | [`Depot`] | `kmem_depot_alloc`, `kmem_depot_free` |
//! | magazine sizes | [`MAGAZINE_TYPES`] | `kmem_magtype[]` and its use in `kmem_cache_create` |
//! | resizing | [`Depot::update`] | `kmem_cache_update`, `kmem_cache_magazine_resize`, `kmem_depot_contention` (3) |
//! | working set, reap, purge | [`Depot::reap`], [`Magazines::purge`] | `kmem_depot_ws_update`, `kmem_depot_ws_reap`, `kmem_cache_magazine_purge`, `kmem_magazine_destroy` |
//! | per-CPU slots | [`Magazines`] in [`Mode::PerCpu`] | `cache_cpu[]`, `KMEM_CPU_CACHE` |
//! | per-thread pairs | [`Magazines`] in [`Mode::PerThread`] | UMA's per-CPU buckets, moved to threads |
//!
//! **Resizing.** Every failed try-lock of the depot counts as contention.
//! Once per interval (the seed's `kmem_reap_interval`, 15 s, read from an
//! injectable [`Clock`]) the depot moves its working set on and, if more
//! than `contention_threshold` (3) acquisitions had to wait, purges itself
//! and moves to the next row of [`MAGAZINE_TYPES`] — only while the object
//! size is below that row's `max_object`. Pairs keep their old, smaller
//! magazines until they come back to the depot empty, when they are freed.
//!
//! **Working set.** Each list remembers the fewest magazines it held during
//! the interval; [`Depot::reap`] releases as many as both the last and this
//! interval never needed.
//!
//! # Front ends and their cost
//!
//! * [`MagazinePair`] used directly (you own it, e.g. in your own
//!   thread-local struct): a hit is a compare, a load and two increments.
//!   Fastest; no per-instance lookup.
//! * [`Mode::PerThread`]: the calling thread's pair, found through a
//!   const-initialised thread-local table indexed by the cache's registry id
//!   ([`MAX_THREAD_CACHES`]): one TLS access and a compare more, and no lock
//!   or atomic read-modify-write. The default.
//! * [`Mode::PerCpu`]: the seed's shape. `current_cpu` (the rseq CPU id) finds the slot and its
//!   lock is taken: ≈1 ns plus an uncontended lock on this machine.
//!
//! The `magazine` benchmark measures the three hit paths beside mimalloc,
//! jemalloc and the system allocator.
//!
//! # Locking
//!
//! Lock order: registry id lock (per-thread node lists) → CPU slot lock →
//! depot lock. No lock is held across a backend call or a magazine
//! allocation: like the seed, which drops `cc_lock` around `kmem_slab_alloc`
//! and the magazine allocation, the per-CPU path unlocks, calls out, and
//! relocks to install the result. The depot lock is `kmem_sys::sync::Mutex`
//! (a futex that never allocates) and a CPU slot's is
//! `kmem_sys::sync::SpinMutex` (unlocked by a plain store: one atomic per
//! hit), or loom's mutex for both under `--cfg loom`.
//!
//! # Kernel shapes in user space
//!
//! * `NULL` from `kmem_cache_alloc` → `None` from [`Magazines::alloc`], only
//!   when the backend imports nothing.
//! * `curcpu` → `kmem_sys::current_cpu` (rseq CPU id, else `sched_getcpu`); the slot is locked,
//!   so migration between the lookup and the lock is harmless.
//! * The `kmem_update` timeout → [`Depot::tick`] on depot slow paths (and
//!   [`Magazines::update`]) against a [`Clock`].
//! * Magazine caches (`mt_cache`) → the `allocator_api2` allocator `A`, from
//!   which magazines, per-CPU slots, per-thread nodes and the cache's own
//!   state come; nothing here calls the global allocator unless `A` is it.
//! * Thread exit → a `pthread_key_create` destructor flushes the thread's
//!   pairs into their depots (see [`thread`](crate::MAX_THREAD_CACHES) docs
//!   in the source: `src/thread.rs`).
//!
//! # Example
//!
//! ```
//! use core::mem::MaybeUninit;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use kmem_magazine::{Backend, Config, Magazines};
//!
//! /// A trivial backend: hands out fresh integers.
//! struct Ids(AtomicUsize);
//! impl Backend for Ids {
//!     type Item = usize;
//!     fn import(&self, out: &mut [MaybeUninit<usize>]) -> usize {
//!         for slot in out.iter_mut() {
//!             slot.write(self.0.fetch_add(1, Ordering::Relaxed));
//!         }
//!         out.len()
//!     }
//!     fn release(&self, _items: &[usize]) {}
//! }
//!
//! let ids = Magazines::new(Ids(AtomicUsize::new(0)), Config::new("ids", 8))?;
//! let a = ids.alloc().unwrap();
//! let b = ids.alloc().unwrap();
//! assert_ne!(a, b);
//! ids.free(a);
//! ids.free(b);
//! assert_eq!(ids.stats().counts.free_hits, 2);
//! # Ok::<(), kmem_magazine::MagazineError>(())
//! ```

mod cache;
mod clock;
mod config;
mod depot;
mod error;
mod magazine;
mod magtype;
mod pair;
mod stats;
mod sync;
mod thread;

#[cfg(all(test, loom))]
mod tests;

pub use cache::{HotPath, Magazines};
pub use clock::{Clock, ManualClock, SYSTEM_CLOCK, SystemClock};
pub use config::{Config, Mode, NAME_MAX, Name};
pub use depot::Depot;
pub use error::MagazineError;
pub use magtype::{MAGAZINE_TYPES, MAX_ROUNDS, MagazineType};
pub use pair::MagazinePair;
pub use stats::{PairCounts, Stats};
pub use thread::MAX_THREAD_CACHES;

use core::mem::MaybeUninit;

/// The layer below the magazines: where items come from and go back to.
///
/// The magazine layer never looks inside an item. `import` may be called
/// from any thread, with no magazine lock held; so may `release`.
pub trait Backend: Send + Sync {
    /// What is cached: an object pointer, an address, an ID.
    type Item: Copy + Send;

    /// Fills up to `out.len()` slots from the front and returns how many it
    /// filled; 0 means exhausted. The first `n` slots must be initialised.
    fn import(&self, out: &mut [MaybeUninit<Self::Item>]) -> usize;

    /// Takes back items the magazine layer no longer caches.
    fn release(&self, items: &[Self::Item]);
}

impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    type Item = B::Item;

    fn import(&self, out: &mut [MaybeUninit<Self::Item>]) -> usize {
        (**self).import(out)
    }

    fn release(&self, items: &[Self::Item]) {
        (**self).release(items)
    }
}

impl<B: Backend + ?Sized> Backend for &B {
    type Item = B::Item;

    fn import(&self, out: &mut [MaybeUninit<Self::Item>]) -> usize {
        (**self).import(out)
    }

    fn release(&self, items: &[Self::Item]) {
        (**self).release(items)
    }
}
