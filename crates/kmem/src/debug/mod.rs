//! illumos kmem debugging: audit, deadbeef, redzones, contents, firewall,
//! and the transaction, content, failure and slab logs.
//!
//! # Theory
//!
//! A cache built with [`CacheBuilder::debug`](crate::CacheBuilder::debug)
//! (or, through `KMEM_DEBUG`, every `kmem_alloc` size class under
//! [`Kmem`](crate::Kmem)) resolves its [`DebugFlags`] by the seed's rules
//! ([`DebugFlags::resolve`], after illumos `kmem_cache_create`) and runs
//! without magazines: each allocation and free goes to the keg and through
//! the checks here, which follow illumos `kmem_cache_alloc_debug` and
//! `kmem_cache_free_debug`. A cache without flags keeps its magazine fast
//! path untouched — the checks sit only on the no-magazine branch, and the
//! size classes' thread magazines simply stay unloaded when debugging, so
//! every call misses them and reaches the slow path where the hook is.
//!
//! Each buffer of a tagged cache carries, after its bytes, a redzone (every
//! byte up to the tag is [`REDZONE_BYTE`]) and a `kmem_buftag_t`: the
//! redzone word [`REDZONE_PATTERN`] (for `kmem_alloc`, half of it holds the
//! requested size, [`size_encode`]), the bufctl (the buffer's inline audit
//! record with `AUDIT`, else the buffer), and `bxstat = bufctl ^
//! BUFTAG_ALLOC` or `^ BUFTAG_FREE`, which tells an allocated buffer from a
//! free one and catches double frees. A freed buffer is filled with
//! [`FREE_PATTERN`] (`deadbeef`), checked and overwritten with
//! [`UNINITIALIZED_PATTERN`] when handed out again. The keg keeps its
//! free-list link outside the buffer, so a free buffer holds nothing else.
//!
//! | flag (seed)      | [`DebugFlags`]      | effect here |
//! |------------------|---------------------|-------------|
//! | `KMF_AUDIT`      | `AUDIT`             | thread, time and stack per transaction, in the buffer's record and [`transaction_log`]; implies `REDZONE` |
//! | `KMF_DEADBEEF`   | `DEADBEEF`          | free pattern, verified on reuse and by [`verify`]; implies `REDZONE` |
//! | `KMF_REDZONE`    | `REDZONE`           | guard bytes and word after each buffer, checked on free; size check for `kmem_alloc` |
//! | `KMF_CONTENTS`   | `CONTENTS`          | first 256 bytes of each freed buffer to [`content_log`]; dropped without `AUDIT` |
//! | `KMF_LITE`       | `LITE`              | buftag and redzone, first word of the pattern only, last 4 threads in the tag; drops `AUDIT`, `FIREWALL` |
//! | `KMF_FIREWALL`   | `FIREWALL`          | each buffer ends at an unmapped page; drops the buftag (as the seed does) |
//! | `KMF_NOMAGAZINE` | `NOMAGAZINE`        | always set once any flag is: the checks live on the no-magazine path |
//! | `KMF_HASH`       | `HASH`              | set for tagged caches: buffers are found through the keg's slab hash |
//! | `KMF_BUFTAG`     | `BUFTAG`            | `DEADBEEF \| REDZONE` |
//! | `KMF_TOUCH`      | `TOUCH`             | `BUFTAG \| LITE \| CONTENTS` |
//!
//! Errors are the seed's classes ([`ErrorClass`]). Each becomes a
//! [`Report`] printed in `kmem_error`'s words — cache, buffer, bufctl,
//! offset and the value found where the pattern should be, and with `AUDIT`
//! the buffer's last transactions with their stacks — kept for
//! [`reports`], and then acted on: panic (default), abort, or continue
//! ([`set_action`], or per cache with
//! [`CacheBuilder::on_error`](crate::CacheBuilder::on_error)). A buffer
//! found bad is never reused: an allocation quarantines it and takes
//! another, a free leaves it allocated.
//!
//! The logs ([`transaction_log`], [`content_log`], [`failure_log`],
//! [`slab_log`]) are bounded per-CPU rings in [`Meta`](crate::Meta) memory
//! (illumos `kmem_log_enter`), created when the first auditing cache is
//! built; stacks are raw return addresses, symbolized only when printed.
//!
//! # `KMEM_DEBUG`
//!
//! Read once (with `getenv`, which does not allocate) when `Kmem` or
//! `kmem_alloc` first sets up its size classes; libumem's `UMEM_DEBUG`
//! shape, comma-separated: `default` (audit, deadbeef, redzone, contents),
//! `audit`, `contents`, `deadbeef`, `redzone`, `guards`, `lite`,
//! `nomagazine`, `firewall=SIZE` (requests of at least SIZE bytes, `k`/`m`
//! suffixes, end at a guard page), `noabort` (log and continue), `abort`.
//! See [`EnvOptions::parse`].
//!
//! ```text
//! $ KMEM_DEBUG=default,firewall=64k ./my-program
//! kmem: buffer modified after being freed
//! modification occurred at offset 0x0 (0xdeadbeefdeadbeef replaced by 0x2a)
//! buffer=0x7f0000041000  bufctl=0x7f0000041088  cache: kmem_alloc_128
//! previous transactions on buffer 0x7f0000041000:
//! #812 Free buffer=0x7f0000041000 size=100 cache: kmem_alloc_128 thread=1 time=T-0.000012000s
//!     my_program+0x1d2f3
//!     ...
//! ```

