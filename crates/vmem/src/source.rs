//! Where an arena gets more spans from: the seed's `vm_importfn` /
//! `vm_releasefn` pair (`vmem_set_import`), as a trait.
//!
//! A [`Vmem`](crate::Vmem) is a source itself (a child arena imports from its
//! parent, as the seed's `vmem_create(..., vmem_alloc, vmem_free, parent)`
//! does), and so is any [`ImportFns`] pair of closures, which is how the
//! page layer commits memory on import and decommits it on release.

use std::sync::Arc;

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
/// method, `imports` too: a pointer that took the default instead would
/// make an arena over `&NoSource` try to import.
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
        }
    )+};
}

forward_source!(Arc<S>, &S);
