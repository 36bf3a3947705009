//! Building an arena: the seed's `vmem_create` / `vmem_init` arguments and
//! the `vmem_set_import`, `vmem_set_limit` and `vmem_set_reclaim` setters,
//! as one builder.

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::boxed::Box;

use kmem_magazine::Mode;

use crate::arena::Arena;
use crate::error::{ArenaName, VmemError};
use crate::inner::{Core, ReclaimFn};
use crate::source::{NoSource, Source};
use crate::tag::Kind;
use crate::vmem::Vmem;

/// Most quanta a quantum cache serves (the seed's `VMEM_QCACHE_IDX_MAX`).
pub const QCACHE_MAX_QUANTA: usize = 16;

/// The settings of a [`Vmem`] being built; from [`Vmem::builder`].
///
/// `A` is the allocator the arena's metadata (boundary tags, hash table,
/// quantum caches) comes from, `S` its [`Source`], `R` its reclaim callback.
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<A = Global, S = NoSource, R = fn(&ArenaName)> {
    settings: Settings,
    source: S,
    reclaim: Option<R>,
    alloc: A,
}

/// What a [`Builder`] gathers apart from its typed parts (source, reclaim
/// callback, metadata allocator), so changing one of those moves it whole.
struct Settings {
    name: ArenaName,
    span: Option<(usize, usize)>,
    quantum: usize,
    qcache_max: usize,
    qcache_mode: Mode,
    import_quantum: usize,
    limit: usize,
    listed: bool,
}

impl Vmem {
    /// Starts building an arena called `name` (cut to
    /// [`NAME_MAX`](crate::NAME_MAX) bytes), with quantum 1, no spans, no
    /// quantum caches and no source; metadata from the global allocator.
    pub fn builder(name: &str) -> Builder {
        Builder {
            settings: Settings {
                name: ArenaName::new(name),
                span: None,
                quantum: 1,
                qcache_max: 0,
                qcache_mode: Mode::PerCpu,
                import_quantum: 0,
                limit: 0,
                listed: false,
            },
            source: NoSource,
            reclaim: None,
            alloc: Global,
        }
    }
}

