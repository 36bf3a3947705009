//! Looking inside a keg: statistics, the full invariant check, and the
//! slab-level questions a consolidator asks (illumos `kmem_move_buffers`,
//! `kmem_slab_allocated`, `kmem_slab_move_yes` and `KMEM_SLAB_MOVE_PENDING`).
//!
//! Every answer is taken by address through the hash, so a stale slab id or a
//! foreign pointer gets an error, never a read of memory the keg does not own.

use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use kmem_sys::PageSource;

use crate::error::SlabError;
use crate::keg::{Keg, State};
use crate::slab::Slab;
use crate::stats::KegStats;

/// Names a slab by the address of its first page. Stays valid until the slab
/// is reaped; [pin](Keg::pin_slab) it to keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlabId(usize);

impl SlabId {
    /// The slab's start address.
    pub fn addr(self) -> usize {
        self.0
    }
}

/// One slab as [`Keg::partial_slabs`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabInfo {
    /// The slab.
    pub id: SlabId,
    /// Buffers allocated (illumos `slab_refcnt`).
    pub allocated: usize,
    /// Buffers the slab holds.
    pub capacity: usize,
    /// Whether a [`pin`](Keg::pin_slab) keeps it from being reaped.
    pub pinned: bool,
}

impl<S: PageSource, A: Allocator + Clone> Keg<S, A> {
    /// A snapshot of the keg's figures.
    pub fn stats(&self) -> KegStats {
        let st = self.state.lock();
        let l = &self.layout;
        KegStats {
            name: self.name,
            buf_size: l.buf_size,
            chunk_size: l.chunk_size,
            slab_size: l.slab_size,
            bufs_per_slab: l.bufs_per_slab,
            placement: l.placement,
            slabs: st.slabs,
            partial_slabs: st.slabs - st.empty - st.full,
            full_slabs: st.full,
            empty_slabs: st.empty,
            bufs_in_use: st.in_use,
            bufs_free: st.slabs * l.bufs_per_slab - st.in_use,
            limit: st.limit_slabs.map(|s| s * l.bufs_per_slab),
            allocs: st.allocs,
            frees: st.frees,
            alloc_fails: st.fails,
            sleeps: st.sleeps,
            slab_creates: st.creates,
            slab_destroys: st.destroys,
            hash_size: st.hash.len(),
            hash_lookups: st.hash.lookups(),
            waste_bytes: st.slabs * l.waste_bytes(),
        }
    }

    /// Walks every slab and checks every invariant: header magic and owner,
    /// usage list = allocated count = bitmap population, free list against
    /// the bitmap, hash membership, and the keg's counters.
    pub fn check(&self) -> Result<(), SlabError> {
        let mut st = self.state.lock();
        let corrupt = |what: String| SlabError::Corrupt {
            keg: self.name,
            what,
        };
        if !st.bins.bitmap_consistent() {
            return Err(corrupt("usage-list bitmap disagrees with the lists".into()));
        }
        let (mut slabs, mut empty, mut full, mut in_use) = (0, 0, 0, 0);
        for k in 0..=self.layout.bufs_per_slab {
            let members: Vec<NonNull<Slab>> = st.bins.iter(k).collect();
            for slab in members {
                // SAFETY: list members are live headers; the lock is held.
                let s = unsafe { slab.as_ref() };
                if !s.magic_ok() || s.keg != self.id {
                    return Err(corrupt(format!("slab header {slab:p}: bad magic or owner")));
                }
                if s.bin as usize != k {
                    return Err(corrupt(format!(
                        "slab {:p} on list {k}, bin {}",
                        s.mem, s.bin
                    )));
                }
                s.verify(&self.layout).map_err(corrupt)?;
                if st.hash.find(s.mem.as_ptr() as usize) != Some(slab) {
                    return Err(corrupt(format!("slab {:p} missing from the hash", s.mem)));
                }
                slabs += 1;
                in_use += s.inuse as usize;
                empty += usize::from(k == 0);
                full += usize::from(k == self.layout.bufs_per_slab);
            }
        }
        let counted = (st.slabs, st.empty, st.full, st.in_use, st.hash.count());
        if counted != (slabs, empty, full, in_use, slabs) {
            return Err(corrupt(format!(
                "counters (slabs, empty, full, in use, hashed) {counted:?}, \
                 walk found {:?}",
                (slabs, empty, full, in_use, slabs)
            )));
        }
        Ok(())
    }

