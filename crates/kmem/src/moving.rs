//! Moving objects: a cache's slab consolidator (the `kmem-move` crate) and
//! the cache side of it — `kmem_cache_set_move`, `kmem_cache_move_notify`
//! and the desperate `kmem_cache_defrag` of illumos.
//!
//! A cache with a move callback owns a [`Consolidator`] whose thread scans
//! the cache's keg every [`SCAN_INTERVAL`] and moves objects off its
//! least-used slabs; [`Cache::defragment`] does a desperate pass on the
//! caller's thread. The consolidator reaches the cache through
//! [`CacheClient`]: the keg, the constructor and destructor, and the depot
//! for hunting (`kmem_hunt_mags`).
//!
//! Hunting reaches the depot's full magazines and the consolidator
//! thread's own magazines (the swap buffer it allocates first may be the
//! very object, the seed's `kms_hunt_lucky`). Objects in another thread's
//! per-thread magazines, or in per-CPU slots, are not searched: a `DontKnow`
//! for one of those leaves it where it is, to be found on a later pass once
//! it reaches the depot.
//!
//! See the `kmem-move` crate docs for writing a correct callback.

use core::ptr::NonNull;
use std::sync::{Arc, Weak};

use kmem_move::{Client, Consolidator, Defragmented, Move, MoveStats, SCAN_INTERVAL};
use kmem_sys::sync::Mutex;

use crate::Meta;
use crate::cache::{Cache, Core};
use crate::error::KmemError;
use crate::fill::{Buf, CacheKeg, Ctor, Dtor, Pages};
use crate::object::{Obj, ObjectCache};

/// A cache's consolidator.
pub(crate) type Mover = Consolidator<CacheClient>;

/// Kegs that have a consolidator (by address), so no secondary cache can
/// share one and offer its objects to another cache's callback.
static MOVABLE_KEGS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Whether `keg` has a consolidator.
pub(crate) fn has_mover(keg: &Arc<CacheKeg>) -> bool {
    MOVABLE_KEGS.lock().contains(&(Arc::as_ptr(keg) as usize))
}

/// The cache as the consolidator sees it.
pub(crate) struct CacheClient {
    name: &'static str,
    keg: Arc<CacheKeg>,
    ctor: Option<Arc<Ctor>>,
    dtor: Option<Arc<Dtor>>,
    core: Weak<Core>,
}

impl Drop for CacheClient {
    fn drop(&mut self) {
        let addr = Arc::as_ptr(&self.keg) as usize;
        MOVABLE_KEGS.lock().retain(|&k| k != addr);
    }
}

impl Client for CacheClient {
    type Source = Pages;
    type Meta = Meta;

    fn name(&self) -> &'static str {
        self.name
    }

    fn keg(&self) -> &CacheKeg {
        &self.keg
    }

    fn construct(&self, buf: NonNull<u8>) -> bool {
        self.ctor.as_ref().is_none_or(|c| c(buf))
    }

    fn destroy(&self, buf: NonNull<u8>) {
        if let Some(d) = &self.dtor {
            d(buf);
        }
    }

    /// illumos `kmem_hunt_mags`: take a swap buffer from the cache; if it is
    /// the object, done; else swap it into the depot magazine holding the
    /// object, if any.
    fn hunt(&self, buf: NonNull<u8>) -> bool {
        let Some(core) = self.core.upgrade() else {
            return false;
        };
        let Some(mags) = &core.mags else {
            return false; // no magazines: nothing cached above the keg
        };
        let Some(Buf(swap)) = mags.alloc() else {
            return false;
        };
        if swap == buf || mags.depot().hunt(Buf(buf), Buf(swap)) {
            return true;
        }
        mags.free(Buf(swap));
        false
    }
}

impl Cache {
    /// Gives the cache a move callback and starts its consolidator
    /// (`kmem_cache_set_move`): `f(old, new, size)` is asked to move the
    /// object in `old` to `new`, a constructed buffer of this cache, and
    /// answers with a [`Move`]. It runs on the consolidator's thread (or
    /// in [`defragment`](Self::defragment)), never on an allocation path.
    ///
    /// Read the `kmem-move` crate docs ("Writing a move callback") first:
    /// `old` may be an object you freed, and you must re-point every
    /// reference to it before answering [`Move::Yes`].
    ///
    /// # Errors
    ///
    /// [`KmemError::Move`] if the cache has ever allocated from its slabs
    /// (the seed asserts `cache_slab_alloc == 0`: every object must have
    /// been allocated knowing it may move), already has a callback, runs
    /// its constructor on every allocation ([`per_alloc`](
    /// crate::CacheBuilder::per_alloc): free objects are not constructed),
    /// shares its keg with another cache, or the thread cannot start.
    pub fn set_move(
        &self,
        f: impl Fn(NonNull<u8>, NonNull<u8>, usize) -> Move + Send + Sync + 'static,
    ) -> Result<(), KmemError> {
        let c = &*self.core;
        let refuse = |why: &str| KmemError::Move {
            cache: c.name,
            why: why.to_string(),
        };
        if c.per_alloc.is_some() {
            return Err(refuse(
                "objects of a per-allocation cache are not constructed while free",
            ));
        }
        // Core and Fill each hold the keg; a secondary cache holds it too.
        if Arc::strong_count(&c.keg) > 2 {
            return Err(refuse("the keg is shared with another cache"));
        }
        let mut movable = MOVABLE_KEGS.lock();
        if c.moving.get().is_some() {
            return Err(refuse("the cache already has a move callback"));
        }
        if c.keg.stats().allocs > 0 {
            return Err(refuse(
                "the cache has already allocated; set the callback before the first allocation",
            ));
        }
        let client = CacheClient {
            name: c.name,
            keg: c.keg.clone(),
            ctor: c.fill.ctor.clone(),
            dtor: c.fill.dtor.clone(),
            core: Arc::downgrade(&self.core),
        };
        movable.push(Arc::as_ptr(&c.keg) as usize);
        drop(movable);
        let mover =
            Consolidator::spawn(client, f, SCAN_INTERVAL).map_err(|e| refuse(&e.to_string()))?;
        if c.moving.set(mover).is_err() {
            return Err(refuse("the cache already has a move callback"));
        }
        Ok(())
    }

