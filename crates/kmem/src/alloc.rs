//! `kmem_alloc`: the size-class caches and the process-wide allocator
//! behind both [`kmem_alloc`] and [`Kmem`](crate::Kmem).
//!
//! Each class of [`crate::sizes`] has a keg (pages from the process-wide
//! page layer, stamped with the class as owner) and a magazine depot. The
//! front end is one thread-local struct holding a loaded/previous magazine
//! pair per class (`kmem_magazine::MagazinePair`): a hit is a thread-local
//! access, a class lookup and a pop — no lock, no atomic. A thread's
//! magazines go to the depots when it exits (a thread-local destructor
//! armed by its first slow path); an allocation made after that, in another
//! thread-local's destructor, goes to the keg directly. The magazines
//! themselves live in a thread-local without a destructor, so the fast
//! path reaches them with no state check. Nothing here calls the global allocator: kegs, depots and
//! magazines keep their metadata in [`Meta`].
//!
//! Classes whose buffers can share a cache line also have a *remote* pair
//! per thread: a buffer whose line belongs to another thread (see
//! [`crate::home`]) is freed there, and its full magazines go to the depot
//! rather than back to this thread's allocations, so a thread never reuses
//! a buffer in a line that another thread is writing.
//!
//! Requests above [`MAX_CACHED`](crate::sizes::MAX_CACHED), or aligned more
//! than any class provides, go to the page layer (owner tag 0).

use core::cell::UnsafeCell;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use std::sync::OnceLock;

use kmem_magazine::{Config, Depot, MagazinePair};
use kmem_slab::Keg;

use crate::Meta;
use crate::error::KmemError;
use crate::fill::{Buf, CacheKeg, Fill, Pages};
use crate::global::fatal;
use crate::home::{self, LINE_CLASSES, Maps, shares_lines};
use crate::page::{NO_OWNER, PageLayer};
use crate::sizes::{CLASS_NAMES, CLASS_SIZES, NUM_CLASSES, class_align, class_for};
use crate::stats::CacheStats;

type ClassDepot = Depot<Fill<&'static CacheKeg>, Meta>;

static KEGS: OnceLock<[CacheKeg; NUM_CLASSES]> = OnceLock::new();
static DEPOTS: OnceLock<[ClassDepot; NUM_CLASSES]> = OnceLock::new();

/// Page-map owner tag of class `c`.
#[inline]
pub(crate) fn owner(c: usize) -> u32 {
    c as u32 + 1
}

#[cold]
fn init() -> &'static [ClassDepot; NUM_CLASSES] {
    DEPOTS.get_or_init(|| {
        let layer = PageLayer::global();
        home::init();
        let kegs = KEGS.get_or_init(|| {
            core::array::from_fn(|c| {
                let b = Keg::builder(CLASS_NAMES[c], CLASS_SIZES[c], class_align(c))
                    .source(Pages::Layer(layer, owner(c)))
                    .metadata(Meta);
                crate::debug::class_keg(c, b).build().unwrap_or_else(|e| {
                    fatal(format_args!("kmem: size class {}: {e}\n", CLASS_NAMES[c]))
                })
            })
        });
        core::array::from_fn(|c| {
            let fill = Fill::new(&kegs[c], None, None);
            let config = Config::new(CLASS_NAMES[c], CLASS_SIZES[c])
                .magazine_size(start_rounds(CLASS_SIZES[c]));
            Depot::new_in(fill, config, Meta).unwrap_or_else(|e| {
                fatal(format_args!("kmem: size class {}: {e}\n", CLASS_NAMES[c]))
            })
        })
    })
}

/// Starting magazine size of a class. The seed starts small and grows
/// under depot contention; a process allocator without contention would stay
/// at 15 rounds and visit the depot (a lock and a clock read) every 15 frees,
/// so small classes start at UMA-like bucket sizes instead. Above 4 KiB a
/// magazine holds about 64 KiB of buffers (at least one), as UMA's
/// `bucket_select` bounds a bucket by bytes: a miss fills a whole magazine
/// from the keg, and 15 rounds of 128 KiB would commit ~2 MiB per class for
/// a single allocation.
fn start_rounds(size: usize) -> usize {
    match size {
        0..=1024 => 143,
        1025..=4096 => 63,
        _ => ((64 << 10) / size).max(1),
    }
}

