//! The arena's spans: adding one in address order, and taking out an
//! imported one that is wholly free, for release to the source.

use allocator_api2::alloc::Allocator;

use crate::arena::Arena;
use crate::error::VmemError;
use crate::tag::{Kind, NIL};

impl<A: Allocator + Clone> Arena<A> {
    /// Adds `[base, base + size)` as a span of `kind`, wholly free (the seed's
    /// `vmem_add1`), in address order. Needs [`reserve`](Self::reserve).
    pub fn add_span(&mut self, base: usize, size: usize, kind: Kind) -> Result<(), VmemError> {
        let bad = |what| VmemError::InvalidSpan {
            arena: self.name,
            base,
            size,
            what,
        };
        let qmask = self.quantum() - 1;
        if size == 0 {
            return Err(bad("the span is empty"));
        }
        if (base | size) & qmask != 0 {
            return Err(bad("base and size must be multiples of the quantum"));
        }
        let Some(end) = base.checked_add(size - 1) else {
            return Err(bad("the span wraps past the end of the address space"));
        };
        // Find the first span above, checking the one below for overlap.
        // Spans imported one after another mostly come in address order,
        // up or down: a span above the last one, or below the first, is
        // placed without walking the list.
        let (mut below, mut above) = (NIL, self.span_head);
        if self.span_tail != NIL && self.tags.get(self.span_tail).start < base {
            (below, above) = (self.span_tail, NIL);
        }
        while above != NIL && self.tags.get(above).start < base {
            below = above;
            above = self.tags.get(above).lnext;
        }
        if below != NIL && self.tags.get(below).end() >= base {
            return Err(bad("the span overlaps a span of the arena"));
        }
        if above != NIL && self.tags.get(above).start <= end {
            return Err(bad("the span overlaps a span of the arena"));
        }
        let span = self.tags.take(kind, base, size);
        {
            let tag = self.tags.get_mut(span);
            tag.lnext = above;
            tag.lprev = below;
        }
        self.join_spans(below, span, above, span);
        self.link_before(span, above);
        let seg = self.tags.take(Kind::Free, base, size);
        self.link_before(seg, above);
        self.file_free(seg);
        self.total += size;
        self.n_spans += 1;
        if kind == Kind::Span {
            self.imported += size;
        }
        Ok(())
    }

    /// Takes span tag `span` out of the span list and the address-ordered
    /// list, and out of the arena's totals; its segments are gone already.
    pub(super) fn remove_span(&mut self, span: u32) {
        let (below, above, size) = {
            let tag = self.tags.get(span);
            (tag.lprev, tag.lnext, tag.size)
        };
        self.join_spans(below, above, above, below);
        self.unlink(span);
        self.total -= size;
        self.imported -= size;
        self.n_spans -= 1;
    }

    /// Makes `next` follow span `below` and `prev` precede span `above` in
    /// the span list, where [`NIL`] for `below` or `above` stands for the
    /// list's head or tail.
    fn join_spans(&mut self, below: u32, next: u32, above: u32, prev: u32) {
        match below {
            NIL => self.span_head = next,
            b => self.tags.get_mut(b).lnext = next,
        }
        match above {
            NIL => self.span_tail = prev,
            a => self.tags.get_mut(a).lprev = prev,
        }
    }

    /// Takes out the first imported span at or above `from` that is wholly
    /// free, for the caller to release to the source. A free releases a
    /// span the moment it is wholly free, so the only ones left are spans
    /// imported for a constrained request that they could not satisfy.
    /// Walks the span list: for the failure path only.
    pub fn take_free_span(&mut self, from: usize) -> Option<(usize, usize)> {
        let mut span = self.span_head;
        while span != NIL {
            let tag = *self.tags.get(span);
            // A span tag is followed by the first segment that tiles it.
            if tag.start >= from
                && tag.is(Kind::Span)
                && self.tags.is_free(tag.next)
                && self.tags.get(tag.next).size == tag.size
            {
                self.unfile_free(tag.next);
                self.unlink(tag.next);
                self.remove_span(span);
                return Some((tag.start, tag.size));
            }
            span = tag.lnext;
        }
        None
    }
}