    /// Tells the consolidator that `buf`, whose move the callback refused
    /// with [`Move::No`] or [`Move::Later`], can move now
    /// (`kmem_cache_move_notify`). Returns at once; the consolidator
    /// thread retries the move.
    ///
    /// # Errors
    ///
    /// [`KmemError::Move`] without a move callback or if `buf` is not a
    /// buffer of this cache.
    pub fn move_notify(&self, buf: NonNull<u8>) -> Result<(), KmemError> {
        let c = &*self.core;
        let mover = self.mover()?;
        mover.move_notify(buf).map_err(|e| KmemError::Move {
            cache: c.name,
            why: e.to_string(),
        })
    }

    /// Defragments now, desperately (`kmem_cache_reap` on a cache with a
    /// move callback, `kmem_cache_defrag`): returns the cached free objects
    /// this thread can reach to their slabs ([`drain`](Self::drain)), asks
    /// the callback to move the objects of *every* partial slab but the
    /// most-used, whatever the thresholds and earlier refusals, and
    /// returns emptied slabs to the page layer. The moves run **on the
    /// calling thread** (the consolidator thread may take some), and the
    /// call returns when they are done. Repeat while
    /// [`Defragmented::partial_after`] keeps falling.
    ///
    /// # Errors
    ///
    /// [`KmemError::Move`] without a move callback.
    pub fn defragment(&self) -> Result<Defragmented, KmemError> {
        let mover = self.mover()?;
        if let Some(m) = &self.core.mags {
            m.purge();
        }
        self.core.keg.reap();
        let d = mover.defragment();
        self.core.keg.reap();
        Ok(d)
    }

    /// The consolidator's counters, if the cache has a move callback (also
    /// in [`stats`](Self::stats) as [`CacheStats::moves`](
    /// crate::stats::CacheStats::moves)).
    pub fn move_stats(&self) -> Option<MoveStats> {
        self.core.moving.get().map(Consolidator::stats)
    }

    fn mover(&self) -> Result<&Mover, KmemError> {
        self.core.moving.get().ok_or_else(|| KmemError::Move {
            cache: self.core.name,
            why: "the cache has no move callback".to_string(),
        })
    }
}

impl<T: Send + 'static> ObjectCache<T> {
    /// Gives the cache a typed move callback (see [`Cache::set_move`] for
    /// when it is refused). `f(old, new)` gets `old`, the address of a `T`
    /// that is allocated as far as the slabs know, and `new`, a freshly
    /// constructed `T` that only the consolidator can reach.
    ///
    /// `old` is a raw pointer because the cache cannot know who else holds
    /// it: dereferencing it is the callback's one `unsafe` step, sound
    /// once the callback has established, under its own lock, that `old`
    /// is one of its live objects and that nobody else is using it (the
    /// object stays a constructed `T` meanwhile: the consolidator keeps
    /// its slab mapped). The usual move: swap the contents
    /// (`core::ptr::swap(old.as_ptr(), new)`), re-point every
    /// reference from `old` to `new`, answer [`Move::Yes`]; the old buffer,
    /// now holding `new`'s constructed state, is dropped and freed.
    ///
    /// Objects that may move must not be held as [`Obj`] handles (a handle
    /// frees its address when dropped): keep them as raw pointers with
    /// [`Obj::into_raw`] and give them back with
    /// [`free_raw`](Self::free_raw).
    ///
    /// # Errors
    ///
    /// As [`Cache::set_move`].
    pub fn set_move(
        &self,
        f: impl Fn(NonNull<T>, &mut T) -> Move + Send + Sync + 'static,
    ) -> Result<(), KmemError> {
        self.cache().set_move(move |old, new, _| {
            // SAFETY: `new` is a constructed `T` (the consolidator ran the
            // constructor) that nothing else can reach until the reply.
            let new = unsafe { new.cast::<T>().as_mut() };
            f(old.cast(), new)
        })
    }

    /// Returns an object given up with [`Obj::into_raw`], still in its
    /// constructed state.
    ///
    /// # Errors
    ///
    /// [`KmemError::BadFree`] if `ptr` is not a buffer of this cache.
    ///
    /// # Safety
    ///
    /// `ptr` must come from [`Obj::into_raw`] on this cache (or from a move
    /// callback's `new` that was answered [`Move::Yes`]), hold a `T` in a
    /// state a fresh user accepts, and not be used after the call.
    pub unsafe fn free_raw(&self, ptr: NonNull<T>) -> Result<(), KmemError> {
        // SAFETY: the caller's contract.
        unsafe { self.cache().free(ptr.cast()) }
    }
}

impl<T: Send + 'static> Obj<'_, T> {
    /// Gives up the handle without freeing the object; return it with
    /// [`ObjectCache::free_raw`]. For objects a move callback may move.
    pub fn into_raw(self) -> NonNull<T> {
        let p = self.as_ptr();
        core::mem::forget(self);
        p
    }
}
