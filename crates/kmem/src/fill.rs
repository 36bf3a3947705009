//! The layer between magazines and a keg: batches of buffers in and out,
//! constructed on the way up and destroyed on the way down.
//!
//! This is where illumos object caching lives: `kmem_slab_alloc` hands a raw
//! buffer up and `kmem_cache_alloc` constructs it only when it comes from
//! the slab layer, never on a magazine hit; `kmem_magazine_destroy` runs the
//! destructor when rounds go back to the slabs.

use core::mem::MaybeUninit;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::Arc;

use kmem_magazine::Backend;
use kmem_slab::{Keg, SlabError};
use kmem_sys::{PageSource, SysError};

use crate::Meta;
use crate::page::PageLayer;

/// A constructor: builds an object in the raw buffer, `false` on failure.
pub type Ctor = dyn Fn(NonNull<u8>) -> bool + Send + Sync;
/// A destructor: tears down the object in the buffer, leaving raw memory.
pub type Dtor = dyn Fn(NonNull<u8>) + Send + Sync;

/// A buffer address as a magazine round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct Buf(pub NonNull<u8>);

// SAFETY: a round is an address the cache owns while it sits in a magazine;
// no thread dereferences it until it is handed out again.
unsafe impl Send for Buf {}

/// Where a cache's slabs get their pages.
#[derive(Clone)]
pub(crate) enum Pages {
    /// A page layer, with the owner tag stamped on every slab's pages.
    Layer(&'static PageLayer, u32),
    /// A caller's page source; no owner checks are possible.
    Custom(Arc<dyn PageSource>),
}

// SAFETY: both arms forward to page sources that keep the trait's promises.
unsafe impl PageSource for Pages {
    fn alloc_pages(&self, size: usize, align: usize) -> Result<NonNull<u8>, SysError> {
        match self {
            Pages::Layer(l, owner) => {
                let p = l
                    .alloc_owned(size, align, *owner)
                    .map_err(|_| SysError::InvalidSize {
                        op: "kmem_pages",
                        size,
                    })?;
                crate::debug::log_slab(true, p.as_ptr() as usize, size);
                Ok(p)
            }
            // Buffers given back are re-derived from this (`Cache::free`).
            Pages::Custom(s) => s
                .alloc_pages(size, align)
                .inspect(|p| _ = p.expose_provenance()),
        }
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        match self {
            Pages::Layer(l, _) => {
                crate::debug::log_slab(false, ptr.as_ptr() as usize, size);
                // SAFETY: the keg returns pages it got from `alloc_pages`.
                let r = unsafe { l.free(ptr, size) };
                debug_assert!(r.is_ok(), "{r:?}");
            }
            // SAFETY: as above.
            Pages::Custom(s) => unsafe { s.free_pages(ptr, size, align) },
        }
    }
}

/// The keg type every facade cache uses.
pub(crate) type CacheKeg = Keg<Pages, Meta>;

/// Why the last import came back short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Shortage {
    None = 0,
    Full = 1,
    Memory = 2,
    Ctor = 3,
}

/// The magazine [`Backend`] over a keg (`K` is how the keg is held).
pub(crate) struct Fill<K> {
    pub keg: K,
    pub ctor: Option<Arc<Ctor>>,
    pub dtor: Option<Arc<Dtor>>,
    shortage: AtomicU8,
    pub ctor_fails: AtomicU64,
}

/// Buffers taken from the keg per call while importing.
const BATCH: usize = 32;

impl<K: Deref<Target = CacheKeg>> Fill<K> {
    pub fn new(keg: K, ctor: Option<Arc<Ctor>>, dtor: Option<Arc<Dtor>>) -> Self {
        Fill {
            keg,
            ctor,
            dtor,
            shortage: AtomicU8::new(0),
            ctor_fails: AtomicU64::new(0),
        }
    }

    /// What stopped the last import that came back short.
    pub fn shortage(&self) -> Shortage {
        match self.shortage.load(Ordering::Relaxed) {
            1 => Shortage::Full,
            2 => Shortage::Memory,
            3 => Shortage::Ctor,
            _ => Shortage::None,
        }
    }

    fn short(&self, why: Shortage) {
        self.shortage.store(why as u8, Ordering::Relaxed);
    }

    /// Runs the constructor on a raw buffer; a buffer it refuses goes back.
    pub fn construct(&self, p: NonNull<u8>) -> bool {
        match &self.ctor {
            Some(ctor) if !ctor(p) => {
                self.ctor_fails.fetch_add(1, Ordering::Relaxed);
                self.short(Shortage::Ctor);
                // SAFETY: `p` came from this keg and was never handed out.
                let _ = unsafe { self.keg.free(p) };
                false
            }
            _ => true,
        }
    }

    /// One raw buffer straight from the keg, constructed.
    pub fn take_one(
        &self,
        wait: Option<Option<std::time::Duration>>,
    ) -> Result<NonNull<u8>, SlabError> {
        let p = match wait {
            None => self.keg.alloc(),
            Some(timeout) => self.keg.alloc_wait(timeout),
        }?;
        if self.construct(p) {
            Ok(p)
        } else {
            Err(SlabError::InitFailed {
                keg: self.keg.name(),
                addr: p.as_ptr() as usize,
            })
        }
    }

    /// Destroys and frees buffers; bad pointers were refused before they
    /// reached a magazine, so an error here is a bug.
    pub fn give_back(&self, bufs: &[NonNull<u8>]) {
        if let Some(dtor) = &self.dtor {
            bufs.iter().for_each(|&p| dtor(p));
        }
        // SAFETY: every buffer came from this keg and is no longer in use.
        let r = unsafe { self.keg.free_batch(bufs) };
        debug_assert!(r.is_ok(), "{r:?}");
    }
}

impl<K: Deref<Target = CacheKeg> + Send + Sync> Backend for Fill<K> {
    type Item = Buf;

    fn import(&self, out: &mut [MaybeUninit<Buf>]) -> usize {
        let mut raw = [NonNull::dangling(); BATCH];
        let mut filled = 0;
        while filled < out.len() {
            let want = (out.len() - filled).min(BATCH);
            let got = match self.keg.alloc_batch(&mut raw[..want]) {
                Ok(n) => n,
                Err(e) => {
                    self.short(if matches!(e, SlabError::Full { .. }) {
                        Shortage::Full
                    } else {
                        Shortage::Memory
                    });
                    break;
                }
            };
            let before = filled;
            for &p in &raw[..got] {
                if self.construct(p) {
                    out[filled].write(Buf(p));
                    filled += 1;
                }
            }
            // Stop at a short batch or a refusing constructor.
            if got < want || filled - before < got {
                break;
            }
        }
        filled
    }

    fn release(&self, items: &[Buf]) {
        // SAFETY: `Buf` is a transparent wrapper of `NonNull<u8>`.
        let bufs = unsafe {
            core::slice::from_raw_parts(items.as_ptr().cast::<NonNull<u8>>(), items.len())
        };
        self.give_back(bufs);
    }
}
