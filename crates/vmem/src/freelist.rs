//! Segregated free lists, finer than the seed's, with a two-level bitmap of
//! the non-empty ones.
//!
//! Sizes are counted in quanta. The seed files free segments on *classes*:
//! exactly 1, 2, …, 31 quanta (below `VMEM_OPTVALUE`), then `[32, 63]`,
//! `[64, 127]`, `[128, 255]`, … by highest set bit (`SIZE2ORDER`). Here each
//! class is cut further so that best fit needs no long scan:
//!
//! - lists `0..EXACT` hold exactly 1, 2, …, 63 quanta (the seed's exact
//!   lists plus its `[32, 63]` class, one list per size);
//! - from 64 quanta up, each power-of-two class `[2^b, 2^(b+1))` is cut into
//!   [`SUBS`] sub-lists by the next bits of the size (TLSF's second level),
//!   so a sub-list spans an eighth of its class.
//!
//! [`list_of`] reads the list of a size below 256 quanta from a table built
//! at compile time, and works larger ones out from their bits.
//!
//! Lists are in size order, and every seed class is a run of consecutive
//! lists. Instant fit applies the seed's rule ("the first list whose every
//! member fits") to these finer lists: it starts at [`instant_list`] — the
//! exact list below 64 quanta, else the first eighth-class list whose least
//! size is at least the request — and takes the head of the first
//! non-empty list from there. On the seed's coarser classes it would skip
//! to the next power of two and split a larger segment. Best fit
//! starts at the list of the size itself: below 64 quanta its head fits;
//! above, only that one sub-list may hold segments too small, and every
//! later list's head fits.
//!
//! `words` has bit `i` set iff list `i` is not empty and `summary` bit `w`
//! iff `words[w]` is not zero, so "the first non-empty list at or above `i`"
//! is at most two `trailing_zeros`: constant time. Lists are doubly linked
//! through `lnext`/`lprev` and pushed at the head (LIFO), as the seed's
//! `LIST_INSERT_HEAD` does.

use allocator_api2::alloc::Allocator;

use crate::tag::{Kind, NIL, TagPool};

/// One exact list per size of 1..=63 quanta.
const EXACT: usize = 63;
/// Highest bit of the smallest size filed by class: 64 quanta.
const FIRST_BIT: u32 = 6;
/// Bits of the size below its highest bit that pick a sub-list.
const SUB_BITS: u32 = 3;
/// Sub-lists per power-of-two class.
const SUBS: usize = 1 << SUB_BITS;
/// Number of lists: the exact ones plus `SUBS` per remaining bit of `usize`.
pub(crate) const NLISTS: usize = EXACT + (usize::BITS - FIRST_BIT) as usize * SUBS;
/// Bitmap words.
const WORDS: usize = NLISTS.div_ceil(64);

/// Sizes below this many quanta find their list in [`SMALL_LISTS`].
const SMALL: usize = 256;

// Every list index fits the table's entries.
const _: () = assert!(NLISTS <= u16::MAX as usize);

/// `list_of(q)` for every `q < SMALL` (entry 0 unused), worked out at
/// compile time: 512 bytes shared by every arena.
static SMALL_LISTS: [u16; SMALL] = {
    let mut table = [0; SMALL];
    let mut q = 1;
    while q < SMALL {
        table[q] = list_by_bits(q) as u16;
        q += 1;
    }
    table
};

/// The list of `q` quanta from its bits: `q - 1` on the exact lists, else
/// the class of its highest bit and the sub-list of the next ones.
const fn list_by_bits(q: usize) -> usize {
    if q <= EXACT {
        q - 1
    } else {
        let b = usize::BITS - 1 - q.leading_zeros();
        let sub = (q >> (b - SUB_BITS)) & (SUBS - 1);
        EXACT + (b - FIRST_BIT) as usize * SUBS + sub
    }
}

/// The list a free segment of `q` quanta is filed on.
///
/// Below [`SMALL`] quanta it is one load from a table. Working it out from
/// the bits needs a branch between the exact lists and the classes, and a
/// free segment's size is data: on the random workload (segments of 1 to a
/// few hundred quanta) that branch went the other way about one time in
/// three, and the table made a pair 5% faster at 10 live segments. A
/// branch-free select of both answers was slower than the branch: it puts
/// the longer class arithmetic on every call's critical path.
#[inline]
pub(crate) fn list_of(q: usize) -> usize {
    debug_assert!(q > 0);
    if q < SMALL {
        SMALL_LISTS[q] as usize
    } else {
        list_by_bits(q)
    }
}

