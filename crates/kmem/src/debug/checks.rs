//! The per-cache checks: [`DebugCache`] is illumos `kmem_slab_create`'s
//! buffer setup, `kmem_cache_alloc_debug`, `kmem_cache_free_debug` and
//! `kmem_free`'s size check, and the classification half of `kmem_error`.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::flags::DebugFlags;
use super::log::{Contents, Op, Transaction, logs};
use super::report::{Action, ErrorClass, Report};
use super::tag::{
    Audit, BUFTAG_ALLOC, BUFTAG_FREE, BufTag, FREE_PATTERN, LITE_COUNT, REDZONE_BYTE,
    REDZONE_PATTERN, UNINITIALIZED_PATTERN, copy_pattern, size_decode, size_encode, size_valid,
    tag_size, verify_and_copy_pattern, verify_pattern,
};
use crate::fill::CacheKeg;

/// Ids for audit records' `cache` field.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Transactions shown in a report.
const HISTORY: usize = 8;

/// One debugging cache's resolved flags and geometry.
pub(crate) struct DebugCache {
    pub name: &'static str,
    pub flags: DebugFlags,
    pub action: Option<Action>,
    /// A `kmem_alloc` class under `Kmem`: errors never unwind.
    pub global: bool,
    /// Buffer alignment (firewall blocks).
    pub align: usize,
    /// Page-map owner tag of the cache's pages (firewall blocks).
    pub owner: u32,
    buf_size: usize,
    /// Bytes from the buffer start to its [`BufTag`].
    tag_offset: usize,
    id: usize,
}

