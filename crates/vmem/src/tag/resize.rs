//! Growing the tag array by an eighth at a time, and renumbering the tags
//! in use into a smaller one after a peak.

use core::ptr::{self, NonNull};

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

use crate::tag::{Bits, CHUNK, Half, Kind, NIL, Tag, TagPool, advise_huge};

impl<A: Allocator + Clone> TagPool<A> {
    /// Adds an eighth of the array's tags (at least a chunk) to the unused
    /// stack; the array may move. Fails, changing nothing the arena sees,
    /// if the metadata allocator refuses or every tag index is in use.
    #[cold]
    pub(super) fn grow(&mut self) -> Result<(), ()> {
        let base = self.len;
        let more = (base / 8).max(CHUNK).min(NIL as usize - base);
        if more == 0 {
            return Err(());
        }
        let old_off = self.offset();
        self.free.grow(base + more)?;
        self.span.grow(base + more)?;
        let halves = 2 * (base + more) + 1;
        if halves * size_of::<Half>() >= kmem_sys::HUGE_PAGE {
            // A large array moves to a new buffer, advised before the copy
            // writes it: a `realloc` that moves it with `mremap` leaves it
            // on small pages (measured: 2 of 32 MiB huge after growing by
            // eighths, against all 32 this way). Old and new are both held
            // for the copy; if that much is refused, grow in place below,
            // on small pages but without failing.
            let mut fresh = Vec::new_in(self.halves.allocator().clone());
            if fresh.try_reserve_exact(halves).is_ok() {
                advise_huge(&fresh);
                fresh.extend_from_slice(&self.halves);
                self.halves = fresh;
            }
        }
        if self.halves.capacity() < halves {
            self.halves
                .try_reserve_exact(halves - self.halves.len())
                .map_err(drop)?;
            advise_huge(&self.halves);
        }
        self.halves.resize(halves, Half([0; 2]));
        let start = self.halves.as_mut_ptr();
        // `start` is 16-aligned: the tags begin one half in or at once.
        let off = (start as usize / size_of::<Half>()) & 1;
        if off != old_off && base > 0 {
            // SAFETY: the old tags are the `2 * base` halves at `old_off`;
            // both ranges lie in the `2 * base + 1` halves the buffer held
            // before it grew, and `copy` allows them to overlap.
            unsafe { ptr::copy(start.add(old_off), start.add(off), 2 * base) };
        }
        // SAFETY: `off + 2 * (base + more) <= halves`, so the tags from
        // `start + off` lie in the buffer, at a 32-byte boundary.
        self.base = unsafe { NonNull::new_unchecked(start.add(off).cast::<Tag>()) };
        // Thread the new tags onto the unused stack, lowest index on top.
        for k in (base..base + more).rev() {
            let tag = Tag {
                lnext: self.unused,
                ..Tag::UNUSED
            };
            // SAFETY: `k < base + more`, inside the buffer (see above).
            unsafe { self.base.add(k).write(tag) };
            self.unused = k as u32;
        }
        self.len = base + more;
        self.n_unused += more;
        Ok(())
    }

    /// Whether so few tags are in use that the array is worth
    /// [renumbering](Self::renumber) into a smaller one: under a quarter
    /// of it, in a pool grown past its first few chunks. Growing by an
    /// eighth and trimming at a quarter leave a wide band between, so a
    /// count going up and down does not copy the array back and forth.
    pub fn worth_trimming(&self) -> bool {
        self.len > 4 * CHUNK && (self.len - self.n_unused) < self.len / 4
    }

    /// Moves every tag in use into a new, smaller array: tag `i` becomes
    /// tag `map[i]`, its links renamed the same way, and an eighth to
    /// spare (at least a chunk) goes on the unused stack. `map` names
    /// every tag of the pool, [`NIL`] for those not in use, and numbers
    /// the `live` tags in use `0..live`. The caller renames the links it
    /// holds outside the pool. On a refused allocation nothing changes.
    pub fn renumber(&mut self, map: &[u32], live: usize) -> Result<(), ()> {
        debug_assert_eq!(map.len(), self.len);
        debug_assert_eq!(live, self.len - self.n_unused);
        let len = live + (live / 8).max(CHUNK);
        let alloc = self.halves.allocator().clone();
        let mut halves = Vec::new_in(alloc.clone());
        halves.try_reserve_exact(2 * len + 1).map_err(drop)?;
        advise_huge(&halves);
        halves.resize(2 * len + 1, Half([0; 2]));
        let (mut free, mut span) = (Bits(Vec::new_in(alloc.clone())), Bits(Vec::new_in(alloc)));
        free.grow(len)?;
        span.grow(len)?;
        let start = halves.as_mut_ptr();
        let off = (start as usize / size_of::<Half>()) & 1;
        // SAFETY: `off + 2 * len <= 2 * len + 1` halves: the tags from
        // `start + off` lie in the buffer, on a 32-byte boundary (`start`
        // is 16-aligned, and `off` skips a half if it is not 32-aligned).
        let base = unsafe { NonNull::new_unchecked(start.add(off).cast::<Tag>()) };
        let rename = |i: u32| if i == NIL { NIL } else { map[i as usize] };
        for (old, &new) in map.iter().enumerate() {
            if new == NIL {
                continue;
            }
            let tag = *self.get(old as u32);
            let moved = Tag {
                prev_kind: (tag.prev_kind & !NIL) | rename(tag.prev()),
                next: rename(tag.next),
                lnext: rename(tag.lnext),
                lprev: rename(tag.lprev),
                ..tag
            };
            debug_assert!((new as usize) < live);
            // SAFETY: `new < live <= len`, inside the new buffer; `Tag` is
            // plain data, written whole.
            unsafe { base.add(new as usize).write(moved) };
            // SAFETY: `new < len`, the count both bitmaps grew to.
            unsafe {
                free.set(new, tag.is(Kind::Free));
                span.set(new, tag.is(Kind::Span));
            }
        }
        let mut unused = NIL;
        for k in (live..len).rev() {
            let tag = Tag {
                lnext: unused,
                ..Tag::UNUSED
            };
            // SAFETY: `k < len`, inside the new buffer.
            unsafe { base.add(k).write(tag) };
            unused = k as u32;
        }
        self.halves = halves;
        self.base = base;
        self.len = len;
        self.free = free;
        self.span = span;
        self.unused = unused;
        self.n_unused = len - live;
        Ok(())
    }

    /// Where the tags start in `halves`, in halves (0 before the first
    /// allocation).
    fn offset(&self) -> usize {
        if self.len == 0 {
            return 0;
        }
        (self.base.as_ptr() as usize - self.halves.as_ptr() as usize) / size_of::<Half>()
    }
}
