//! Looking at a zone from outside: counter snapshots for the zone table and
//! the full consistency walk tests run after each step.

use std::collections::HashSet;

use allocator_api2::alloc::Allocator;
use kmem_sys::PageSource;

use crate::error::ZoneError;
use crate::flags::{ZENTRY_FREE, ZoneFlags};
use crate::freelist::{FreeList, MARK, link_read, marker_read};
use crate::table::{CpuStats, Link, Report, ZoneStats};
use crate::zone::{Inner, Zone};

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> Report for Inner<S, A> {
    /// Holds every per-CPU slot (in CPU order) and then the global lock, the
    /// same order the allocation paths take, so the counts add up exactly.
    fn stats(&self) -> ZoneStats {
        let slots: Vec<_> = self.pcpu.iter().map(|pc| pc.lock()).collect();
        let pool = self.pool.lock();
        let per_cpu: Vec<CpuStats> = slots
            .iter()
            .map(|pc| CpuStats {
                free: pc.items.len(),
                requests: pc.nalloc,
                reserve: pc.reserve.len(),
            })
            .collect();
        let free = pool.items.len() + per_cpu.iter().map(|c| c.free + c.reserve).sum::<usize>();
        let requests = pool.nalloc + per_cpu.iter().map(|c| c.requests).sum::<u64>();
        ZoneStats {
            name: self.name.to_string(),
            flags: pool.flags,
            size: self.size,
            limit: pool.zmax,
            used: pool.total - free,
            free,
            requests,
            total: pool.total,
            global_free: pool.items.len(),
            pages: pool.pagecount,
            per_cpu,
        }
    }

    fn link(&self) -> &Link {
        &self.link
    }
}

impl<S: PageSource + 'static, A: Allocator + Clone + Send + Sync + 'static> Zone<S, A> {
    /// This zone's row of the zone table.
    pub fn stats(&self) -> ZoneStats {
        self.inner.stats()
    }

    /// Items handed out and not returned (USED in the table; items in a
    /// `ZONE_SPECIAL` reserve count as the zone's own).
    pub fn outstanding(&self) -> usize {
        self.inner.stats().used
    }

    /// Walks every free list and checks the zone's bookkeeping: each list's
    /// length matches its links, every free item is an item of this zone and
    /// on one list only, (with the `invariants` feature) every free item
    /// carries `ZENTRY_FREE`, no more items are free than were carved, and an
    /// interrupt zone stays inside its reservation. Holds every lock of the
    /// zone while it runs; meant for tests and debugging.
    pub fn check(&self) -> Result<(), ZoneError> {
        let z = &*self.inner;
        let bad = |detail: String| ZoneError::Corrupt {
            zone: z.name.clone(),
            detail,
        };
        let slots: Vec<_> = z.pcpu.iter().map(|pc| pc.lock()).collect();
        let pool = z.pool.lock();
        let mut seen = HashSet::new();
        let mut walk = |what: &str, list: &FreeList| -> Result<usize, ZoneError> {
            let mut n = 0;
            let mut at = list.head();
            // Each item is checked to be one of ours before its link is read,
            // so a scribbled link is reported, never followed.
            while !at.is_null() {
                let addr = at as usize;
                if !z.is_item(addr) {
                    return Err(bad(format!("{what} list holds {addr:#x}, not an item")));
                }
                if !seen.insert(addr) {
                    return Err(bad(format!("item {addr:#x} is on two free lists")));
                }
                if MARK {
                    // SAFETY: checked above to be an item of this zone.
                    let m = unsafe { marker_read(at) };
                    if m != ZENTRY_FREE {
                        return Err(bad(format!(
                            "free item {addr:#x} on the {what} list has marker {m:#x}"
                        )));
                    }
                }
                n += 1;
                // SAFETY: an item of this zone, on a list whose lock we hold.
                at = unsafe { link_read(at) };
            }
            if n != list.len() {
                return Err(bad(format!(
                    "{what} list counts {} items but links {n}",
                    list.len()
                )));
            }
            Ok(n)
        };
        let mut free = walk("global", &pool.items)?;
        for (cpu, pc) in slots.iter().enumerate() {
            free += walk(&format!("cpu{cpu}"), &pc.items)?;
            free += walk(&format!("cpu{cpu} reserve"), &pc.reserve)?;
        }
        if free > pool.total {
            return Err(bad(format!(
                "{free} items free but only {} carved",
                pool.total
            )));
        }
        if pool.flags.contains(ZoneFlags::INTERRUPT) && pool.pagecount > pool.pagemax {
            return Err(bad(format!(
                "{} pages carved from a reservation of {}",
                pool.pagecount, pool.pagemax
            )));
        }
        Ok(())
    }
}
