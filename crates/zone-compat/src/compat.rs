//! The DragonFly names, for porting `vm_zone.h` users line for line.
//!
//! | DragonFly (`vm_zone.c` / `vm_zone.h`) | here | Rust shape |
//! |---|---|---|
//! | `vm_zone_t` | [`VmZone`] (= [`Zone`]) | owned value; share by `&` or `Arc`; the functions take any `Zone<S, A>` |
//! | `zinit(name, size, nentries, flags)` | [`zinit`] | `NULL` → `None` |
//! | `zbootinit(z, name, size, item, nitems)` | [`zbootinit`] | returns the zone; `item` is `&'static mut [u8]` |
//! | `zinitna(z, name, size, nentries, flags)` | [`zinitna`] | only on a booted zone (a fresh one comes from [`zinit`]); `0` → `Err` |
//! | `zalloc(z)` | [`zalloc`] | `NULL` → `None`; `ZONE_PANICFAIL` panics naming the zone |
//! | `zfree(z, item)` | [`zfree`] | `unsafe`; the `INVARIANTS` `zerror` panics name zone and address |
//! | `zdestroy(z)` | [`zdestroy`] | an undestroyable or busy zone is refused with [`DestroyError`] instead of `panic` |
//! | `zone_burst` (sysctl `vm.zone_burst`) | [`zone_burst`] / [`set_zone_burst`] | process-wide atomic |
//! | `sysctl vm.zone` | [`sysctl_vm_zone`] | the table as a `String` |
//! | `vm.zone_kmem_pages`, `vm.zone_kern_pages`, `vm.zone_kmem_kvaspace` | [`zone_counters`] | one snapshot struct |
//! | `ZONE_INTERRUPT`, `ZONE_PANICFAIL`, `ZONE_SPECIAL`, `ZONE_BOOT`, `ZONE_USE_RESERVE`, `ZONE_DESTROYABLE` | the constants below | [`ZoneFlags`] values, combined with `\|` |
//! | `ZONE_ROUNDING`, `ZONE_MAXPGLOAD`, `ZENTRY_FREE` | re-exported | same values |
//!
//! ```
//! use kmem_zone_compat::compat::*;
//!
//! // static vm_zone_t ipq_zone;  ipq_zone = zinit("ipq", 96, 0, 0);
//! let ipq_zone = zinit("ipq", 96, 0, ZONE_NONE).expect("zinit");
//! let ipq = zalloc(&ipq_zone).expect("zalloc");
//! // SAFETY: `ipq` came from this zone and is not used again.
//! unsafe { zfree(&ipq_zone, ipq) };
//! assert!(sysctl_vm_zone().contains("ipq:"));
//! ```

use core::ptr::NonNull;
use std::borrow::Cow;

use allocator_api2::alloc::Allocator;
use kmem_sys::PageSource;

pub use crate::flags::{ZENTRY_FREE, ZONE_MAXPGLOAD, ZONE_ROUNDING, ZoneFlags};
pub use crate::grow::DestroyError;
pub use crate::table::zone_counters;
pub use crate::zone::{set_zone_burst, zone_burst};
use crate::{Zone, ZoneError, render, zones};

/// `vm_zone_t`: a zone with pages from the OS and metadata from the global
/// allocator.
pub type VmZone = Zone;

/// No flags (DragonFly code passes `0`).
pub const ZONE_NONE: ZoneFlags = ZoneFlags::NONE;
/// `ZONE_INTERRUPT`: see [`ZoneFlags::INTERRUPT`].
pub const ZONE_INTERRUPT: ZoneFlags = ZoneFlags::INTERRUPT;
/// `ZONE_PANICFAIL`: see [`ZoneFlags::PANICFAIL`].
pub const ZONE_PANICFAIL: ZoneFlags = ZoneFlags::PANICFAIL;
/// `ZONE_SPECIAL`: see [`ZoneFlags::SPECIAL`].
pub const ZONE_SPECIAL: ZoneFlags = ZoneFlags::SPECIAL;
/// `ZONE_BOOT`: see [`ZoneFlags::BOOT`].
pub const ZONE_BOOT: ZoneFlags = ZoneFlags::BOOT;
/// `ZONE_USE_RESERVE`: see [`ZoneFlags::USE_RESERVE`].
pub const ZONE_USE_RESERVE: ZoneFlags = ZoneFlags::USE_RESERVE;
/// `ZONE_DESTROYABLE`: see [`ZoneFlags::DESTROYABLE`].
pub const ZONE_DESTROYABLE: ZoneFlags = ZoneFlags::DESTROYABLE;

