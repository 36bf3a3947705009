//! The clock that paces working-set intervals and contention checks.
//!
//! The seed runs `kmem_update` from a kernel timeout every
//! `kmem_reap_interval` (15 seconds). A library has no timer of its own, so
//! the depot reads a [`Clock`] on its slow paths and runs the periodic update
//! once an interval has passed; tests inject a [`ManualClock`] and step it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic time source, read on depot slow paths only.
pub trait Clock: Send + Sync {
    /// Time since an arbitrary, fixed epoch; never goes backwards.
    fn now(&self) -> Duration;
}

/// The real monotonic clock (`Instant`), measured from its first use.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The default clock, usable as `&'static dyn Clock`.
pub static SYSTEM_CLOCK: SystemClock = SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that moves only when told to: for tests of working-set reaping and
/// resizing.
///
/// ```
/// use std::time::Duration;
/// use kmem_magazine::{Clock, ManualClock};
///
/// static CLOCK: ManualClock = ManualClock::new();
/// CLOCK.advance(Duration::from_secs(15));
/// assert_eq!(CLOCK.now(), Duration::from_secs(15));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at zero.
    pub const fn new() -> Self {
        ManualClock {
            nanos: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}
