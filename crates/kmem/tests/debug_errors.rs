//! One test per `kmem_error` class on debugging caches, asserting on the
//! report, plus the logs, `verify`, lite mode, the firewall and the panic
//! action.

use core::ptr::NonNull;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use kmem::Cache;
use kmem::debug::{self, Action, DebugFlags, ErrorClass, Op, Report};

mod common;

/// The tests share the process's page layer, so pages one test frees can
/// become another test's next slab at once. The firewall test's planted
/// double free must find its freed page still unused, or it reports a
/// free to the wrong cache instead of a bad address (seen under qemu):
/// it takes this lock for writing, every other test for reading.
static PAGES: RwLock<()> = RwLock::new(());

/// A guard shared with every test but the firewall's. A test that
/// panicked poisons nothing the others rely on.
fn sharing_pages() -> RwLockReadGuard<'static, ()> {
    PAGES.read().unwrap_or_else(|e| e.into_inner())
}

/// The guard of the one test that needs the page layer to itself.
fn owning_pages() -> RwLockWriteGuard<'static, ()> {
    PAGES.write().unwrap_or_else(|e| e.into_inner())
}

/// Offset of the buftag of a `size`-byte buffer: its bytes rounded to a
/// word, then the keg's free-list link word.
fn tag_offset(size: usize) -> usize {
    size.next_multiple_of(8) + 8
}

fn cache(name: &'static str, size: usize, flags: DebugFlags) -> Cache {
    Cache::builder(name, size, 8)
        .debug(flags)
        .on_error(Action::Continue)
        .build()
        .unwrap()
}

/// The reports about cache `name`, oldest first.
fn reports_for(name: &str) -> Vec<Report> {
    debug::reports()
        .into_iter()
        .filter(|r| r.cache == name)
        .collect()
}

fn only_report(name: &str, class: ErrorClass) -> Report {
    let rs = reports_for(name);
    assert_eq!(rs.len(), 1, "{rs:#?}");
    assert_eq!(rs[0].class, class, "{}", rs[0]);
    rs[0].clone()
}

/// Writes `v` at byte `off` of `p`.
unsafe fn poke(p: NonNull<u8>, off: usize, v: u64) {
    // SAFETY: the caller names memory of the cache's chunk.
    unsafe { p.as_ptr().add(off).cast::<u64>().write_unaligned(v) };
}

#[test]
fn modified_after_free_is_found_by_verify_and_on_reuse() {
    let _pages = sharing_pages();
    let c = cache("dbg_modified", 64, DebugFlags::DEFAULT);
    let p = c.alloc().unwrap();
    // SAFETY: ours until the free.
    unsafe { c.free(p) }.unwrap();
    // SAFETY: a free buffer of the cache: the planted use after free.
    unsafe { poke(p, 8, 0x2a) };
    let v: Vec<_> = debug::verify()
        .into_iter()
        .filter(|r| r.cache == "dbg_modified")
        .collect();
    assert_eq!(v.len(), 1, "{v:#?}");
    let text = v[0].to_string();
    common::assert_says(
        &text,
        &[
            "buffer modified after being freed",
            "offset 0x8 (0xdeadbeefdeadbeef replaced by 0x2a)",
            &format!("buffer={p:p}"),
            "previous transactions on buffer",
        ],
    );
    assert!(
        v[0].history
            .iter()
            .any(|t| t.op == Op::Free && t.stack().count() > 0)
    );
    // Allocation finds it too, quarantines the buffer and hands out another.
    let mut held = Vec::new();
    while reports_for("dbg_modified").is_empty() && held.len() < 200 {
        held.push(c.alloc().unwrap());
    }
    let r = only_report("dbg_modified", ErrorClass::Modified);
    assert_eq!(
        (r.buffer, r.offset, r.found),
        (p.as_ptr() as usize, Some(8), Some(0x2a))
    );
    assert!(!held.contains(&p), "the modified buffer was handed out");
    for q in held {
        // SAFETY: allocated above.
        unsafe { c.free(q) }.unwrap();
    }
}

#[test]
fn redzone_violation_names_offset_and_value() {
    let _pages = sharing_pages();
    let c = cache("dbg_redzone", 100, DebugFlags::REDZONE);
    let p = c.alloc().unwrap();
    // SAFETY: the byte after the buffer: its redzone, the planted overrun.
    unsafe { p.as_ptr().add(101).write(7) };
    // SAFETY: allocated above.
    assert!(unsafe { c.free(p) }.is_err());
    let r = only_report("dbg_redzone", ErrorClass::Redzone);
    let text = r.to_string();
    common::assert_says(
        &text,
        &[
            "redzone violation: write past end of buffer",
            "redzone damaged at offset 0x65 (0xbb replaced by 0x7)",
            "cache: dbg_redzone",
        ],
    );
}

