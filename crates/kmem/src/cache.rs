//! Object caches: a keg of slabs behind magazines, with constructors.
//!
//! `Cache` is illumos `kmem_cache_t` (`kmem_cache_create`, `_alloc`,
//! `_free`, `_reap`) and, through [`CacheBuilder::per_alloc`],
//! [`Cache::secondary`] and [`CacheBuilder::limit`], also FreeBSD UMA's zone
//! model (ctor/dtor on every call, `uma_zsecond_create`, `uma_zone_set_max`).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use kmem_magazine::{Config, HotPath, Magazines, Mode};
use kmem_slab::{Keg, SlabError};
use kmem_sys::PageSource;
use kmem_sys::sync::Mutex;

use crate::Meta;
use crate::debug::{self, Action, DebugCache, DebugFlags};
use crate::error::KmemError;
use crate::fill::{Buf, CacheKeg, Ctor, Dtor, Fill, Pages, Shortage};
use crate::page::{MapView, PageLayer};
use crate::stats::CacheStats;

/// Owner tags for the page map: 1..=NUM_CLASSES belong to `kmem_alloc`.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(crate::sizes::NUM_CLASSES as u64 + 1);

/// Every live cache, for [`crate::stats::caches`] and the reaper.
static REGISTRY: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

type CacheFill = Arc<Fill<Arc<CacheKeg>>>;
type Front = Option<Magazines<CacheFill, Meta>>;

pub(crate) struct Core {
    pub(crate) name: &'static str,
    pub(crate) keg: Arc<CacheKeg>,
    /// `None`: no magazines (`KMC_NOMAGAZINE`), every call reaches the keg.
    pub(crate) mags: Front,
    pub(crate) fill: CacheFill,
    /// UMA semantics: constructor and destructor on every alloc and free.
    pub(crate) per_alloc: Option<(Arc<Ctor>, Arc<Dtor>)>,
    /// The slab consolidator, once [`Cache::set_move`] gave a callback.
    pub(crate) moving: std::sync::OnceLock<crate::moving::Mover>,
    reclaim: Option<Box<dyn Fn() + Send + Sync>>,
    /// The page-map tag of this keg's pages, when it can be checked.
    owner: Option<u32>,
    /// The global page map, where `owner` is checked.
    map: MapView,
    /// `mags`' per-thread hit path, or one that always misses when a hit
    /// must not skip the slow path (per-call constructors, no magazines).
    hot: HotPath<Buf>,
    alloc_fail: AtomicU64,
    direct_allocs: AtomicU64,
    /// Debugging state; such a cache has no magazines (see [`crate::debug`]).
    debug: Option<Arc<DebugCache>>,
}

/// An object cache. Cheap to clone (a shared handle); the cache lives until
/// the last handle goes.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let built = Arc::new(AtomicUsize::new(0));
/// let b = built.clone();
/// let cache = kmem::Cache::builder("conn", 64, 8)
///     .ctor(move |p| {
///         b.fetch_add(1, Ordering::Relaxed);
///         // SAFETY: the cache hands the constructor a 64-byte buffer.
///         unsafe { p.as_ptr().write_bytes(0x5a, 64) };
///         true
///     })
///     .build()?;
/// let x = cache.alloc()?;
/// // SAFETY: x came from this cache and is freed once.
/// unsafe { cache.free(x)? };
/// let y = cache.alloc()?; // a magazine hit: no constructor call
/// assert_eq!(x, y);
/// // SAFETY: constructed state survives the round trip.
/// assert_eq!(unsafe { *y.as_ptr() }, 0x5a);
/// unsafe { cache.free(y)? };
/// assert!(built.load(Ordering::Relaxed) >= 1);
/// # Ok::<(), kmem::KmemError>(())
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) core: Arc<Core>,
}

/// Builds a [`Cache`]; start from [`Cache::builder`] or
/// [`Cache::secondary`].
#[must_use = "a builder does nothing until build() is called"]
pub struct CacheBuilder {
    name: &'static str,
    size: usize,
    align: usize,
    ctor: Option<Arc<Ctor>>,
    dtor: Option<Arc<Dtor>>,
    per_alloc: bool,
    reclaim: Option<Box<dyn Fn() + Send + Sync>>,
    magazines: bool,
    mode: Mode,
    source: Option<Arc<dyn PageSource>>,
    limit: Option<usize>,
    /// For a secondary cache: the primary's keg and page-map owner.
    shared: Option<(Arc<CacheKeg>, Option<u32>)>,
    debug: DebugFlags,
    on_error: Option<Action>,
    /// For a secondary of a debugging cache: the primary's debug state.
    inherit_debug: Option<Arc<DebugCache>>,
}

