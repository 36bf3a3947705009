//! Zone flags and the seed's constants.
//!
//! The flag values are DragonFly's `vm_zone.h` ones, so a port that stores or
//! prints them sees the same numbers.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

/// Item sizes are rounded up to a multiple of this many bytes
/// (`vm_zone.c`: `ZONE_ROUNDING`, applied by `zinitna`). Boot zones keep their
/// exact size, as `zbootinit` does.
pub const ZONE_ROUNDING: usize = 32;

/// Pages a zone takes from its page source each time it grows
/// (`vm_zone.h`: `ZONE_MAXPGLOAD`, the `zalloc` page count `zinitna` sets).
/// A zone whose item is larger than this takes as many pages as one item
/// needs instead (the seed would never fit an item and always fail).
pub const ZONE_MAXPGLOAD: usize = 8;

/// The word a free item carries in its second word when the `invariants`
/// feature is on (`vm_zone.c`: `ZENTRY_FREE`).
pub const ZENTRY_FREE: usize = 0x1234_2378;

/// Default of the burst tunable (`vm_zone.c`: `zone_burst`, sysctl
/// `vm.zone_burst`): the most items moved between a per-CPU list and the
/// zone's global list in one go.
pub const ZONE_BURST_DEFAULT: usize = 128;

/// Per-CPU list bound of an ordinary zone (`zinitna`'s `zmax_pcpu = 8192`).
pub const ZMAX_PCPU_DEFAULT: usize = 8192;

/// Floor of the per-CPU list bound applied by `zfree` and by `zinitna` for
/// interrupt zones (`1024` in the seed).
pub const ZMAX_PCPU_FLOOR: usize = 1024;

/// Most bytes an interrupt zone's per-CPU list may hold (`16 MiB` in `zinitna`).
pub const ZMAX_PCPU_BYTES: usize = 16 * 1024 * 1024;

/// Items a [`ZONE_SPECIAL`](ZoneFlags::SPECIAL) zone keeps in each CPU's
/// reserve when it grows (`zget`: `gd_vme_avail < 2`).
pub const SPECIAL_RESERVE: usize = 2;

/// The `ZONE_*` flags a zone is created with.
///
/// Combine with `|`; test with [`contains`](ZoneFlags::contains).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ZoneFlags(u32);

impl ZoneFlags {
    /// No flags: an ordinary zone that grows without limit.
    pub const NONE: ZoneFlags = ZoneFlags(0);
    /// `ZONE_INTERRUPT`: all memory for `nentries` items is reserved when the
    /// zone is made; the zone never grows past it and allocation never waits.
    pub const INTERRUPT: ZoneFlags = ZoneFlags(0x0001);
    /// `ZONE_PANICFAIL`: allocation cannot fail; exhaustion panics with the
    /// zone's name.
    pub const PANICFAIL: ZoneFlags = ZoneFlags(0x0002);
    /// `ZONE_SPECIAL`: each growth first tops up the current CPU's reserve of
    /// [`SPECIAL_RESERVE`] items (the seed's `vm_map_entry` reserve), reached
    /// through [`Zone::reserve_alloc`](crate::Zone::reserve_alloc).
    pub const SPECIAL: ZoneFlags = ZoneFlags(0x0004);
    /// `ZONE_BOOT`: the zone started over caller memory (`zbootinit`).
    pub const BOOT: ZoneFlags = ZoneFlags(0x0010);
    /// `ZONE_USE_RESERVE`: accepted and recorded for ports; `vm_zone.c` never
    /// reads it and neither does this crate.
    pub const USE_RESERVE: ZoneFlags = ZoneFlags(0x0020);
    /// `ZONE_DESTROYABLE`: the zone remembers its page chunks and
    /// [`Zone::destroy`](crate::Zone::destroy) / `zdestroy` may return them.
    pub const DESTROYABLE: ZoneFlags = ZoneFlags(0x0040);

    const ALL: u32 = 0x0001 | 0x0002 | 0x0004 | 0x0010 | 0x0020 | 0x0040;

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; `None` if an unknown bit is set.
    pub const fn from_bits(bits: u32) -> Option<ZoneFlags> {
        if bits & !Self::ALL == 0 {
            Some(ZoneFlags(bits))
        } else {
            None
        }
    }

    /// Whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: ZoneFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for ZoneFlags {
    type Output = ZoneFlags;
    fn bitor(self, rhs: ZoneFlags) -> ZoneFlags {
        ZoneFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for ZoneFlags {
    fn bitor_assign(&mut self, rhs: ZoneFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for ZoneFlags {
    type Output = ZoneFlags;
    fn bitand(self, rhs: ZoneFlags) -> ZoneFlags {
        ZoneFlags(self.0 & rhs.0)
    }
}

impl Not for ZoneFlags {
    type Output = ZoneFlags;
    fn not(self) -> ZoneFlags {
        ZoneFlags(!self.0 & Self::ALL)
    }
}

impl fmt::Debug for ZoneFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ZoneFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(ZoneFlags, &str); 6] = [
            (ZoneFlags::INTERRUPT, "INTERRUPT"),
            (ZoneFlags::PANICFAIL, "PANICFAIL"),
            (ZoneFlags::SPECIAL, "SPECIAL"),
            (ZoneFlags::BOOT, "BOOT"),
            (ZoneFlags::USE_RESERVE, "USE_RESERVE"),
            (ZoneFlags::DESTROYABLE, "DESTROYABLE"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("NONE")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_and_print() {
        let f = ZoneFlags::INTERRUPT | ZoneFlags::PANICFAIL;
        assert_eq!(f.bits(), 3);
        assert_eq!(ZoneFlags::from_bits(3), Some(f));
        assert_eq!(ZoneFlags::from_bits(0x8), None);
        assert!(f.contains(ZoneFlags::INTERRUPT));
        assert!(!f.contains(ZoneFlags::BOOT));
        assert_eq!(f.to_string(), "INTERRUPT|PANICFAIL");
        assert_eq!(ZoneFlags::NONE.to_string(), "NONE");
        assert_eq!((f & !ZoneFlags::PANICFAIL), ZoneFlags::INTERRUPT);
    }
}