mod checks;
mod class;
mod firewall;
mod flags;
mod hooks;
mod log;
mod report;
mod stack;
mod tag;

pub(crate) use checks::{DebugCache, log_slab};
pub use class::env_options;
pub(crate) use class::{
    class as debugged_class, class_keg, classes_debug, hook_alloc, hook_free, large_alloc,
    large_free, wrong_class,
};
pub use flags::{DebugFlags, EnvOptions, LITE_MAX_ALIGN};
pub(crate) use hooks::{alloc as cache_alloc, foreign_free, free as cache_free, setup};
pub use log::{CONTENTS_MAX, Contents, Log, Op, Record, Transaction};
pub use report::{Action, ErrorClass, Report, action, reports, set_action};
pub use stack::{Frame, STACK_DEPTH};
pub use tag::{
    BUFTAG_ALLOC, BUFTAG_FREE, FREE_PATTERN, REDZONE_BYTE, REDZONE_PATTERN, UNINITIALIZED_PATTERN,
    size_decode, size_encode, size_valid,
};

/// The transaction log (`kmem_transaction_log`): every allocation and free
/// of auditing caches.
pub fn transaction_log() -> &'static Log<Transaction> {
    &log::logs().transactions
}

/// The content log (`kmem_content_log`): freed buffers' first bytes.
pub fn content_log() -> &'static Log<Contents> {
    &log::logs().contents
}

/// The failure log (`kmem_failure_log`): failed allocations.
pub fn failure_log() -> &'static Log<Transaction> {
    &log::logs().failures
}

/// The slab log (`kmem_slab_log`): slab pages taken and returned.
pub fn slab_log() -> &'static Log<Transaction> {
    &log::logs().slabs
}

/// Walks every debugging cache and size class and checks every free
/// buffer (illumos `::kmem_verify`): its tag must say free and, with
/// `DEADBEEF`, it must still hold the free pattern. Returns the problems
/// found (empty when all is well); the error action is not applied.
///
/// Buffers are checked in place while other threads may run, so call it
/// when the caches are quiet.
pub fn verify() -> Vec<Report> {
    let mut out = Vec::new();
    let mut check = |d: &DebugCache, keg: &crate::fill::CacheKeg| {
        if !d.tagged() {
            return;
        }
        for p in keg.free_buffers() {
            // SAFETY: a free buffer of this debugging cache's keg.
            if let Err(r) = unsafe { d.verify_free(p) } {
                out.push(r);
            }
        }
    };
    for (d, keg) in crate::cache::debug_caches() {
        check(&d, &keg);
    }
    for (d, keg) in class::class_caches() {
        check(d, keg);
    }
    out
}

/// Starts the logs, if `flags` audit.
pub(crate) fn start_logs(flags: DebugFlags) {
    if flags.contains(DebugFlags::AUDIT) {
        let _ = log::logs();
    }
}
