//! Per-instance, per-thread magazine pairs without a lock, an atomic or the
//! global allocator.
//!
//! A `thread_local!` exists once per type, not once per cache, so each
//! [`Magazines`](crate::Magazines) in [`Mode::PerThread`](crate::Mode) takes
//! an *id* (an index into a fixed table of [`MAX_THREAD_CACHES`] entries) and
//! a globally unique *serial*. Each thread has a const-initialised table
//! `[(serial, node); MAX_THREAD_CACHES]`: the fast path reads entry `id`,
//! compares the serial, and uses the node's pair. A stale entry (left by a
//! dropped cache whose id was reused) never matches, because serials are never
//! reused, so the fast path never dereferences a dead node.
//!
//! Nodes are allocated from the cache's allocator `A` and linked on the
//! cache's node list. The list, and the cache's liveness, are guarded by the
//! registry lock of its id (a `kmem_sys::sync::Mutex`, which never
//! allocates). Lock order: registry id lock → depot lock.
//!
//! **Thread exit.** The table has no destructor (so it stays readable to the
//! end of the thread). Instead the first node a thread creates sets a value
//! on a `pthread_key_t` created once with a destructor (`libc::pthread_key_create`);
//! Rust's own TLS-destructor registration can fall back to a boxed list on
//! some platforms, and this path must not reach the global allocator. (glibc
//! stores the values of the first 32 keys inside the thread descriptor.) The
//! destructor marks the table dead, then, for each entry whose cache is still
//! registered, flushes the node's magazines to the depot and frees it. An
//! allocation after that (a later TLS destructor freeing memory) finds the
//! table dead and takes the locked per-CPU path instead, so nothing is lost.
//! A cache dropped first flushes and frees every node it still lists.
//! Threads that never exit through pthread (the main thread at process exit)
//! keep their magazines until the process ends.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kmem_sys::sync::Mutex;

/// Caches in per-thread mode that can exist at once; more fall back to the
/// per-CPU front end.
pub const MAX_THREAD_CACHES: usize = 128;

/// Unlinks, flushes and frees one node of the cache that owns the id.
pub(crate) type FlushFn = unsafe fn(&mut Owner, *mut ());

/// What a registry id is held by.
#[derive(Clone, Copy)]
pub(crate) struct Owner {
    /// 0 when the id is free.
    pub(crate) serial: u64,
    /// The cache's pinned shared state.
    pub(crate) cache: *const (),
    pub(crate) flush: Option<FlushFn>,
    /// Head of the cache's node list (nodes link through their own header).
    pub(crate) nodes: *mut (),
}

/// A registry slot: `Owner` behind a lock that never allocates.
pub(crate) struct Slot(pub(crate) Mutex<Owner>);

// SAFETY: the raw pointers in `Owner` are only dereferenced under the slot
// lock, by code that checked the serial (so the cache is alive).
unsafe impl Sync for Slot {}
// SAFETY: as above.
unsafe impl Send for Slot {}

pub(crate) static REGISTRY: [Slot; MAX_THREAD_CACHES] = [const {
    Slot(Mutex::new(Owner {
        serial: 0,
        cache: ptr::null(),
        flush: None,
        nodes: ptr::null_mut(),
    }))
}; MAX_THREAD_CACHES];

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// One thread's entry for one id.
#[derive(Clone, Copy)]
struct Entry {
    serial: u64,
    node: *mut (),
}

const LIVE: u8 = 0;
const DEAD: u8 = 2;

struct Table {
    entries: [Cell<Entry>; MAX_THREAD_CACHES],
    /// Whether this thread's exit hook is armed.
    armed: Cell<bool>,
    state: Cell<u8>,
}

thread_local! {
    static TABLE: Table = const {
        Table {
            entries: [const {
                Cell::new(Entry {
                    serial: 0,
                    node: ptr::null_mut(),
                })
            }; MAX_THREAD_CACHES],
            armed: Cell::new(false),
            state: Cell::new(LIVE),
        }
    };
}

