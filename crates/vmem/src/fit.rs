//! Allocation policies, `xalloc` constraints, and whether a free segment can
//! hold a constrained request (the seed's `vmem_fit`).

use crate::error::{ArenaName, VmemError};

/// Which free segment an allocation takes (the seed's `M_FIRSTFIT` /
/// `M_BESTFIT`; next fit from Bonwick & Adams 2001, `VM_NEXTFIT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Constant time: the head of the first free list whose every member is
    /// large enough, found with one bitmap scan; falls back to best fit when
    /// no such list has a segment (or, constrained, none of their heads fit).
    #[default]
    InstantFit,
    /// The first segment that fits in the smallest list that can hold the
    /// size, then in larger lists (the seed's `M_BESTFIT`): lists hold one
    /// size each up to 63 quanta and an eighth of a power-of-two class
    /// above, so the fit is exact or within an eighth. Less fragmentation
    /// than instant fit, and unconstrained nearly as fast.
    BestFit,
    /// The first free segment that fits at or after the end of the previous
    /// next-fit allocation, wrapping around: a roving cursor, so recently
    /// freed resources (IDs, say) are not reused at once.
    NextFit,
}

/// Constraints on where `xalloc` may place a segment (the seed's
/// `vmem_xalloc` arguments). `Constraints::default()` constrains nothing.
///
/// With `b` the address returned and `size` the rounded size:
/// `b % align == phase` (an `align` of 0 means the quantum),
/// `min_addr <= b` and `b + size - 1 <= max_addr` (inclusive, as in the seed,
/// and taken literally: 0 is an address, so a `max_addr` of 0 allows only
/// segments at 0; `usize::MAX`, the default, is no upper bound), and
/// `[b, b + size)` crosses no multiple of `nocross` (0 = no such limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Constraints {
    /// Alignment: 0 or a power of two that is a multiple of the quantum.
    pub align: usize,
    /// Offset from the alignment: a multiple of the quantum below `align`.
    pub phase: usize,
    /// A power-of-two boundary the segment must not cross, at least `size`.
    pub nocross: usize,
    /// Lowest address the segment may start at.
    pub min_addr: usize,
    /// Highest address the segment may cover (inclusive).
    pub max_addr: usize,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints {
            align: 0,
            phase: 0,
            nocross: 0,
            min_addr: 0,
            max_addr: usize::MAX,
        }
    }
}

/// A request checked and normalised: sizes rounded, `align` filled in,
/// `max_addr` made explicit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub size: usize,
    pub align: usize,
    pub phase: usize,
    pub nocross: usize,
    pub lo: usize,
    pub hi: usize,
    /// Whether any free segment of at least `size` bytes satisfies it:
    /// decided once when the request is made, not per counted allocation.
    pub plain: bool,
}

impl Request {
    /// An unconstrained request for `size` bytes, already rounded.
    #[inline]
    pub fn plain(size: usize, quantum: usize) -> Request {
        Request {
            size,
            align: quantum,
            phase: 0,
            nocross: 0,
            lo: 0,
            hi: usize::MAX,
            plain: true,
        }
    }

    /// Checks `c` for a request of `size` (already rounded) bytes, refusing
    /// what the seed's `vmem_xalloc` asserts (`MPASS`) with an error.
    pub fn new(
        arena: ArenaName,
        size: usize,
        quantum: usize,
        c: &Constraints,
    ) -> Result<Request, VmemError> {
        let bad = |what| VmemError::InvalidConstraints { arena, size, what };
        let qmask = quantum - 1;
        let align = if c.align == 0 { quantum } else { c.align };
        if !align.is_power_of_two() || align & qmask != 0 {
            return Err(bad(
                "align must be 0 or a power of two multiple of the quantum",
            ));
        }
        if c.phase & qmask != 0 || c.phase >= align {
            return Err(bad("phase must be a multiple of the quantum below align"));
        }
        if c.nocross != 0 {
            if !c.nocross.is_power_of_two() || c.nocross & qmask != 0 {
                return Err(bad(
                    "nocross must be 0 or a power of two multiple of the quantum",
                ));
            }
            if c.nocross < size {
                return Err(bad("nocross is smaller than the size"));
            }
            if align > c.nocross {
                return Err(bad("align is larger than nocross"));
            }
            if (c.phase & (c.nocross - 1)) + (size - 1) > c.nocross - 1 {
                return Err(bad("phase and size cross the nocross boundary"));
            }
        }
        let hi = c.max_addr;
        if c.min_addr > hi {
            return Err(bad("min_addr is above max_addr"));
        }
        if hi - c.min_addr < size - 1 {
            return Err(bad("[min_addr, max_addr] is smaller than the size"));
        }
        Ok(Request {
            size,
            align,
            phase: c.phase,
            nocross: c.nocross,
            lo: c.min_addr,
            hi,
            plain: align == quantum && c.nocross == 0 && c.min_addr == 0 && hi == usize::MAX,
        })
    }

