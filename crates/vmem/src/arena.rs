//! The arena proper, everything that runs under the arena lock: spans and
//! segments in address order, placing a request ([`Arena::alloc`]), splitting
//! the chosen free segment ([`Arena::clip`]), and freeing with coalescing
//! ([`Arena::free`]); adding and removing spans is in [`span`]. `Vmem` wraps
//! it in the lock and adds importing, waiting and the quantum caches.

use allocator_api2::alloc::Allocator;

use crate::error::{ArenaName, VmemError};
use crate::fit::{Policy, Request};
use crate::freelist::{FreeLists, list_of};
use crate::hash::{BusyHash, Link};
use crate::search::Fit;
use crate::stats::Counters;
use crate::tag::{Kind, NIL, TagPool};

mod span;

/// Tags one operation may need: two to add an imported span, two to clip
/// the chosen segment at both ends (the seed's `BT_MAXALLOC`).
pub(crate) const TAGS_PER_OP: usize = 4;

pub(crate) struct Arena<A: Allocator + Clone> {
    pub name: ArenaName,
    pub qshift: u32,
    pub tags: TagPool<A>,
    /// Every tag in address order (the seed's `vm_seglist`).
    pub seg_head: u32,
    pub seg_tail: u32,
    /// Span tags alone in address order, through `lnext`/`lprev`, and
    /// the last of them.
    pub span_head: u32,
    pub span_tail: u32,
    pub free: FreeLists,
    pub hash: BusyHash<A>,
    /// The next-fit cursor: the address just past the last next-fit
    /// allocation, where the next one starts looking. An address, not a
    /// tag, because a free may merge the tag it was at into a free segment
    /// that reaches back before it.
    pub cursor: usize,
    /// A tag at or before `cursor` in address order, where the search for
    /// it starts: the last next-fit segment, or the tag before it once
    /// that is gone.
    pub rotor: u32,
    /// Bytes in spans (`vm_size`), in busy segments (`vm_inuse`), and in
    /// spans imported from the source.
    pub total: usize,
    pub inuse: usize,
    pub imported: usize,
    pub n_spans: usize,
    pub n_free_segs: usize,
    /// Bytes being imported right now, with the lock dropped.
    pub importing: usize,
    pub counters: Counters,
}

impl<A: Allocator + Clone> Arena<A> {
    pub fn new(name: ArenaName, quantum: usize, alloc: A) -> Result<Self, VmemError> {
        let qshift = quantum.trailing_zeros();
        let hash = BusyHash::new(alloc.clone(), qshift)
            .map_err(|()| VmemError::NoMetadata { arena: name })?;
        Ok(Arena {
            name,
            qshift,
            tags: TagPool::new(alloc),
            seg_head: NIL,
            seg_tail: NIL,
            span_head: NIL,
            span_tail: NIL,
            free: FreeLists::new(),
            hash,
            cursor: 0,
            rotor: NIL,
            total: 0,
            inuse: 0,
            imported: 0,
            n_spans: 0,
            n_free_segs: 0,
            importing: 0,
            counters: Counters::default(),
        })
    }

    #[inline]
    pub fn quantum(&self) -> usize {
        1 << self.qshift
    }

    /// Makes sure the next operation cannot run out of tags halfway.
    #[inline]
    pub fn reserve(&mut self) -> Result<(), VmemError> {
        self.tags
            .reserve(TAGS_PER_OP)
            .map_err(|()| VmemError::NoMetadata { arena: self.name })
    }

    // ---- the address-ordered tag list

    #[inline]
    fn link_before(&mut self, t: u32, before: u32) {
        let prev = if before == NIL {
            self.seg_tail
        } else {
            self.tags.get(before).prev()
        };
        {
            let tag = self.tags.get_mut(t);
            tag.set_prev(prev);
            tag.next = before;
        }
        match prev {
            NIL => self.seg_head = t,
            p => self.tags.get_mut(p).next = t,
        }
        match before {
            NIL => self.seg_tail = t,
            b => self.tags.get_mut(b).set_prev(t),
        }
    }

    /// Unlinks `t` from the address-ordered list and returns it to the pool.
    #[inline]
    fn unlink(&mut self, t: u32) {
        let (prev, next) = {
            let tag = self.tags.get(t);
            (tag.prev(), tag.next)
        };
        match prev {
            NIL => self.seg_head = next,
            p => self.tags.get_mut(p).next = next,
        }
        match next {
            NIL => self.seg_tail = prev,
            n => self.tags.get_mut(n).set_prev(prev),
        }
        if self.rotor == t {
            self.rotor = prev;
        }
        self.tags.put(t);
    }

