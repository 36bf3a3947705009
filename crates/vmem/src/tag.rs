//! Boundary tags and the pool they live in.
//!
//! A tag describes one span or one segment (the seed's `struct vmem_btag`).
//! Tags sit in one array from the metadata allocator and are named by a
//! `u32` index, so a tag costs 32 bytes, links cost 4, and reaching a tag is
//! one indexed load. Because tags are named by index, the array may move when
//! it grows (by an eighth, so capacity stays close to use), and unused tags
//! form a stack threaded through `lnext` (the seed's `vm_freetags`). Once
//! under a quarter of it is in use, the arena has the pool renumber the tags
//! in use into a smaller array ([`TagPool::renumber`]) and renames every
//! link it holds, where the seed gives tags beyond `BT_MAXFREE` back one by
//! one.
//!
//! Beside the array, two bitmaps of one bit per tag say which tags are
//! free segments and which are imported spans. Freeing a segment must know
//! whether its neighbours are free, and, in an arena that imports, whether
//! the merged segment follows an imported span's tag; most frees merge
//! with neither neighbour and fill no span. Asking the bitmaps, an eighth
//! of a byte per tag each and so in the core's own cache at a million
//! segments, leaves the neighbours' tags alone, two likely cache misses a
//! free otherwise.
//! An arena that imports nothing never touches the span bitmap.
//!
//! Every tag starts on a 32-byte boundary, so a tag is half a cache line and
//! a cold tag costs one miss, never two. The array is allocated in 16-byte
//! halves with one half to spare, and the tags start at the first 32-byte
//! boundary in it: the allocator sees 16-byte alignment, so growing a small
//! array stays a `realloc` instead of the allocate-copy-free an
//! over-aligned layout would force. From a huge page (2 MiB) up, the array
//! moves to a new buffer advised for transparent huge pages before the
//! copy writes it: glibc grows a large block with `mremap`, which leaves
//! it on small pages, and at a million segments that made each tag miss a
//! TLB miss as well (the random workload at 1M live: 813 -> 687 ns a pair
//! on this machine).

use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

mod resize;

/// Bits in a tag index; the top bits of `prev_kind` hold the [`Kind`].
const INDEX_BITS: u32 = 29;
/// The null link.
pub(crate) const NIL: u32 = (1 << INDEX_BITS) - 1;
/// The fewest tags the pool grows by (1 KiB): small arenas, an ID
/// allocator say, stay small; large ones grow by an eighth at a time.
const CHUNK: usize = 32;

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

/// One boundary tag: 32 bytes, placed by the pool on a 32-byte boundary.
///
/// `prev`/`next` link every tag in address order (spans before the segments
/// that tile them). `lnext`/`lprev` link a free segment into its free list, a
/// busy segment into its hash chain (`lnext` only), a span into the span list,
/// or an unused tag into the unused stack.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tag {
    pub start: usize,
    pub size: usize,
    /// `prev` with the [`Kind`] in its top bits. Of the four links, `prev`
    /// is the one stored almost only into tags the operation has read
    /// anyway (the segment itself and the free neighbours it merges with;
    /// the one exception is the tag after a segment merged into its
    /// predecessor, which is busy or a span and otherwise left unread),
    /// while `next`, `lnext` and `lprev` are stored into cold tags: the
    /// address-order predecessor of a split segment, list neighbours on
    /// insert and removal. A whole-word store needs no read, so those cost
    /// write misses the store buffer absorbs, not read misses the
    /// operation waits for.
    prev_kind: u32,
    pub next: u32,
    pub lnext: u32,
    pub lprev: u32,
}

impl Tag {
    const UNUSED: Tag = Tag {
        start: 0,
        size: 0,
        prev_kind: NIL,
        next: NIL,
        lnext: NIL,
        lprev: NIL,
    };

    /// Last address of the tag (inclusive, so a span may end at `usize::MAX`).
    #[inline]
    pub fn end(&self) -> usize {
        self.start + (self.size - 1)
    }

    /// Whether the tag is of `kind`: one compare, no decoding.
    #[inline(always)]
    pub fn is(&self, kind: Kind) -> bool {
        self.prev_kind >> INDEX_BITS == kind as u32
    }

    #[inline]
    pub fn kind(&self) -> Kind {
        Kind::from_bits(self.prev_kind >> INDEX_BITS)
    }

    /// Only [`TagPool::set_kind`] changes a linked tag's kind, keeping the
    /// kind bitmap in step.
    #[inline]
    fn set_kind(&mut self, kind: Kind) {
        self.prev_kind = (self.prev_kind & NIL) | ((kind as u32) << INDEX_BITS);
    }

    #[inline]
    pub fn prev(&self) -> u32 {
        self.prev_kind & NIL
    }

    #[inline]
    pub fn set_prev(&mut self, i: u32) {
        debug_assert!(i <= NIL);
        self.prev_kind = (self.prev_kind & !NIL) | i;
    }
}

