//! What a client answers when asked to move an object (illumos
//! `kmem_cbrc_t`), and the shape of the callback.

use core::ptr::NonNull;

/// A client's reply to a move request (illumos `KMEM_CBRC_*`, handled by
/// `kmem_move_buffer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Move {
    /// The object now lives in the new buffer; the consolidator frees the
    /// old one (destroyed, back to its slab).
    Yes,
    /// The object cannot move now: its slab is marked *no-move*, skipped by
    /// ordinary scans and filled first as a move destination, until the
    /// object is freed, moved, or the slab leaves the partial list.
    No,
    /// Not now, try again: after [`DISBELIEF`](crate::DISBELIEF) of these
    /// for one slab it counts as [`No`](Move::No).
    Later,
    /// The client no longer needs the object: the consolidator frees both
    /// buffers, as it would after [`Yes`](Move::Yes) with nothing moved.
    DontNeed,
    /// The client does not recognise the object (it may have freed it into
    /// a magazine): the consolidator hunts the magazines for it and, if
    /// found there, frees it to its slab.
    DontKnow,
}

/// The client's move callback: `(old, new, size) -> Move`. `old` is the
/// allocated buffer to move, `new` a freshly *constructed* buffer of the
/// same cache, `size` the buffer size. The callback must free neither
/// (illumos `cache_move`, minus the private argument a closure carries).
pub type MoveFn = dyn Fn(NonNull<u8>, NonNull<u8>, usize) -> Move + Send + Sync;
