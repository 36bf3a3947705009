//! The page layer: the user-space analogue of FreeBSD `vm_kern.c`.
//!
//! | FreeBSD                      | here                                   |
//! |------------------------------|----------------------------------------|
//! | `kernel_arena` (KVA)         | the `kva` arena over one [`Reservation`] |
//! | `kva_alloc` / `kva_free`     | [`PageLayer::kva_alloc`] / [`PageLayer::kva_free`] |
//! | `kmem_back` / `kmem_unback`  | [`PageLayer::back`] / [`PageLayer::unback`] |
//! | `kmem_arena` + `kmem_import` | the `pages` arena, importing committed spans from `kva` |
//! | `kmem_malloc` / `kmem_free`  | [`PageLayer::alloc`] / [`PageLayer::free`] |
//!
//! The process reserves one large range of address space up front (no
//! access, no memory: `mmap(PROT_NONE, MAP_NORESERVE)`), and the `kva` vmem
//! arena hands out pieces of it. The `pages` arena imports spans of at least
//! [`IMPORT_QUANTUM`] from `kva`, committing them on import and decommitting
//! them when a span is wholly free again, so the number of kernel mappings
//! stays small. Inside a span, [`PageLayer::free`] discards the freed pages
//! (`MADV_DONTNEED`, as `kmem_unback` frees the pages of a `kmem_free`): the
//! resident size drops at once, and every page the layer hands out reads as
//! zero — which is why zeroed allocations never need a memset here.
//!
//! Each imported span is offered to the kernel for transparent huge pages
//! (`MADV_HUGEPAGE`, as mimalloc does with its arenas): a span the slabs
//! fill densely then costs one page fault instead of 512 and one TLB entry
//! instead of 512, which is most of what separates a 4 KiB-page heap from a
//! huge-page one on pointer-chasing workloads. The price is resident size:
//! a huge page is resident whole once touched. Turn it off with
//! [`PageLayer::set_huge_pages`]; on kernels whose THP mode is `never` the
//! advice is ignored.
//!
//! A word per page (the page map) records which cache's keg owns a page, so
//! a free can tell in one load whether a pointer belongs to the cache it is
//! given to, and `kmem_free` which size class a buffer came from.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use kmem_sys::{PageSource, Reservation, SysError, page_size};
use kmem_vmem::{Constraints, Policy, Source, Vmem};

use crate::Meta;
use crate::error::KmemError;

/// Smallest span the `pages` arena imports from `kva` (and so the smallest
/// range committed or decommitted at once).
pub const IMPORT_QUANTUM: usize = 2 << 20;

/// Address space the process-wide layer reserves, tried from the first entry
/// down until the OS agrees.
#[cfg(not(miri))]
const GLOBAL_RESERVE: [usize; 4] = [256 << 30, 64 << 30, 16 << 30, 4 << 30];
/// Under Miri a reservation is one allocation, whose bookkeeping takes a bit
/// per byte once any of it is uninitialised (as heap blocks under `Kmem`
/// soon are): 32 GiB for 256 GiB. 1 GiB (128 MiB of that) is ample for
/// tests.
#[cfg(miri)]
const GLOBAL_RESERVE: [usize; 1] = [1 << 30];

/// Owner tag of pages allocated without one.
pub const NO_OWNER: u32 = 0;

/// The reserved address space, its arena and the page map.
pub struct Kva {
    reservation: Reservation,
    arena: Vmem<Meta>,
    /// One `u32` per page of the reservation (committed, demand-zero).
    map: Reservation,
    /// Bytes committed by imports into a `pages` arena.
    committed: AtomicUsize,
    /// `log2(page size)`: map indexes by shift, never by division.
    shift: u32,
    /// Whether imports advise transparent huge pages.
    huge_pages: AtomicBool,
}

impl Kva {
    fn new(size: usize) -> Result<Self, SysError> {
        let reservation = Reservation::with_align(size, IMPORT_QUANTUM)?;
        let size = reservation.size();
        let map = Reservation::new(size / page_size() * 4)?;
        map.commit(0, map.size())?;
        let arena = Vmem::builder("kva")
            .span(reservation.base().as_ptr() as usize, size)
            .quantum(page_size())
            .metadata(Meta)
            .build()
            .map_err(|_| SysError::InvalidSize {
                op: "kva arena",
                size,
            })?;
        Ok(Kva {
            reservation,
            arena,
            map,
            committed: AtomicUsize::new(0),
            shift: page_size().trailing_zeros(),
            huge_pages: AtomicBool::new(true),
        })
    }