/// The unit the tag array is allocated in: half a tag.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Half([u64; 2]);

/// Advises a metadata table of at least a huge page for transparent huge
/// pages: at a million segments the tags and the hash span tens of MiB,
/// and every operation touches a few of their lines at random, each a TLB
/// miss on 4 KiB pages. Called after every reserve and before the new part
/// is written, so that its first touch faults huge pages in (a table that
/// grew may have moved, so the advice is given again for all of it).
pub(crate) fn advise_huge<T, A: Allocator>(table: &Vec<T, A>) {
    // A table holding no whole huge page makes no system call.
    kmem_sys::advise_huge_pages(table.as_ptr() as usize, table.capacity() * size_of::<T>());
}

/// One bit per tag of the pool.
struct Bits<A: Allocator>(Vec<u64, A>);

impl<A: Allocator> Bits<A> {
    /// Bit `i`.
    ///
    /// # Safety
    ///
    /// `i` is below the count last grown to (for the pool: a tag index).
    #[inline(always)]
    unsafe fn get(&self, i: u32) -> bool {
        debug_assert!((i as usize) < self.0.len() * 64);
        // SAFETY: `i / 64 < self.0.len()` by the caller's promise.
        let word = unsafe { *self.0.get_unchecked(i as usize / 64) };
        (word >> (i % 64)) & 1 != 0
    }

