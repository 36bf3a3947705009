//! [`KegStats`]: a snapshot of a keg's geometry and counters, the figures
//! UMA's `sysctl_vm_zone_stats` and illumos' `kmem_cache_kstat_update`
//! report for the slab layer.

use core::fmt;

use crate::layout::Placement;

/// A keg's statistics, read under its lock in one go; see
/// [`Keg::stats`](crate::Keg::stats).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KegStats {
    /// The keg's name.
    pub name: &'static str,
    /// Bytes of each buffer as asked (UMA `uk_size`).
    pub buf_size: usize,
    /// Distance between buffers (UMA `uk_rsize`, illumos `cache_chunksize`).
    pub chunk_size: usize,
    /// Bytes per slab (UMA `uk_ppera` pages, illumos `cache_slabsize`).
    pub slab_size: usize,
    /// Buffers per slab (UMA `uk_ipers`).
    pub bufs_per_slab: usize,
    /// Where slab headers live.
    pub placement: Placement,
    /// Slabs in existence.
    pub slabs: usize,
    /// Slabs with some but not all buffers allocated.
    pub partial_slabs: usize,
    /// Slabs with every buffer allocated.
    pub full_slabs: usize,
    /// Slabs with no buffer allocated (reapable unless pinned).
    pub empty_slabs: usize,
    /// Buffers handed out and not freed.
    pub bufs_in_use: usize,
    /// Free buffers in existing slabs (UMA `uk_free`).
    pub bufs_free: usize,
    /// The limit in buffers, rounded to whole slabs, if any.
    pub limit: Option<usize>,
    /// Successful allocations.
    pub allocs: u64,
    /// Successful frees.
    pub frees: u64,
    /// Allocations refused (limit, pages, metadata, init).
    pub alloc_fails: u64,
    /// Times an allocation slept at the limit (UMA `uz_sleeps`).
    pub sleeps: u64,
    /// Slabs created (illumos `cache_slab_create`).
    pub slab_creates: u64,
    /// Slabs destroyed (illumos `cache_slab_destroy`).
    pub slab_destroys: u64,
    /// Buckets in the slab hash.
    pub hash_size: usize,
    /// Lookups made in the slab hash.
    pub hash_lookups: u64,
    /// Bytes of the existing slabs that could never hold a buffer's
    /// requested bytes: headers, colour slack and per-buffer padding
    /// (`slabs × (slab_size − bufs_per_slab × buf_size)`).
    pub waste_bytes: usize,
}

impl KegStats {
    /// Bytes of pages the keg holds.
    pub fn page_bytes(&self) -> usize {
        self.slabs * self.slab_size
    }
}

impl fmt::Display for KegStats {
    /// One line in the style of `vmstat -z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: size {} chunk {} slab {}x{} {:?}; slabs {} (partial {} full {} empty {}); \
             bufs used {} free {}; allocs {} frees {} fails {} sleeps {}; \
             creates {} destroys {}; hash {} lookups {}; waste {}",
            self.name,
            self.buf_size,
            self.chunk_size,
            self.slab_size,
            self.bufs_per_slab,
            self.placement,
            self.slabs,
            self.partial_slabs,
            self.full_slabs,
            self.empty_slabs,
            self.bufs_in_use,
            self.bufs_free,
            self.allocs,
            self.frees,
            self.alloc_fails,
            self.sleeps,
            self.slab_creates,
            self.slab_destroys,
            self.hash_size,
            self.hash_lookups,
            self.waste_bytes,
        )
    }
}
