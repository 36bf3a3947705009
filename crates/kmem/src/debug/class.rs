//! Debugging of the `kmem_alloc` size classes under [`Kmem`](crate::Kmem)
//! and [`kmem_alloc`](crate::kmem_alloc), switched on by `KMEM_DEBUG`.
//!
//! The variable is read once, with `libc::getenv` (no allocation), when
//! the class caches are first set up or a large block is first asked for.
//! With flags set, every class keg reserves a tag and its buffers are
//! prepared as free; the classes' thread magazines then stay unloaded, so
//! every `class_alloc`/`class_free` misses its (empty) magazine and takes
//! the slow path, where the checks run. With nothing set the fast path is
//! exactly what it was.

use core::ptr::NonNull;
use std::sync::OnceLock;

use kmem_slab::KegBuilder;

use super::checks::DebugCache;
use super::flags::{DebugFlags, EnvOptions};
use super::report::{ErrorClass, Report, raise};
use crate::Meta;
use crate::fill::{CacheKeg, Pages};
use crate::sizes::{CLASS_NAMES, CLASS_SIZES, NUM_CLASSES, class_align};

struct Classes {
    opts: EnvOptions,
    caches: Option<[DebugCache; NUM_CLASSES]>,
}

static CLASSES: OnceLock<Classes> = OnceLock::new();

fn classes() -> &'static Classes {
    CLASSES.get_or_init(|| {
        let opts = read_env();
        if let Some(a) = opts.action {
            super::report::set_action(a);
        }
        let flags = opts.flags;
        super::start_logs(flags);
        let caches = (!flags.is_empty()).then(|| {
            core::array::from_fn(|c| {
                let f = flags.resolve(CLASS_SIZES[c], class_align(c));
                // The firewall here is per request (firewall=SIZE), not per class.
                let f = if f.contains(DebugFlags::FIREWALL) {
                    DebugFlags::NONE
                } else {
                    f
                };
                DebugCache::new(CLASS_NAMES[c], f, CLASS_SIZES[c], true)
            })
        });
        Classes { opts, caches }
    })
}

fn read_env() -> EnvOptions {
    // SAFETY: the name is NUL-terminated; getenv returns null or a C string
    // that stays valid while nobody calls setenv (we copy nothing out).
    let v = unsafe { libc::getenv(c"KMEM_DEBUG".as_ptr()) };
    if v.is_null() {
        return EnvOptions::default();
    }
    // SAFETY: a NUL-terminated string from getenv.
    let s = unsafe { core::ffi::CStr::from_ptr(v) }
        .to_str()
        .unwrap_or("");
    match EnvOptions::parse(s) {
        Ok(o) => o,
        Err(bad) => {
            let msg = b"kmem: KMEM_DEBUG: unknown option ignored: ";
            // SAFETY: writing our own buffers to stderr.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::write(2, bad.as_ptr().cast(), bad.len());
                libc::write(2, b"\n".as_ptr().cast(), 1);
            }
            EnvOptions::default()
        }
    }
}

/// The options `KMEM_DEBUG` gave this process.
pub fn env_options() -> EnvOptions {
    classes().opts
}

/// The debug state of class `c`, if its cache debugs.
#[inline]
pub(crate) fn class(c: usize) -> Option<&'static DebugCache> {
    classes()
        .caches
        .as_ref()
        .map(|a| &a[c])
        .filter(|d| d.tagged())
}

/// Whether `KMEM_DEBUG` switched anything on for the classes.
#[inline]
pub(crate) fn classes_debug() -> bool {
    classes().caches.is_some() || classes().opts.firewall.is_some()
}

/// Adds the debug tag and buffer setup to class `c`'s keg.
pub(crate) fn class_keg(c: usize, b: KegBuilder<Pages, Meta>) -> KegBuilder<Pages, Meta> {
    match class(c) {
        // The init closure captures nothing, so boxing it allocates nothing
        // (this runs inside the global allocator): it finds the class from
        // the page map's owner tag of the buffer.
        Some(d) => b.debug_tag(d.tag_bytes()).init(init_class_buffer),
        None => b,
    }
}

fn init_class_buffer(p: NonNull<u8>) -> bool {
    let c = crate::alloc::owner_class(p).flatten();
    match c.and_then(class) {
        Some(d) => {
            // SAFETY: a buffer of a new slab of class `c`'s keg.
            unsafe { d.init_buffer(p) };
            true
        }
        None => false,
    }
}

/// Whether a request of `size` at `align` gets a firewall block.
#[inline]
pub(crate) fn firewalled(size: usize, align: usize) -> bool {
    matches!(classes().opts.firewall, Some(fw) if size >= fw && align <= kmem_sys::page_size())
}

