//! Counters a magazine layer reports, after the seed's `kmem_cache_kstat`
//! (`depot_alloc`, `depot_free`, `depot_contention`, `full_magazines`,
//! `empty_magazines`, `magazine_size`, `buf_constructed`) and UMA's
//! per-CPU `uc_allocs`/`uc_frees`.

/// Hits and misses of one magazine pair (one CPU slot or one thread).
///
/// A *hit* is served by the loaded or previous magazine alone; a *miss* had
/// to visit the depot or the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Allocations served from the pair's magazines.
    pub alloc_hits: u64,
    /// Allocations that went to the depot or the backend.
    pub alloc_misses: u64,
    /// Frees taken by the pair's magazines.
    pub free_hits: u64,
    /// Frees that went to the depot or the backend.
    pub free_misses: u64,
}

impl PairCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &PairCounts) {
        self.alloc_hits += other.alloc_hits;
        self.alloc_misses += other.alloc_misses;
        self.free_hits += other.free_hits;
        self.free_misses += other.free_misses;
    }
}

/// A snapshot of a magazine layer's counters.
///
/// Per-thread pairs hand their hit/miss counts to the depot when they visit
/// it (as UMA folds `uc_allocs` into the zone while it holds the zone lock)
/// and when their thread exits, so a thread's latest hits show up after its
/// next magazine exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rounds per magazine now (`magazine_size`).
    pub magazine_size: usize,
    /// Index of the current row of [`MAGAZINE_TYPES`](crate::MAGAZINE_TYPES).
    pub magazine_type: usize,
    /// Times the magazines grew under contention.
    pub resizes: u64,
    /// Hits and misses summed over every CPU slot and thread.
    pub counts: PairCounts,
    /// Full magazines taken from the depot (`depot_alloc`).
    pub depot_alloc: u64,
    /// Empty magazines taken from the depot (`depot_free`).
    pub depot_free: u64,
    /// Depot lock acquisitions that had to wait (`depot_contention`).
    pub depot_contention: u64,
    /// Non-empty magazines in the depot (`full_magazines`).
    pub full_magazines: usize,
    /// Empty magazines in the depot (`empty_magazines`).
    pub empty_magazines: usize,
    /// Items cached in the depot and in every slot this snapshot could reach
    /// (`buf_constructed`); other threads' pairs are not included.
    pub cached: usize,
    /// Items imported from the backend.
    pub imported: u64,
    /// Calls to [`Backend::import`](crate::Backend::import).
    pub import_calls: u64,
    /// Items released to the backend.
    pub released: u64,
    /// Calls to [`Backend::release`](crate::Backend::release).
    pub release_calls: u64,
    /// Magazines freed by working-set reaping.
    pub reaped: u64,
}
