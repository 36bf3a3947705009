//! The keg: one lock over usage-ordered slabs, the hash and the counters;
//! allocation and free of single buffers and batches; the slow path that
//! waits at the limit or has `create` make a slab.
//!
//! Follows UMA `keg_fetch_slab` / `slab_alloc_item` / `slab_free_item`
//! and illumos `kmem_slab_alloc` / `kmem_slab_free`.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use allocator_api2::alloc::{Allocator, Global};
use kmem_sys::sync::{Condvar, Mutex, MutexGuard};
use kmem_sys::{OsPages, PageSource};

use crate::bins::Bins;
use crate::builder::{FiniFn, InitFn, KegBuilder};
use crate::error::SlabError;
use crate::hash::{HASH_SIZE_INIT, SlabHash};
use crate::layout::{Placement, SlabLayout};
use crate::slab::{BadBuf, Slab};

/// Keg ids start at 1, so a zeroed header never matches a keg.
static NEXT_KEG_ID: AtomicUsize = AtomicUsize::new(1);

/// A keg: fixed-size buffers carved from slabs of pages.
///
/// All methods take `&self`; one internal lock (a futex [`Mutex`] from
/// `kmem-sys`, which never allocates) guards the slabs. No lock is held while
/// the page source, the metadata allocator, or `init`/`fini` run.
pub struct Keg<S: PageSource = OsPages, A: Allocator + Clone = Global> {
    pub(crate) name: &'static str,
    pub(crate) id: usize,
    pub(crate) layout: SlabLayout,
    pub(crate) source: S,
    pub(crate) alloc: A,
    pub(crate) init: Option<InitFn>,
    pub(crate) fini: Option<FiniFn>,
    pub(crate) state: Mutex<State<A>>,
    /// Signalled when a buffer is freed while someone waits at the limit.
    pub(crate) space: Condvar,
}

/// Everything the keg lock guards.
pub(crate) struct State<A: Allocator> {
    pub bins: Bins<A>,
    pub hash: SlabHash<A>,
    /// Colour of the next slab (illumos `cache_color`).
    pub colour: usize,
    /// Slabs in existence, and slabs being created outside the lock.
    pub slabs: usize,
    pub creating: usize,
    pub empty: usize,
    pub full: usize,
    /// Limit in slabs (UMA `uk_maxpages / uk_ppera`).
    pub limit_slabs: Option<usize>,
    pub waiters: usize,
    pub in_use: usize,
    pub allocs: u64,
    pub frees: u64,
    pub fails: u64,
    pub sleeps: u64,
    pub creates: u64,
    pub destroys: u64,
}

// SAFETY: the raw slab pointers inside `State` are reached only under the
// keg lock, and the memory they name is owned by the keg; callbacks are
// `Send + Sync`, as the page source and allocator are required to be.
unsafe impl<S: PageSource, A: Allocator + Clone + Send> Send for Keg<S, A> {}
// SAFETY: as above; shared access goes through the lock.
unsafe impl<S: PageSource, A: Allocator + Clone + Send + Sync> Sync for Keg<S, A> {}

impl<S: PageSource, A: Allocator + Clone> Keg<S, A> {
    pub(crate) fn from_builder(b: KegBuilder<S, A>, layout: SlabLayout) -> Result<Self, SlabError> {
        let meta = |size| SlabError::Metadata {
            keg: b.settings.name,
            size,
        };
        let bins = Bins::new(layout.bufs_per_slab, b.alloc.clone())
            .ok_or_else(|| meta(layout.bufs_per_slab * 16))?;
        let hash = SlabHash::with_len(HASH_SIZE_INIT, layout.slab_align, b.alloc.clone())
            .ok_or_else(|| meta(HASH_SIZE_INIT * 8))?;
        let limit_slabs = b.settings.limit.map(|n| slabs_for(n, layout.bufs_per_slab));
        Ok(Keg {
            name: b.settings.name,
            id: NEXT_KEG_ID.fetch_add(1, Ordering::Relaxed),
            layout,
            source: b.source,
            alloc: b.alloc,
            init: b.settings.init,
            fini: b.settings.fini,
            state: Mutex::new(State {
                bins,
                hash,
                colour: 0,
                slabs: 0,
                creating: 0,
                empty: 0,
                full: 0,
                limit_slabs,
                waiters: 0,
                in_use: 0,
                allocs: 0,
                frees: 0,
                fails: 0,
                sleeps: 0,
                creates: 0,
                destroys: 0,
            }),
            space: Condvar::new(),
        })
    }

