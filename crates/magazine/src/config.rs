//! How a magazine layer is set up: [`Config`] and [`Mode`].

use std::fmt;
use std::time::Duration;

use crate::MagazineError;
use crate::clock::{Clock, SYSTEM_CLOCK};
use crate::magtype::{MAX_ROUNDS, MagazineType};

/// Which front end serves [`Magazines::alloc`](crate::Magazines::alloc) and
/// [`Magazines::free`](crate::Magazines::free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The seed's shape: one locked slot per CPU, found with `kmem_sys::current_cpu`.
    /// Exact per-CPU statistics; ≈15 ns a pair (CPU id + lock).
    PerCpu,
    /// One magazine pair per thread in a thread-local table: a hit takes no
    /// lock and no atomic read-modify-write. The default.
    #[default]
    PerThread,
}

/// Bytes kept of a cache's name (longer names are cut at a char boundary).
pub const NAME_MAX: usize = 39;

/// A cache name stored inline, so naming a cache never allocates.
pub type Name = kmem_sys::Name<NAME_MAX>;

/// Settings of a magazine layer, built fluently:
///
/// ```
/// use std::time::Duration;
/// use kmem_magazine::{Config, Mode};
///
/// let config = Config::new("objects-64", 64)
///     .mode(Mode::PerCpu)
///     .magazine_size(31)
///     .interval(Duration::from_secs(5))
///     .resizing(false);
/// assert_eq!(config.object_size, 64);
/// ```
#[derive(Clone, Copy)]
pub struct Config {
    /// Name used in errors and statistics.
    pub name: Name,
    /// Size in bytes of the objects the items stand for (the seed's
    /// `cache_chunksize`): picks the starting magazine type and caps growth.
    /// For items that are not objects (IDs, addresses), any size works; 0
    /// behaves as the smallest object.
    pub object_size: usize,
    /// Front end (default [`Mode::PerThread`]).
    pub mode: Mode,
    /// Starting magazine-type index into
    /// [`MAGAZINE_TYPES`](crate::MAGAZINE_TYPES); `None` picks it from
    /// `object_size` as the seed does.
    pub start_type: Option<usize>,
    /// Grow magazines under depot contention (default on).
    pub resizing: bool,
    /// Failed depot try-locks per interval above which magazines grow
    /// (the seed's `kmem_depot_contention`, 3).
    pub contention_threshold: u64,
    /// Working-set interval (the seed's `kmem_reap_interval`, 15 s).
    pub interval: Duration,
    /// Clock for intervals (default the system clock).
    pub clock: &'static dyn Clock,
    /// Number of per-CPU slots; `None` = one per configured CPU.
    pub cpu_slots: Option<usize>,
}

impl Config {
    /// Defaults for a cache called `name` of `object_size`-byte objects.
    pub fn new(name: &str, object_size: usize) -> Config {
        Config {
            name: Name::new(name),
            object_size,
            mode: Mode::default(),
            start_type: None,
            resizing: true,
            contention_threshold: 3,
            interval: Duration::from_secs(15),
            clock: &SYSTEM_CLOCK,
            cpu_slots: None,
        }
    }

    /// Sets the front end.
    pub fn mode(mut self, mode: Mode) -> Config {
        self.mode = mode;
        self
    }

    /// Starts at the smallest magazine type holding at least `rounds` rounds
    /// (1 ..= 143); [`Config::validate`] rejects other values.
    pub fn magazine_size(mut self, rounds: usize) -> Config {
        self.start_type = Some(if rounds == 0 {
            usize::MAX
        } else {
            MagazineType::index_for_rounds(rounds).unwrap_or(usize::MAX)
        });
        self
    }

    /// Turns magazine growth under contention on or off.
    pub fn resizing(mut self, on: bool) -> Config {
        self.resizing = on;
        self
    }

    /// Sets the contention threshold per interval.
    pub fn contention_threshold(mut self, failed_trylocks: u64) -> Config {
        self.contention_threshold = failed_trylocks;
        self
    }

    /// Sets the working-set interval.
    pub fn interval(mut self, interval: Duration) -> Config {
        self.interval = interval;
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: &'static dyn Clock) -> Config {
        self.clock = clock;
        self
    }

    /// Uses `n` per-CPU slots instead of one per CPU (CPU ids wrap).
    pub fn cpu_slots(mut self, n: usize) -> Config {
        self.cpu_slots = Some(n);
        self
    }

    /// The starting magazine-type index this configuration selects.
    pub fn start_index(&self) -> usize {
        self.start_type
            .unwrap_or_else(|| MagazineType::initial_index(self.object_size))
    }

    /// Checks every value; the constructors call this.
    pub fn validate(&self) -> Result<(), MagazineError> {
        let bad = |reason| MagazineError::InvalidConfig {
            name: self.name,
            reason,
        };
        // The reasons are static (no allocation), so the bound is spelled out.
        const _: () = assert!(MAX_ROUNDS == 143);
        if self.start_type == Some(usize::MAX) {
            return Err(bad("magazine size is not in 1..=143 rounds"));
        }
        if self
            .start_type
            .is_some_and(|i| i >= crate::MAGAZINE_TYPES.len())
        {
            return Err(bad("magazine type index is past the table"));
        }
        if self.interval.is_zero() {
            return Err(bad("working-set interval is zero"));
        }
        if self.cpu_slots == Some(0) {
            return Err(bad("cpu_slots is zero"));
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("object_size", &self.object_size)
            .field("mode", &self.mode)
            .field("start_type", &self.start_type)
            .field("resizing", &self.resizing)
            .field("contention_threshold", &self.contention_threshold)
            .field("interval", &self.interval)
            .field("cpu_slots", &self.cpu_slots)
            .finish_non_exhaustive()
    }
}
