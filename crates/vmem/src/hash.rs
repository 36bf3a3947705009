//! The hash of busy segments, keyed by start address (the seed's
//! `vm_hashlist`, `bt_lookupbusy`, `bt_insbusy`, `bt_rembusy`).
//!
//! Buckets are `u32` tag indices; chains run through the tags' `lnext`, so a
//! busy segment costs no memory beyond its tag and its share of a bucket.
//! The table keeps between two and eight buckets per busy segment: the
//! seed's `vmem_periodic` rule (resize by powers of two as the count grows
//! and falls), applied at insert and remove instead of from a ten-second
//! callout, at half the seed's load so that a lookup walks about 1.25 tags
//! instead of 1.5 (each a likely cache miss at large counts, for 4 bytes more
//! per busy segment on average), and without the seed's cap of 131072
//! buckets so lookups stay O(1) at millions of live segments. A resize that
//! cannot get memory keeps the old table, which stays correct.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

use crate::tag::{Kind, NIL, TagPool, advise_huge};

/// Smallest table (`VMEM_HASHSIZE_MIN`).
const MIN_BUCKETS: usize = 16;

/// Where [`BusyHash::find`] found a tag: its bucket and its predecessor
/// in the chain ([`NIL`] at the head).
#[derive(Clone, Copy)]
pub(crate) struct Link {
    bucket: usize,
    prev: u32,
}

/// What [`BusyHash::for_each`] found wrong with the chains.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChainFault {
    /// The entry starting at this address is in the wrong bucket.
    Misfiled(usize),
    /// A link names no tag of the pool.
    NoTag,
    /// The chains hold more entries than the pool has tags: one loops
    /// (through the entry starting at this address).
    Loop(usize),
}

pub(crate) struct BusyHash<A: Allocator + Clone> {
    buckets: Vec<u32, A>,
    /// `64 - log2(buckets.len())`: Fibonacci hashing keeps the top bits.
    shift: u32,
    /// Quantum shift: low address bits are always zero, drop them first.
    qshift: u32,
    count: usize,
    /// The count at which the table doubles (half the buckets) and below
    /// which it shrinks (an eighth; 0 at the smallest size): kept beside
    /// the count so insert and remove test one bound, not recompute it.
    grow_at: usize,
    shrink_below: usize,
    /// Set when the table shrank, for the arena to see whether its tag
    /// pool has become worth trimming too; cleared by the arena.
    pub shrunk: bool,
}

impl<A: Allocator + Clone> BusyHash<A> {
    pub fn new(alloc: A, qshift: u32) -> Result<Self, ()> {
        let buckets = Self::table(alloc, MIN_BUCKETS)?;
        let mut hash = BusyHash {
            buckets,
            shift: 0,
            qshift,
            count: 0,
            grow_at: 0,
            shrink_below: 0,
            shrunk: false,
        };
        hash.set_bounds();
        Ok(hash)
    }

    /// Derives the hash shift and the resize bounds from the table size.
    fn set_bounds(&mut self) {
        let n = self.buckets.len();
        self.shift = 64 - n.trailing_zeros();
        self.grow_at = n / 2;
        self.shrink_below = if n > MIN_BUCKETS { n / 8 } else { 0 };
    }

    fn table(alloc: A, n: usize) -> Result<Vec<u32, A>, ()> {
        let mut v = Vec::new_in(alloc);
        v.try_reserve_exact(n).map_err(drop)?;
        advise_huge(&v);
        v.resize(n, NIL);
        Ok(v)
    }

    /// The bucket of `addr`: valid until the next insert or remove, which
    /// may resize the table.
    #[inline]
    pub fn bucket(&self, addr: usize) -> usize {
        let key = (addr as u64) >> self.qshift;
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// The head slot of `bucket`, which must come from
    /// [`bucket`](Self::bucket): the multiply-shift leaves `64 - shift`
    /// bits, which index a table of `1 << (64 - shift)` buckets, so the
    /// bounds check the compiler cannot drop is left out.
    #[inline(always)]
    fn slot(&mut self, bucket: usize) -> &mut u32 {
        debug_assert!(bucket < self.buckets.len());
        // SAFETY: `bucket < buckets.len()`, as said above.
        unsafe { self.buckets.get_unchecked_mut(bucket) }
    }

    /// [`slot`](Self::slot) for reading.
    #[inline(always)]
    fn head(&self, bucket: usize) -> u32 {
        debug_assert!(bucket < self.buckets.len());
        // SAFETY: as for `slot`.
        unsafe { *self.buckets.get_unchecked(bucket) }
    }

    /// Starts loading `bucket` into the cache, so that an
    /// [`insert`](Self::insert) after other work does not wait for it.
    #[inline(always)]
    pub fn prefetch(&self, bucket: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let bucket = self.buckets.as_ptr().wrapping_add(bucket);
            // SAFETY: a prefetch is only a hint and never faults; the
            // pointer is in bounds of the table anyway (see `slot`).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(bucket.cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bucket;
    }

    /// Number of busy segments.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes of metadata the table holds.
    pub fn bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<u32>()
    }

