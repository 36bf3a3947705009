//! [`ObjectCache<T>`]: a safe, typed object cache.

use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::cache::Cache;
use crate::error::KmemError;
use crate::stats::CacheStats;

/// A cache of constructed `T`s: the constructor runs only when an object is
/// first built from raw slab memory, and [`Obj`] handles give objects back
/// still constructed, so the next [`alloc`](Self::alloc) skips the
/// constructor (illumos object caching). `T` is dropped only when the cache
/// lets the memory go (reap, drain, or the cache itself dropping).
///
/// Callers must leave an object in a state the next user accepts as freshly
/// constructed, as with any kmem constructor.
///
/// ```
/// use kmem::ObjectCache;
///
/// // An object whose construction is worth keeping: a pre-sized buffer.
/// let bufs = ObjectCache::new("scratch", || Vec::<u8>::with_capacity(4096));
/// let mut b = bufs.alloc();
/// b.extend_from_slice(b"hello");
/// b.clear(); // back to the constructed state before it returns
/// drop(b);
/// let again = bufs.alloc();
/// assert!(again.capacity() >= 4096); // no new construction needed
/// ```
pub struct ObjectCache<T> {
    cache: Cache,
    _objects: PhantomData<fn() -> T>,
}

impl<T: Send + 'static> ObjectCache<T> {
    /// A cache named `name` building objects with `make`.
    ///
    /// # Panics
    ///
    /// If `T`'s alignment exceeds the page size (see
    /// [`try_new`](Self::try_new) for the error instead).
    pub fn new(name: &'static str, make: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::try_new(name, make).unwrap_or_else(|e| panic!("kmem: ObjectCache::new: {e}"))
    }

    /// Like [`new`](Self::new), returning the error.
    ///
    /// # Errors
    ///
    /// [`KmemError::InvalidRequest`] if no slab layout fits `T`.
    pub fn try_new(
        name: &'static str,
        make: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<Self, KmemError> {
        let cache = Cache::builder(name, size_of::<T>().max(1), align_of::<T>())
            .ctor(move |p| {
                // SAFETY: the cache hands the constructor a raw buffer sized
                // and aligned for `T`.
                unsafe { p.cast::<T>().as_ptr().write(make()) };
                true
            })
            .dtor(|p| {
                // SAFETY: a buffer goes to the destructor holding a
                // constructed `T` that nobody references any more.
                unsafe { p.cast::<T>().as_ptr().drop_in_place() }
            })
            .build()?;
        Ok(ObjectCache {
            cache,
            _objects: PhantomData,
        })
    }

    /// A constructed object.
    ///
    /// # Panics
    ///
    /// When memory is exhausted, as `Box::new` does (see
    /// [`try_alloc`](Self::try_alloc)).
    #[inline]
    pub fn alloc(&self) -> Obj<'_, T> {
        self.try_alloc().unwrap_or_else(|e| panic!("kmem: {e}"))
    }

    /// A constructed object, or the error.
    ///
    /// # Errors
    ///
    /// [`KmemError::OutOfMemory`] or [`KmemError::Full`].
    #[inline]
    pub fn try_alloc(&self) -> Result<Obj<'_, T>, KmemError> {
        let p = self.cache.alloc()?;
        Ok(Obj {
            cache: self,
            ptr: p.cast(),
        })
    }

    /// The untyped cache underneath (for limits, reaping, statistics).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cache's figures.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

/// A constructed object on loan from an [`ObjectCache`]; derefs to `T` and
/// goes back to the cache, still constructed, when dropped.
pub struct Obj<'a, T: Send + 'static> {
    cache: &'a ObjectCache<T>,
    ptr: NonNull<T>,
}

impl<T: Send + 'static> Obj<'_, T> {
    /// Address of the object (stable while the handle lives).
    pub fn as_ptr(&self) -> NonNull<T> {
        self.ptr
    }
}

impl<T: Send + 'static> Deref for Obj<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the handle owns a constructed `T` until it drops.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Send + 'static> DerefMut for Obj<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and the handle is the only reference.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: Send + 'static> Drop for Obj<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the object came from this cache (so the page-map check
        // can be skipped) and the handle is gone.
        let r = unsafe { self.cache.cache.free_checked(self.ptr.cast()) };
        debug_assert!(r.is_ok(), "{r:?}");
    }
}

impl<T: Send + 'static + fmt::Debug> fmt::Debug for Obj<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// SAFETY: an `Obj` is a unique reference to a `T: Send` plus a shared
// reference to a cache that is `Sync`.
unsafe impl<T: Send + Sync + 'static> Sync for Obj<'_, T> {}

// SAFETY: as for `Sync`; dropping the handle on another thread frees into
// the (thread-safe) cache from there.
unsafe impl<T: Send + 'static> Send for Obj<'_, T> {}
