//! Making and unmaking slabs: pages, header and free list, `init` on every
//! buffer (UMA `slab_zalloc`, illumos `kmem_slab_create`), giving the memory
//! back, and growing the slab hash. All of it runs without the keg lock.

use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use kmem_sys::PageSource;

use crate::error::SlabError;
use crate::hash::SlabHash;
use crate::keg::Keg;
use crate::layout::Placement;
use crate::slab::Slab;

impl<S: PageSource, A: Allocator + Clone> Keg<S, A> {
    /// Doubles the hash outside the lock (UMA `zone_timeout`'s staging).
    #[cold]
    pub(crate) fn grow_hash(&self, len: usize) {
        // A failed metadata allocation only leaves chains longer; lookups
        // stay correct, so it is not an error.
        let Some(new) = SlabHash::with_len(len, self.layout.slab_align, self.alloc.clone()) else {
            return;
        };
        let mut st = self.state.lock();
        if st.hash.len() >= len {
            return;
        }
        let old = st.hash.rehash_into(new);
        drop(st);
        drop(old);
    }

    /// Builds a slab outside the lock (UMA `slab_zalloc`, illumos
    /// `kmem_slab_create`): pages, header, free list, then `init` on every
    /// buffer; on failure everything is given back.
    #[cold]
    pub(crate) fn create_slab(&self, colour: usize) -> Result<NonNull<Slab>, SlabError> {
        let l = &self.layout;
        let mem = self
            .source
            .alloc_pages(l.slab_size, l.slab_align)
            .map_err(|source| SlabError::Pages {
                keg: self.name,
                size: l.slab_size,
                source,
            })?;
        let (hdr, bitmap) = match l.placement {
            // SAFETY: both offsets lie inside the slab's page.
            Placement::OnPage => unsafe {
                (
                    mem.add(l.header_offset).cast(),
                    mem.add(l.bitmap_offset).cast(),
                )
            },
            Placement::OffPage => match self.alloc.allocate(l.header_layout()) {
                Ok(h) => {
                    let h = h.cast::<u8>();
                    // SAFETY: the bitmap follows the header inside the block.
                    (h.cast(), unsafe {
                        h.add(core::mem::size_of::<Slab>()).cast()
                    })
                }
                Err(_) => {
                    // SAFETY: the pages just allocated, unused.
                    unsafe { self.source.free_pages(mem, l.slab_size, l.slab_align) };
                    return Err(SlabError::Metadata {
                        keg: self.name,
                        size: l.header_layout().size(),
                    });
                }
            },
        };
        // SAFETY: header, bitmap and buffers are ours and sized by the layout.
        unsafe { Slab::create(hdr, bitmap, self.id, mem, colour, l) };
        if let Some(init) = &self.init {
            // SAFETY: just written.
            let s = unsafe { hdr.as_ref() };
            for i in 0..l.bufs_per_slab {
                let buf = s.buf(i, l.chunk_size);
                if !init(buf) {
                    if let Some(fini) = &self.fini {
                        (0..i).for_each(|j| fini(s.buf(j, l.chunk_size)));
                    }
                    // SAFETY: the slab was never published.
                    unsafe { self.release_slab_memory(hdr) };
                    return Err(SlabError::InitFailed {
                        keg: self.name,
                        addr: buf.as_ptr() as usize,
                    });
                }
            }
        }
        Ok(hdr)
    }

    /// Gives a slab's header and pages back; `fini` must already have run.
    ///
    /// # Safety
    /// `slab` is a live header of this keg on no list and not in the hash;
    /// nothing refers to it or its buffers afterwards.
    pub(crate) unsafe fn release_slab_memory(&self, slab: NonNull<Slab>) {
        let l = &self.layout;
        // SAFETY: live header, read before its memory goes.
        let mem = unsafe { slab.as_ref() }.mem;
        if l.placement == Placement::OffPage {
            // SAFETY: the header block came from `self.alloc` with this layout.
            unsafe { self.alloc.deallocate(slab.cast(), l.header_layout()) };
        }
        // SAFETY: the slab's pages, from this source with these arguments.
        unsafe { self.source.free_pages(mem, l.slab_size, l.slab_align) };
    }
}
