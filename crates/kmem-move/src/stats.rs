//! Move statistics: the counters of illumos `kmem_move_stats` that say what
//! clients answered and what the consolidator did, per consolidator.

use core::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters, bumped without a lock.
        #[derive(Default)]
        pub(crate) struct Counters {
            $( pub $name: AtomicU64, )*
        }

        /// A snapshot of one consolidator's counters (illumos
        /// `kmem_move_stats` fields `kms_*`, and the per-cache `kmd_*`).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct MoveStats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counters {
            pub fn snapshot(&self) -> MoveStats {
                MoveStats { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Move callbacks made (`kms_callbacks`).
    callbacks,
    /// [`Move::Yes`](crate::Move::Yes) replies (`kms_yes`).
    yes,
    /// [`Move::No`](crate::Move::No) replies (`kms_no`).
    no,
    /// [`Move::Later`](crate::Move::Later) replies (`kms_later`).
    later,
    /// [`Move::DontNeed`](crate::Move::DontNeed) replies (`kms_dont_need`).
    dont_need,
    /// [`Move::DontKnow`](crate::Move::DontKnow) replies (`kms_dont_know`).
    dont_know,
    /// Objects a `DontKnow` hunt found in a magazine (`kms_hunt_found_mag`).
    hunt_found,
    /// Moves dropped before the callback because the object was already
    /// free on its slab (`kms_hunt_found_slab`).
    hunt_found_slab,
    /// `Later` replies turned into `No` (`kms_disbelief`).
    disbelief,
    /// Move requests for an object whose move was already pending
    /// (`kms_already_pending`).
    already_pending,
    /// Moves dropped because the slab stopped being a candidate
    /// (`kms_no_longer_reclaimable`).
    no_longer_reclaimable,
    /// Scans stopped for want of a destination buffer (`kms_endscan_nomem`).
    no_destination,
    /// Destinations whose constructor refused (`kms_constructor_fail`).
    constructor_fail,
    /// [`move_notify`](crate::Consolidator::move_notify) calls (`kms_notify`).
    notify,
    /// Callbacks made for a notification (`kms_notify_callbacks`).
    notify_callbacks,
    /// Periodic scans ([`scan`](crate::Consolidator::scan), illumos
    /// `kmem_cache_scan`).
    scans,
    /// Desperate defragmentations (`kms_defrags`).
    defrags,
    /// Slabs emptied while moves were pending, freed once the last one
    /// ended (`kms_dead_slabs_freed`).
    dead_slabs_freed,
    /// Slabs the consolidator gave back to the page source in all.
    slabs_reclaimed,
}