/// Class `c`'s slow-path allocation of `size` bytes when `KMEM_DEBUG` is
/// on: a firewall block, a checked buffer, or (firewall on, this class not
/// debugged) a plain keg buffer; `None` when debugging is off and the
/// magazines serve. Debugged classes never load magazines.
#[inline]
pub(crate) fn hook_alloc(
    c: usize,
    keg: &CacheKeg,
    size: usize,
    align: usize,
) -> Option<Option<NonNull<u8>>> {
    if !classes_debug() {
        return None;
    }
    if firewalled(size, class_align(c)) {
        // The request's alignment, not the class's: the buffer ends as
        // close to the guard page as the caller allows.
        return Some(super::firewall::alloc(
            size,
            align.max(1),
            crate::alloc::owner(c),
        ));
    }
    let Some(d) = class(c) else {
        return Some(keg.alloc().ok());
    };
    loop {
        let Ok(p) = keg.alloc() else {
            super::checks::log_failure(d.name, size);
            return Some(None);
        };
        // SAFETY: just taken from the class keg.
        match unsafe { d.on_alloc(p, Some(size)) } {
            Ok(()) => return Some(Some(p)),
            // The bad buffer stays allocated (quarantined); try another.
            Err(r) => raise(r, d.action, true),
        }
    }
}

/// Class `c`'s slow-path free of `size` bytes at `p` when `KMEM_DEBUG` is
/// on; `false` when debugging is off and the magazines take it.
///
/// # Safety
///
/// `p` points into a page of class `c`; the caller gives it up.
#[inline]
pub(crate) unsafe fn hook_free(c: usize, keg: &CacheKeg, p: NonNull<u8>, size: usize) -> bool {
    if !classes_debug() {
        return false;
    }
    let name = CLASS_NAMES[c];
    let action = class(c).and_then(|d| d.action);
    if firewalled(size, class_align(c)) {
        // SAFETY: the caller gives the block up.
        if let Err(e) = unsafe { super::firewall::free(p, size, crate::alloc::owner(c)) } {
            let mut r = Report::new(ErrorClass::BadAddress, name, p.as_ptr() as usize);
            r.detail = Some(e.to_string());
            raise(r, action, true);
        }
        return true;
    }
    let checked = match class(c) {
        // SAFETY: the caller's promise.
        Some(d) => unsafe { d.on_free(p, Some(size), keg, None) },
        None => Ok(()),
    };
    match checked {
        Ok(()) => {
            // SAFETY: an allocated buffer of this keg (checked when debugged).
            if let Err(e) = unsafe { keg.free(p) } {
                let mut r = Report::new(ErrorClass::BadAddress, name, p.as_ptr() as usize);
                r.detail = Some(e.to_string());
                raise(r, action, true);
            }
        }
        Err(r) => raise(r, action, true),
    }
    true
}

/// `kmem_free` of a class-`c` buffer with a size of another class:
/// reports `KMERR_BADSIZE` when class `c` debugs, and returns the size the
/// buffer was allocated with, if its tag knows it.
#[cold]
pub(crate) fn wrong_class(c: usize, p: NonNull<u8>, size: usize) -> Option<usize> {
    let d = class(c)?;
    let keg = crate::alloc::class_keg(c)?;
    // Only a live buffer start has a tag worth reading.
    if keg.buffer_containing(p.as_ptr() as usize).ok()? != (p, true) {
        return None;
    }
    // SAFETY: a live buffer of the class keg.
    let allocated = unsafe { d.alloc_size(p) }?;
    let mut r = d.report(ErrorClass::WrongSize, p);
    r.sizes = Some((size, allocated));
    raise(r, d.action, true);
    Some(allocated)
}

/// A firewalled large block (above the classes), if `KMEM_DEBUG` asks.
pub(crate) fn large_alloc(size: usize, align: usize) -> Option<Option<NonNull<u8>>> {
    firewalled(size, align).then(|| super::firewall::alloc(size, align, crate::page::NO_OWNER))
}

/// Frees a large block that [`large_alloc`] firewalled; `None` if it was
/// not one.
///
/// # Safety
///
/// The caller gives the block up.
pub(crate) unsafe fn large_free(
    p: NonNull<u8>,
    size: usize,
    align: usize,
) -> Option<Result<(), crate::KmemError>> {
    // SAFETY: the caller's promise.
    firewalled(size, align)
        .then(|| unsafe { super::firewall::free(p, size, crate::page::NO_OWNER) })
}

/// The class kegs' debug states with their kegs, for [`super::verify`].
pub(crate) fn class_caches() -> impl Iterator<Item = (&'static DebugCache, &'static CacheKeg)> {
    (0..NUM_CLASSES).filter_map(|c| Some((class(c)?, crate::alloc::class_keg(c)?)))
}
