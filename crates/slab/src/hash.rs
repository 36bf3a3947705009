//! The slab hash: slab start address → slab header, chained through the
//! headers themselves (UMA's `uma_hash` with `us_hlink`, illumos'
//! `cache_hash_table` under `KMF_HASH`).
//!
//! Every slab of a keg is in it, whatever its layout. Off-page kegs need it to
//! find a buffer's header on every free (UMA `hash_sfind`); on-page kegs use it
//! for the safe, by-address questions ([`Keg::slab_of`](crate::Keg::slab_of),
//! slab ids from [`Keg::partial_slabs`](crate::Keg::partial_slabs)) where a
//! stale or foreign address must be answered without reading memory behind it.
//!
//! The table starts at [`HASH_SIZE_INIT`] buckets (UMA `UMA_HASH_SIZE_INIT`)
//! and doubles once the slab count reaches the bucket count, as
//! `zone_timeout` does; [`Keg`](crate::Keg) allocates the new table outside
//! its lock and rehashes under it, the staged dance `zone_timeout` describes.

use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

use crate::slab::Slab;

/// Buckets in a new table (UMA `UMA_HASH_SIZE_INIT`).
pub(crate) const HASH_SIZE_INIT: usize = 32;

/// A power-of-two table of bucket chains. Guarded by the keg lock.
pub(crate) struct SlabHash<A: Allocator> {
    buckets: Vec<Option<NonNull<Slab>>, A>,
    /// log2 of the slab alignment: the low bits of every key are zero.
    key_shift: u32,
    count: usize,
    lookups: u64,
}

impl<A: Allocator> SlabHash<A> {
    /// An empty table of `len` buckets (a power of two); `None` if `alloc`
    /// cannot supply it.
    pub fn with_len(len: usize, slab_align: usize, alloc: A) -> Option<Self> {
        debug_assert!(len.is_power_of_two() && slab_align.is_power_of_two());
        let mut buckets = Vec::new_in(alloc);
        buckets.try_reserve_exact(len).ok()?;
        buckets.resize(len, None);
        Some(SlabHash {
            buckets,
            key_shift: slab_align.trailing_zeros(),
            count: 0,
            lookups: 0,
        })
    }

    /// Number of buckets.
    #[inline]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Slabs in the table.
    #[inline]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Lookups so far.
    pub fn lookups(&self) -> u64 {
        self.lookups
    }

    /// The size the table should grow to, if the slab count has caught up
    /// with the bucket count (UMA `zone_timeout`'s test).
    #[inline]
    pub fn wants_len(&self) -> Option<usize> {
        (self.count >= self.buckets.len()).then(|| self.buckets.len() * 2)
    }

    #[inline]
    fn bucket(&self, key: usize) -> usize {
        // Fibonacci hashing of the slab number spreads consecutive slabs.
        let h = ((key >> self.key_shift) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - self.buckets.len().trailing_zeros())) as usize
    }

    /// Inserts `slab` under its start address.
    ///
    /// # Safety
    /// `slab` is a live header of this keg, not yet in the table.
    pub unsafe fn insert(&mut self, mut slab: NonNull<Slab>) {
        // SAFETY: the caller gives us a live header under the keg lock.
        let s = unsafe { slab.as_mut() };
        let b = self.bucket(s.mem.as_ptr() as usize);
        s.hnext = self.buckets[b];
        self.buckets[b] = Some(slab);
        self.count += 1;
    }

    /// The slab starting at `key`, if any.
    #[inline]
    pub fn find(&mut self, key: usize) -> Option<NonNull<Slab>> {
        self.lookups += 1;
        let mut p = self.buckets[self.bucket(key)];
        while let Some(s) = p {
            // SAFETY: chain members are live headers of this keg.
            let s = unsafe { s.as_ref() };
            if s.mem.as_ptr() as usize == key {
                return p;
            }
            p = s.hnext;
        }
        None
    }

    /// Removes `slab`.
    ///
    /// # Safety
    /// `slab` is a live header in this table.
    pub unsafe fn remove(&mut self, slab: NonNull<Slab>) {
        // SAFETY: the caller gives us a live header in the table.
        let key = unsafe { slab.as_ref() }.mem.as_ptr() as usize;
        let b = self.bucket(key);
        let mut link: *mut Option<NonNull<Slab>> = &mut self.buckets[b];
        // SAFETY: `link` always points at a bucket or at a live header's
        // `hnext`, and the slab is on this chain.
        unsafe {
            while let Some(mut s) = *link {
                if s == slab {
                    *link = s.as_ref().hnext;
                    s.as_mut().hnext = None;
                    self.count -= 1;
                    return;
                }
                link = &mut s.as_mut().hnext;
            }
        }
        debug_assert!(false, "slab {key:#x} missing from its hash chain");
    }

    /// Moves every entry into `new` (UMA `hash_expand`) and swaps it in;
    /// returns the old, now empty table so it can be freed outside the lock.
    pub fn rehash_into(&mut self, mut new: SlabHash<A>) -> SlabHash<A> {
        new.lookups = self.lookups;
        for b in 0..self.buckets.len() {
            let mut p = self.buckets[b].take();
            while let Some(s) = p {
                // SAFETY: chain members are live headers; `insert` rewrites
                // the link we just read.
                p = unsafe { s.as_ref() }.hnext;
                // SAFETY: each header moves to exactly one new chain.
                unsafe { new.insert(s) };
            }
        }
        self.count = 0;
        core::mem::swap(self, &mut new);
        new
    }
}
