//! Blocking allocation (the seed's `M_WAITOK`, `VMEM_CONDVAR_WAIT` and
//! `VMEM_CONDVAR_BROADCAST`): who waits where, and who wakes them.
//!
//! A waiting allocation that finds no room, after importing, draining the
//! quantum caches and reclaiming, waits in one of two places:
//!
//! - **In the source**, when the arena imports and its limit allows it:
//!   [`Source::import_wait`], as the seed passes `M_WAITOK` to its import
//!   function. A parent [`Vmem`](crate::Vmem) waits as its own
//!   `alloc_wait` does, so a free in the parent wakes the child's waiter.
//! - **On the arena's condition variable** (`vm_cv`) otherwise: when the
//!   arena has no source, its limit forbids an import, or the source
//!   cannot wait (the default `import_wait`, [`ImportFns`]).
//!
//! Everything that may make room in the arena calls [`Core::wake`] under
//! the arena lock: a free, an `add`, an import, and a free into a quantum
//! cache while someone waits ([`Core::notice_cached_free`]), since a cached
//! segment stays busy in the arena and only a drain reaches it. A wake-up
//! bumps `wakeups`, broadcasts on the condition variable, and, if a waiter
//! is blocked in the source, cancels its wait there
//! ([`Source::wake_waiting_imports`]). The seed leaves that waiter in the
//! parent until the parent has room (its ten-second `vmem_periodic`
//! broadcast only makes it look in the parent again); this crate has no
//! periodic broadcast and needs none.
//!
//! No wake-up is lost. A waiter counts itself (`waiters`) under the lock
//! for its whole slow path, snapshots the arena ([`Room`]) after its failed
//! search, and before it sleeps compares a new snapshot under the lock it
//! then sleeps on: a wake-up between the two moved `wakeups`, one after it
//! finds the waiter asleep. In the source, the cancel test reads `wakeups`
//! under the source's lock, and the waker takes that lock to wake it
//! ([`Core::wake_now`]), so the waker either runs first and the
//! test sees it, or finds the waiter asleep.
//!
//! [`ImportFns`]: crate::ImportFns

use core::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use allocator_api2::alloc::Allocator;
use kmem_sys::sync::MutexGuard;

use crate::arena::Arena;
use crate::error::VmemError;
use crate::fit::{Constraints, Policy, Request};
use crate::inner::Core;
use crate::source::{ImportWait, Source};

/// How long an allocation may wait for resources.
#[derive(Clone, Copy)]
pub(crate) enum Wait<'a> {
    /// Fail at once (`M_NOWAIT`).
    No,
    /// Wait (`M_WAITOK`).
    Until(Until<'a>),
}

/// How long a waiting allocation waits.
#[derive(Clone, Copy)]
pub(crate) struct Until<'a> {
    /// When to give up; `None` means never.
    deadline: Option<Instant>,
    /// The timeout asked for, for the error.
    timeout: Duration,
    /// Set when this is a child arena's waiting import
    /// ([`Source::import_wait`]), which the child may cancel.
    child: Option<&'a ImportWait<'a>>,
}

/// What tells whether steps taken with the arena lock dropped (an import
/// that failed, a drain of the quantum caches, a reclaim, a wait in the
/// source) may have made room for a request that did not fit. The seed
/// compares the free bytes only, but a free that empties an imported span
/// releases it, lowering the total as much as the bytes in use: the room
/// it made is in the source, to import. And a segment freed into a
/// quantum cache stays busy in the arena: a waiter learns of it by a
/// wake-up.
#[derive(Clone, Copy)]
pub(crate) struct Room {
    free: usize,
    releases: u64,
    wakeups: u64,
}

impl Room {
    /// Whether there are more free bytes, a span went back to the source,
    /// or waiters were woken, since `before`.
    pub(crate) fn gained_since(self, before: Room) -> bool {
        self.free > before.free
            || self.releases != before.releases
            || self.wakeups != before.wakeups
    }
}

