//! One slab: its header, its free list and its allocation bitmap.
//!
//! The header is the same struct on-page and off-page (UMA `uma_slab`,
//! illumos `kmem_slab_t`); only where it lives differs. Free buffers form a
//! LIFO list linked through a word of each free chunk (illumos' embedded
//! `kmem_bufctl_t` at `cache_bufctl`), and a bitmap with one bit per buffer
//! says which are allocated, so a double free is caught before it can touch
//! the list. All of it is reached only under the keg lock.

use core::ptr::{self, NonNull};

use crate::layout::SlabLayout;

/// Mixed with a header's own address into [`Slab::magic`], so a stray
/// address whose would-be header position holds anything else is refused.
pub(crate) const SLAB_MAGIC: usize = 0x51ab_4ead_c0de_5eed_u64 as usize;

/// A slab header. Every field is guarded by the owning keg's lock.
#[repr(C)]
pub(crate) struct Slab {
    /// `SLAB_MAGIC ^ address of this header`.
    pub magic: usize,
    /// Id of the owning keg.
    pub keg: usize,
    /// Start of the slab's pages (the hash key and the slab id).
    pub mem: NonNull<u8>,
    /// First buffer: `mem + colour`.
    pub base: NonNull<u8>,
    /// Head of the free list (a buffer address) or null.
    pub free: *mut u8,
    /// The allocation bitmap: bit i set = buffer i allocated.
    pub bitmap: NonNull<u64>,
    /// Buffers allocated (illumos `slab_refcnt`).
    pub inuse: u32,
    /// Buffers in the slab.
    pub chunks: u32,
    /// Holds by [`Keg::pin_slab`](crate::Keg::pin_slab); reap skips pinned
    /// empty slabs (illumos `KMEM_SLAB_MOVE_PENDING`).
    pub pins: u32,
    /// The usage list this slab is on, which is always `inuse`.
    pub bin: u32,
    /// Previous slab on the usage list.
    pub prev: Option<NonNull<Slab>>,
    /// Next slab on the usage list (or on a reap batch being freed).
    pub next: Option<NonNull<Slab>>,
    /// Next slab on the same hash chain.
    pub hnext: Option<NonNull<Slab>>,
}

/// Why an address is not a buffer of a slab.
pub(crate) enum BadBuf {
    /// Not at a chunk boundary inside the buffer area; the signed offset from
    /// the first buffer.
    Misaligned(isize),
    /// A buffer start, but the buffer is free.
    Free,
}

impl Slab {
    /// Writes a header for a fresh slab at `hdr` and links every buffer into
    /// its free list, lowest address first.
    ///
    /// # Safety
    /// `hdr` must be valid for a `Slab` write, `bitmap` for
    /// `layout.bitmap_words` words, and `base` for the slab's buffers, all
    /// owned by the caller.
    pub unsafe fn create(
        hdr: NonNull<Slab>,
        bitmap: NonNull<u64>,
        keg: usize,
        mem: NonNull<u8>,
        colour: usize,
        layout: &SlabLayout,
    ) {
        // SAFETY: colour + buffers fit in the slab (layout invariant).
        let base = unsafe { mem.add(colour) };
        let n = layout.bufs_per_slab;
        let mut next: *mut u8 = ptr::null_mut();
        for i in (0..n).rev() {
            // SAFETY: buffer i lies inside the slab; its link word is
            // word-aligned and inside its chunk.
            unsafe {
                let buf = base.as_ptr().add(i * layout.chunk_size);
                buf.add(layout.link_offset).cast::<*mut u8>().write(next);
                next = buf;
            }
        }
        // SAFETY: the caller gives us the bitmap words.
        unsafe { ptr::write_bytes(bitmap.as_ptr(), 0, layout.bitmap_words) };
        let slab = Slab {
            magic: SLAB_MAGIC ^ hdr.as_ptr() as usize,
            keg,
            mem,
            base,
            free: next,
            bitmap,
            inuse: 0,
            chunks: n as u32,
            pins: 0,
            bin: 0,
            prev: None,
            next: None,
            hnext: None,
        };
        // SAFETY: the caller gives us `hdr`.
        unsafe { hdr.write(slab) };
    }

    /// Whether this header's magic matches its address.
    #[inline]
    pub fn magic_ok(&self) -> bool {
        self.magic == SLAB_MAGIC ^ (self as *const Slab as usize)
    }

    /// Address of buffer `i`.
    #[inline]
    pub fn buf(&self, i: usize, chunk: usize) -> NonNull<u8> {
        // SAFETY: callers pass i < chunks, so this stays inside the slab.
        unsafe { self.base.add(i * chunk) }
    }