    /// The partial slabs, most-allocated first: the order allocation drains
    /// them, so a consolidator moves buffers out of the tail.
    pub fn partial_slabs(&self) -> Vec<SlabInfo> {
        let st = self.state.lock();
        let mut out = Vec::new();
        for k in (1..self.layout.bufs_per_slab).rev() {
            out.extend(st.bins.iter(k).map(|slab| {
                // SAFETY: list members are live headers; the lock is held.
                let s = unsafe { slab.as_ref() };
                SlabInfo {
                    id: SlabId(s.mem.as_ptr() as usize),
                    allocated: s.inuse as usize,
                    capacity: s.chunks as usize,
                    pinned: s.pins > 0,
                }
            }));
        }
        out
    }

    /// One slab's figures, as [`partial_slabs`](Self::partial_slabs) gives
    /// them, for a slab in any state (illumos reads `slab_refcnt` and
    /// `slab_chunks` when `kmem_move_buffer` rechecks a candidate).
    pub fn slab_info(&self, slab: SlabId) -> Result<SlabInfo, SlabError> {
        let mut st = self.state.lock();
        let s = self.find_slab(&mut st, slab)?;
        // SAFETY: a live header of this keg; the lock is held.
        let s = unsafe { s.as_ref() };
        Ok(SlabInfo {
            id: slab,
            allocated: s.inuse as usize,
            capacity: s.chunks as usize,
            pinned: s.pins > 0,
        })
    }

    /// The allocated buffers of `slab`, lowest address first.
    pub fn allocated_buffers(&self, slab: SlabId) -> Result<Vec<NonNull<u8>>, SlabError> {
        let mut st = self.state.lock();
        let s = self.find_slab(&mut st, slab)?;
        // SAFETY: a live header of this keg; the lock is held.
        let s = unsafe { s.as_ref() };
        Ok((0..s.chunks as usize)
            .filter(|&i| s.is_allocated(i))
            .map(|i| s.buf(i, self.layout.chunk_size))
            .collect())
    }

    /// The slab holding `ptr`, which must be a buffer start (allocated or
    /// not) of this keg.
    pub fn slab_of(&self, ptr: NonNull<u8>) -> Result<SlabId, SlabError> {
        let mut st = self.state.lock();
        self.locate(&mut st, ptr).map(|(s, _)| s)
    }

    /// Whether `ptr`, a buffer start of this keg, is allocated.
    pub fn is_allocated(&self, ptr: NonNull<u8>) -> Result<bool, SlabError> {
        let mut st = self.state.lock();
        self.locate(&mut st, ptr).map(|(_, a)| a)
    }

    /// Allocates from the most-allocated partial slab other than `avoid`,
    /// never from an empty or new slab (illumos `kmem_move_buffer`'s
    /// destination rule), or fails with [`SlabError::NoDestination`].
    pub fn alloc_avoiding(&self, avoid: SlabId) -> Result<NonNull<u8>, SlabError> {
        let mut st = self.state.lock();
        let mut limit = self.layout.bufs_per_slab;
        while let Some(k) = st.bins.top_below(limit).filter(|&k| k > 0) {
            let found = st.bins.iter(k).find(|slab| {
                // SAFETY: list members are live headers; the lock is held.
                unsafe { slab.as_ref() }.mem.as_ptr() as usize != avoid.0
            });
            if let Some(slab) = found {
                return self.take_from(&mut st, slab);
            }
            limit = k;
        }
        Err(SlabError::NoDestination {
            keg: self.name,
            avoid: avoid.0,
        })
    }

    /// Allocates from `slab` itself if it is partial (some but not all of
    /// its buffers allocated); `Ok(None)` if it is empty or full. A
    /// consolidator fills a slab it may not empty this way (illumos
    /// `kmem_slab_move_no` sorts such a slab first, where allocation takes
    /// from it).
    pub fn alloc_in(&self, slab: SlabId) -> Result<Option<NonNull<u8>>, SlabError> {
        let mut st = self.state.lock();
        let s = self.find_slab(&mut st, slab)?;
        // SAFETY: a live header of this keg; the lock is held.
        let (inuse, chunks) = unsafe { (s.as_ref().inuse, s.as_ref().chunks) };
        if inuse == 0 || inuse == chunks {
            return Ok(None);
        }
        self.take_from(&mut st, s).map(Some)
    }

