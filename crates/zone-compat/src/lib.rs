//! The DragonFly BSD zone allocator (`sys/vm/vm_zone.c`) in Rust: fixed-size
//! items carved from pages, handed out from per-CPU free lists that spill to
//! and refill from one global list in bursts.
//!
//! Two faces: the idiomatic [`Zone`] (made with [`Zone::builder`], errors as
//! [`ZoneError`]) and [`compat`], the DragonFly names (`zinit`, `zalloc`,
//! `zfree`, `zdestroy`, `ZONE_*`) with `Option` where the C returns `NULL`,
//! so code written against `vm_zone.h` ports line for line.
//!
//! # Theory
//!
//! A zone holds items of one size, `zsize`, rounded up to [`ZONE_ROUNDING`]
//! by `zinitna` (boot zones keep their exact size, as `zbootinit` does). A
//! free item is a node of an intrusive singly linked list: its first word
//! links to the next free item and, with the `invariants` feature, its second
//! word holds [`ZENTRY_FREE`]. Nothing else is written into an item, so a
//! zone is type-stable past its first two words.
//!
//! Each zone has one list per CPU and one global list:
//!
//! * **`zalloc`** ([`Zone::alloc`]) pops from the current CPU's list. When it
//!   is empty the global list refills it with up to `zone_burst` items,
//!   always leaving `zfreemin` (a page's worth of items, or 1 for items over
//!   a page) on the global list; when the global list has no more than that,
//!   the zone grows (`zget`), carving [`ZONE_MAXPGLOAD`] fresh pages into
//!   items, keeping one for the caller and putting the rest on the global
//!   list. When growing is impossible, `zget` dips into the `zfreemin`
//!   reserve before it fails. (`vm_zone.c`: `zalloc`, `zget`.)
//! * **`zfree`** ([`Zone::free`]) pushes onto the current CPU's list. When
//!   the list reaches `zmax_pcpu` (never taken below 1024), the
//!   `min(zmax_pcpu / 2, zone_burst)` most recently freed items move to the
//!   global list in one splice: the hysteresis that keeps a CPU freeing in a
//!   loop off the global lock. (`vm_zone.c`: `zfree`.)
//! * **`zmax_pcpu`** is 8192 for an ordinary zone; for a `ZONE_INTERRUPT`
//!   zone it is `zmax / ncpus / 64`, at least 1024 and at most 16 MiB of
//!   items (`zinitna`).
//! * **`ZONE_INTERRUPT`** zones reserve the pages for `nentries` items when
//!   they are made (the seed's `kmem_alloc_pageable` of KVA) and carve them
//!   `ZONE_MAXPGLOAD` pages at a time; they never grow past the reservation,
//!   and exhaustion is an error ([`ZoneError::Exhausted`], `None` in
//!   [`compat`]). Their first pages are carved at creation (`zinitna`).
//! * **`ZONE_PANICFAIL`** turns any allocation failure into a panic naming
//!   the zone. **`ZONE_SPECIAL`** zones top up a per-CPU reserve of two items
//!   every time they grow (the seed's `vm_map_entry` reserve), reachable
//!   through [`Zone::reserve_alloc`] without locks beyond the CPU's own.
//!   **`ZONE_BOOT`** zones start over caller memory ([`compat::zbootinit`])
//!   and grow only after [`compat::zinitna`]. **`ZONE_DESTROYABLE`** zones
//!   can be given back with [`Zone::destroy`] / [`compat::zdestroy`]; any
//!   other zone refuses with [`ZoneError::NotDestroyable`].
//! * **The zone table** ([`zones`], [`render`], [`compat::sysctl_vm_zone`])
//!   lists every live zone with the seed's columns ITEM, SIZE, LIMIT, USED,
//!   FREE, REQUESTS, and each CPU's free and request counts. Zones sit on an
//!   intrusive list as in the seed's `zlist`, so registering allocates
//!   nothing.
//!
//! # Locking
//!
//! The seed protects a per-CPU list with a critical section (no preemption,
//! no migration) and the global list with the spinlock `zspin`. User space
//! has neither, so each per-CPU list sits behind its own
//! [`kmem_sys::sync::Mutex`] in a cache-padded [`kmem_sys::PerCpu`] slot,
//! found with [`kmem_sys::current_cpu`]: a thread that migrates mid-call
//! still holds a consistent list, just not its new CPU's. The global list,
//! counters and flags sit behind a second mutex (`zspin`), and a third guards
//! the table of carved ranges the `INVALID` check reads. Order: zone table →
//! per-CPU slot (in CPU order when several are held) → global → ranges.
//! No lock is held across a call into the page source except while making an
//! interrupt zone's reservation. The locks are the non-allocating futex ones
//! of kmem-sys, not parking_lot, so a zone can back a global allocator.
//!
//! # Mapping the kernel to user space
//!
//! * Pages come from a [`kmem_sys::PageSource`] ([`kmem_sys::OsPages`] by
//!   default, or the one the `kmem` facade provides) where the seed calls
//!   `kmem_alloc3`/`kmem_alloc_pageable`+`vm_page_alloc`. An interrupt zone's
//!   reservation is one zeroed allocation of `round_page(zsize * nentries)`
//!   bytes, carved progressively.
//! * The seed keeps page chunks only for destroyable zones (`zkmvec`); here
//!   every zone records them, so dropping any [`Zone`] returns its pages
//!   (a Rust value must not leak). `destroy` is the checked form.
//! * Metadata (the zone header, per-CPU slots, the range tables) comes from
//!   the `allocator_api2` allocator given to [`ZoneBuilder::alloc_in`],
//!   the global allocator by default.
//! * `INVARIANTS` is the `invariants` cargo feature (always on in this
//!   crate's own tests). `zerror` panics become [`ZoneError`] values from
//!   [`Zone::free`] (`INVALID`, `ALREADYFREE`), checked before anything
//!   changes; `NOTFREE` (a free item's marker was overwritten) stays a panic,
//!   since the free list itself can no longer be trusted. As in the seed, a
//!   live item whose second word happens to hold `ZENTRY_FREE` reads as
//!   already free; allocation clears the marker, so only caller data can.
//! * `mycpu->gd_cpuid` is [`kmem_sys::current_cpu`]; [`Zone::alloc_on`] and
//!   [`Zone::free_on`] take the CPU index explicitly (tests pin it so list
//!   sizes are exact). The sysctl `vm.zone_burst` is [`set_zone_burst`];
//!   [`Zone::set_burst`] overrides it per zone.
//!
//! # Example
//!
//! ```
//! use kmem_zone_compat::{Zone, ZoneFlags};
//!
//! let zone = Zone::builder("pv", 40).flags(ZoneFlags::PANICFAIL).build()?;
//! assert_eq!(zone.item_size(), 64); // rounded up to ZONE_ROUNDING
//! let item = zone.alloc()?;
//! // SAFETY: `item` came from this zone and is not used again.
//! unsafe { zone.free(item)? };
//! assert_eq!(zone.outstanding(), 0);
//! # Ok::<(), kmem_zone_compat::ZoneError>(())
//! ```

mod builder;
mod check;
pub mod compat;
mod error;
mod flags;
mod freelist;
mod grow;
mod table;
mod zone;

pub use builder::ZoneBuilder;
pub use error::ZoneError;
pub use flags::{
    SPECIAL_RESERVE, ZENTRY_FREE, ZMAX_PCPU_BYTES, ZMAX_PCPU_DEFAULT, ZMAX_PCPU_FLOOR,
    ZONE_BURST_DEFAULT, ZONE_MAXPGLOAD, ZONE_ROUNDING, ZoneFlags,
};
pub use grow::DestroyError;
pub use table::{CpuStats, ZoneCounters, ZoneStats, render, zone_counters, zones};
pub use zone::{Zone, set_zone_burst, zone_burst};
