//! The zone table: every live zone on one list (`vm_zone.c`: `zlist`), a
//! snapshot of each zone's counters, the `sysctl vm.zone` rendering and the
//! seed's process-wide page counters.
//!
//! The list is intrusive, as the seed's `LIST_HEAD(zlist)` is: each zone's
//! header carries a [`Link`], so registering a zone allocates nothing and the
//! table works under a global allocator built on zones. The list lock is
//! taken before any zone lock (table → per-CPU slot → global list).

use core::cell::Cell;
use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use kmem_sys::sync::Mutex;

use crate::flags::ZoneFlags;

/// One CPU's part of a zone, as the table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuStats {
    /// Free items on this CPU's list (`zpcpu[n].zfreecnt`).
    pub free: usize,
    /// Allocations served from this CPU's list (`zpcpu[n].znalloc`).
    pub requests: u64,
    /// Items in this CPU's `ZONE_SPECIAL` reserve.
    pub reserve: usize,
}

/// A consistent snapshot of one zone's counters: a row of the zone table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneStats {
    /// ITEM: the zone's name (`zname`).
    pub name: String,
    /// The zone's flags.
    pub flags: ZoneFlags,
    /// SIZE: bytes per item (`zsize`).
    pub size: usize,
    /// LIMIT: the item limit (`zmax`); 0 for a zone that grows freely.
    pub limit: usize,
    /// USED: items handed out (`ztotal` minus every free item). Items in a
    /// `ZONE_SPECIAL` reserve count as free.
    pub used: usize,
    /// FREE: free items, global list plus every CPU's list and reserve.
    pub free: usize,
    /// REQUESTS: allocations served (`znalloc`, global plus per-CPU).
    pub requests: u64,
    /// Items ever carved (`ztotal`).
    pub total: usize,
    /// Free items on the global list (`zfreecnt`).
    pub global_free: usize,
    /// Pages carved into items (`zpagecount`).
    pub pages: usize,
    /// Per-CPU counts, in CPU order.
    pub per_cpu: Vec<CpuStats>,
}

/// What the table needs of a zone, whatever its page source and allocator.
pub(crate) trait Report: Sync {
    /// A consistent snapshot of the zone's counters.
    fn stats(&self) -> ZoneStats;
    /// The zone's place on the list.
    fn link(&self) -> &Link;
}

/// A zone's place on the zone list (`zlink`). Only touched under [`ZLIST`].
pub(crate) struct Link {
    next: Cell<*const Link>,
    prev: Cell<*const Link>,
    owner: Cell<Option<NonNull<dyn Report>>>,
}

impl Link {
    pub(crate) const fn new() -> Self {
        Link {
            next: Cell::new(ptr::null()),
            prev: Cell::new(ptr::null()),
            owner: Cell::new(None),
        }
    }
}

// SAFETY: the cells are read and written only with the ZLIST lock held.
unsafe impl Sync for Link {}
// SAFETY: as above; the pointers name zones that unregister before they go.
unsafe impl Send for Link {}

/// Head of the zone list, most recently made zone first, as `LIST_INSERT_HEAD`
/// orders it.
struct Head(*const Link);

// SAFETY: the pointer is only followed with the lock held.
unsafe impl Send for Head {}

static ZLIST: Mutex<Head> = Mutex::new(Head(ptr::null()));

/// Puts a zone on the list. The zone's header must stay where it is until
/// [`unregister`] (it lives in a `Box`).
pub(crate) fn register(zone: &(dyn Report + 'static)) {
    let mut head = ZLIST.lock();
    let link = zone.link();
    link.owner.set(Some(NonNull::from(zone)));
    link.prev.set(ptr::null());
    link.next.set(head.0);
    if !head.0.is_null() {
        // SAFETY: listed links belong to live zones; we hold the list lock.
        unsafe { (*head.0).prev.set(link) };
    }
    head.0 = link;
}

/// Takes a zone off the list (`LIST_REMOVE`); a no-op if it is not on it.
pub(crate) fn unregister(zone: &(dyn Report + 'static)) {
    let mut head = ZLIST.lock();
    let link = zone.link();
    if link.owner.take().is_none() {
        return;
    }
    let (prev, next) = (link.prev.get(), link.next.get());
    if prev.is_null() {
        head.0 = next;
    } else {
        // SAFETY: a listed neighbour of a live zone; list lock held.
        unsafe { (*prev).next.set(next) };
    }
    if !next.is_null() {
        // SAFETY: as above.
        unsafe { (*next).prev.set(prev) };
    }
}

/// Every live zone's counters, most recently made first (the `zlist` order
/// `sysctl vm.zone` walks).
pub fn zones() -> Vec<ZoneStats> {
    let head = ZLIST.lock();
    let mut rows = Vec::new();
    let mut at = head.0;
    while !at.is_null() {
        // SAFETY: listed links belong to live zones, which cannot unregister
        // (and so cannot drop) while we hold the list lock.
        let link = unsafe { &*at };
        if let Some(owner) = link.owner.get() {
            // SAFETY: as above.
            rows.push(unsafe { owner.as_ref() }.stats());
        }
        at = link.next.get();
    }
    rows
}

/// The zone table as text: the seed's header and columns (`ITEM SIZE LIMIT
/// USED FREE REQUESTS`, numbers zero-padded as `sysctl vm.zone` prints them),
/// each zone followed by one line per CPU with its free and request counts.
pub fn render(rows: &[ZoneStats]) -> String {
    ZoneTable(rows).to_string()
}

/// Display adapter behind [`render`].
struct ZoneTable<'a>(&'a [ZoneStats]);

impl fmt::Display for ZoneTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ITEM            SIZE     LIMIT    USED    FREE  REQUESTS"
        )?;
        for z in self.0 {
            // The seed pads the name to 13 columns with a ':' after it.
            let name: String = z.name.chars().take(12).collect();
            writeln!(
                f,
                "{:<13} {:06}, {:08}, {:06}, {:06}, {:08}",
                format!("{name}:"),
                z.size,
                z.limit,
                z.used,
                z.free,
                z.requests
            )?;
            writeln!(f, "    global   free {:6}", z.global_free)?;
            for (cpu, c) in z.per_cpu.iter().enumerate() {
                write!(
                    f,
                    "    cpu{cpu:<4}  free {:6}  requests {:8}",
                    c.free, c.requests
                )?;
                if c.reserve != 0 {
                    write!(f, "  reserve {}", c.reserve)?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// The seed's process-wide page counters (`vm.zone_kmem_pages`,
/// `vm.zone_kern_pages`, `vm.zone_kmem_kvaspace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneCounters {
    /// Pages of interrupt-zone reservations carved into items.
    pub kmem_pages: usize,
    /// Pages other zones hold from their page sources.
    pub kern_pages: usize,
    /// Bytes reserved up front by interrupt zones.
    pub kmem_kvaspace: usize,
}

pub(crate) static KMEM_PAGES: AtomicUsize = AtomicUsize::new(0);
pub(crate) static KERN_PAGES: AtomicUsize = AtomicUsize::new(0);
pub(crate) static KMEM_KVASPACE: AtomicUsize = AtomicUsize::new(0);

/// The current page counters, summed over every zone in the process.
pub fn zone_counters() -> ZoneCounters {
    ZoneCounters {
        kmem_pages: KMEM_PAGES.load(Ordering::Relaxed),
        kern_pages: KERN_PAGES.load(Ordering::Relaxed),
        kmem_kvaspace: KMEM_KVASPACE.load(Ordering::Relaxed),
    }
}
