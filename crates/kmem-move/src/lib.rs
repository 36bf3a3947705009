//! The illumos slab consolidator (`illumos-kmem.c.txt`, theory statement
//! sections 2–3 and `kmem_cache_set_move` … `kmem_cache_scan`): moves
//! objects out of sparsely used slabs into well used ones, with the
//! client's help, so that whole slabs empty and go back to the page source.
//!
//! # Theory
//!
//! External fragmentation is partial slabs: each holds a few live objects
//! and keeps all its pages. Only the client knows whether an object can
//! move, so the client gives a [move callback](MoveFn) and the
//! consolidator asks it, object by object, to copy `old` into a `new`
//! buffer it chose.
//!
//! **Is the keg fragmented?** ([`Consolidator::scan`], illumos
//! `kmem_cache_scan` / `kmem_cache_is_fragmented` /
//! `kmem_cache_frag_threshold`). Only with at least [`FRAG_MINSLABS`] slabs
//! in use, more than one partial, and more than
//! [`FRAG_NUMER`]/[`FRAG_DENOM`] of their buffers free.
//!
//! **Which slabs?** The keg keeps partial slabs in usage order
//! ([`kmem_slab::Keg::partial_slabs`], most allocated first). Candidates
//! are taken from the *least*-used end, scanning at most
//! [`RECLAIM_SCAN_RANGE`] slabs for at most [`RECLAIM_MAX_SLABS`]
//! candidates per scan (`kmem_move_buffers`). A candidate has one buffer
//! allocated, or fewer than `numer`/[`VOID_FRACTION`] of them
//! (`kmem_slab_is_reclaimable`), where `numer` starts at 1 and, every
//! `RECLAIM_SCAN_RANGE` scans, rises by one (to at most 7/8) if fewer than
//! half the candidates sought were found and falls by one (to 1/8) if all
//! were (`kmem_adjust_reclaim_threshold`); it resets to 1/8 once the keg is
//! no longer fragmented.
//!
//! **Where to?** Destinations come from the *most*-used end: first a slab
//! marked no-move (which the seed sorts before every other, so that a slab
//! which cannot empty at least fills up), then the most-allocated partial
//! slab other than the source ([`kmem_slab::Keg::alloc_avoiding`]); never an
//! empty or new slab. A destination is taken when the move is queued, so no
//! later move picks it too. When a destination comes from a slab this scan
//! is emptying, the two ends have met and the scan stops.
//!
//! **Pending moves** are kept in a map keyed by the old buffer's address
//! (`kmd_moves_pending`): a second request for the same buffer is dropped
//! (counted in [`MoveStats::already_pending`]), so no buffer is moved twice
//! at once. Each pending move pins its source slab
//! ([`kmem_slab::Keg::pin_slab`]) so the slab's memory stays mapped while a
//! callback may read `old`.
//!
//! **The dead-slab list** (`kmd_deadlist`, `kmem_move_end`): when a move
//! ends its slab goes on the list, still pinned; when the last pending move
//! ends, every slab on the list is unpinned, and if any of them emptied the
//! keg is reaped ([`MoveStats::dead_slabs_freed`],
//! [`MoveStats::slabs_reclaimed`]).
//!
//! **Running a move** (`kmem_move_buffer`): recheck that the slab is still
//! a candidate and the buffer still allocated (if it is free on its slab
//! there is nothing to do), construct the destination
//! ([`Client::construct`]), call the client, then by the reply ([`Move`]):
//!
//! | reply | old buffer | new buffer | slab |
//! |---|---|---|---|
//! | `Yes` | destroyed and freed | the object | refusals forgotten (`kmem_slab_move_yes`) |
//! | `No` | kept | destroyed and freed | marked no-move (`kmem_slab_move_no`) |
//! | `Later` | kept | destroyed and freed | later count +1; at [`DISBELIEF`] treated as `No` |
//! | `DontNeed` | destroyed and freed | destroyed and freed | as `Yes` |
//! | `DontKnow` | if [`Client::hunt`] finds it in a magazine: destroyed and freed | destroyed and freed | as `Yes` if found |
//!
//! A no-move mark lasts while the slab is partial and the buffer that
//! caused it is allocated; [`Consolidator::move_notify`] clears it and
//! queues the move again (`kmem_cache_move_notify`).
//!
//! **Desperate mode** ([`Consolidator::defragment`], `kmem_cache_defrag`):
//! every partial slab but the first is a candidate whatever the
//! thresholds and marks, so the partial list closes from both ends like an
//! accordion.
//!
//! # Threads and locking
//!
//! A [`Consolidator`] owns one thread (the seed's `kmem_move_taskq`, with
//! the scan the seed runs from its maintenance thread): it sleeps on a
//! condition variable until a [`move_notify`](Consolidator::move_notify),
//! a [`scan`](Consolidator::scan) request or the interval
//! ([`SCAN_INTERVAL`], `kmem_reap_interval`), then runs the moves it queued.
//! No move ever runs on an allocation path. One
//! [`kmem_sys::sync::Mutex`] (it never allocates) guards the state; it is
//! taken before the keg's lock and is never held across a call to the
//! client or the callback.
//!
//! # Kernel shapes in user space
//!
//! | illumos | here |
//! |---|---|
//! | `kmem_cbrc_t` | [`Move`] |
//! | `cache_move(buf, newbuf, size, arg)` | a closure `Fn(old, new, size) -> Move` ([`MoveFn`]) |
//! | `kmem_move_taskq`, `kmem_taskq` | one thread per consolidator |
//! | `KMEM_SLAB_NOMOVE`, `slab_later_count`, `slab_stuck_offset` | marks kept by the consolidator, per slab |
//! | `KMEM_SLAB_MOVE_PENDING`, delayed `kmem_slab_destroy` | slab pins, the dead-slab list, then a keg reap |
//! | `kmem_hunt_mags` | [`Client::hunt`] |
//! | `kmem_cache_defrag` from `kmem_cache_reap` | [`Consolidator::defragment`], on the caller's thread |
//! | `KMEM_STAT_ADD(kmem_move_stats.*)` | [`MoveStats`], per consolidator |
//!
//! Setting a callback on a cache that has allocated is refused by the
//! facade (`kmem_cache_set_move` asserts `cache_slab_alloc == 0`), so every
//! object the consolidator sees was allocated under the callback.
//!
//! # Writing a move callback
//!
//! The callback is called on the consolidator thread with `old`, a buffer
//! that is allocated *from the slab's point of view* — it may be one of
//! your live objects, or one you freed that sits constructed in a
//! magazine — and `new`, a constructed buffer that is yours only if you
//! answer `Yes`. Three rules (theory statement, section 2):
//!
//! 1. **Recognise a live object without trusting it.** The memory of `old`
//!    is mapped and was last written by you or by your constructor, but the
//!    object may be free. Either look `old`'s address up in a structure of
//!    yours under its lock (the hash-table example does that: a node is
//!    live exactly when it is linked), or keep a tag in the object — e.g.
//!    a low bit set in a pointer field when the object is freed, as the
//!    seed's `o_container | 0x1` — and check it under the lock that guards
//!    it. Not recognised: answer `DontKnow` (the consolidator then looks in
//!    the magazines).
//! 2. **Take the lock that keeps the object from being freed or used while
//!    you copy**, with a *try*-lock where your normal paths take the locks
//!    in another order: the consolidator calls in from its own thread, and
//!    a blocking lock taken in the wrong order deadlocks. Busy: answer
//!    `Later`.
//! 3. **Fix every reference.** Copy the object into `new`, re-point every
//!    pointer that named `old` (list links, hash buckets, back pointers),
//!    and mark `old` as not yours (clear its tag) before you unlock; then
//!    answer `Yes`. The consolidator destroys and frees `old`. An object
//!    that holds references you cannot find (a pointer held by another
//!    thread, a raw pointer handed to C) cannot move: answer `No`, and call
//!    [`Consolidator::move_notify`] when it can.
//!
//! Never free `old` or `new` in the callback, and never block on the
//! consolidator (its own methods) from inside it.
//!
//! # Example
//!
//! The facade crate `kmem` wires a consolidator to its caches
//! (`Cache::set_move`, `ObjectCache::set_move`); see its `move` example for
//! a hash table whose nodes move. Standalone, over a bare keg:
//!
//! ```
//! use std::collections::HashSet;
//! use std::ptr::NonNull;
//! use std::sync::{Arc, Mutex};
//!
//! use kmem_move::{Client, Consolidator, Move, SCAN_INTERVAL};
//! use kmem_slab::Keg;
//!
//! /// A keg of plain 64-byte records: no constructor, no magazines.
//! struct Records(Keg);
//!
//! impl Client for Records {
//!     type Source = kmem_sys::OsPages;
//!     type Meta = allocator_api2::alloc::Global;
//!     fn name(&self) -> &'static str { "records" }
//!     fn keg(&self) -> &Keg { &self.0 }
//!     fn construct(&self, _: NonNull<u8>) -> bool { true }
//!     fn destroy(&self, _: NonNull<u8>) {}
//!     fn hunt(&self, _: NonNull<u8>) -> bool { false }
//! }
//!
//! let keg = Keg::builder("records", 64, 8).build()?;
//! // 1000 records, 9 in 10 freed: many sparse slabs.
//! let all: Vec<_> = (0..1000).map(|_| keg.alloc()).collect::<Result<_, _>>()?;
//! let live: Arc<Mutex<HashSet<usize>>> = Arc::default();
//! for (i, p) in all.into_iter().enumerate() {
//!     if i % 10 == 0 {
//!         live.lock().unwrap().insert(p.as_ptr() as usize);
//!     } else {
//!         // SAFETY: a buffer of this keg, freed once.
//!         unsafe { keg.free(p)? };
//!     }
//! }
//! let l = live.clone();
//! let cons = Consolidator::spawn(
//!     Records(keg),
//!     move |old, new, size| {
//!         let mut live = l.lock().unwrap();
//!         if !live.remove(&(old.as_ptr() as usize)) {
//!             return Move::DontKnow; // not one of ours
//!         }
//!         // SAFETY: a live record (we hold the lock that guards it) and a
//!         // fresh buffer, both `size` bytes.
//!         unsafe { core::ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), size) };
//!         live.insert(new.as_ptr() as usize);
//!         Move::Yes
//!     },
//!     SCAN_INTERVAL,
//! )?;
//! let d = cons.defragment();
//! assert!(d.partial_after < d.partial_before);
//! assert!(cons.stats().yes > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
mod consolidator;
mod defrag;
mod engine;
mod error;
mod reply;
mod stats;

