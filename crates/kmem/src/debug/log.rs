//! The transaction, content, failure and slab logs (illumos
//! `kmem_log_header_t`, `kmem_log_enter`, `kmem_transaction_log`,
//! `kmem_content_log`, `kmem_failure_log`, `kmem_slab_log`).
//!
//! Each log is a bounded ring per CPU (the seed's per-CPU chunks), chosen by
//! `kmem_sys::current_cpu` and locked by its own futex mutex, so CPUs log
//! without sharing a lock. The rings are allocated from [`Meta`] when the
//! first debugging cache that logs is built; nothing here touches the global
//! allocator, except [`Log::records`], which callers use from ordinary code.
//! When a ring is full the oldest record is overwritten. Records carry a
//! process-wide sequence number, so [`Log::records`] merges the CPUs in
//! order.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use allocator_api2::alloc::Allocator;
use kmem_sys::PerCpu;
use kmem_sys::sync::Mutex;

use super::stack::{Frame, STACK_DEPTH};
use crate::Meta;

/// illumos `kmem_content_maxsave`: bytes of a freed buffer saved.
pub const CONTENTS_MAX: usize = 256;

/// What a [`Transaction`] record was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A buffer was allocated.
    Alloc,
    /// A buffer was freed.
    Free,
    /// An allocation failed (failure log).
    AllocFailed,
    /// A slab's pages came from the page layer (slab log).
    SlabCreate,
    /// A slab's pages went back (slab log).
    SlabDestroy,
}

/// A record of the transaction, failure or slab log (illumos
/// `kmem_bufctl_audit_t` as logged).
#[derive(Clone, Copy, Debug)]
pub struct Transaction {
    /// Order across all CPUs.
    pub seq: u64,
    /// What happened.
    pub op: Op,
    /// The cache (or `kmem_pages` for slab records).
    pub cache: &'static str,
    /// The buffer, or the slab's pages.
    pub addr: usize,
    /// Bytes involved (buffer, request or slab size).
    pub size: usize,
    /// `kmem_sys::thread_slot` of the thread.
    pub thread: usize,
    /// Monotonic clock, nanoseconds.
    pub nanos: u64,
    depth: usize,
    stack: [usize; STACK_DEPTH],
}

impl Transaction {
    pub(crate) fn new(op: Op, cache: &'static str, addr: usize, size: usize) -> Self {
        let mut t = Transaction {
            seq: 0,
            op,
            cache,
            addr,
            size,
            thread: kmem_sys::thread_slot(),
            nanos: now_nanos(),
            depth: 0,
            stack: [0; STACK_DEPTH],
        };
        t.depth = super::stack::capture(&mut t.stack);
        t
    }

    /// The return addresses, innermost first.
    pub fn stack(&self) -> impl Iterator<Item = Frame> + '_ {
        self.stack[..self.depth].iter().map(|&a| Frame(a))
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "#{} {:?} buffer={:#x} size={} cache: {} thread={} time=T-{:.9}s",
            self.seq,
            self.op,
            self.addr,
            self.size,
            self.cache,
            self.thread,
            now_nanos().saturating_sub(self.nanos) as f64 / 1e9
        )?;
        for fr in self.stack() {
            writeln!(f, "    {fr}")?;
        }
        Ok(())
    }
}

/// A content-log record: the first bytes of a buffer as it was freed.
#[derive(Clone, Copy, Debug)]
pub struct Contents {
    /// Order across all CPUs.
    pub seq: u64,
    /// The cache.
    pub cache: &'static str,
    /// The buffer.
    pub addr: usize,
    len: usize,
    bytes: [u8; CONTENTS_MAX],
}

impl Contents {
    pub(crate) fn new(cache: &'static str, addr: usize, bytes: &[u8]) -> Self {
        let len = bytes.len().min(CONTENTS_MAX);
        let mut c = Contents {
            seq: 0,
            cache,
            addr,
            len,
            bytes: [0; CONTENTS_MAX],
        };
        c.bytes[..len].copy_from_slice(&bytes[..len]);
        c
    }

