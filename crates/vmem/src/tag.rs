//! Boundary tags and the pool they live in.
//!
//! A tag describes one span or one segment (the seed's `struct vmem_btag`).
//! Tags sit in one array from the metadata allocator and are named by a
//! `u32` index, so a tag costs 32 bytes, links cost 4, and reaching a tag is
//! one indexed load. Because tags are named by index, the array may move when
//! it grows (by an eighth, so capacity stays close to use); it never shrinks,
//! and unused tags form a stack threaded through `lnext` (the seed's
//! `vm_freetags`).

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

/// Bits in a tag index; the top bits of `lprev_kind` hold the [`Kind`].
const INDEX_BITS: u32 = 29;
/// The null link.
pub(crate) const NIL: u32 = (1 << INDEX_BITS) - 1;
/// The fewest tags the pool grows by (8 KiB).
const CHUNK: usize = 256;

/// What a tag describes (the seed's `BT_TYPE_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Kind {
    /// On the unused stack.
    Unused = 0,
    /// A span imported from the source; released when wholly free.
    Span = 1,
    /// A span given by `add` or at build time; never released.
    StaticSpan = 2,
    /// A free segment, on a free list.
    Free = 3,
    /// An allocated segment, in the busy hash.
    Busy = 4,
}

impl Kind {
    fn from_bits(bits: u32) -> Kind {
        match bits {
            1 => Kind::Span,
            2 => Kind::StaticSpan,
            3 => Kind::Free,
            4 => Kind::Busy,
            _ => Kind::Unused,
        }
    }

    /// Spans head the segments that tile them.
    #[inline]
    pub(crate) fn is_span(self) -> bool {
        matches!(self, Kind::Span | Kind::StaticSpan)
    }
}

/// One boundary tag: 32 bytes, aligned to 32 so that a tag is always one
/// half of a cache line and never straddles two (the array's allocation
/// is only 16-aligned otherwise, which put every other tag across a line
/// boundary: two misses instead of one for a cold tag).
///
/// `prev`/`next` link every tag in address order (spans before the segments
/// that tile them). `lnext`/`lprev` link a free segment into its free list, a
/// busy segment into its hash chain (`lnext` only), a span into the span list,
/// or an unused tag into the unused stack.
#[derive(Clone, Copy, Debug)]
#[repr(align(32))]
pub(crate) struct Tag {
    pub start: usize,
    pub size: usize,
    pub prev: u32,
    pub next: u32,
    pub lnext: u32,
    lprev_kind: u32,
}

impl Tag {
    const UNUSED: Tag = Tag {
        start: 0,
        size: 0,
        prev: NIL,
        next: NIL,
        lnext: NIL,
        lprev_kind: NIL,
    };

    /// Last address of the tag (inclusive, so a span may end at `usize::MAX`).
    #[inline]
    pub fn end(&self) -> usize {
        self.start + (self.size - 1)
    }

    /// Whether the tag is of `kind`: one compare, no decoding.
    #[inline(always)]
    pub fn is(&self, kind: Kind) -> bool {
        self.lprev_kind >> INDEX_BITS == kind as u32
    }

    #[inline]
    pub fn kind(&self) -> Kind {
        Kind::from_bits(self.lprev_kind >> INDEX_BITS)
    }

    #[inline]
    pub fn set_kind(&mut self, kind: Kind) {
        self.lprev_kind = (self.lprev_kind & NIL) | ((kind as u32) << INDEX_BITS);
    }

    #[inline]
    pub fn lprev(&self) -> u32 {
        self.lprev_kind & NIL
    }

    #[inline]
    pub fn set_lprev(&mut self, i: u32) {
        debug_assert!(i <= NIL);
        self.lprev_kind = (self.lprev_kind & !NIL) | i;
    }
}

/// The tag array with its unused stack.
pub(crate) struct TagPool<A: Allocator + Clone> {
    tags: Vec<Tag, A>,
    unused: u32,
    n_unused: usize,
}

impl<A: Allocator + Clone> TagPool<A> {
    pub fn new(alloc: A) -> Self {
        TagPool {
            tags: Vec::new_in(alloc),
            unused: NIL,
            n_unused: 0,
        }
    }

    /// Tag `i`, which must be a tag of this pool (never [`NIL`]).
    ///
    /// Unchecked in release builds: the arena reaches tags only through
    /// indices the pool handed out ([`take`](Self::take), the unused stack)
    /// and links copied from them, the pool never shrinks, and every link
    /// is tested against [`NIL`] before it is followed. Debug builds assert
    /// it.
    #[inline(always)]
    pub fn get(&self, i: u32) -> &Tag {
        debug_assert!(
            (i as usize) < self.tags.len(),
            "vmem: tag {i} out of the pool"
        );
        // SAFETY: by the pool invariant above `i < self.tags.len()`: every
        // index was handed out by this pool, which never shrinks.
        unsafe { self.tags.get_unchecked(i as usize) }
    }