/// `zinit`: a zone of `size`-byte items (rounded up to [`ZONE_ROUNDING`]).
/// `nentries` is the reservation of a `ZONE_INTERRUPT` zone and ignored
/// otherwise. `None` where the seed returns `NULL`: bad arguments or no pages
/// for the reservation ([`Zone::builder`] says which).
pub fn zinit(
    name: impl Into<Cow<'static, str>>,
    size: usize,
    nentries: usize,
    flags: ZoneFlags,
) -> Option<VmZone> {
    Zone::builder(name, size)
        .nentries(nentries)
        .flags(flags)
        .build()
        .ok()
}

/// `zbootinit`: a `ZONE_BOOT` zone whose `nitems` items of exactly `size`
/// bytes are carved from `item`, for use before pages can be had. It does not
/// grow until [`zinitna`]. Errors where the seed would trust the caller: a
/// size under two words or not word-sized, or memory too small or misaligned.
pub fn zbootinit(
    name: impl Into<Cow<'static, str>>,
    size: usize,
    item: &'static mut [u8],
    nitems: usize,
) -> Result<VmZone, ZoneError> {
    Zone::builder(name, size).build_boot(item, nitems)
}

/// `zinitna` on a zone from [`zbootinit`]: from now on it grows like a zone
/// made with `flags` (a `ZONE_INTERRUPT` one reserving `nentries` more items).
/// The seed's name and size arguments are dropped: a booted zone keeps the
/// ones `zbootinit` gave it, as the seed does.
pub fn zinitna<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static>(
    z: &Zone<S, A>,
    nentries: usize,
    flags: ZoneFlags,
) -> Result<(), ZoneError> {
    z.finish_boot(nentries, flags)
}

/// `zalloc`: an item, or `None` when the zone cannot supply one (an
/// interrupt or boot zone is exhausted, or the page source failed).
///
/// # Panics
/// A `ZONE_PANICFAIL` zone panics instead of returning `None`, naming the
/// zone; with the `invariants` feature, `ZONE_ERROR_NOTFREE` panics too.
#[inline]
pub fn zalloc<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static>(
    z: &Zone<S, A>,
) -> Option<NonNull<u8>> {
    z.alloc().ok()
}

/// `zfree`: returns `item` to `z`.
///
/// # Safety
/// `item` came from [`zalloc`] on `z`, is not freed yet, and is not used
/// after this call.
///
/// # Panics
/// With the `invariants` feature, as the seed's `zerror` does: on an address
/// that is not an item of `z` (`ZONE_ERROR_INVALID`) or an item already free
/// (`ZONE_ERROR_ALREADYFREE`), with the zone's name and the address.
#[inline]
pub unsafe fn zfree<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static>(
    z: &Zone<S, A>,
    item: NonNull<u8>,
) {
    // SAFETY: the caller's guarantees are passed on.
    if let Err(e) = unsafe { z.free(item) } {
        zerror(e)
    }
}

#[cold]
#[inline(never)]
fn zerror(e: ZoneError) -> ! {
    panic!("{e}")
}

/// `zdestroy`: returns every page of a `ZONE_DESTROYABLE` zone to its source.
/// Where the seed panics (a zone without the flag), the zone comes back in
/// the error, as it does when items are still allocated.
pub fn zdestroy<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static>(
    z: Zone<S, A>,
) -> Result<(), DestroyError<S, A>> {
    z.destroy()
}

/// `sysctl vm.zone`: the zone table of every live zone, with the seed's
/// columns and each zone's per-CPU counts.
pub fn sysctl_vm_zone() -> String {
    render(&zones())
}
