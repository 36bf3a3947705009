//! Locks that never allocate: a futex [`Mutex`] and [`Condvar`] with
//! parking_lot's API.
//!
//! `parking_lot` keeps waiting threads in a global hash table that it grows
//! through the *global allocator* the first time a new thread parks. When the
//! global allocator is itself built on those locks (as `kmem::Kmem` is), that
//! allocation re-enters the allocator while parking_lot holds its bucket locks
//! and can deadlock — the hazard described in parking_lot PR #305 and the
//! dhat-rs deadlock reports. These locks keep all their state in one `u32`
//! and wait with the `futex` system call, so they are safe anywhere an
//! allocator runs. On other systems waiting falls back to yielding.
//!
//! The API is parking_lot's (through [`lock_api`]): `lock()` returns a guard,
//! no poisoning, and [`Condvar::wait`] takes `&mut guard`. Crates pick these or
//! loom's primitives in their own `sync` module.
//!
//! ```
//! use kmem_sys::sync::{Condvar, Mutex};
//! use std::time::Duration;
//!
//! let m = Mutex::new(0);
//! let cv = Condvar::new();
//! let mut g = m.lock();
//! *g += 1;
//! // Nobody notifies, so this times out.
//! assert!(cv.wait_for(&mut g, Duration::from_millis(1)).timed_out());
//! assert_eq!(*g, 1);
//! ```

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A mutual-exclusion lock over a futex: one word, no allocation.
pub type Mutex<T> = lock_api::Mutex<RawFutexMutex, T>;
/// The guard of a [`Mutex`]; unlocks on drop.
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawFutexMutex, T>;

/// A lock for critical sections of a few instructions that are rarely
/// contended, such as per-CPU magazine slots: [`Mutex`]'s API, but unlocking
/// is a plain release store instead of an atomic swap, so an uncontended
/// lock and unlock cost one atomic operation, not two. The price is that a
/// waiter cannot sleep on the word: it spins briefly, then yields the CPU
/// until the lock is free, so hold it for short sections only. A section
/// may take another lock for a moment (per-CPU magazine slots are held
/// across a depot exchange, as the seed holds `cc_lock`); waiters yield
/// meanwhile.
pub type SpinMutex<T> = lock_api::Mutex<RawSpinMutex, T>;
/// The guard of a [`SpinMutex`]; unlocks on drop.
pub type SpinMutexGuard<'a, T> = lock_api::MutexGuard<'a, RawSpinMutex, T>;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and some thread may be sleeping on the word.
const CONTENDED: u32 = 2;

/// The raw lock behind [`Mutex`]: the three-state futex mutex (unlocked,
/// locked, locked with waiters), so an uncontended lock and unlock cost one
/// atomic each and never enter the kernel.
pub type RawFutexMutex = RawLock<Sleep>;
/// The raw lock behind [`SpinMutex`]: test-and-test-and-set on one word.
pub type RawSpinMutex = RawLock<Spin>;

/// One lock word, waited for and released by the policy `W`.
pub struct RawLock<W> {
    word: AtomicU32,
    _wait: PhantomData<W>,
}

/// How a [`RawLock`] waits for its word and releases it. Sealed: the lock's
/// exclusion rests on these two functions, so only [`Sleep`] and [`Spin`]
/// implement it.
pub trait Wait: sealed::Sealed + Send + Sync + 'static {
    /// Waits until the lock is taken; called after a failed first try.
    fn lock_contended(word: &AtomicU32);
    /// Releases a held lock.
    fn unlock(word: &AtomicU32);
}

mod sealed {
    /// Keeps [`Wait`](super::Wait) to this module's policies.
    pub trait Sealed {}
    impl Sealed for super::Sleep {}
    impl Sealed for super::Spin {}
}

/// Waiters spin briefly, then sleep on the futex; unlock swaps the word to
/// learn whether one sleeps.
pub enum Sleep {}
/// Waiters spin, then yield; unlock is a plain release store.
pub enum Spin {}