    fn offset(&self, addr: usize) -> usize {
        addr - self.reservation.base().as_ptr() as usize
    }

    /// The page-map entries of `[addr, addr + size)`.
    fn entries(&self, addr: usize, size: usize) -> &[AtomicU32] {
        let first = self.offset(addr) >> self.shift;
        let n = size >> self.shift;
        let map = self.map.base().cast::<AtomicU32>().as_ptr();
        // SAFETY: the map is committed, holds one byte per page of the
        // reservation, and callers pass ranges inside the reservation.
        unsafe { core::slice::from_raw_parts(map.add(first), n) }
    }

    /// Records a fresh allocation and its owner in the page map.
    fn mark(&self, addr: usize, size: usize, owner: u32) {
        let e = self.entries(addr, size);
        e[0].store(START | owner, Ordering::Relaxed);
        for b in &e[1..] {
            b.store(CONT | owner, Ordering::Relaxed);
        }
    }

    /// Checks that `[addr, addr + size)` is exactly one allocation and takes
    /// it off the map; on error nothing changes.
    fn unmark(&self, addr: usize, size: usize) -> Result<(), &'static str> {
        let e = self.entries(addr, size);
        let head = e[0].load(Ordering::Relaxed);
        if head & START == 0 {
            return Err(if head & CONT != 0 {
                "address inside an allocation"
            } else {
                "not allocated (double free or unknown address)"
            });
        }
        if e[1..].iter().any(|b| b.load(Ordering::Relaxed) & CONT == 0) {
            return Err("size larger than the allocation");
        }
        let end = addr + size;
        if self.reservation.contains(end)
            && self.entries(end, page_size())[0].load(Ordering::Relaxed) & CONT != 0
        {
            return Err("size smaller than the allocation");
        }
        // Claim the head so two racing frees of one range cannot both win.
        e[0].compare_exchange(head, 0, Ordering::Relaxed, Ordering::Relaxed)
            .map_err(|_| "freed twice at once")?;
        for b in &e[1..] {
            b.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    #[inline]
    fn owner_of(&self, addr: usize) -> Option<u32> {
        self.view().owner_of(addr)
    }

    fn view(&self) -> MapView {
        MapView {
            map: self.map.base().cast(),
            base: self.reservation.base().as_ptr() as usize,
            pages: self.reservation.size() >> self.shift,
            shift: self.shift,
        }
    }
}

/// A page map's coordinates copied out of its [`Kva`], so that an owner
/// check is one load from the map rather than a chase through the layer.
/// Valid while the `Kva` lives; [`PageLayer::map_view`] hands them out only
/// for a `'static` layer.
#[derive(Clone, Copy)]
pub(crate) struct MapView {
    map: NonNull<AtomicU32>,
    base: usize,
    pages: usize,
    shift: u32,
}

// SAFETY: the view points at atomics of a map that lives for the program
// (or, inside `Kva`, as long as the view's user).
unsafe impl Send for MapView {}
// SAFETY: as above; every access is an atomic load.
unsafe impl Sync for MapView {}

impl MapView {
    /// A view of no map: every address is outside it.
    pub(crate) const EMPTY: MapView = MapView {
        map: NonNull::dangling(),
        base: 0,
        pages: 0,
        shift: 0,
    };

    /// The reservation the map covers, as `(base, size)`.
    pub(crate) fn span(self) -> (usize, usize) {
        (self.base, self.pages << self.shift)
    }

    /// The offset of `addr` in the reservation, or `None` outside it.
    #[inline(always)]
    pub(crate) fn offset(self, addr: usize) -> Option<usize> {
        let off = addr.wrapping_sub(self.base);
        (off >> self.shift < self.pages).then_some(off)
    }