impl<A, S> Core<A, S>
where
    A: Allocator + Clone + Send + Sync,
    S: Source,
{
    /// Like [`alloc`](Self::alloc), but when the arena is exhausted waits
    /// for a free, an [`add`](Self::add) or an import to make room
    /// (`M_WAITOK`): for ever if `timeout` is `None` or so long that its
    /// deadline cannot be represented (`Duration::MAX`).
    ///
    /// # Errors
    ///
    /// [`VmemError::TimedOut`] when the timeout passes first.
    pub fn alloc_wait(
        &self,
        size: usize,
        policy: Policy,
        timeout: Option<Duration>,
    ) -> Result<usize, VmemError> {
        self.xalloc_wait(size, &Constraints::default(), policy, timeout)
    }

    /// Like [`xalloc`](Self::xalloc), waiting as
    /// [`alloc_wait`](Self::alloc_wait) does.
    ///
    /// # Errors
    ///
    /// As [`xalloc`](Self::xalloc), and [`VmemError::TimedOut`].
    pub fn xalloc_wait(
        &self,
        size: usize,
        c: &Constraints,
        policy: Policy,
        timeout: Option<Duration>,
    ) -> Result<usize, VmemError> {
        let req = self.request(size, Some(c))?;
        // A deadline past what `Instant` can hold is never reached.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let wait = Wait::Until(Until {
            deadline,
            timeout: timeout.unwrap_or_default(),
            child: None,
        });
        self.place(&req, policy, wait)
    }

    /// A child arena's waiting import from this arena
    /// ([`Source::import_wait`]): `size` bytes by instant fit, waiting as
    /// [`alloc_wait`](Self::alloc_wait) does until `wait`'s deadline or
    /// until the child cancels.
    pub(crate) fn import_wait(&self, size: usize, wait: &ImportWait<'_>) -> Option<usize> {
        let req = self.request(size, None).ok()?;
        let wait = Wait::Until(Until {
            deadline: wait.deadline(),
            timeout: Duration::ZERO,
            child: Some(wait),
        });
        self.place(&req, Policy::InstantFit, wait).ok()
    }

    /// The snapshot the slow path compares, under the lock.
    pub(crate) fn room(&self, g: &Arena<A>) -> Room {
        Room {
            free: g.total - g.inuse,
            releases: g.counters.releases,
            wakeups: self.wakeups.load(Ordering::Relaxed),
        }
    }

    /// The last step of a waiting allocation that found no room: wait in
    /// the source for a span, if it imports, then on the condition
    /// variable. `Ok(Some(x))` when the last look after a timeout placed
    /// the request at `x`, `Ok(None)` to go round the loop again (woken,
    /// or a span imported), an error when the deadline passed or the
    /// child cancelled.
    pub(crate) fn wait_for_room(
        &self,
        g: &mut MutexGuard<'_, Arena<A>>,
        req: &Request,
        policy: Policy,
        until: &Until<'_>,
        before: Room,
    ) -> Result<Option<usize>, VmemError> {
        let cancelled = || until.child.is_some_and(|w| w.is_cancelled());
        if self.source.imports() && self.import_waiting(g, req, until)? {
            return Ok(None);
        }
        if self.room(g).gained_since(before) {
            return Ok(None);
        }
        // Checked under the lock held until the wait below, which a
        // child's wake-up takes to wake this one.
        if cancelled() {
            return Err(self.exhausted(req));
        }
        // A deadline that passed in the source leaves nothing to sleep for.
        let timed_out = match until.deadline {
            Some(d) if d <= Instant::now() => true,
            Some(d) => {
                g.counters.waits += 1;
                self.cv.wait_until(g, d).timed_out()
            }
            None => {
                g.counters.waits += 1;
                self.cv.wait(g);
                false
            }
        };
        if !timed_out {
            // A child's cancel should not cost this arena a drain and a
            // reclaim on its way out.
            return if cancelled() {
                Err(self.exhausted(req))
            } else {
                Ok(None)
            };
        }
        // One last look: a free may have raced with the timeout.
        g.reserve()?;
        if let Some(x) = g.alloc_counted(req, policy) {
            return Ok(Some(x));
        }
        g.counters.timeouts += 1;
        Err(VmemError::TimedOut {
            arena: self.name,
            size: req.size,
            waited: until.timeout,
        })
    }

    /// Imports a span for `req` from the source, letting it wait
    /// ([`Source::import_wait`]) until the deadline, until this arena gains
    /// room another way (anything that moves `wakeups` cancels it), or
    /// until the child this arena waits for, if any, cancels. `Ok(false)`
    /// if the limit forbids an import or the source supplied none.
    fn import_waiting(
        &self,
        g: &mut MutexGuard<'_, Arena<A>>,
        req: &Request,
        until: &Until<'_>,
    ) -> Result<bool, VmemError> {
        let Some(size) = self.import_size(g, req) else {
            return Ok(false);
        };
        let start = self.wakeups.load(Ordering::Relaxed);
        let cancelled = || {
            self.wakeups.load(Ordering::Relaxed) != start
                || until.child.is_some_and(|w| w.is_cancelled())
        };
        let wait = ImportWait::new(until.deadline, &cancelled);
        self.in_source.fetch_add(1, Ordering::Relaxed);
        g.importing += size;
        let got = MutexGuard::unlocked(g, || self.source.import_wait(size, &wait));
        g.importing -= size;
        self.in_source.fetch_sub(1, Ordering::Relaxed);
        match got {
            Some(base) => self.add_import(g, base, size).map(|()| true),
            None => Ok(false),
        }
    }

    /// Wakes the waiters, if any, after a change that may have made room;
    /// `_g` shows the arena lock is held. True if one of them is blocked
    /// in the source: the caller must then, once it has dropped the lock,
    /// call [`wake_source`](Self::wake_source).
    #[inline]
    #[must_use]
    pub(crate) fn wake(&self, _g: &Arena<A>) -> bool {
        self.waiters().load(Ordering::Relaxed) != 0 && self.wake_all()
    }

    /// [`wake`](Self::wake) for a caller that keeps the lock: it is dropped
    /// only around [`wake_source`](Self::wake_source), if that is needed.
    pub(crate) fn wake_relocking(&self, g: &mut MutexGuard<'_, Arena<A>>) {
        if self.wake(g) {
            MutexGuard::unlocked(g, || self.wake_source());
        }
    }

    /// [`wake`](Self::wake) for a caller done with the lock: it is dropped
    /// before [`wake_source`](Self::wake_source), if that is needed.
    pub(crate) fn wake_unlocking(&self, g: MutexGuard<'_, Arena<A>>) {
        let in_source = self.wake(&g);
        drop(g);
        if in_source {
            self.wake_source();
        }
    }

    #[cold]
    fn wake_all(&self) -> bool {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        self.cv.notify_all();
        self.in_source.load(Ordering::Relaxed) != 0
    }

    /// Makes the waiters blocked in the source see that they are cancelled
    /// (`wakeups` moved), after [`wake`](Self::wake) said there are some.
    #[cold]
    pub(crate) fn wake_source(&self) {
        self.source.wake_waiting_imports();
    }

    /// Takes the lock to wake the waiters, as a change under it would: for
    /// a free into a quantum cache, and as [`Source::wake_waiting_imports`]
    /// of an arena that is a source, whose waiters include the children's
    /// waiting imports, which then check whether they are cancelled. The
    /// waiters of this arena blocked further up are woken through its own
    /// source.
    #[cold]
    pub(crate) fn wake_now(&self) {
        self.wake_unlocking(self.arena.lock());
    }

    /// Tells waiters, if any, that a segment went into a quantum cache. The
    /// segment stays busy in the arena, so only a drain can reach it, and
    /// a waiter that drained before the free must drain again.
    ///
    /// With no waiter this is one relaxed load, which is enough: a waiter
    /// raises the count under the arena lock before its drain, and the
    /// drain takes the lock of every magazine slot it empties. A free the
    /// drain missed put its segment in a slot after the drain left it, so
    /// the free's load comes after the raised count. (Only its owner
    /// drains a per-thread magazine: [`Vmem::free`](crate::Vmem::free)
    /// calls this only for a free that went past the loaded one, which
    /// may wake the waiters for nothing.) The wake-up, under the arena
    /// lock, either moves `wakeups` before the waiter's last look, which
    /// then drains again, or finds it asleep.
    #[inline(always)]
    pub(crate) fn notice_cached_free(&self) {
        if self.waiters().load(Ordering::Relaxed) != 0 {
            self.wake_now();
        }
    }

    /// The error of an allocation that found no room and did not wait.
    pub(crate) fn exhausted(&self, req: &Request) -> VmemError {
        VmemError::Exhausted {
            arena: self.name,
            size: req.size,
        }
    }
}
