//! Which CPU is this thread on, and how many CPUs are there.
//!
//! On Linux with glibc 2.35 or later, x86_64 or aarch64, the CPU id is one
//! load from the thread's restartable-sequences area, which the kernel keeps
//! current (see the `rseq` module: ≈0.5 ns against ≈3.6 ns for the vDSO call
//! on the reference machine). Where that area is missing — older glibc, musl,
//! rseq disabled with `GLIBC_TUNABLES=glibc.pthread.rseq=0`, a thread the
//! kernel has not registered — it comes from `sched_getcpu`. Where the OS has
//! no such call, or it fails, each thread gets a stable slot instead: a number
//! handed out once per thread, taken modulo the CPU count. Under Miri, which
//! runs no foreign code, the slot is the answer too, so code that indexes
//! per-CPU state can be checked there. Either way the answer is only a hint
//! — the thread may migrate right after — so callers index per-CPU state
//! with it and then own or lock that state.

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
/// Reads the kernel's rseq `cpu_id` where glibc registered one (a
/// thread-pointer-relative load), else calls `sched_getcpu`, else falls back
/// to [`thread_slot`] modulo the CPU count. Ids of hot-plugged CPUs past the
/// configured count are folded back into range.
#[inline]
pub fn current_cpu() -> usize {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64"),
        not(miri)
    ))]
    if let Some(id) = crate::rseq::cpu_id() {
        let id = id as usize;
        // Also false before the count is cached, and for the negative
        // "not registered" ids, which read as huge.
        if id < CPU_COUNT.load(Ordering::Relaxed) {
            return id;
        }
        return unusual_cpu_id(id);
    }
    fallback_cpu()
}

/// An rseq id that is not plainly in range: the count is not cached yet, the
/// CPU was hot-plugged past the configured count, or the thread is not
/// registered (`RSEQ_CPU_ID_UNINITIALIZED` / `_REGISTRATION_FAILED`, -1 / -2
/// as `u32`).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri)
))]
#[cold]
#[inline(never)]
fn unusual_cpu_id(id: usize) -> usize {
    if id as u32 as i32 >= 0 {
        id % cpu_count()
    } else {
        fallback_cpu()
    }
}

/// `current_cpu` without rseq: `sched_getcpu` on Linux, else the thread slot.
#[inline]
pub(crate) fn fallback_cpu() -> usize {
    #[cfg(all(target_os = "linux", not(miri)))]
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
            assert!(fallback_cpu() < n);
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

    #[cfg(target_os = "linux")]
    mod pinned {
        use super::super::*;

        // The `rseq` module where it is compiled (on Linux: x86_64 or
        // aarch64, not Miri), else a stand-in that never finds an rseq area,
        // so that the tests below need no `cfg` of their own.
        #[cfg(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri)))]
        use crate::rseq;

        #[cfg(not(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri))))]
        mod rseq {
            /// No rseq area on this target.
            pub(super) fn available() -> bool {
                false
            }

            /// No rseq area, so no CPU id from it.
            pub(super) fn cpu_id() -> Option<u32> {
                None
            }
        }

        fn affinity() -> libc::cpu_set_t {
            // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set` is a writable cpu_set_t of the size passed.
            let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
            assert_eq!(
                rc,
                0,
                "sched_getaffinity: {}",
                std::io::Error::last_os_error()
            );
            set
        }

        fn set_affinity(set: &libc::cpu_set_t) {
            // SAFETY: `set` is a valid cpu_set_t of the size passed.
            let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) };
            assert_eq!(
                rc,
                0,
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            );
        }

        fn sched_getcpu() -> usize {
            // SAFETY: no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            assert!(
                cpu >= 0,
                "sched_getcpu: {}",
                std::io::Error::last_os_error()
            );
            cpu as usize
        }

        /// Pins the calling thread to each CPU it may run on in turn and
        /// checks that `current_cpu` (and, when asked, the raw rseq id)
        /// names that CPU, as `sched_getcpu` does; restores the mask.
        pub(super) fn agrees_with_sched_getcpu_on_every_cpu(expect_rseq: bool) {
            let allowed = affinity();
            let n = cpu_count();
            let mut visited = 0;
            for cpu in 0..libc::CPU_SETSIZE as usize {
                // SAFETY: `cpu` < CPU_SETSIZE, the set's capacity.
                if !unsafe { libc::CPU_ISSET(cpu, &allowed) } {
                    continue;
                }
                // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
                let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: `cpu` < CPU_SETSIZE, the set's capacity.
                unsafe { libc::CPU_SET(cpu, &mut one) };
                set_affinity(&one);
                for _ in 0..200 {
                    assert_eq!(sched_getcpu(), cpu);
                    assert_eq!(current_cpu(), cpu % n, "current_cpu pinned to {cpu}");
                    assert_eq!(fallback_cpu(), cpu % n, "fallback pinned to {cpu}");
                    if expect_rseq {
                        assert_eq!(rseq::cpu_id(), Some(cpu as u32), "rseq pinned to {cpu}");
                    }
                }
                visited += 1;
            }
            set_affinity(&allowed);
            assert!(visited >= 1);
            // SAFETY: two valid sets.
            let restored = unsafe { libc::CPU_EQUAL(&affinity(), &allowed) };
            assert!(restored, "affinity mask not restored");
        }

        #[test]
        #[cfg_attr(
            miri,
            ignore = "pins the thread with sched_setaffinity and asks sched_getcpu, which Miri cannot"
        )]
        fn current_cpu_agrees_with_sched_getcpu() {
            let expect_rseq = rseq::available();
            // A thread of its own, so a failed assertion cannot leave the
            // test harness's thread pinned.
            std::thread::spawn(move || agrees_with_sched_getcpu_on_every_cpu(expect_rseq))
                .join()
                .unwrap();
        }

        /// Set in the child process of `fallback_when_rseq_is_off`.
        const CHILD: &str = "KMEM_SYS_RSEQ_OFF_CHILD";

        /// With glibc's rseq registration switched off the lookup must find
        /// nothing and every answer must come from the fallback, still right.
        /// Runs itself in a child process, because the tunable is read at
        /// startup and the lookup is cached per process.
        #[test]
        #[cfg_attr(
            miri,
            ignore = "runs this test binary again as a child process, which Miri cannot"
        )]
        fn fallback_when_rseq_is_off() {
            if std::env::var_os(CHILD).is_some() {
                assert!(!rseq::available(), "rseq still on in the child");
                agrees_with_sched_getcpu_on_every_cpu(false);
                return;
            }
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "cpu::tests::pinned::fallback_when_rseq_is_off"])
                .args(["--test-threads=1", "--nocapture"])
                .env(CHILD, "1")
                .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "child failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The filter must have matched, or the child proved nothing.
            assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
        }
    }
}
