//! The per-buffer debug tag and the fill patterns (illumos
//! `kmem_buftag_t`, `kmem_bufctl_audit_t`, `copy_pattern`,
//! `verify_pattern`, `verify_and_copy_pattern`, `KMEM_SIZE_ENCODE`).
//!
//! A debug cache's chunk is `[buffer | redzone bytes | BufTag | Audit]`:
//! the keg reserves the tag after the buffer's word-rounded end and its
//! outside free-list link word ([`kmem_slab::KegBuilder::debug_tag`]), and
//! every byte between the buffer's end and the tag is redzone while the
//! buffer is allocated. The `Audit` record (illumos keeps it in the bufctl,
//! found through the hash) lives inline after the tag when `AUDIT` is on, so
//! no metadata is allocated per buffer.

use super::stack::STACK_DEPTH;

/// `KMEM_FREE_PATTERN`: what a freed buffer holds under `DEADBEEF`.
pub const FREE_PATTERN: u64 = 0xdead_beef_dead_beef;
/// `KMEM_UNINITIALIZED_PATTERN`: what a new allocation holds under
/// `DEADBEEF` before its constructor runs.
pub const UNINITIALIZED_PATTERN: u64 = 0xbadd_cafe_badd_cafe;
/// `KMEM_REDZONE_PATTERN`: the tag's guard word.
pub const REDZONE_PATTERN: u64 = 0xfeed_face_feed_face;
/// `KMEM_REDZONE_BYTE`: every byte between a buffer's end and its tag.
pub const REDZONE_BYTE: u8 = 0xbb;
/// `KMEM_BUFTAG_ALLOC`: `bxstat = bufctl ^ this` while allocated.
pub const BUFTAG_ALLOC: usize = 0xa110_c8ed;
/// `KMEM_BUFTAG_FREE`: `bxstat = bufctl ^ this` while free.
pub const BUFTAG_FREE: usize = 0xf4ee_f4ee;
/// `kmem_lite_count`: threads remembered in a `LITE` buftag.
pub const LITE_COUNT: usize = 4;

/// `KMEM_SIZE_ENCODE`: how a `kmem_alloc` size is kept in the redzone word.
#[inline]
pub const fn size_encode(size: usize) -> u32 {
    (251usize.wrapping_mul(size) as u32).wrapping_add(1)
}

/// `KMEM_SIZE_DECODE`.
#[inline]
pub const fn size_decode(x: u32) -> usize {
    (x / 251) as usize
}

/// `KMEM_SIZE_VALID`.
#[inline]
pub const fn size_valid(x: u32) -> bool {
    x % 251 == 1
}

/// `kmem_buftag_t` (with the `kmem_buftag_lite_t` history always there).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct BufTag {
    /// [`REDZONE_PATTERN`]; for `kmem_alloc` buffers the high half holds
    /// [`size_encode`] of the requested size.
    pub redzone: u64,
    /// The buffer's audit record, or the buffer itself without `AUDIT`.
    pub bufctl: usize,
    /// `bufctl ^ BUFTAG_ALLOC` or `bufctl ^ BUFTAG_FREE`.
    pub bxstat: usize,
    /// `LITE`: thread slots of the last transactions, newest first.
    pub history: [usize; LITE_COUNT],
}

/// `kmem_bufctl_audit_t`: the last transaction on a buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Audit {
    /// The buffer (`bc_addr`).
    pub addr: usize,
    /// The cache's id (`bc_cache`).
    pub cache: usize,
    /// Monotonic nanoseconds (`bc_timestamp`).
    pub nanos: u64,
    /// `kmem_sys::thread_slot` of the thread (`bc_thread`).
    pub thread: usize,
    /// Frames in `stack` (`bc_depth`).
    pub depth: usize,
    /// Return addresses, innermost first (`bc_stack`).
    pub stack: [usize; STACK_DEPTH],
}

/// Bytes of tag a cache with `audit` reserves after each buffer.
pub(crate) const fn tag_size(audit: bool) -> usize {
    size_of::<BufTag>() + if audit { size_of::<Audit>() } else { 0 }
}

/// `copy_pattern`: fills `words` words at `p` with `pattern`.
///
/// # Safety
///
/// `p` is word-aligned with `words` writable words.
#[inline]
pub(crate) unsafe fn copy_pattern(pattern: u64, p: *mut u8, words: usize) {
    let p = p.cast::<u64>();
    for i in 0..words {
        // SAFETY: inside the caller's range.
        unsafe { p.add(i).write(pattern) };
    }
}

/// `verify_pattern`: the byte offset and value of the first word that is
/// not `pattern`.
///
/// # Safety
///
/// As [`copy_pattern`], readable.
#[inline]
pub(crate) unsafe fn verify_pattern(
    pattern: u64,
    p: *const u8,
    words: usize,
) -> Option<(usize, u64)> {
    let p = p.cast::<u64>();
    (0..words).find_map(|i| {
        // SAFETY: inside the caller's range.
        let v = unsafe { p.add(i).read() };
        (v != pattern).then_some((i * 8, v))
    })
}

/// `verify_and_copy_pattern`: checks `old` and writes `new` word by word;
/// on a mismatch restores `old` over what was written and reports it.
///
/// # Safety
///
/// As [`copy_pattern`].
#[inline]
pub(crate) unsafe fn verify_and_copy_pattern(
    old: u64,
    new: u64,
    p: *mut u8,
    words: usize,
) -> Option<(usize, u64)> {
    let w = p.cast::<u64>();
    for i in 0..words {
        // SAFETY: inside the caller's range.
        let v = unsafe { w.add(i).read() };
        if v != old {
            // SAFETY: the first `i` words, just written.
            unsafe { copy_pattern(old, p, i) };
            return Some((i * 8, v));
        }
        // SAFETY: as above.
        unsafe { w.add(i).write(new) };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_size_encoding() {
        let mut b = [0u64; 4];
        let p = b.as_mut_ptr().cast::<u8>();
        // SAFETY: four words of ours.
        unsafe {
            copy_pattern(FREE_PATTERN, p, 4);
            assert_eq!(verify_pattern(FREE_PATTERN, p, 4), None);
            b[2] = 7;
            let p = b.as_mut_ptr().cast::<u8>();
            assert_eq!(
                verify_and_copy_pattern(FREE_PATTERN, 1, p, 4),
                Some((16, 7))
            );
            assert_eq!(b[0], FREE_PATTERN, "restored on a mismatch");
        }
        assert!(size_valid(size_encode(100)));
        assert_eq!(size_decode(size_encode(100)), 100);
        assert!(!size_valid(size_encode(100) + 1));
    }
}
