//! The magazine-type table: which magazine size suits which object size.
//!
//! Follows `kmem_magtype[]` in `illumos-kmem.c.txt` (lines 961–971) and its
//! two uses: `kmem_cache_create` starts a cache at the first type whose
//! `mt_minbuf` is below the cache's chunk size, and
//! `kmem_cache_magazine_resize` moves to the next type only while the chunk
//! size is below the current type's `mt_maxbuf`. Small objects thus start
//! with big magazines; big objects start small and grow only under depot
//! contention, because every round they cache pins a big buffer.

/// One row of the magazine-type table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MagazineType {
    /// Rounds (items) one magazine holds.
    pub rounds: usize,
    /// Alignment of the magazine's storage, in bytes.
    pub align: usize,
    /// A cache starts at this type only if its object size is above this.
    pub min_object: usize,
    /// A cache grows past this type only while its object size is below this
    /// (0: never grows past it).
    pub max_object: usize,
}

const fn mt(rounds: usize, align: usize, min_object: usize, max_object: usize) -> MagazineType {
    MagazineType {
        rounds,
        align,
        min_object,
        max_object,
    }
}

/// The seed's table, smallest magazines first.
pub const MAGAZINE_TYPES: [MagazineType; 9] = [
    mt(1, 8, 3200, 65536),
    mt(3, 16, 256, 32768),
    mt(7, 32, 64, 16384),
    mt(15, 64, 0, 8192),
    mt(31, 64, 0, 4096),
    mt(47, 64, 0, 2048),
    mt(63, 64, 0, 1024),
    mt(95, 64, 0, 512),
    mt(143, 64, 0, 0),
];

/// Largest magazine any cache uses.
pub const MAX_ROUNDS: usize = MAGAZINE_TYPES[MAGAZINE_TYPES.len() - 1].rounds;

impl MagazineType {
    /// Index of the type a cache of `object_size`-byte objects starts at
    /// (`kmem_cache_create`: skip every type whose `mt_minbuf` is at least
    /// the chunk size).
    pub fn initial_index(object_size: usize) -> usize {
        MAGAZINE_TYPES
            .iter()
            .position(|t| object_size > t.min_object)
            .unwrap_or(MAGAZINE_TYPES.len() - 1)
    }

    /// Index of the smallest type holding at least `rounds` rounds, if any.
    pub fn index_for_rounds(rounds: usize) -> Option<usize> {
        MAGAZINE_TYPES.iter().position(|t| t.rounds >= rounds)
    }

    /// Whether a cache of `object_size`-byte objects at type `index` may grow
    /// to the next type (`kmem_cache_update`'s `cache_chunksize < mt_maxbuf`).
    pub fn can_grow(index: usize, object_size: usize) -> bool {
        index + 1 < MAGAZINE_TYPES.len() && object_size < MAGAZINE_TYPES[index].max_object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_follows_object_size() {
        assert_eq!(MAGAZINE_TYPES[MagazineType::initial_index(8)].rounds, 15);
        assert_eq!(MAGAZINE_TYPES[MagazineType::initial_index(64)].rounds, 15);
        assert_eq!(MAGAZINE_TYPES[MagazineType::initial_index(65)].rounds, 7);
        assert_eq!(MAGAZINE_TYPES[MagazineType::initial_index(300)].rounds, 3);
        assert_eq!(MAGAZINE_TYPES[MagazineType::initial_index(4096)].rounds, 1);
    }

    #[test]
    fn growth_stops_at_max_object() {
        // 64-byte objects grow up to the 143-round type ...
        assert!(MagazineType::can_grow(7, 64));
        assert!(!MagazineType::can_grow(8, 64));
        // ... 1 KiB objects stop once the type's max_object is 1024.
        assert!(MagazineType::can_grow(5, 1024));
        assert!(!MagazineType::can_grow(6, 1024));
        assert_eq!(MagazineType::index_for_rounds(16), Some(4));
        assert_eq!(MagazineType::index_for_rounds(MAX_ROUNDS + 1), None);
    }
}
