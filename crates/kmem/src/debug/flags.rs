//! [`DebugFlags`]: the seed's `KMF_*` cache flags, their resolution rules
//! (illumos `kmem_cache_create`) and the `KMEM_DEBUG` option string
//! (libumem's `UMEM_DEBUG`).

use core::fmt;
use core::ops::{BitOr, BitOrAssign};

use super::report::Action;

/// A set of debugging flags for a cache (illumos `kmem_flags` /
/// `cache_flags`, the `KMF_*` bits, with the seed's values).
///
/// Give them to [`CacheBuilder::debug`](crate::CacheBuilder::debug); the
/// cache keeps [`resolve`](Self::resolve)d flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DebugFlags(u32);

impl DebugFlags {
    /// No debugging.
    pub const NONE: Self = Self(0);
    /// `KMF_AUDIT`: record owner thread, time and stack of every
    /// transaction, in the buffer's audit record and the transaction log.
    pub const AUDIT: Self = Self(0x1);
    /// `KMF_DEADBEEF`: fill freed buffers with `0xdeadbeef` and check the
    /// pattern when they are allocated again.
    pub const DEADBEEF: Self = Self(0x2);
    /// `KMF_REDZONE`: guard bytes after each buffer, checked on free.
    pub const REDZONE: Self = Self(0x4);
    /// `KMF_CONTENTS`: save the first bytes of each freed buffer in the
    /// content log (needs `AUDIT`).
    pub const CONTENTS: Self = Self(0x8);
    /// `KMF_NOMAGAZINE`: every transaction reaches the slab layer.
    pub const NOMAGAZINE: Self = Self(0x20);
    /// `KMF_FIREWALL`: each buffer ends at an unmapped page, so an overrun
    /// faults at once.
    pub const FIREWALL: Self = Self(0x40);
    /// `KMF_LITE`: the cheap subset — buftag and redzone, only the first
    /// word checked for modification, the last threads in the buftag.
    pub const LITE: Self = Self(0x100);
    /// `KMF_HASH`: buffers are found through the slab hash.
    pub const HASH: Self = Self(0x200);
    /// `KMF_BUFTAG`: the per-buffer tag (`DEADBEEF | REDZONE`).
    pub const BUFTAG: Self = Self(Self::DEADBEEF.0 | Self::REDZONE.0);
    /// `KMF_TOUCH`: the flags that write into buffers.
    pub const TOUCH: Self = Self(Self::BUFTAG.0 | Self::LITE.0 | Self::CONTENTS.0);
    /// The seed's `DEBUG` kernel default, and libumem's `default`:
    /// `AUDIT | DEADBEEF | REDZONE | CONTENTS`.
    pub const DEFAULT: Self =
        Self(Self::AUDIT.0 | Self::DEADBEEF.0 | Self::REDZONE.0 | Self::CONTENTS.0);

    /// The raw `KMF_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// These flags without those of `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The flags a cache of `size`-byte buffers aligned to `align` really
    /// runs with, by the rules of illumos `kmem_cache_create`:
    ///
    /// 1. `LITE` on a buffer whose size is not a multiple of
    ///    [`LITE_MAX_ALIGN`] and whose alignment is at most that adds
    ///    `BUFTAG` and drops `AUDIT` and `FIREWALL`; otherwise it drops every
    ///    flag.
    /// 2. `DEADBEEF` adds `REDZONE`.
    /// 3. `AUDIT` adds `REDZONE` (no `KMC_NOTOUCH` here).
    /// 4. Without `AUDIT`, `CONTENTS` goes.
    /// 5. `FIREWALL` drops `BUFTAG` and adds `NOMAGAZINE` (the seed moves
    ///    the cache to `kmem_firewall_arena`).
    /// 6. Here every cache with a flag left adds `NOMAGAZINE` (the checks
    ///    live on the no-magazine path, so caches without debugging pay
    ///    nothing), and every buftag cache `HASH` (buffers are found from
    ///    addresses through the keg's slab hash, as `kmem_findslab` does).
    pub const fn resolve(self, size: usize, align: usize) -> Self {
        let mut f = self;
        if f.contains(Self::LITE) {
            if align <= LITE_MAX_ALIGN && !size.is_multiple_of(LITE_MAX_ALIGN) {
                f = Self(f.0 | Self::BUFTAG.0).without(Self(Self::AUDIT.0 | Self::FIREWALL.0));
            } else {
                return Self::NONE;
            }
        }
        if f.contains(Self::DEADBEEF) || f.contains(Self::AUDIT) {
            f = Self(f.0 | Self::REDZONE.0);
        }
        if !f.contains(Self::AUDIT) {
            f = f.without(Self::CONTENTS);
        }
        if f.contains(Self::FIREWALL) {
            f = Self(f.0 | Self::NOMAGAZINE.0).without(Self(
                Self::BUFTAG.0 | Self::AUDIT.0 | Self::CONTENTS.0 | Self::LITE.0,
            ));
        }
        if f.intersects(Self::BUFTAG) {
            f = Self(f.0 | Self::HASH.0);
        }
        if !f.is_empty() {
            f = Self(f.0 | Self::NOMAGAZINE.0);
        }
        f
    }
}