/// A cache's claim on a registry id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handle {
    pub(crate) id: usize,
    pub(crate) serial: u64,
}

impl Handle {
    /// A handle no thread has a node for: serials start at 1, and an entry
    /// whose serial is 0 has a null node.
    pub(crate) const NONE: Handle = Handle { id: 0, serial: 0 };
}

/// Claims a free id for `cache`, or `None` if all are taken.
pub(crate) fn register(cache: *const (), flush: FlushFn) -> Option<Handle> {
    let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
    for (id, slot) in REGISTRY.iter().enumerate() {
        let mut owner = slot.0.lock();
        if owner.serial == 0 {
            *owner = Owner {
                serial,
                cache,
                flush: Some(flush),
                nodes: ptr::null_mut(),
            };
            return Some(Handle { id, serial });
        }
    }
    None
}

/// The calling thread's node for `h`, or null if it has none (or its table
/// is gone). The fast path: one TLS access and a compare.
#[inline(always)]
pub(crate) fn lookup(h: Handle) -> *mut () {
    TABLE.with(|t| {
        // Ids are below the table length; the mask (not a bounds check)
        // keeps the fast path free of a panic branch.
        let e = t.entries[h.id % MAX_THREAD_CACHES].get();
        if e.serial == h.serial {
            e.node
        } else {
            ptr::null_mut()
        }
    })
}

/// Whether the calling thread may create a node (its exit hook has not run).
pub(crate) fn can_create() -> bool {
    TABLE.with(|t| t.state.get() == LIVE)
}

/// Records `node` as the calling thread's node for `h` and arms the exit
/// hook. The caller has linked the node on the cache's list.
pub(crate) fn set(h: Handle, node: *mut ()) {
    TABLE.with(|t| {
        t.entries[h.id].set(Entry {
            serial: h.serial,
            node,
        });
        if !t.armed.get() {
            t.armed.set(true);
            arm_exit_hook();
        }
    });
}

static KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
static KEY_LOCK: Mutex<()> = Mutex::new(());

fn arm_exit_hook() {
    let mut key = KEY.load(Ordering::Acquire);
    if key == usize::MAX {
        let _g = KEY_LOCK.lock();
        key = KEY.load(Ordering::Acquire);
        if key == usize::MAX {
            let mut k: libc::pthread_key_t = 0;
            // SAFETY: `k` is a valid out-pointer; the destructor is an
            // `extern "C"` function that never unwinds.
            let rc = unsafe { libc::pthread_key_create(&mut k, Some(thread_exit)) };
            assert_eq!(rc, 0, "kmem-magazine: pthread_key_create failed ({rc})");
            key = k as usize;
            KEY.store(key, Ordering::Release);
        }
    }
    // SAFETY: `key` is a live key; a non-null value makes pthread run the
    // destructor at thread exit. The value is never dereferenced.
    let rc = unsafe {
        libc::pthread_setspecific(key as libc::pthread_key_t, ptr::dangling::<libc::c_void>())
    };
    assert_eq!(rc, 0, "kmem-magazine: pthread_setspecific failed ({rc})");
}

/// Flushes the exiting thread's nodes into their depots.
extern "C" fn thread_exit(_value: *mut libc::c_void) {
    // Accessing the table cannot fail: it has no destructor.
    TABLE.with(|t| {
        t.state.set(DEAD);
        for (id, cell) in t.entries.iter().enumerate() {
            let e = cell.replace(Entry {
                serial: 0,
                node: ptr::null_mut(),
            });
            if e.serial == 0 {
                continue;
            }
            let mut owner = REGISTRY[id].0.lock();
            if owner.serial == e.serial
                && let Some(flush) = owner.flush
            {
                // SAFETY: the serial matches, so the cache is alive and
                // cannot be dropped while we hold its registry lock; `node`
                // is this thread's node of that cache, on its list.
                unsafe { flush(&mut owner, e.node) };
            }
        }
    });
}
