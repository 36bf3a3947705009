//! Boundary tags and the pool they live in.
//!
//! A tag describes one span or one segment (the seed's `struct vmem_btag`).
//! Tags sit in fixed-size chunks from the metadata allocator and are named by
//! a `u32` index, so a tag costs 32 bytes and links cost 4; chunks never move
//! or shrink, and unused tags form a stack threaded through `lnext` (the
//! seed's `vm_freetags`).

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

/// Bits in a tag index; the top bits of `lprev_kind` hold the [`Kind`].
const INDEX_BITS: u32 = 29;
/// The null link.
pub(crate) const NIL: u32 = (1 << INDEX_BITS) - 1;
/// Tags per chunk is `1 << CHUNK_SHIFT` (8 KiB chunks).
const CHUNK_SHIFT: u32 = 8;
const CHUNK: usize = 1 << CHUNK_SHIFT;
const CHUNK_MASK: u32 = (1 << CHUNK_SHIFT) - 1;

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

/// One boundary tag: 32 bytes.
///
/// `prev`/`next` link every tag in address order (spans before the segments
/// that tile them). `lnext`/`lprev` link a free segment into its free list, a
/// busy segment into its hash chain (`lnext` only), a span into the span list,
/// or an unused tag into the unused stack.
#[derive(Clone, Copy, Debug)]
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

/// The chunked tag pool with its unused stack.
pub(crate) struct TagPool<A: Allocator + Clone> {
    chunks: Vec<Vec<Tag, A>, A>,
    unused: u32,
    n_unused: usize,
    alloc: A,
}

impl<A: Allocator + Clone> TagPool<A> {
    pub fn new(alloc: A) -> Self {
        TagPool {
            chunks: Vec::new_in(alloc.clone()),
            unused: NIL,
            n_unused: 0,
            alloc,
        }
    }

    #[inline]
    pub fn get(&self, i: u32) -> &Tag {
        &self.chunks[(i >> CHUNK_SHIFT) as usize][(i & CHUNK_MASK) as usize]
    }

    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut Tag {
        &mut self.chunks[(i >> CHUNK_SHIFT) as usize][(i & CHUNK_MASK) as usize]
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
        let base = self.chunks.len() * CHUNK;
        if base + CHUNK > NIL as usize {
            return Err(());
        }
        self.chunks.try_reserve(1).map_err(drop)?;
        let mut chunk = Vec::new_in(self.alloc.clone());
        chunk.try_reserve_exact(CHUNK).map_err(drop)?;
        chunk.resize(CHUNK, Tag::UNUSED);
        // Thread the new tags onto the unused stack, lowest index on top.
        for (k, tag) in chunk.iter_mut().enumerate().rev() {
            tag.lnext = self.unused;
            self.unused = (base + k) as u32;
        }
        self.chunks.push(chunk);
        self.n_unused += CHUNK;
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

    /// Returns a tag to the unused stack.
    #[inline]
    pub fn put(&mut self, i: u32) {
        let unused = self.unused;
        let tag = self.get_mut(i);
        *tag = Tag::UNUSED;
        tag.lnext = unused;
        self.unused = i;
        self.n_unused += 1;
    }

    /// Tags allocated, used or not.
    pub fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
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
        self.capacity() * size_of::<Tag>() + self.chunks.capacity() * size_of::<Vec<Tag, A>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    #[test]
    fn tag_is_32_bytes_and_kind_packs_beside_lprev() {
        assert_eq!(size_of::<Tag>(), 32);
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
