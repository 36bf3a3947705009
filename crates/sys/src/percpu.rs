//! Cache-line padding and an array with one padded slot per CPU.

use core::fmt;
use core::ops::{Deref, DerefMut};

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;

/// Bytes one value is padded to by [`CachePadded`].
///
/// 128 on x86-64, AArch64 and POWER, whose prefetchers pull cache lines in
/// pairs (so 64 bytes apart still share traffic); 64 elsewhere.
pub const CACHE_PAD: usize = core::mem::align_of::<CachePadded<u8>>();

/// A value aligned and padded to [`CACHE_PAD`] bytes, so two of them never
/// share a cache line (nor an adjacent-line prefetch pair).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64"
    ),
    repr(align(128))
)]
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64"
    )),
    repr(align(64))
)]
pub struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Pads `value`.
    pub const fn new(value: T) -> Self {
        CachePadded { value }
    }

    /// Returns the value.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for CachePadded<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for CachePadded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CachePadded").field(&self.value).finish()
    }
}

/// One [`CachePadded`] slot per CPU, indexed by [`current_cpu`](crate::current_cpu).
///
/// The array only places the slots; it does not make them safe to share. Slots
/// are reached through `&T`, so `T` brings its own synchronisation (a lock, or
/// atomics) — the thread that reads its CPU id may be migrated a moment later,
/// and another thread may then use the same slot.
///
/// The slot storage is allocated from `A`, so an allocator can keep its own
/// per-CPU state without calling the global allocator.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use kmem_sys::PerCpu;
///
/// let hits = PerCpu::new(|_cpu| AtomicU64::new(0));
/// hits.current().fetch_add(1, Ordering::Relaxed);
/// let total: u64 = hits.iter().map(|h| h.load(Ordering::Relaxed)).sum();
/// assert_eq!(total, 1);
/// ```
pub struct PerCpu<T, A: Allocator = Global> {
    slots: Box<[CachePadded<T>], A>,
}

impl<T> PerCpu<T> {
    /// One slot per configured CPU, slot `i` built by `init(i)`.
    pub fn new(init: impl FnMut(usize) -> T) -> Self {
        Self::with_len_in(crate::cpu_count(), init, Global)
    }
}

impl<T, A: Allocator> PerCpu<T, A> {
    /// One slot per configured CPU, with the storage taken from `alloc`.
    pub fn new_in(init: impl FnMut(usize) -> T, alloc: A) -> Self {
        Self::with_len_in(crate::cpu_count(), init, alloc)
    }

    /// `len` slots (at least one) with the storage taken from `alloc`; CPU ids
    /// past `len` wrap around. Useful for tests and for per-thread arrays.
    pub fn with_len_in(len: usize, mut init: impl FnMut(usize) -> T, alloc: A) -> Self {
        let len = len.max(1);
        let mut slots = Vec::with_capacity_in(len, alloc);
        for i in 0..len {
            slots.push(CachePadded::new(init(i)));
        }
        PerCpu {
            slots: slots.into_boxed_slice(),
        }
    }

    /// Number of slots.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: there is at least one slot.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slot for `cpu` (wrapping past the slot count).
    #[inline]
    pub fn get(&self, cpu: usize) -> &T {
        &self.slots[self.index(cpu)]
    }

    /// The slot for the calling thread's current CPU.
    #[inline]
    pub fn current(&self) -> &T {
        self.get(crate::current_cpu())
    }

    /// The index of the calling thread's current slot, with the slot.
    #[inline]
    pub fn current_indexed(&self) -> (usize, &T) {
        let i = self.index(crate::current_cpu());
        (i, &self.slots[i])
    }

    /// `cpu` folded into the slot range. With a slot per CPU it is already
    /// in range, and the compare saves the division (tens of cycles) that a
    /// plain `%` costs on every per-CPU access.
    #[inline]
    fn index(&self, cpu: usize) -> usize {
        let n = self.slots.len();
        if cpu < n { cpu } else { cpu % n }
    }

    /// All slots in CPU order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> {
        self.slots.iter().map(|s| &**s)
    }

    /// All slots in CPU order, mutably.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = &mut T> {
        self.slots.iter_mut().map(|s| &mut **s)
    }
}

impl<T: fmt::Debug, A: Allocator> fmt::Debug for PerCpu<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn slots_sit_on_separate_cache_lines() {
        assert!(CACHE_PAD >= 64 && CACHE_PAD.is_power_of_two());
        assert_eq!(core::mem::size_of::<CachePadded<u8>>(), CACHE_PAD);
        let pc = PerCpu::with_len_in(4, |_| AtomicUsize::new(0), Global);
        let addrs: std::vec::Vec<usize> = pc.iter().map(|s| s as *const _ as usize).collect();
        for pair in addrs.windows(2) {
            assert_eq!(pair[1] - pair[0], CACHE_PAD);
        }
        for a in &addrs {
            assert_eq!(a % CACHE_PAD, 0, "slot at {a:#x} is not line-aligned");
        }
    }

    #[test]
    fn index_wraps_and_init_sees_index() {
        let pc = PerCpu::with_len_in(3, |i| i * 10, Global);
        assert_eq!(pc.len(), 3);
        assert_eq!(*pc.get(1), 10);
        assert_eq!(*pc.get(5), 20);
        let (i, v) = pc.current_indexed();
        assert_eq!(*v, i * 10);
    }

    #[test]
    fn current_slot_is_shared_state() {
        let pc = PerCpu::new(|_| AtomicUsize::new(0));
        assert_eq!(pc.len(), crate::cpu_count());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        pc.current().fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let total: usize = pc.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 4000);
    }
}
