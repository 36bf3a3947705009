//! Segregated free lists with a bitmap of the non-empty ones.
//!
//! Sizes are counted in quanta. Lists `0..EXACT` hold exactly 1, 2, …, 32
//! quanta (the seed's `VMEM_OPTORDER` exact lists); list `EXACT + k` above
//! holds the sizes whose highest set bit is `5 + k`, i.e. `[33, 63]`,
//! `[64, 127]`, `[128, 255]`, … (the seed's power-of-two lists; it files
//! 33..63 the same way). `nonempty` has bit `i` set iff list `i` is not empty,
//! so "the first non-empty list at or above `i`" is one `trailing_zeros`: that
//! is what makes instant fit constant-time.
//!
//! Lists are doubly linked through `lnext`/`lprev` and pushed at the head
//! (LIFO), as the seed's `LIST_INSERT_HEAD` does.

use allocator_api2::alloc::Allocator;

use crate::tag::{Kind, NIL, TagPool};

/// Exact lists for 1..=32 quanta (`VMEM_OPTVALUE`).
const EXACT: usize = 32;
/// Number of lists: the exact ones plus one per remaining bit of `usize`.
pub(crate) const NLISTS: usize = EXACT + usize::BITS as usize - 5;

/// The list a free segment of `q` quanta is filed on.
#[inline]
pub(crate) fn list_of(q: usize) -> usize {
    debug_assert!(q > 0);
    if q <= EXACT {
        q - 1
    } else {
        EXACT + (usize::BITS - 1 - q.leading_zeros()) as usize - 5
    }
}

/// The smallest size (in quanta) list `i` can hold.
#[inline]
pub(crate) fn list_min(i: usize) -> usize {
    match i {
        _ if i < EXACT => i + 1,
        EXACT => EXACT + 1,
        _ => 1 << (i - EXACT + 5),
    }
}

/// The first list whose every member holds `q` quanta (may be `NLISTS`).
#[inline]
pub(crate) fn instant_list(q: usize) -> usize {
    let i = list_of(q);
    if list_min(i) == q { i } else { i + 1 }
}

/// The heads of all lists and the bitmap of non-empty ones.
pub(crate) struct FreeLists {
    heads: [u32; NLISTS],
    nonempty: u128,
}

impl FreeLists {
    pub fn new() -> Self {
        FreeLists {
            heads: [NIL; NLISTS],
            nonempty: 0,
        }
    }

    /// The first non-empty list at or above `from`.
    #[inline]
    pub fn first_nonempty(&self, from: usize) -> Option<usize> {
        if from >= NLISTS {
            return None;
        }
        let bits = self.nonempty & (!0u128 << from);
        (bits != 0).then(|| bits.trailing_zeros() as usize)
    }

    #[inline]
    pub fn head(&self, list: usize) -> u32 {
        self.heads[list]
    }

    /// Files free tag `t` (size `q` quanta) at the head of its list.
    #[inline]
    pub fn insert<A: Allocator + Clone>(&mut self, tags: &mut TagPool<A>, t: u32, q: usize) {
        let list = list_of(q);
        let old = self.heads[list];
        {
            let tag = tags.get_mut(t);
            debug_assert_eq!(tag.kind(), Kind::Free);
            tag.lnext = old;
            tag.set_lprev(NIL);
        }
        if old != NIL {
            tags.get_mut(old).set_lprev(t);
        }
        self.heads[list] = t;
        self.nonempty |= 1 << list;
    }

    /// Unlinks free tag `t` (size `q` quanta) from its list.
    #[inline]
    pub fn remove<A: Allocator + Clone>(&mut self, tags: &mut TagPool<A>, t: u32, q: usize) {
        let (prev, next) = {
            let tag = tags.get(t);
            debug_assert_eq!(tag.kind(), Kind::Free);
            (tag.lprev(), tag.lnext)
        };
        if next != NIL {
            tags.get_mut(next).set_lprev(prev);
        }
        if prev != NIL {
            tags.get_mut(prev).lnext = next;
        } else {
            let list = list_of(q);
            debug_assert_eq!(self.heads[list], t);
            self.heads[list] = next;
            if next == NIL {
                self.nonempty &= !(1 << list);
            }
        }
    }

    /// Whether the bitmap says list `i` is non-empty (for `check`).
    pub fn marked(&self, i: usize) -> bool {
        self.nonempty & (1 << i) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_cover_every_size_once() {
        for q in 1..5000usize {
            let i = list_of(q);
            assert!(list_min(i) <= q, "q {q} list {i}");
            assert!(i + 1 == NLISTS || q < list_min(i + 1), "q {q} list {i}");
        }
        assert_eq!(list_of(usize::MAX), NLISTS - 1);
        assert_eq!(list_of(32), 31);
        assert_eq!(list_of(33), 32);
        assert_eq!(list_of(63), 32);
        assert_eq!(list_of(64), 33);
    }

    #[test]
    fn instant_list_members_all_fit() {
        for q in 1..5000usize {
            let i = instant_list(q);
            assert!(list_min(i) >= q, "q {q}");
            // …and it is the lowest such list.
            assert!(i == 0 || list_min(i - 1) < q || list_of(q) == i);
        }
        assert_eq!(instant_list(64), 33);
        assert_eq!(instant_list(65), 34);
        assert_eq!(instant_list(usize::MAX), NLISTS);
    }
}
