//! The consolidator's state (illumos `kmem_defrag_t`): pending moves keyed
//! by address, per-slab marks, the dead-slab list and the adaptive
//! candidate threshold; and the policy tests on them.

use core::ptr::NonNull;
use std::collections::{HashMap, VecDeque};

use kmem_slab::{KegStats, SlabId, SlabInfo};

use crate::{DISBELIEF, FRAG_DENOM, FRAG_MINSLABS, FRAG_NUMER, VOID_FRACTION};

/// How a move was asked for (illumos `KMM_DESPERATE`, `KMM_NOTIFY`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// From a defragment-now call: any partial slab is a candidate.
    pub desperate: bool,
    /// From [`move_notify`](crate::Consolidator::move_notify).
    pub notify: bool,
}

/// A buffer of the keg that the consolidator's state names: the old or new
/// buffer of a pending move, a buffer named by `move_notify`, or the one
/// that got a slab marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buf(pub NonNull<u8>);

// SAFETY: holding a `Buf` gives no access to the buffer; it is an address
// with its provenance, kept under the consolidator lock. Whichever thread
// takes a move from the state reaches the buffers under the move's rules
// (the source slab pinned, the destination the consolidator's own), and a
// notified buffer only goes to the keg's lookups until its move is queued.
unsafe impl Send for Buf {}

impl Buf {
    /// The address, the key of the pending map and queue.
    pub fn addr(self) -> usize {
        self.0.addr().get()
    }
}

/// One pending move (illumos `kmem_move_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub from: Buf,
    /// A raw destination buffer, taken from the keg when the move was
    /// queued so no later move picks it too.
    pub to: Buf,
    pub slab: SlabId,
    pub flags: Flags,
}

/// What the consolidator remembers of one slab (illumos `slab_flags &
/// KMEM_SLAB_NOMOVE`, `slab_later_count`, `slab_stuck_offset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    pub nomove: bool,
    pub later: u32,
    /// The buffer that got the slab marked (`slab_stuck_offset`).
    pub stuck: Option<Buf>,
}

/// Everything the consolidator lock guards.
#[derive(Default)]
pub(crate) struct Defrag {
    /// Moves queued or running, by old-buffer address (`kmd_moves_pending`).
    pub pending: HashMap<usize, Pending>,
    /// Old-buffer addresses of pending moves not yet started.
    pub queue: VecDeque<usize>,
    /// Buffers named by `move_notify`, for the thread.
    pub notify: VecDeque<Buf>,
    pub marks: HashMap<SlabId, Mark>,
    /// Source slabs of finished moves, pinned until no move is pending
    /// (`kmd_deadlist`): an emptied one is freed only then.
    pub dead: Vec<SlabId>,
    /// Candidate threshold numerator over [`VOID_FRACTION`]
    /// (`kmd_reclaim_numer`), 1..=7.
    pub reclaim_numer: usize,
    pub scans: usize,
    pub slabs_sought: usize,
    pub slabs_found: usize,
    /// Moves being run right now.
    pub running: usize,
    pub scan_due: bool,
    pub shutdown: bool,
}

impl Defrag {
    pub fn new() -> Self {
        Defrag {
            reclaim_numer: 1,
            ..Defrag::default()
        }
    }

    /// Nothing queued, nothing running.
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.notify.is_empty() && self.running == 0 && !self.scan_due
    }

    /// illumos `kmem_slab_is_reclaimable`.
    pub fn reclaimable(&self, s: &SlabInfo, flags: Flags) -> bool {
        let (refcnt, chunks) = (s.allocated, s.capacity);
        if flags.desperate {
            return refcnt < chunks;
        }
        if self.marks.get(&s.id).is_some_and(|m| m.nomove) {
            return false;
        }
        if refcnt == 1 && refcnt < chunks {
            return true;
        }
        refcnt * VOID_FRACTION < chunks * self.reclaim_numer
    }

    /// illumos `kmem_adjust_reclaim_threshold`: `+1` makes candidates
    /// easier to find (up to 7/8), `-1` more selective (down to 1/8).
    pub fn adjust_threshold(&mut self, direction: i32) {
        if direction > 0 {
            if self.reclaim_numer < VOID_FRACTION - 1 {
                self.reclaim_numer += 1;
            }
        } else if self.reclaim_numer > 1 {
            self.reclaim_numer -= 1;
        }
    }

    /// illumos `kmem_slab_move_yes`: a move off `slab` worked (or the
    /// object went), so forget its refusals; a no-move mark goes only with
    /// the buffer that caused it.
    pub fn move_yes(&mut self, slab: SlabId, from: Buf) {
        let Some(m) = self.marks.get_mut(&slab) else {
            return;
        };
        if m.nomove {
            if m.stuck == Some(from) {
                self.marks.remove(&slab);
            }
        } else {
            self.marks.remove(&slab);
        }
    }

    /// illumos `kmem_slab_move_no`: mark a partial slab no-move because of
    /// `from`.
    pub fn move_no(&mut self, slab: &SlabInfo, from: Buf) {
        if !partial(slab) {
            return;
        }
        self.marks.insert(
            slab.id,
            Mark {
                nomove: true,
                later: 0,
                stuck: Some(from),
            },
        );
    }

    /// The `KMEM_CBRC_LATER` arm of `kmem_move_buffer`; true if it turned
    /// into a no (disbelief).
    pub fn move_later(&mut self, slab: &SlabInfo, from: Buf) -> bool {
        if !partial(slab) {
            return false;
        }
        let m = self.marks.entry(slab.id).or_default();
        m.later += 1;
        if m.later >= DISBELIEF {
            self.move_no(slab, from);
            return true;
        }
        if !m.nomove {
            m.stuck = Some(from);
        }
        false
    }

    /// Marks live only while their slab is partial (illumos clears them
    /// when a slab leaves the partial list); `still_stuck` says whether a
    /// mark's stuck buffer is still allocated (freeing it clears the mark,
    /// as `kmem_slab_free` does).
    pub fn refresh_marks(&mut self, partials: &[SlabInfo], still_stuck: impl Fn(Buf) -> bool) {
        self.marks.retain(|id, m| {
            partials.iter().any(|s| s.id == *id) && m.stuck.is_none_or(&still_stuck)
        });
    }
}