    /// Sets bit `i` to `on`.
    ///
    /// # Safety
    ///
    /// As for [`get`](Self::get).
    #[inline(always)]
    unsafe fn set(&mut self, i: u32, on: bool) {
        debug_assert!((i as usize) < self.0.len() * 64);
        // SAFETY: as in `get`.
        let word = unsafe { self.0.get_unchecked_mut(i as usize / 64) };
        let bit = 1 << (i % 64);
        if on {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// Makes room for `n` bits, the new ones clear.
    fn grow(&mut self, n: usize) -> Result<(), ()> {
        let words = n.div_ceil(64);
        if words > self.0.len() {
            self.0
                .try_reserve_exact(words - self.0.len())
                .map_err(drop)?;
            self.0.resize(words, 0);
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.0.capacity() * size_of::<u64>()
    }
}

/// The tag array with its unused stack.
pub(crate) struct TagPool<A: Allocator + Clone> {
    /// `2 * len + 1` halves once allocated; the tags are the `2 * len`
    /// starting at `base`.
    halves: Vec<Half, A>,
    /// The first tag: the first 32-byte boundary in `halves`.
    base: NonNull<Tag>,
    /// Tags in the array.
    len: usize,
    /// Which tags are [`Kind::Free`], and which [`Kind::Span`].
    free: Bits<A>,
    span: Bits<A>,
    unused: u32,
    n_unused: usize,
}

// SAFETY: `base` points into `halves`, which the pool owns; it is a cache of
// where the tags start, shared and sent exactly as the `Vec` is.
unsafe impl<A: Allocator + Clone + Send> Send for TagPool<A> {}
// SAFETY: as for `Send`: `&TagPool` only reads through `base`.
unsafe impl<A: Allocator + Clone + Sync> Sync for TagPool<A> {}

impl<A: Allocator + Clone> TagPool<A> {
    pub fn new(alloc: A) -> Self {
        TagPool {
            halves: Vec::new_in(alloc.clone()),
            base: NonNull::dangling(),
            len: 0,
            free: Bits(Vec::new_in(alloc.clone())),
            span: Bits(Vec::new_in(alloc)),
            unused: NIL,
            n_unused: 0,
        }
    }

    /// Tag `i`, which must be a tag of this pool (never [`NIL`]).
    ///
    /// Unchecked in release builds: the arena reaches tags only through
    /// indices the pool handed out ([`take`](Self::take), the unused stack)
    /// and links copied from them; the pool shrinks only in
    /// [`renumber`](Self::renumber), which renames every link inside the
    /// pool into the new array while the arena renames those it holds; and
    /// every link is tested against [`NIL`] before it is followed. Debug
    /// builds assert it.
    #[inline(always)]
    pub fn get(&self, i: u32) -> &Tag {
        debug_assert!((i as usize) < self.len, "vmem: tag {i} out of the pool");
        // SAFETY: by the pool invariant above `i < self.len`: every index
        // was handed out by this pool, or renamed into it by `renumber`,
        // and `base` starts `len` initialised tags inside `halves`.
        unsafe { self.base.add(i as usize).as_ref() }
    }

    /// Tag `i` to change; the same contract as [`get`](Self::get).
    #[inline(always)]
    pub fn get_mut(&mut self, i: u32) -> &mut Tag {
        debug_assert!((i as usize) < self.len, "vmem: tag {i} out of the pool");
        // SAFETY: as in `get`: `i < self.len` by the pool invariant;
        // `&mut self` makes the reference unique.
        unsafe { self.base.add(i as usize).as_mut() }
    }

    /// Whether tag `i` is a free segment, from the bitmap: the tag itself
    /// is not loaded.
    #[inline(always)]
    pub fn is_free(&self, i: u32) -> bool {
        debug_assert!((i as usize) < self.len, "vmem: tag {i} out of the pool");
        // SAFETY: `i < len`, as for `get`, and `grow` grows both bitmaps
        // to at least `len` bits before it counts new tags in.
        unsafe { self.free.get(i) }
    }

    /// Whether tag `i` is an imported span ([`Kind::Span`]), from the
    /// bitmap.
    #[inline(always)]
    pub fn is_imported_span(&self, i: u32) -> bool {
        debug_assert!((i as usize) < self.len, "vmem: tag {i} out of the pool");
        // SAFETY: as in `is_free`.
        unsafe { self.span.get(i) }
    }

    /// Makes segment `i` a `kind` (free or busy), in the tag and in the
    /// free bitmap.
    #[inline]
    pub fn set_kind(&mut self, i: u32, kind: Kind) {
        debug_assert!(matches!(kind, Kind::Free | Kind::Busy));
        self.get_mut(i).set_kind(kind);
        // SAFETY: `get_mut` accepted `i`: as in `is_free`.
        unsafe { self.free.set(i, kind == Kind::Free) };
    }

    /// Tag `i` if it is in the pool: for `check`, which follows links that
    /// may be corrupt.
    pub fn checked(&self, i: u32) -> Option<&Tag> {
        ((i as usize) < self.len).then(|| self.get(i))
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
        // SAFETY: `i` is a tag of the pool, as in `is_free`.
        unsafe {
            match kind {
                Kind::Free => self.free.set(i, true),
                Kind::Span => self.span.set(i, true),
                _ => {}
            }
        }
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
        let span = tag.is(Kind::Span);
        tag.prev_kind = NIL;
        // SAFETY: `get_mut` accepted `i`: as in `is_free`.
        unsafe {
            self.free.set(i, false);
            if span {
                self.span.set(i, false);
            }
        }
        self.unused = i;
        self.n_unused += 1;
    }

    /// The metadata allocator.
    pub fn allocator(&self) -> &A {
        self.halves.allocator()
    }

    /// Tags allocated, used or not.
    pub fn capacity(&self) -> usize {
        self.len
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
        self.halves.capacity() * size_of::<Half>() + self.free.bytes() + self.span.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    #[test]
    fn tag_is_32_bytes_and_kind_packs_beside_prev() {
        assert_eq!(size_of::<Tag>(), 32);
        let mut t = Tag::UNUSED;
        t.set_kind(Kind::Busy);
        t.set_prev(12345);
        assert_eq!((t.kind(), t.prev()), (Kind::Busy, 12345));
        t.set_prev(NIL);
        t.set_kind(Kind::StaticSpan);
        assert_eq!((t.kind(), t.prev()), (Kind::StaticSpan, NIL));
    }

    #[test]
    fn tags_sit_on_32_byte_boundaries_and_survive_growth() {
        let mut p = TagPool::new(Global);
        let mut taken = std::vec::Vec::new();
        // Past 65 536 tags the array moves to fresh buffers (the huge-page
        // path): both ways of growing must keep every tag. Miri, too slow
        // for that many, checks the in-place growths and their re-alignment.
        let rounds = if cfg!(miri) { 12 } else { 70 };
        for round in 0..rounds {
            p.reserve(p.n_unused() + 1).unwrap();
            for k in 0..p.n_unused() {
                let i = p.take(Kind::Busy, round * 1000 + k, k + 1);
                taken.push((i, round * 1000 + k, k + 1));
            }
            assert_eq!(p.get(0) as *const Tag as usize % 32, 0);
        }
        if !cfg!(miri) {
            assert!(p.capacity() * size_of::<Tag>() > 2 * kmem_sys::HUGE_PAGE);
        }
        for &(i, start, size) in &taken {
            let t = p.get(i);
            assert_eq!((t.start, t.size, t.kind()), (start, size, Kind::Busy));
        }
        assert!(p.checked(p.capacity() as u32).is_none());
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
        assert!(p.is_free(a) && !p.is_free(b));
        let s = p.take(Kind::Span, 0, 64);
        assert!(p.is_imported_span(s) && !p.is_free(s) && !p.is_imported_span(a));
        p.put(s);
        assert!(!p.is_imported_span(s));
        p.set_kind(b, Kind::Free);
        assert!(p.is_free(b));
        p.set_kind(b, Kind::Busy);
        assert!(!p.is_free(b));
        p.put(a);
        assert_eq!(p.get(a).kind(), Kind::Unused);
        assert!(!p.is_free(a));
        assert_eq!(p.take(Kind::Free, 0, 1), a);
        assert_eq!(p.n_unused(), CHUNK - 2);
    }
}
