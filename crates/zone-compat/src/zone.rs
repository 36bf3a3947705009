//! The zone: its state, its builder, and the `zalloc` / `zfree` paths.
//!
//! Fast paths follow `vm_zone.c` `zalloc` and `zfree` line for line: pop from
//! or push to the current CPU's list. Everything else — refilling a per-CPU
//! list from the global one, the burst back to it, growth — is out of line.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::borrow::Cow;

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use kmem_sys::sync::{Mutex, MutexGuard};
use kmem_sys::{OsPages, PageSource, PerCpu, current_cpu};

use crate::error::ZoneError;
use crate::flags::{ZENTRY_FREE, ZMAX_PCPU_FLOOR, ZONE_BURST_DEFAULT, ZoneFlags};
use crate::freelist::{FreeList, MARK, marker_read, marker_write};
use crate::table::{self, KERN_PAGES, KMEM_KVASPACE, KMEM_PAGES, Link};

static ZONE_BURST: AtomicUsize = AtomicUsize::new(ZONE_BURST_DEFAULT);

/// The process-wide burst tunable (`vm.zone_burst`): the most items one
/// refill or one overflow moves between a per-CPU list and the global list,
/// for every zone without its own [`Zone::set_burst`].
pub fn zone_burst() -> usize {
    ZONE_BURST.load(Ordering::Relaxed)
}

/// Sets the process-wide burst tunable (at least 1), as writing the sysctl
/// `vm.zone_burst` does; zones read it on each refill and overflow.
pub fn set_zone_burst(n: usize) {
    ZONE_BURST.store(n.max(1), Ordering::Relaxed);
}

/// One CPU's share of a zone (`struct vm_zpcpu`).
pub(crate) struct Pcpu {
    /// `zitems` / `zfreecnt`.
    pub(crate) items: FreeList,
    /// `znalloc`: allocations served from this list.
    pub(crate) nalloc: u64,
    /// The `ZONE_SPECIAL` reserve (`gd_vme_base` / `gd_vme_avail`).
    pub(crate) reserve: FreeList,
}

// SAFETY: the raw pointers are items owned by the zone; the list is only
// reached through the slot's mutex.
unsafe impl Send for Pcpu {}

/// The zone's global part, under `zspin`.
pub(crate) struct Pool {
    /// `zitems` / `zfreecnt`: the global free list.
    pub(crate) items: FreeList,
    /// `zfreemin`: items a refill leaves on the global list.
    pub(crate) zfreemin: usize,
    /// `znalloc`: allocations served by `zget`.
    pub(crate) nalloc: u64,
    /// `ztotal`: items ever carved.
    pub(crate) total: usize,
    /// `zmax`: the item limit (0 = none).
    pub(crate) zmax: usize,
    /// `zpagecount`: pages carved into items.
    pub(crate) pagecount: usize,
    /// `zpagemax`: pages of the interrupt reservation.
    pub(crate) pagemax: usize,
    /// `zalloc`: pages per growth (0 = the zone cannot grow).
    pub(crate) pages_per_grow: usize,
    /// `zflags`.
    pub(crate) flags: ZoneFlags,
    /// `zkva`: base of the interrupt reservation.
    pub(crate) kva: usize,
}

// SAFETY: as for `Pcpu`: items are reached only under the pool mutex.
unsafe impl Send for Pool {}

/// A range carved into items, and whether the zone returns it to its source.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Extent {
    pub(crate) base: usize,
    pub(crate) len: usize,
}

/// Where the zone's items lie and what it must give back.
pub(crate) struct Extents<A: Allocator> {
    /// Ranges carved into items, sorted by base: the `INVALID` check.
    pub(crate) carved: Vec<Extent, A>,
    /// Allocations from the page source (`zkmvec`), freed on destroy / drop.
    pub(crate) owned: Vec<Extent, A>,
}

pub(crate) struct Inner<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> {
    pub(crate) name: Cow<'static, str>,
    /// `zsize`: the item stride.
    pub(crate) size: usize,
    /// `zmax_pcpu`, read by every free.
    pub(crate) zmax_pcpu: AtomicUsize,
    /// This zone's burst, 0 to follow [`zone_burst`].
    pub(crate) burst: AtomicUsize,
    pub(crate) pcpu: PerCpu<Mutex<Pcpu>, A>,
    pub(crate) pool: Mutex<Pool>,
    pub(crate) extents: Mutex<Extents<A>>,
    pub(crate) source: S,
    /// This zone's place in the zone table (`zlink`).
    pub(crate) link: Link,
}

