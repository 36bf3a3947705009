//! Quantum caches (the seed's `qc_init`, `qc_import`, `qc_release`,
//! `qc_drain`): for each size from one quantum up to `qcache_max`, a
//! magazine layer from `kmem-magazine` whose items are segment addresses and
//! whose backend allocates and frees whole batches in the arena under one
//! lock each.
//!
//! Cached segments stay busy in the arena; a cache hit touches only the
//! per-CPU magazine, never the arena lock. The caches use the magazine
//! layer's per-CPU front end, the seed's shape, so that arena pressure can
//! drain every cached segment ([`QCaches::drain`] purges every CPU slot and
//! the depot) before an allocation fails.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::AtomicUsize;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use kmem_magazine::{Backend, Config, Magazines, Mode, Name};

use crate::error::VmemError;
use kmem_sys::sync::MutexGuard;

use crate::fit::{Policy, Request};
use crate::inner::Core;
use crate::source::Source;
use crate::wait::Wait;

/// The backend of one quantum cache: segments of `size` bytes from the
/// arena core at a fixed address.
pub(crate) struct QcBackend<A: Allocator + Clone + Send + Sync, S: Source> {
    core: NonNull<Core<A, S>>,
    size: usize,
}

// SAFETY: the backend only ever takes shared references to the core, which
// is `Sync` under these bounds and outlives every quantum cache (the `Vmem`
// drops its caches before its core).
unsafe impl<A: Allocator + Clone + Send + Sync, S: Source> Send for QcBackend<A, S> {}
// SAFETY: as for `Send`.
unsafe impl<A: Allocator + Clone + Send + Sync, S: Source> Sync for QcBackend<A, S> {}

impl<A: Allocator + Clone + Send + Sync, S: Source> Backend for QcBackend<A, S> {
    type Item = usize;

    fn import(&self, out: &mut [MaybeUninit<usize>]) -> usize {
        // SAFETY: the core outlives the caches (see the `Send` impl).
        unsafe { self.core.as_ref() }.alloc_batch(self.size, out)
    }

    fn release(&self, items: &[usize]) {
        // SAFETY: as in `import`.
        unsafe { self.core.as_ref() }.free_batch(self.size, items)
    }
}

