//! Error reports (illumos `kmem_error`, the `KMERR_*` classes and
//! `kmem_panic_info`) and what to do about them.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use kmem_sys::sync::Mutex;

use super::log::Transaction;

/// The seed's error classes (`KMERR_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// `KMERR_MODIFIED`: a free buffer was written.
    Modified,
    /// `KMERR_REDZONE`: a write past the end of a buffer.
    Redzone,
    /// `KMERR_DUPFREE`: a buffer freed twice.
    DuplicateFree,
    /// `KMERR_BADADDR`: a free of an address no cache handed out.
    BadAddress,
    /// `KMERR_BADBUFTAG`: the buffer's tag is corrupted.
    BadBufTag,
    /// `KMERR_BADBUFCTL`: the buffer's audit record is corrupted.
    BadBufCtl,
    /// `KMERR_BADCACHE`: a buffer freed to another cache than its own.
    WrongCache,
    /// `KMERR_BADSIZE`: `kmem_free` size differs from the `kmem_alloc` size.
    WrongSize,
    /// `KMERR_BADBASE`: a free of an address inside a buffer.
    BadBase,
}

impl ErrorClass {
    /// The seed's one-line description.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorClass::Modified => "buffer modified after being freed",
            ErrorClass::Redzone => "redzone violation: write past end of buffer",
            ErrorClass::DuplicateFree => "duplicate free: buffer freed twice",
            ErrorClass::BadAddress => "invalid free: buffer not in cache",
            ErrorClass::BadBufTag => "boundary tag corrupted",
            ErrorClass::BadBufCtl => "bufctl corrupted",
            ErrorClass::WrongCache => "buffer freed to wrong cache",
            ErrorClass::WrongSize => "bad free: wrong size",
            ErrorClass::BadBase => "bad free: address inside a buffer",
        }
    }
}

/// What happens when an error is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    /// Print the report and panic with it (the default; the seed's
    /// `kmem_panic`). Under [`Kmem`](crate::Kmem), which must not unwind,
    /// this aborts after printing.
    Panic = 0,
    /// Print the report and abort the process.
    Abort = 1,
    /// Print the report, keep it for [`reports`], and go on; the bad buffer
    /// is left alone (leaked), never reused.
    Continue = 2,
}

static ACTION: AtomicU8 = AtomicU8::new(Action::Panic as u8);

/// Sets the process-wide action for errors found by caches that have no
/// action of their own.
pub fn set_action(action: Action) {
    ACTION.store(action as u8, Ordering::Relaxed);
}

/// The process-wide action.
pub fn action() -> Action {
    match ACTION.load(Ordering::Relaxed) {
        1 => Action::Abort,
        2 => Action::Continue,
        _ => Action::Panic,
    }
}

/// One error found (illumos `kmem_panic_info` plus what `kmem_error`
/// prints).
#[derive(Clone, Debug)]
pub struct Report {
    /// What went wrong.
    pub class: ErrorClass,
    /// The cache the caller used.
    pub cache: &'static str,
    /// The cache that really holds the buffer, when it is another one.
    pub real_cache: Option<&'static str>,
    /// The address the caller passed.
    pub buffer: usize,
    /// The start of the buffer holding it, when that differs.
    pub real_buffer: Option<usize>,
    /// The buffer's audit record (or the buffer without audit), 0 if none.
    pub bufctl: usize,
    /// Offset in the buffer of the first wrong byte or word.
    pub offset: Option<usize>,
    /// What should have been there.
    pub expected: Option<u64>,
    /// What was there.
    pub found: Option<u64>,
    /// `(size freed with, size allocated with)` for
    /// [`ErrorClass::WrongSize`].
    pub sizes: Option<(usize, usize)>,
    /// What a lower layer said, when it found the problem.
    pub detail: Option<String>,
    /// With audit: the last transactions on the buffer, newest first.
    pub history: Vec<Transaction>,
}

