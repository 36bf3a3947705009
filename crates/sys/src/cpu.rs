//! Which CPU is this thread on, and how many CPUs are there.
//!
//! On Linux the CPU id comes from `sched_getcpu` (a vDSO call, ≈3.6 ns on the
//! reference machine). Where the OS has no such call, or it fails, each thread
//! gets a stable slot instead: a number handed out once per thread, taken
//! modulo the CPU count. Either way the answer is only a hint — the thread may
//! migrate right after — so callers index per-CPU state with it and then own or
//! lock that state.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static CPU_COUNT: AtomicUsize = AtomicUsize::new(0);
static NEXT_THREAD_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and free of `Drop`, so touching it never allocates or registers a
    // destructor: safe to use from inside a global allocator.
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Number of CPUs the system is configured with (at least 1), cached after the
/// first call.
///
/// This is the configured count, not the online count, because `sched_getcpu`
/// can return the id of any configured CPU.
pub fn cpu_count() -> usize {
    let cached = CPU_COUNT.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let n = query_cpu_count().max(1);
    CPU_COUNT.store(n, Ordering::Relaxed);
    n
}

fn query_cpu_count() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The CPU this thread is running on, in `0..cpu_count()`.
///
/// Uses `sched_getcpu` on Linux and falls back to [`thread_slot`] modulo the
/// CPU count elsewhere or when the call fails.
#[inline]
pub fn current_cpu() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sched_getcpu has no preconditions; it returns -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu >= 0 {
            let cpu = cpu as usize;
            let n = cpu_count();
            // Hot-plugged CPUs can report ids past the configured count.
            return if cpu < n { cpu } else { cpu % n };
        }
    }
    thread_slot() % cpu_count()
}

/// A small number that identifies the calling thread and never changes for its
/// lifetime: 0 for the first thread that asks, 1 for the next, and so on.
///
/// Numbers are not reused when threads exit. Costs one thread-local read after
/// the first call; never allocates.
#[inline]
pub fn thread_slot() -> usize {
    THREAD_SLOT
        .try_with(|slot| {
            let v = slot.get();
            if v != usize::MAX {
                return v;
            }
            let v = NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed);
            slot.set(v);
            v
        })
        // During thread teardown the slot may be gone; any stable-enough
        // answer will do for a placement hint.
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_cpu_is_in_range() {
        let n = cpu_count();
        assert!(n >= 1);
        for _ in 0..1000 {
            assert!(current_cpu() < n);
        }
    }

    #[test]
    fn thread_slot_is_stable_and_distinct() {
        let mine = thread_slot();
        assert_eq!(mine, thread_slot());
        let other = std::thread::spawn(thread_slot).join().unwrap();
        assert_ne!(mine, other);
    }

    #[test]
    fn cpu_count_matches_the_os() {
        // The configured count is never below what std reports as usable.
        let usable = std::thread::available_parallelism().unwrap().get();
        assert!(cpu_count() >= usable, "{} < {usable}", cpu_count());
    }
}
