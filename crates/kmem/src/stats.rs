//! Statistics: one row per cache, in the spirit of illumos `::kmastat` and
//! FreeBSD's UMA zone statistics (`vmstat -z`).
//!
//! [`caches()`] snapshots every live [`Cache`](crate::Cache) and every size
//! class of the process-wide `kmem_alloc` / [`Kmem`](crate::Kmem) allocator;
//! [`Table`] prints rows as aligned text.

use core::fmt;

/// A row for every size class of `kmem_alloc`/[`Kmem`](crate::Kmem) in
/// use, then one for every live [`Cache`](crate::Cache).
///
/// ```
/// let cache = kmem::Cache::builder("stats-demo", 48, 8).build()?;
/// let p = cache.alloc()?;
/// let rows = kmem::stats::caches();
/// let row = rows.iter().find(|r| r.name == "stats-demo").unwrap();
/// assert_eq!(row.buf_in_use, 1);
/// // SAFETY: p came from this cache.
/// unsafe { cache.free(p)? };
/// # Ok::<(), kmem::KmemError>(())
/// ```
pub fn caches() -> Vec<CacheStats> {
    let mut rows = crate::alloc::class_stats();
    rows.extend(crate::cache::live_caches().iter().map(crate::Cache::stats));
    rows
}

/// Reaps every size class and every live cache once (`kmem_reap`); returns
/// the slabs given back to the page layer.
pub fn reap_all() -> usize {
    crate::alloc::reap_classes(false)
        + crate::cache::live_caches()
            .iter()
            .map(crate::Cache::reap)
            .sum::<usize>()
}

/// One cache's figures at the moment of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Cache name.
    pub name: String,
    /// Buffer size in bytes (the object size rounded up to the alignment).
    pub buf_size: usize,
    /// Buffers handed out to callers and not yet freed.
    pub buf_in_use: u64,
    /// Buffers the cache's slabs hold, in use, cached or free.
    pub buf_total: u64,
    /// Bytes of pages the cache's slabs occupy.
    pub mem_in_use: u64,
    /// Successful allocations.
    pub allocs: u64,
    /// Allocations that failed (out of memory, limit, constructor).
    pub alloc_fail: u64,
    /// Frees.
    pub frees: u64,
    /// Allocations served from a per-CPU/per-thread magazine.
    pub magazine_hits: u64,
    /// Buffers cached in magazines (per-CPU and depot).
    pub cached: u64,
    /// Current magazine size (rounds); 0 without magazines.
    pub magazine_size: usize,
    /// Times the depot lock was contended.
    pub depot_contention: u64,
    /// Slabs created and destroyed so far.
    pub slabs_created: u64,
    /// Slabs given back to the page layer.
    pub slabs_destroyed: u64,
    /// Item limit (`uma_zone_set_max`); 0 = none.
    pub limit: u64,
    /// The slab consolidator's counters (all 0 without a move callback,
    /// [`Cache::set_move`](crate::Cache::set_move)).
    pub moves: kmem_move::MoveStats,
}

impl CacheStats {
    /// A row from a keg's figures and, for a cache with magazines, the
    /// magazines' (whose cached rounds count as not in use). Without
    /// magazines `allocs` is left 0 for the caller to fill.
    pub(crate) fn from_parts(
        name: &str,
        k: &kmem_slab::KegStats,
        mags: Option<&kmem_magazine::Stats>,
        alloc_fail: u64,
    ) -> Self {
        let mut s = CacheStats {
            name: name.to_string(),
            buf_size: k.buf_size,
            buf_in_use: k.bufs_in_use as u64,
            buf_total: (k.bufs_in_use + k.bufs_free) as u64,
            mem_in_use: k.page_bytes() as u64,
            alloc_fail,
            frees: k.frees,
            slabs_created: k.slab_creates,
            slabs_destroyed: k.slab_destroys,
            limit: k.limit.unwrap_or(0) as u64,
            ..CacheStats::default()
        };
        if let Some(m) = mags {
            // A miss that ended in a failure is no allocation.
            s.allocs = (m.counts.alloc_hits + m.counts.alloc_misses).saturating_sub(alloc_fail);
            s.frees = m.counts.free_hits + m.counts.free_misses;
            s.magazine_hits = m.counts.alloc_hits;
            s.cached = m.cached as u64;
            s.magazine_size = m.magazine_size;
            s.depot_contention = m.depot_contention;
            s.buf_in_use = s.buf_in_use.saturating_sub(s.cached);
        }
        s
    }

    /// Percentage of slab memory not holding in-use buffers.
    pub fn waste_percent(&self) -> f64 {
        if self.mem_in_use == 0 {
            return 0.0;
        }
        let used = self.buf_in_use.saturating_mul(self.buf_size as u64);
        100.0 * (self.mem_in_use.saturating_sub(used)) as f64 / self.mem_in_use as f64
    }
}

/// Rows printable as an aligned text table (`Display`).
///
/// ```
/// let rows = vec![kmem::stats::CacheStats { name: "demo".into(), buf_size: 64, ..Default::default() }];
/// let text = kmem::stats::Table(&rows).to_string();
/// assert!(text.lines().next().unwrap().starts_with("cache"));
/// assert!(text.contains("demo"));
/// ```
pub struct Table<'a>(pub &'a [CacheStats]);

const COLUMNS: [&str; 12] = [
    "cache",
    "buf size",
    "in use",
    "total",
    "memory",
    "allocs",
    "fail",
    "mag hits",
    "cached",
    "mag size",
    "contention",
    "moved",
];

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cells: Vec<[String; 12]> = self
            .0
            .iter()
            .map(|s| {
                [
                    s.name.clone(),
                    s.buf_size.to_string(),
                    s.buf_in_use.to_string(),
                    s.buf_total.to_string(),
                    human(s.mem_in_use),
                    s.allocs.to_string(),
                    s.alloc_fail.to_string(),
                    s.magazine_hits.to_string(),
                    s.cached.to_string(),
                    s.magazine_size.to_string(),
                    s.depot_contention.to_string(),
                    s.moves.yes.to_string(),
                ]
            })
            .collect();
        let mut width = COLUMNS.map(str::len);
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, row: &[&str]| -> fmt::Result {
            for (i, c) in row.iter().enumerate() {
                if i == 0 {
                    write!(f, "{c:<w$}", w = width[0])?;
                } else {
                    write!(f, " {c:>w$}", w = width[i])?;
                }
            }
            writeln!(f)
        };
        line(f, &COLUMNS)?;
        for row in &cells {
            line(f, &row.each_ref().map(String::as_str))?;
        }
        Ok(())
    }
}

/// Bytes as a short human figure (`12K`, `3.5M`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512");
        assert_eq!(human(2048), "2.0K");
        assert_eq!(human(5 * 1024 * 1024 + 512 * 1024), "5.5M");
        assert_eq!(human(300 << 30), "300G");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            CacheStats {
                name: "a".into(),
                buf_size: 8,
                allocs: 123_456,
                ..Default::default()
            },
            CacheStats {
                name: "kmem_alloc_1024".into(),
                buf_size: 1024,
                ..Default::default()
            },
        ];
        let text = Table(&rows).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
        assert!(lines[2].starts_with("kmem_alloc_1024 "));
    }

    #[test]
    fn waste_counts_unused_slab_bytes() {
        let s = CacheStats {
            buf_size: 100,
            buf_in_use: 30,
            mem_in_use: 4000,
            ..Default::default()
        };
        assert!((s.waste_percent() - 25.0).abs() < 1e-9);
    }
}
