//! The crate's one error type.

use std::io;

/// What went wrong in an OS call or in the arguments given to one.
///
/// Every variant names the operation, so a message read out of context still
/// says which call failed and on which range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysError {
    /// The kernel refused the call; `source` is the OS error (`errno`).
    #[error("{op} of {len:#x} bytes at {addr:#x} failed: {source}")]
    Os {
        /// The operation: `reserve`, `commit`, `decommit`, `release`, `map`, …
        op: &'static str,
        /// Start of the range (0 where the kernel was to choose it).
        addr: usize,
        /// Length of the range in bytes.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An offset or length is not a multiple of the page size.
    #[error(
        "{op}: range at offset {offset:#x} of {len:#x} bytes is not page-aligned (page size {page_size:#x})"
    )]
    Misaligned {
        /// The operation.
        op: &'static str,
        /// Offset of the range.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// The page size it must be a multiple of.
        page_size: usize,
    },
    /// A range does not lie inside the reservation it was applied to.
    #[error(
        "{op}: range at offset {offset:#x} of {len:#x} bytes lies outside the {size:#x}-byte reservation"
    )]
    OutOfRange {
        /// The operation.
        op: &'static str,
        /// Offset of the range.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// Size of the reservation.
        size: usize,
    },
    /// A size of zero, or one so large that rounding it overflows.
    #[error("{op}: invalid size {size:#x}")]
    InvalidSize {
        /// The operation.
        op: &'static str,
        /// The size asked for.
        size: usize,
    },
    /// An alignment that is not a power of two.
    #[error("{op}: alignment {align:#x} is not a power of two")]
    InvalidAlign {
        /// The operation.
        op: &'static str,
        /// The alignment asked for.
        align: usize,
    },
}

impl SysError {
    /// Builds [`SysError::Os`] from the calling thread's `errno`.
    // Under Miri no system call of this crate sets errno: the stand-ins
    // build their errors themselves.
    #[cfg_attr(miri, allow(dead_code))]
    pub(crate) fn last_os(op: &'static str, addr: usize, len: usize) -> Self {
        SysError::Os {
            op,
            addr,
            len,
            source: io::Error::last_os_error(),
        }
    }
}