    #[inline]
    pub(crate) fn quanta(&self, size: usize) -> usize {
        size >> self.qshift
    }

    #[inline]
    fn file_free(&mut self, t: u32) {
        let q = self.quanta(self.tags.get(t).size);
        self.free.insert(&mut self.tags, t, q);
        self.n_free_segs += 1;
    }

    #[inline]
    fn unfile_free(&mut self, t: u32) {
        let q = self.quanta(self.tags.get(t).size);
        self.free.remove(&mut self.tags, t, q);
        self.n_free_segs -= 1;
    }

    // ---- allocation

    /// Places `req` by `policy` and marks it busy; `None` if no free segment
    /// can hold it. Needs [`reserve`](Self::reserve).
    #[inline]
    pub fn alloc(&mut self, req: &Request, policy: Policy) -> Option<usize> {
        let found = match policy {
            Policy::InstantFit => self.instant_fit(req),
            Policy::BestFit => self.best_fit(req),
            Policy::NextFit => self.next_fit(req),
        };
        let fit = found?;
        let at = fit.at;
        let busy = self.carve(fit, req.size);
        if policy == Policy::NextFit {
            // Past the top of the address space the search starts over.
            self.cursor = at.wrapping_add(req.size);
            self.rotor = if self.cursor == 0 { NIL } else { busy };
        }
        Some(at)
    }

    /// The fast path of an allocation: places `req` if no tag can run out
    /// halfway and a free segment fits, and counts it; `None` sends the
    /// caller to the slow path (fill tags, import, drain, wait).
    #[inline]
    pub fn try_place(&mut self, req: &Request, policy: Policy) -> Option<usize> {
        if self.tags.n_unused() < TAGS_PER_OP {
            return None;
        }
        self.alloc_counted(req, policy)
    }

    /// [`try_place`](Self::try_place) for an unconstrained request of
    /// `size` (rounded) bytes. Instant fit, the common case, goes straight
    /// to the head of the first non-empty list whose members all hold it,
    /// without building a [`Request`] or testing constraints (with the
    /// `_mut` path's one-flag test, 493 to 458 instructions a free+alloc
    /// pair at 10 live segments). When no list has such a head, the
    /// general path falls back to best fit under the same lock, or none.
    #[inline]
    pub fn try_place_plain(&mut self, size: usize, policy: Policy) -> Option<usize> {
        if policy != Policy::InstantFit {
            return self.try_place_unconstrained(size, policy);
        }
        if self.tags.n_unused() < TAGS_PER_OP {
            return None;
        }
        let Some(fit) = self.instant_head(size) else {
            return self.try_place_unconstrained(size, policy);
        };
        let at = fit.at;
        self.carve(fit, size);
        self.counters.instant_fit += 1;
        Some(at)
    }

    /// [`try_place_plain`](Self::try_place_plain) by best or next fit, or
    /// by instant fit falling back to best fit, out of line: the caller's
    /// policy may be a run-time value, and
    /// inlining every policy's search into the instant-fit path cost that
    /// path 2 ns a pair at 10 live segments and 8 at 100k (the random
    /// workload).
    #[inline(never)]
    fn try_place_unconstrained(&mut self, size: usize, policy: Policy) -> Option<usize> {
        self.try_place(&Request::plain(size, self.quantum()), policy)
    }

    /// [`alloc`](Self::alloc), counted in the statistics on success.
    #[inline]
    pub fn alloc_counted(&mut self, req: &Request, policy: Policy) -> Option<usize> {
        let x = self.alloc(req, policy)?;
        self.count_alloc(req, policy);
        Some(x)
    }

    /// Marks `size` bytes at `fit` busy, carving them out of its free
    /// segment; returns the busy tag. The hash bucket is worked out and
    /// prefetched first, so the insert at the end does not wait for it.
    #[inline(always)]
    fn carve(&mut self, fit: Fit, size: usize) -> u32 {
        let Fit { tag, at, list } = fit;
        let bucket = self.hash.bucket(at);
        self.hash.prefetch(bucket);
        self.clip(tag, list, at, size, bucket)
    }