/// The smallest size (in quanta) list `i` holds, for `i < NLISTS`: the
/// inverse of [`list_of`], which files `q` on the last list whose least
/// size is at most `q`.
pub(crate) fn list_min(i: usize) -> usize {
    debug_assert!(i < NLISTS);
    if i < EXACT {
        i + 1
    } else {
        let j = i - EXACT;
        let b = FIRST_BIT + (j / SUBS) as u32;
        (1 << b) | ((j % SUBS) << (b - SUB_BITS))
    }
}

/// The first list whose every member holds `q` quanta: instant fit takes
/// its head (`bt_freehead_toalloc` with `M_FIRSTFIT`, on this crate's finer
/// lists: the exact list below 64 quanta, else the eighth-class list whose
/// least size is `q` or the next one up); may be `NLISTS`.
#[inline]
pub(crate) fn instant_list(q: usize) -> usize {
    debug_assert!(q > 0);
    if q <= EXACT {
        return q - 1;
    }
    let b = usize::BITS - 1 - q.leading_zeros();
    // `q` is its list's least size exactly when the bits below the ones
    // that pick the sub-list are zero.
    let below = q & ((1 << (b - SUB_BITS)) - 1);
    list_of(q) + usize::from(below != 0)
}

/// The heads of all lists and the bitmap of non-empty ones.
pub(crate) struct FreeLists {
    heads: [u32; NLISTS],
    words: [u64; WORDS],
    summary: u64,
}

impl FreeLists {
    pub fn new() -> Self {
        FreeLists {
            heads: [NIL; NLISTS],
            words: [0; WORDS],
            summary: 0,
        }
    }

    /// The head slot of `list`, which must be below `NLISTS`. Every list
    /// index reaching here comes from `list_of` or `first_nonempty`, both
    /// below `NLISTS` (this file's tests check the bounds); leaving out the
    /// bounds check matters on the allocation path, which moves a segment
    /// between lists nearly every time.
    #[inline(always)]
    fn head_slot(&mut self, list: usize) -> &mut u32 {
        debug_assert!(list < NLISTS, "vmem: free list {list} out of range");
        // SAFETY: `list < NLISTS`, the length of `heads` (see above).
        unsafe { self.heads.get_unchecked_mut(list) }
    }

    /// The bitmap word holding `list`'s bit, under the same rule.
    #[inline(always)]
    fn word_slot(&mut self, list: usize) -> &mut u64 {
        debug_assert!(list < NLISTS, "vmem: free list {list} out of range");
        // SAFETY: `list < NLISTS` makes `list / 64 < WORDS`.
        unsafe { self.words.get_unchecked_mut(list / 64) }
    }

    /// The first non-empty list at or above `from`.
    #[inline]
    pub fn first_nonempty(&self, from: usize) -> Option<usize> {
        if from >= NLISTS {
            return None;
        }
        let w = from / 64;
        let bits = self.words[w] & (!0u64 << (from % 64));
        // Whether `from`'s own word has a list left is as good as random
        // on a mixed workload, so both candidates are worked out and one is
        // picked without a branch: the next non-empty word (clamped to a
        // valid index; its bits are zero if there is none) or this one.
        let higher = self.summary & (!0u64 << (w + 1));
        let hw = (higher.trailing_zeros() as usize).min(WORDS - 1);
        let hbits = if higher != 0 { self.words[hw] } else { 0 };
        let (w, bits) = core::hint::select_unpredictable(bits != 0, (w, bits), (hw, hbits));
        if bits == 0 {
            return None;
        }
        Some(w * 64 + bits.trailing_zeros() as usize)
    }

    /// Renames every list head by `rename` (the tag pool was renumbered;
    /// the links inside the tags were renamed with it).
    pub fn rename(&mut self, rename: impl Fn(u32) -> u32) {
        for head in self.heads.iter_mut() {
            *head = rename(*head);
        }
    }

    #[inline]
    pub fn head(&self, list: usize) -> u32 {
        debug_assert!(list < NLISTS, "vmem: free list {list} out of range");
        // SAFETY: `list < NLISTS`, as for `head_slot`.
        unsafe { *self.heads.get_unchecked(list) }
    }

    /// Files free tag `t` (size `q` quanta) at the head of its list.
    #[inline(always)]
    pub fn insert<A: Allocator + Clone>(&mut self, tags: &mut TagPool<A>, t: u32, q: usize) {
        self.insert_on(tags, t, list_of(q));
    }

    /// Files free tag `t` at the head of `list`, which must be
    /// [`list_of`] its size in quanta (callers that know it skip the sum).
    #[inline(always)]
    pub fn insert_on<A: Allocator + Clone>(&mut self, tags: &mut TagPool<A>, t: u32, list: usize) {
        let old = *self.head_slot(list);
        {
            let tag = tags.get_mut(t);
            debug_assert_eq!(tag.kind(), Kind::Free);
            tag.lnext = old;
            tag.lprev = NIL;
        }
        if old != NIL {
            tags.get_mut(old).lprev = t;
        } else {
            *self.word_slot(list) |= 1 << (list % 64);
            self.summary |= 1 << (list / 64);
        }
        *self.head_slot(list) = t;
    }