    /// The map word of the page holding `addr`, or `None` outside the
    /// reservation.
    #[inline(always)]
    fn word(self, addr: usize) -> Option<u32> {
        let off = self.offset(addr)?;
        // SAFETY: the map holds one committed word per page of the
        // reservation, `off >> shift` is below that count, and the map
        // outlives this view.
        Some(unsafe { self.map.add(off >> self.shift).as_ref() }.load(Ordering::Relaxed))
    }

    /// The owner tag of the page holding `addr`, or `None` outside the
    /// reservation. The tag is [`NO_OWNER`] for a free page as well as for
    /// an unowned block (the map holds a tag only with an allocation's
    /// start or continuation bit), so a tag other than `NO_OWNER` proves
    /// the page allocated to that owner.
    #[inline(always)]
    pub(crate) fn tag(self, addr: usize) -> Option<u32> {
        self.word(addr).map(|b| b & OWNER)
    }

    /// [`PageLayer::owner_of`].
    #[inline(always)]
    pub(crate) fn owner_of(self, addr: usize) -> Option<u32> {
        self.word(addr)
            .filter(|b| b & (START | CONT) != 0)
            .map(|b| b & OWNER)
    }
}

/// Page-map bits: first page of an allocation, a later page, the owner tag.
const START: u32 = 1 << 31;
const CONT: u32 = 1 << 30;
const OWNER: u32 = CONT - 1;
/// Largest owner tag [`PageLayer::alloc_owned`] takes.
pub const MAX_OWNER: u32 = OWNER;

/// Either the process-wide address space or a private one.
#[derive(Clone)]
enum KvaRef {
    Static(&'static Kva),
    Shared(Arc<Kva>),
}

impl core::ops::Deref for KvaRef {
    type Target = Kva;
    fn deref(&self) -> &Kva {
        match self {
            KvaRef::Static(k) => k,
            KvaRef::Shared(k) => k,
        }
    }
}

/// The `pages` arena's source: spans of committed address space.
struct Backing {
    kva: KvaRef,
}

impl Source for Backing {
    fn import(&self, size: usize) -> Option<usize> {
        let base = self.kva.arena.alloc(size, Policy::InstantFit).ok()?;
        if self
            .kva
            .reservation
            .commit(self.kva.offset(base), size)
            .is_err()
        {
            // Could not commit: give the address space back untouched.
            let _ = self.kva.arena.free(base, size);
            return None;
        }
        if self.kva.huge_pages.load(Ordering::Relaxed) {
            // Only advice: a kernel without THP leaves the span as it is.
            let _ = self
                .kva
                .reservation
                .advise_huge(self.kva.offset(base), size);
        }
        self.kva.committed.fetch_add(size, Ordering::Relaxed);
        Some(base)
    }

    fn release(&self, base: usize, size: usize) {
        // A failed decommit leaves the pages mapped; the range is still ours
        // and goes back to the arena either way.
        // SAFETY: the page arena releases a span only when it is wholly
        // free: every allocation in it was freed, and nothing uses it.
        let _ = unsafe { self.kva.reservation.decommit(self.kva.offset(base), size) };
        self.kva.committed.fetch_sub(size, Ordering::Relaxed);
        let _ = self.kva.arena.free(base, size);
    }
}

/// Figures of a page layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageStats {
    /// Address space reserved.
    pub reserved: usize,
    /// Bytes committed (imported into the `pages` arena).
    pub committed: usize,
    /// Bytes handed out by [`PageLayer::alloc`] and not yet freed.
    pub allocated: usize,
    /// Calls to [`PageLayer::alloc`] that succeeded.
    pub allocs: u64,
    /// Calls to [`PageLayer::free`].
    pub frees: u64,
}

/// A page allocator over reserved address space; see the [module docs](self).
///
/// ```
/// use kmem::page::PageLayer;
///
/// let layer = PageLayer::new(64 << 20)?;
/// let p = layer.alloc(3 * 4096, 4096)?;
/// // SAFETY: three fresh pages, ours until freed.
/// unsafe {
///     assert_eq!(*p.as_ptr().add(8191), 0); // fresh pages read as zero
///     p.as_ptr().write_bytes(1, 3 * 4096);
///     layer.free(p, 3 * 4096)?;
/// }
/// assert_eq!(layer.stats().allocated, 0);
/// # Ok::<(), kmem::KmemError>(())
/// ```
pub struct PageLayer {
    kva: KvaRef,
    pages: Vmem<Meta, Backing>,
    allocated: AtomicUsize,
    allocs: AtomicU64,
    frees: AtomicU64,
}

static GLOBAL_KVA: OnceLock<Kva> = OnceLock::new();

/// The global page map's coordinates, kept inline in a static once the
/// layer exists, so that [`global_owner_of`] needs no pointer chase.
static GLOBAL_MAP: OnceLock<MapView> = OnceLock::new();

/// [`PageLayer::owner_of`] for the process-wide layer, in two dependent
/// loads. `None` before the layer exists. (`Kmem`'s dealloc fast path
/// reads a per-thread copy of the view instead, [`crate::home::Maps`].)
#[inline]
pub(crate) fn global_owner_of(addr: usize) -> Option<u32> {
    GLOBAL_MAP.get()?.owner_of(addr)
}

static GLOBAL: OnceLock<PageLayer> = OnceLock::new();

impl PageLayer {
    /// A private page layer over `reserve` bytes of fresh address space.
    ///
    /// # Errors
    ///
    /// [`KmemError::OutOfMemory`] if the address space cannot be reserved.
    pub fn new(reserve: usize) -> Result<Self, KmemError> {
        let kva = Kva::new(reserve).map_err(|_| oom("kva", reserve))?;
        Self::over(KvaRef::Shared(Arc::new(kva)))
    }