#[test]
fn duplicate_free() {
    let _pages = sharing_pages();
    let c = cache("dbg_dupfree", 48, DebugFlags::DEADBEEF);
    let p = c.alloc().unwrap();
    // SAFETY: allocated above; the second free is the planted bug.
    unsafe {
        c.free(p).unwrap();
        assert!(c.free(p).is_err());
    }
    let r = only_report("dbg_dupfree", ErrorClass::DuplicateFree);
    assert!(r.to_string().contains("duplicate free: buffer freed twice"));
    assert_eq!(r.buffer, p.as_ptr() as usize);
}

#[test]
fn bad_address() {
    let _pages = sharing_pages();
    let c = cache("dbg_badaddr", 32, DebugFlags::DEFAULT);
    let mut local = [0u64; 4];
    let p = NonNull::from(&mut local).cast::<u8>();
    // SAFETY: mapped memory that is no buffer of ours.
    assert!(unsafe { c.free(p) }.is_err());
    let r = only_report("dbg_badaddr", ErrorClass::BadAddress);
    assert!(r.to_string().contains("invalid free: buffer not in cache"));
    assert_eq!(r.buffer, p.as_ptr() as usize);
}

#[test]
fn bad_buftag() {
    let _pages = sharing_pages();
    let c = cache("dbg_buftag", 64, DebugFlags::DEADBEEF);
    let p = c.alloc().unwrap();
    // SAFETY: allocated above.
    unsafe { c.free(p) }.unwrap();
    // SAFETY: the free buffer's bxstat word: a stray write into the tag.
    unsafe { poke(p, tag_offset(64) + 16, 0x1234) };
    let mut held = Vec::new();
    while reports_for("dbg_buftag").is_empty() && held.len() < 200 {
        held.push(c.alloc().unwrap());
    }
    let r = only_report("dbg_buftag", ErrorClass::BadBufTag);
    let text = r.to_string();
    common::assert_says(
        &text,
        &[
            "boundary tag corrupted",
            &format!("should be {:#x}", debug::BUFTAG_FREE),
        ],
    );
    assert_eq!(r.buffer, p.as_ptr() as usize);
}

#[test]
fn bad_bufctl() {
    let _pages = sharing_pages();
    let c = cache("dbg_bufctl", 64, DebugFlags::AUDIT);
    let p = c.alloc().unwrap();
    // SAFETY: the audit record's address field, after the 56-byte buftag.
    unsafe { poke(p, tag_offset(64) + 56, 0xbad) };
    // SAFETY: allocated above.
    assert!(unsafe { c.free(p) }.is_err());
    let r = only_report("dbg_bufctl", ErrorClass::BadBufCtl);
    assert!(r.to_string().contains("bufctl corrupted"));
}

#[test]
fn wrong_cache() {
    let _pages = sharing_pages();
    let a = cache("dbg_owner_a", 64, DebugFlags::DEFAULT);
    let b = cache("dbg_owner_b", 64, DebugFlags::DEFAULT);
    let p = a.alloc().unwrap();
    // SAFETY: a live buffer of `a`, given to `b`: refused.
    assert!(unsafe { b.free(p) }.is_err());
    let r = only_report("dbg_owner_b", ErrorClass::WrongCache);
    let text = r.to_string();
    common::assert_says(
        &text,
        &[
            "buffer freed to wrong cache",
            "buffer was allocated from dbg_owner_a,",
            "caller attempting free to dbg_owner_b.",
        ],
    );
    // SAFETY: back to its own cache.
    unsafe { a.free(p) }.unwrap();
    assert!(reports_for("dbg_owner_a").is_empty());
}

#[test]
fn free_inside_a_buffer() {
    let _pages = sharing_pages();
    let c = cache("dbg_badbase", 64, DebugFlags::DEFAULT);
    let p = c.alloc().unwrap();
    // SAFETY: an address inside a live buffer.
    let inner = unsafe { p.add(24) };
    // SAFETY: refused without a change.
    assert!(unsafe { c.free(inner) }.is_err());
    let r = only_report("dbg_badbase", ErrorClass::BadBase);
    let text = r.to_string();
    common::assert_says(
        &text,
        &[&format!(
            "free address ({inner:p}) != alloc address ({p:p}), offset 0x18"
        )],
    );
    // SAFETY: the real free still works.
    unsafe { c.free(p) }.unwrap();
}

