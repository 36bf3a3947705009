//! `Obj`: one heap block of the workloads, allocated straight through the
//! global allocator, tagged so that a block handed back by the allocator
//! while still live, or overwritten by a neighbour, is caught when it is
//! freed.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;

/// How much of a block the workload writes when it allocates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// The first and last byte: the block is touched and checked, but the
    /// time stays the allocator's (larson, xmalloc).
    Ends,
    /// Every byte, as mimalloc's `test-stress` fills its items: the resident
    /// size then counts every live byte.
    Whole,
}

/// A block of `len` bytes (alignment 8, like a small `malloc`) whose first
/// and last bytes hold a tag derived from its length.
#[derive(Debug)]
pub(crate) struct Obj {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: an `Obj` owns its block exclusively, like a `Box<[u8]>`; moving it
// to another thread moves that ownership (and frees it there, which is the
// point of the cross-thread workloads).
unsafe impl Send for Obj {}

const ALIGN: usize = 8;

#[inline]
fn tag(len: usize) -> u8 {
    // Never zero, so a block of fresh zeroed pages fails the check.
    (len as u8) | 1
}

impl Obj {
    /// Allocates `len` bytes (`len >= 1`) and writes the tag as `fill` says.
    #[inline]
    pub(crate) fn new(len: usize, fill: Fill) -> Obj {
        assert!(len > 0, "workload objects have at least one byte");
        let layout = Layout::from_size_align(len, ALIGN).expect("workload sizes are small");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        let t = tag(len);
        match fill {
            // SAFETY: `ptr` is valid for `len` bytes, just allocated.
            Fill::Whole => unsafe { ptr.as_ptr().write_bytes(t, len) },
            // SAFETY: bytes 0 and len - 1 are inside the block.
            Fill::Ends => unsafe {
                ptr.as_ptr().write(t);
                ptr.as_ptr().add(len - 1).write(t);
            },
        }
        Obj { ptr, len }
    }

    /// The block's size in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The block's start, for workloads that write into it.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Obj {
    #[inline]
    fn drop(&mut self) {
        let (p, len) = (self.ptr.as_ptr(), self.len);
        // SAFETY: bytes 0 and len - 1 are inside the live block.
        let (first, last) = unsafe { (p.read(), p.add(len - 1).read()) };
        if first != tag(len) || last != tag(len) {
            corrupted(p, len, first, last);
        }
        let layout = Layout::from_size_align(len, ALIGN).expect("checked when allocated");
        // SAFETY: allocated in `new` with this same layout, freed only here.
        unsafe { dealloc(p, layout) };
    }
}

#[cold]
#[inline(never)]
fn corrupted(p: *mut u8, len: usize, first: u8, last: u8) -> ! {
    panic!(
        "workload object at {p:p} ({len} bytes) was corrupted while live: \
         first byte {first:#04x}, last byte {last:#04x}, expected {:#04x}; \
         the allocator handed out overlapping blocks",
        tag(len)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_survive_and_are_checked() {
        for len in [1, 2, 7, 8, 64, 4097] {
            let o = Obj::new(len, Fill::Whole);
            assert_eq!(o.len(), len);
            // SAFETY: inside the block.
            assert_eq!(unsafe { o.as_ptr().add(len / 2).read() }, tag(len));
            drop(Obj::new(len, Fill::Ends));
        }
    }

    #[test]
    #[should_panic(expected = "corrupted while live")]
    fn an_overwritten_block_is_reported() {
        let o = Obj::new(16, Fill::Ends);
        // SAFETY: inside the block; simulates a neighbour's stray write.
        unsafe { o.as_ptr().write(0) };
        drop(o);
    }
}
