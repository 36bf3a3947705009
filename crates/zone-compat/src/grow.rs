//! Making, growing and destroying zones: `zinitna`, `zbootinit`, `zget`,
//! `zdestroy`.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use allocator_api2::alloc::Allocator;
use kmem_sys::{PageSource, page_size, round_to_pages};

use crate::error::ZoneError;
use crate::flags::{
    SPECIAL_RESERVE, ZMAX_PCPU_BYTES, ZMAX_PCPU_DEFAULT, ZMAX_PCPU_FLOOR, ZONE_MAXPGLOAD, ZoneFlags,
};
use crate::table::{KERN_PAGES, KMEM_KVASPACE, KMEM_PAGES};
use crate::zone::{Extent, Inner, Zone};

/// [`Zone::destroy`] refused: the zone comes back unharmed with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct DestroyError<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> {
    /// The zone, still usable.
    pub zone: Zone<S, A>,
    /// Why it was not destroyed.
    #[source]
    pub error: ZoneError,
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> Zone<S, A> {
    /// `zinitna` on a zone made by [`ZoneBuilder::build_boot`](crate::ZoneBuilder::build_boot): from now on
    /// the zone grows like one made with `flags` (an interrupt zone reserving
    /// `nentries` more items). The boot items stay; the size stays exact.
    pub fn finish_boot(&self, nentries: usize, flags: ZoneFlags) -> Result<(), ZoneError> {
        let pool = self.inner.pool.lock();
        if flags.contains(ZoneFlags::DESTROYABLE) {
            return Err(ZoneError::InvalidFlags {
                zone: self.inner.name.clone(),
                flags,
                reason: "only zones made by zinit are destroyable",
            });
        }
        if !pool.flags.contains(ZoneFlags::BOOT) || pool.pages_per_grow != 0 {
            return Err(ZoneError::InvalidFlags {
                zone: self.inner.name.clone(),
                flags: pool.flags,
                reason: "finish_boot applies once, to a zone made by zbootinit",
            });
        }
        drop(pool);
        self.inner.configure(nentries, flags)
    }

    /// `zdestroy`: returns every page of a `ZONE_DESTROYABLE` zone to its
    /// source. Refuses, handing the zone back, when the zone is not
    /// destroyable or items are still allocated.
    pub fn destroy(self) -> Result<(), DestroyError<S, A>> {
        let z = &self.inner;
        let flags = z.pool.lock().flags;
        if !flags.contains(ZoneFlags::DESTROYABLE) {
            let error = ZoneError::NotDestroyable {
                zone: z.name.clone(),
                flags,
            };
            return Err(DestroyError { zone: self, error });
        }
        let used = self.outstanding();
        if used != 0 {
            let error = ZoneError::Busy {
                zone: z.name.clone(),
                used,
            };
            return Err(DestroyError { zone: self, error });
        }
        drop(self);
        Ok(())
    }
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> Inner<S, A> {
    /// The part of `zinitna` after the header exists: limits, `zmax_pcpu`,
    /// `zfreemin`, the growth unit, and the interrupt reservation.
    pub(crate) fn configure(&self, nentries: usize, flags: ZoneFlags) -> Result<(), ZoneError> {
        let bad = |reason| ZoneError::InvalidFlags {
            zone: self.name.clone(),
            flags,
            reason,
        };
        if flags.contains(ZoneFlags::BOOT) {
            return Err(bad("ZONE_BOOT is set by zbootinit only"));
        }
        let interrupt = flags.contains(ZoneFlags::INTERRUPT);
        if interrupt && flags.contains(ZoneFlags::DESTROYABLE) {
            return Err(bad("interrupt zones cannot be destroyed"));
        }
        if interrupt && nentries == 0 {
            return Err(bad("ZONE_INTERRUPT needs nentries > 0"));
        }
        let page = page_size();
        let mut pool = self.pool.lock();
        pool.flags |= flags;
        if interrupt {
            let bytes = self.size.checked_mul(nentries).and_then(round_to_pages);
            let Some(totsize) = bytes else {
                return Err(ZoneError::InvalidSize {
                    zone: self.name.clone(),
                    size: self.size,
                    reason: "size * nentries overflows",
                });
            };
            let kva = self
                .source
                .alloc_pages_zeroed(totsize, page)
                .map_err(|source| ZoneError::Pages {
                    zone: self.name.clone(),
                    bytes: totsize,
                    source,
                })?;
            self.extents.lock().owned.push(Extent {
                base: kva.as_ptr() as usize,
                len: totsize,
            });
            KMEM_KVASPACE.fetch_add(totsize, Ordering::Relaxed);
            pool.kva = kva.as_ptr() as usize;
            pool.pagemax = totsize / page;
            pool.zmax += nentries;
            let ncpus = self.pcpu.len();
            let mut zmax_pcpu = (pool.zmax / ncpus / 64).max(ZMAX_PCPU_FLOOR);
            if zmax_pcpu * self.size > ZMAX_PCPU_BYTES {
                zmax_pcpu = ZMAX_PCPU_BYTES / self.size;
            }
            self.zmax_pcpu.store(zmax_pcpu, Ordering::Relaxed);
        } else {
            pool.zmax = 0;
            self.zmax_pcpu.store(ZMAX_PCPU_DEFAULT, Ordering::Relaxed);
        }
        pool.zfreemin = if self.size > page {
            1
        } else {
            page / self.size
        };
        pool.pagecount = 0;
        pool.pages_per_grow = ZONE_MAXPGLOAD.max(self.size.div_ceil(page));
        drop(pool);
        if interrupt {
            // Populate now rather than on the first allocation, as zinitna does.
            let cpu = kmem_sys::current_cpu();
            if let Ok(item) = self.zget(cpu) {
                let mut pc = self.pcpu.get(cpu).lock();
                // SAFETY: a fresh item of this zone, owned by nobody.
                unsafe { pc.items.push(item.as_ptr()) };
            }
        }
        Ok(())
    }

    /// `zget`: carve more items — the next pages of an interrupt zone's
    /// reservation, or a new chunk of `zalloc` pages from the source — keep
    /// one for the caller and put the rest on the global list. When nothing
    /// can be carved, take from the global list, `zfreemin` reserve included.
    pub(crate) fn zget(&self, cpu: usize) -> Result<NonNull<u8>, ZoneError> {
        let page = page_size();
        let (flags, grow) = {
            let pool = self.pool.lock();
            (pool.flags, pool.pages_per_grow)
        };
        let mut failure = None;
        let (mut item, mut nitems, carved_pages) = if flags.contains(ZoneFlags::INTERRUPT) {
            let mut pool = self.pool.lock();
            let saved = pool.pagecount;
            pool.pagecount = (saved + grow).min(pool.pagemax);
            let npages = pool.pagecount - saved;
            let base = pool.kva + saved * page;
            let nitems = npages * page / self.size;
            KMEM_PAGES.fetch_add(npages, Ordering::Relaxed);
            if nitems != 0 {
                self.add_carved(base, nitems * self.size);
            }
            // Pages of the reservation were counted as they were claimed.
            (base as *mut u8, nitems, 0)
        } else if grow == 0 {
            (core::ptr::null_mut(), 0, 0)
        } else {
            let bytes = grow * page;
            match self.source.alloc_pages_zeroed(bytes, page) {
                Ok(p) => {
                    let base = p.as_ptr() as usize;
                    let mut ext = self.extents.lock();
                    ext.owned.push(Extent { base, len: bytes });
                    drop(ext);
                    KERN_PAGES.fetch_add(grow, Ordering::Relaxed);
                    let nitems = bytes / self.size;
                    self.add_carved(base, nitems * self.size);
                    (p.as_ptr(), nitems, grow)
                }
                Err(source) => {
                    failure = Some(ZoneError::Pages {
                        zone: self.name.clone(),
                        bytes,
                        source,
                    });
                    (core::ptr::null_mut(), 0, 0)
                }
            }
        };
        let carved = nitems;
        if nitems > 1 && flags.contains(ZoneFlags::SPECIAL) {
            // Top up this CPU's reserve before the pool sees the items.
            let mut pc = self.pcpu.get(cpu).lock();
            while pc.reserve.len() < SPECIAL_RESERVE && nitems > 1 {
                // SAFETY: a freshly carved item nobody else has seen.
                unsafe {
                    pc.reserve.push(item);
                    item = item.add(self.size);
                }
                nitems -= 1;
            }
        }
        let mut pool = self.pool.lock();
        pool.total += carved;
        pool.pagecount += carved_pages;
        if nitems != 0 {
            for _ in 0..nitems - 1 {
                // SAFETY: freshly carved items, each inside the new extent.
                unsafe {
                    pool.items.push(item);
                    item = item.add(self.size);
                }
            }
            pool.nalloc += 1;
            // SAFETY: the last carved item lies inside its extent.
            return Ok(unsafe { NonNull::new_unchecked(item) });
        }
        if pool.items.len() != 0 {
            pool.nalloc += 1;
            // SAFETY: the global list holds valid free items.
            return Ok(unsafe { self.take(&mut pool.items) });
        }
        let limit = pool.zmax;
        drop(pool);
        Err(failure.unwrap_or_else(|| ZoneError::Exhausted {
            zone: self.name.clone(),
            limit,
        }))
    }

    fn add_carved(&self, base: usize, len: usize) {
        let mut ext = self.extents.lock();
        let at = ext.carved.partition_point(|e| e.base < base);
        ext.carved.insert(at, Extent { base, len });
    }
}
