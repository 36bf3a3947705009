//! Making a zone: [`ZoneBuilder`], `zinit` and `zbootinit`.

use core::sync::atomic::AtomicUsize;
use std::borrow::Cow;

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use kmem_sys::{OsPages, PageSource, PerCpu, cpu_count};

use crate::error::ZoneError;
use crate::flags::{ZONE_ROUNDING, ZoneFlags};
use crate::freelist::{FreeList, ITEM_HEADER};
use crate::table::{self, Link};
use crate::zone::{Extent, Extents, Inner, Pcpu, Pool, Zone};
use kmem_sys::sync::Mutex;

/// Settings for a new [`Zone`]; finish with [`build`](ZoneBuilder::build) or
/// [`build_boot`](ZoneBuilder::build_boot).
pub struct ZoneBuilder<S = OsPages, A = Global> {
    settings: Settings,
    source: S,
    alloc: A,
}

/// What a [`ZoneBuilder`] gathers apart from its typed parts (page source,
/// metadata allocator), so changing one of those moves it whole.
struct Settings {
    name: Cow<'static, str>,
    size: usize,
    nentries: usize,
    flags: ZoneFlags,
    cpus: usize,
    burst: usize,
}

impl Zone {
    /// Starts a zone of `size`-byte items named `name`, with no flags, pages
    /// from a fresh [`OsPages`] and metadata from the global allocator.
    pub fn builder(name: impl Into<Cow<'static, str>>, size: usize) -> ZoneBuilder {
        ZoneBuilder {
            settings: Settings {
                name: name.into(),
                size,
                nentries: 0,
                flags: ZoneFlags::NONE,
                cpus: cpu_count(),
                burst: 0,
            },
            source: OsPages::new(),
            alloc: Global,
        }
    }

    /// An ordinary zone of `size`-byte items: `Zone::builder(name, size).build()`.
    pub fn new(name: impl Into<Cow<'static, str>>, size: usize) -> Result<Zone, ZoneError> {
        Zone::builder(name, size).build()
    }
}

impl<S, A> ZoneBuilder<S, A> {
    /// Items reserved up front by a [`ZoneFlags::INTERRUPT`] zone (the seed's
    /// `nentries`; ignored otherwise).
    pub fn nentries(mut self, n: usize) -> Self {
        self.settings.nentries = n;
        self
    }

    /// The `ZONE_*` flags.
    pub fn flags(mut self, flags: ZoneFlags) -> Self {
        self.settings.flags = flags;
        self
    }

    /// Number of per-CPU lists (default: the CPU count). CPU ids wrap around
    /// it; one list makes every thread share a single list, which tests use to
    /// get exact counts.
    pub fn cpus(mut self, n: usize) -> Self {
        self.settings.cpus = n.max(1);
        self
    }

    /// This zone's burst instead of the process-wide [`zone_burst`](crate::zone_burst).
    pub fn burst(mut self, n: usize) -> Self {
        self.settings.burst = n.max(1);
        self
    }

    /// Takes pages from `source` instead of a fresh [`OsPages`].
    pub fn source<S2: PageSource>(self, source: S2) -> ZoneBuilder<S2, A> {
        ZoneBuilder {
            settings: self.settings,
            source,
            alloc: self.alloc,
        }
    }