    /// Whether buffer `i` is allocated.
    #[inline]
    pub fn is_allocated(&self, i: usize) -> bool {
        // SAFETY: i < chunks, so word i / 64 is inside the bitmap.
        let w = unsafe { *self.bitmap.as_ptr().add(i / 64) };
        w & (1 << (i % 64)) != 0
    }

    #[inline]
    fn flip(&mut self, i: usize) {
        // SAFETY: i < chunks, so word i / 64 is inside the bitmap, which only
        // this slab (under the keg lock) touches.
        unsafe { *self.bitmap.as_ptr().add(i / 64) ^= 1 << (i % 64) };
    }

    /// The index of the buffer starting at `addr`, or why there is none.
    #[inline]
    pub fn index_of(&self, addr: usize, chunk: usize) -> Result<usize, BadBuf> {
        let off = addr.wrapping_sub(self.base.as_ptr() as usize);
        let i = off / chunk;
        if !off.is_multiple_of(chunk) || i >= self.chunks as usize {
            return Err(BadBuf::Misaligned(off as isize));
        }
        Ok(i)
    }

    /// Like [`index_of`](Self::index_of) but also refuses a free buffer.
    #[inline]
    pub fn allocated_index(&self, addr: usize, chunk: usize) -> Result<usize, BadBuf> {
        let i = self.index_of(addr, chunk)?;
        if !self.is_allocated(i) {
            return Err(BadBuf::Free);
        }
        Ok(i)
    }

    /// Takes the first free buffer. The slab must have one.
    ///
    /// The link read from the buffer is range-checked (always) and checked
    /// against the bitmap (debug builds); `Err(link)` reports a link that was
    /// overwritten while its buffer was free, leaving the slab unchanged.
    #[inline]
    pub fn pop(&mut self, layout: &SlabLayout) -> Result<NonNull<u8>, usize> {
        debug_assert!(self.inuse < self.chunks);
        let buf = self.free;
        // SAFETY: the free list only holds buffers of this slab, and the slab
        // has a free buffer.
        let next = unsafe { buf.add(layout.link_offset).cast::<*mut u8>().read() };
        if !next.is_null() {
            let ok = match self.index_of(next as usize, layout.chunk_size) {
                Ok(j) => !cfg!(debug_assertions) || !self.is_allocated(j),
                Err(_) => false,
            };
            if !ok {
                return Err(next as usize);
            }
        }
        let i = (buf as usize - self.base.as_ptr() as usize) / layout.chunk_size;
        debug_assert!(!self.is_allocated(i));
        self.flip(i);
        self.free = next;
        self.inuse += 1;
        // SAFETY: the list held a buffer.
        Ok(unsafe { NonNull::new_unchecked(buf) })
    }

    /// Puts allocated buffer `i` (at `buf`) back on the free list.
    #[inline]
    pub fn push(&mut self, buf: NonNull<u8>, i: usize, layout: &SlabLayout) {
        debug_assert!(self.is_allocated(i));
        // SAFETY: `buf` is buffer i of this slab, now free and ours to link.
        unsafe {
            buf.as_ptr()
                .add(layout.link_offset)
                .cast::<*mut u8>()
                .write(self.free)
        };
        self.flip(i);
        self.free = buf.as_ptr();
        self.inuse -= 1;
    }

    /// Verifies the free list against the bitmap and counts; `Err` says what
    /// is wrong.
    pub fn verify(&self, layout: &SlabLayout) -> Result<(), String> {
        let mut ones = 0;
        for w in 0..layout.bitmap_words {
            // SAFETY: the bitmap has `bitmap_words` words.
            ones += unsafe { *self.bitmap.as_ptr().add(w) }.count_ones();
        }
        if ones != self.inuse || self.bin != self.inuse || self.inuse > self.chunks {
            return Err(format!(
                "slab {:p}: inuse {} bin {} bitmap {} chunks {}",
                self.mem, self.inuse, self.bin, ones, self.chunks
            ));
        }
        let mut seen = 0u32;
        let mut p = self.free;
        while !p.is_null() {
            let i = match self.index_of(p as usize, layout.chunk_size) {
                Ok(i) if !self.is_allocated(i) => i,
                _ => return Err(format!("slab {:p}: bad free-list entry {p:p}", self.mem)),
            };
            seen += 1;
            if seen > self.chunks - self.inuse {
                return Err(format!("slab {:p}: free list too long or cyclic", self.mem));
            }
            let link = self.buf(i, layout.chunk_size).as_ptr();
            // SAFETY: buffer i is free, so its link word holds the next entry.
            p = unsafe { link.add(layout.link_offset).cast::<*mut u8>().read() };
        }
        if seen != self.chunks - self.inuse {
            return Err(format!(
                "slab {:p}: free list holds {seen}, expected {}",
                self.mem,
                self.chunks - self.inuse
            ));
        }
        Ok(())
    }
}
