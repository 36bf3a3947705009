//! Pointers to blocks that callers give back.
//!
//! Every block kmem hands out is cut from memory whose provenance was
//! exposed when it was mapped: the page layer's reservation (its address
//! is taken as an integer when the arena is made), the metadata heap's
//! regions and large blocks, and the slabs a cache takes from a page source
//! of its own (each exposed when it comes in). A caller's pointer to a
//! block may carry less than that: a `Box` narrows it to its own size, a
//! reference to part of the block narrows it further, and it ends with the
//! caller's use. Magazines, slabs, free lists and an in-place `realloc` or
//! `grow` hand the block on whole, so whatever they keep is re-derived from
//! the exposed provenance instead. Without this, under Miri's Stacked
//! Borrows the next owner's writes past the old size were undefined
//! behaviour. It costs nothing at run time.

use core::ptr::NonNull;

/// `p` under the exposed provenance of the mapping it lies in.
#[inline(always)]
pub(crate) fn rederive(p: NonNull<u8>) -> NonNull<u8> {
    NonNull::with_exposed_provenance(p.addr())
}

/// [`rederive`] for a raw pointer.
#[inline(always)]
pub(crate) fn rederive_raw(p: *mut u8) -> *mut u8 {
    core::ptr::with_exposed_provenance_mut(p.addr())
}