    /// The process-wide page layer, reserving its address space on first
    /// use. Panics only if no address space at all can be reserved.
    pub fn global() -> &'static PageLayer {
        GLOBAL.get_or_init(|| {
            let kva = GLOBAL_KVA.get_or_init(|| {
                GLOBAL_RESERVE
                    .iter()
                    .find_map(|&size| Kva::new(size).ok())
                    .expect("kmem: cannot reserve address space for the page layer")
            });
            GLOBAL_MAP.get_or_init(|| kva.view());
            Self::over(KvaRef::Static(kva)).expect("kmem: cannot build the page layer")
        })
    }

    fn over(kva: KvaRef) -> Result<Self, KmemError> {
        let backing = Backing { kva: kva.clone() };
        let pages = Vmem::builder("kmem_pages")
            .quantum(page_size())
            .metadata(Meta)
            .source(backing, IMPORT_QUANTUM)
            .build()
            .map_err(|_| oom("kmem_pages", 0))?;
        Ok(PageLayer {
            kva,
            pages,
            allocated: AtomicUsize::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
        })
    }

    fn kva(&self) -> &Kva {
        &self.kva
    }

    /// Allocates `size` bytes (rounded up to whole pages) of backed,
    /// zero-filled memory aligned to `align` (`kmem_malloc`).
    ///
    /// # Errors
    ///
    /// [`KmemError::OutOfMemory`] when the address space is exhausted or the
    /// OS refuses to commit; [`KmemError::InvalidRequest`] for a zero size or
    /// an alignment that is not a power of two.
    pub fn alloc(&self, size: usize, align: usize) -> Result<NonNull<u8>, KmemError> {
        self.alloc_owned(size, align, NO_OWNER)
    }