impl DebugCache {
    /// `flags` must be resolved. The keg must be built with
    /// `.debug_tag(self.tag_bytes())` and an `init` that calls
    /// [`init_buffer`](Self::init_buffer) (which puts the free-list link
    /// word after the buffer, before the tag).
    pub fn new(name: &'static str, flags: DebugFlags, size: usize, global: bool) -> Self {
        DebugCache {
            name,
            flags,
            action: None,
            global,
            align: 8,
            owner: crate::page::NO_OWNER,
            buf_size: size,
            tag_offset: size.next_multiple_of(8) + 8,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether buffers carry a tag (`KMF_BUFTAG`).
    pub fn tagged(&self) -> bool {
        self.flags.intersects(DebugFlags::BUFTAG)
    }

    /// Size of the buffers.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Tag bytes the keg must reserve after each buffer.
    pub fn tag_bytes(&self) -> usize {
        tag_size(self.flags.contains(DebugFlags::AUDIT))
    }

    /// Where the keg must have put the tag.
    pub fn tag_offset(&self) -> usize {
        self.tag_offset
    }

    fn audit(&self) -> bool {
        self.flags.contains(DebugFlags::AUDIT)
    }

    fn tag(&self, p: NonNull<u8>) -> *mut BufTag {
        // SAFETY: the tag lies inside the buffer's chunk.
        unsafe { p.as_ptr().add(self.tag_offset) }.cast()
    }

    fn audit_rec(&self, p: NonNull<u8>) -> *mut Audit {
        // SAFETY: with AUDIT the record follows the tag inside the chunk.
        unsafe { self.tag(p).add(1) }.cast()
    }

    fn bufctl(&self, p: NonNull<u8>) -> usize {
        if self.audit() {
            self.audit_rec(p) as usize
        } else {
            p.as_ptr() as usize
        }
    }

    /// Words checked for the free pattern (`cache_verify`).
    fn verify_words(&self) -> usize {
        if self.flags.contains(DebugFlags::LITE) {
            1
        } else {
            self.buf_size.div_ceil(8)
        }
    }

    /// The `kmem_alloc` size kept in an allocated buffer's tag.
    ///
    /// # Safety
    ///
    /// `p` is an allocated buffer of this cache's keg.
    pub unsafe fn alloc_size(&self, p: NonNull<u8>) -> Option<usize> {
        // SAFETY: the tag is inside the chunk.
        let enc = (unsafe { (*self.tag(p)).redzone } >> 32) as u32;
        size_valid(enc).then(|| size_decode(enc))
    }

    /// Sets up a buffer of a new slab as free (`kmem_slab_create`).
    ///
    /// # Safety
    ///
    /// `p` is a buffer of this cache's keg, not handed out.
    pub unsafe fn init_buffer(&self, p: NonNull<u8>) {
        let bufctl = self.bufctl(p);
        // SAFETY: the tag (and audit record) are inside the chunk, ours.
        unsafe {
            self.tag(p).write(BufTag {
                redzone: REDZONE_PATTERN,
                bufctl,
                bxstat: bufctl ^ BUFTAG_FREE,
                history: [0; LITE_COUNT],
            });
            if self.audit() {
                self.audit_rec(p).write(Audit {
                    addr: p.as_ptr() as usize,
                    cache: self.id,
                    nanos: 0,
                    thread: 0,
                    depth: 0,
                    stack: [0; super::stack::STACK_DEPTH],
                });
            }
            if self.flags.contains(DebugFlags::DEADBEEF) {
                copy_pattern(FREE_PATTERN, p.as_ptr(), self.verify_words());
            }
        }
    }

    /// A report on buffer `p` with its bufctl and, with audit, its history.
    pub fn report(&self, class: ErrorClass, p: NonNull<u8>) -> Report {
        let addr = p.as_ptr() as usize;
        let mut r = Report::new(class, self.name, addr);
        r.bufctl = self.bufctl(p);
        if self.audit() {
            r.history = history(addr);
        }
        r
    }

    fn bufctl_ok(&self, p: NonNull<u8>, bufctl: usize) -> bool {
        if bufctl != self.bufctl(p) {
            return false;
        }
        // SAFETY: with AUDIT the record is inside the chunk.
        !self.audit()
            || unsafe {
                let a = &*self.audit_rec(p);
                a.addr == p.as_ptr() as usize && a.cache == self.id
            }
    }

    /// `kmem_cache_alloc_debug` for a buffer just taken from the keg;
    /// `req` is the `kmem_alloc` size. On an error the buffer must stay
    /// allocated (quarantined).
    ///
    /// # Safety
    ///
    /// `p` is a buffer of this cache's keg, just allocated.
    #[expect(
        clippy::result_large_err,
        reason = "a report is the rare, cold outcome; it is built once and raised"
    )]
    pub unsafe fn on_alloc(&self, p: NonNull<u8>, req: Option<usize>) -> Result<(), Report> {
        // SAFETY: the caller's buffer; its tag is inside the chunk.
        let t = unsafe { &mut *self.tag(p) };
        let bcp = t.bufctl;
        if t.bxstat != bcp ^ BUFTAG_FREE {
            let mut r = self.report(ErrorClass::BadBufTag, p);
            r.expected = Some(BUFTAG_FREE as u64);
            r.found = Some((bcp ^ t.bxstat) as u64);
            r.offset = Some(self.tag_offset + 16);
            return Err(r);
        }
        t.bxstat = bcp ^ BUFTAG_ALLOC;
        if !self.bufctl_ok(p, bcp) {
            return Err(self.report(ErrorClass::BadBufCtl, p));
        }
        if self.flags.contains(DebugFlags::DEADBEEF) {
            let words = self.verify_words();
            // SAFETY: `words` words of the buffer.
            if let Some((off, v)) = unsafe {
                verify_and_copy_pattern(FREE_PATTERN, UNINITIALIZED_PATTERN, p.as_ptr(), words)
            } {
                return Err(self
                    .report(ErrorClass::Modified, p)
                    .at(off, FREE_PATTERN, v));
            }
        }
        let end = req.unwrap_or(self.buf_size);
        t.redzone = match req {
            Some(n) => (REDZONE_PATTERN & 0xffff_ffff) | u64::from(size_encode(n)) << 32,
            None => REDZONE_PATTERN,
        };
        // SAFETY: [end, tag) lies inside the chunk and is not in use.
        unsafe {
            p.as_ptr()
                .add(end)
                .write_bytes(REDZONE_BYTE, self.tag_offset - end)
        };
        self.note(p, t, Op::Alloc, end);
        Ok(())
    }