use std::time::Duration;

pub use client::Client;
pub use consolidator::{Consolidator, Defragmented};
pub use error::MoveError;
pub use reply::{Move, MoveFn};
pub use stats::MoveStats;

/// The fraction slab policy is counted in (illumos `KMEM_VOID_FRACTION`,
/// `kmem_impl.h`): 8, so thresholds step by 1/8.
pub const VOID_FRACTION: usize = kmem_slab::VOID_FRACTION;

/// Slabs in use below which a keg is never called fragmented (illumos
/// `kmem_frag_minslabs`).
pub const FRAG_MINSLABS: usize = 101;

/// Free buffers over all buffers above which a keg is fragmented:
/// numerator (illumos `kmem_frag_numer`).
pub const FRAG_NUMER: usize = 1;

/// … and denominator (illumos `kmem_frag_denom`, `KMEM_VOID_FRACTION`).
pub const FRAG_DENOM: usize = VOID_FRACTION;

/// Candidate slabs taken per scan while memory is not short (illumos
/// `kmem_reclaim_max_slabs`).
pub const RECLAIM_MAX_SLABS: usize = 1;

/// Slabs scanned from the least-used end per scan, and scans between
/// threshold adjustments (illumos `kmem_reclaim_scan_range`).
pub const RECLAIM_SCAN_RANGE: usize = 12;

/// `Later` replies for one slab after which they count as `No` (illumos
/// `KMEM_DISBELIEF`, `kmem_impl.h`).
pub const DISBELIEF: u32 = 3;

/// The seed's scan interval (`kmem_reap_interval`, 15 seconds).
pub const SCAN_INTERVAL: Duration = Duration::from_secs(15);