    /// Carves `[x, x + size)` out of free tag `t`, filed on `list` (the
    /// seed's `vmem_clip`): what lies before and after stays free, the
    /// middle becomes busy and goes in hash bucket `bucket`.
    #[inline]
    fn clip(&mut self, t: u32, list: usize, x: usize, size: usize, bucket: usize) -> u32 {
        let (start, tsize) = {
            let tag = self.tags.get(t);
            (tag.start, tag.size)
        };
        debug_assert_eq!(list, list_of(self.quanta(tsize)));
        let rest = tsize - (x - start) - size;
        // The common case: the front of a larger segment. The remainder
        // keeps `t`, and changes lists only if its size class changed.
        if x == start && rest != 0 {
            let rest_list = list_of(self.quanta(rest));
            if rest_list != list {
                self.free.remove_from(&mut self.tags, t, list);
                self.free.insert_on(&mut self.tags, t, rest_list);
            }
            let tag = self.tags.get_mut(t);
            tag.start += size;
            tag.size = rest;
            return self.mark_busy_before(t, x, size, bucket);
        }
        self.free.remove_from(&mut self.tags, t, list);
        self.n_free_segs -= 1;
        if x != start {
            let front = self.tags.take(Kind::Free, start, x - start);
            self.link_before(front, t);
            self.file_free(front);
        }
        let tag = self.tags.get_mut(t);
        if rest != 0 {
            tag.start = x + size;
            tag.size = rest;
            self.file_free(t);
            self.mark_busy_before(t, x, size, bucket)
        } else {
            tag.start = x;
            tag.size = size;
            self.tags.set_kind(t, Kind::Busy);
            self.hash.insert(&mut self.tags, t, bucket);
            self.inuse += size;
            t
        }
    }

    /// A new busy tag for `[x, x + size)` in hash bucket `bucket`, linked
    /// just before `t`.
    #[inline]
    fn mark_busy_before(&mut self, t: u32, x: usize, size: usize, bucket: usize) -> u32 {
        let busy = self.tags.take(Kind::Busy, x, size);
        self.link_before(busy, t);
        self.hash.insert(&mut self.tags, busy, bucket);
        self.inuse += size;
        busy
    }

    // ---- free

    /// Frees the busy segment `[addr, addr + size)`, merging it with free
    /// neighbours (the seed's `vmem_xfree`). Returns the span to release to
    /// the source if that left an imported span wholly free; the caller
    /// releases it after dropping the lock.
    #[inline]
    pub fn free(&mut self, addr: usize, size: usize) -> Result<Option<(usize, usize)>, VmemError> {
        let freed = self.free_merging(addr, size);
        // The busy hash shrinks when the busy count falls to an eighth of
        // its buckets: the one time to ask whether the tags have fallen
        // far enough too, off the path of every other free.
        if self.hash.shrunk {
            self.trim_tags();
        }
        freed
    }

    /// The busy segment starting at `addr` that a free of `size` bytes
    /// names, with where it is chained in the hash; the error a free
    /// returns if there is none or its size is not `size` rounded up to
    /// the quantum.
    ///
    /// The size is matched without rounding it: `size` rounds up to
    /// `allocated` exactly when `allocated - quantum < size <= allocated`,
    /// one wrapping subtraction and compare that also refuses 0 and sizes
    /// that would overflow when rounded (a busy segment holds at least a
    /// quantum).
    #[inline(always)]
    pub fn find_busy(&self, addr: usize, size: usize) -> Result<(Link, u32), VmemError> {
        let Some((link, t)) = self.hash.find(&self.tags, addr) else {
            return Err(VmemError::NotAllocated {
                arena: self.name,
                addr,
                size,
            });
        };
        let allocated = self.tags.get(t).size;
        if allocated.wrapping_sub(size) >= self.quantum() {
            return Err(VmemError::WrongSize {
                arena: self.name,
                addr,
                size,
                allocated,
            });
        }
        Ok((link, t))
    }