/// A DragonFly zone: fixed-size items carved from pages, handed out from
/// per-CPU free lists backed by one global list.
///
/// Make one with [`Zone::builder`] (or [`compat::zinit`](crate::compat::zinit));
/// share it by reference or in an `Arc`. Items are raw memory: the zone writes
/// only their first two words while they are free, so anything stored past
/// those survives a free and the next allocation (zones are type-stable).
///
/// Dropping a zone returns all its pages to the source, whatever its flags —
/// the seed's zones live as long as the kernel; a Rust owner ending a zone's
/// life must not leak it. Items still held then dangle. [`Zone::destroy`] is the
/// checked form that `zdestroy` maps to.
pub struct Zone<
    S: PageSource + 'static = OsPages,
    A: Allocator + Clone + Send + Sync + 'static = Global,
> {
    pub(crate) inner: Box<Inner<S, A>, A>,
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> Zone<S, A> {
    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The item size after rounding (`zsize`).
    pub fn item_size(&self) -> usize {
        self.inner.size
    }

    /// The zone's flags.
    pub fn flags(&self) -> ZoneFlags {
        self.inner.pool.lock().flags
    }

    /// The page source.
    pub fn source(&self) -> &S {
        &self.inner.source
    }

    /// Number of per-CPU lists.
    pub fn cpus(&self) -> usize {
        self.inner.pcpu.len()
    }

    /// The per-CPU list bound (`zmax_pcpu`) as the seed derives it.
    pub fn zmax_pcpu(&self) -> usize {
        self.inner.zmax_pcpu.load(Ordering::Relaxed)
    }

    /// Items a refill leaves on the global list (`zfreemin`).
    pub fn zfreemin(&self) -> usize {
        self.inner.pool.lock().zfreemin
    }

    /// The burst in effect for this zone.
    pub fn burst(&self) -> usize {
        self.inner.burst()
    }

    /// Gives this zone its own burst, or with `None` makes it follow
    /// [`zone_burst`] again.
    pub fn set_burst(&self, burst: Option<usize>) {
        let b = burst.map_or(0, |b| b.max(1));
        self.inner.burst.store(b, Ordering::Relaxed);
    }

    /// Free items on CPU `cpu`'s list (wrapping past [`cpus`](Zone::cpus)).
    pub fn pcpu_free(&self, cpu: usize) -> usize {
        self.inner.pcpu.get(cpu).lock().items.len()
    }

    /// Free items on the global list.
    pub fn global_free(&self) -> usize {
        self.inner.pool.lock().items.len()
    }

    /// `zalloc`: an item from the current CPU's list, refilled from the global
    /// list or by growing the zone when empty.
    ///
    /// Errors with [`ZoneError::Exhausted`] when an interrupt or boot zone
    /// has no item left, and [`ZoneError::Pages`] when the page source fails;
    /// a [`ZoneFlags::PANICFAIL`] zone panics instead, naming itself.
    ///
    /// # Panics
    /// Besides `PANICFAIL`, with the `invariants` feature when the item
    /// about to be handed out lost its free marker (`ZONE_ERROR_NOTFREE`):
    /// memory was written after it was freed, so nothing handed out from that
    /// list can be trusted.
    #[inline]
    pub fn alloc(&self) -> Result<NonNull<u8>, ZoneError> {
        self.alloc_on(current_cpu())
    }

    /// [`alloc`](Zone::alloc) using CPU `cpu`'s list (wrapping past
    /// [`cpus`](Zone::cpus)). Any index is safe, since lists are locked; use
    /// it when the caller knows its CPU, or to pin a test.
    #[inline]
    pub fn alloc_on(&self, cpu: usize) -> Result<NonNull<u8>, ZoneError> {
        let z = &*self.inner;
        let mut pc = z.pcpu.get(cpu).lock();
        if pc.items.len() != 0 {
            // SAFETY: the per-CPU list holds valid free items of this zone.
            let item = unsafe { z.take(&mut pc.items) };
            pc.nalloc += 1;
            return Ok(item);
        }
        z.alloc_slow(cpu, pc)
    }

    /// `zfree`: returns `item` to the current CPU's list, moving a burst to
    /// the global list when the list reaches `zmax_pcpu`.
    ///
    /// With the `invariants` feature, an address that is not an item of this
    /// zone is refused with [`ZoneError::InvalidAddress`] and an item already
    /// free with [`ZoneError::AlreadyFree`]; nothing changes then. Without
    /// it, neither is detected.
    ///
    /// # Safety
    /// `item` came from this zone's [`alloc`](Zone::alloc) (or
    /// [`reserve_alloc`](Zone::reserve_alloc)), is not freed yet, and is not
    /// used after this call.
    #[inline]
    pub unsafe fn free(&self, item: NonNull<u8>) -> Result<(), ZoneError> {
        // SAFETY: the caller's guarantees are passed on.
        unsafe { self.free_on(current_cpu(), item) }
    }

    /// [`free`](Zone::free) to CPU `cpu`'s list.
    ///
    /// # Safety
    /// As for [`free`](Zone::free).
    #[inline]
    pub unsafe fn free_on(&self, cpu: usize, item: NonNull<u8>) -> Result<(), ZoneError> {
        let z = &*self.inner;
        if MARK {
            z.check_free_arg(item)?;
        }
        let mut pc = z.pcpu.get(cpu).lock();
        // SAFETY: the caller hands back an item of this zone it no longer uses.
        unsafe { pc.items.push(item.as_ptr()) };
        let zmax = z.zmax_pcpu.load(Ordering::Relaxed).max(ZMAX_PCPU_FLOOR);
        if pc.items.len() < zmax {
            return Ok(());
        }
        z.free_burst(&mut pc, zmax);
        Ok(())
    }

    /// An item from the current CPU's `ZONE_SPECIAL` reserve, without taking
    /// the global lock or growing: the seed's `vm_map_entry` reserve, for a
    /// caller that must not recurse into the page source. `None` when empty.
    pub fn reserve_alloc(&self) -> Option<NonNull<u8>> {
        let z = &*self.inner;
        let mut pc = z.pcpu.current().lock();
        if pc.reserve.len() == 0 {
            return None;
        }
        // SAFETY: the reserve holds valid free items of this zone.
        Some(unsafe { z.take(&mut pc.reserve) })
    }

    /// Puts an item back in the current CPU's reserve.
    ///
    /// # Safety
    /// As for [`free`](Zone::free).
    pub unsafe fn reserve_free(&self, item: NonNull<u8>) -> Result<(), ZoneError> {
        let z = &*self.inner;
        if MARK {
            z.check_free_arg(item)?;
        }
        // SAFETY: the caller hands back an item of this zone it no longer uses.
        unsafe { z.pcpu.current().lock().reserve.push(item.as_ptr()) };
        Ok(())
    }

    /// Items in CPU `cpu`'s `ZONE_SPECIAL` reserve.
    pub fn reserve_len(&self, cpu: usize) -> usize {
        self.inner.pcpu.get(cpu).lock().reserve.len()
    }
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> Inner<S, A> {
    #[inline]
    pub(crate) fn burst(&self) -> usize {
        match self.burst.load(Ordering::Relaxed) {
            0 => zone_burst(),
            b => b,
        }
    }

    /// Pops the head of `list` for the caller, checking (with `invariants`)
    /// and clearing its free marker.
    ///
    /// # Safety
    /// `list` is non-empty and holds valid items of this zone.
    #[inline]
    pub(crate) unsafe fn take(&self, list: &mut FreeList) -> NonNull<u8> {
        if MARK {
            // SAFETY: the head is a valid item.
            let marker = unsafe { marker_read(list.head()) };
            if marker != ZENTRY_FREE {
                self.not_free(list.head(), marker);
            }
        }
        // SAFETY: non-empty list of valid items.
        let item = unsafe { list.pop() };
        if MARK {
            // SAFETY: the item is now the caller's and valid.
            unsafe { marker_write(item, 0) };
        }
        // SAFETY: items are never null (they lie inside allocations).
        unsafe { NonNull::new_unchecked(item) }
    }

    /// `zerror(ZONE_ERROR_NOTFREE)`.
    #[cold]
    #[inline(never)]
    pub(crate) fn not_free(&self, item: *mut u8, marker: usize) -> ! {
        panic!(
            "{}",
            ZoneError::NotFree {
                zone: self.name.clone(),
                addr: item as usize,
                marker,
            }
        )
    }

    /// `zfree`'s argument checks: `INVALID`, then `ALREADYFREE`.
    #[cold]
    pub(crate) fn check_free_arg(&self, item: NonNull<u8>) -> Result<(), ZoneError> {
        let addr = item.as_ptr() as usize;
        if !self.is_item(addr) {
            return Err(ZoneError::InvalidAddress {
                zone: self.name.clone(),
                addr,
            });
        }
        // SAFETY: `addr` is an item of this zone, so its header is readable.
        if unsafe { marker_read(item.as_ptr()) } == ZENTRY_FREE {
            return Err(ZoneError::AlreadyFree {
                zone: self.name.clone(),
                addr,
            });
        }
        Ok(())
    }

    /// Whether `addr` is the start of an item carved by this zone.
    pub(crate) fn is_item(&self, addr: usize) -> bool {
        let ext = self.extents.lock();
        let i = ext.carved.partition_point(|e| e.base <= addr);
        let Some(e) = i.checked_sub(1).map(|i| ext.carved[i]) else {
            return false;
        };
        let off = addr - e.base;
        off.is_multiple_of(self.size) && off + self.size <= e.len
    }

    /// `zalloc` after a miss on the per-CPU list: refill it from the global
    /// list in a burst, keeping `zfreemin` there, or else grow (`zget`).
    #[cold]
    #[inline(never)]
    fn alloc_slow(
        &self,
        cpu: usize,
        mut pc: MutexGuard<'_, Pcpu>,
    ) -> Result<NonNull<u8>, ZoneError> {
        let mut pool = self.pool.lock();
        if pool.items.len() > pool.zfreemin {
            let n = self.burst().min(pool.items.len() - pool.zfreemin);
            for _ in 0..n {
                // SAFETY: n ≤ the global list's length; its items are valid.
                let item = unsafe { pool.items.pop() };
                if MARK {
                    // SAFETY: a valid item.
                    let marker = unsafe { marker_read(item) };
                    if marker != ZENTRY_FREE {
                        self.not_free(item, marker);
                    }
                }
                // SAFETY: the item just left the global list.
                unsafe { pc.items.push(item) };
            }
            drop(pool);
            // SAFETY: the list was just given n ≥ 1 valid items.
            let item = unsafe { self.take(&mut pc.items) };
            pc.nalloc += 1;
            return Ok(item);
        }
        let flags = pool.flags;
        drop(pool);
        drop(pc);
        match self.zget(cpu) {
            Ok(item) => Ok(item),
            Err(e) if flags.contains(ZoneFlags::PANICFAIL) => {
                panic!("zalloc({}) failed: {e}", self.name)
            }
            Err(e) => Err(e),
        }
    }

    /// `zfree`'s hysteresis: the list reached `zmax`, so the `min(zmax / 2,
    /// burst)` most recently freed items move to the global list.
    #[cold]
    #[inline(never)]
    fn free_burst(&self, pc: &mut Pcpu, zmax: usize) {
        let count = (zmax / 2).min(self.burst()).max(1);
        let mut pool = self.pool.lock();
        // SAFETY: count ≤ zmax / 2 < the list's length; its items are valid.
        unsafe { pc.items.move_front(count, &mut pool.items) };
    }
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> Drop for Zone<S, A> {
    fn drop(&mut self) {
        table::unregister(&*self.inner);
    }
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> Drop for Inner<S, A> {
    fn drop(&mut self) {
        let pool = self.pool.get_mut();
        if pool.flags.contains(ZoneFlags::INTERRUPT) {
            KMEM_PAGES.fetch_sub(pool.pagecount, Ordering::Relaxed);
            KMEM_KVASPACE.fetch_sub(pool.pagemax * kmem_sys::page_size(), Ordering::Relaxed);
        } else {
            KERN_PAGES.fetch_sub(pool.pagecount, Ordering::Relaxed);
        }
        let ext = self.extents.get_mut();
        for e in ext.owned.drain(..) {
            // SAFETY: `owned` lists exactly the live allocations this zone made
            // from its source, each with page alignment; the zone is going away.
            unsafe {
                self.source.free_pages(
                    NonNull::new_unchecked(e.base as *mut u8),
                    e.len,
                    kmem_sys::page_size(),
                )
            };
        }
    }
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> fmt::Debug
    for Zone<S, A>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zone")
            .field("name", &self.inner.name)
            .field("size", &self.inner.size)
            .field("flags", &self.flags())
            .finish_non_exhaustive()
    }
}
