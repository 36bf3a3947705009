//! The crate's one error type.

use std::borrow::Cow;

use kmem_sys::SysError;

use crate::flags::ZoneFlags;

/// Everything a zone can refuse or detect. Every variant names the zone, and
/// those about an item give its address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// A zone that cannot grow (an interrupt zone at its reservation, or a boot
    /// zone) has no free item left.
    #[error("zone {zone:?}: exhausted, all {limit} items are allocated or cached on other CPUs")]
    Exhausted {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// The zone's item limit (`zmax`).
        limit: usize,
    },
    /// The page source could not supply the pages the zone grows by.
    #[error("zone {zone:?}: cannot grow by {bytes:#x} bytes: {source}")]
    Pages {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// Bytes asked of the page source.
        bytes: usize,
        /// What the page source said.
        #[source]
        source: SysError,
    },
    /// An item size the zone cannot hold.
    #[error("zone {zone:?}: invalid item size {size}: {reason}")]
    InvalidSize {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// The size asked for.
        size: usize,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A flag combination the zone cannot honour.
    #[error("zone {zone:?}: invalid flags {flags}: {reason}")]
    InvalidFlags {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// The flags asked for.
        flags: ZoneFlags,
        /// Why they were refused.
        reason: &'static str,
    },
    /// Caller memory for a boot zone that cannot hold the items asked for.
    #[error("zone {zone:?}: boot memory at {addr:#x} of {len} bytes: {reason}")]
    BootMemory {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// Start of the memory.
        addr: usize,
        /// Its length in bytes.
        len: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `ZONE_ERROR_INVALID`: the address is not an item of this zone.
    #[error("zone {zone:?}: invalid free of {addr:#x}: not an item of this zone")]
    InvalidAddress {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// The address passed in.
        addr: usize,
    },
    /// `ZONE_ERROR_ALREADYFREE`: the item is already on a free list.
    #[error("zone {zone:?}: freeing free entry {addr:#x} (double free)")]
    AlreadyFree {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// The item.
        addr: usize,
    },
    /// `ZONE_ERROR_NOTFREE`: an item on a free list lost its free marker, so
    /// something wrote to it after it was freed.
    #[error(
        "zone {zone:?}: entry {addr:#x} not free: free marker is {marker:#x} (written after free)"
    )]
    NotFree {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// The item.
        addr: usize,
        /// What its marker word held instead of `ZENTRY_FREE`.
        marker: usize,
    },
    /// `zdestroy` of a zone made without `ZONE_DESTROYABLE`.
    #[error("zone {zone:?}: zdestroy: undestroyable zone (flags {flags})")]
    NotDestroyable {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// Its flags.
        flags: ZoneFlags,
    },
    /// `zdestroy` while items are still allocated.
    #[error("zone {zone:?}: zdestroy with {used} items still allocated")]
    Busy {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// Items allocated and not freed.
        used: usize,
    },
    /// [`Zone::check`](crate::Zone::check) found broken bookkeeping.
    #[error("zone {zone:?}: inconsistent: {detail}")]
    Corrupt {
        /// The zone's name.
        zone: Cow<'static, str>,
        /// What does not add up.
        detail: String,
    },
}
