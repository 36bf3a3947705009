//! The `_mut` twins of [`Vmem`]'s methods: exclusive access through
//! `&mut self`, which proves that no other thread can reach the arena,
//! so a placement or a free that succeeds at once skips the arena lock.

use allocator_api2::alloc::Allocator;

use crate::error::VmemError;
use crate::fit::{Constraints, Policy};
use crate::inner::Core;
use crate::source::Source;
use crate::vmem::Vmem;

impl<A, S> Vmem<A, S>
where
    A: Allocator + Clone + Send + Sync,
    S: Source,
{
    /// The core to use without its lock, unless per-thread quantum caches
    /// or walkers of the arena list may reach it from other threads.
    /// Callers keep the borrow to code that touches nothing else of the
    /// core: the quantum caches' backends reach it through pointers of
    /// their own.
    #[inline(always)]
    fn core_mut(&mut self) -> Option<&mut Core<A, S>> {
        if self.shared {
            return None;
        }
        // SAFETY: the core is live until `drop`. `&mut self` excludes every
        // other use of this `Vmem`; without per-thread caches and off the
        // arena list, nothing else reaches the core from another thread
        // (per-CPU caches run only inside `Vmem` methods, and a child
        // arena holds its parent by reference or value, so `&mut` to a
        // parent rules out its children); and the callers' borrow ends
        // before any call that re-enters the core through a backend
        // (`try_alloc_mut` and `xfree_mut` never call the caches).
        Some(unsafe { self.core.as_mut() })
    }

    /// [`alloc`](Self::alloc) through exclusive access: the same result,
    /// and when a free segment fits at once, without the arena lock's two
    /// atomic operations. For an arena owned by one thread or kept behind
    /// the caller's own lock, as the Rust range allocators take `&mut
    /// self`. Sizes up to `qcache_max` still go to their quantum cache,
    /// slow paths (import, drain, reclaim) take the lock, and an arena with
    /// per-thread quantum caches always locks (other threads' exit hooks
    /// reach it), as does one put on the arena list
    /// ([`listed`](crate::Builder::listed): its walkers reach it).
    ///
    /// ```
    /// use kmem_vmem::{Policy, Vmem};
    ///
    /// let mut ids = Vmem::builder("ids").span(1, 1000).build()?;
    /// let id = ids.alloc_mut(1, Policy::InstantFit)?;
    /// ids.free_mut(id, 1)?;
    /// assert_eq!(ids.stats().allocated, 0);
    /// # Ok::<(), kmem_vmem::VmemError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc).
    #[inline(always)]
    pub fn alloc_mut(&mut self, size: usize, policy: Policy) -> Result<usize, VmemError> {
        if let Some(x) = self.qcache_alloc(size) {
            return Ok(x);
        }
        if let Some(core) = self.core_mut()
            && let Some(x) = core.try_alloc_mut(size, None, policy)
        {
            return Ok(x);
        }
        self.core().alloc(size, policy)
    }

    /// [`xalloc`](Self::xalloc) through exclusive access, as
    /// [`alloc_mut`](Self::alloc_mut).
    ///
    /// # Errors
    ///
    /// As [`xalloc`](Self::xalloc).
    pub fn xalloc_mut(
        &mut self,
        size: usize,
        c: &Constraints,
        policy: Policy,
    ) -> Result<usize, VmemError> {
        if let Some(core) = self.core_mut()
            && let Some(x) = core.try_alloc_mut(size, Some(c), policy)
        {
            return Ok(x);
        }
        self.core().xalloc(size, c, policy)
    }

    /// [`free`](Self::free) through exclusive access, as
    /// [`alloc_mut`](Self::alloc_mut).
    ///
    /// # Errors
    ///
    /// As [`free`](Self::free).
    #[inline]
    pub fn free_mut(&mut self, addr: usize, size: usize) -> Result<(), VmemError> {
        self.xfree_mut(addr, size)
    }

    /// [`xfree`](Self::xfree) through exclusive access, as
    /// [`alloc_mut`](Self::alloc_mut).
    ///
    /// # Errors
    ///
    /// As [`xfree`](Self::xfree).
    #[inline(always)]
    pub fn xfree_mut(&mut self, addr: usize, size: usize) -> Result<(), VmemError> {
        match self.core_mut() {
            Some(core) => core.xfree_mut(addr, size),
            None => self.core().xfree(addr, size),
        }
    }
}
