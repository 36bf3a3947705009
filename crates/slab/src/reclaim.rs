//! Giving slabs back: [`Keg::reap`] returns empty slabs to the page source
//! (UMA `keg_drain` under `zone_reclaim`, illumos `kmem_cache_reap` reaching
//! `kmem_slab_destroy`), and dropping a keg returns all of them (UMA
//! `keg_dtor`).

use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use kmem_sys::PageSource;

use crate::keg::Keg;
use crate::slab::Slab;

impl<S: PageSource, A: Allocator + Clone> Keg<S, A> {
    /// Returns every empty, unpinned slab to the page source, running `fini`
    /// on each of its buffers first; returns how many slabs went.
    ///
    /// The slabs are unlinked under the lock and freed after it is dropped,
    /// as `keg_drain` collects them on a private list first.
    pub fn reap(&self) -> usize {
        let mut st = self.state.lock();
        let mut batch: Option<NonNull<Slab>> = None;
        let mut n = 0;
        let mut p = st.bins.head(0);
        while let Some(mut slab) = p {
            // SAFETY: list members are live headers of this keg; the lock is
            // held. The next link is read before the slab leaves the list.
            let (next, pins) = unsafe { (slab.as_ref().next, slab.as_ref().pins) };
            p = next;
            if pins > 0 {
                continue;
            }
            // SAFETY: the slab is on list 0 and in the hash; once off both,
            // only this loop reaches it.
            unsafe {
                st.bins.remove(slab);
                st.hash.remove(slab);
                slab.as_mut().next = batch;
            }
            batch = Some(slab);
            n += 1;
        }
        st.slabs -= n;
        st.empty -= n;
        st.destroys += n as u64;
        drop(st);
        while let Some(slab) = batch {
            // SAFETY: unlinked above, so only this loop sees it now.
            batch = unsafe { slab.as_ref() }.next;
            // SAFETY: as above; no buffer of an empty slab is in use.
            unsafe { self.destroy_slab(slab) };
        }
        n
    }

    /// Runs `fini` over a slab's buffers and frees its memory.
    ///
    /// # Safety
    /// As for [`release_slab_memory`](Keg::release_slab_memory).
    unsafe fn destroy_slab(&self, slab: NonNull<Slab>) {
        if let Some(fini) = &self.fini {
            // SAFETY: a live header, owned by the caller now.
            let s = unsafe { slab.as_ref() };
            for i in 0..s.chunks as usize {
                fini(s.buf(i, self.layout.chunk_size));
            }
        }
        // SAFETY: the caller's contract.
        unsafe { self.release_slab_memory(slab) };
    }
}

impl<S: PageSource, A: Allocator + Clone> Drop for Keg<S, A> {
    /// Returns every slab, including those with buffers still out: those
    /// buffers die with the keg, as they do with UMA's `keg_dtor`.
    fn drop(&mut self) {
        let st = self.state.get_mut();
        let mut batch: Option<NonNull<Slab>> = None;
        for k in 0..=self.layout.bufs_per_slab {
            while let Some(mut slab) = st.bins.head(k) {
                // SAFETY: a live header on list k, in the hash; `&mut self`
                // means no one else can reach it.
                unsafe {
                    st.bins.remove(slab);
                    st.hash.remove(slab);
                    slab.as_mut().next = batch;
                }
                batch = Some(slab);
            }
        }
        while let Some(slab) = batch {
            // SAFETY: unlinked everywhere, so only this loop sees it now.
            batch = unsafe { slab.as_ref() }.next;
            // SAFETY: as above; the keg is going away.
            unsafe { self.destroy_slab(slab) };
        }
    }
}