    /// Audit and lite bookkeeping of one transaction.
    fn note(&self, p: NonNull<u8>, t: &mut BufTag, op: Op, size: usize) {
        if self.flags.contains(DebugFlags::LITE) {
            t.history.copy_within(0..LITE_COUNT - 1, 1);
            t.history[0] = kmem_sys::thread_slot();
        }
        if self.audit() {
            let tx = Transaction::new(op, self.name, p.as_ptr() as usize, size);
            // SAFETY: with AUDIT the record is inside the chunk.
            let a = unsafe { &mut *self.audit_rec(p) };
            a.nanos = tx.nanos;
            a.thread = tx.thread;
            a.depth = tx.stack().count();
            for (s, f) in a.stack.iter_mut().zip(tx.stack()) {
                *s = f.0;
            }
            logs().transactions.enter(tx);
        }
    }

    /// `kmem_cache_free_debug` (and `kmem_free`'s size check when `req` is
    /// the size given). `Ok` means the buffer is now marked free and may
    /// go back to the keg; on an error it must not.
    ///
    /// # Safety
    ///
    /// `p` points into mapped memory; the caller gives it up.
    #[expect(
        clippy::result_large_err,
        reason = "a report is the rare, cold outcome; it is built once and raised"
    )]
    pub unsafe fn on_free(
        &self,
        p: NonNull<u8>,
        req: Option<usize>,
        keg: &CacheKeg,
        dtor: Option<&crate::Dtor>,
    ) -> Result<(), Report> {
        let addr = p.as_ptr() as usize;
        let allocated = match keg.buffer_containing(addr) {
            Err(_) => return Err(Report::new(ErrorClass::BadAddress, self.name, addr)),
            Ok((base, _)) if base != p => {
                let mut r = self.report(ErrorClass::BadBase, base);
                r.buffer = addr;
                r.real_buffer = Some(base.as_ptr() as usize);
                return Err(r);
            }
            Ok((_, allocated)) => allocated,
        };
        // SAFETY: `p` is a buffer start of this keg: its tag is in the chunk.
        let t = unsafe { &mut *self.tag(p) };
        let bcp = t.bufctl;
        if t.bxstat != bcp ^ BUFTAG_ALLOC {
            if t.bxstat == bcp ^ BUFTAG_FREE || !allocated {
                return Err(self.report(ErrorClass::DuplicateFree, p));
            }
            let mut r = self.report(ErrorClass::Redzone, p);
            r.offset = Some(self.tag_offset + 16);
            r.expected = Some((bcp ^ BUFTAG_ALLOC) as u64);
            r.found = Some(t.bxstat as u64);
            return Err(r);
        }
        if !self.bufctl_ok(p, bcp) {
            return Err(self.report(ErrorClass::BadBufCtl, p));
        }
        if let Some(size) = req {
            let enc = (t.redzone >> 32) as u32;
            if enc != size_encode(size) {
                if size_valid(enc) && size_decode(enc) < self.buf_size {
                    let mut r = self.report(ErrorClass::WrongSize, p);
                    r.sizes = Some((size, size_decode(enc)));
                    return Err(r);
                }
                let mut r = self.report(ErrorClass::Redzone, p);
                r.offset = Some(self.tag_offset + 4);
                r.expected = Some(u64::from(size_encode(size)));
                r.found = Some(u64::from(enc));
                return Err(r);
            }
        }
        let end = req.unwrap_or(self.buf_size);
        // SAFETY: [end, tag) is inside the chunk.
        let zone =
            unsafe { core::slice::from_raw_parts(p.as_ptr().add(end), self.tag_offset - end) };
        if let Some(i) = zone.iter().position(|&b| b != REDZONE_BYTE) {
            let r = self.report(ErrorClass::Redzone, p);
            return Err(r.at(end + i, u64::from(REDZONE_BYTE), u64::from(zone[i])));
        }
        let want = match req {
            Some(_) => REDZONE_PATTERN & 0xffff_ffff,
            None => REDZONE_PATTERN,
        };
        let got = if req.is_some() {
            t.redzone & 0xffff_ffff
        } else {
            t.redzone
        };
        if got != want {
            let r = self.report(ErrorClass::Redzone, p);
            return Err(r.at(self.tag_offset, want, got));
        }
        t.bxstat = bcp ^ BUFTAG_FREE;
        t.redzone = REDZONE_PATTERN;
        if self.flags.contains(DebugFlags::CONTENTS) {
            // SAFETY: the buffer's bytes, still the caller's contents.
            let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), end) };
            logs().contents.enter(Contents::new(self.name, addr, bytes));
        }
        self.note(p, t, Op::Free, end);
        if let Some(d) = dtor {
            d(p);
        }
        if self.flags.contains(DebugFlags::DEADBEEF) {
            // SAFETY: the buffer's words (the link word after it is the keg's).
            unsafe { copy_pattern(FREE_PATTERN, p.as_ptr(), self.verify_words()) };
        }
        Ok(())
    }

    /// Undoes [`on_alloc`](Self::on_alloc) for a buffer whose constructor
    /// refused it, before it goes back to the keg.
    ///
    /// # Safety
    ///
    /// `p` passed `on_alloc` and was never handed out.
    pub unsafe fn unalloc(&self, p: NonNull<u8>) {
        // SAFETY: as the caller promises.
        let t = unsafe { &mut *self.tag(p) };
        t.bxstat = t.bufctl ^ BUFTAG_FREE;
        t.redzone = REDZONE_PATTERN;
        if self.flags.contains(DebugFlags::DEADBEEF) {
            // SAFETY: the buffer's words.
            unsafe { copy_pattern(FREE_PATTERN, p.as_ptr(), self.verify_words()) };
        }
    }

    /// Checks a free buffer in place (`::kmem_verify`): its tag says free
    /// and, with `DEADBEEF`, it still holds the free pattern.
    ///
    /// # Safety
    ///
    /// `p` is a free buffer of this cache's keg.
    #[expect(
        clippy::result_large_err,
        reason = "a report is the rare, cold outcome; it is built once and raised"
    )]
    pub unsafe fn verify_free(&self, p: NonNull<u8>) -> Result<(), Report> {
        // SAFETY: the tag is inside the chunk.
        let t = unsafe { &*self.tag(p) };
        if t.bxstat != t.bufctl ^ BUFTAG_FREE || !self.bufctl_ok(p, t.bufctl) {
            let mut r = self.report(ErrorClass::BadBufTag, p);
            r.expected = Some(BUFTAG_FREE as u64);
            r.found = Some((t.bufctl ^ t.bxstat) as u64);
            return Err(r);
        }
        if self.flags.contains(DebugFlags::DEADBEEF) {
            // SAFETY: the buffer's words.
            let bad = unsafe { verify_pattern(FREE_PATTERN, p.as_ptr(), self.verify_words()) };
            if let Some((off, v)) = bad {
                return Err(self
                    .report(ErrorClass::Modified, p)
                    .at(off, FREE_PATTERN, v));
            }
        }
        if t.redzone != REDZONE_PATTERN {
            let r = self.report(ErrorClass::Redzone, p);
            return Err(r.at(self.tag_offset, REDZONE_PATTERN, t.redzone));
        }
        Ok(())
    }
}

/// The last transactions on `addr` from the transaction log, newest first.
pub(crate) fn history(addr: usize) -> Vec<Transaction> {
    let mut h: Vec<Transaction> = logs()
        .transactions
        .records()
        .into_iter()
        .filter(|t| t.addr == addr)
        .collect();
    h.reverse();
    h.truncate(HISTORY);
    h
}

/// Logs a failed allocation (`kmem_failure_log`), if logging is on.
pub(crate) fn log_failure(cache: &'static str, size: usize) {
    if let Some(l) = super::log::logs_if_on() {
        l.failures
            .enter(Transaction::new(Op::AllocFailed, cache, 0, size));
    }
}

/// Logs slab pages coming or going (`kmem_slab_log`), if logging is on.
pub(crate) fn log_slab(create: bool, addr: usize, size: usize) {
    if let Some(l) = super::log::logs_if_on() {
        let op = if create {
            Op::SlabCreate
        } else {
            Op::SlabDestroy
        };
        l.slabs
            .enter(Transaction::new(op, "kmem_pages", addr, size));
    }
}
