//! One magazine: a header followed by an array of rounds, in storage from the
//! metadata allocator; and the intrusive list the depot keeps them on.
//!
//! The seed's `kmem_magazine_t` is a `mag_next` link and `mag_round[]`; it
//! keeps the round count in the CPU cache (`cc_rounds`) and assumes every
//! magazine in the depot's full list is full. Here a magazine also records its
//! capacity (a resize leaves older, smaller magazines in circulation until
//! they come back empty) and its round count while it sits in the depot (so a
//! partly filled one — a short import, a thread's leftovers at exit — can be
//! listed too).

use core::alloc::Layout;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::{self, NonNull};

use allocator_api2::alloc::Allocator;

/// The fixed part of a magazine; the rounds follow at [`items_offset`].
#[repr(C)]
pub(crate) struct Header {
    /// Next magazine on a depot list.
    pub(crate) next: *mut Header,
    /// Rounds the magazine can hold.
    pub(crate) cap: usize,
    /// Rounds it holds while on a depot list.
    pub(crate) rounds: usize,
    /// Alignment it was allocated with (to rebuild its layout).
    pub(crate) align: usize,
}

/// Offset of the rounds from the start of a magazine holding `T`s.
#[inline(always)]
pub(crate) const fn items_offset<T>() -> usize {
    let a = align_of::<T>();
    (size_of::<Header>() + a - 1) & !(a - 1)
}

/// Pointer to round 0 of magazine `hdr`.
///
/// # Safety
/// `hdr` points to a live magazine allocated by [`alloc_magazine::<T>`].
#[inline(always)]
pub(crate) unsafe fn items<T>(hdr: *mut Header) -> *mut T {
    // SAFETY: the allocation spans items_offset + cap * size_of::<T>() bytes.
    unsafe { hdr.cast::<u8>().add(items_offset::<T>()).cast::<T>() }
}

fn layout<T>(cap: usize, align: usize) -> Option<Layout> {
    let size = items_offset::<T>().checked_add(cap.checked_mul(size_of::<T>())?)?;
    let align = align.max(align_of::<Header>()).max(align_of::<T>());
    Layout::from_size_align(size, align).ok()
}

/// A new, empty magazine of `cap` rounds, or `None` if `alloc` is out of memory.
pub(crate) fn alloc_magazine<T, A: Allocator>(
    alloc: &A,
    cap: usize,
    align: usize,
) -> Option<NonNull<Header>> {
    let layout = layout::<T>(cap, align)?;
    let hdr = alloc.allocate(layout).ok()?.cast::<Header>();
    // SAFETY: fresh allocation, large and aligned enough for a Header.
    unsafe {
        hdr.as_ptr().write(Header {
            next: ptr::null_mut(),
            cap,
            rounds: 0,
            align,
        });
    }
    Some(hdr)
}

/// Frees a magazine's storage (its rounds must have been dealt with).
///
/// # Safety
/// `hdr` came from [`alloc_magazine::<T>`] with an allocator equivalent to
/// `alloc` and is on no list and in no pair.
pub(crate) unsafe fn free_magazine<T, A: Allocator>(alloc: &A, hdr: NonNull<Header>) {
    // SAFETY: the header is live (caller's contract).
    let (cap, align) = unsafe { ((*hdr.as_ptr()).cap, (*hdr.as_ptr()).align) };
    let layout = layout::<T>(cap, align).expect("layout was valid at allocation");
    // SAFETY: same allocator and layout as the allocation.
    unsafe { alloc.deallocate(hdr.cast(), layout) };
}

/// A depot list (the seed's `kmem_maglist_t`): magazines linked through
/// `Header::next`, their count, and the working-set figures.
pub(crate) struct MagList<T> {
    head: *mut Header,
    /// Magazines on the list (`ml_total`).
    pub(crate) total: usize,
    /// Fewest magazines seen on the list this interval (`ml_min`).
    pub(crate) min: usize,
    /// Magazines that may be reaped: last interval's minimum (`ml_reaplimit`).
    pub(crate) reaplimit: usize,
    /// Magazines taken off the list, ever (`ml_alloc`).
    pub(crate) taken: u64,
    _item: PhantomData<T>,
}

impl<T> MagList<T> {
    pub(crate) const fn new() -> Self {
        MagList {
            head: ptr::null_mut(),
            total: 0,
            min: 0,
            reaplimit: 0,
            taken: 0,
            _item: PhantomData,
        }
    }

    /// Pushes `hdr` holding `rounds` rounds.
    ///
    /// # Safety
    /// `hdr` is a live magazine owned by the caller and on no other list.
    pub(crate) unsafe fn push(&mut self, hdr: NonNull<Header>, rounds: usize) {
        // SAFETY: caller owns the magazine.
        unsafe {
            (*hdr.as_ptr()).rounds = rounds;
            (*hdr.as_ptr()).next = self.head;
        }
        self.head = hdr.as_ptr();
        self.total += 1;
    }

    /// Pops a magazine, keeping `min` and `taken` as `kmem_depot_alloc` does.
    pub(crate) fn pop(&mut self) -> Option<(NonNull<Header>, usize)> {
        let hdr = NonNull::new(self.head)?;
        // SAFETY: every magazine on the list is live and owned by the list.
        let rounds = unsafe {
            self.head = (*hdr.as_ptr()).next;
            (*hdr.as_ptr()).next = ptr::null_mut();
            (*hdr.as_ptr()).rounds
        };
        self.total -= 1;
        self.min = self.min.min(self.total);
        self.taken += 1;
        Some((hdr, rounds))
    }

    /// Detaches up to `n` magazines from the head as a chain (statistics
    /// kept; `min` follows the new total as in `kmem_depot_alloc`).
    pub(crate) fn take(&mut self, n: usize) -> Chain<T> {
        let head = self.head;
        let mut last: *mut Header = ptr::null_mut();
        let mut cur = self.head;
        let mut taken = 0;
        while taken < n && !cur.is_null() {
            last = cur;
            // SAFETY: list magazines are live and owned by the list.
            cur = unsafe { (*cur).next };
            taken += 1;
        }
        if taken == 0 {
            return Chain {
                head: ptr::null_mut(),
                _item: PhantomData,
            };
        }
        // SAFETY: `last` is the live tail of the detached part.
        unsafe { (*last).next = ptr::null_mut() };
        self.head = cur;
        self.total -= taken;
        self.min = self.min.min(self.total);
        self.taken += taken as u64;
        Chain {
            head,
            _item: PhantomData,
        }
    }

    /// Sum of the rounds of every magazine on the list.
    pub(crate) fn rounds(&self) -> usize {
        self.iter().map(|(_, r)| r).sum()
    }

    /// Each magazine with its rounds.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (NonNull<Header>, usize)> + '_ {
        let mut cur = self.head;
        core::iter::from_fn(move || {
            let hdr = NonNull::new(cur)?;
            // SAFETY: list magazines are live while the list is borrowed.
            unsafe {
                cur = (*hdr.as_ptr()).next;
                Some((hdr, (*hdr.as_ptr()).rounds))
            }
        })
    }
}

/// A detached chain of magazines, walked outside the depot lock.
pub(crate) struct Chain<T> {
    head: *mut Header,
    _item: PhantomData<T>,
}

impl<T> Iterator for Chain<T> {
    type Item = (NonNull<Header>, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let hdr = NonNull::new(self.head)?;
        // SAFETY: the chain owns its magazines; read the link before the
        // caller frees the magazine.
        unsafe {
            self.head = (*hdr.as_ptr()).next;
            Some((hdr, (*hdr.as_ptr()).rounds))
        }
    }
}
