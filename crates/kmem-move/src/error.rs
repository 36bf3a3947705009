//! The consolidator's one error type.

use kmem_slab::SlabError;
use thiserror::Error;

/// What went wrong in a consolidator. Every variant names the cache.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MoveError {
    /// The consolidator thread could not be started.
    #[error("{cache}: cannot start the consolidator thread: {source}")]
    Spawn {
        /// Cache name.
        cache: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A pointer given to [`move_notify`](crate::Consolidator::move_notify)
    /// is not a buffer start of the cache's keg.
    #[error("{cache}: move_notify({addr:#x}): {source}")]
    NotABuffer {
        /// Cache name.
        cache: &'static str,
        /// The address passed in.
        addr: usize,
        /// What the keg said.
        source: SlabError,
    },
}