    /// The saved bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Display for Contents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} contents of {:#x} cache: {}:",
            self.seq, self.addr, self.cache
        )?;
        for (i, b) in self.bytes().iter().enumerate() {
            if i % 32 == 0 {
                write!(f, "\n   ")?;
            }
            write!(f, " {b:02x}")?;
        }
        writeln!(f)
    }
}

/// Records that can sit in a [`Log`].
pub trait Record: Copy + Send + 'static {
    /// The record's sequence number.
    fn seq(&self) -> u64;
    /// Sets it.
    fn set_seq(&mut self, seq: u64);
}

impl Record for Transaction {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }
}

impl Record for Contents {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }
}

/// One CPU's ring.
struct Ring<T> {
    buf: NonNull<T>,
    cap: usize,
    written: usize,
}

// SAFETY: the ring owns its Meta block; it is reached only under its lock.
unsafe impl<T: Send> Send for Ring<T> {}

/// A bounded per-CPU log of records.
pub struct Log<T: Record> {
    name: &'static str,
    cpus: PerCpu<Mutex<Ring<T>>, Meta>,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

impl<T: Record> Log<T> {
    fn new(name: &'static str, per_cpu: usize) -> Self {
        let cpus = PerCpu::new_in(
            |_| {
                let layout = Layout::array::<T>(per_cpu).expect("log ring layout");
                let buf = Meta
                    .allocate(layout)
                    .expect("kmem: no memory for a debug log")
                    .cast::<T>();
                Mutex::new(Ring {
                    buf,
                    cap: per_cpu,
                    written: 0,
                })
            },
            Meta,
        );
        Log { name, cpus }
    }

    /// The log's name (`kmem_transaction_log`, …).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Records kept per CPU.
    pub fn capacity_per_cpu(&self) -> usize {
        self.cpus.get(0).lock().cap
    }

    /// Appends a record to the current CPU's ring (`kmem_log_enter`).
    pub(crate) fn enter(&self, mut rec: T) {
        rec.set_seq(SEQ.fetch_add(1, Ordering::Relaxed));
        let mut r = self.cpus.current().lock();
        let i = r.written % r.cap;
        // SAFETY: `i < cap`, inside the ring's block.
        unsafe { r.buf.as_ptr().add(i).write(rec) };
        r.written += 1;
    }

    /// Every record kept, oldest first.
    pub fn records(&self) -> Vec<T> {
        // Room for everything first: under `Kmem` with debugging, growing
        // the vector while a ring is locked would log into that ring.
        let per_cpu = self.cpus.get(0).lock().cap;
        let mut out = Vec::with_capacity(per_cpu * self.cpus.len());
        for slot in self.cpus.iter() {
            let r = slot.lock();
            let n = r.written.min(r.cap);
            // SAFETY: the first `n` slots were written.
            out.extend((0..n).map(|i| unsafe { r.buf.as_ptr().add(i).read() }));
        }
        out.sort_by_key(Record::seq);
        out
    }
}

impl<T: Record + fmt::Display> fmt::Display for Log<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:", self.name)?;
        for r in self.records() {
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

pub(crate) struct Logs {
    pub transactions: Log<Transaction>,
    pub contents: Log<Contents>,
    pub failures: Log<Transaction>,
    pub slabs: Log<Transaction>,
}

static LOGS: OnceLock<Logs> = OnceLock::new();

/// The logs, created on first use.
pub(crate) fn logs() -> &'static Logs {
    LOGS.get_or_init(|| Logs {
        transactions: Log::new("kmem_transaction_log", 1024),
        contents: Log::new("kmem_content_log", 256),
        failures: Log::new("kmem_failure_log", 128),
        slabs: Log::new("kmem_slab_log", 256),
    })
}

/// The logs if some debugging cache has created them.
#[inline]
pub(crate) fn logs_if_on() -> Option<&'static Logs> {
    LOGS.get()
}

/// Monotonic nanoseconds.
pub(crate) fn now_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is ours; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