impl Report {
    pub(crate) fn new(class: ErrorClass, cache: &'static str, buffer: usize) -> Self {
        Report {
            class,
            cache,
            real_cache: None,
            buffer,
            real_buffer: None,
            bufctl: 0,
            offset: None,
            expected: None,
            found: None,
            sizes: None,
            detail: None,
            history: Vec::new(),
        }
    }

    pub(crate) fn at(mut self, offset: usize, expected: u64, found: u64) -> Self {
        self.offset = Some(offset);
        self.expected = Some(expected);
        self.found = Some(found);
        self
    }
}

/// The seed's `kmem_error` text.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kmem: {}", self.class.describe())?;
        match self.class {
            ErrorClass::Modified | ErrorClass::Redzone => {
                if let (Some(o), Some(e), Some(v)) = (self.offset, self.expected, self.found) {
                    let what = if self.class == ErrorClass::Modified {
                        "modification occurred"
                    } else {
                        "redzone damaged"
                    };
                    writeln!(f, "{what} at offset {o:#x} ({e:#x} replaced by {v:#x})")?;
                }
            }
            ErrorClass::BadBufTag => {
                if let (Some(e), Some(v)) = (self.expected, self.found) {
                    writeln!(f, "bcp ^ bxstat = {v:#x}, should be {e:#x}")?;
                }
            }
            ErrorClass::WrongCache => {
                writeln!(
                    f,
                    "buffer was allocated from {},",
                    self.real_cache.unwrap_or("?")
                )?;
                writeln!(f, "caller attempting free to {}.", self.cache)?;
            }
            ErrorClass::WrongSize => {
                if let Some((freed, allocated)) = self.sizes {
                    writeln!(f, "free size ({freed}) != alloc size ({allocated})")?;
                }
            }
            ErrorClass::BadBase => {
                if let Some(real) = self.real_buffer {
                    writeln!(
                        f,
                        "free address ({:#x}) != alloc address ({real:#x}), offset {:#x}",
                        self.buffer,
                        self.buffer - real
                    )?;
                }
            }
            _ => {}
        }
        if let Some(d) = &self.detail {
            writeln!(f, "{d}")?;
        }
        writeln!(
            f,
            "buffer={:#x}  bufctl={:#x}  cache: {}",
            self.buffer, self.bufctl, self.cache
        )?;
        if !self.history.is_empty() {
            writeln!(
                f,
                "previous transactions on buffer {:#x}:",
                self.real_buffer.unwrap_or(self.buffer)
            )?;
            for t in &self.history {
                write!(f, "{t}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Reports kept for [`reports`].
const KEPT: usize = 64;

/// Reports are kept behind `Arc`s so that nothing is allocated or freed
/// with the lock held (under `Kmem` that could report, and re-lock).
struct Kept {
    ring: [Option<Arc<Report>>; KEPT],
    next: usize,
}

static KEPT_REPORTS: Mutex<Kept> = Mutex::new(Kept {
    ring: [const { None }; KEPT],
    next: 0,
});

/// The last reports found (at most 64), oldest first.
pub fn reports() -> Vec<Report> {
    let mut kept = Vec::with_capacity(KEPT);
    {
        let k = KEPT_REPORTS.lock();
        kept.extend((0..KEPT).filter_map(|i| k.ring[(k.next + i) % KEPT].clone()));
    }
    kept.iter().map(|r| Report::clone(r)).collect()
}

/// Prints `report`, keeps it, and applies `action` (the cache's, else the
/// process-wide one). `global` says the caller is `Kmem`, which must not
/// unwind. Returns only for [`Action::Continue`].
#[cold]
#[inline(never)]
pub(crate) fn raise(report: Report, cache_action: Option<Action>, global: bool) {
    let text = report.to_string();
    // SAFETY: writing our own buffer to stderr.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
    let report = Arc::new(report);
    let old = {
        let mut k = KEPT_REPORTS.lock();
        let i = k.next;
        k.next = (i + 1) % KEPT;
        k.ring[i].replace(report)
    };
    drop(old);
    match cache_action.unwrap_or_else(action) {
        Action::Continue => {}
        Action::Panic if !global => panic!("{text}"),
        _ => std::process::abort(),
    }
}