/// Some but not all buffers allocated.
pub(crate) fn partial(s: &SlabInfo) -> bool {
    s.allocated > 0 && s.allocated < s.capacity
}

/// illumos `kmem_cache_frag_threshold` and `kmem_cache_is_fragmented`: at
/// least [`FRAG_MINSLABS`] slabs in use, more than one partial, and more
/// than [`FRAG_NUMER`]/[`FRAG_DENOM`] of their buffers free. Empty slabs
/// (which illumos gives back at once and a keg keeps until reaped) are not
/// counted.
pub(crate) fn is_fragmented(k: &KegStats) -> bool {
    let used_slabs = k.slabs - k.empty_slabs;
    if used_slabs < FRAG_MINSLABS || k.partial_slabs <= 1 {
        return false;
    }
    let total = used_slabs * k.bufs_per_slab;
    let nfree = total.saturating_sub(k.bufs_in_use);
    nfree * FRAG_DENOM > total * FRAG_NUMER
}

#[cfg(test)]
mod tests {
    use core::num::NonZeroUsize;

    use super::*;

    /// A buffer that is never dereferenced: only its address matters.
    fn buf(addr: usize) -> Buf {
        Buf(NonNull::without_provenance(
            NonZeroUsize::new(addr).unwrap(),
        ))
    }

    fn info(allocated: usize, capacity: usize) -> SlabInfo {
        // SlabId has no public constructor: borrow one from a real keg.
        let keg = kmem_slab::Keg::builder("ids", 64, 8).build().unwrap();
        let p = keg.alloc().unwrap();
        let real = keg.slab_of(p).unwrap();
        SlabInfo {
            id: real,
            allocated,
            capacity,
            pinned: false,
        }
    }

    #[test]
    fn candidate_threshold_moves_between_one_and_seven_eighths() {
        let mut d = Defrag::new();
        let s = info(20, 64);
        let normal = Flags::default();
        assert!(!d.reclaimable(&s, normal), "20/64 is above 1/8");
        for _ in 0..10 {
            d.adjust_threshold(1);
        }
        assert_eq!(d.reclaim_numer, VOID_FRACTION - 1);
        assert!(d.reclaimable(&s, normal));
        assert!(!d.reclaimable(&info(60, 64), normal), "60/64 is above 7/8");
        for _ in 0..10 {
            d.adjust_threshold(-1);
        }
        assert_eq!(d.reclaim_numer, 1);
        assert!(d.reclaimable(&info(1, 64), normal), "one buffer always is");
        assert!(d.reclaimable(
            &info(63, 64),
            Flags {
                desperate: true,
                notify: false
            }
        ));
        assert!(!d.reclaimable(
            &info(64, 64),
            Flags {
                desperate: true,
                notify: false
            }
        ));
    }

    #[test]
    fn later_turns_into_no_after_disbelief() {
        let mut d = Defrag::new();
        let s = info(2, 64);
        for _ in 1..DISBELIEF {
            assert!(!d.move_later(&s, buf(0x1000)));
        }
        assert!(d.move_later(&s, buf(0x1000)));
        assert!(d.marks[&s.id].nomove);
        assert!(!d.reclaimable(&s, Flags::default()));
        // Another buffer moving does not clear the mark; the stuck one does.
        d.move_yes(s.id, buf(0x2000));
        assert!(d.marks[&s.id].nomove);
        d.move_yes(s.id, buf(0x1000));
        assert!(!d.marks.contains_key(&s.id));
    }

    #[test]
    fn fragmentation_needs_enough_slabs_and_free_buffers() {
        let keg = kmem_slab::Keg::builder("frag", 64, 8).build().unwrap();
        let mut k = keg.stats();
        k.bufs_per_slab = 64;
        k.slabs = FRAG_MINSLABS;
        k.empty_slabs = 0;
        k.partial_slabs = FRAG_MINSLABS;
        k.bufs_in_use = FRAG_MINSLABS * 64;
        assert!(!is_fragmented(&k), "nothing free");
        k.bufs_in_use = FRAG_MINSLABS * 56 - 1; // just over 1/8 free
        assert!(is_fragmented(&k));
        k.slabs = FRAG_MINSLABS - 1;
        k.partial_slabs = FRAG_MINSLABS - 1;
        k.bufs_in_use = 10;
        assert!(!is_fragmented(&k), "too few slabs");
    }
}
