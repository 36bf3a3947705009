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
//! that tile it (`vm_seglist`). Tags live in one array from the metadata
//! allocator and link to each other by `u32` index, so a tag costs 32 bytes
//! and reaching one is a single indexed load. Each tag starts on a 32-byte
//! boundary of the array, so one tag is half a cache line and a cold tag
//! costs one miss, never two; the array itself asks for 16-byte alignment
//! only, so that growing a small array stays a `realloc`; a large one moves
//! to a fresh buffer so that it stays on huge pages (below). It grows by an
//! eighth at a time and may move, which indices do not mind (`tag.rs`).
//! A bitmap beside the array, two bits per tag, marks the free segments
//! and the imported spans: a free asks it whether either neighbour can
//! merge and whether the merged segment follows an imported span's tag, so
//! the common free, which merges with neither and fills no span, loads no
//! neighbour's tag.
//!
//! **Free lists.** A free segment of `n` quanta is filed on one of 527
//! doubly linked lists in size order: exactly `n` for `n <= 63` (the seed's
//! `VMEM_OPTORDER` exact lists, and its `[32, 63]` class cut into one list
//! per size), else an eighth of the power-of-two class of `n`
//! (`bt_freehead_tofree`, cut once more as TLSF does). Each seed class is a
//! run of consecutive lists. A two-level bitmap of non-empty lists makes
//! "the first non-empty list at or above `i`" two instructions
//! (`freelist.rs`).
//!
//! **Busy hash.** Busy segments are found by address in a chained hash whose
//! chains run through the tags (`vm_hashlist`, `bt_lookupbusy`). It grows
//! and shrinks at insert and remove to keep two to eight buckets per busy
//! segment — the seed's `vmem_periodic` rule at half its load, without its
//! ten-second callout or its 128 Ki bucket cap (`hash.rs`).
//!
//! **Tag indices.** The hot paths index the tag array without bounds
//! checks: every index they follow was handed out by the pool (which never
//! shrinks) or copied from a link, and links are tested against the null
//! index first; debug builds assert it. [`Vmem::check`] follows links
//! through a checked lookup instead, so it reports a corrupt link as an
//! error (`tag.rs`).
//!
//! **Placing a request** (`arena.rs`, `fit.rs`, after `vmem_xalloc`):
//! - [`Policy::InstantFit`] takes a segment of the first non-empty seed
//!   class whose *every* member is large enough (`bt_freehead_toalloc` with
//!   `M_FIRSTFIT`) — the head of its smallest non-empty list: one bitmap
//!   lookup, constant time. If none fits it falls
//!   back to best fit, as the seed retries with `M_BESTFIT`.
//! - [`Policy::BestFit`] scans the list of the size itself, then larger
//!   ones, for the first segment that fits (`M_BESTFIT`). Below 64 quanta
//!   that list holds the size exactly, so its head fits; above, only the
//!   one sub-list may hold smaller segments. Unconstrained, best fit is
//!   thus near constant time where the seed's scan of a power-of-two list
//!   is linear in its length, and it fits at least as tightly.
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
//! [`Vmem::alloc_wait`], waits: in the source if it can
//! ([`Source::import_wait`]; a parent [`Vmem`] can), as the seed passes
//! `M_WAITOK` to its import function, or else on a condition variable
//! (`VMEM_CONDVAR_WAIT`). Whatever makes room in the arena wakes it — a
//! free, `add`, another thread's import, a free into a quantum cache,
//! which the waiter drains before it sleeps again — and calls it back out
//! of the source ([`Source::wake_waiting_imports`]), where the seed leaves
//! it until the parent has room (`wait.rs`).
//!
//! A span imported for a constrained request need not satisfy it: the
//! source knows nothing of its address window. The arena then imports
//! again, as the seed does, until a span fits or the source is out; a call
//! that fails at last gives back every imported span left wholly free, so
//! that it leaves the source as it found it (the seed keeps them).
//!
//! **Quantum caches** (`qcache.rs`, the seed's `qc_init`, `qc_import`,
//! `qc_release`, `qc_drain`): with `qcache_max` set, each size from one
//! quantum up to it (at most 16 quanta, `VMEM_QCACHE_IDX_MAX`) has a
//! magazine cache from `kmem-magazine`: per-CPU as in the seed, or
//! per-thread with no lock on a hit ([`Builder::qcache_mode`], which
//! explains what a drain can then reach). [`Vmem::alloc`] and
//! [`Vmem::free_cached`] of those sizes go to the cache and touch the arena
//! only when a magazine runs empty or full, and then for a whole batch under
//! one lock. Cached segments stay busy in the arena. When an allocation is
//! about to fail, the caches are drained back into the arena first
//! (`qc_drain`), and the allocation starts over, import included, if that
//! freed bytes or gave whole imported spans back to the source (the seed's
//! test counts free bytes only, and a released span takes as many from the
//! total as from the bytes in use). `xalloc` and `xfree` bypass the caches,
//! as in the seed, and so does the checked [`Vmem::free`]: a magazine keeps
//! no per-segment state, so a free into it cannot be told from a double
//! free. The seed's `vmem_free` into the cache is unchecked; here that path
//! is the `unsafe` [`Vmem::free_cached`], whose caller promises the free is
//! right.
//!
//! **Metadata memory.** Tags live in one array and the busy hash in
//! another, both from the metadata allocator. Once either spans a huge page
//! (2 MiB, about 65 000 tags or 500 000 buckets) it is advised for
//! transparent huge pages before its new part is first written: at a
//! million segments every operation touches a few lines of tens of MiB at
//! random, and on 4 KiB pages each would be a TLB miss too. The hash
//! always resizes into a fresh table, and the tag array does once that
//! large, never by `realloc`: glibc's `realloc` (and kmem's metadata
//! allocator's) moves a large block with `mremap`, and the moved block
//! lost its huge pages.
//!
//! **Tag reserve.** Every operation first makes sure the pool holds the four
//! tags it may need (`bt_fill` to `BT_MAXALLOC`), so it cannot fail halfway;
//! if the metadata allocator fails, the operation fails with
//! [`VmemError::NoMetadata`] before changing anything.
//!
//! # Locking
//!
//! One lock per arena (`vm_lock`), a futex mutex from `kmem_sys::sync` that
//! never allocates, so an arena can sit under a `GlobalAlloc`. An owner
//! with `&mut Vmem` (one thread, or the caller's own lock around it) can
//! skip it: [`Vmem::alloc_mut`], [`xalloc_mut`](Vmem::xalloc_mut),
//! [`free_mut`](Vmem::free_mut) and [`xfree_mut`](Vmem::xfree_mut) do what
//! their `&self` twins do without the lock's two atomic operations, except
//! in an arena with per-thread quantum caches, which other threads' exit
//! hooks reach, and in one put on the arena list
//! ([`Builder::listed`]), which its walkers reach. The lock is
//! dropped around every call out — import, release, reclaim, and the call
//! that wakes a waiter blocked in the source — as the seed
//! drops it around `vm_importfn`; a child arena therefore never holds its
//! lock while taking its parent's. A parent tests whether a child's waiter
//! is cancelled under its own lock, by atomic loads of the child's state,
//! never its lock. The quantum caches call into the arena
//! with no magazine lock held (kmem-magazine's rule), and the arena drains
//! them with its own lock dropped, so the order is magazine → arena only.
//! The metadata allocator, by contrast, is called with the arena lock held
//! (to fill the tag reserve, resize the busy hash, trim the tags), as the
//! seed allocates tags under `vm_lock`: it must never call back into the
//! same arena, whose lock is not re-entrant.
//!
//! **The arena list.** Every arena built [`listed`](Builder::listed) is on
//! one process-wide list (the seed's `vmem_list`), guarded
//! by one static futex lock from `kmem_sys::sync` (`vmem_list_lock`). The
//! list is intrusive, through a node in each arena's core, so joining it
//! at build and leaving it first thing in `Drop` allocate nothing. The
//! order is list lock → arena lock: [`for_each_arena`] and [`whatis_all`]
//! hold the list lock while they take each arena's lock, and no arena
//! takes the list lock while it holds its own, since only building and
//! dropping an arena take it. So code that runs under an arena lock (the
//! metadata allocator) or is called by a walk must not build or drop a
//! listed arena. Walkers reach a listed arena from other threads, so its
//! `_mut` methods take the lock too.
//!
//! # Kernel shapes in user-space Rust
//!
//! - `vmem_xalloc(..., M_NOWAIT, &addr)` returning `ENOMEM` becomes
//!   `xalloc(..) -> Result<usize, VmemError>`; `M_WAITOK` becomes
//!   [`Vmem::alloc_wait`] / [`Vmem::xalloc_wait`] with an optional timeout,
//!   which returns [`VmemError::TimedOut`] instead of sleeping for ever.
//!   The `M_WAITOK` the seed passes to the import function becomes
//!   [`Source::import_wait`], which a user source may leave out.
//! - The seed's `MPASS` checks on arguments and frees become errors: a bad
//!   free leaves the arena unchanged and names arena, address and size.
//! - `vmem_set_import(importfn, releasefn, arg, quantum)` becomes the
//!   [`Source`] trait: a parent [`Vmem`] or an [`ImportFns`] closure pair.
//!   `vmem_set_limit` limits the bytes *imported* (the seed counts all
//!   spans; with imports only, the two agree).
//! - Metadata comes from an `allocator_api2` [`Allocator`](allocator_api2::alloc::Allocator)
//!   given to [`Builder::metadata`] instead of UMA zones of tags.
//! - Dropping an arena releases its imported spans to the source.
//! - The seed's quantum caches are UMA zones that cannot hold the value 0
//!   (`VMEM_ADDR_QCACHE_MIN`); magazines hold any `usize`, so 0 is cached
//!   like any other address.
//! - `vmem_free` of a cached size, unchecked in the seed, is the `unsafe`
//!   [`Vmem::free_cached`] (checked against the arena in debug builds);
//!   the safe [`Vmem::free`] is checked in every build and frees to the
//!   arena.
//! - The seed's debugging interfaces print through a `printf`-like
//!   callback; here each returns a value to read or print (its `Display`
//!   is the seed's text):
//!   - `vmem_whatis(addr, pr)`, which walks `vmem_list`, is
//!     [`whatis_all(addr)`](whatis_all), a [`Whatis`] per listed arena
//!     holding `addr`; [`Vmem::whatis`] asks one arena.
//!   - `vmem_dump(vm, pr)` is [`Vmem::dump`]: a [`Dump`] of the spans and
//!     segments in address order and of the non-empty free lists, its
//!     vectors allocated with the arena lock dropped.
//!   - `vmem_printall` (DDB `show all vmemdump`) is [`for_each_arena`]
//!     printing each [`ArenaRef::dump`].
//!   - DDB `show vmem` is [`Vmem::summary`]: a [`Summary`] with the busy
//!     and free segments per `SIZE2ORDER` class ([`ClassUsage`]); `show
//!     all vmem` is [`for_each_arena`] printing each
//!     [`ArenaRef::summary`].
//!   - `vm_nfreetags` is [`VmemStats::unused_tags`] (and the summary's).
//! - `vmem_roundup_size` is [`Vmem::round_size`], which refuses 0 and a
//!   size that overflows, where the seed's macro wraps around. A free
//!   does not round its size: it names the segment at its address if the
//!   size rounds up to the segment's, and is [`VmemError::WrongSize`]
//!   otherwise (0 and overflowing sizes too), where the seed asserts.
//! - `vmem_list` and `vmem_list_lock` are the arena list (see
//!   [Locking](#locking)). The seed lists every arena; here an arena
//!   joins when built with [`Builder::listed`], because its `_mut`
//!   methods must then lock.
//!   `vmem_destroy` leaves the list; here `Drop` does. A `Vmem` may be
//!   leaked and never dropped, and stay on the list, so the metadata
//!   allocator it keeps its tags in must be `'static`.
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
mod inner;
mod introspect;
mod qcache;
mod registry;
mod search;
mod source;
mod stats;
mod tag;
mod vmem;
mod wait;

pub use builder::{Builder, QCACHE_MAX_QUANTA};
pub use error::{ArenaName, NAME_MAX, VmemError};
pub use fit::{Constraints, Policy};
pub use introspect::{BoundaryTag, ClassUsage, Dump, FreeList, Summary, TagKind, Whatis};
/// The quantum caches' front end ([`Builder::qcache_mode`]).
pub use kmem_magazine::Mode;
pub use registry::{ArenaRef, for_each_arena, whatis_all};
pub use source::{ImportFns, ImportWait, NoSource, Source};
pub use stats::VmemStats;
pub use vmem::Vmem;