    /// Where in the free range `[start, end]` (inclusive) this request can be
    /// placed, lowest address first, if anywhere.
    #[inline]
    pub fn place(&self, start: usize, end: usize) -> Option<usize> {
        let lo = start.max(self.lo);
        let hi = end.min(self.hi);
        if lo > hi {
            return None;
        }
        // The lowest x >= lo with x % align == phase.
        let mut x = lo.checked_add(self.phase.wrapping_sub(lo) & (self.align - 1))?;
        if self.nocross != 0 && crosses(x, self.size, self.nocross) {
            // Move to `phase` past the next boundary: align divides nocross,
            // so the phase is kept, and validation showed it does not cross.
            x = x.checked_add(self.phase.wrapping_sub(x) & (self.nocross - 1))?;
        }
        let last = x.checked_add(self.size - 1)?;
        (last <= hi).then_some(x)
    }
}

/// Whether `[x, x + size)` crosses a multiple of `boundary`.
#[inline]
pub(crate) fn crosses(x: usize, size: usize, boundary: usize) -> bool {
    (x ^ x.wrapping_add(size - 1)) & !(boundary - 1) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(size: usize, c: Constraints) -> Result<Request, VmemError> {
        Request::new(ArenaName::new("t"), size, 16, &c)
    }

    #[test]
    fn invalid_constraints_are_errors() {
        let c = Constraints::default();
        for bad in [
            Constraints { align: 24, ..c },
            Constraints { align: 8, ..c },
            Constraints {
                align: 64,
                phase: 64,
                ..c
            },
            Constraints { phase: 16, ..c },
            Constraints { nocross: 32, ..c },
            Constraints { nocross: 96, ..c },
            Constraints {
                align: 256,
                nocross: 128,
                ..c
            },
            Constraints {
                align: 64,
                phase: 48,
                nocross: 64,
                ..c
            },
            Constraints {
                min_addr: 100,
                max_addr: 50,
                ..c
            },
            Constraints {
                min_addr: 0x100,
                max_addr: 0x120,
                ..c
            },
        ] {
            let e = req(64, bad).unwrap_err();
            assert!(matches!(e, VmemError::InvalidConstraints { .. }), "{bad:?}");
            assert!(e.to_string().contains("arena t"), "{e}");
        }
        assert!(req(64, Constraints { nocross: 64, ..c }).is_ok());
    }

    #[test]
    fn place_honours_every_constraint() {
        let c = Constraints {
            align: 64,
            phase: 16,
            nocross: 256,
            min_addr: 0x1000,
            max_addr: 0x2000 - 1,
        };
        let r = req(96, c).unwrap();
        for start in (0..0x2400).step_by(16) {
            for len in [96, 112, 400, 0x800] {
                let end = start + len - 1;
                if let Some(x) = r.place(start, end) {
                    assert!(x >= start && x + 95 <= end);
                    assert_eq!(x % 64, 16);
                    assert!(!crosses(x, 96, 256));
                    assert!(x >= 0x1000 && x + 95 <= 0x1fff);
                }
            }
        }
        assert_eq!(r.place(0x1000, 0x1fff), Some(0x1010));
        // 0x10d0 + 96 crosses 0x1100: moved to 0x1110.
        assert_eq!(r.place(0x10c1, 0x1fff), Some(0x1110));
        assert_eq!(r.place(usize::MAX - 0xff, usize::MAX), None);
    }

    #[test]
    fn a_max_addr_of_zero_is_the_address_zero() {
        let zero = Constraints {
            max_addr: 0,
            ..Constraints::default()
        };
        let r = Request::new(ArenaName::new("t"), 1, 1, &zero).unwrap();
        assert!(!r.plain);
        assert_eq!(r.place(0, 100), Some(0));
        assert_eq!(r.place(1, 100), None);
        let e = req(16, zero).unwrap_err();
        assert!(e.to_string().contains("smaller than the size"), "{e}");
    }

    #[test]
    fn place_reaches_the_top_of_the_address_space() {
        let r = req(16, Constraints::default()).unwrap();
        assert_eq!(r.place(usize::MAX - 15, usize::MAX), Some(usize::MAX - 15));
        let r = req(32, Constraints::default()).unwrap();
        assert_eq!(r.place(usize::MAX - 15, usize::MAX), None);
    }
}
