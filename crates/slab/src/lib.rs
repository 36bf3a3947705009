//! Kegs of slabs: fixed-size buffers carved from slabs of pages, after the
//! slab layer of FreeBSD UMA (`freebsd-uma_core.c.txt`) and illumos kmem
//! (`illumos-kmem.c.txt`).
//!
//! # Theory
//!
//! A [`Keg`] hands out buffers of one size and alignment. It gets memory a
//! *slab* at a time from a [`PageSource`](kmem_sys::PageSource) (a fresh
//! [`OsPages`](kmem_sys::OsPages) by default), cuts the slab into equal
//! *chunks*, and keeps the free chunks of each slab on a list linked through
//! the chunks themselves (illumos' embedded bufctl, UMA's `us_freelist`). It
//! is the layer under a cache: no per-CPU state, no constructors — the `kmem`
//! facade puts magazines and ctor/dtor on top and feeds on
//! [`Keg::alloc_batch`] / [`Keg::free_batch`].
//!
//! **Layout** (decided once by [`SlabLayout`], module `layout`; illumos
//! `kmem_cache_create`, UMA `keg_ctor` / `zone_small_init` /
//! `zone_large_init`). Small chunks (under ⅛ page) live in one-page slabs with
//! the header at the end of the page, found from any buffer by masking the
//! address. Bigger chunks, or small ones whose on-page header would waste a
//! tenth of the page, get an off-page header from the metadata allocator and
//! a multi-page slab whose size (1..=8 chunks, rounded to pages) wastes least
//! per buffer. `single_buffer` kegs put one buffer in each slab.
//!
//! ```text
//!  on-page (one page)                                 off-page (n pages)
//! +--------+-----+-----+-----+ ... +-----+------+-----+------+  +--------+-----+-----+ ... +-----+------+
//! | colour | buf | buf | buf |     | buf | free | bit | hdr  |  | colour | buf | buf |     | buf | free |
//! +--------+-----+-----+-----+ ... +-----+------+-----+------+  +--------+-----+-----+ ... +-----+------+
//!  ^ page start (mask)                          map   ^ Slab      ^ slab start ──hash──► Slab + bitmap
//!                                                                                       (metadata alloc)
//!  one chunk = [ buffer | link word if init/fini | debug tag if asked | pad to align ]
//! ```
//!
//! **Colouring** (illumos `kmem_slab_create`): each new slab starts its
//! first buffer `align` bytes later than the previous one, wrapping to 0 once
//! past the slack a full slab leaves unused, so equal offsets in different
//! slabs fall on different cache lines.
//!
//! **Usage order** (module `bins`). Slabs sit on one list per allocated
//! count. Allocation takes from the *most*-allocated slab that still has a
//! free buffer — the rule of illumos `kmem_partial_slab_cmp`, where a higher
//! `slab_refcnt` sorts first and `kmem_slab_alloc` takes `avl_first` — so
//! that the least-used slabs drain and can be reaped; only when no partial
//! slab is left does it take an empty one, and only then a new one (UMA
//! `keg_fetch_slab`: partial before free before `slab_zalloc`). Full slabs are
//! on their own list and never looked at by allocation.
//!
//! **Finding a slab.** Every slab is in a hash keyed by its start address
//! (module `hash`; UMA `uma_hash`, illumos `KMF_HASH`) that doubles when the
//! slab count reaches the bucket count. Off-page kegs use it on every free;
//! on-page kegs free by mask and use it for the safe by-address queries.
//!
//! **`init`/`fini`** run on every buffer when its slab is created and
//! destroyed (UMA `uk_init`/`uk_fini` in `slab_zalloc`/`keg_drain`), outside
//! the lock; with an `init` the free-list link moves to a word after the
//! buffer so a free buffer keeps its initialised contents.
//!
//! **Limits** ([`KegBuilder::limit`], [`Keg::set_limit`]; UMA
//! `uma_zone_set_max`) count whole slabs; at the limit [`Keg::alloc`] fails
//! with [`SlabError::Full`] and [`Keg::alloc_wait`] sleeps until a free.
//!
//! **Reaping.** [`Keg::reap`] unlinks every empty, unpinned slab under the
//! lock and gives them back after dropping it (UMA `keg_drain`, illumos
//! `kmem_slab_destroy`).
//!
//! # Checks on free
//!
//! Always on, in every build: the slab is found by the hash (off-page) or by
//! a header whose magic is salted with its own address and whose keg id must
//! match (on-page, so a buffer of another on-page keg gets
//! [`SlabError::WrongKeg`]); the address must be a chunk start inside the
//! slab ([`SlabError::Misaligned`]); the buffer's bit in the slab's
//! allocation bitmap must be set ([`SlabError::AlreadyFree`]); and every
//! free-list link popped is range-checked ([`SlabError::Corrupt`]). The
//! error changes nothing. Debug builds add: the on-page header must also be
//! in the hash, and a popped link must name a buffer the bitmap says is free.
//! Off-page kegs cannot tell another keg's slab from no slab and report
//! [`SlabError::OutsideSlabs`] for both.
//!
//! # Locking
//!
//! One futex [`Mutex`](kmem_sys::sync::Mutex) per keg (from `kmem-sys`; it
//! never allocates, so a keg can sit under a global allocator) guards the
//! usage lists, the hash, every slab header and the counters; a
//! [`Condvar`](kmem_sys::sync::Condvar) wakes sleepers at the limit. It is
//! the innermost lock in the project's order (arena → depot → keg). The page
//! source, the metadata allocator and `init`/`fini` are never called with
//! it held.
//!
//! # Kernel shapes in user space
//!
//! `NULL` returns become [`SlabError`] values; `M_NOWAIT`/`M_WAITOK` become
//! [`Keg::alloc`] / [`Keg::alloc_wait`] with an optional timeout; kernel
//! page allocation becomes the `PageSource` trait; metadata (off-page
//! headers, hash, usage lists) comes from an `allocator_api2` allocator
//! ([`KegBuilder::metadata`]) as illumos takes them from its own caches.
//!
//! # For a consolidator
//!
//! [`Keg::partial_slabs`] (usage order), [`Keg::allocated_buffers`],
//! [`Keg::alloc_avoiding`], [`Keg::slab_of`], [`Keg::is_allocated`] and
//! [`Keg::pin_slab`] / [`Keg::unpin_slab`] answer what illumos'
//! `kmem_move_buffers` asks of the slab layer.
//!
//! # Example
//!
//! ```
//! use kmem_slab::{Keg, Placement};
//!
//! let keg = Keg::builder("points", 24, 8).build()?;
//! assert_eq!(keg.layout().placement, Placement::OnPage);
//! let a = keg.alloc()?;
//! let mut batch = [core::ptr::NonNull::dangling(); 32];
//! let n = keg.alloc_batch(&mut batch)?;
//! assert_eq!(n, 32);
//! // SAFETY: buffers of this keg, no longer used.
//! unsafe {
//!     keg.free(a)?;
//!     assert!(keg.free(a).is_err()); // double free: refused, nothing changed
//!     keg.free_batch(&batch)?;
//! }
//! assert_eq!(keg.reap(), 1);
//! assert_eq!(keg.source().bytes_in_use(), 0);
//! keg.check()?;
//! # Ok::<(), kmem_slab::SlabError>(())
//! ```

mod bins;
mod builder;
mod error;
mod hash;
mod keg;
mod layout;
mod query;
mod reclaim;
mod slab;
mod stats;

pub use builder::{FiniFn, InitFn, KegBuilder};
pub use error::SlabError;
pub use keg::Keg;
pub use layout::{MAX_WASTE_DIVISOR, Placement, SlabLayout, VOID_FRACTION};
pub use query::{SlabId, SlabInfo};
pub use stats::KegStats;
