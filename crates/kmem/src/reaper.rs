//! The background reaper: illumos `kmem_update` / `kmem_reap` on a timer.
//!
//! In illumos a timeout fires every `kmem_reap_interval` (15 s,
//! `illumos-kmem.c` `kmem_update_timeout`, `kmem_reap_done`): each cache's
//! depot working set is updated and the magazine size grown under
//! contention (`kmem_cache_update`), and what the working set did not use
//! goes back to the slabs and the VM (`kmem_cache_reap`). Here a std thread
//! does both on each tick through [`stats::reap_all`](crate::stats::reap_all):
//! every size class and every live [`Cache`](crate::Cache) is updated and
//! reaped, empty slabs go to the page layer (which discards their pages, so
//! the resident size drops) and the cache of large blocks is flushed. A burst
//! of allocations is so given back two ticks after it ends: one tick records
//! the idle magazines as the working-set minimum, the next frees them.
//!
//! [`start`] runs one for as long as its [`ReaperHandle`] lives;
//! [`Kmem::with_reaper`](crate::Kmem::with_reaper) starts one for the whole
//! process on the first allocation. The thread's own allocations (its stack
//! bookkeeping, the cache list it walks) go through whatever the global
//! allocator is, `Kmem` included: no lock of the allocator is held while it
//! spawns or while it reaps.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::Arc;
use std::thread::JoinHandle;

use kmem_sys::sync::{Condvar, Mutex};

/// The seed's reaping and update interval (`kmem_reap_interval = 15 * hz`).
pub const REAP_INTERVAL: Duration = Duration::from_secs(15);

/// What the reaper thread and its handle share.
#[derive(Debug, Default)]
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    ticks: AtomicU64,
    reaped: AtomicU64,
}

/// A running reaper thread; dropping it (or [`stop`](Self::stop)) stops the
/// thread and waits for it.
///
/// ```
/// use std::time::Duration;
///
/// let reaper = kmem::reaper::start(Duration::from_millis(10));
/// let p = kmem::kmem_alloc(1000)?;
/// // SAFETY: freed once.
/// unsafe { kmem::kmem_free(p, 1000)? };
/// while reaper.ticks() < 2 {
///     std::thread::sleep(Duration::from_millis(5));
/// }
/// reaper.stop();
/// # Ok::<(), kmem::KmemError>(())
/// ```
#[derive(Debug)]
pub struct ReaperHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    interval: Duration,
}

/// Starts a thread that calls [`stats::reap_all`](crate::stats::reap_all)
/// every `interval` ([`REAP_INTERVAL`] is the seed's) until the handle is
/// dropped.
///
/// # Panics
///
/// If the OS cannot create the thread (as `std::thread::spawn`).
pub fn start(interval: Duration) -> ReaperHandle {
    let shared = Arc::new(Shared::default());
    let thread =
        spawn(Arc::clone(&shared), interval).expect("kmem: cannot start the reaper thread");
    ReaperHandle {
        shared,
        thread: Some(thread),
        interval,
    }
}

fn spawn(shared: Arc<Shared>, interval: Duration) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kmem-reaper".into())
        .spawn(move || run(&shared, interval))
}

/// The reaper loop: sleep for `interval` unless told to stop, then reap.
fn run(shared: &Shared, interval: Duration) {
    loop {
        {
            let mut stop = shared.stop.lock();
            if !*stop {
                shared.wake.wait_for(&mut stop, interval);
            }
            if *stop {
                return;
            }
        }
        // kmem_update: every working set moves on at this tick ...
        crate::alloc::update_classes();
        crate::cache::live_caches()
            .iter()
            .for_each(crate::Cache::update_now);
        // ... and kmem_reap gives back what the last two did not use.
        let freed = crate::stats::reap_all();
        shared.reaped.fetch_add(freed as u64, Ordering::Relaxed);
        shared.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

impl ReaperHandle {
    /// The interval between reaps.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reaps done so far.
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }

    /// Slabs given back to the page layer by this reaper so far.
    pub fn slabs_reaped(&self) -> u64 {
        self.shared.reaped.load(Ordering::Relaxed)
    }

    /// Stops the thread and waits for it to finish its current reap.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ReaperHandle {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // A reap that panicked has nothing left to clean up.
            let _ = t.join();
        }
    }
}

/// State of the process-wide reaper that `Kmem::with_reaper` asks for.
const IDLE: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;
const FAILED: u8 = 3;
static GLOBAL: AtomicU8 = AtomicU8::new(IDLE);

/// Makes sure the process-wide reaper runs, at `interval`; called by
/// `Kmem::with_reaper`'s allocations. One load once it runs.
#[inline]
pub(crate) fn ensure_global(interval: Duration) {
    if GLOBAL.load(Ordering::Relaxed) == IDLE {
        start_global(interval);
    }
}

#[cold]
fn start_global(interval: Duration) {
    if GLOBAL
        .compare_exchange(IDLE, STARTING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    // Spawning allocates through this same allocator; those allocations see
    // STARTING and go ahead without coming here. No allocator lock is held.
    let shared = Arc::new(Shared::default());
    let state = match spawn(Arc::clone(&shared), interval) {
        Ok(_detached) => {
            // The handle is never dropped: the reaper lives as long as the
            // process. Its counters stay reachable through [`global_ticks`].
            GLOBAL_SHARED.get_or_init(|| shared);
            RUNNING
        }
        // No thread (e.g. a sandbox): the process runs without a reaper.
        Err(_) => FAILED,
    };
    GLOBAL.store(state, Ordering::Release);
}

static GLOBAL_SHARED: std::sync::OnceLock<Arc<Shared>> = std::sync::OnceLock::new();

/// Reaps done by the process-wide reaper of
/// [`Kmem::with_reaper`](crate::Kmem::with_reaper) (0 if none runs).
pub fn global_ticks() -> u64 {
    GLOBAL_SHARED
        .get()
        .map_or(0, |s| s.ticks.load(Ordering::Relaxed))
}