    /// [`alloc`](Self::alloc), recording `owner` (at most [`MAX_OWNER`]) in
    /// the page map for [`owner_of`](Self::owner_of).
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc).
    pub fn alloc_owned(
        &self,
        size: usize,
        align: usize,
        owner: u32,
    ) -> Result<NonNull<u8>, KmemError> {
        debug_assert!(owner <= MAX_OWNER);
        if size == 0 || !align.is_power_of_two() {
            return Err(KmemError::InvalidRequest {
                cache: "kmem_pages",
                size,
                align,
                why: "size must be non-zero and alignment a power of two",
            });
        }
        let size = kmem_sys::round_to_pages(size).ok_or_else(|| oom("kmem_pages", size))?;
        let addr = if align <= page_size() {
            self.pages.alloc(size, Policy::InstantFit)
        } else {
            let c = Constraints {
                align,
                ..Constraints::default()
            };
            self.pages.xalloc(size, &c, Policy::InstantFit)
        }
        .map_err(|_| oom("kmem_pages", size))?;
        self.kva().mark(addr, size, owner & OWNER);
        self.allocated.fetch_add(size, Ordering::Relaxed);
        self.allocs.fetch_add(1, Ordering::Relaxed);
        // The arena never hands out address 0: the reservation is a mapping.
        NonNull::new(addr as *mut u8).ok_or_else(|| oom("kmem_pages", size))
    }

    /// Frees `size` bytes at `ptr` from [`alloc`](Self::alloc)
    /// (`kmem_free`): the pages go back to the OS at once, the address
    /// space back to the arena.
    ///
    /// # Errors
    ///
    /// [`KmemError::BadFree`] when `[ptr, ptr + size)` is not exactly one
    /// allocation of this layer; nothing changes then.
    ///
    /// # Safety
    ///
    /// Nothing may use the memory after the call.
    pub unsafe fn free(&self, ptr: NonNull<u8>, size: usize) -> Result<(), KmemError> {
        let addr = ptr.as_ptr() as usize;
        let size = kmem_sys::round_to_pages(size).unwrap_or(size);
        let kva = self.kva();
        if size == 0
            || !kva.reservation.contains(addr)
            || !kva.reservation.contains(addr + size - 1)
        {
            return Err(bad_free(addr, size, "not a range of this page layer"));
        }
        // Validate and claim the range through the page map before touching
        // the pages: discarding after the arena took the range back could
        // zero a new owner's data.
        kva.unmark(addr, size)
            .map_err(|why| bad_free(addr, size, why))?;
        // SAFETY: the range was one allocation, claimed back just now, and
        // the caller's promise says nothing uses it any more.
        let _ = unsafe { kva.reservation.discard(kva.offset(addr), size) };
        if let Err(e) = self.pages.free(addr, size) {
            // The page map and the arena disagree: a bug, not bad input.
            panic!("kmem_pages: page map accepted a free the arena refused: {e}");
        }
        self.allocated.fetch_sub(size, Ordering::Relaxed);
        self.frees.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The owner tag given to [`alloc_owned`](Self::alloc_owned) for the
    /// allocation holding `addr`, or `None` if no allocation of this layer
    /// holds it. One load: this is how `kmem_free` finds a buffer's class.
    #[inline]
    pub fn owner_of(&self, addr: usize) -> Option<u32> {
        self.kva().owner_of(addr)
    }

    /// The page map's coordinates, for owner checks on a hot path.
    pub(crate) fn map_view(&'static self) -> MapView {
        self.kva().view()
    }

    /// Reserves `size` bytes (whole pages) of address space with nothing
    /// behind it (`kva_alloc`); [`back`](Self::back) makes pages usable.
    ///
    /// # Errors
    ///
    /// [`KmemError::OutOfMemory`] when the address space is exhausted.
    pub fn kva_alloc(&self, size: usize) -> Result<NonNull<u8>, KmemError> {
        let addr = self
            .kva()
            .arena
            .alloc(size, Policy::InstantFit)
            .map_err(|_| oom("kva", size))?;
        NonNull::new(addr as *mut u8).ok_or_else(|| oom("kva", size))
    }

    /// Returns address space from [`kva_alloc`](Self::kva_alloc)
    /// (`kva_free`); its pages must have been [`unback`](Self::unback)ed.
    ///
    /// # Errors
    ///
    /// [`KmemError::BadFree`] when the range is not one `kva_alloc` result.
    pub fn kva_free(&self, ptr: NonNull<u8>, size: usize) -> Result<(), KmemError> {
        let addr = ptr.as_ptr() as usize;
        self.kva()
            .arena
            .free(addr, size)
            .map_err(|e| bad_free(addr, size, &e.to_string()))
    }

    /// Backs `[ptr, ptr + size)` of a [`kva_alloc`](Self::kva_alloc) range
    /// with demand-zero memory (`kmem_back`).
    ///
    /// # Errors
    ///
    /// [`KmemError::OutOfMemory`] if the OS refuses, or the range is not
    /// page-aligned inside the reserved space.
    pub fn back(&self, ptr: NonNull<u8>, size: usize) -> Result<(), KmemError> {
        let kva = self.kva();
        let addr = ptr.as_ptr() as usize;
        if !kva.reservation.contains(addr) {
            return Err(oom("kva", size));
        }
        kva.reservation
            .commit(kva.offset(addr), size)
            .map_err(|_| oom("kva", size))
    }

    /// Takes the memory behind `[ptr, ptr + size)` back (`kmem_unback`):
    /// resident size drops and the range faults until backed again.
    ///
    /// # Errors
    ///
    /// [`KmemError::BadFree`] if the range is not page-aligned inside the
    /// reserved space.
    ///
    /// # Safety
    ///
    /// Nothing may use the memory after the call.
    pub unsafe fn unback(&self, ptr: NonNull<u8>, size: usize) -> Result<(), KmemError> {
        let kva = self.kva();
        let addr = ptr.as_ptr() as usize;
        if !kva.reservation.contains(addr) {
            return Err(bad_free(addr, size, "not in the reserved address space"));
        }
        // SAFETY: the caller's promise: nothing uses the range any more.
        unsafe { kva.reservation.decommit(kva.offset(addr), size) }
            .map_err(|e| bad_free(addr, size, &e.to_string()))
    }

    /// Changes the owner tag of a live allocation of exactly
    /// `[ptr, ptr + size)` from `from` to `to`.
    ///
    /// # Errors
    ///
    /// [`KmemError::BadFree`] if the range is not one allocation or its
    /// owner is not `from`; nothing changes then.
    pub(crate) fn retag(
        &self,
        ptr: NonNull<u8>,
        size: usize,
        from: u32,
        to: u32,
    ) -> Result<(), KmemError> {
        let addr = ptr.as_ptr() as usize;
        let size = kmem_sys::round_to_pages(size).unwrap_or(size);
        let kva = self.kva();
        if self.owner_of(addr) != Some(from) || !kva.reservation.contains(addr + size - 1) {
            return Err(bad_free(addr, size, "not a block of this page layer"));
        }
        kva.unmark(addr, size)
            .map_err(|why| bad_free(addr, size, why))?;
        kva.mark(addr, size, to);
        Ok(())
    }

    /// Whether spans imported from now on are advised for transparent huge
    /// pages (on by default; see the [module docs](self)). Spans already
    /// committed keep the advice they got. For the process-wide layer, call
    /// it first thing in `main` to cover the whole heap.
    pub fn set_huge_pages(&self, on: bool) {
        self.kva().huge_pages.store(on, Ordering::Relaxed);
    }

    /// Whether imports advise transparent huge pages.
    pub fn huge_pages(&self) -> bool {
        self.kva().huge_pages.load(Ordering::Relaxed)
    }

    /// Figures of this layer.
    pub fn stats(&self) -> PageStats {
        PageStats {
            reserved: self.kva().reservation.size(),
            committed: self.kva.committed.load(Ordering::Relaxed),
            allocated: self.allocated.load(Ordering::Relaxed),
            allocs: self.allocs.load(Ordering::Relaxed),
            frees: self.frees.load(Ordering::Relaxed),
        }
    }
}

fn oom(cache: &'static str, size: usize) -> KmemError {
    KmemError::OutOfMemory { cache, size }
}

fn bad_free(addr: usize, size: usize, why: &str) -> KmemError {
    KmemError::BadFree {
        cache: "kmem_pages",
        addr,
        why: format!("{why} (size {size:#x})"),
    }
}

// SAFETY: `alloc` returns disjoint, page-aligned, zero-filled ranges of
// committed memory that stay valid until `free_pages` gives them back.
unsafe impl PageSource for PageLayer {
    fn alloc_pages(&self, size: usize, align: usize) -> Result<NonNull<u8>, SysError> {
        self.alloc(size, align).map_err(|_| SysError::InvalidSize {
            op: "kmem_pages",
            size,
        })
    }

    unsafe fn free_pages(&self, ptr: NonNull<u8>, size: usize, _align: usize) {
        // SAFETY: the caller returns pages it got from `alloc_pages`.
        let r = unsafe { self.free(ptr, size) };
        debug_assert!(r.is_ok(), "{r:?}");
    }
}
