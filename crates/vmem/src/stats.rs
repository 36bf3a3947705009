//! Arena statistics: the seed's `vmem_size` figures and its DDB `show vmem`
//! summary, plus per-operation counters.

use allocator_api2::alloc::Allocator;

use crate::arena::Arena;
use crate::fit::{Policy, Request};
use crate::tag::NIL;

/// Event counters kept under the arena lock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub instant_fit: u64,
    pub best_fit: u64,
    pub next_fit: u64,
    pub instant_fallbacks: u64,
    pub constrained: u64,
    pub frees: u64,
    pub bad_frees: u64,
    pub failures: u64,
    pub imports: u64,
    pub import_failures: u64,
    pub releases: u64,
    pub waits: u64,
    pub timeouts: u64,
    pub reclaims: u64,
}

/// A snapshot of an arena, from [`Vmem::stats`](crate::Vmem::stats).
///
/// Sizes are in bytes (units of the arena's resource); counters count
/// operations since the arena was built. Allocations served by a quantum
/// cache are counted in `qcache_*`, not in the per-policy counters, and
/// the segments the caches hold count as allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmemStats {
    /// The arena's quantum.
    pub quantum: usize,
    /// Bytes in busy segments (`vmem_size(VMEM_ALLOC)`).
    pub allocated: usize,
    /// Bytes in free segments (`vmem_size(VMEM_FREE)`).
    pub free: usize,
    /// Bytes in all spans (`vmem_size(VMEM_ALLOC | VMEM_FREE)`).
    pub total: usize,
    /// Size of the largest free segment, exact (the seed's `VMEM_MAXFREE`
    /// gives its free-list class instead).
    pub largest_free: usize,
    /// Bytes in spans imported from the source and not yet released.
    pub imported: usize,
    /// The import limit (0 = none).
    pub limit: usize,
    /// Spans, busy segments and free segments now in the arena.
    pub spans: usize,
    /// Busy segments.
    pub busy_segments: usize,
    /// Free segments.
    pub free_segments: usize,
    /// Allocations placed by instant fit, best fit and next fit.
    pub instant_fit: u64,
    /// See `instant_fit`.
    pub best_fit: u64,
    /// See `instant_fit`.
    pub next_fit: u64,
    /// Instant-fit searches that fell back to a best-fit scan.
    pub instant_fallbacks: u64,
    /// Allocations through `xalloc` with constraints beyond the default.
    pub constrained: u64,
    /// Segments freed to the arena.
    pub frees: u64,
    /// Frees refused as not matching an allocated segment.
    pub bad_frees: u64,
    /// Allocations that returned an error.
    pub failures: u64,
    /// Spans imported from the source, and imports that failed.
    pub imports: u64,
    /// See `imports`.
    pub import_failures: u64,
    /// Spans released to the source.
    pub releases: u64,
    /// Times a blocking allocation went to sleep, and how many timed out.
    pub waits: u64,
    /// See `waits`.
    pub timeouts: u64,
    /// Times arena pressure drained the quantum caches or called reclaim.
    pub reclaims: u64,
    /// Largest size served by the quantum caches (0 = none).
    pub qcache_max: usize,
    /// Allocations and frees that hit a loaded magazine of a quantum cache.
    pub qcache_allocs: u64,
    /// See `qcache_allocs`.
    pub qcache_frees: u64,
    /// Bytes the quantum caches hold for reuse (allocated in the arena).
    pub qcache_cached: usize,
    /// Boundary tags allocated (used or spare) and hash buckets.
    pub tags: usize,
    /// Boundary tags allocated but not in use, ready for the next
    /// operations (the seed's `vm_nfreetags`, the "free tags" of its DDB
    /// `show vmem`). Every operation first tops them up to four (the
    /// seed's `bt_fill` to `BT_MAXALLOC`), so that it cannot run out of
    /// tags halfway.
    pub unused_tags: usize,
    /// See `tags`.
    pub hash_buckets: usize,
    /// Bytes of arena metadata: the arena's own structure (free-list
    /// heads and their bitmap, counters, lock), its tags, hash table and
    /// quantum-cache magazines.
    pub metadata_bytes: usize,
}

/// Counting and summing, under the arena lock.
impl<A: Allocator + Clone> Arena<A> {
    /// Counts a successful allocation.
    #[inline]
    pub fn count_alloc(&mut self, req: &Request, policy: Policy) {
        let c = &mut self.counters;
        match policy {
            Policy::InstantFit => c.instant_fit += 1,
            Policy::BestFit => c.best_fit += 1,
            Policy::NextFit => c.next_fit += 1,
        }
        c.constrained += u64::from(!req.plain);
    }

    /// The size of the largest free segment.
    pub fn largest_free(&self) -> usize {
        let Some(mut list) = self.free.first_nonempty(0) else {
            return 0;
        };
        while let Some(higher) = self.free.first_nonempty(list + 1) {
            list = higher;
        }
        let mut t = self.free.head(list);
        let mut best = 0;
        while t != NIL {
            best = best.max(self.tags.get(t).size);
            t = self.tags.get(t).lnext;
        }
        best
    }

    /// Bytes of metadata: tags and the hash table.
    pub fn metadata_bytes(&self) -> usize {
        self.tags.bytes() + self.hash.bytes()
    }
}