#[inline]
fn depots() -> &'static [ClassDepot; NUM_CLASSES] {
    match DEPOTS.get() {
        Some(d) => d,
        None => init(),
    }
}

/// One thread's magazines: a pair per class for its own buffers, a pair per
/// line-sharing class for buffers whose cache line is another thread's (see
/// [`crate::home`]), the tag its lines carry (0 until it allocates), and a
/// copy of the page and line maps' coordinates for the free fast path.
struct ThreadCache {
    pairs: [MagazinePair<Buf>; NUM_CLASSES],
    remote: [MagazinePair<Buf>; LINE_CLASSES],
    /// [`Maps::EMPTY`] until the first slow path (a thread holds no
    /// magazine before it), then [`home::maps`].
    maps: Maps,
    tag: u8,
    /// [`FRESH`], [`ARMED`] or [`GONE`].
    state: u8,
}

impl ThreadCache {
    /// The pair a free of class `c` goes to: this thread's own if `local`,
    /// else the remote one.
    #[inline(always)]
    fn pair_for(&mut self, c: usize, local: bool) -> &mut MagazinePair<Buf> {
        // Only line-sharing classes, all below LINE_CLASSES, are ever remote.
        match self.remote.get_mut(c) {
            Some(remote) if !local => remote,
            _ => &mut self.pairs[c],
        }
    }

    /// The pair a free of `p` (class `c`) goes to.
    #[inline(always)]
    fn free_pair(&mut self, c: usize, p: NonNull<u8>) -> &mut MagazinePair<Buf> {
        let local = self.maps.is_local(p.as_ptr() as usize, c, self.tag);
        self.pair_for(c, local)
    }

    fn flush(&mut self, depots: &[ClassDepot; NUM_CLASSES]) {
        for (pair, depot) in self.pairs.iter_mut().zip(depots) {
            pair.flush(depot);
        }
        for (pair, depot) in self.remote.iter_mut().zip(depots) {
            pair.flush(depot);
        }
    }
}

/// [`ThreadCache::state`]: no exit hook yet, hook armed, flushed at exit.
const FRESH: u8 = 0;
const ARMED: u8 = 1;
const GONE: u8 = 2;

thread_local! {
    /// This thread's magazines. It has no destructor, so reaching it is a
    /// bare thread-local address (no state check on the fast path) and it
    /// stays reachable while other thread-locals are destroyed.
    /// (`ManuallyDrop` because a `MagazinePair` has a drop check of its
    /// own; [`ExitHook`] flushes the pairs instead.)
    static THREAD: UnsafeCell<ManuallyDrop<ThreadCache>> = const {
        UnsafeCell::new(ManuallyDrop::new(ThreadCache {
            pairs: [const { MagazinePair::new() }; NUM_CLASSES],
            remote: [const { MagazinePair::new() }; LINE_CLASSES],
            maps: Maps::EMPTY,
            tag: 0,
            state: FRESH,
        }))
    };
    /// Flushes [`THREAD`] to the depots when the thread exits. Touched
    /// first by a slow path, which is what registers its destructor.
    static EXIT_HOOK: ExitHook = const { ExitHook };
}

struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        with_thread(|t| {
            if let Some(depots) = DEPOTS.get() {
                t.flush(depots);
            }
            t.state = GONE;
        });
    }
}

/// Runs `f` on this thread's cache.
#[inline(always)]
fn with_thread<R>(f: impl FnOnce(&mut ThreadCache) -> R) -> R {
    // Only the address comes out of `LocalKey::with` (a tiny closure the
    // compiler always inlines); the table has no destructor, so the address
    // stays valid for the whole life of the thread.
    let t: *mut ManuallyDrop<ThreadCache> = THREAD.with(UnsafeCell::get);
    // SAFETY: only this thread reaches its cache, and `f` never re-enters
    // the allocator: magazine hits call nothing, and the depot, keg and
    // page layer under a pair never allocate through the global allocator.
    f(unsafe { &mut *t })
}

