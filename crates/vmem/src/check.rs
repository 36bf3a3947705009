//! The full invariant walk behind [`Vmem::check`](crate::Vmem::check): the
//! seed's `vmem_check_sanity` (no tag wraps, no two spans or segments
//! overlap) and much more, each rule reported by name.

use allocator_api2::alloc::Allocator;

use crate::arena::Arena;
use crate::error::VmemError;
use crate::freelist::{NLISTS, list_of};
use crate::hash::ChainFault;
use crate::tag::{Kind, NIL};

impl<A: Allocator + Clone> Arena<A> {
    /// Checks every invariant; the first one broken is the error.
    pub fn check(&self) -> Result<(), VmemError> {
        let corrupt = |addr, what| {
            Err(VmemError::Corrupt {
                arena: self.name,
                addr,
                what,
            })
        };
        let qmask = self.quantum() - 1;
        // Links may be corrupt: follow them only through the checked lookup.
        let at = |t: u32| match self.tags.checked(t) {
            Some(tag) => Ok(tag),
            None => Err(VmemError::Corrupt {
                arena: self.name,
                addr: t as usize,
                what: "a link names no tag of the pool (address = index)",
            }),
        };

        // 0. The busy hash's chains, walked before step 1 looks tags up in
        // it; its count is compared with the busy segments after step 1.
        let mut hashed = 0;
        let mut wrong = None;
        match self.hash.for_each(&self.tags, |t| {
            hashed += 1;
            if self.tags.get(t).kind() != Kind::Busy && wrong.is_none() {
                wrong = Some(self.tags.get(t).start);
            }
        }) {
            Ok(()) => {}
            Err(ChainFault::Misfiled(addr)) => {
                return corrupt(addr, "a busy segment is filed in the wrong hash bucket");
            }
            Err(ChainFault::NoTag) => {
                return corrupt(0, "a busy hash chain names no tag of the pool");
            }
            Err(ChainFault::Loop(addr)) => return corrupt(addr, "a busy hash chain loops"),
        }
        if let Some(addr) = wrong {
            return corrupt(addr, "the busy hash holds a tag that is not busy");
        }

        // 1. The address-ordered list: spans tiled exactly by segments.
        let (mut total, mut inuse, mut imported) = (0usize, 0usize, 0usize);
        let (mut spans, mut free, mut busy, mut linked) = (0usize, 0usize, 0usize, 0usize);
        // Next address a segment must start at; `None` past `usize::MAX`.
        let mut cursor: Option<usize> = None;
        // End (inclusive) of the current span; `None` before the first.
        let mut span_end: Option<usize> = None;
        let (mut prev, mut prev_kind) = (NIL, Kind::Unused);
        let mut t = self.seg_head;
        while t != NIL {
            let tag = at(t)?;
            let at = tag.start;
            linked += 1;
            if linked > self.tags.capacity() {
                return corrupt(at, "the segment list has a cycle");
            }
            if tag.prev() != prev {
                return corrupt(at, "a tag's prev link does not name its predecessor");
            }
            if tag.size == 0 || (tag.start | tag.size) & qmask != 0 {
                return corrupt(at, "a tag is empty or not a multiple of the quantum");
            }
            if tag.start.checked_add(tag.size - 1).is_none() {
                return corrupt(at, "a tag wraps past the end of the address space");
            }
            match tag.kind() {
                Kind::Span | Kind::StaticSpan => {
                    if span_end.is_some() && cursor != span_end.and_then(|e| e.checked_add(1)) {
                        return corrupt(at, "the previous span is not tiled by its segments");
                    }
                    if span_end.is_some_and(|e| tag.start <= e) {
                        return corrupt(at, "spans overlap or are out of address order");
                    }
                    span_end = Some(tag.end());
                    cursor = Some(tag.start);
                    spans += 1;
                    total += tag.size;
                    if tag.kind() == Kind::Span {
                        imported += tag.size;
                    }
                }
                Kind::Free | Kind::Busy => {
                    if cursor != Some(tag.start) {
                        return corrupt(at, "a segment does not start where the last one ended");
                    }
                    if span_end.is_none_or(|e| tag.end() > e) {
                        return corrupt(at, "a segment lies outside its span");
                    }
                    cursor = tag.end().checked_add(1);
                    if tag.kind() == Kind::Free {
                        if prev_kind == Kind::Free {
                            return corrupt(at, "two free segments are adjacent, not merged");
                        }
                        free += 1;
                    } else {
                        if self.hash.find(&self.tags, tag.start).map(|(_, b)| b) != Some(t) {
                            return corrupt(at, "a busy segment is missing from the busy hash");
                        }
                        busy += 1;
                        inuse += tag.size;
                    }
                }
                Kind::Unused => return corrupt(at, "an unused tag is on the segment list"),
            }
            prev = t;
            prev_kind = tag.kind();
            t = tag.next;
        }
        if self.seg_tail != prev {
            return corrupt(0, "the segment list's tail is not its last tag");
        }
        if span_end.is_some() && cursor != span_end.and_then(|e| e.checked_add(1)) {
            return corrupt(
                span_end.unwrap_or(0),
                "the last span is not tiled by its segments",
            );
        }
        if (total, inuse, imported) != (self.total, self.inuse, self.imported) {
            return corrupt(
                0,
                "span, busy or imported byte counts disagree with the tags",
            );
        }
        if (spans, free) != (self.n_spans, self.n_free_segs) {
            return corrupt(0, "span or free segment counts disagree with the tags");
        }

        // 2. The span list holds the same spans, in address order.
        let (mut n, mut prev, mut t) = (0, NIL, self.span_head);
        while t != NIL {
            let tag = at(t)?;
            n += 1;
            if !tag.kind().is_span() || tag.lprev != prev || n > spans {
                return corrupt(tag.start, "the span list is broken");
            }
            if prev != NIL && at(prev)?.end() >= tag.start {
                return corrupt(tag.start, "the span list is out of address order");
            }
            prev = t;
            t = tag.lnext;
        }
        if n != spans {
            return corrupt(0, "the span list misses spans");
        }
        if prev != self.span_tail {
            return corrupt(0, "the span list's tail is not its last span");
        }

        // 3. Free lists: every member free, on its size's list; bitmap exact.
        let mut listed = 0;
        for list in 0..NLISTS {
            let (mut prev, mut t) = (NIL, self.free.head(list));
            if self.free.marked(list) != Ok(t != NIL) {
                return corrupt(
                    list,
                    "the free-list bitmap disagrees with list (address = list)",
                );
            }
            while t != NIL {
                let tag = at(t)?;
                listed += 1;
                if listed > free {
                    return corrupt(tag.start, "the free lists hold more tags than are free");
                }
                if tag.kind() != Kind::Free || tag.lprev != prev {
                    return corrupt(tag.start, "a free list holds a non-free or mislinked tag");
                }
                if list_of(tag.size >> self.qshift) != list {
                    return corrupt(tag.start, "a free segment is on the wrong free list");
                }
                prev = t;
                t = tag.lnext;
            }
        }
        if listed != free {
            return corrupt(0, "a free segment is missing from the free lists");
        }

        // 4. The busy hash holds exactly the busy segments.
        if hashed != busy || self.hash.len() != busy {
            return corrupt(0, "the busy hash count disagrees with the busy segments");
        }

        // 5. Every tag is either linked or on the unused stack.
        let (mut unused, mut t) = (0, self.tags.unused_head());
        while t != NIL {
            unused += 1;
            if unused > self.tags.n_unused() || at(t)?.kind() != Kind::Unused {
                return corrupt(0, "the unused tag stack is broken");
            }
            t = at(t)?.lnext;
        }
        if unused != self.tags.n_unused() || linked + unused != self.tags.capacity() {
            return corrupt(0, "boundary tags were lost");
        }
        // 6. The kind bitmap marks exactly the free segments and the
        // imported spans.
        for i in 0..self.tags.capacity() as u32 {
            let tag = self.tags.get(i);
            if self.tags.is_free(i) != tag.is(Kind::Free)
                || self.tags.is_imported_span(i) != tag.is(Kind::Span)
            {
                return corrupt(tag.start, "the kind bitmap disagrees with a tag");
            }
        }
        if self.rotor != NIL && at(self.rotor)?.kind() == Kind::Unused {
            return corrupt(0, "the next-fit cursor names an unused tag");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use allocator_api2::alloc::Global;

    use crate::arena::Arena;
    use crate::error::{ArenaName, VmemError};
    use crate::fit::{Policy, Request};
    use crate::freelist::list_of;
    use crate::tag::{Kind, NIL};

    /// A static span and an imported one, six busy segments of four quanta
    /// in the first, the second and fourth freed to leave holes.
    fn arena() -> (Arena<Global>, Vec<usize>) {
        let mut a = Arena::new(ArenaName::new("chk"), 16, Global).unwrap();
        a.reserve().unwrap();
        a.add_span(0x1000, 0x1000, Kind::StaticSpan).unwrap();
        a.reserve().unwrap();
        a.add_span(0x4000, 0x1000, Kind::Span).unwrap();
        let xs: Vec<usize> = (0..6)
            .map(|_| {
                a.reserve().unwrap();
                a.alloc(&Request::plain(0x40, 16), Policy::InstantFit)
                    .unwrap()
            })
            .collect();
        a.free(xs[1], 0x40).unwrap();
        a.free(xs[3], 0x40).unwrap();
        a.check().unwrap();
        (a, xs)
    }

    /// The tag of `kind` starting at `addr`.
    fn tag_at(a: &Arena<Global>, addr: usize, kind: Kind) -> u32 {
        let mut t = a.seg_head;
        while t != NIL {
            let tag = a.tags.get(t);
            if tag.start == addr && tag.kind() == kind {
                return t;
            }
            t = tag.next;
        }
        panic!("no {kind:?} tag at {addr:#x}");
    }

    /// Breaks a fresh arena with `corrupt` and returns what `check` says.
    fn verdict(corrupt: impl FnOnce(&mut Arena<Global>, &[usize])) -> &'static str {
        let (mut a, xs) = arena();
        corrupt(&mut a, &xs);
        match a.check() {
            Err(VmemError::Corrupt { what, .. }) => what,
            other => panic!("check did not report corruption: {other:?}"),
        }
    }

    #[test]
    fn check_reports_each_broken_rule() {
        type Corrupt = fn(&mut Arena<Global>, &[usize]);
        let cases: [(&str, &str, Corrupt); 14] = [
            (
                "a shifted segment",
                "a busy segment is filed in the wrong hash bucket",
                |a, xs| {
                    let t = tag_at(a, xs[0], Kind::Busy);
                    a.tags.get_mut(t).start += 16;
                },
            ),
            (
                "overlapping spans",
                "spans overlap or are out of address order",
                |a, _| {
                    let second = a.tags.get(a.span_head).lnext;
                    a.tags.get_mut(second).start = 0x1800;
                },
            ),
            (
                "a free segment on the wrong list",
                "a free segment is on the wrong free list",
                |a, xs| {
                    let t = tag_at(a, xs[1], Kind::Free);
                    let list = list_of(4);
                    a.free.remove_from(&mut a.tags, t, list);
                    a.free.insert_on(&mut a.tags, t, list + 1);
                },
            ),
            (
                "a busy segment missing from the hash",
                "a busy segment is missing from the busy hash",
                |a, xs| {
                    let (link, t) = a.hash.find(&a.tags, xs[2]).unwrap();
                    a.hash.remove(&mut a.tags, link, t);
                },
            ),
            (
                "bytes in use",
                "span, busy or imported byte counts disagree with the tags",
                |a, _| a.inuse += 16,
            ),
            (
                "bytes imported",
                "span, busy or imported byte counts disagree with the tags",
                |a, _| a.imported -= 16,
            ),
            (
                "bytes in spans",
                "span, busy or imported byte counts disagree with the tags",
                |a, _| a.total += 16,
            ),
            (
                "the free-segment count",
                "span or free segment counts disagree with the tags",
                |a, _| a.n_free_segs += 1,
            ),
            (
                "a busy segment marked free",
                "the busy hash holds a tag that is not busy",
                |a, xs| {
                    let t = tag_at(a, xs[2], Kind::Busy);
                    a.tags.set_kind(t, Kind::Free);
                },
            ),
            (
                "a free segment marked busy",
                "a busy segment is missing from the busy hash",
                |a, xs| {
                    let t = tag_at(a, xs[1], Kind::Free);
                    a.tags.set_kind(t, Kind::Busy);
                },
            ),
            (
                "a looping hash chain",
                "a busy hash chain loops",
                |a, xs| {
                    let (_, t) = a.hash.find(&a.tags, xs[2]).unwrap();
                    a.tags.get_mut(t).lnext = t;
                },
            ),
            (
                "a looping segment list",
                "a tag's prev link does not name its predecessor",
                |a, _| {
                    let tail = a.seg_tail;
                    a.tags.get_mut(tail).next = a.seg_head;
                },
            ),
            (
                "a stale span tail",
                "the span list's tail is not its last span",
                |a, _| a.span_tail = a.span_head,
            ),
            (
                "a looping free list",
                "a free list holds a non-free or mislinked tag",
                |a, xs| {
                    let t = tag_at(a, xs[1], Kind::Free);
                    a.tags.get_mut(t).lnext = t;
                },
            ),
        ];
        for (name, expected, corrupt) in cases {
            assert_eq!(verdict(corrupt), expected, "{name}");
        }
    }
}
