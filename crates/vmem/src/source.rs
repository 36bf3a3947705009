//! Where an arena gets more spans from: the seed's `vm_importfn` /
//! `vm_releasefn` pair (`vmem_set_import`), as a trait.
//!
//! A [`Vmem`](crate::Vmem) is a source itself (a child arena imports from its
//! parent, as the seed's `vmem_create(..., vmem_alloc, vmem_free, parent)`
//! does), and so is any [`ImportFns`] pair of closures, which is how the
//! page layer commits memory on import and decommits it on release.
//!
//! A waiting allocation ([`Vmem::alloc_wait`](crate::Vmem::alloc_wait))
//! that finds no room may wait inside its source
//! ([`Source::import_wait`]), as the seed passes `M_WAITOK` down to the
//! import function; a parent [`Vmem`](crate::Vmem) does, ImportFns do not.

use core::fmt;
use std::sync::Arc;
use std::time::Instant;

/// A supplier of spans for an arena (`vmem_set_import`).
///
/// The arena calls these without holding its lock, so a source may block,
/// call into other arenas or run system calls.
pub trait Source: Send + Sync {
    /// Whether the arena should ever call [`import`](Source::import); false
    /// only for [`NoSource`].
    #[inline]
    fn imports(&self) -> bool {
        true
    }

    /// Supplies a span of exactly `size` bytes (a multiple of the arena's
    /// import quantum) and returns its base, or `None` if there is none.
    /// The base must be a multiple of the arena's quantum.
    fn import(&self, size: usize) -> Option<usize>;

    /// Takes back a span that [`import`](Source::import) supplied, whole,
    /// once every byte of it is free in the arena again.
    fn release(&self, base: usize, size: usize);

    /// Like [`import`](Source::import), for an allocation that may wait
    /// (`M_WAITOK`): may block until it can supply the span, and must
    /// return `None` once `wait`'s [deadline](ImportWait::deadline) has
    /// passed or it is [cancelled](ImportWait::is_cancelled).
    ///
    /// A waiting allocation calls it, with its arena's lock dropped, when
    /// `import` failed and draining the quantum caches and reclaiming made
    /// no room. The wait is cancelled when the arena gains room some other
    /// way (a free, an [`add`](crate::Vmem::add), another thread's import):
    /// the arena then calls
    /// [`wake_waiting_imports`](Source::wake_waiting_imports), so a source
    /// that blocks must wake its waiting imports there, and each must
    /// check `is_cancelled` after every wake-up (a few atomic loads), and
    /// under the lock it sleeps on if `wake_waiting_imports` takes that
    /// lock, so that no wake-up falls between the check and the sleep.
    ///
    /// The default does not wait: it returns `None` at once, and the
    /// waiting allocation then sleeps in its own arena, trying `import`
    /// again each time the arena wakes it. A parent [`Vmem`](crate::Vmem)
    /// waits as [`Vmem::alloc_wait`](crate::Vmem::alloc_wait) does.
    fn import_wait(&self, size: usize, wait: &ImportWait<'_>) -> Option<usize> {
        let _ = (size, wait);
        None
    }

    /// Wakes the threads blocked in [`import_wait`](Source::import_wait)
    /// on this source, so that they check whether they are cancelled.
    /// The default does nothing, as the default `import_wait` never
    /// blocks.
    fn wake_waiting_imports(&self) {}
}

/// What a waiting import may wait for: until a deadline, and until the
/// arena that asks no longer needs the span ([`Source::import_wait`]).
pub struct ImportWait<'a> {
    deadline: Option<Instant>,
    cancelled: &'a dyn Fn() -> bool,
}

impl<'a> ImportWait<'a> {
    /// A wait until `deadline` (for ever if `None`), which `cancelled`
    /// ends early by returning true. `cancelled` is called under the
    /// source's own locks, so it must be quick and take no lock.
    pub fn new(deadline: Option<Instant>, cancelled: &'a dyn Fn() -> bool) -> Self {
        ImportWait {
            deadline,
            cancelled,
        }
    }

    /// When to give up; `None` means never.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the arena that asks no longer needs the span: it gained
    /// room since it called, or its own caller gave up.
    pub fn is_cancelled(&self) -> bool {
        (self.cancelled)()
    }
}

impl fmt::Debug for ImportWait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportWait")
            .field("deadline", &self.deadline)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// The source of an arena that never imports: all its spans come from
/// [`span`](crate::Builder::span) and [`add`](crate::Vmem::add).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSource;

impl Source for NoSource {
    #[inline]
    fn imports(&self) -> bool {
        false
    }

    fn import(&self, _size: usize) -> Option<usize> {
        None
    }

    fn release(&self, base: usize, size: usize) {
        unreachable!("vmem: release of {size:#x} bytes at {base:#x} to an arena without a source")
    }
}

/// User import and release callbacks as a [`Source`]: `import(size)` returns
/// the base of a new span, `release(base, size)` takes one back.
///
/// ```
/// use kmem_vmem::{ImportFns, Policy, Vmem};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// // Hand out fresh 64 KiB windows of a large ID space and count them.
/// static NEXT: AtomicUsize = AtomicUsize::new(0x10_0000);
/// let fns = ImportFns::new(
///     |size| Some(NEXT.fetch_add(size, Ordering::Relaxed)),
///     |_base, _size| {},
/// );
/// let ids = Vmem::builder("ids").quantum(1).source(fns, 0x1_0000).build()?;
/// let id = ids.alloc(1, Policy::InstantFit)?;
/// assert_eq!(id, 0x10_0000);
/// assert_eq!(ids.stats().imports, 1);
/// # Ok::<(), kmem_vmem::VmemError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ImportFns<I, R> {
    import: I,
    release: R,
}

impl<I, R> ImportFns<I, R>
where
    I: Fn(usize) -> Option<usize> + Send + Sync,
    R: Fn(usize, usize) + Send + Sync,
{
    /// The pair `import(size) -> Option<base>`, `release(base, size)`.
    pub fn new(import: I, release: R) -> Self {
        ImportFns { import, release }
    }
}

impl<I, R> Source for ImportFns<I, R>
where
    I: Fn(usize) -> Option<usize> + Send + Sync,
    R: Fn(usize, usize) + Send + Sync,
{
    fn import(&self, size: usize) -> Option<usize> {
        (self.import)(size)
    }

    fn release(&self, base: usize, size: usize) {
        (self.release)(base, size)
    }
}

/// Implements [`Source`] for pointers to a source by forwarding every
/// method, the defaulted ones too: a pointer that took the default
/// `imports` would make an arena over `&NoSource` try to import, and one
/// that took the default `import_wait` would never wait in a parent.
macro_rules! forward_source {
    ($($pointer:ty),+) => {$(
        impl<S: Source + ?Sized> Source for $pointer {
            #[inline]
            fn imports(&self) -> bool {
                (**self).imports()
            }

            fn import(&self, size: usize) -> Option<usize> {
                (**self).import(size)
            }

            fn release(&self, base: usize, size: usize) {
                (**self).release(base, size)
            }

            fn import_wait(&self, size: usize, wait: &ImportWait<'_>) -> Option<usize> {
                (**self).import_wait(size, wait)
            }

            fn wake_waiting_imports(&self) {
                (**self).wake_waiting_imports()
            }
        }
    )+};
}

forward_source!(Arc<S>, &S);