/// illumos `kmem_lite_maxalign`: `LITE` applies only to caches aligned at
/// most this much, whose size is not a multiple of it.
pub const LITE_MAX_ALIGN: usize = 1024;

impl BitOr for DebugFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for DebugFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

const NAMES: [(DebugFlags, &str); 9] = [
    (DebugFlags::AUDIT, "audit"),
    (DebugFlags::DEADBEEF, "deadbeef"),
    (DebugFlags::REDZONE, "redzone"),
    (DebugFlags::CONTENTS, "contents"),
    (DebugFlags::NOMAGAZINE, "nomagazine"),
    (DebugFlags::FIREWALL, "firewall"),
    (DebugFlags::LITE, "lite"),
    (DebugFlags::HASH, "hash"),
    (DebugFlags(0x10), "sticky"),
];

impl fmt::Debug for DebugFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `audit|deadbeef|redzone`, or `none`.
impl fmt::Display for DebugFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut sep = "";
        for (flag, name) in NAMES {
            if self.contains(flag) {
                write!(f, "{sep}{name}")?;
                sep = "|";
            }
        }
        Ok(())
    }
}

/// What a `KMEM_DEBUG` string asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EnvOptions {
    /// Flags for the `kmem_alloc` size-class caches.
    pub flags: DebugFlags,
    /// `firewall=SIZE`: requests of at least this many bytes end at a
    /// guard page.
    pub firewall: Option<usize>,
    /// `noabort` (log and continue) or `abort`; the default is panic.
    pub action: Option<Action>,
}

impl EnvOptions {
    /// Parses a libumem-style, comma-separated option string: `default`
    /// (audit, deadbeef, redzone, contents), `audit`, `contents`,
    /// `deadbeef`, `redzone`, `guards` (deadbeef and redzone), `lite`,
    /// `nomagazine`, `firewall=SIZE` (bytes; `k`/`m` suffixes), `noabort`,
    /// `abort`. Never allocates (it runs inside the global allocator); an
    /// unknown option is returned as the error.
    pub fn parse(s: &str) -> Result<Self, &str> {
        let mut o = EnvOptions::default();
        for opt in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, value) {
                ("default", None) => o.flags |= DebugFlags::DEFAULT,
                ("audit", _) => o.flags |= DebugFlags::AUDIT,
                ("contents", _) => o.flags |= DebugFlags::AUDIT | DebugFlags::CONTENTS,
                ("deadbeef", None) => o.flags |= DebugFlags::DEADBEEF,
                ("redzone", None) => o.flags |= DebugFlags::REDZONE,
                ("guards", None) => o.flags |= DebugFlags::BUFTAG,
                ("lite", None) => o.flags |= DebugFlags::LITE,
                ("nomagazine", None) => o.flags |= DebugFlags::NOMAGAZINE,
                ("firewall", Some(v)) => o.firewall = Some(parse_size(v).ok_or(opt)?),
                ("noabort", None) => o.action = Some(Action::Continue),
                ("abort", None) => o.action = Some(Action::Abort),
                _ => return Err(opt),
            }
        }
        Ok(o)
    }
}

fn parse_size(v: &str) -> Option<usize> {
    let (digits, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        _ => (v, 1),
    };
    digits
        .parse::<usize>()
        .ok()?
        .checked_mul(mult)
        .filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_follows_the_seed() {
        let d = DebugFlags::DEADBEEF.resolve(64, 8);
        assert!(d.contains(DebugFlags::REDZONE | DebugFlags::HASH | DebugFlags::NOMAGAZINE));
        assert!(
            !DebugFlags::CONTENTS
                .resolve(64, 8)
                .contains(DebugFlags::CONTENTS)
        );
        let lite = (DebugFlags::LITE | DebugFlags::AUDIT).resolve(100, 8);
        assert!(lite.contains(DebugFlags::BUFTAG) && !lite.contains(DebugFlags::AUDIT));
        assert_eq!(DebugFlags::LITE.resolve(1024, 8), DebugFlags::NONE);
        let fw = (DebugFlags::FIREWALL | DebugFlags::DEFAULT).resolve(4096, 8);
        assert!(fw.contains(DebugFlags::FIREWALL) && !fw.intersects(DebugFlags::BUFTAG));
        assert_eq!(DebugFlags::NONE.resolve(64, 8), DebugFlags::NONE);
        assert_eq!(format!("{}", DebugFlags::BUFTAG), "deadbeef|redzone");
    }

    #[test]
    fn env_strings_parse_like_umem_debug() {
        let o = EnvOptions::parse("default, firewall=8k,noabort").unwrap();
        assert_eq!(o.flags, DebugFlags::DEFAULT);
        assert_eq!(o.firewall, Some(8192));
        assert_eq!(o.action, Some(Action::Continue));
        assert_eq!(EnvOptions::parse("lite").unwrap().flags, DebugFlags::LITE);
        assert_eq!(EnvOptions::parse("bogus"), Err("bogus"));
        assert_eq!(EnvOptions::parse("firewall=x"), Err("firewall=x"));
        assert_eq!(EnvOptions::parse("").unwrap(), EnvOptions::default());
    }
}
