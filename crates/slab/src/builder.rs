//! [`KegBuilder`]: size, alignment, flags, callbacks, page source and
//! metadata allocator, gathered before the layout is fixed (UMA `keg_ctor`,
//! illumos `kmem_cache_create`).

use core::ptr::NonNull;

use allocator_api2::alloc::{Allocator, Global};
use kmem_sys::{OsPages, PageSource, page_size};

use crate::error::SlabError;
use crate::keg::Keg;
use crate::layout::{LayoutRequest, SlabLayout};

/// A keg's `init` callback: prepares a buffer of a new slab, once per slab
/// lifetime (UMA `uk_init`). Returning `false` refuses the slab.
pub type InitFn = Box<dyn Fn(NonNull<u8>) -> bool + Send + Sync>;

/// A keg's `fini` callback: undoes `init` before the slab's pages go back
/// (UMA `uk_fini`).
pub type FiniFn = Box<dyn Fn(NonNull<u8>) + Send + Sync>;

/// Builds a [`Keg`]; start from [`Keg::builder`].
///
/// ```
/// use kmem_slab::{Keg, Placement};
///
/// let keg = Keg::builder("nodes", 48, 16).no_colour().limit(1000).build()?;
/// assert_eq!(keg.layout().placement, Placement::OnPage);
/// # Ok::<(), kmem_slab::SlabError>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct KegBuilder<S = OsPages, A = Global> {
    pub(crate) settings: Settings,
    pub(crate) source: S,
    pub(crate) alloc: A,
}

/// Everything a [`KegBuilder`] gathers that does not depend on its page
/// source or metadata allocator, so changing either moves it whole.
pub(crate) struct Settings {
    pub(crate) name: &'static str,
    pub(crate) size: usize,
    pub(crate) align: usize,
    pub(crate) off_page: bool,
    pub(crate) single: bool,
    pub(crate) no_colour: bool,
    pub(crate) tag_size: usize,
    pub(crate) limit: Option<usize>,
    pub(crate) init: Option<InitFn>,
    pub(crate) fini: Option<FiniFn>,
}

impl Keg {
    /// Starts a keg of `size`-byte buffers aligned to `align` (a power of two
    /// no larger than a page; it is raised to a word), named `name` in every
    /// error and statistic. Pages come from a fresh [`OsPages`] and metadata
    /// from the global allocator unless [`source`](KegBuilder::source) and
    /// [`metadata`](KegBuilder::metadata) say otherwise.
    pub fn builder(name: &'static str, size: usize, align: usize) -> KegBuilder {
        KegBuilder {
            settings: Settings {
                name,
                size,
                align,
                off_page: false,
                single: false,
                no_colour: false,
                tag_size: 0,
                limit: None,
                init: None,
                fini: None,
            },
            source: OsPages::new(),
            alloc: Global,
        }
    }
}

impl<S, A> KegBuilder<S, A> {
    /// Keeps slab headers off the slab pages even for small buffers (UMA
    /// `UMA_ZONE_OFFPAGE`), so buffers fill the pages; headers are found
    /// through the hash.
    pub fn off_page(mut self) -> Self {
        self.settings.off_page = true;
        self
    }

    /// Finds slabs through the hash on every free (UMA `UMA_ZONE_HASH`,
    /// illumos `KMF_HASH`). Every off-page keg does; this asks for it on a
    /// keg that would otherwise be on-page, and so implies
    /// [`off_page`](Self::off_page).
    pub fn hash(self) -> Self {
        self.off_page()
    }

    /// Starts every slab's first buffer at offset 0 instead of stepping
    /// colours (illumos' `cache_maxcolor` pinned to `cache_mincolor`, as
    /// `kmem_cache_create` does for single-buffer caches; UMA never colours).
    pub fn no_colour(mut self) -> Self {
        self.settings.no_colour = true;
        self
    }

    /// One buffer per slab of whole pages (UMA `zone_large_init`), header
    /// off-page: for big objects that should not share pages.
    pub fn single_buffer(mut self) -> Self {
        self.settings.single = true;
        self
    }

    /// Reserves `bytes` after each buffer for a debug tag (redzone, owner,
    /// as illumos' `kmem_buftag_t`); see [`Keg::tag_of`]. The layout, not
    /// this crate, gives the room meaning.
    pub fn debug_tag(mut self, bytes: usize) -> Self {
        self.settings.tag_size = bytes;
        self
    }

    /// Caps the keg at `buffers`, rounded up to whole slabs as
    /// `uma_zone_set_max` does; see [`Keg::set_limit`].
    pub fn limit(mut self, buffers: usize) -> Self {
        self.settings.limit = Some(buffers);
        self
    }

    /// Runs `f` on every buffer of each new slab, before any is handed out.
    /// With an `init`, free buffers keep their initialised contents: the free
    /// list link moves to a word after the buffer.
    pub fn init(mut self, f: impl Fn(NonNull<u8>) -> bool + Send + Sync + 'static) -> Self {
        self.settings.init = Some(Box::new(f));
        self
    }

    /// Runs `f` on every buffer of a slab before its pages are returned.
    pub fn fini(mut self, f: impl Fn(NonNull<u8>) + Send + Sync + 'static) -> Self {
        self.settings.fini = Some(Box::new(f));
        self
    }

    /// Takes pages from `source` instead of a private [`OsPages`].
    pub fn source<S2>(self, source: S2) -> KegBuilder<S2, A> {
        KegBuilder {
            settings: self.settings,
            source,
            alloc: self.alloc,
        }
    }

    /// Allocates off-page headers, the hash and the usage lists from `alloc`.
    pub fn metadata<A2>(self, alloc: A2) -> KegBuilder<S, A2> {
        KegBuilder {
            settings: self.settings,
            source: self.source,
            alloc,
        }
    }
}

impl<S: PageSource, A: Allocator + Clone> KegBuilder<S, A> {
    /// Fixes the layout and builds the keg; no slab is created yet.
    pub fn build(self) -> Result<Keg<S, A>, SlabError> {
        let req = LayoutRequest {
            size: self.settings.size,
            align: self.settings.align,
            off_page: self.settings.off_page,
            single: self.settings.single,
            no_colour: self.settings.no_colour,
            link_outside: self.settings.init.is_some(),
            tag_size: self.settings.tag_size,
            page: page_size(),
        };
        let layout = SlabLayout::compute(&req).map_err(|reason| SlabError::InvalidLayout {
            keg: self.settings.name,
            size: self.settings.size,
            align: self.settings.align,
            reason,
        })?;
        Keg::from_builder(self, layout)
    }
}
