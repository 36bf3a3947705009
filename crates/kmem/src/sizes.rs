//! The `kmem_alloc` size classes: which cache serves a request of `n` bytes.
//!
//! Follows illumos `kmem_alloc_sizes[]` and `kmem_big_alloc_sizes[]` with
//! their two lookup tables (`kmem_alloc_table`, indexed by `(n - 1) >> 3` up
//! to 4 KiB, and `kmem_big_alloc_table`, indexed by `(n - 1) >> 12` up to
//! 128 KiB). Every multiple of 64 bytes maps to a class that is itself a
//! multiple of 64, so such requests come back 64-byte aligned, as the seed
//! intends for coherency-granule sized buffers. Requests above
//! [`MAX_CACHED`] go to the page layer.

/// Largest size served by the small table (`KMEM_MAXBUF`).
pub const SMALL_MAX: usize = 4096;
/// Largest size served by a cache at all (`KMEM_BIG_MAXBUF` on 64-bit).
pub const MAX_CACHED: usize = 128 * 1024;

const SMALL_SHIFT: u32 = 3; // KMEM_ALIGN_SHIFT: 8-byte granules
const BIG_SHIFT: u32 = 12; // KMEM_BIG_SHIFT: 4 KiB granules

/// `P2ALIGN(x, a)`: round down to a multiple of the power of two `a`.
const fn round_down(x: usize, a: usize) -> usize {
    x & !(a - 1)
}

/// Every class, smallest first: the seed's small sizes, then its big sizes.
pub const CLASS_SIZES: [usize; 47] = [
    8,
    16,
    24,
    32,
    40,
    48,
    56,
    64,
    80,
    96,
    112,
    128,
    160,
    192,
    224,
    256,
    320,
    384,
    448,
    512,
    640,
    768,
    896,
    1024,
    round_down(8192 / 7, 64),
    round_down(8192 / 6, 64),
    round_down(8192 / 5, 64),
    round_down(8192 / 4, 64),
    round_down(8192 / 3, 64),
    round_down(8192 / 2, 64),
    2 * 4096,
    3 * 4096,
    2 * 8192,
    3 * 8192,
    4 * 8192,
    5 * 8192,
    6 * 8192,
    7 * 8192,
    8 * 8192,
    9 * 8192,
    10 * 8192,
    11 * 8192,
    12 * 8192,
    13 * 8192,
    14 * 8192,
    15 * 8192,
    16 * 8192,
];

/// Each class cache's name, as illumos names them (`kmem_alloc_<size>`).
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "kmem_alloc_8",
    "kmem_alloc_16",
    "kmem_alloc_24",
    "kmem_alloc_32",
    "kmem_alloc_40",
    "kmem_alloc_48",
    "kmem_alloc_56",
    "kmem_alloc_64",
    "kmem_alloc_80",
    "kmem_alloc_96",
    "kmem_alloc_112",
    "kmem_alloc_128",
    "kmem_alloc_160",
    "kmem_alloc_192",
    "kmem_alloc_224",
    "kmem_alloc_256",
    "kmem_alloc_320",
    "kmem_alloc_384",
    "kmem_alloc_448",
    "kmem_alloc_512",
    "kmem_alloc_640",
    "kmem_alloc_768",
    "kmem_alloc_896",
    "kmem_alloc_1024",
    "kmem_alloc_1152",
    "kmem_alloc_1344",
    "kmem_alloc_1600",
    "kmem_alloc_2048",
    "kmem_alloc_2688",
    "kmem_alloc_4096",
    "kmem_alloc_8192",
    "kmem_alloc_12288",
    "kmem_alloc_16384",
    "kmem_alloc_24576",
    "kmem_alloc_32768",
    "kmem_alloc_40960",
    "kmem_alloc_49152",
    "kmem_alloc_57344",
    "kmem_alloc_65536",
    "kmem_alloc_73728",
    "kmem_alloc_81920",
    "kmem_alloc_90112",
    "kmem_alloc_98304",
    "kmem_alloc_106496",
    "kmem_alloc_114688",
    "kmem_alloc_122880",
    "kmem_alloc_131072",
];

