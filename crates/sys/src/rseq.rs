//! The CPU id the kernel keeps in each thread's restartable-sequences area.
//!
//! Since glibc 2.35 every thread glibc creates is registered with the
//! kernel's `rseq` facility, and glibc exports where the area lives:
//! `__rseq_offset` (a `ptrdiff_t`: the `struct rseq` sits at thread pointer +
//! offset) and `__rseq_size` (0 when registration is off, for example under
//! `GLIBC_TUNABLES=glibc.pthread.rseq=0`). The kernel rewrites the area's
//! `cpu_id` field (a `u32` at byte 4) whenever it returns the thread to user
//! space on a different CPU, so the current CPU is one load relative to the
//! thread pointer — what `curcpu` is in the seeds (`CPU->cpu_cache_offset` in
//! illumos `kmem_cache_alloc`, `curcpu` in UMA's `uma_zalloc_arg`) — instead
//! of a call into the vDSO's `getcpu`.
//!
//! The two symbols are looked up once with `dlsym(RTLD_DEFAULT, ..)` rather
//! than linked, because older glibc and musl do not have them and a binary
//! that named them would not load there. The answer is cached in one atomic:
//! unknown, unavailable, or the offset itself. Resolution is racy but
//! idempotent — every thread that races computes and stores the same value.
//!
//! The module is compiled on Linux for x86_64 (thread pointer in `%fs`) and
//! aarch64 (`tpidr_el0`) only; elsewhere `current_cpu` goes straight to
//! `sched_getcpu` or the per-thread slot.

use std::sync::atomic::{AtomicIsize, Ordering};

/// Not looked up yet. No real offset is this negative: the area lies within
/// the thread's static TLS block, a few KiB from the thread pointer.
const UNKNOWN: isize = isize::MIN;
/// Looked up, and the running libc does not provide a registered rseq area.
const UNAVAILABLE: isize = isize::MIN + 1;

/// Byte offset of `cpu_id` in the kernel's `struct rseq` (after
/// `cpu_id_start: u32`).
const CPU_ID_FIELD: isize = 4;
/// The area must hold at least `cpu_id_start` and `cpu_id`.
const MIN_AREA_SIZE: u32 = 8;

/// `__rseq_offset + CPU_ID_FIELD`, or [`UNKNOWN`] / [`UNAVAILABLE`].
static CPU_ID_OFFSET: AtomicIsize = AtomicIsize::new(UNKNOWN);

/// The raw `cpu_id` of the calling thread's rseq area, or `None` when this
/// platform or libc has none.
///
/// The value is the kernel's: a CPU id, or `u32::MAX` (`-1`,
/// `RSEQ_CPU_ID_UNINITIALIZED`) / `u32::MAX - 1` (`-2`,
/// `RSEQ_CPU_ID_REGISTRATION_FAILED`) for a thread that is not registered
/// (one created by a raw `clone`, say); the caller checks the range.
#[inline]
pub(crate) fn cpu_id() -> Option<u32> {
    let offset = CPU_ID_OFFSET.load(Ordering::Relaxed);
    if offset <= UNAVAILABLE {
        return cpu_id_slow(offset);
    }
    // SAFETY: `offset` came from `resolve`, which only stores the offset
    // glibc exports for the area it registered in every thread's static TLS
    // block, and only when `__rseq_size` says the area (and so `cpu_id`)
    // exists.
    Some(unsafe { read_cpu_id(offset) })
}

/// First use (resolve, then read) or no rseq at all.
#[cold]
#[inline(never)]
fn cpu_id_slow(offset: isize) -> Option<u32> {
    let offset = if offset == UNKNOWN { resolve() } else { offset };
    if offset == UNAVAILABLE {
        return None;
    }
    // SAFETY: as in `cpu_id`: a resolved offset of a registered area.
    Some(unsafe { read_cpu_id(offset) })
}

/// Whether this process reads the CPU id from rseq (resolving if needed).
#[cfg(test)]
pub(crate) fn available() -> bool {
    let offset = CPU_ID_OFFSET.load(Ordering::Relaxed);
    let offset = if offset == UNKNOWN { resolve() } else { offset };
    offset != UNAVAILABLE
}

/// Looks up `__rseq_offset` / `__rseq_size` and caches the result.
#[cold]
fn resolve() -> isize {
    let offset = lookup().unwrap_or(UNAVAILABLE);
    CPU_ID_OFFSET.store(offset, Ordering::Relaxed);
    offset
}

fn lookup() -> Option<isize> {
    // dlsym may allocate through glibc's own malloc (its error buffer), never
    // through the Rust global allocator, so this is safe to reach from inside
    // a `GlobalAlloc`.
    // SAFETY: RTLD_DEFAULT with NUL-terminated names; dlsym has no other
    // preconditions and returns null when a symbol is missing.
    let (offset, size) = unsafe {
        (
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()),
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()),
        )
    };
    if offset.is_null() || size.is_null() {
        return None;
    }
    // SAFETY: glibc declares `const unsigned int __rseq_size` and `const
    // ptrdiff_t __rseq_offset`; both are set before any user code runs and
    // never change afterwards.
    let (offset, size) = unsafe { (*offset.cast::<isize>(), *size.cast::<u32>()) };
    (size >= MIN_AREA_SIZE).then_some(offset + CPU_ID_FIELD)
}

/// Loads the `u32` at thread pointer + `offset`.
///
/// # Safety
///
/// `offset` must be the resolved offset of `cpu_id` in the calling thread's
/// registered rseq area.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn read_cpu_id(offset: isize) -> u32 {
    let id: u32;
    // One `%fs`-relative load. The kernel may rewrite the field at any return
    // to user space, but a 4-byte aligned load is never torn and the asm is
    // not `pure`, so every call reads afresh.
    // SAFETY: per the contract, fs:offset is the live, aligned `cpu_id` of
    // this thread's rseq area.
    unsafe {
        core::arch::asm!(
            "mov {id:e}, dword ptr fs:[{offset}]",
            id = lateout(reg) id,
            offset = in(reg) offset,
            options(nostack, readonly, preserves_flags),
        );
    }
    id
}

/// Loads the `u32` at thread pointer + `offset`.
///
/// # Safety
///
/// `offset` must be the resolved offset of `cpu_id` in the calling thread's
/// registered rseq area.
#[cfg(target_arch = "aarch64")]
#[inline]
unsafe fn read_cpu_id(offset: isize) -> u32 {
    let tp: *const u8;
    // SAFETY: reading tpidr_el0 (the user thread pointer) has no side effects.
    unsafe {
        core::arch::asm!(
            "mrs {tp}, tpidr_el0",
            tp = out(reg) tp,
            options(nomem, nostack, preserves_flags),
        );
    }
    // SAFETY: per the contract, tp + offset is the live, aligned `cpu_id` of
    // this thread's rseq area; a volatile load reads what the kernel last
    // wrote.
    unsafe { tp.offset(offset).cast::<u32>().read_volatile() }
}
