//! The consolidator's work, shared by its thread and by callers of
//! [`Consolidator::defragment`](crate::Consolidator::defragment):
//! choosing candidate slabs and queueing moves (illumos `kmem_move_buffers`,
//! `kmem_move_begin`), running one move (`kmem_move_buffer`), ending it and
//! freeing dead slabs (`kmem_move_end`), notifications
//! (`kmem_cache_move_notify_task`) and the periodic scan
//! (`kmem_cache_scan`).
//!
//! Lock order: the consolidator lock, then the keg lock (taken inside keg
//! calls). Neither is held across a client call (constructor, destructor,
//! hunt, move callback).

use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::collections::HashSet;

use kmem_slab::{SlabError, SlabId};
use kmem_sys::sync::{Condvar, Mutex};

use crate::client::Client;
use crate::defrag::{Buf, Defrag, Flags, Pending, is_fragmented};
use crate::reply::{Move, MoveFn};
use crate::stats::Counters;
use crate::{RECLAIM_MAX_SLABS, RECLAIM_SCAN_RANGE};

/// What a consolidator's thread and its handle share.
pub(crate) struct Shared<C: Client> {
    pub client: C,
    pub mover: Box<MoveFn>,
    pub state: Mutex<Defrag>,
    /// Wakes the thread: work queued, scan asked for, shutdown.
    pub wake: Condvar,
    /// Wakes [`wait_idle`](crate::Consolidator::wait_idle) callers.
    pub idle: Condvar,
    pub stats: Counters,
}

/// How queueing one move went.
enum Begin {
    Queued,
    /// Already pending, or nothing to do.
    Skipped,
    /// No partial slab to take a destination from (`kms_endscan_nomem`).
    NoDestination,
    /// The destination came from a slab this scan is emptying: the two ends
    /// of the partial list met (`sp == avl_first` in the seed).
    MetFront,
    /// The source slab went away while unlocked (`kms_endscan_slab_destroyed`).
    SlabGone,
}