/// Number of size classes.
pub const NUM_CLASSES: usize = CLASS_SIZES.len();

/// The alignment a class's buffers naturally have: the largest power of two
/// dividing its size, at most a page (4 KiB). A class cache is created with
/// this alignment, so the request alignment it can satisfy is known up front.
pub const fn class_align(class: usize) -> usize {
    let size = CLASS_SIZES[class];
    let a = 1 << size.trailing_zeros();
    if a > 4096 { 4096 } else { a }
}

const SMALL_TABLE_LEN: usize = SMALL_MAX >> SMALL_SHIFT;
const BIG_TABLE_LEN: usize = MAX_CACHED >> BIG_SHIFT;

// The tables are constants, not statics: each use gets a private copy in its
// own code unit, addressed directly, while a static of this crate is reached
// from an allocator inlined into another crate through a GOT entry.

/// Class index for each 8-byte granule up to 4 KiB.
const SMALL_TABLE: [u8; SMALL_TABLE_LEN] = build_table::<SMALL_TABLE_LEN>(SMALL_SHIFT);
/// Class index for each 4 KiB granule up to 128 KiB.
const BIG_TABLE: [u8; BIG_TABLE_LEN] = build_table::<BIG_TABLE_LEN>(BIG_SHIFT);

/// Entry `i` is the smallest class whose size is at least `(i + 1) << shift`.
const fn build_table<const N: usize>(shift: u32) -> [u8; N] {
    let mut table = [0u8; N];
    let mut class = 0;
    let mut i = 0;
    while i < N {
        let top = (i + 1) << shift;
        while CLASS_SIZES[class] < top {
            class += 1;
        }
        table[i] = class as u8;
        i += 1;
    }
    table
}

/// `log2` of the smallest alignment [`ALIGNED`] covers (16: every class is
/// 8-aligned already).
const ALIGNED_MIN_SHIFT: u32 = 4;
/// Alignments [`ALIGNED`] covers: 16 up to a page, the most a class has.
const ALIGNED_LEN: usize = 9;

/// `ALIGNED[k][c]`: the smallest class from `c` on whose natural alignment
/// is at least `16 << k`, or [`NUM_CLASSES`] if none.
const ALIGNED: [[u8; NUM_CLASSES]; ALIGNED_LEN] = {
    assert!(
        16 << (ALIGNED_LEN - 1) == 4096,
        "up to the largest class alignment"
    );
    let mut table = [[NUM_CLASSES as u8; NUM_CLASSES]; ALIGNED_LEN];
    let mut k = 0;
    while k < ALIGNED_LEN {
        let mut c = NUM_CLASSES;
        while c > 0 {
            c -= 1;
            table[k][c] = if class_align(c) >= 16 << k {
                c as u8
            } else if c + 1 < NUM_CLASSES {
                table[k][c + 1]
            } else {
                NUM_CLASSES as u8
            };
        }
        k += 1;
    }
    table
};

/// The class serving `size` bytes (`size >= 1`), or `None` above
/// [`MAX_CACHED`] (and for 0, which has no class).
#[inline]
pub fn class_of(size: usize) -> Option<usize> {
    let granule = size.wrapping_sub(1);
    let class = if granule < SMALL_MAX {
        SMALL_TABLE[granule >> SMALL_SHIFT]
    } else if granule < MAX_CACHED {
        BIG_TABLE[granule >> BIG_SHIFT]
    } else {
        return None;
    } as usize;
    // SAFETY: every table entry is a class index (`build_table` indexes
    // CLASS_SIZES with it, so a larger one would not compile): callers
    // index per-class arrays without a bounds check.
    unsafe { core::hint::assert_unchecked(class < NUM_CLASSES) };
    Some(class)
}

/// The class serving `size` bytes at alignment `align`: the smallest class at
/// least `size` whose natural alignment is at least `align`, or `None` if no
/// class qualifies (then the page layer serves the request).
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    class_for_nonzero(size.max(1), align)
}

