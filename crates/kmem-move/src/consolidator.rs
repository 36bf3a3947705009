//! [`Consolidator`]: the handle a cache keeps, and the thread that runs
//! moves off the allocation path (illumos `kmem_move_taskq`, fed by the
//! maintenance work of `kmem_cache_scan` and `kmem_cache_move_notify`).

use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use kmem_sys::sync::{Condvar, Mutex};

use crate::client::Client;
use crate::defrag::{Buf, Defrag};
use crate::engine::Shared;
use crate::error::MoveError;
use crate::reply::Move;
use crate::stats::{Counters, MoveStats};

/// A slab consolidator for one cache: owns a thread that scans the cache's
/// keg every interval and runs the moves it queues, and answers
/// [`move_notify`](Self::move_notify) and
/// [`defragment`](Self::defragment). Dropping it stops and joins the thread;
/// moves still queued are dropped with their destination buffers returned
/// to the keg.
pub struct Consolidator<C: Client> {
    shared: Arc<Shared<C>>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

/// What one [`Consolidator::defragment`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defragmented {
    /// Moves run on the calling thread (callbacks made, or moves dropped
    /// before the callback); the consolidator thread may have run others.
    pub moves: usize,
    /// Partial slabs before and after.
    pub partial_before: usize,
    /// Partial slabs after the moves.
    pub partial_after: usize,
}

impl<C: Client> Consolidator<C> {
    /// Starts a consolidator for `client`'s keg with move callback `mover`,
    /// scanning every `interval` ([`SCAN_INTERVAL`](crate::SCAN_INTERVAL)
    /// is the seed's).
    ///
    /// # Errors
    ///
    /// [`MoveError::Spawn`] if the thread cannot be started.
    pub fn spawn(
        client: C,
        mover: impl Fn(NonNull<u8>, NonNull<u8>, usize) -> Move + Send + Sync + 'static,
        interval: Duration,
    ) -> Result<Self, MoveError> {
        let name = client.name();
        let shared = Arc::new(Shared {
            client,
            mover: Box::new(mover),
            state: Mutex::new(Defrag::new()),
            wake: Condvar::new(),
            idle: Condvar::new(),
            stats: Counters::default(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kmem-move {name}"))
            .spawn(move || run(&worker, interval))
            .map_err(|source| MoveError::Spawn {
                cache: name,
                source,
            })?;
        Ok(Consolidator {
            shared,
            thread_id: thread.thread().id(),
            thread: Some(thread),
        })
    }

    /// The client.
    pub fn client(&self) -> &C {
        &self.shared.client
    }

    /// Tells the consolidator that `buf`, whose move the client refused
    /// with [`Move::No`] or [`Move::Later`], can move now
    /// (`kmem_cache_move_notify`). The thread clears the slab's mark and,
    /// if more than one slab is partial, queues the move. Returns at once.
    ///
    /// # Errors
    ///
    /// [`MoveError::NotABuffer`] if `buf` is not a buffer start of the keg.
    pub fn move_notify(&self, buf: NonNull<u8>) -> Result<(), MoveError> {
        self.shared
            .client
            .keg()
            .slab_of(buf)
            .map_err(|source| MoveError::NotABuffer {
                cache: self.shared.client.name(),
                addr: buf.as_ptr() as usize,
                source,
            })?;
        self.shared.stats.notify.fetch_add(1, Ordering::Relaxed);
        self.shared.state.lock().notify.push_back(Buf(buf));
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Asks the thread for a scan now instead of at the next interval.
    pub fn scan(&self) {
        self.shared.state.lock().scan_due = true;
        self.shared.wake.notify_all();
    }

    /// The desperate consolidation (`kmem_cache_defrag`, as
    /// `kmem_cache_reap` runs it when memory is short): every partial slab
    /// but the most-used is a candidate, whatever the fragmentation and
    /// no-move marks, and the queued moves run **on the calling thread**
    /// (the thread may take some of them too). Returns once nothing is
    /// queued or running.
    pub fn defragment(&self) -> Defragmented {
        let s = &self.shared;
        let partial_before = s.client.keg().stats().partial_slabs;
        s.defrag();
        let moves = s.drain_queue();
        self.wait_idle();
        Defragmented {
            moves,
            partial_before,
            partial_after: s.client.keg().stats().partial_slabs,
        }
    }

    /// Waits until nothing is queued or running.
    pub fn wait_idle(&self) {
        let mut st = self.shared.state.lock();
        while !st.idle() {
            self.shared.idle.wait(&mut st);
        }
    }

    /// Moves pending (queued or running) now.
    pub fn pending(&self) -> usize {
        self.shared.state.lock().pending.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> MoveStats {
        self.shared.stats.snapshot()
    }
}

impl<C: Client> Drop for Consolidator<C> {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock();
            st.shutdown = true;
            st.queue.clear();
            st.notify.clear();
        }
        self.shared.wake.notify_all();
        if std::thread::current().id() == self.thread_id {
            // Dropped from inside a callback on the thread itself: it exits
            // once the callback returns, and the keg goes with the last
            // reference, taking every buffer with it.
            return;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Only moves that never started are left (a move running on a
        // defragmenting caller's thread cannot be: it borrows `self`).
        // Their destinations are raw buffers.
        let (left, dead) = {
            let mut st = self.shared.state.lock();
            let left: Vec<_> = st.pending.drain().map(|(_, p)| p).collect();
            (left, core::mem::take(&mut st.dead))
        };
        let keg = self.shared.client.keg();
        for p in &left {
            // SAFETY: a raw destination buffer of this keg, never handed out.
            let r = unsafe { keg.free(p.to.0) };
            debug_assert!(r.is_ok(), "{r:?}");
        }
        for id in left.iter().map(|p| p.slab).chain(dead) {
            let r = keg.unpin_slab(id);
            debug_assert!(r.is_ok(), "{r:?}");
        }
    }
}

/// The consolidator thread: sleep until work, a scan is due, or shutdown;
/// then handle notifications, scan, and run the queued moves.
fn run<C: Client>(s: &Shared<C>, interval: Duration) {
    let mut next_scan = Instant::now() + interval;
    loop {
        let (notes, scan) = {
            let mut st = s.state.lock();
            loop {
                if st.shutdown {
                    return;
                }
                if Instant::now() >= next_scan {
                    st.scan_due = true;
                }
                if !st.queue.is_empty() || !st.notify.is_empty() || st.scan_due {
                    break;
                }
                s.wake.wait_until(&mut st, next_scan);
            }
            st.running += 1;
            let scan = core::mem::take(&mut st.scan_due);
            (core::mem::take(&mut st.notify), scan)
        };
        for buf in notes {
            s.notify_task(buf);
        }
        if scan {
            s.scan();
            next_scan = Instant::now() + interval;
        }
        s.drain_queue();
        let mut st = s.state.lock();
        st.running -= 1;
        if st.idle() {
            s.idle.notify_all();
        }
    }
}
