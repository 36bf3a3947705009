//! The crate's one error type.

use crate::config::Name;

/// What went wrong building a magazine layer or checking one.
///
/// Building a layer can fail where no memory is to be had (inside a global
/// allocator, say), so the two errors of construction hold no heap memory:
/// an inline [`Name`] and a static reason.
///
/// Every variant names the cache (the `name` given in [`Config`](crate::Config)),
/// so a message read out of context still says where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MagazineError {
    /// A configuration value is out of range.
    #[error("magazine cache {name:?}: invalid configuration: {reason}")]
    InvalidConfig {
        /// The cache.
        name: Name,
        /// What is wrong, e.g. "the working-set interval is zero".
        reason: &'static str,
    },
    /// The metadata allocator could not supply the cache's own state.
    #[error("magazine cache {name:?}: out of metadata memory allocating {bytes} bytes")]
    OutOfMemory {
        /// The cache.
        name: Name,
        /// Size of the failed allocation.
        bytes: usize,
    },
    /// [`check`](crate::Magazines::check) found an inconsistent structure.
    #[error("magazine cache {name:?}: corrupt {what} at {addr:#x}: {detail}")]
    Corrupt {
        /// The cache.
        name: String,
        /// Which structure: "depot full list", "cpu slot 3", …
        what: String,
        /// Address of the offending magazine (0 if none).
        addr: usize,
        /// What was found.
        detail: String,
    },
}
