//! The crate's one error type.

use kmem_sys::SysError;

/// What went wrong in a keg operation.
///
/// Every variant names the keg, and those about a buffer carry its address,
/// so a message read out of context says which keg refused what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlabError {
    /// The size, alignment or flags given to [`KegBuilder`](crate::KegBuilder)
    /// cannot make a slab layout.
    #[error("keg '{keg}': invalid layout (size {size:#x}, align {align:#x}): {reason}")]
    InvalidLayout {
        /// The keg being built.
        keg: &'static str,
        /// The buffer size asked for.
        size: usize,
        /// The alignment asked for.
        align: usize,
        /// Why the layout is impossible.
        reason: &'static str,
    },
    /// The keg's limit (see [`Keg::set_limit`](crate::Keg::set_limit)) is
    /// reached: every slab it may have is full (UMA's `UMA_ZFLAG_FULL`).
    #[error("keg '{keg}': full: its limit of {limit} buffers is in use")]
    Full {
        /// The keg.
        keg: &'static str,
        /// The limit in buffers, rounded up to whole slabs.
        limit: usize,
    },
    /// The page source could not supply a slab.
    #[error("keg '{keg}': no pages for a {size:#x}-byte slab: {source}")]
    Pages {
        /// The keg.
        keg: &'static str,
        /// The slab size asked for.
        size: usize,
        /// The page source's error.
        #[source]
        source: SysError,
    },
    /// The metadata allocator could not supply an off-page slab header, the
    /// hash table or the usage lists.
    #[error("keg '{keg}': metadata allocation of {size:#x} bytes failed")]
    Metadata {
        /// The keg.
        keg: &'static str,
        /// The size asked of the metadata allocator.
        size: usize,
    },
    /// The keg's `init` callback refused a buffer of a new slab, so the slab
    /// was given back (UMA `slab_zalloc`'s `uk_init` failure path).
    #[error("keg '{keg}': init failed for buffer {addr:#x} of a new slab")]
    InitFailed {
        /// The keg.
        keg: &'static str,
        /// The buffer whose init failed.
        addr: usize,
    },
    /// The address lies in no slab of this keg.
    #[error("keg '{keg}': {addr:#x} is not inside any slab of this keg")]
    OutsideSlabs {
        /// The keg.
        keg: &'static str,
        /// The address given.
        addr: usize,
    },
    /// The address lies in a slab that belongs to another keg.
    #[error("keg '{keg}': {addr:#x} lies in a slab of another keg")]
    WrongKeg {
        /// The keg asked.
        keg: &'static str,
        /// The address given.
        addr: usize,
    },
    /// The address is inside a slab of this keg but not at the start of a
    /// buffer (in the colour gap, the header, the tail, or mid-buffer).
    #[error(
        "keg '{keg}': {addr:#x} is not the start of a buffer (offset {offset:#x} from the slab's first buffer, chunk size {chunk:#x})"
    )]
    Misaligned {
        /// The keg.
        keg: &'static str,
        /// The address given.
        addr: usize,
        /// Its signed offset from the slab's first buffer.
        offset: isize,
        /// The keg's chunk size.
        chunk: usize,
    },
    /// The buffer is already free: a double free, or a pointer to a buffer
    /// never handed out.
    #[error("keg '{keg}': {addr:#x} is already free")]
    AlreadyFree {
        /// The keg.
        keg: &'static str,
        /// The buffer.
        addr: usize,
    },
    /// A slab id that names no slab of this keg (it may have been reaped).
    #[error("keg '{keg}': no slab at {slab:#x}")]
    UnknownSlab {
        /// The keg.
        keg: &'static str,
        /// The slab id's address.
        slab: usize,
    },
    /// [`Keg::alloc_avoiding`](crate::Keg::alloc_avoiding) found no partial
    /// slab other than the one to avoid.
    #[error("keg '{keg}': no partial slab other than {avoid:#x} to allocate from")]
    NoDestination {
        /// The keg.
        keg: &'static str,
        /// The slab that was to be avoided.
        avoid: usize,
    },
    /// [`Keg::check`](crate::Keg::check) found a broken invariant, or a free
    /// list link was overwritten while its buffer was free.
    #[error("keg '{keg}': corrupt: {what}")]
    Corrupt {
        /// The keg.
        keg: &'static str,
        /// What is broken, with the addresses involved.
        what: String,
    },
}