    /// Unlinks free tag `t` (size `q` quanta) from its list.
    #[inline(always)]
    pub fn remove<A: Allocator + Clone>(&mut self, tags: &mut TagPool<A>, t: u32, q: usize) {
        self.remove_from(tags, t, list_of(q));
    }

    /// Unlinks free tag `t` from `list`, which must be [`list_of`] its size
    /// in quanta.
    #[inline(always)]
    pub fn remove_from<A: Allocator + Clone>(
        &mut self,
        tags: &mut TagPool<A>,
        t: u32,
        list: usize,
    ) {
        let (prev, next) = {
            let tag = tags.get(t);
            debug_assert_eq!(tag.kind(), Kind::Free);
            (tag.lprev, tag.lnext)
        };
        if next != NIL {
            tags.get_mut(next).lprev = prev;
        }
        if prev != NIL {
            tags.get_mut(prev).lnext = next;
        } else {
            debug_assert_eq!(self.heads[list], t);
            *self.head_slot(list) = next;
            if next == NIL {
                let word = self.word_slot(list);
                *word &= !(1 << (list % 64));
                if *word == 0 {
                    self.summary &= !(1 << (list / 64));
                }
            }
        }
    }

    /// Whether the bitmap says list `i` is non-empty, `Err` if the summary
    /// disagrees with the word that holds bit `i` (for `check`).
    pub fn marked(&self, i: usize) -> Result<bool, ()> {
        let w = i / 64;
        if (self.summary >> w) & 1 != u64::from(self.words[w] != 0) {
            return Err(());
        }
        Ok((self.words[w] >> (i % 64)) & 1 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_cover_every_size_once_in_size_order() {
        let sizes = (1..5000usize).chain([usize::MAX / 3, usize::MAX - 1, usize::MAX]);
        for q in sizes {
            let i = list_of(q);
            assert!(list_min(i) <= q, "q {q} list {i}");
            assert!(i + 1 == NLISTS || q < list_min(i + 1), "q {q} list {i}");
        }
        for i in 1..NLISTS {
            assert!(list_min(i - 1) < list_min(i), "list {i}");
            assert_eq!(list_of(list_min(i)), i);
        }
        assert_eq!(list_of(usize::MAX), NLISTS - 1);
        for q in 1..2 * SMALL {
            assert_eq!(list_of(q), list_by_bits(q), "q {q}: table and bits agree");
        }
        assert_eq!(list_of(32), 31);
        assert_eq!(list_of(33), 32);
        assert_eq!(list_of(63), 62);
        assert_eq!((list_of(64), list_of(71), list_of(72)), (63, 63, 64));
    }

    #[test]
    fn instant_list_is_the_first_whose_members_all_fit() {
        for q in 1..5000usize {
            let i = instant_list(q);
            assert!(list_min(i) >= q, "q {q}: every member holds it");
            assert!(i == 0 || list_min(i - 1) < q, "q {q}: no earlier list does");
        }
        assert_eq!(instant_list(40), 39);
        assert_eq!(instant_list(64), 63);
        assert_eq!((instant_list(65), instant_list(72)), (64, 64));
        assert_eq!(instant_list(usize::MAX), NLISTS);
    }

    #[test]
    fn bitmap_finds_the_first_nonempty_list_across_words() {
        let mut tags = TagPool::new(allocator_api2::alloc::Global);
        tags.reserve(3).unwrap();
        let mut f = FreeLists::new();
        assert_eq!(f.first_nonempty(0), None);
        let far = list_min(NLISTS - 1);
        let t = tags.take(Kind::Free, 0, 1);
        f.insert(&mut tags, t, far);
        let u = tags.take(Kind::Free, 0, 1);
        f.insert(&mut tags, u, 100);
        assert_eq!(f.first_nonempty(0), Some(list_of(100)));
        assert_eq!(f.first_nonempty(list_of(100) + 1), Some(NLISTS - 1));
        assert_eq!(f.marked(NLISTS - 1), Ok(true));
        // From inside the last word, whose own bits answer.
        assert_eq!(f.first_nonempty(NLISTS - 1), Some(NLISTS - 1));
        f.remove(&mut tags, t, far);
        assert_eq!(f.first_nonempty(list_of(100) + 1), None);
        assert_eq!(f.first_nonempty(NLISTS - 1), None);
        assert_eq!(f.marked(NLISTS - 1), Ok(false));
        f.remove(&mut tags, u, 100);
        assert_eq!(f.first_nonempty(0), None);
    }
}
