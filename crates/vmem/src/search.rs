//! Where a request goes: the three placement policies' searches of the
//! free lists (instant fit, best fit) and of the address-ordered tags
//! (next fit), each answering with a [`Fit`] that `Arena::alloc` then
//! carves out.

use allocator_api2::alloc::Allocator;

use crate::arena::Arena;
use crate::fit::Request;
use crate::freelist::{instant_list, list_of};
use crate::tag::{Kind, NIL};

/// A free segment chosen for a request: its tag, the address the request
/// gets in it, and the free list it is on. The search found it on that
/// list, so `Arena::clip` need not work the list out again from the size
/// ([`list_of`]: a table load on the allocation's critical path, or bit
/// arithmetic behind a data-dependent branch).
pub(crate) struct Fit {
    pub tag: u32,
    pub at: usize,
    pub list: usize,
}

impl Fit {
    #[inline(always)]
    fn new(tag: u32, at: usize, list: usize) -> Self {
        Fit { tag, at, list }
    }
}

impl<A: Allocator + Clone> Arena<A> {
    /// The head of the first list whose members all hold `req.size`; with
    /// constraints, the first such head that satisfies them; then best fit.
    #[inline]
    pub(crate) fn instant_fit(&mut self, req: &Request) -> Option<Fit> {
        if req.plain {
            if let Some(fit) = self.instant_head(req.size) {
                return Some(fit);
            }
        } else {
            let mut from = instant_list(self.quanta(req.size));
            while let Some(list) = self.free.first_nonempty(from) {
                let head = self.free.head(list);
                let tag = self.tags.get(head);
                if let Some(x) = req.place(tag.start, tag.end()) {
                    return Some(Fit::new(head, x, list));
                }
                from = list + 1;
            }
        }
        self.counters.instant_fallbacks += 1;
        self.best_fit(req)
    }

    /// Instant fit for an unconstrained request of `size` (rounded) bytes:
    /// the head of the first non-empty list whose members all hold it, at
    /// its start, without the constraint arithmetic; `None` if no list
    /// has one.
    #[inline(always)]
    pub(crate) fn instant_head(&self, size: usize) -> Option<Fit> {
        let list = self.free.first_nonempty(instant_list(self.quanta(size)))?;
        let head = self.free.head(list);
        let tag = self.tags.get(head);
        debug_assert!(
            tag.size >= size,
            "vmem: list {list} holds a segment too small"
        );
        Some(Fit::new(head, tag.start, list))
    }

    /// The first fitting member of the smallest list that can hold the size,
    /// then of each larger non-empty list (the seed's `M_BESTFIT` scan).
    pub(crate) fn best_fit(&self, req: &Request) -> Option<Fit> {
        let mut from = list_of(self.quanta(req.size));
        while let Some(list) = self.free.first_nonempty(from) {
            let mut t = self.free.head(list);
            while t != NIL {
                let tag = self.tags.get(t);
                if tag.size >= req.size {
                    if req.plain {
                        return Some(Fit::new(t, tag.start, list));
                    }
                    if let Some(x) = req.place(tag.start, tag.end()) {
                        return Some(Fit::new(t, x, list));
                    }
                }
                t = tag.lnext;
            }
            from = list + 1;
        }
        None
    }

    /// The first place at or after the cursor where `req` fits, then,
    /// wrapping around, the first one before it: a roving pointer
    /// (Bonwick & Adams 2001), so a freed segment is not handed out again
    /// until the cursor has been round the arena.
    pub(crate) fn next_fit(&self, req: &Request) -> Option<Fit> {
        let fit = |t: u32, lo: usize| {
            let tag = self.tags.get(t);
            if !tag.is(Kind::Free) || tag.size < req.size || tag.end() < lo {
                return None;
            }
            let x = req.place(tag.start.max(lo), tag.end())?;
            Some(Fit::new(t, x, list_of(self.quanta(tag.size))))
        };
        // The rotor is a hint: a tag clipped in front of it (an aligned
        // placement, say) may reach past the cursor, so step back over
        // those first; before them every tag ends below the cursor.
        let mut t = match self.rotor {
            NIL => self.seg_head,
            r => r,
        };
        while t != NIL {
            let prev = self.tags.get(t).prev();
            if prev == NIL || self.tags.get(prev).end() < self.cursor {
                break;
            }
            t = prev;
        }
        while t != NIL {
            if let Some(f) = fit(t, self.cursor) {
                return Some(f);
            }
            t = self.tags.get(t).next;
        }
        // Wrapped: what starts below the cursor, whole.
        let mut t = self.seg_head;
        while t != NIL && self.tags.get(t).start < self.cursor {
            if let Some(f) = fit(t, 0) {
                return Some(f);
            }
            t = self.tags.get(t).next;
        }
        None
    }
}