#[test]
fn panic_is_the_default_action() {
    let _pages = sharing_pages();
    let c = Cache::builder("dbg_panics", 64, 8)
        .debug(DebugFlags::DEADBEEF)
        .build()
        .unwrap();
    let p = c.alloc().unwrap();
    // SAFETY: allocated above.
    unsafe { c.free(p) }.unwrap();
    // SAFETY: the planted double free; the report panics.
    let e = catch_unwind(AssertUnwindSafe(|| unsafe { c.free(p) })).unwrap_err();
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("duplicate free") && msg.contains("dbg_panics"),
        "{msg}"
    );
}

#[test]
fn logs_record_transactions_contents_failures_and_slabs() {
    let _pages = sharing_pages();
    let c = Cache::builder("dbg_logs", 40, 8)
        .debug(DebugFlags::DEFAULT)
        .on_error(Action::Continue)
        .limit(1)
        .build()
        .unwrap();
    let p = c.alloc().unwrap();
    // SAFETY: ours until the free.
    unsafe {
        p.as_ptr().write_bytes(0x5a, 40);
        c.free(p).unwrap();
    }
    let addr = p.as_ptr() as usize;
    let tx: Vec<_> = debug::transaction_log()
        .records()
        .into_iter()
        .filter(|t| t.addr == addr && t.cache == "dbg_logs")
        .collect();
    assert!(tx.iter().any(|t| t.op == Op::Alloc) && tx.iter().any(|t| t.op == Op::Free));
    let saved = debug::content_log()
        .records()
        .into_iter()
        .find(|r| r.addr == addr && r.cache == "dbg_logs")
        .expect("contents logged");
    assert_eq!(saved.bytes(), &[0x5a; 40][..]);
    assert!(
        debug::slab_log()
            .records()
            .iter()
            .any(|t| t.op == Op::SlabCreate)
    );
    // Fill to the limit: the next allocation fails and is logged.
    let held: Vec<_> = std::iter::from_fn(|| c.alloc().ok()).collect();
    assert!(c.alloc().is_err());
    assert!(
        debug::failure_log()
            .records()
            .iter()
            .any(|t| t.op == Op::AllocFailed && t.cache == "dbg_logs")
    );
    let printed = debug::transaction_log().to_string();
    assert!(printed.starts_with("kmem_transaction_log:") && printed.contains("dbg_logs"));
    for q in held {
        // SAFETY: allocated above.
        unsafe { c.free(q) }.unwrap();
    }
    c.check().unwrap();
}

#[test]
fn lite_checks_the_first_word_only() {
    let _pages = sharing_pages();
    let c = cache("dbg_lite", 72, DebugFlags::LITE | DebugFlags::DEADBEEF);
    let p = c.alloc().unwrap();
    // SAFETY: ours until the free.
    unsafe { c.free(p) }.unwrap();
    // SAFETY: planted writes into the free buffer.
    unsafe {
        poke(p, 16, 1);
        poke(p, 0, 2);
    }
    let v: Vec<_> = debug::verify()
        .into_iter()
        .filter(|r| r.cache == "dbg_lite")
        .collect();
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(
        (v[0].class, v[0].offset, v[0].found),
        (ErrorClass::Modified, Some(0), Some(2))
    );
}

#[test]
fn constructed_objects_survive_debugging() {
    let _pages = sharing_pages();
    let c = Cache::builder("dbg_ctor", 64, 8)
        .ctor(|p| {
            // SAFETY: the cache hands the constructor 64 bytes.
            unsafe { p.as_ptr().write_bytes(0x11, 64) };
            true
        })
        .debug(DebugFlags::DEFAULT)
        .on_error(Action::Continue)
        .build()
        .unwrap();
    for _ in 0..3 {
        let p = c.alloc().unwrap();
        // SAFETY: a constructed 64-byte object.
        assert_eq!(unsafe { *p.as_ptr().add(63) }, 0x11);
        // SAFETY: allocated above.
        unsafe { c.free(p) }.unwrap();
    }
    assert!(reports_for("dbg_ctor").is_empty());
    assert!(c.stats().allocs >= 3);
}

#[test]
fn firewall_buffers_end_at_a_page() {
    let _pages = owning_pages();
    let c = cache("dbg_firewall", 1000, DebugFlags::FIREWALL);
    let p = c.alloc().unwrap();
    assert_eq!((p.as_ptr() as usize + 1000) % kmem_sys::page_size(), 0);
    // SAFETY: 1000 bytes of ours.
    unsafe {
        p.as_ptr().write_bytes(3, 1000);
        c.free(p).unwrap();
        // Freed once: a second free is caught by the page map.
        assert!(c.free(p).is_err());
    }
    let r = only_report("dbg_firewall", ErrorClass::BadAddress);
    assert!(r.to_string().contains("invalid free: buffer not in cache"));
}