impl<A, S, R> Builder<A, S, R>
where
    A: Allocator + Clone + Send + Sync,
    S: Source,
    R: Fn(&ArenaName) + Send + Sync + 'static,
{
    /// The initial span `[base, base + size)` (the seed's `vmem_create`
    /// base and size); a size of 0 means none. More spans can be added with
    /// [`Vmem::add`].
    pub fn span(mut self, base: usize, size: usize) -> Self {
        self.settings.span = (size != 0).then_some((base, size));
        self
    }

    /// The unit of allocation, a power of two: every size is rounded up to
    /// it and every address is a multiple of it. Default 1.
    pub fn quantum(mut self, quantum: usize) -> Self {
        self.settings.quantum = quantum;
        self
    }

    /// Serve sizes up to `max` bytes (a multiple of the quantum, at most
    /// [`QCACHE_MAX_QUANTA`] quanta) from per-size quantum caches
    /// (the seed's `qc_init`). 0, the default, means none.
    pub fn qcache_max(mut self, max: usize) -> Self {
        self.settings.qcache_max = max;
        self
    }

    /// The quantum caches' front end.
    ///
    /// [`Mode::PerCpu`], the default, is the seed's: a locked magazine pair
    /// per CPU. A drain ([`Vmem::drain_qcaches`], or an allocation about to
    /// fail) reaches every cached segment.
    ///
    /// [`Mode::PerThread`] gives each thread its own magazines, with no lock
    /// on a hit (about half the time of a per-CPU hit). Two costs come with
    /// it. A drain reaches only the calling thread's magazines and the
    /// depot: other threads keep up to two magazines per size until they
    /// exit or the arena drops, so a nearly exhausted arena can fail while
    /// they hold segments, and a waiting allocation cannot take them
    /// either (a free into a thread's own magazine wakes no waiter). And
    /// each cache takes one of the process's
    /// [`MAX_THREAD_CACHES`](kmem_magazine::MAX_THREAD_CACHES) per-thread
    /// ids (a cache that finds none left runs per-CPU;
    /// [`Vmem::qcache_mode`] tells). Pick it for large resources such as
    /// address space, where speed matters more than the last few segments.
    pub fn qcache_mode(mut self, mode: Mode) -> Self {
        self.settings.qcache_mode = mode;
        self
    }

    /// Import spans from `source` when the arena cannot satisfy a request,
    /// in multiples of `import_quantum` bytes (0 = the quantum), and release
    /// each back once it is wholly free (`vmem_set_import`). A parent
    /// [`Vmem`], an `Arc` or reference to one, or an
    /// [`ImportFns`](crate::ImportFns) pair all work.
    pub fn source<T: Source>(self, source: T, import_quantum: usize) -> Builder<A, T, R> {
        Builder {
            settings: Settings {
                import_quantum,
                ..self.settings
            },
            source,
            reclaim: self.reclaim,
            alloc: self.alloc,
        }
    }

    /// Import at most `bytes` in total from the source (`vmem_set_limit`);
    /// 0, the default, means no limit.
    pub fn limit(mut self, bytes: usize) -> Self {
        self.settings.limit = bytes;
        self
    }

    /// Call `reclaim(name)` when an allocation is about to fail, so that
    /// the owner can free resources, then retry (`vmem_set_reclaim`). It
    /// runs without the arena lock held.
    pub fn reclaim<F>(self, reclaim: F) -> Builder<A, S, F>
    where
        F: Fn(&ArenaName) + Send + Sync + 'static,
    {
        Builder {
            settings: self.settings,
            source: self.source,
            reclaim: Some(reclaim),
            alloc: self.alloc,
        }
    }

    /// Take the arena's metadata (boundary tags, the busy hash, quantum
    /// caches) from `alloc` instead of the global allocator, so the arena
    /// can sit under a `GlobalAlloc` without calling it.
    pub fn metadata<B>(self, alloc: B) -> Builder<B, S, R>
    where
        B: Allocator + Clone + Send + Sync,
    {
        Builder {
            settings: self.settings,
            source: self.source,
            reclaim: self.reclaim,
            alloc,
        }
    }

    /// Whether the arena goes on the process-wide arena list, where
    /// [`for_each_arena`](crate::for_each_arena) and
    /// [`whatis_all`](crate::whatis_all) find it (the seed's `vmem_list`).
    /// Default `false`: the seed lists every arena, but walkers of the list
    /// reach a listed arena from other threads, so `&mut` access to it no
    /// longer means that nobody else touches it, and its `_mut` methods
    /// ([`Vmem::alloc_mut`] and others) must take the arena lock as the
    /// `&self` ones do. Listing is for arenas worth finding from a
    /// debugger's point of view; the `_mut` fast path stays lock-free for
    /// the others.
    pub fn listed(mut self, listed: bool) -> Self {
        self.settings.listed = listed;
        self
    }

    /// Checks the settings and builds the arena.
    ///
    /// # Errors
    ///
    /// [`VmemError::InvalidConfig`] for a quantum that is not a power of
    /// two, a `qcache_max` or import quantum that is not a multiple of it or
    /// a `qcache_max` above [`QCACHE_MAX_QUANTA`] quanta;
    /// [`VmemError::InvalidSpan`] for a bad initial span;
    /// [`VmemError::NoMetadata`] if the metadata allocator fails.
    ///
    /// The metadata allocator must not borrow (`A: 'static`): the arena
    /// list reaches the arena's tags, and a `Vmem` may be leaked without
    /// being dropped, so it could outlive a borrowed allocator.
    ///
    /// ```compile_fail
    /// use allocator_api2::alloc::Global;
    /// use kmem_vmem::Vmem;
    ///
    /// let local = Global;
    /// let a = Vmem::builder("borrows").metadata(&local).build(); // `local` must be 'static
    /// ```
    pub fn build(self) -> Result<Vmem<A, S>, VmemError>
    where
        A: 'static,
    {
        let name = self.settings.name;
        let bad = |what| Err(VmemError::InvalidConfig { arena: name, what });
        let q = self.settings.quantum;
        if !q.is_power_of_two() {
            return bad("the quantum must be a power of two");
        }
        if !self.settings.qcache_max.is_multiple_of(q) {
            return bad("qcache_max must be a multiple of the quantum");
        }
        if self.settings.qcache_max / q > QCACHE_MAX_QUANTA {
            return bad("qcache_max must be at most 16 quanta");
        }
        let import_quantum = if self.settings.import_quantum == 0 {
            q
        } else {
            self.settings.import_quantum
        };
        if !import_quantum.is_multiple_of(q) {
            return bad("the import quantum must be a multiple of the quantum");
        }
        let no_meta = |_| VmemError::NoMetadata { arena: name };
        let mut arena = Arena::new(name, q, self.alloc.clone())?;
        if let Some((base, size)) = self.settings.span {
            arena.reserve()?;
            arena.add_span(base, size, Kind::StaticSpan)?;
        }
        let reclaim: Option<ReclaimFn<A>> = match self.reclaim {
            Some(f) => {
                let boxed = Box::try_new_in(f, self.alloc.clone()).map_err(no_meta)?;
                Some(allocator_api2::unsize_box!(boxed))
            }
            None => None,
        };
        let core = Core::new(
            arena,
            self.source,
            import_quantum,
            self.settings.limit,
            reclaim,
        );
        let qcaches = (self.settings.qcache_max / q, self.settings.qcache_mode);
        Vmem::new_in(core, qcaches, self.alloc, self.settings.listed)
    }
}
