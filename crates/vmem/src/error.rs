//! The crate's one error type, and the arena name it carries.

use std::time::Duration;

/// Longest arena name kept, in bytes; longer names are cut at a character
/// boundary (the seed keeps 16, `VMEM_NAME_MAX`).
pub const NAME_MAX: usize = 31;

/// An arena's name, stored inline so that errors and arenas never allocate
/// for it (an arena may sit under a `GlobalAlloc`).
pub type ArenaName = kmem_sys::Name<NAME_MAX>;

/// What went wrong in an arena operation.
///
/// Every variant names the arena, and where there is one the address and size
/// involved, so a message read out of context still says what happened where.
/// An operation that returns an error has left the arena unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VmemError {
    /// No free segment satisfies the request, and neither importing from the
    /// source nor draining the quantum caches or reclaiming made one (the
    /// seed's `ENOMEM` from `vmem_xalloc` with `M_NOWAIT`).
    #[error("vmem arena {arena}: cannot allocate {size:#x} bytes: arena exhausted")]
    Exhausted {
        /// The arena.
        arena: ArenaName,
        /// The size asked for, rounded up to the quantum.
        size: usize,
    },
    /// A blocking allocation waited for its whole timeout without success.
    #[error("vmem arena {arena}: no {size:#x} bytes became free within {waited:?}")]
    TimedOut {
        /// The arena.
        arena: ArenaName,
        /// The size asked for, rounded up to the quantum.
        size: usize,
        /// The timeout that expired.
        waited: Duration,
    },
    /// A size of zero, or one that overflows when rounded to the quantum.
    #[error("vmem arena {arena}: invalid size {size:#x}: {what}")]
    InvalidSize {
        /// The arena.
        arena: ArenaName,
        /// The size given.
        size: usize,
        /// Why it was refused.
        what: &'static str,
    },
    /// `xalloc` constraints that no segment could ever satisfy or that break
    /// the rules (alignment not a power of two, phase not below alignment,
    /// `nocross` smaller than the size, `min_addr > max_addr`, …).
    #[error("vmem arena {arena}: invalid constraints for {size:#x} bytes: {what}")]
    InvalidConstraints {
        /// The arena.
        arena: ArenaName,
        /// The size asked for.
        size: usize,
        /// Which rule was broken.
        what: &'static str,
    },
    /// A free of a range that is not an allocated segment: an unknown
    /// address, a double free, or an address inside another segment.
    #[error(
        "vmem arena {arena}: free of {size:#x} bytes at {addr:#x}: no segment is allocated there"
    )]
    NotAllocated {
        /// The arena.
        arena: ArenaName,
        /// The address given.
        addr: usize,
        /// The size given.
        size: usize,
    },
    /// A free whose size does not round up to the size of the segment
    /// allocated at `addr`.
    #[error(
        "vmem arena {arena}: free of {size:#x} bytes at {addr:#x}: the segment there is {allocated:#x} bytes"
    )]
    WrongSize {
        /// The arena.
        arena: ArenaName,
        /// The address given.
        addr: usize,
        /// The size given.
        size: usize,
        /// The size of the segment allocated at `addr`.
        allocated: usize,
    },
    /// A span given to `add` (or returned by an import) that is empty,
    /// misaligned, wraps past the end of the address space, or overlaps a
    /// span the arena already has.
    #[error("vmem arena {arena}: span of {size:#x} bytes at {base:#x}: {what}")]
    InvalidSpan {
        /// The arena.
        arena: ArenaName,
        /// Start of the span.
        base: usize,
        /// Size of the span.
        size: usize,
        /// What was wrong with it.
        what: &'static str,
    },
    /// The metadata allocator could not supply memory for boundary tags.
    /// Checked before an operation changes anything (the seed's `bt_fill`).
    #[error("vmem arena {arena}: no memory for boundary tags")]
    NoMetadata {
        /// The arena.
        arena: ArenaName,
    },
    /// A builder setting that cannot work (quantum not a power of two, …).
    #[error("vmem arena {arena}: invalid configuration: {what}")]
    InvalidConfig {
        /// The arena.
        arena: ArenaName,
        /// What was wrong.
        what: &'static str,
    },
    /// [`check`](crate::Vmem::check) found a broken invariant.
    #[error("vmem arena {arena}: corrupt at {addr:#x}: {what}")]
    Corrupt {
        /// The arena.
        arena: ArenaName,
        /// The address of the tag where the walk found the problem.
        addr: usize,
        /// The invariant that does not hold.
        what: &'static str,
    },
}