/// Moves a lock word from unlocked to locked, with acquire ordering; false
/// if it was not unlocked.
#[inline]
fn try_acquire(word: &AtomicU32) -> bool {
    word.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// [`try_acquire`] only if the word looks free: waiters spin on a load,
/// which leaves the cache line shared.
#[inline]
fn try_acquire_free(word: &AtomicU32) -> bool {
    word.load(Ordering::Relaxed) == UNLOCKED && try_acquire(word)
}

/// A short spin for a contended lock: `true` once acquired within it.
/// It catches the common case of a holder running on another CPU, done
/// within a few instructions, without a system call or a yield.
#[inline]
fn spin_acquire(word: &AtomicU32) -> bool {
    for _ in 0..100 {
        if try_acquire_free(word) {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

impl Wait for Sleep {
    #[cold]
    fn lock_contended(word: &AtomicU32) {
        if spin_acquire(word) {
            return;
        }
        // From here on we may sleep, so mark the lock contended: whoever
        // unlocks it will then wake a sleeper.
        while word.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(word, CONTENDED, None);
        }
    }

    #[inline]
    fn unlock(word: &AtomicU32) {
        if word.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake(word, 1);
        }
    }
}

impl Wait for Spin {
    #[cold]
    fn lock_contended(word: &AtomicU32) {
        if spin_acquire(word) {
            return;
        }
        // The holder was preempted: only yielding lets it on.
        while !try_acquire_free(word) {
            std::thread::yield_now();
        }
    }

    #[inline]
    fn unlock(word: &AtomicU32) {
        word.store(UNLOCKED, Ordering::Release);
    }
}

// SAFETY: `lock` and `try_lock` succeed only after moving the word from
// UNLOCKED to LOCKED (or, waiting with `Sleep`, to CONTENDED) with acquire
// ordering, and both policies' `unlock` leave it UNLOCKED with release
// ordering, so at most one guard exists at a time.
unsafe impl<W: Wait> lock_api::RawMutex for RawLock<W> {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawLock {
        word: AtomicU32::new(UNLOCKED),
        _wait: PhantomData,
    };

    type Guard = lock_api::GuardSend;

    #[inline]
    fn lock(&self) -> Self::Guard {
        if !try_acquire(&self.word) {
            W::lock_contended(&self.word);
        }
        lock_api::GuardSend::new()
    }

    #[inline]
    fn try_lock(&self) -> Option<Self::Guard> {
        try_acquire(&self.word).then(lock_api::GuardSend::new)
    }

    #[inline]
    unsafe fn unlock(&self, _guard: Self::Guard) {
        W::unlock(&self.word);
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != UNLOCKED
    }
}

/// Whether a timed wait returned because its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended because the timeout elapsed.
    pub fn timed_out(self) -> bool {
        self.0
    }
}

/// A condition variable over a futex sequence word: one word, no allocation.
///
/// As with every condition variable, wake-ups can be spurious: wait in a loop
/// that re-checks the condition.
pub struct Condvar {
    seq: AtomicU32,
}

impl Default for Condvar {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Condvar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Condvar { .. }")
    }
}

impl Condvar {
    /// A condition variable with no waiters.
    pub const fn new() -> Self {
        Condvar {
            seq: AtomicU32::new(0),
        }
    }

    /// Unlocks the guard's mutex, sleeps until notified, and locks it again.
    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        self.wait_inner(guard, None);
    }

    /// Like [`wait`](Condvar::wait), but gives up after `timeout`.
    pub fn wait_for<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeoutResult {
        self.wait_inner(guard, Some(timeout))
    }

    /// Like [`wait`](Condvar::wait), but gives up at `deadline`.
    pub fn wait_until<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        deadline: Instant,
    ) -> WaitTimeoutResult {
        let timeout = deadline.saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return WaitTimeoutResult(true);
        }
        self.wait_inner(guard, Some(timeout))
    }

    fn wait_inner<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Option<Duration>,
    ) -> WaitTimeoutResult {
        // Read the sequence while still holding the lock: a notify that
        // happens after we unlock changes it, and the futex wait then returns
        // at once instead of missing the wake-up.
        let seq = self.seq.load(Ordering::Relaxed);
        let timed_out = MutexGuard::unlocked(guard, || futex_wait(&self.seq, seq, timeout));
        WaitTimeoutResult(timed_out)
    }

    /// Wakes one waiting thread, if any.
    pub fn notify_one(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        futex_wake(&self.seq, 1);
    }

    /// Wakes every waiting thread.
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        futex_wake(&self.seq, i32::MAX);
    }
}

