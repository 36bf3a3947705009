//! Resource arenas after Bonwick & Adams, *Magazines and Vmem* (USENIX 2001),
//! following FreeBSD's `subr_vmem.c` (the seed `freebsd-subr_vmem.c.txt`).
//!
//! # Theory
//!
//! A [`Vmem`] arena hands out ranges of integers — address space, IDs,
//! device-memory offsets — in multiples of its *quantum*. Nothing is stored
//! in the resource itself: 0 is a valid address and the resource need not be
//! memory at all.
//!
//! **Spans and segments.** The arena owns *spans* (`add`, the builder's
//! `span`, or imported from a [`Source`]). Each span is tiled by *segments*,
//! free or busy. A *boundary tag* describes each span and segment (the seed's
//! `struct vmem_btag` and `BT_TYPE_{SPAN,SPAN_STATIC,FREE,BUSY}`); all tags
//! sit on one list in address order, every span tag just before the segments
//! that tile it (`vm_seglist`). Tags live in a pool of fixed chunks from the
//! metadata allocator and link to each other by `u32` index, so a tag costs
//! 32 bytes and never moves (`tag.rs`).
//!
//! **Free lists.** A free segment of `n` quanta is filed on one of 91
//! doubly linked lists: exactly `n` for `n <= 32` (the seed's `VMEM_OPTORDER`
//! exact lists), else the power-of-two class of `n` (`bt_freehead_tofree`).
//! A bitmap of non-empty lists makes "the first non-empty list at or above
//! `i`" one instruction (`freelist.rs`).
//!
//! **Busy hash.** Busy segments are found by address in a chained hash whose
//! chains run through the tags (`vm_hashlist`, `bt_lookupbusy`). It grows
//! and shrinks at insert and remove to keep one to four buckets per busy
//! segment — the seed's `vmem_periodic` rule without its ten-second callout
//! or its 128 Ki bucket cap (`hash.rs`).
//!
//! **Placing a request** (`arena.rs`, `fit.rs`, after `vmem_xalloc`):
//! - [`Policy::InstantFit`] takes the head of the first non-empty list whose
//!   *every* member is large enough (`bt_freehead_toalloc` with
//!   `M_FIRSTFIT`): one bitmap lookup, constant time. If none fits it falls
//!   back to best fit, as the seed retries with `M_BESTFIT`.
//! - [`Policy::BestFit`] scans the smallest list that may hold the size, then
//!   larger ones, for the first segment that fits (`M_BESTFIT`).
//! - [`Policy::NextFit`] walks the address-ordered list from a cursor left
//!   after the previous next-fit allocation and wraps around, as the paper's
//!   `VM_NEXTFIT` does (absent from this seed revision); it suits IDs that
//!   should not be reused at once.
//!
//! [`Constraints`] (`xalloc`) add alignment, phase, a boundary not to cross
//! and an address window, checked per candidate as the seed's `vmem_fit`
//! does; a candidate list whose head cannot satisfy them does not stop the
//! search. The chosen free segment is clipped (`vmem_clip`): what is left
//! before and after stays free.
//!
//! **Freeing** (`vmem_xfree`) looks the address up in the busy hash, checks
//! the size, merges the segment with free neighbours, and if that leaves an
//! imported span wholly free, gives the span back to the source.
//!
//! **Importing** (`vmem_import`): when nothing fits, an arena with a source
//! imports a span of the request's size — padded by twice the alignment when
//! that exceeds the quantum — rounded up to the import quantum, within the
//! import limit, then retries. Then it calls the reclaim callback
//! (`vm_reclaimfn`). Then it fails with [`VmemError::Exhausted`], or, for
//! [`Vmem::alloc_wait`], sleeps on a condition variable that frees, `add`
//! and imports signal (`VMEM_CONDVAR_WAIT`).
//!
//! **Tag reserve.** Every operation first makes sure the pool holds the four
//! tags it may need (`bt_fill` to `BT_MAXALLOC`), so it cannot fail halfway;
//! if the metadata allocator fails, the operation fails with
//! [`VmemError::NoMetadata`] before changing anything.
//!
//! # Locking
//!
//! One lock per arena (`vm_lock`), a futex mutex from `kmem_sys::sync` that
//! never allocates, so an arena can sit under a `GlobalAlloc`. The lock is
//! dropped around every call out — import, release, reclaim — as the seed
//! drops it around `vm_importfn`; a child arena therefore never holds its
//! lock while taking its parent's.
//!
//! # Kernel shapes in user-space Rust
//!
//! - `vmem_xalloc(..., M_NOWAIT, &addr)` returning `ENOMEM` becomes
//!   `xalloc(..) -> Result<usize, VmemError>`; `M_WAITOK` becomes
//!   [`Vmem::alloc_wait`] / [`Vmem::xalloc_wait`] with an optional timeout,
//!   which returns [`VmemError::TimedOut`] instead of sleeping for ever.
//! - The seed's `MPASS` checks on arguments and frees become errors: a bad
//!   free leaves the arena unchanged and names arena, address and size.
//! - `vmem_set_import(importfn, releasefn, arg, quantum)` becomes the
//!   [`Source`] trait: a parent [`Vmem`] or an [`ImportFns`] closure pair.
//!   `vmem_set_limit` limits the bytes *imported* (the seed counts all
//!   spans; with imports only, the two agree).
//! - Metadata comes from an `allocator_api2` [`Allocator`](allocator_api2::alloc::Allocator)
//!   given to [`Builder::metadata`] instead of UMA zones of tags.
//! - Dropping an arena releases its imported spans to the source.
//!
//! # Examples
//!
//! An ID allocator: quantum 1, next fit so freed IDs are not reused at once.
//!
//! ```
//! use kmem_vmem::{Policy, Vmem};
//!
//! let pids = Vmem::builder("pids").span(1, 99_999).build()?;
//! let a = pids.alloc(1, Policy::NextFit)?;
//! let b = pids.alloc(1, Policy::NextFit)?;
//! assert_eq!((a, b), (1, 2));
//! pids.free(a, 1)?;
//! assert_eq!(pids.alloc(1, Policy::NextFit)?, 3); // 1 is free, but not reused yet
//! assert!(pids.free(a, 1).is_err());               // double free: an error, not corruption
//! # Ok::<(), kmem_vmem::VmemError>(())
//! ```
//!
//! A nested address-space arena: a page-granular child imports 64 KiB spans
//! from its parent and releases each once it is wholly free.
//!
//! ```
//! use kmem_vmem::{Constraints, Policy, Vmem};
//! use std::sync::Arc;
//!
//! let va = Arc::new(Vmem::builder("va").span(0x1000_0000, 1 << 28).quantum(4096).build()?);
//! let heap = Vmem::builder("heap").quantum(4096).source(va.clone(), 0x1_0000).build()?;
//!
//! let p = heap.alloc(3 * 4096, Policy::InstantFit)?;
//! let c = Constraints { align: 0x4000, nocross: 0x1_0000, ..Constraints::default() };
//! let q = heap.xalloc(0x4000, &c, Policy::BestFit)?;
//! assert_eq!(q % 0x4000, 0);
//! assert_eq!(va.stats().allocated, heap.stats().imported);
//!
//! heap.free(p, 3 * 4096)?;
//! heap.xfree(q, 0x4000)?;
//! assert_eq!(va.stats().allocated, 0);          // spans went back to the parent
//! heap.check()?;
//! # Ok::<(), kmem_vmem::VmemError>(())
//! ```

mod arena;
mod builder;
mod check;
mod error;
mod fit;
mod freelist;
mod hash;
mod source;
mod stats;
mod tag;
mod vmem;

pub use builder::{Builder, QCACHE_MAX_QUANTA};
pub use error::{ArenaName, NAME_MAX, VmemError};
pub use fit::{Constraints, Policy};
pub use source::{ImportFns, NoSource, Source};
pub use stats::VmemStats;
pub use vmem::Vmem;
