//! The facade's one error type.

use thiserror::Error;

/// What went wrong in a cache, in `kmem_alloc`/`kmem_free` or in the page
/// layer. Every variant that concerns a buffer names the cache (or
/// `"kmem_alloc"`) and the address.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KmemError {
    /// The page layer could not reserve or back more memory.
    #[error("{cache}: out of memory allocating {size} bytes")]
    OutOfMemory {
        /// Cache (or layer) that asked.
        cache: &'static str,
        /// Bytes asked for.
        size: usize,
    },
    /// The cache reached its item limit (`uma_zone_set_max`).
    #[error("{cache}: item limit of {limit} reached")]
    Full {
        /// Cache name.
        cache: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A blocking allocation gave up after its timeout.
    #[error("{cache}: timed out waiting for an item")]
    TimedOut {
        /// Cache name.
        cache: &'static str,
    },
    /// A size or alignment the cache or size classes cannot serve.
    #[error("{cache}: invalid request of {size} bytes aligned to {align}: {why}")]
    InvalidRequest {
        /// Cache name (or `"kmem_alloc"`).
        cache: &'static str,
        /// Requested size.
        size: usize,
        /// Requested alignment.
        align: usize,
        /// Which rule it broke.
        why: &'static str,
    },
    /// A free that does not match an allocation: unknown address, a pointer
    /// from another cache, inside a buffer, or already free.
    #[error("{cache}: bad free of {addr:#x}: {why}")]
    BadFree {
        /// Cache name (or `"kmem_alloc"`).
        cache: &'static str,
        /// The address passed in.
        addr: usize,
        /// What was wrong with it.
        why: String,
    },
    /// `kmem_free` was given a size that maps to another size class than the
    /// one the buffer came from.
    #[error("kmem_alloc: free of {addr:#x} with size {given}, but its buffer holds {actual} bytes")]
    WrongSize {
        /// The address passed in.
        addr: usize,
        /// Size passed to the free.
        given: usize,
        /// Size of the buffer the address belongs to.
        actual: usize,
    },
    /// A consistency check found broken state.
    #[error("{cache}: corrupt: {what}")]
    Corrupt {
        /// Cache name.
        cache: &'static str,
        /// The first broken invariant found.
        what: String,
    },
    /// The constructor refused to build an object.
    #[error("{cache}: constructor failed")]
    CtorFailed {
        /// Cache name.
        cache: &'static str,
    },
    /// A move callback was refused, or a move operation needs one
    /// (`Cache::set_move`, `Cache::move_notify`, `Cache::defragment`).
    #[error("{cache}: move: {why}")]
    Move {
        /// Cache name.
        cache: &'static str,
        /// What was wrong.
        why: String,
    },
}