/// [`class_for`] without the rounding of size 0 up to 1: `None` for 0, so
/// a fast path that never sees size 0 (a `GlobalAlloc` layout) skips it.
#[inline]
pub(crate) fn class_for_nonzero(size: usize, align: usize) -> Option<usize> {
    let class = class_of(size)?;
    if align <= 8 {
        // Every class is at least 8-aligned.
        return Some(class);
    }
    // `ceil(log2(align))`, so an alignment that is not a power of two asks
    // for the next one.
    let shift = usize::BITS - (align - 1).leading_zeros();
    let aligned = ALIGNED.get((shift - ALIGNED_MIN_SHIFT) as usize)?[class] as usize;
    (aligned < NUM_CLASSES).then_some(aligned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_sizes() {
        for (n, s) in CLASS_NAMES.iter().zip(CLASS_SIZES) {
            assert_eq!(*n, format!("kmem_alloc_{s}"));
        }
    }

    #[test]
    fn table_matches_the_seed() {
        assert_eq!(&CLASS_SIZES[24..30], &[1152, 1344, 1600, 2048, 2688, 4096]);
        assert_eq!(CLASS_SIZES[NUM_CLASSES - 1], MAX_CACHED);
        assert!(CLASS_SIZES.windows(2).all(|w| w[0] < w[1]));
        // Big sizes are multiples of 4 KiB, as the big table requires.
        assert!(CLASS_SIZES[30..].iter().all(|s| s % 4096 == 0));
    }

    /// The sizes the walks below check: every `step`th size natively;
    /// under Miri, where walking them takes minutes and there is no unsafe
    /// code to check on the way, each class's size and its two neighbours.
    fn sizes(step: usize) -> std::vec::Vec<usize> {
        if cfg!(miri) {
            CLASS_SIZES
                .iter()
                .flat_map(|&s| [s - 1, s, s + 1])
                .filter(|s| (1..=MAX_CACHED).contains(s))
                .collect()
        } else {
            (1..=MAX_CACHED).step_by(step).collect()
        }
    }

    #[test]
    fn every_size_maps_to_the_smallest_fitting_class() {
        for size in sizes(1) {
            let c = class_of(size).unwrap();
            assert!(
                CLASS_SIZES[c] >= size,
                "size {size} -> class {}",
                CLASS_SIZES[c]
            );
            assert!(
                c == 0 || CLASS_SIZES[c - 1] < size,
                "size {size} skipped a class"
            );
        }
        assert_eq!(class_of(0), None);
        assert_eq!(class_of(MAX_CACHED + 1), None);
        assert_eq!(class_of(usize::MAX), None);
    }

    #[test]
    fn multiples_of_64_stay_64_aligned() {
        for size in (64..=SMALL_MAX).step_by(64) {
            let c = class_of(size).unwrap();
            assert_eq!(CLASS_SIZES[c] % 64, 0, "size {size} -> {}", CLASS_SIZES[c]);
        }
    }

    #[test]
    fn alignment_picks_a_class_that_provides_it() {
        assert_eq!(CLASS_SIZES[class_for(24, 8).unwrap()], 24);
        assert_eq!(CLASS_SIZES[class_for(24, 16).unwrap()], 32);
        assert_eq!(CLASS_SIZES[class_for(100, 64).unwrap()], 128);
        assert_eq!(CLASS_SIZES[class_for(1, 4096).unwrap()], 4096);
        assert_eq!(class_for(1, 8192), None);
        assert_eq!(class_for(1, 1 << 40), None);
        assert_eq!(CLASS_SIZES[class_for(20, 24).unwrap()], 32);
        // The table agrees with a walk up the classes at every alignment.
        for shift in 4..14 {
            let align = 1 << shift;
            for size in sizes(7) {
                let mut c = class_of(size);
                while let Some(k) = c.filter(|&k| class_align(k) < align) {
                    c = (k + 1 < NUM_CLASSES).then_some(k + 1);
                }
                assert_eq!(class_for(size, align), c, "size {size} align {align}");
            }
        }
        for (c, size) in CLASS_SIZES.iter().enumerate() {
            assert_eq!(size % class_align(c), 0);
        }
    }
}
