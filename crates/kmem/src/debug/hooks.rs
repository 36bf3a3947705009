//! The debugging path of a [`Cache`](crate::Cache): a cache built with
//! [`CacheBuilder::debug`](crate::CacheBuilder::debug) has no magazines, and
//! its no-magazine branch calls here, so caches without debugging never
//! see this code.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kmem_slab::{KegBuilder, SlabError};

use super::checks::DebugCache;
use super::flags::DebugFlags;
use super::report::{Action, ErrorClass, Report, raise};
use crate::Meta;
use crate::cache::owner_name;
use crate::error::KmemError;
use crate::fill::{CacheKeg, Ctor, Dtor, Pages};

/// Resolves a new cache's flags and, if any remain, makes its debug state
/// and adds the tag and the buffer setup to its keg builder.
pub(crate) fn setup(
    name: &'static str,
    flags: DebugFlags,
    size: usize,
    align: usize,
    owner: Option<u32>,
    action: Option<Action>,
    b: KegBuilder<Pages, Meta>,
) -> (KegBuilder<Pages, Meta>, Option<Arc<DebugCache>>) {
    let mut flags = flags.resolve(size, align);
    if owner.is_none() {
        // Firewall blocks come from the page layer, not a custom source.
        flags = flags.without(DebugFlags::FIREWALL);
    }
    if flags.is_empty() {
        return (b, None);
    }
    let mut d = DebugCache::new(name, flags, size, false);
    d.action = action;
    d.align = align.max(8);
    d.owner = owner.unwrap_or(crate::page::NO_OWNER);
    super::start_logs(flags);
    let d = Arc::new(d);
    (keg_builder(&d, b), Some(d))
}

/// Adds the tag and the slab-creation setup to a debugging cache's keg.
fn keg_builder(d: &Arc<DebugCache>, b: KegBuilder<Pages, Meta>) -> KegBuilder<Pages, Meta> {
    if !d.tagged() {
        return b;
    }
    let d2 = d.clone();
    b.debug_tag(d.tag_bytes()).init(move |p| {
        // SAFETY: the keg hands `init` each buffer of a new slab.
        unsafe { d2.init_buffer(p) };
        true
    })
}

/// `kmem_cache_alloc` of a debugging cache: a firewall block or a checked
/// slab buffer, then the constructor.
pub(crate) fn alloc(
    d: &DebugCache,
    keg: &CacheKeg,
    ctor: Option<&Ctor>,
    ctor_fails: &AtomicU64,
    wait: Option<Option<Duration>>,
) -> Result<NonNull<u8>, SlabError> {
    if d.flags.contains(DebugFlags::FIREWALL) {
        let p = super::firewall::alloc(d.buf_size(), d.align, d.owner).ok_or_else(|| {
            super::checks::log_failure(d.name, d.buf_size());
            SlabError::Full {
                keg: d.name,
                limit: 0,
            }
        })?;
        return construct(d, keg, p, ctor, ctor_fails);
    }
    loop {
        let p = match wait {
            None => keg.alloc(),
            Some(t) => keg.alloc_wait(t),
        }
        .inspect_err(|_| super::checks::log_failure(d.name, d.buf_size()))?;
        // SAFETY: just taken from the keg.
        match unsafe { d.on_alloc(p, None) } {
            Ok(()) => return construct(d, keg, p, ctor, ctor_fails),
            // Quarantined: the bad buffer stays allocated; try another.
            Err(r) => raise(r, d.action, d.global),
        }
    }
}

fn construct(
    d: &DebugCache,
    keg: &CacheKeg,
    p: NonNull<u8>,
    ctor: Option<&Ctor>,
    ctor_fails: &AtomicU64,
) -> Result<NonNull<u8>, SlabError> {
    match ctor {
        Some(c) if !c(p) => {
            ctor_fails.fetch_add(1, Ordering::Relaxed);
            if d.flags.contains(DebugFlags::FIREWALL) {
                // SAFETY: the block was never handed out.
                let _ = unsafe { super::firewall::free(p, d.buf_size(), d.owner) };
            } else {
                // SAFETY: `p` passed on_alloc and was never handed out.
                unsafe { d.unalloc(p) };
                // SAFETY: a buffer of this keg, never handed out.
                let _ = unsafe { keg.free(p) };
            }
            Err(SlabError::InitFailed {
                keg: d.name,
                addr: p.as_ptr() as usize,
            })
        }
        _ => Ok(p),
    }
}

/// `kmem_cache_free` of a debugging cache whose page-map owner check
/// passed.
///
/// # Safety
///
/// `p` points into a page of this cache; the caller gives it up.
pub(crate) unsafe fn free(
    d: &DebugCache,
    keg: &CacheKeg,
    dtor: Option<&Dtor>,
    p: NonNull<u8>,
) -> Result<(), KmemError> {
    let fail = |r: Report| {
        let why = r.class.describe().to_string();
        raise(r, d.action, d.global);
        Err(KmemError::BadFree {
            cache: d.name,
            addr: p.as_ptr() as usize,
            why,
        })
    };
    if d.flags.contains(DebugFlags::FIREWALL) {
        if let Some(dt) = dtor {
            dt(p);
        }
        // SAFETY: the caller gives the block up.
        return match unsafe { super::firewall::free(p, d.buf_size(), d.owner) } {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut r = Report::new(ErrorClass::BadAddress, d.name, p.as_ptr() as usize);
                r.detail = Some(e.to_string());
                fail(r)
            }
        };
    }
    // SAFETY: the caller's promise.
    match unsafe { d.on_free(p, None, keg, dtor) } {
        Ok(()) => {
            // SAFETY: checked: an allocated buffer of this keg.
            unsafe { keg.free(p) }.map_err(|e| KmemError::BadFree {
                cache: d.name,
                addr: p.as_ptr() as usize,
                why: e.to_string(),
            })
        }
        Err(r) => fail(r),
    }
}

/// A free to a debugging cache of a pointer its page map does not give to
/// it: `KMERR_BADCACHE` if another cache (or `kmem_alloc` class) owns the
/// page, `KMERR_BADADDR` otherwise. Returns the error for the caller.
#[cold]
pub(crate) fn foreign_free(d: &DebugCache, p: NonNull<u8>, owner: Option<u32>) -> KmemError {
    let addr = p.as_ptr() as usize;
    let real = owner.and_then(owner_name);
    let mut r = Report::new(
        if real.is_some() {
            ErrorClass::WrongCache
        } else {
            ErrorClass::BadAddress
        },
        d.name,
        addr,
    );
    r.real_cache = real;
    let why = r.class.describe().to_string();
    raise(r, d.action, d.global);
    KmemError::BadFree {
        cache: d.name,
        addr,
        why,
    }
}