    /// The keg's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The slab geometry chosen at build time.
    pub fn layout(&self) -> &SlabLayout {
        &self.layout
    }

    /// The page source slabs come from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Allocates one buffer, creating a slab if no slab has a free buffer.
    /// Fails with [`SlabError::Full`] at the limit instead of waiting.
    #[inline]
    pub fn alloc(&self) -> Result<NonNull<u8>, SlabError> {
        let mut st = self.state.lock();
        if let Some(p) = self.take(&mut st)? {
            return Ok(p);
        }
        drop(st);
        self.alloc_slow(None)
    }

    /// Like [`alloc`](Self::alloc), but at the limit waits for a free (UMA
    /// `keg_fetch_slab`'s `msleep` on `zonelimit`), up to `timeout` if given.
    /// Returns [`SlabError::Full`] if the time runs out.
    pub fn alloc_wait(&self, timeout: Option<Duration>) -> Result<NonNull<u8>, SlabError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.alloc_slow(Some(deadline))
    }

    /// Fills `out` with up to `out.len()` buffers under one lock hold per
    /// slab, most-used slabs first; returns how many were written (a prefix
    /// of `out`). A short count means the limit or the page source stopped
    /// it after at least one buffer; with none the error is returned.
    pub fn alloc_batch(&self, out: &mut [NonNull<u8>]) -> Result<usize, SlabError> {
        let mut n = 0;
        while n < out.len() {
            let mut st = self.state.lock();
            while n < out.len() {
                match self.take(&mut st)? {
                    Some(p) => {
                        out[n] = p;
                        n += 1;
                    }
                    None => break,
                }
            }
            drop(st);
            if n == out.len() {
                break;
            }
            match self.alloc_slow(None) {
                Ok(p) => {
                    out[n] = p;
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    /// Returns a buffer to its slab.
    ///
    /// Always checked: that `ptr` lies in a slab of this keg (on-page kegs:
    /// the slab header's magic and keg id; off-page: the hash), that it is a
    /// buffer start, and that the buffer is allocated (the slab's bitmap).
    /// Any failure is an error naming the keg and the address, and changes
    /// nothing.
    ///
    /// # Safety
    /// `ptr` must point into mapped, readable memory (any live allocation
    /// from any allocator will do: an on-page keg reads the page's header
    /// position to refuse foreign pointers). If it is a buffer of this keg,
    /// nothing may use it after this call.
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), SlabError> {
        let mut st = self.state.lock();
        // SAFETY: the caller's contract is passed on.
        let r = unsafe { self.give_back(&mut st, ptr) };
        let wake = r.is_ok() && st.waiters > 0;
        drop(st);
        if wake {
            self.space.notify_all();
        }
        r
    }

    /// Frees every buffer of `bufs` under one lock hold. A bad pointer is
    /// skipped and the rest are still freed; the first error is returned.
    ///
    /// # Safety
    /// As for [`free`](Self::free), for every element.
    pub unsafe fn free_batch(&self, bufs: &[NonNull<u8>]) -> Result<(), SlabError> {
        let mut st = self.state.lock();
        let mut first = Ok(());
        for &p in bufs {
            // SAFETY: the caller's contract is passed on.
            let r = unsafe { self.give_back(&mut st, p) };
            if first.is_ok() {
                first = r;
            }
        }
        let wake = st.waiters > 0;
        drop(st);
        if wake {
            self.space.notify_all();
        }
        first
    }

    /// Sets the limit to `buffers`, rounded up to whole slabs (UMA
    /// `uma_zone_set_max`), or removes it with `None`; returns the effective
    /// limit in buffers. Slabs already beyond a lowered limit stay until
    /// they empty and are reaped.
    pub fn set_limit(&self, buffers: Option<usize>) -> Option<usize> {
        let per = self.layout.bufs_per_slab;
        let slabs = buffers.map(|n| slabs_for(n, per));
        self.state.lock().limit_slabs = slabs;
        self.space.notify_all();
        slabs.map(|s| s * per)
    }

    /// Where buffer `buf`'s debug tag lives, if the keg reserved one
    /// ([`KegBuilder::debug_tag`]).
    pub fn tag_of(&self, buf: NonNull<u8>) -> Option<NonNull<u8>> {
        // SAFETY: the tag lies inside the buffer's chunk.
        self.layout.tag_offset.map(|o| unsafe { buf.add(o) })
    }

    /// Takes a buffer from the most-used slab that has one (illumos
    /// `kmem_slab_alloc` on `avl_first` of the partial slabs, falling back to
    /// an empty slab); `None` if every slab is full.
    #[inline]
    pub(crate) fn take(&self, st: &mut State<A>) -> Result<Option<NonNull<u8>>, SlabError> {
        let Some(k) = st.bins.top_below(self.layout.bufs_per_slab) else {
            return Ok(None);
        };
        let slab = st.bins.head(k).expect("non-empty list has a head");
        self.take_from(st, slab).map(Some)
    }

    /// Takes a buffer from `slab`, which must have one, and re-files it.
    #[inline]
    pub(crate) fn take_from(
        &self,
        st: &mut State<A>,
        mut slab: NonNull<Slab>,
    ) -> Result<NonNull<u8>, SlabError> {
        // No reference to the header outlives this block: `refile` writes
        // to it through `slab`.
        let (p, chunks) = {
            // SAFETY: `slab` is a live header of this keg, under the keg lock.
            let s = unsafe { slab.as_mut() };
            let p = s
                .pop(&self.layout)
                .map_err(|link| self.corrupt_link(s, link))?;
            (p, s.chunks)
        };
        // SAFETY: the slab is on list `bin`, which still holds the old count.
        let (was, now) = unsafe { st.bins.refile(slab) };
        if was == 0 {
            st.empty -= 1;
        }
        if now == chunks {
            st.full += 1;
        }
        st.in_use += 1;
        st.allocs += 1;
        Ok(p)
    }

    #[cold]
    fn corrupt_link(&self, s: &Slab, link: usize) -> SlabError {
        SlabError::Corrupt {
            keg: self.name,
            what: format!(
                "free-list link {link:#x} in slab {:p} is not a free buffer of that slab \
                 (a freed buffer was written to)",
                s.mem
            ),
        }
    }

    /// Finds, checks and frees `ptr` under the lock.
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[inline]
    unsafe fn give_back(&self, st: &mut State<A>, ptr: NonNull<u8>) -> Result<(), SlabError> {
        let addr = ptr.as_ptr() as usize;
        // SAFETY: the caller's contract is passed on.
        let mut slab = unsafe { self.slab_for_free(st, addr) }?;
        // As in `take_from`, no reference to the header outlives this block.
        let chunks = {
            // SAFETY: a live header of this keg, under the keg lock.
            let s = unsafe { slab.as_mut() };
            let i = s
                .allocated_index(addr, self.layout.chunk_size)
                .map_err(|e| self.bad_buf(e, addr))?;
            s.push(ptr, i, &self.layout);
            s.chunks
        };
        // SAFETY: the slab is on list `bin`, which still holds the old count.
        let (was, now) = unsafe { st.bins.refile(slab) };
        if was == chunks {
            st.full -= 1;
        }
        if now == 0 {
            st.empty += 1;
        }
        st.in_use -= 1;
        st.frees += 1;
        Ok(())
    }

    /// The header of the slab `addr` should belong to.
    ///
    /// # Safety
    /// On-page kegs read the word at `addr`'s page header position: `addr`
    /// must lie in mapped memory.
    #[inline]
    unsafe fn slab_for_free(
        &self,
        st: &mut State<A>,
        addr: usize,
    ) -> Result<NonNull<Slab>, SlabError> {
        let key = addr & !(self.layout.slab_align - 1);
        if self.layout.placement == Placement::OffPage {
            let outside = SlabError::OutsideSlabs {
                keg: self.name,
                addr,
            };
            let slab = st.hash.find(key).ok_or(outside)?;
            if addr - key >= self.layout.slab_size {
                // In the alignment padding past a slab that is not a power
                // of two in size.
                return Err(SlabError::OutsideSlabs {
                    keg: self.name,
                    addr,
                });
            }
            return Ok(slab);
        }
        let hdr = (key + self.layout.header_offset) as *const Slab;
        // SAFETY: `key` is the start of the page holding `addr`, mapped by the
        // caller's contract, and the header position lies in that page. The
        // magic (salted with its own address) is read before anything else.
        let magic_ok = unsafe { (*hdr).magic_ok() };
        // SAFETY: as above; a matching magic means a live header is there.
        if !magic_ok || unsafe { (*hdr).mem.as_ptr() as usize } != key {
            return Err(SlabError::OutsideSlabs {
                keg: self.name,
                addr,
            });
        }
        // SAFETY: the magic matched, so this is a live slab header.
        if unsafe { (*hdr).keg } != self.id {
            return Err(SlabError::WrongKeg {
                keg: self.name,
                addr,
            });
        }
        debug_assert_eq!(
            st.hash.find(key).map(|p| p.as_ptr() as usize),
            Some(hdr as usize),
            "keg '{}': on-page slab {key:#x} missing from the hash",
            self.name
        );
        // SAFETY: not null: it is `key + offset` with `key` a mapped page.
        Ok(unsafe { NonNull::new_unchecked(hdr as *mut Slab) })
    }

    #[cold]
    pub(crate) fn bad_buf(&self, e: BadBuf, addr: usize) -> SlabError {
        match e {
            BadBuf::Misaligned(offset) => SlabError::Misaligned {
                keg: self.name,
                addr,
                offset,
                chunk: self.layout.chunk_size,
            },
            BadBuf::Free => SlabError::AlreadyFree {
                keg: self.name,
                addr,
            },
        }
    }

    /// No slab had a free buffer: create one, within the limit, and take a
    /// buffer from it; or wait at the limit when `wait` is `Some` (the inner
    /// `None` waiting forever).
    #[cold]
    fn alloc_slow(&self, wait: Option<Option<Instant>>) -> Result<NonNull<u8>, SlabError> {
        let mut st = self.state.lock();
        loop {
            if let Some(p) = self.take(&mut st)? {
                return Ok(p);
            }
            let at_limit = st.limit_slabs.is_some_and(|l| st.slabs + st.creating >= l);
            if !at_limit {
                break;
            }
            let limit = st.limit_slabs.unwrap_or(0) * self.layout.bufs_per_slab;
            let Some(deadline) = wait else {
                st.fails += 1;
                return Err(SlabError::Full {
                    keg: self.name,
                    limit,
                });
            };
            if !self.sleep(&mut st, deadline) {
                st.fails += 1;
                return Err(SlabError::Full {
                    keg: self.name,
                    limit,
                });
            }
        }
        let colour = st.colour;
        st.colour = next_colour(colour, &self.layout);
        st.creating += 1;
        drop(st);
        let made = self.create_slab(colour);
        let mut st = self.state.lock();
        st.creating -= 1;
        let slab = match made {
            Ok(slab) => slab,
            Err(e) => {
                st.fails += 1;
                return Err(e);
            }
        };
        // SAFETY: a fresh header of this keg, on no list and not in the hash.
        unsafe {
            st.bins.push(slab);
            st.hash.insert(slab);
        }
        st.slabs += 1;
        st.empty += 1;
        st.creates += 1;
        let p = self.take_from(&mut st, slab);
        let grow = st.hash.wants_len();
        drop(st);
        if let Some(len) = grow {
            self.grow_hash(len);
        }
        p
    }

    /// Sleeps until a free or a limit change; false if `deadline` passed.
    fn sleep(&self, st: &mut MutexGuard<'_, State<A>>, deadline: Option<Instant>) -> bool {
        st.waiters += 1;
        st.sleeps += 1;
        let timed_out = match deadline {
            None => {
                self.space.wait(st);
                false
            }
            Some(d) => self.space.wait_until(st, d).timed_out(),
        };
        st.waiters -= 1;
        !timed_out
    }
}

/// Slabs needed for `buffers` (UMA `uma_zone_set_max` rounds up).
fn slabs_for(buffers: usize, per: usize) -> usize {
    buffers.div_ceil(per)
}

/// illumos `kmem_slab_create`: step by the alignment, wrap past the slack.
fn next_colour(c: usize, l: &SlabLayout) -> usize {
    let n = c + l.align;
    if n > l.max_colour { 0 } else { n }
}