impl Cache {
    /// Starts a cache of `size`-byte objects aligned to `align` (a power of
    /// two up to the page size), named `name` in errors and statistics
    /// (`kmem_cache_create`).
    pub fn builder(name: &'static str, size: usize, align: usize) -> CacheBuilder {
        CacheBuilder {
            name,
            size,
            align,
            ctor: None,
            dtor: None,
            per_alloc: false,
            reclaim: None,
            magazines: true,
            mode: Mode::PerThread,
            source: None,
            limit: None,
            shared: None,
            debug: DebugFlags::NONE,
            on_error: None,
            inherit_debug: None,
        }
    }

    /// Starts another cache over this cache's keg, with its own name,
    /// constructor, destructor and magazines (UMA `uma_zsecond_create`).
    /// Its limit, if any, is the keg's and so shared.
    pub fn secondary(&self, name: &'static str) -> CacheBuilder {
        let layout = self.core.keg.layout();
        CacheBuilder {
            shared: Some((self.core.keg.clone(), self.core.owner)),
            inherit_debug: self.core.debug.clone(),
            ..Cache::builder(name, layout.buf_size, layout.align)
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &'static str {
        self.core.name
    }

    /// Size of the buffers handed out.
    pub fn buf_size(&self) -> usize {
        self.core.keg.layout().buf_size
    }

    /// Allocates a constructed object (`kmem_cache_alloc(KM_NOSLEEP)`).
    ///
    /// # Errors
    ///
    /// [`KmemError::Full`] at the limit, [`KmemError::CtorFailed`] if the
    /// constructor refused, [`KmemError::OutOfMemory`] otherwise.
    #[inline(always)]
    pub fn alloc(&self) -> Result<NonNull<u8>, KmemError> {
        // The fast path: a round of this thread's loaded magazine.
        // SAFETY: `hot` is the path of `mags`, which lives as long as `core`.
        match unsafe { self.core.hot.alloc_hit() } {
            Some(Buf(p)) => Ok(p),
            None => self.alloc_slow(),
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&self) -> Result<NonNull<u8>, KmemError> {
        let c = &*self.core;
        let p = match &c.mags {
            Some(m) => match m.alloc() {
                Some(Buf(p)) => p,
                None => return Err(c.failed(c.fill.shortage())),
            },
            None => {
                let p = c.take(None).map_err(|e| c.failed_slab(e))?;
                c.direct_allocs.fetch_add(1, Ordering::Relaxed);
                p
            }
        };
        c.per_alloc_ctor(p)
    }

    /// Like [`alloc`](Self::alloc), but at the limit waits for a free
    /// (`KM_SLEEP` / `M_WAITOK` with `uma_zone_set_max`), for ever or up to
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// [`KmemError::TimedOut`] when the wait runs out; otherwise as
    /// [`alloc`](Self::alloc).
    pub fn alloc_wait(&self, timeout: Option<Duration>) -> Result<NonNull<u8>, KmemError> {
        match self.alloc() {
            Err(KmemError::Full { .. }) => {}
            other => return other,
        }
        let c = &*self.core;
        let p = c.take(Some(timeout)).map_err(|e| match e {
            SlabError::Full { .. } => KmemError::TimedOut { cache: c.name },
            e => c.failed_slab(e),
        })?;
        c.per_alloc_ctor(p)
    }

    /// Returns an object to the cache (`kmem_cache_free`). The object must be
    /// in its constructed state (object caching keeps it constructed).
    ///
    /// # Errors
    ///
    /// [`KmemError::BadFree`] if `ptr` is not a buffer of this cache's keg
    /// (checked by one page-map load for caches on the page layer; caches
    /// with their own page source are checked when the buffer reaches the
    /// keg). Nothing changes then.
    ///
    /// # Safety
    ///
    /// `ptr` must point into mapped memory. If it is a buffer of this cache
    /// (or of a cache sharing its keg), it must have come from
    /// [`alloc`](Self::alloc), be in its constructed state, and not be used
    /// after the call. A pointer of another cache or allocator is refused
    /// with the error above (for caches with their own page source, only
    /// when the buffer reaches the keg).
    #[inline(always)]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), KmemError> {
        let c = &*self.core;
        if let Some(owner) = c.owner
            && c.map.owner_of(ptr.as_ptr() as usize) != Some(owner)
        {
            return Err(c.foreign_free(ptr));
        }
        // Whatever reaches a magazine or a slab is handed on whole.
        let ptr = crate::provenance::rederive(ptr);
        // SAFETY: the caller's promise; the owner was just checked.
        unsafe { self.free_checked(ptr) }
    }

    /// [`free`](Self::free) of a buffer known to be this cache's (an
    /// [`Obj`](crate::Obj) handle's), without the page-map check.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`alloc`](Self::alloc) on this cache (or one sharing
    /// its keg), is in its constructed state and is not used afterwards.
    #[inline(always)]
    pub(crate) unsafe fn free_checked(&self, ptr: NonNull<u8>) -> Result<(), KmemError> {
        // The fast path: room in this thread's loaded magazine.
        // SAFETY: as in `alloc`.
        match unsafe { self.core.hot.free_hit(Buf(ptr)) } {
            Ok(()) => Ok(()),
            // SAFETY: forwarding the caller's promise.
            Err(_) => unsafe { self.free_slow(ptr) },
        }
    }

    /// [`free`](Self::free) past a full magazine, or for caches with
    /// per-call destructors or without magazines.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    #[cold]
    #[inline(never)]
    unsafe fn free_slow(&self, ptr: NonNull<u8>) -> Result<(), KmemError> {
        let c = &*self.core;
        if let Some((_, dtor)) = &c.per_alloc {
            dtor(ptr);
        }
        match &c.mags {
            Some(m) => m.free(Buf(ptr)),
            None => {
                if let Some(d) = &c.debug {
                    // SAFETY: the caller's contract, passed on.
                    return unsafe { debug::cache_free(d, &c.keg, c.fill.dtor.as_deref(), ptr) };
                }
                if let Some(dtor) = &c.fill.dtor {
                    dtor(ptr);
                }
                // SAFETY: the caller gives back a buffer of this keg.
                unsafe { c.keg.free(ptr) }.map_err(|e| c.bad_free(ptr, &e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Ends the depot's working-set interval now (`kmem_cache_update` on
    /// the [`reaper`](crate::reaper)'s timer).
    pub(crate) fn update_now(&self) {
        if let Some(m) = &self.core.mags {
            m.update_now();
        }
    }

    /// Gives memory back (`kmem_cache_reap`): runs the reclaim callback,
    /// releases depot magazines beyond the working set, and returns empty
    /// slabs to the page layer. Returns the number of slabs freed.
    pub fn reap(&self) -> usize {
        let c = &*self.core;
        if let Some(r) = &c.reclaim {
            r();
        }
        if let Some(m) = &c.mags {
            m.update();
            m.reap();
        }
        c.keg.reap()
    }

    /// Returns everything cached to the keg and every empty slab to the page
    /// layer (UMA `zone_drain`, illumos `kmem_cache_magazine_purge` plus a
    /// slab reap). Other threads' per-thread magazines are theirs until they
    /// exit. Returns the number of slabs freed.
    pub fn drain(&self) -> usize {
        if let Some(m) = &self.core.mags {
            m.purge();
        }
        self.core.keg.reap()
    }

    /// Sets (or with `None` removes) the item limit, rounded up to whole
    /// slabs (`uma_zone_set_max`); returns the effective limit.
    pub fn set_limit(&self, items: Option<usize>) -> Option<usize> {
        self.core.keg.set_limit(items)
    }

    /// The cache's figures.
    pub fn stats(&self) -> CacheStats {
        self.core.stats()
    }

    /// Full consistency check of the keg and the magazines.
    ///
    /// # Errors
    ///
    /// [`KmemError::Corrupt`] describing the first broken invariant.
    pub fn check(&self) -> Result<(), KmemError> {
        let c = &*self.core;
        let corrupt = |what: String| KmemError::Corrupt {
            cache: c.name,
            what,
        };
        c.keg.check().map_err(|e| corrupt(e.to_string()))?;
        if let Some(m) = &c.mags {
            m.check().map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    }
}

/// Every cache that is still alive, oldest first.
pub(crate) fn live_caches() -> Vec<Cache> {
    let mut reg = REGISTRY.lock();
    reg.retain(|w| w.strong_count() > 0);
    reg.iter()
        .filter_map(|w| w.upgrade().map(|core| Cache { core }))
        .collect()
}

/// The name of the cache or size class whose pages carry `owner`.
pub(crate) fn owner_name(owner: u32) -> Option<&'static str> {
    if (1..=crate::sizes::NUM_CLASSES as u32).contains(&owner) {
        return Some(crate::sizes::CLASS_NAMES[owner as usize - 1]);
    }
    let reg = REGISTRY.lock();
    reg.iter()
        .filter_map(Weak::upgrade)
        .find(|c| c.owner == Some(owner))
        .map(|c| c.name)
}

/// Every live debugging cache with its keg, for [`debug::verify`].
pub(crate) fn debug_caches() -> Vec<(Arc<DebugCache>, Arc<CacheKeg>)> {
    live_caches()
        .into_iter()
        .filter_map(|c| Some((c.core.debug.clone()?, c.core.keg.clone())))
        .collect()
}

impl Core {
    /// One buffer from the keg, constructed (and checked when debugging).
    fn take(&self, wait: Option<Option<Duration>>) -> Result<NonNull<u8>, SlabError> {
        match &self.debug {
            Some(d) => debug::cache_alloc(
                d,
                &self.keg,
                self.fill.ctor.as_deref(),
                &self.fill.ctor_fails,
                wait,
            ),
            None => self.fill.take_one(wait),
        }
    }

    #[cold]
    fn foreign_free(&self, ptr: NonNull<u8>) -> KmemError {
        match &self.debug {
            Some(d) => debug::foreign_free(d, ptr, self.map.owner_of(ptr.as_ptr() as usize)),
            None => self.bad_free(ptr, "not a buffer of this cache"),
        }
    }

    #[inline]
    fn per_alloc_ctor(&self, p: NonNull<u8>) -> Result<NonNull<u8>, KmemError> {
        if let Some((ctor, _)) = &self.per_alloc
            && !ctor(p)
        {
            // The buffer is raw again; back it goes, unconstructed state and
            // all, as UMA's zone_alloc_item does on a ctor failure.
            self.fill.ctor_fails.fetch_add(1, Ordering::Relaxed);
            match &self.mags {
                Some(m) => m.free(Buf(p)),
                None => self.fill.give_back(&[p]),
            }
            return Err(self.failed(Shortage::Ctor));
        }
        Ok(p)
    }

    #[cold]
    fn failed(&self, why: Shortage) -> KmemError {
        self.alloc_fail.fetch_add(1, Ordering::Relaxed);
        match why {
            Shortage::Full => KmemError::Full {
                cache: self.name,
                limit: self.keg.stats().limit.unwrap_or(0),
            },
            Shortage::Ctor => KmemError::CtorFailed { cache: self.name },
            Shortage::None | Shortage::Memory => KmemError::OutOfMemory {
                cache: self.name,
                size: self.keg.layout().buf_size,
            },
        }
    }

    #[cold]
    fn failed_slab(&self, e: SlabError) -> KmemError {
        self.failed(match e {
            SlabError::Full { .. } => Shortage::Full,
            SlabError::InitFailed { .. } => Shortage::Ctor,
            _ => Shortage::Memory,
        })
    }

    #[cold]
    fn bad_free(&self, ptr: NonNull<u8>, why: &str) -> KmemError {
        KmemError::BadFree {
            cache: self.name,
            addr: ptr.as_ptr() as usize,
            why: why.to_string(),
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let k = self.keg.stats();
        let fail = self.alloc_fail.load(Ordering::Relaxed);
        let mags = self.mags.as_ref().map(Magazines::stats);
        let mut s = CacheStats::from_parts(self.name, &k, mags.as_ref(), fail);
        if mags.is_none() {
            s.allocs = self.direct_allocs.load(Ordering::Relaxed);
        }
        if let Some(m) = self.moving.get() {
            s.moves = m.stats();
        }
        s
    }
}

impl CacheBuilder {
    /// Constructor run when a buffer leaves the slab layer (object caching:
    /// a magazine hit skips it). Returns `false` to refuse.
    pub fn ctor(mut self, f: impl Fn(NonNull<u8>) -> bool + Send + Sync + 'static) -> Self {
        self.ctor = Some(Arc::new(f));
        self
    }

    /// Destructor run when a buffer goes back to the slab layer.
    pub fn dtor(mut self, f: impl Fn(NonNull<u8>) + Send + Sync + 'static) -> Self {
        self.dtor = Some(Arc::new(f));
        self
    }

    /// Runs the constructor on every allocation and the destructor on every
    /// free (UMA's `uz_ctor`/`uz_dtor`) instead of caching constructed
    /// objects.
    pub fn per_alloc(mut self) -> Self {
        self.per_alloc = true;
        self
    }

    /// Callback run by [`Cache::reap`] before memory is reclaimed (the
    /// seed's `reclaim` argument): free what you cache of this cache's
    /// objects.
    pub fn reclaim(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.reclaim = Some(Box::new(f));
        self
    }

    /// No magazines (`KMC_NOMAGAZINE`): every call goes to the keg.
    pub fn no_magazines(mut self) -> Self {
        self.magazines = false;
        self
    }

    /// Magazine front end: per thread (default, fastest) or per CPU (the
    /// seed's shape).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Slab pages from `source` instead of the process-wide page layer.
    pub fn page_source(mut self, source: Arc<dyn PageSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Limits the cache to `items` objects, rounded up to whole slabs
    /// (`uma_zone_set_max`).
    pub fn limit(mut self, items: usize) -> Self {
        self.limit = Some(items);
        self
    }

    /// Debugging for this cache (illumos `kmem_flags` per cache), resolved
    /// by the seed's rules ([`DebugFlags::resolve`]). A cache with any flag
    /// left runs without magazines; see [`crate::debug`].
    pub fn debug(mut self, flags: DebugFlags) -> Self {
        self.debug = flags;
        self
    }

    /// What this cache does when its debugging finds an error, instead of
    /// the process-wide [`debug::set_action`].
    pub fn on_error(mut self, action: Action) -> Self {
        self.on_error = Some(action);
        self
    }

    /// Builds the cache and registers it for [`crate::stats::caches`].
    ///
    /// # Errors
    ///
    /// [`KmemError::InvalidRequest`] for a zero size or a bad alignment.
    pub fn build(self) -> Result<Cache, KmemError> {
        let name = self.name;
        let invalid = |why: &'static str| KmemError::InvalidRequest {
            cache: name,
            size: self.size,
            align: self.align,
            why,
        };
        let layer = PageLayer::global();
        let mut dbg = self.inherit_debug;
        let (keg, owner) = match self.shared {
            Some((keg, _)) if crate::moving::has_mover(&keg) => {
                return Err(invalid(
                    "the keg has a move callback, so it cannot be shared",
                ));
            }
            Some(shared) => shared,
            None => {
                let (pages, owner) = match self.source {
                    Some(s) => (Pages::Custom(s), None),
                    None => {
                        let owner = NEXT_OWNER.fetch_add(1, Ordering::Relaxed) as u32;
                        (Pages::Layer(layer, owner), Some(owner))
                    }
                };
                let mut b = Keg::builder(name, self.size, self.align)
                    .source(pages)
                    .metadata(Meta);
                if !self.debug.is_empty() {
                    let (size, align, act) = (self.size, self.align, self.on_error);
                    (b, dbg) = debug::setup(name, self.debug, size, align, owner, act, b);
                }
                if let Some(n) = self.limit {
                    b = b.limit(n);
                }
                let keg = b
                    .build()
                    .map_err(|_| invalid("no slab layout fits this size and alignment"))?;
                if let Some(d) = dbg.as_ref().filter(|d| d.tagged()) {
                    debug_assert_eq!(keg.layout().tag_offset, Some(d.tag_offset()));
                }
                (Arc::new(keg), owner)
            }
        };
        let (ctor, dtor, per_alloc) = if self.per_alloc {
            let ctor = self.ctor.unwrap_or_else(|| Arc::new(|_| true));
            let dtor = self.dtor.unwrap_or_else(|| Arc::new(|_| {}));
            (None, None, Some((ctor, dtor)))
        } else {
            (self.ctor, self.dtor, None)
        };
        let fill = Arc::new(Fill::new(keg.clone(), ctor, dtor));
        let mags = if self.magazines && dbg.is_none() {
            let config = Config::new(name, keg.layout().buf_size).mode(self.mode);
            Some(
                Magazines::new_in(fill.clone(), config, Meta)
                    .map_err(|_| invalid("bad magazine configuration"))?,
            )
        } else {
            None
        };
        let hot = match &mags {
            Some(m) if per_alloc.is_none() => m.hot_path(),
            _ => HotPath::MISS,
        };
        let core = Arc::new(Core {
            name,
            keg,
            mags,
            fill,
            per_alloc,
            reclaim: self.reclaim,
            owner,
            map: layer.map_view(),
            hot,
            alloc_fail: AtomicU64::new(0),
            direct_allocs: AtomicU64::new(0),
            moving: std::sync::OnceLock::new(),
            debug: dbg,
        });
        let mut reg = REGISTRY.lock();
        reg.retain(|w| w.strong_count() > 0);
        reg.push(Arc::downgrade(&core));
        Ok(Cache { core })
    }
}
