//! The intrusive free list every zone list is made of.
//!
//! A free item's first word links to the next free item (`vm_zone.c` keeps
//! `((void **)item)[0]`); with the `invariants` feature its second word holds
//! [`ZENTRY_FREE`]. Those two words are all a zone ever writes into an item,
//! which is why zones are type-stable past them.

use core::ptr;

use crate::flags::ZENTRY_FREE;

/// Whether items carry the free marker in their second word.
pub(crate) const MARK: bool = cfg!(any(test, feature = "invariants"));

/// Bytes of an item the zone owns while it is free: the link, and the marker.
pub(crate) const ITEM_HEADER: usize = 2 * size_of::<usize>();

/// A LIFO list of free items with its length.
#[derive(Debug)]
pub(crate) struct FreeList {
    head: *mut u8,
    len: usize,
}

impl FreeList {
    pub(crate) const fn new() -> Self {
        FreeList {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn head(&self) -> *mut u8 {
        self.head
    }

    /// Pushes `item` and, when marking, stamps it free.
    ///
    /// # Safety
    /// `item` is a word-aligned zone item of at least [`ITEM_HEADER`] bytes
    /// that is on no list and that nobody else uses.
    #[inline]
    pub(crate) unsafe fn push(&mut self, item: *mut u8) {
        // SAFETY: the caller hands over a free, aligned, large-enough item.
        unsafe {
            link_write(item, self.head);
            if MARK {
                marker_write(item, ZENTRY_FREE);
            }
        }
        self.head = item;
        self.len += 1;
    }

    /// Pops the head, leaving its marker as it is for the caller to check and
    /// clear. The list must not be empty.
    ///
    /// # Safety
    /// Every item on the list is still a valid zone item.
    #[inline]
    pub(crate) unsafe fn pop(&mut self) -> *mut u8 {
        debug_assert!(self.len > 0 && !self.head.is_null());
        let item = self.head;
        // SAFETY: the head is a valid item on this list.
        self.head = unsafe { link_read(item) };
        self.len -= 1;
        item
    }

    /// Moves the first `n` items (1 ≤ n ≤ len) onto the front of `to`,
    /// keeping their order: the seed's burst from a per-CPU list to the
    /// global one in `zfree`.
    ///
    /// # Safety
    /// Every item on the list is still a valid zone item.
    pub(crate) unsafe fn move_front(&mut self, n: usize, to: &mut FreeList) {
        debug_assert!(n >= 1 && n <= self.len);
        let first = self.head;
        let mut tail = first;
        for _ in 1..n {
            // SAFETY: fewer than `len` links are followed from the head.
            tail = unsafe { link_read(tail) };
        }
        // SAFETY: `tail` is the n-th item of this list.
        unsafe {
            self.head = link_read(tail);
            link_write(tail, to.head);
        }
        to.head = first;
        self.len -= n;
        to.len += n;
    }

    /// Iterates over the items, head first.
    #[cfg(test)]
    ///
    /// # Safety
    /// Every item on the list is still a valid zone item and the list is not
    /// changed while the iterator lives.
    pub(crate) unsafe fn iter(&self) -> impl Iterator<Item = *mut u8> + '_ {
        let mut next = self.head;
        core::iter::from_fn(move || {
            if next.is_null() {
                return None;
            }
            let item = next;
            // SAFETY: the caller guarantees every listed item is valid.
            next = unsafe { link_read(item) };
            Some(item)
        })
    }
}

/// Reads an item's link word.
///
/// # Safety
/// `item` is a word-aligned, readable zone item.
#[inline]
pub(crate) unsafe fn link_read(item: *mut u8) -> *mut u8 {
    // SAFETY: per the function contract.
    unsafe { item.cast::<*mut u8>().read() }
}

#[inline]
unsafe fn link_write(item: *mut u8, next: *mut u8) {
    // SAFETY: callers pass a writable, word-aligned item.
    unsafe { item.cast::<*mut u8>().write(next) }
}

/// Reads an item's marker word.
///
/// # Safety
/// `item` is a word-aligned, readable zone item.
#[inline]
pub(crate) unsafe fn marker_read(item: *mut u8) -> usize {
    // SAFETY: items are at least ITEM_HEADER bytes and word-aligned.
    unsafe { item.cast::<usize>().add(1).read() }
}

/// Writes an item's marker word.
///
/// # Safety
/// `item` is a word-aligned, writable zone item nobody else uses.
#[inline]
pub(crate) unsafe fn marker_write(item: *mut u8, value: usize) {
    // SAFETY: items are at least ITEM_HEADER bytes and word-aligned.
    unsafe { item.cast::<usize>().add(1).write(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_and_move_keep_order_and_counts() {
        let mut items = [[0usize; 4]; 6];
        let ptrs: Vec<*mut u8> = items.iter_mut().map(|i| i.as_mut_ptr().cast()).collect();
        let mut a = FreeList::new();
        for &p in &ptrs {
            // SAFETY: distinct, aligned 32-byte items owned by the test.
            unsafe { a.push(p) };
        }
        assert_eq!(a.len(), 6);
        // SAFETY: all items are valid.
        assert_eq!(unsafe { marker_read(ptrs[3]) }, ZENTRY_FREE);
        let mut b = FreeList::new();
        // SAFETY: as above.
        unsafe { a.move_front(4, &mut b) };
        assert_eq!((a.len(), b.len()), (2, 4));
        // SAFETY: as above.
        let order: Vec<*mut u8> = unsafe { b.iter() }.collect();
        assert_eq!(order, vec![ptrs[5], ptrs[4], ptrs[3], ptrs[2]]);
        // SAFETY: as above.
        assert_eq!(unsafe { a.pop() }, ptrs[1]);
        // SAFETY: as above.
        assert_eq!(unsafe { a.pop() }, ptrs[0]);
        assert!(a.head().is_null());
    }
}
