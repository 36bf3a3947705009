//! What the consolidator needs from the cache it works for.

use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use kmem_slab::Keg;
use kmem_sys::PageSource;

/// The cache a [`Consolidator`](crate::Consolidator) moves objects for: its
/// keg, its constructor and destructor, and a way into its magazines.
///
/// The consolidator takes raw buffers from the keg itself
/// ([`Keg::alloc_in`], [`Keg::alloc_avoiding`]) and gives them back with
/// [`Keg::free`]; these methods are the parts above the keg that only the
/// cache knows (illumos `cache_constructor`, `cache_destructor` and the
/// magazine layer reached by `kmem_hunt_mags`).
///
/// Implementations must not call back into the consolidator.
pub trait Client: Send + Sync + 'static {
    /// The keg's page source.
    type Source: PageSource;
    /// The keg's metadata allocator.
    type Meta: Allocator + Clone + Send + Sync;

    /// The cache's name, for errors.
    fn name(&self) -> &'static str;

    /// The keg whose buffers are moved. Every buffer the consolidator
    /// handles is a buffer of this keg.
    fn keg(&self) -> &Keg<Self::Source, Self::Meta>;

    /// Builds an object in `buf`, a raw buffer the consolidator owns (the
    /// destination of a move). `false` if the constructor refused; the
    /// buffer is still raw and the consolidator frees it.
    fn construct(&self, buf: NonNull<u8>) -> bool;

    /// Tears down the constructed object in `buf`, which the consolidator
    /// owns, before the buffer goes back to the keg.
    fn destroy(&self, buf: NonNull<u8>);

    /// Looks for `buf` among the free, constructed objects the cache holds
    /// in magazines; if found, removes it and returns `true`: the
    /// consolidator then owns it (constructed) and frees it to its slab.
    /// `false` if the buffer is not in a magazine the cache can search.
    fn hunt(&self, buf: NonNull<u8>) -> bool;
}