    /// [`free`](Self::free) but for trimming the tag pool.
    #[inline(always)]
    fn free_merging(
        &mut self,
        addr: usize,
        size: usize,
    ) -> Result<Option<(usize, usize)>, VmemError> {
        let (link, t) = self.find_busy(addr, size)?;
        let size = self.tags.get(t).size;
        self.hash.remove(&mut self.tags, link, t);
        self.inuse -= size;
        let (start, next, prev) = {
            let tag = self.tags.get(t);
            (tag.start, tag.next, tag.prev())
        };
        // A span tag always precedes its segments, so `prev` exists. The
        // bitmap answers without loading either neighbour's tag.
        let prev_free = self.tags.is_free(prev);
        let next_free = next != NIL && self.tags.is_free(next);
        // Merge into a free neighbour where there is one, so that a merged
        // segment whose size class does not change stays on its list.
        let merged = match (prev_free, next_free) {
            (false, false) => {
                self.tags.set_kind(t, Kind::Free);
                t
            }
            (true, false) => {
                self.unlink(t);
                let psize = self.tags.get(prev).size;
                self.resize_free(prev, psize + size);
                prev
            }
            (false, true) => {
                self.unlink(t);
                let nsize = self.tags.get(next).size;
                self.tags.get_mut(next).start = start;
                self.resize_free(next, nsize + size);
                next
            }
            (true, true) => {
                let nsize = self.tags.get(next).size;
                self.unfile_free(next);
                self.unlink(next);
                self.unlink(t);
                let psize = self.tags.get(prev).size;
                self.resize_free(prev, psize + size + nsize);
                prev
            }
        };
        // Only an imported span is released, and only by a segment that
        // follows its tag: the bitmap says so without loading the tag
        // before it (a likely cache miss), which the span test needs only
        // when it passes.
        if self.imported != 0 {
            let seg = *self.tags.get(merged);
            let span_tag = seg.prev();
            if self.tags.is_imported_span(span_tag) {
                let span = *self.tags.get(span_tag);
                if span.size == seg.size {
                    debug_assert_eq!(span.start, seg.start);
                    if merged != t {
                        self.unfile_free(merged);
                    }
                    self.unlink(merged);
                    self.remove_span(span_tag);
                    return Ok(Some((seg.start, seg.size)));
                }
            }
        }
        if merged == t {
            self.file_free(t);
        }
        Ok(None)
    }

    /// Moves the tags in use into a smaller array once under a quarter of
    /// the pool is in use (the seed gives unused tags back beyond
    /// `BT_MAXFREE`): after a peak of a million segments the array would
    /// otherwise keep its 32 MB for ever. Tags are named by index, so this
    /// renumbers them, in address order, and renames every link to them;
    /// if the metadata allocator refuses the new array, the old one stays.
    #[cold]
    fn trim_tags(&mut self) {
        self.hash.shrunk = false;
        if !self.tags.worth_trimming() {
            return;
        }
        let live = self.tags.capacity() - self.tags.n_unused();
        let mut map = allocator_api2::vec::Vec::new_in(self.tags.allocator().clone());
        if map.try_reserve_exact(self.tags.capacity()).is_err() {
            return;
        }
        map.resize(self.tags.capacity(), NIL);
        // Every tag in use, spans too, is on the address-ordered list.
        let (mut k, mut t) = (0, self.seg_head);
        while t != NIL {
            map[t as usize] = k;
            k += 1;
            t = self.tags.get(t).next;
        }
        debug_assert_eq!(k as usize, live);
        if self.tags.renumber(&map, live).is_err() {
            return;
        }
        let rename = |i: u32| if i == NIL { NIL } else { map[i as usize] };
        self.seg_head = rename(self.seg_head);
        self.seg_tail = rename(self.seg_tail);
        self.span_head = rename(self.span_head);
        self.span_tail = rename(self.span_tail);
        self.rotor = rename(self.rotor);
        self.free.rename(rename);
        self.hash.rename(rename);
    }

    /// [`free`](Self::free), counted as a free or a bad free.
    #[inline]
    pub fn free_counted(
        &mut self,
        addr: usize,
        size: usize,
    ) -> Result<Option<(usize, usize)>, VmemError> {
        let freed = self.free(addr, size);
        self.count_free(&freed);
        freed
    }

    /// Counts a free, a release, or a bad free.
    #[inline]
    pub fn count_free(&mut self, freed: &Result<Option<(usize, usize)>, VmemError>) {
        match freed {
            Ok(None) => self.counters.frees += 1,
            Ok(Some(_)) => {
                self.counters.frees += 1;
                self.counters.releases += 1;
            }
            Err(_) => self.counters.bad_frees += 1,
        }
    }

    /// Sets the size of free tag `t` (on its list), moving it to another
    /// list only if its size class changed.
    #[inline(always)]
    fn resize_free(&mut self, t: u32, new_size: usize) {
        let old_list = list_of(self.quanta(self.tags.get(t).size));
        let new_list = list_of(self.quanta(new_size));
        if old_list != new_list {
            self.free.remove_from(&mut self.tags, t, old_list);
            self.tags.get_mut(t).size = new_size;
            self.free.insert_on(&mut self.tags, t, new_list);
        } else {
            self.tags.get_mut(t).size = new_size;
        }
    }
}