/// Runs `f` on this thread's cache if it may still take magazines from a
/// depot (arming the exit hook first), or returns `None` once the thread
/// has been flushed at exit: the caller then goes to the keg.
#[inline]
fn with_live_thread<R>(f: impl FnOnce(&mut ThreadCache) -> R) -> Option<R> {
    with_thread(|t| {
        if t.state == FRESH {
            // Callers set up the classes (and so the maps) first.
            t.maps = home::maps();
            // Registering the hook's destructor fails only if this thread's
            // thread-locals are already being destroyed.
            t.state = if EXIT_HOOK.try_with(|_| ()).is_ok() {
                ARMED
            } else {
                GONE
            };
        }
        (t.state == ARMED).then(|| f(t))
    })
}

/// The keg of class `c`, once the classes exist.
pub(crate) fn class_keg(c: usize) -> Option<&'static CacheKeg> {
    KEGS.get().map(|k| &k[c])
}

/// Allocates one buffer of class `c` for a request of `size` bytes at
/// `align`.
#[inline]
pub(crate) fn class_alloc(c: usize, size: usize, align: usize) -> Option<NonNull<u8>> {
    class_alloc_hit(c).or_else(|| class_alloc_slow(c, size, align))
}

/// A buffer of class `c` from this thread's loaded magazine, or `None`
/// without trying anything slower.
#[inline(always)]
pub(crate) fn class_alloc_hit(c: usize) -> Option<NonNull<u8>> {
    with_thread(|t| t.pairs[c].alloc_hit()).map(|Buf(p)| p)
}

#[cold]
fn class_alloc_slow(c: usize, size: usize, align: usize) -> Option<NonNull<u8>> {
    let depot = &depots()[c];
    // KMEM_DEBUG: debugged classes never load magazines, so they land here.
    if let Some(r) = crate::debug::hook_alloc(c, depot.backend().keg, size, align) {
        return r;
    }
    let got = with_live_thread(|t| {
        let b = t.pairs[c].alloc(depot);
        if shares_lines(c) {
            // The magazine just loaded (from the depot or the keg) and the
            // buffer handed out make their lines this thread's.
            if t.tag == 0 {
                t.tag = home::new_tag();
            }
            t.maps.stamp(b.as_slice(), t.tag);
            t.maps.stamp(t.pairs[c].loaded_rounds(), t.tag);
        }
        b
    });
    match got {
        Some(b) => b.map(|Buf(p)| p),
        // This thread's magazines were flushed at exit: straight to the keg.
        None => depot.backend().keg.alloc().ok(),
    }
}

/// Frees one buffer of class `c`, allocated for `size` bytes: into this
/// thread's pair if its line is this thread's, else into the remote pair.
#[inline]
pub(crate) fn class_free(c: usize, p: NonNull<u8>, size: usize) {
    if !class_free_hit(c, p) {
        class_free_slow(c, p, size);
    }
}

/// Puts `p` (class `c`) in this thread's loaded magazine if it has room;
/// `false` if it did nothing.
#[inline(always)]
fn class_free_hit(c: usize, p: NonNull<u8>) -> bool {
    with_thread(|t| t.free_pair(c, p).free_hit(Buf(p))).is_ok()
}

/// The whole `Kmem` free fast path: if this thread's copy of the page map
/// gives `ptr`'s page to class `c`, puts `ptr` in the loaded magazine (its
/// own or, for a line another thread owns, the remote one) if it has room.
/// `false` if it did nothing: the page is not class `c`'s, nothing is
/// known yet, or the magazine is full.
#[inline(always)]
pub(crate) fn class_free_fast(c: usize, ptr: *mut u8) -> bool {
    with_thread(|t| {
        let Some(local) = t.maps.check_free(ptr as usize, c, owner(c), t.tag) else {
            return false;
        };
        // SAFETY: `ptr` lies in a page of the reservation, which does not
        // start at address 0.
        let p = unsafe { NonNull::new_unchecked(ptr) };
        t.pair_for(c, local).free_hit(Buf(p)).is_ok()
    })
}