    /// Adds busy tag `t`, whose [`bucket`](Self::bucket) is `b`.
    #[inline]
    pub fn insert(&mut self, tags: &mut TagPool<A>, t: u32, b: usize) {
        debug_assert_eq!(b, self.bucket(tags.get(t).start));
        tags.get_mut(t).lnext = self.head(b);
        *self.slot(b) = t;
        self.count += 1;
        if self.count >= self.grow_at {
            self.resize(tags, self.buckets.len() * 2);
        }
    }

    /// The busy tag starting at `addr`, with where it is chained.
    #[inline]
    pub fn find(&self, tags: &TagPool<A>, addr: usize) -> Option<(Link, u32)> {
        let bucket = self.bucket(addr);
        let mut prev = NIL;
        let mut t = self.head(bucket);
        while t != NIL {
            let tag = tags.get(t);
            if tag.start == addr {
                debug_assert_eq!(tag.kind(), Kind::Busy);
                return Some((Link { bucket, prev }, t));
            }
            prev = t;
            t = tag.lnext;
        }
        None
    }

    /// Unlinks `t`, found by [`find`](Self::find) at `at`.
    #[inline]
    pub fn remove(&mut self, tags: &mut TagPool<A>, at: Link, t: u32) {
        let next = tags.get(t).lnext;
        let Link { bucket, prev } = at;
        if prev == NIL {
            *self.slot(bucket) = next;
        } else {
            tags.get_mut(prev).lnext = next;
        }
        self.count -= 1;
        if self.count < self.shrink_below {
            let want = (4 * self.count + 1).next_power_of_two().max(MIN_BUCKETS);
            self.resize(tags, want);
        }
    }

    #[cold]
    fn resize(&mut self, tags: &mut TagPool<A>, n: usize) {
        let Ok(new) = Self::table(self.buckets.allocator().clone(), n) else {
            return;
        };
        let old = core::mem::replace(&mut self.buckets, new);
        self.shrunk |= n < old.len();
        self.set_bounds();
        for &head in old.iter() {
            let mut t = head;
            while t != NIL {
                let next = tags.get(t).lnext;
                let b = self.bucket(tags.get(t).start);
                tags.get_mut(t).lnext = self.buckets[b];
                self.buckets[b] = t;
                t = next;
            }
        }
    }

    /// Renames every tag the buckets name by `rename` (the tag pool was
    /// renumbered; the chains inside the tags were renamed with it).
    pub fn rename(&mut self, rename: impl Fn(u32) -> u32) {
        for head in self.buckets.iter_mut() {
            *head = rename(*head);
        }
    }

    /// Walks every chain for `check`, calling `f(tag)` for each entry,
    /// and stops at the first fault. The walk takes at most one step per
    /// tag of the pool, so a chain that loops is reported, not followed
    /// for ever.
    pub fn for_each(&self, tags: &TagPool<A>, mut f: impl FnMut(u32)) -> Result<(), ChainFault> {
        let mut steps = 0;
        for (b, &head) in self.buckets.iter().enumerate() {
            let mut t = head;
            while t != NIL {
                let tag = tags.checked(t).ok_or(ChainFault::NoTag)?;
                if self.bucket(tag.start) != b {
                    return Err(ChainFault::Misfiled(tag.start));
                }
                steps += 1;
                if steps > tags.capacity() {
                    return Err(ChainFault::Loop(tag.start));
                }
                f(t);
                t = tag.lnext;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    #[test]
    fn grows_and_shrinks_with_the_count() {
        let mut tags = TagPool::new(Global);
        tags.reserve(1000).unwrap();
        let mut h = BusyHash::new(Global, 4).unwrap();
        let ts: std::vec::Vec<u32> = (0..1000)
            .map(|i| {
                let t = tags.take(Kind::Busy, i * 16, 16);
                h.insert(&mut tags, t, h.bucket(i * 16));
                t
            })
            .collect();
        assert!(
            h.buckets() >= 1000 && h.buckets() <= 4096,
            "{}",
            h.buckets()
        );
        for (i, &t) in ts.iter().enumerate() {
            let (at, found) = h.find(&tags, i * 16).unwrap();
            assert_eq!(found, t);
            h.remove(&mut tags, at, t);
            assert!(h.find(&tags, i * 16).is_none());
        }
        assert_eq!(h.len(), 0);
        assert_eq!(h.buckets(), MIN_BUCKETS);
    }
}