/// Sleeps while `*word == expected`, at most `timeout`; true if it timed out.
#[cfg(target_os = "linux")]
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the duration of the call and
    // `ts_ptr` is null or points at a timespec on our stack.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
        )
    };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
}

/// Wakes up to `n` threads sleeping on `word`.
#[cfg(target_os = "linux")]
fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

/// Without futexes, a waiter yields once and re-checks: correct (callers loop)
/// though not efficient.
#[cfg(not(target_os = "linux"))]
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    let start = Instant::now();
    std::thread::yield_now();
    word.load(Ordering::Relaxed) == expected && timeout.is_some_and(|t| start.elapsed() >= t)
}

#[cfg(not(target_os = "linux"))]
fn futex_wake(_word: &AtomicU32, _n: i32) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Additions per thread in `excludes_under_contention`; Miri, which
    /// preempts threads at random points of its own, needs far fewer to
    /// interleave them and takes minutes over the full count.
    const ADDS: u64 = if cfg!(miri) { 500 } else { 20_000 };

    /// Eight threads (more than CPUs, so holders are preempted while
    /// others wait) each add [`ADDS`] times under the lock, non-atomically:
    /// lost updates would show in the total if exclusion failed.
    fn excludes_under_contention<W: Wait>() {
        let m = Arc::new(lock_api::Mutex::<RawLock<W>, u64>::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let m = &m;
                s.spawn(move || {
                    for _ in 0..ADDS {
                        let mut g = m.lock();
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                    }
                });
            }
        });
        assert_eq!(*m.lock(), 8 * ADDS);
    }

    #[test]
    fn mutex_excludes_under_contention() {
        excludes_under_contention::<Sleep>();
    }

    #[test]
    fn spin_mutex_excludes_under_contention() {
        excludes_under_contention::<Spin>();
    }

    #[test]
    fn try_lock_fails_while_held() {
        fn with<W: Wait>() {
            let m = lock_api::Mutex::<RawLock<W>, ()>::new(());
            let g = m.lock();
            assert!(m.try_lock().is_none());
            assert!(m.is_locked());
            drop(g);
            assert!(!m.is_locked());
            assert!(m.try_lock().is_some());
        }
        with::<Sleep>();
        with::<Spin>();
    }

    #[test]
    fn condvar_wakes_a_waiter() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = Arc::clone(&pair);
        let t = std::thread::spawn(move || {
            let (m, cv) = &*p2;
            let mut ready = m.lock();
            while !*ready {
                cv.wait(&mut ready);
            }
            true
        });
        std::thread::sleep(Duration::from_millis(20));
        *pair.0.lock() = true;
        pair.1.notify_all();
        assert!(t.join().unwrap());
    }

    #[test]
    fn timed_wait_times_out_and_relocks() {
        let m = Mutex::new(5);
        let cv = Condvar::new();
        let mut g = m.lock();
        let start = Instant::now();
        let r = cv.wait_for(&mut g, Duration::from_millis(20));
        assert!(r.timed_out());
        assert!(start.elapsed() >= Duration::from_millis(15));
        assert!(
            m.is_locked(),
            "the guard holds the lock again after the wait"
        );
        *g += 1;
        drop(g);
        assert_eq!(*m.lock(), 6);
        let mut g = m.lock();
        assert!(cv.wait_until(&mut g, Instant::now()).timed_out());
    }
}