#[cold]
fn class_free_slow(c: usize, p: NonNull<u8>, size: usize) {
    let depot = &depots()[c];
    // SAFETY: `p` is in a page of class `c`; the caller gives it up.
    if unsafe { crate::debug::hook_free(c, depot.backend().keg, p, size) } {
        return;
    }
    if with_live_thread(|t| t.free_pair(c, p).free(depot, Buf(p))).is_none() {
        // SAFETY: `p` is a buffer of this class's keg, no longer used.
        let r = unsafe { depot.backend().keg.free(p) };
        debug_assert!(r.is_ok(), "{r:?}");
    }
}

/// The class whose pages hold `p`, `Some(None)` for a page-layer block, or
/// `None` if `p` is no allocation of ours.
#[inline]
pub(crate) fn owner_class(p: NonNull<u8>) -> Option<Option<usize>> {
    match crate::page::global_owner_of(p.as_ptr() as usize)? {
        NO_OWNER => Some(None),
        o if (o as usize) <= NUM_CLASSES => Some(Some(o as usize - 1)),
        _ => None,
    }
}

/// Allocates `size` bytes aligned to `align` from the class caches or the
/// page layer. Shared by [`kmem_alloc`] and `Kmem`.
#[inline]
pub(crate) fn alloc_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    match class_for(size, align) {
        Some(c) => class_alloc(c, size, align),
        None => large_alloc(size, align, false),
    }
}

/// A block above the classes: firewalled when `KMEM_DEBUG` asks, else
/// from the large-block cache or the page layer.
pub(crate) fn large_alloc(size: usize, align: usize, zero: bool) -> Option<NonNull<u8>> {
    match crate::debug::large_alloc(size, align) {
        // Firewall blocks are fresh pages, zero already.
        Some(r) => r,
        None => crate::large::alloc(size, align, zero),
    }
}

/// Frees a block from [`large_alloc`].
///
/// # Safety
///
/// The caller gives the block up.
pub(crate) unsafe fn large_free(
    p: NonNull<u8>,
    size: usize,
    align: usize,
) -> Result<(), KmemError> {
    // SAFETY: the caller's promise, passed on.
    match unsafe { crate::debug::large_free(p, size, align) } {
        Some(r) => r,
        // SAFETY: as above.
        None => unsafe { crate::large::free(p, size) },
    }
}

/// Allocates `size` bytes (`kmem_alloc(size, KM_NOSLEEP)`): 8-byte aligned,
/// and 64-byte aligned when `size` is a multiple of 64, as the seed's table
/// arranges. Sizes above 128 KiB come from the page layer.
///
/// ```
/// let p = kmem::kmem_alloc(100)?;
/// // SAFETY: 100 bytes of ours until the free below.
/// unsafe {
///     p.as_ptr().write_bytes(7, 100);
///     kmem::kmem_free(p, 100)?;
/// }
/// # Ok::<(), kmem::KmemError>(())
/// ```
///
/// # Errors
///
/// [`KmemError::InvalidRequest`] for size 0, [`KmemError::OutOfMemory`].
pub fn kmem_alloc(size: usize) -> Result<NonNull<u8>, KmemError> {
    if size == 0 {
        return Err(KmemError::InvalidRequest {
            cache: "kmem_alloc",
            size,
            align: 8,
            why: "size is 0",
        });
    }
    alloc_aligned(size, 8).ok_or(KmemError::OutOfMemory {
        cache: "kmem_alloc",
        size,
    })
}

/// [`kmem_alloc`] with the memory zeroed (`kmem_zalloc`). Page-layer
/// blocks come zeroed already and are not written.
///
/// # Errors
///
/// As [`kmem_alloc`].
pub fn kmem_zalloc(size: usize) -> Result<NonNull<u8>, KmemError> {
    if class_for(size, 8).is_none() && size > 0 {
        return large_alloc(size, 8, true).ok_or(KmemError::OutOfMemory {
            cache: "kmem_alloc",
            size,
        });
    }
    let p = kmem_alloc(size)?;
    // SAFETY: `size` bytes of ours.
    unsafe { p.as_ptr().write_bytes(0, size) };
    Ok(p)
}