    /// Allocates the zone's metadata (header, per-CPU slots, extent lists)
    /// from `alloc`.
    pub fn alloc_in<A2: Allocator>(self, alloc: A2) -> ZoneBuilder<S, A2> {
        ZoneBuilder {
            settings: self.settings,
            source: self.source,
            alloc,
        }
    }
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> ZoneBuilder<S, A> {
    /// Makes the zone (`zinit`): rounds the size to [`ZONE_ROUNDING`] and, for
    /// an interrupt zone, takes the whole reservation from the page source and
    /// carves its first items, as `zinitna` does.
    pub fn build(self) -> Result<Zone<S, A>, ZoneError> {
        let bad = |reason| ZoneError::InvalidFlags {
            zone: self.settings.name.clone(),
            flags: self.settings.flags,
            reason,
        };
        if self.settings.flags.contains(ZoneFlags::BOOT) {
            return Err(bad("ZONE_BOOT is set by zbootinit only"));
        }
        let size = match self.settings.size.checked_next_multiple_of(ZONE_ROUNDING) {
            Some(s) if self.settings.size != 0 => s,
            _ => {
                return Err(ZoneError::InvalidSize {
                    zone: self.settings.name,
                    size: self.settings.size,
                    reason: "item size must be non-zero and round to a multiple of ZONE_ROUNDING",
                });
            }
        };
        let flags = self.settings.flags;
        let nentries = self.settings.nentries;
        let zone = self.into_zone(size, ZoneFlags::NONE);
        zone.inner.configure(nentries, flags)?;
        Ok(zone)
    }

    /// Makes a `ZONE_BOOT` zone over caller memory (`zbootinit`): `nitems`
    /// items of exactly `size` bytes (no rounding) laid out from the start of
    /// `mem`, zeroed and put on the global list. It does not grow until
    /// [`Zone::finish_boot`] (`zinitna` on the booted zone).
    ///
    /// `size` must be a multiple of the word size and hold two words, `mem`
    /// must be word-aligned and hold `nitems` items.
    pub fn build_boot(
        self,
        mem: &'static mut [u8],
        nitems: usize,
    ) -> Result<Zone<S, A>, ZoneError> {
        let w = size_of::<usize>();
        let size = self.settings.size;
        if size < ITEM_HEADER || !size.is_multiple_of(w) {
            return Err(ZoneError::InvalidSize {
                zone: self.settings.name,
                size,
                reason: "boot items must be a multiple of the word size and hold two words",
            });
        }
        let addr = mem.as_ptr() as usize;
        let bad = |reason| ZoneError::BootMemory {
            zone: self.settings.name.clone(),
            addr,
            len: mem.len(),
            reason,
        };
        if !addr.is_multiple_of(w) {
            return Err(bad("not word-aligned"));
        }
        let bytes = size.checked_mul(nitems).filter(|&b| b <= mem.len());
        let Some(bytes) = bytes else {
            return Err(bad("too small for the items asked for"));
        };
        let zone = self.into_zone(size, ZoneFlags::BOOT);
        mem[..bytes].fill(0);
        let z = &zone.inner;
        z.extents.lock().carved.push(Extent {
            base: addr,
            len: bytes,
        });
        let mut pool = z.pool.lock();
        // One pointer for every item: each `as_mut_ptr` call reborrows all
        // of `mem` and would end the pointers taken before it, which the
        // free list already holds as links.
        let base = mem.as_mut_ptr();
        for i in 0..nitems {
            // SAFETY: item i lies inside `mem`, which the zone now owns for
            // good; it is word-aligned and holds two words.
            unsafe { pool.items.push(base.add(i * size)) };
        }
        pool.total = nitems;
        pool.zmax = nitems;
        drop(pool);
        Ok(zone)
    }

    /// The zone header with empty lists, registered in the zone table.
    fn into_zone(self, size: usize, flags: ZoneFlags) -> Zone<S, A> {
        let inner = Inner {
            name: self.settings.name,
            size,
            zmax_pcpu: AtomicUsize::new(0),
            burst: AtomicUsize::new(self.settings.burst),
            pcpu: PerCpu::with_len_in(
                self.settings.cpus,
                |_| {
                    Mutex::new(Pcpu {
                        items: FreeList::new(),
                        nalloc: 0,
                        reserve: FreeList::new(),
                    })
                },
                self.alloc.clone(),
            ),
            pool: Mutex::new(Pool {
                items: FreeList::new(),
                zfreemin: 0,
                nalloc: 0,
                total: 0,
                zmax: 0,
                pagecount: 0,
                pagemax: 0,
                pages_per_grow: 0,
                flags,
                kva: 0,
            }),
            extents: Mutex::new(Extents {
                carved: Vec::new_in(self.alloc.clone()),
                owned: Vec::new_in(self.alloc.clone()),
            }),
            source: self.source,
            link: Link::new(),
        };
        let zone = Zone {
            inner: Box::new_in(inner, self.alloc),
        };
        table::register(&*zone.inner);
        zone
    }
}
