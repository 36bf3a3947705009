//! kmem: the illumos kmem allocator in Rust — object caches with magazines
//! over slabs, `kmem_alloc` size classes, a vmem page layer, and a
//! `GlobalAlloc`.
//!
//! # How it fits together
//!
//! ```text
//! Kmem (GlobalAlloc) / kmem_alloc(size) ─► size class (illumos kmem_alloc_sizes)
//!   ─► this thread's MagazinePair for the class ─► class Depot ─► class Keg
//! Cache::alloc ─► Magazines (per-thread or per-CPU) ─► Depot ─► Keg ─► ctor
//! Keg ─► page layer: vmem arena of committed pages ◄─ import ─ vmem arena of
//!        reserved address space ◄─ one kmem_sys::Reservation
//! large kmem_alloc / Kmem ─► page layer directly
//! ```
//!
//! * [`page`] is FreeBSD `vm_kern.c`: `kva_alloc`/`kva_free`,
//!   `kmem_back`/`kmem_unback`, `kmem_malloc`/`kmem_free`. Freed pages are
//!   discarded at once (resident size drops), so every page it hands out
//!   reads as zero and zeroed large allocations need no memset. A word per
//!   page records the owning keg, which is how frees are checked in one load.
//! * [`Cache`] is `kmem_cache_create`/`_alloc`/`_free`/`_reap`: a
//!   `kmem_slab::Keg` behind `kmem_magazine::Magazines`. Objects are
//!   constructed when they leave the slab layer and destroyed when they go
//!   back (illumos object caching), or on every call with
//!   [`CacheBuilder::per_alloc`] (UMA). [`Cache::secondary`] is UMA's
//!   `uma_zsecond_create`, [`CacheBuilder::limit`] `uma_zone_set_max`,
//!   [`Cache::drain`] `zone_drain`.
//! * [`ObjectCache<T>`] is the safe, typed face of a cache.
//! * [`Cache::set_move`] / [`ObjectCache::set_move`] give a cache a move
//!   callback and a `kmem-move` slab consolidator (illumos
//!   `kmem_cache_set_move`); [`Cache::defragment`] consolidates now.
//! * [`kmem_alloc`], [`kmem_zalloc`], [`kmem_free`] route by the seed's size
//!   table ([`sizes`]); [`Kmem`] puts the same classes under
//!   `#[global_allocator]`.
//! * Blocks above the classes come from the page layer through a bounded
//!   FIFO of recently freed blocks (at most 32 blocks, 64 MiB), flushed by
//!   every reap, so a big buffer freed and re-allocated skips the discard
//!   and the page faults.
//! * Size classes whose buffers share cache lines free another thread's
//!   buffer into a per-thread remote magazine pair that only feeds the
//!   depot (`home`: a byte per 64-byte line names the thread that owns
//!   it), so no thread reuses a line another thread writes.
//! * [`stats`] prints `::kmastat`-style rows; [`stats::reap_all`] is
//!   `kmem_reap`; [`reaper`] runs it on the seed's 15 s timer.
//! * [`debug`] is illumos kmem debugging: [`CacheBuilder::debug`] with the
//!   seed's `KMF_*` flags (audit, deadbeef, redzone, contents, lite,
//!   firewall), `kmem_error`'s reports, the transaction, content, failure
//!   and slab logs, [`debug::verify`], and the `KMEM_DEBUG` environment
//!   variable for the size classes under [`Kmem`].
//!
//! # Kernel shapes in user space
//!
//! | illumos / FreeBSD               | here |
//! |---------------------------------|------|
//! | per-CPU `kmem_cpu_cache_t`      | per-thread magazine pairs by default (no lock or atomic on a hit; flushed at thread exit); per-CPU slots by `kmem_sys::current_cpu` (rseq) with [`Mode::PerCpu`] |
//! | `KM_SLEEP` / `M_WAITOK`         | [`Cache::alloc_wait`] with an optional timeout |
//! | `KM_NOSLEEP` returning `NULL`   | `Result<_, KmemError>` |
//! | kernel heap arena               | one `mmap(PROT_NONE, MAP_NORESERVE)` reservation of up to 256 GiB |
//! | `kmem_update` / `kmem_reap` timeouts | [`reaper::start`] or [`Kmem::with_reaper`]: a thread reaping every cache each interval; or [`stats::reap_all`], [`Kmem::reap`] from your own timer |
//! | bookkeeping in kmem's own caches| [`Meta`], a small heap on `mmap` that never calls the global allocator |
//!
//! # Locking
//!
//! Locks are `kmem_sys::sync::Mutex` (a futex that never allocates; not
//! parking_lot, whose parking table is allocated through the global
//! allocator). Order: page-layer arenas → depot → keg, as the crates below
//! document; no lock is held across a constructor, destructor or reclaim
//! callback.
//!
//! # Checks
//!
//! Always on: [`Cache::free`] of a pointer that is not a buffer of the
//! cache's keg (page map), [`kmem_free`] with a size of another class
//! ([`KmemError::WrongSize`]), page-layer frees of a wrong range, and a
//! `Kmem` dealloc whose layout does not match its block (aborts with a
//! message: a global allocator must not unwind). Double frees into a
//! magazine are caught only when the buffer reaches the keg.
//!
//! With debugging ([`debug`]): every `KMERR_*` class of the seed — use
//! after free, redzone, double free, bad address, bad buftag, bad bufctl,
//! wrong cache, wrong size, free inside a buffer — on every transaction,
//! reported with the cache, buffer, offset and value, and acted on by
//! [`debug::Action`]. A debugging cache runs without magazines; caches
//! without debugging pay nothing for it.

mod alloc;
mod cache;
pub mod debug;
pub mod error;
mod fill;
mod global;
mod home;
mod large;
mod meta;
mod moving;
mod object;
pub mod page;
mod provenance;
pub mod reaper;
pub mod sizes;
pub mod stats;

pub use alloc::{kmem_alloc, kmem_free, kmem_zalloc};
pub use cache::{Cache, CacheBuilder};
pub use error::KmemError;
pub use fill::{Ctor, Dtor};
pub use global::Kmem;
pub use kmem_magazine::Mode;
pub use kmem_move::{Defragmented, Move, MoveStats};
pub use meta::Meta;
pub use object::{Obj, ObjectCache};