/// Frees `size` bytes at `ptr` from [`kmem_alloc`] or [`kmem_zalloc`]
/// (`kmem_free`). `size` must be the size allocated; a size from another
/// class is detected from the page map.
///
/// # Errors
///
/// [`KmemError::WrongSize`] if `size` belongs to another class than the
/// buffer, [`KmemError::BadFree`] if `ptr` is not from `kmem_alloc`;
/// nothing is freed then.
///
/// # Safety
///
/// `ptr` must not be used after the call.
pub unsafe fn kmem_free(ptr: NonNull<u8>, size: usize) -> Result<(), KmemError> {
    // Whatever reaches a magazine or a slab is handed on whole.
    let ptr = crate::provenance::rederive(ptr);
    let addr = ptr.as_ptr() as usize;
    let bad = |why: &str| KmemError::BadFree {
        cache: "kmem_alloc",
        addr,
        why: why.to_string(),
    };
    let Some(owner) = owner_class(ptr) else {
        return Err(bad("not an address kmem_alloc handed out"));
    };
    match (class_for(size, 8), owner) {
        (Some(c), Some(o)) if c == o => {
            class_free(c, ptr, size);
            Ok(())
        }
        (None, None) if size > 0 => {
            // SAFETY: the caller gives up `ptr`; a wrong size is refused.
            unsafe { large_free(ptr, size, 8) }
        }
        (_, Some(o)) => Err(KmemError::WrongSize {
            actual: crate::debug::wrong_class(o, ptr, size).unwrap_or(CLASS_SIZES[o]),
            addr,
            given: size,
        }),
        (_, None) => Err(bad("size does not match the page-layer block")),
    }
}

/// Releases depot magazines beyond the working set and empty slabs of every
/// class; with `purge`, empties the depots and this thread's magazines too.
pub(crate) fn reap_classes(purge: bool) -> usize {
    crate::large::flush();
    let Some(depots) = DEPOTS.get() else { return 0 };
    if purge {
        with_thread(|t| t.flush(depots));
    }
    depots
        .iter()
        .map(|d| {
            if purge {
                d.purge();
            } else {
                d.update();
                d.reap();
            }
            d.backend().keg.reap()
        })
        .sum()
}

/// Ends every class depot's working-set interval now (`kmem_update` on the
/// reaper's timer).
pub(crate) fn update_classes() {
    if let Some(depots) = DEPOTS.get() {
        depots.iter().for_each(ClassDepot::update_now);
    }
}

/// A statistics row per class that has been used.
pub(crate) fn class_stats() -> Vec<CacheStats> {
    let Some(depots) = DEPOTS.get() else {
        return Vec::new();
    };
    depots
        .iter()
        .enumerate()
        .filter_map(|(c, d)| {
            let k = d.backend().keg.stats();
            let mut m = d.stats();
            // Other threads' counts arrive when they visit the depot; the
            // calling thread's are added here.
            let (counts, cached) = with_thread(|t| {
                let remote = t.remote.get(c);
                let mut counts = t.pairs[c].counts();
                remote.inspect(|r| counts.add(&r.counts()));
                (
                    counts,
                    t.pairs[c].cached() + remote.map_or(0, |r| r.cached()),
                )
            });
            m.counts.add(&counts);
            m.cached += cached;
            // A class debugged by KMEM_DEBUG runs without magazines: its
            // allocations are the keg's.
            let debugged = crate::debug::debugged_class(c).is_some();
            (k.slab_creates > 0).then(|| {
                let mut s =
                    CacheStats::from_parts(k.name, &k, (!debugged).then_some(&m), k.alloc_fails);
                if debugged {
                    s.allocs = k.allocs;
                }
                s
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_classes_cache_about_64_kib_a_magazine() {
        for &size in &CLASS_SIZES {
            let rounds = start_rounds(size);
            assert!(rounds >= 1, "class {size} gets no rounds");
            if size > 4096 {
                assert!(
                    rounds == 1 || rounds * size <= 64 << 10,
                    "class {size} starts at {rounds} rounds"
                );
            }
        }
        assert_eq!(start_rounds(128 << 10), 1);
        assert_eq!(start_rounds(8 << 10), 8);
    }
}