    /// Keeps `slab` from being reaped even when empty, as illumos keeps a
    /// slab with moves pending; pins nest.
    pub fn pin_slab(&self, slab: SlabId) -> Result<(), SlabError> {
        let mut st = self.state.lock();
        let mut s = self.find_slab(&mut st, slab)?;
        // SAFETY: a live header of this keg; the lock is held.
        unsafe { s.as_mut().pins += 1 };
        Ok(())
    }

    /// Drops one [`pin`](Self::pin_slab); an empty slab becomes reapable
    /// again when the last pin goes.
    pub fn unpin_slab(&self, slab: SlabId) -> Result<(), SlabError> {
        let mut st = self.state.lock();
        let mut s = self.find_slab(&mut st, slab)?;
        // SAFETY: a live header of this keg; the lock is held.
        let s = unsafe { s.as_mut() };
        if s.pins == 0 {
            return Err(SlabError::Corrupt {
                keg: self.name,
                what: format!("unpin of slab {:#x}, which is not pinned", slab.0),
            });
        }
        s.pins -= 1;
        Ok(())
    }

    /// The buffer whose chunk holds `addr` (any byte of it, tag included)
    /// and whether it is allocated: illumos `kmem_findslab` plus the
    /// `kmem_error` arithmetic that finds the real start of a buffer from an
    /// address inside it. Fails for an address in no slab of this keg or in
    /// a slab's colour or header bytes.
    pub fn buffer_containing(&self, addr: usize) -> Result<(NonNull<u8>, bool), SlabError> {
        let mut st = self.state.lock();
        let key = addr & !(self.layout.slab_align - 1);
        let slab = st.hash.find(key).ok_or(SlabError::OutsideSlabs {
            keg: self.name,
            addr,
        })?;
        // SAFETY: a live header of this keg; the lock is held.
        let s = unsafe { slab.as_ref() };
        let chunk = self.layout.chunk_size;
        let first = s.buf(0, chunk).as_ptr() as usize;
        let i = addr.wrapping_sub(first) / chunk;
        if addr < first || i >= s.chunks as usize {
            return Err(self.bad_buf(
                crate::slab::BadBuf::Misaligned(addr.wrapping_sub(first) as isize),
                addr,
            ));
        }
        Ok((s.buf(i, chunk), s.is_allocated(i)))
    }

    /// Every free buffer of every slab, slab by slab: what a debugger's
    /// walk of the free lists (illumos `::kmem_verify`) checks.
    ///
    /// The result is allocated with the keg unlocked (the keg may be the
    /// one that serves that allocation) and filled under the lock.
    pub fn free_buffers(&self) -> Vec<NonNull<u8>> {
        let per = self.layout.bufs_per_slab;
        let mut out = Vec::new();
        loop {
            let want = {
                let st = self.state.lock();
                st.slabs * per - st.in_use
            };
            out.reserve(want);
            let st = self.state.lock();
            if st.slabs * per - st.in_use <= out.capacity() {
                self.collect_free(&st, &mut out);
                return out;
            }
        }
    }

    fn collect_free(&self, st: &State<A>, out: &mut Vec<NonNull<u8>>) {
        for k in 0..self.layout.bufs_per_slab {
            for slab in st.bins.iter(k) {
                // SAFETY: list members are live headers; the lock is held.
                let s = unsafe { slab.as_ref() };
                out.extend(
                    (0..s.chunks as usize)
                        .filter(|&i| !s.is_allocated(i))
                        .map(|i| s.buf(i, self.layout.chunk_size)),
                );
            }
        }
    }

    fn find_slab(&self, st: &mut State<A>, id: SlabId) -> Result<NonNull<Slab>, SlabError> {
        st.hash.find(id.0).ok_or(SlabError::UnknownSlab {
            keg: self.name,
            slab: id.0,
        })
    }

    /// The slab of buffer `ptr` and whether the buffer is allocated.
    fn locate(&self, st: &mut State<A>, ptr: NonNull<u8>) -> Result<(SlabId, bool), SlabError> {
        let addr = ptr.as_ptr() as usize;
        let key = addr & !(self.layout.slab_align - 1);
        let outside = SlabError::OutsideSlabs {
            keg: self.name,
            addr,
        };
        let slab = st.hash.find(key).ok_or(outside)?;
        // SAFETY: a live header of this keg; the lock is held.
        let s = unsafe { slab.as_ref() };
        let i = s
            .index_of(addr, self.layout.chunk_size)
            .map_err(|e| self.bad_buf(e, addr))?;
        Ok((SlabId(key), s.is_allocated(i)))
    }
}