    /// Tag `i` to change; the same contract as [`get`](Self::get).
    #[inline(always)]
    pub fn get_mut(&mut self, i: u32) -> &mut Tag {
        debug_assert!(
            (i as usize) < self.tags.len(),
            "vmem: tag {i} out of the pool"
        );
        // SAFETY: as in `get`: `i` came from this pool, which never shrinks.
        unsafe { self.tags.get_unchecked_mut(i as usize) }
    }

    /// Tag `i` if it is in the pool: for `check`, which follows links that
    /// may be corrupt.
    pub fn checked(&self, i: u32) -> Option<&Tag> {
        self.tags.get(i as usize)
    }

    /// Makes sure `n` tags can be taken without allocating (the seed's
    /// `bt_fill` to `BT_MAXALLOC`). Fails only if the metadata allocator does.
    #[inline]
    pub fn reserve(&mut self, n: usize) -> Result<(), ()> {
        while self.n_unused < n {
            self.grow()?;
        }
        Ok(())
    }

    #[cold]
    fn grow(&mut self) -> Result<(), ()> {
        let base = self.tags.len();
        let more = (base / 8).max(CHUNK).min(NIL as usize - base);
        if more == 0 {
            return Err(());
        }
        self.tags.try_reserve_exact(more).map_err(drop)?;
        self.tags.resize(base + more, Tag::UNUSED);
        // Thread the new tags onto the unused stack, lowest index on top.
        for k in (base..base + more).rev() {
            self.tags[k].lnext = self.unused;
            self.unused = k as u32;
        }
        self.n_unused += more;
        Ok(())
    }

    /// Takes a tag; [`reserve`](Self::reserve) must have made one available.
    #[inline]
    pub fn take(&mut self, kind: Kind, start: usize, size: usize) -> u32 {
        let i = self.unused;
        assert!(i != NIL, "vmem: boundary tag taken without a reserve");
        let tag = self.get_mut(i);
        let next_unused = tag.lnext;
        *tag = Tag {
            start,
            size,
            ..Tag::UNUSED
        };
        tag.set_kind(kind);
        self.unused = next_unused;
        self.n_unused -= 1;
        i
    }

    /// Returns a tag to the unused stack. Only the links and the kind are
    /// reset: [`take`](Self::take) overwrites the rest.
    #[inline]
    pub fn put(&mut self, i: u32) {
        let unused = self.unused;
        let tag = self.get_mut(i);
        tag.lnext = unused;
        tag.lprev_kind = NIL;
        self.unused = i;
        self.n_unused += 1;
    }

    /// The metadata allocator.
    pub fn allocator(&self) -> &A {
        self.tags.allocator()
    }

    /// Tags allocated, used or not.
    pub fn capacity(&self) -> usize {
        self.tags.len()
    }

    /// Tags on the unused stack.
    pub fn n_unused(&self) -> usize {
        self.n_unused
    }

    /// Head of the unused stack, for `check`.
    pub fn unused_head(&self) -> u32 {
        self.unused
    }

    /// Bytes of metadata the pool holds.
    pub fn bytes(&self) -> usize {
        self.tags.capacity() * size_of::<Tag>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    #[test]
    fn tag_is_32_bytes_and_kind_packs_beside_lprev() {
        assert_eq!((size_of::<Tag>(), align_of::<Tag>()), (32, 32));
        let mut t = Tag::UNUSED;
        t.set_kind(Kind::Busy);
        t.set_lprev(12345);
        assert_eq!((t.kind(), t.lprev()), (Kind::Busy, 12345));
        t.set_lprev(NIL);
        t.set_kind(Kind::StaticSpan);
        assert_eq!((t.kind(), t.lprev()), (Kind::StaticSpan, NIL));
    }

    #[test]
    fn pool_reserves_takes_and_recycles() {
        let mut p = TagPool::new(Global);
        assert_eq!(p.capacity(), 0);
        p.reserve(4).unwrap();
        assert_eq!(p.n_unused(), CHUNK);
        let a = p.take(Kind::Free, 8, 16);
        let b = p.take(Kind::Busy, 24, 8);
        assert_ne!(a, b);
        assert_eq!(p.get(a).end(), 23);
        assert_eq!(p.get(b).kind(), Kind::Busy);
        p.put(a);
        assert_eq!(p.get(a).kind(), Kind::Unused);
        assert_eq!(p.take(Kind::Free, 0, 1), a);
        assert_eq!(p.n_unused(), CHUNK - 2);
    }
}
