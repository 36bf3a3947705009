//! Slabs ordered by usage: one doubly-linked list per allocated count.
//!
//! List `k` holds the slabs with exactly `k` buffers allocated: list 0 is the
//! empty slabs (UMA `uk_free_slab`), list `chunks` the full ones (UMA
//! `uk_full_slab`, illumos `cache_complete_slabs`), and the lists between are
//! the partial slabs in exact usage order — a finer form of illumos'
//! `cache_partial_slabs` AVL tree under `kmem_partial_slab_cmp`, which bins
//! coarsely in the middle. A bitmap of non-empty lists finds the most-used
//! non-full slab with a few word scans, and an allocation or a free moves a
//! slab to the next list in O(1).

use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

use crate::slab::Slab;

/// The usage lists of one keg. Guarded by the keg lock.
pub(crate) struct Bins<A: Allocator> {
    heads: Vec<Option<NonNull<Slab>>, A>,
    nonempty: Vec<u64, A>,
}

impl<A: Allocator> Bins<A> {
    /// Lists 0..=chunks, all empty; `None` if `alloc` fails.
    pub fn new(chunks: usize, alloc: A) -> Option<Self>
    where
        A: Clone,
    {
        let n = chunks + 1;
        let mut heads = Vec::new_in(alloc.clone());
        heads.try_reserve_exact(n).ok()?;
        heads.resize(n, None);
        let mut nonempty = Vec::new_in(alloc);
        nonempty.try_reserve_exact(n.div_ceil(64)).ok()?;
        nonempty.resize(n.div_ceil(64), 0);
        Some(Bins { heads, nonempty })
    }

    /// First slab of list `k`.
    #[inline]
    pub fn head(&self, k: usize) -> Option<NonNull<Slab>> {
        self.heads[k]
    }

    /// Pushes `slab` on the front of list `slab.bin`.
    ///
    /// # Safety
    /// `slab` is a live header of this keg on no list.
    #[inline]
    pub unsafe fn push(&mut self, mut slab: NonNull<Slab>) {
        // SAFETY: the caller owns the header under the keg lock.
        let s = unsafe { slab.as_mut() };
        let k = s.bin as usize;
        s.prev = None;
        s.next = self.heads[k];
        if let Some(mut n) = s.next {
            // SAFETY: list members are live headers of this keg.
            unsafe { n.as_mut().prev = Some(slab) };
        }
        self.heads[k] = Some(slab);
        self.nonempty[k / 64] |= 1 << (k % 64);
    }

    /// Unlinks `slab` from list `slab.bin`.
    ///
    /// # Safety
    /// `slab` is a live header of this keg on list `slab.bin`.
    #[inline]
    pub unsafe fn remove(&mut self, mut slab: NonNull<Slab>) {
        // SAFETY: the caller owns the header under the keg lock.
        let s = unsafe { slab.as_mut() };
        let k = s.bin as usize;
        match s.prev {
            // SAFETY: list members are live headers of this keg.
            Some(mut p) => unsafe { p.as_mut().next = s.next },
            None => self.heads[k] = s.next,
        }
        if let Some(mut n) = s.next {
            // SAFETY: as above.
            unsafe { n.as_mut().prev = s.prev };
        }
        s.prev = None;
        s.next = None;
        if self.heads[k].is_none() {
            self.nonempty[k / 64] &= !(1 << (k % 64));
        }
    }

    /// Moves `slab`, whose use count just changed, from the list of its
    /// old count (`slab.bin`) to the list of its new one, and returns the
    /// old count and the new.
    ///
    /// # Safety
    /// As for [`remove`](Self::remove), and no reference to the header is
    /// live: `remove` and `push` write to it through `slab`.
    #[inline]
    pub unsafe fn refile(&mut self, mut slab: NonNull<Slab>) -> (u32, u32) {
        // SAFETY: the caller's promise.
        unsafe { self.remove(slab) };
        let counts = {
            // SAFETY: as above; `remove` is done with the header.
            let s = unsafe { slab.as_mut() };
            let was = s.bin;
            s.bin = s.inuse;
            (was, s.inuse)
        };
        // SAFETY: now on no list.
        unsafe { self.push(slab) };
        counts
    }

    /// The highest non-empty list below `limit`: the most-used slab that
    /// still has a free buffer when `limit` is the chunk count.
    #[inline]
    pub fn top_below(&self, limit: usize) -> Option<usize> {
        let mut w = limit / 64;
        let mut mask = (1u64 << (limit % 64)).wrapping_sub(1);
        loop {
            let bits = self.nonempty.get(w).copied().unwrap_or(0) & mask;
            if bits != 0 {
                return Some(w * 64 + 63 - bits.leading_zeros() as usize);
            }
            if w == 0 {
                return None;
            }
            w -= 1;
            mask = u64::MAX;
        }
    }

    /// Iterates list `k` front to back.
    pub fn iter(&self, k: usize) -> impl Iterator<Item = NonNull<Slab>> + '_ {
        // SAFETY: list members are live headers; the caller holds the lock.
        core::iter::successors(self.heads[k], |s| unsafe { s.as_ref().next })
    }

    /// Whether the non-empty bitmap agrees with the lists.
    pub fn bitmap_consistent(&self) -> bool {
        (0..self.heads.len())
            .all(|k| self.heads[k].is_some() == (self.nonempty[k / 64] >> (k % 64) & 1 == 1))
    }
}