/// `-<size>` in decimal, made without allocating (an arena may sit under
/// a `GlobalAlloc`).
fn size_suffix(size: usize) -> kmem_sys::Name<21> {
    let mut text = [0u8; 21];
    let (mut at, mut n) = (text.len(), size);
    loop {
        at -= 1;
        text[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 1;
    text[at] = b'-';
    kmem_sys::Name::new(core::str::from_utf8(&text[at..]).unwrap_or("-?"))
}

/// Totals over the quantum caches for [`VmemStats`](crate::VmemStats).
#[derive(Default)]
pub(crate) struct QcStats {
    pub allocs: u64,
    pub frees: u64,
    pub cached_bytes: usize,
    pub metadata_bytes: usize,
}

/// The quantum caches of one arena, indexed by size in quanta minus one.
pub(crate) struct QCaches<A: Allocator + Clone + Send + Sync, S: Source> {
    caches: Vec<Magazines<QcBackend<A, S>, A>, A>,
    /// The arena's count of waiting allocations
    /// ([`Core::waiters`](crate::inner::Core::waiters)), kept beside the
    /// table that every cached free reads, so that its check costs no
    /// other cache line.
    pub waiters: AtomicUsize,
}

impl<A: Allocator + Clone + Send + Sync, S: Source> QCaches<A, S> {
    pub fn new(alloc: A) -> Self {
        QCaches {
            caches: Vec::new_in(alloc),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Creates `quanta` caches over the core at `core`.
    ///
    /// # Safety
    ///
    /// `core` must point at a live `Core` that outlives these caches.
    pub unsafe fn fill(
        &mut self,
        core: NonNull<Core<A, S>>,
        name: &str,
        qshift: u32,
        quanta: usize,
        mode: Mode,
    ) -> Result<(), VmemError> {
        let alloc = self.caches.allocator().clone();
        let no_meta = || VmemError::NoMetadata {
            arena: crate::ArenaName::new(name),
        };
        self.caches
            .try_reserve_exact(quanta)
            .map_err(|_| no_meta())?;
        for i in 1..=quanta {
            let size = i << qshift;
            // "<arena>-<size>", as the seed names its caches, the arena's
            // name cut if need be to keep the size.
            let cache_name = Name::with_suffix(name, size_suffix(size).as_str());
            let config = Config::new(cache_name.as_str(), size).mode(mode);
            let backend = QcBackend { core, size };
            let cache = Magazines::new_in(backend, config, alloc.clone()).map_err(|_| no_meta())?;
            self.caches.push(cache);
        }
        Ok(())
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    /// [`Mode::PerThread`] if every cache runs per-thread magazines.
    pub fn mode(&self) -> Option<Mode> {
        if self.caches.is_empty() {
            return None;
        }
        let all = self.caches.iter().all(|c| c.mode() == Mode::PerThread);
        Some(if all { Mode::PerThread } else { Mode::PerCpu })
    }

    /// Whether any cache runs per-thread magazines, whose threads' exit
    /// hooks reach the caches from outside the arena's methods.
    pub fn any_per_thread(&self) -> bool {
        self.caches.iter().any(|c| c.mode() == Mode::PerThread)
    }

    /// The largest size cached, in bytes.
    pub fn max(&self) -> usize {
        self.caches.last().map_or(0, |c| c.backend().size)
    }

    /// The cache for segments of `quanta` quanta, if there is one.
    #[inline]
    pub fn get(&self, quanta: usize) -> Option<&Magazines<QcBackend<A, S>, A>> {
        self.caches.get(quanta.wrapping_sub(1))
    }

    /// Returns every cached segment to the arena (`qc_drain`).
    #[cold]
    pub fn drain(&self) {
        for c in self.caches.iter() {
            c.purge();
        }
    }

    /// Takes the caches out, leaving none; dropping the result returns
    /// what they hold to the arena.
    pub fn take(&mut self) -> Self {
        let alloc = self.caches.allocator().clone();
        core::mem::replace(self, QCaches::new(alloc))
    }

    pub fn stats(&self) -> QcStats {
        let mut s = QcStats::default();
        for c in self.caches.iter() {
            let m = c.stats();
            s.allocs += m.counts.alloc_hits;
            s.frees += m.counts.free_hits;
            s.cached_bytes += m.cached * c.backend().size;
            s.metadata_bytes +=
                (m.full_magazines + m.empty_magazines) * (m.magazine_size + 1) * size_of::<usize>();
        }
        s
    }
}

/// The arena side of the quantum caches: batch import and release, and the
/// debug check of a cached free.
impl<A: Allocator + Clone + Send + Sync, S: Source> Core<A, S> {
    /// Fills `out` with segments of `size` bytes (rounded) for a quantum
    /// cache (the seed's `qc_import`), under one lock; if none is free,
    /// imports from the source once. Returns how many it filled.
    pub(crate) fn alloc_batch(&self, size: usize, out: &mut [MaybeUninit<usize>]) -> usize {
        let req = Request::plain(size, self.quantum());
        let mut n = 0;
        {
            let mut g = self.arena.lock();
            while n < out.len() && g.reserve().is_ok() {
                let Some(x) = g.alloc(&req, Policy::InstantFit) else {
                    break;
                };
                g.counters.instant_fit += 1;
                out[n].write(x);
                n += 1;
            }
        }
        if n == 0
            && !out.is_empty()
            && let Ok(x) = self.place_slow_from(&req, Policy::InstantFit, Wait::No, false)
        {
            out[0].write(x);
            n = 1;
        }
        n
    }

    /// Frees segments of `size` bytes that a quantum cache gives back (the
    /// seed's `qc_release`), under one lock but for span releases.
    ///
    /// # Panics
    ///
    /// If one is not allocated: a quantum cache only holds busy segments,
    /// so this means a segment was freed twice through the cache.
    pub(crate) fn free_batch(&self, size: usize, items: &[usize]) {
        let mut g = self.arena.lock();
        for &x in items {
            let freed = g.free(x, size);
            g.count_free(&freed);
            match freed {
                Ok(None) => {}
                Ok(Some((base, span))) => {
                    MutexGuard::unlocked(&mut g, || self.source.release(base, span));
                }
                Err(e) => panic!("{e} (freed twice through a quantum cache)"),
            }
        }
        self.wake_unlocking(g);
    }

    /// Whether `[addr, addr + size)` is exactly a busy segment; the debug
    /// check of a free that goes to a quantum cache.
    #[cfg(debug_assertions)]
    pub(crate) fn check_busy(&self, addr: usize, size: usize) -> Result<(), VmemError> {
        let mut g = self.arena.lock();
        let found = g.find_busy(addr, size).map(drop);
        if found.is_err() {
            g.counters.bad_frees += 1;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_named_after_the_arena_and_their_size() {
        assert_eq!(size_suffix(0).as_str(), "-0");
        assert_eq!(size_suffix(4096).as_str(), "-4096");
        assert_eq!(size_suffix(usize::MAX).as_str(), "-18446744073709551615");
        // The longest arena name fits beside any realistic size; beside the
        // largest size it is cut, and the size kept.
        let long = "an arena name of thirty-one chr";
        let name = Name::with_suffix(long, size_suffix(65536).as_str());
        assert_eq!(name.as_str(), "an arena name of thirty-one chr-65536");
        let name = Name::with_suffix(long, size_suffix(usize::MAX).as_str());
        assert_eq!(name.as_str(), "an arena name of t-18446744073709551615");
    }
}