fn bump(c: &core::sync::atomic::AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl<C: Client> Shared<C> {
    /// illumos `kmem_move_buffers`: walks the partial slabs from the
    /// least-used end, scanning at most `max_scan` and taking at most
    /// `max_slabs` candidates (`usize::MAX` for all; desperate takes all),
    /// and queues a move for every allocated buffer of each candidate.
    /// Returns the candidates found, or `None` if the scan was cut short.
    pub fn move_buffers(&self, max_scan: usize, max_slabs: usize, flags: Flags) -> Option<usize> {
        let keg = self.client.keg();
        let partials = keg.partial_slabs();
        if partials.len() <= 1 {
            return Some(0);
        }
        let (max_scan, max_slabs) = if flags.desperate {
            (usize::MAX, usize::MAX)
        } else {
            (max_scan, max_slabs)
        };
        self.state
            .lock()
            .refresh_marks(&partials, |b| keg.is_allocated(b.0).unwrap_or(false));
        let mut sources = HashSet::new();
        let mut found = 0;
        // Index 0 is the most-used slab, where destinations come from.
        for slab in partials.iter().skip(1).rev().take(max_scan) {
            if found >= max_slabs {
                break;
            }
            if !self.state.lock().reclaimable(slab, flags) {
                continue;
            }
            found += 1;
            sources.insert(slab.id);
            let Ok(bufs) = keg.allocated_buffers(slab.id) else {
                return None;
            };
            for buf in bufs {
                match self.begin(slab.id, Buf(buf), flags, &sources) {
                    Begin::Queued | Begin::Skipped => {}
                    Begin::NoDestination => {
                        bump(&self.stats.no_destination);
                        return None;
                    }
                    Begin::SlabGone => return None,
                    Begin::MetFront => return Some(found),
                }
            }
        }
        Some(found)
    }

    /// illumos `kmem_move_begin`: registers a pending move of `from` with a
    /// destination buffer taken now, and queues it.
    fn begin(&self, slab: SlabId, from: Buf, flags: Flags, sources: &HashSet<SlabId>) -> Begin {
        let keg = self.client.keg();
        let mut st = self.state.lock();
        if let Some(p) = st.pending.get_mut(&from.addr()) {
            p.flags.desperate |= flags.desperate;
            bump(&self.stats.already_pending);
            return Begin::Skipped;
        }
        // A slab marked no-move is filled first (it sorts as the most used
        // in the seed), then the most-used partial slab.
        let marked: Vec<SlabId> = st
            .marks
            .iter()
            .filter(|(id, m)| m.nomove && **id != slab && !sources.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let mut to = marked
            .into_iter()
            .find_map(|id| keg.alloc_in(id).ok().flatten());
        if to.is_none() {
            match keg.alloc_avoiding(slab) {
                Ok(p) => to = Some(p),
                Err(SlabError::NoDestination { .. }) => return Begin::NoDestination,
                Err(_) => return Begin::NoDestination,
            }
        }
        let to = to.expect("set above");
        let met = keg.slab_of(to).is_ok_and(|d| sources.contains(&d));
        if met || keg.pin_slab(slab).is_err() {
            // SAFETY: a raw buffer just taken from this keg, never handed out.
            let r = unsafe { keg.free(to) };
            debug_assert!(r.is_ok(), "{r:?}");
            return if met {
                Begin::MetFront
            } else {
                Begin::SlabGone
            };
        }
        st.pending.insert(
            from.addr(),
            Pending {
                from,
                to: Buf(to),
                slab,
                flags,
            },
        );
        st.queue.push_back(from.addr());
        Begin::Queued
    }

    /// Runs queued moves on the calling thread until the queue is empty;
    /// returns how many ran.
    pub fn drain_queue(&self) -> usize {
        let mut n = 0;
        loop {
            let p = {
                let mut st = self.state.lock();
                let Some(from) = st.queue.pop_front() else {
                    break;
                };
                st.running += 1;
                st.pending[&from]
            };
            self.run(p);
            n += 1;
            let mut st = self.state.lock();
            st.running -= 1;
            if st.idle() {
                self.idle.notify_all();
            }
        }
        n
    }

    /// illumos `kmem_move_buffer`: recheck, construct the destination, ask
    /// the client, act on the reply, end the move.
    fn run(&self, p: Pending) {
        let keg = self.client.keg();
        let (from, to) = (p.from.0, p.to.0);
        // The source slab is pinned, so it is still there.
        let info = keg.slab_info(p.slab).expect("a pinned slab stays");
        if !self.state.lock().reclaimable(&info, p.flags) {
            bump(&self.stats.no_longer_reclaimable);
            self.free_raw(to);
            return self.end(p);
        }
        if !keg.is_allocated(from).unwrap_or(false) {
            bump(&self.stats.hunt_found_slab);
            self.free_raw(to);
            return self.end(p);
        }
        if !self.client.construct(to) {
            bump(&self.stats.constructor_fail);
            self.free_raw(to);
            return self.end(p);
        }
        bump(&self.stats.callbacks);
        if p.flags.notify {
            bump(&self.stats.notify_callbacks);
        }
        let reply = (self.mover)(from, to, keg.layout().buf_size);
        match reply {
            Move::Yes => {
                bump(&self.stats.yes);
                self.free_constructed(from);
                self.state.lock().move_yes(p.slab, p.from);
                return self.end(p);
            }
            Move::No => {
                bump(&self.stats.no);
                let info = keg.slab_info(p.slab).expect("pinned");
                self.state.lock().move_no(&info, p.from);
            }
            Move::Later => {
                bump(&self.stats.later);
                let info = keg.slab_info(p.slab).expect("pinned");
                if self.state.lock().move_later(&info, p.from) {
                    bump(&self.stats.disbelief);
                }
            }
            Move::DontNeed => {
                bump(&self.stats.dont_need);
                self.free_constructed(from);
                self.state.lock().move_yes(p.slab, p.from);
            }
            Move::DontKnow => {
                bump(&self.stats.dont_know);
                if self.client.hunt(from) {
                    bump(&self.stats.hunt_found);
                    self.free_constructed(from);
                    self.state.lock().move_yes(p.slab, p.from);
                }
            }
        }
        self.free_constructed(to);
        self.end(p);
    }

    /// illumos `kmem_move_end`: the move is no longer pending; its slab
    /// joins the dead list, and when no move is pending any more every slab
    /// on it is unpinned and the emptied ones are freed.
    fn end(&self, p: Pending) {
        let dead = {
            let mut st = self.state.lock();
            let gone = st.pending.remove(&p.from.addr());
            debug_assert!(gone.is_some(), "move of {:p} was not pending", p.from.0);
            st.dead.push(p.slab);
            if !st.pending.is_empty() {
                return;
            }
            core::mem::take(&mut st.dead)
        };
        self.free_dead(dead);
    }

    fn free_dead(&self, mut dead: Vec<SlabId>) {
        let keg = self.client.keg();
        dead.sort_unstable();
        let mut emptied = 0;
        let mut last = None;
        for id in dead {
            if last != Some(id) {
                last = Some(id);
                emptied += u64::from(keg.slab_info(id).is_ok_and(|s| s.allocated == 0));
            }
            let r = keg.unpin_slab(id);
            debug_assert!(r.is_ok(), "{r:?}");
        }
        if emptied > 0 {
            let freed = keg.reap() as u64;
            self.stats
                .dead_slabs_freed
                .fetch_add(emptied, Ordering::Relaxed);
            self.stats
                .slabs_reclaimed
                .fetch_add(freed, Ordering::Relaxed);
        }
    }

    /// illumos `kmem_cache_move_notify_task`: `buf` may be movable now.
    pub fn notify_task(&self, buf: Buf) {
        let keg = self.client.keg();
        let Ok(slab) = keg.slab_of(buf.0) else {
            return;
        };
        if !keg.is_allocated(buf.0).unwrap_or(false) {
            return;
        }
        let many = keg.stats().partial_slabs > 1;
        let mut st = self.state.lock();
        let refused = st.marks.get(&slab).is_some_and(|m| m.nomove || m.later > 0);
        st.move_yes(slab, buf);
        drop(st);
        if many && refused {
            let flags = Flags {
                desperate: false,
                notify: true,
            };
            let _ = self.begin(slab, buf, flags, &HashSet::new());
        }
    }

    /// illumos `kmem_cache_scan`: if the keg is fragmented, queue moves for
    /// up to [`RECLAIM_MAX_SLABS`] candidates among the last
    /// [`RECLAIM_SCAN_RANGE`] partial slabs, and every
    /// `RECLAIM_SCAN_RANGE` scans adjust the candidate threshold by how
    /// easy candidates were to find; otherwise reset it.
    pub fn scan(&self) {
        bump(&self.stats.scans);
        if !is_fragmented(&self.client.keg().stats()) {
            self.state.lock().reclaim_numer = 1;
            return;
        }
        let found = self.move_buffers(RECLAIM_SCAN_RANGE, RECLAIM_MAX_SLABS, Flags::default());
        let mut st = self.state.lock();
        if let Some(found) = found {
            st.slabs_sought += RECLAIM_MAX_SLABS;
            st.slabs_found += found;
        }
        st.scans += 1;
        if st.scans >= RECLAIM_SCAN_RANGE {
            st.scans = 0;
            if st.slabs_found == st.slabs_sought {
                st.adjust_threshold(-1);
            } else if st.slabs_found * 2 < st.slabs_sought {
                st.adjust_threshold(1);
            }
            st.slabs_sought = 0;
            st.slabs_found = 0;
        }
    }

    /// illumos `kmem_cache_defrag`: every partial slab but the first is a
    /// candidate.
    pub fn defrag(&self) {
        let n = self.client.keg().stats().partial_slabs;
        if n > 1 {
            let flags = Flags {
                desperate: true,
                notify: false,
            };
            self.move_buffers(n, usize::MAX, flags);
            bump(&self.stats.defrags);
        }
    }

    fn free_raw(&self, buf: NonNull<u8>) {
        // SAFETY: a buffer of this keg the consolidator owns and never
        // handed out.
        let r = unsafe { self.client.keg().free(buf) };
        debug_assert!(r.is_ok(), "{r:?}");
    }

    fn free_constructed(&self, buf: NonNull<u8>) {
        self.client.destroy(buf);
        self.free_raw(buf);
    }
}
