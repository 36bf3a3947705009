//! The one place that picks `loom` or real primitives.
//!
//! The depot lock, the per-CPU slot locks and the depot's counters come from
//! here, so the loom models in `src/tests/loom_*.rs` exercise the code that
//! ships. Outside loom the lock is `kmem_sys::sync::Mutex`, a futex lock that
//! never allocates (parking_lot grows its parking table through the global
//! allocator, which the facade's `GlobalAlloc` sits on). The per-thread
//! registry in [`crate::thread`] is the exception: it lives in `static`s, which
//! loom cannot model, and uses `kmem_sys::sync` and `core` atomics directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = kmem_sys::sync::MutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// The lock of a per-CPU slot. Its critical sections are a few instructions
/// and contended only when a thread migrates or is preempted inside one, so
/// outside loom it is `kmem_sys::sync::SpinMutex`, whose unlock is a plain
/// store: half the atomic operations of the futex lock on every per-CPU
/// hit. A slot lock is held across depot exchanges, as the seed holds
/// `cc_lock` across `kmem_depot_alloc`; a waiter for a slot whose holder
/// waits on the depot lock yields meanwhile.
#[cfg(not(loom))]
pub(crate) type SlotMutex<T> = kmem_sys::sync::SpinMutex<T>;
#[cfg(loom)]
pub(crate) type SlotMutex<T> = Mutex<T>;

/// A mutex with the two operations the magazine layer needs: `lock` and
/// `try_lock` (the depot counts failed tries as contention, as the seed does).
#[derive(Debug)]
pub(crate) struct Mutex<T> {
    #[cfg(not(loom))]
    inner: kmem_sys::sync::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex {
            #[cfg(not(loom))]
            inner: kmem_sys::sync::Mutex::new(value),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        {
            self.inner.lock()
        }
        #[cfg(loom)]
        {
            self.inner.lock().expect("loom mutex poisoned")
        }
    }

    #[inline]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        #[cfg(not(loom))]
        {
            self.inner.try_lock()
        }
        #[cfg(loom)]
        {
            self.inner.try_lock().ok()
        }
    }

    /// The value, through exclusive access (no locking).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        {
            self.inner.get_mut()
        }
        #[cfg(loom)]
        {
            self.inner.get_mut().expect("loom mutex poisoned")
        }
    }
}
