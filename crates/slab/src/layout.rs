//! Slab layout: chunk size, slab size, header placement and colour range,
//! decided once when a keg is built.
//!
//! The rules, and the seed lines they follow:
//!
//! 1. **Chunk.** The buffer size is rounded up to a word; if the keg has an
//!    `init` callback the free-list link moves out of the buffer into a word
//!    after it (free buffers keep their initialised state, UMA keg semantics);
//!    then room for the optional debug tag; then the whole is rounded up to
//!    the alignment, which is at least a word (illumos `kmem_cache_create`:
//!    `cache_bufctl`, `cache_buftag`, `P2ROUNDUP(chunksize, align)`).
//! 2. **Single-buffer** when asked (UMA `zone_large_init`): one buffer per
//!    slab of whole pages, header off-page.
//! 3. **On-page** when the chunk is under a page / [`VOID_FRACTION`] (illumos'
//!    `chunksize < vm_quantum / KMEM_VOID_FRACTION` test) and off-page was not
//!    asked: a one-page slab with the header at its end (UMA `keg_ctor`'s
//!    right-justified `uk_pgoff`). If that wastes [`MAX_WASTE_DIVISOR`]⁻¹ of
//!    the page or more and an off-page header would fit more buffers, the
//!    header goes off-page instead (UMA `zone_small_init`).
//! 4. **Off-page, least waste** otherwise: for 1..=[`VOID_FRACTION`] chunks,
//!    round to whole pages and keep the slab size with the least waste per
//!    buffer, the smaller slab on ties (illumos `kmem_cache_create`'s
//!    `bestfit` loop). With eight chunks the waste is under one chunk in at
//!    least eight, so it never reaches 12.5%.
//!
//! Colouring (illumos `kmem_slab_create`): each new slab starts its first
//! buffer `align` bytes later than the last one did, wrapping to 0 past the
//! slack (`cache_maxcolor`), the bytes a full slab cannot use anyway.

use core::mem::size_of;

use crate::slab::Slab;

/// illumos `KMEM_VOID_FRACTION`: on-page headers only for chunks under
/// 1/8 page, and the least-waste search tries up to 8 chunks per slab.
pub const VOID_FRACTION: usize = 8;

/// UMA `UMA_MAX_WASTE` is `UMA_SLAB_SIZE / 10`: an on-page layout that wastes
/// this fraction of its page or more moves its header off-page.
pub const MAX_WASTE_DIVISOR: usize = 10;

/// The word every free buffer's link occupies, and the least alignment.
const WORD: usize = size_of::<usize>();

/// Where a keg keeps its slab headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// At the end of the slab's one page, found from a buffer address by
    /// masking; free buffers are linked through themselves.
    OnPage,
    /// In memory from the metadata allocator, found through the keg's hash
    /// from the slab's (aligned) start address.
    OffPage,
}

/// The inputs to a layout, gathered by [`KegBuilder`](crate::KegBuilder).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayoutRequest {
    pub size: usize,
    pub align: usize,
    pub off_page: bool,
    pub single: bool,
    pub no_colour: bool,
    pub link_outside: bool,
    pub tag_size: usize,
    pub page: usize,
}

/// A keg's slab geometry; see [`Keg::layout`](crate::Keg::layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabLayout {
    /// Bytes of each buffer as asked.
    pub buf_size: usize,
    /// Alignment of every buffer (the asked alignment, at least a word).
    pub align: usize,
    /// Distance between buffers: buffer, link word if outside, debug tag,
    /// rounded to `align`.
    pub chunk_size: usize,
    /// Bytes of pages per slab.
    pub slab_size: usize,
    /// Alignment slabs are asked for: `slab_size` rounded up to a power of
    /// two, so a buffer address masked by it gives its slab's start.
    pub slab_align: usize,
    /// Buffers per slab (UMA `uk_ipers`, illumos `slab_chunks`).
    pub bufs_per_slab: usize,
    /// Where the slab headers live.
    pub placement: Placement,
    /// Largest colour offset; colours step by `align` from 0 up to this.
    pub max_colour: usize,
    /// Offset of the free-list link within a free buffer's chunk.
    pub link_offset: usize,
    /// Offset of the debug tag within the chunk, if room for one was asked.
    pub tag_offset: Option<usize>,
    /// Bytes reserved for the debug tag.
    pub tag_size: usize,
    /// On-page: offset of the header within the slab.
    pub(crate) header_offset: usize,
    /// On-page: offset of the allocation bitmap within the slab.
    pub(crate) bitmap_offset: usize,
    /// Words of allocation bitmap per slab.
    pub(crate) bitmap_words: usize,
}

impl SlabLayout {
    /// Bytes of a full slab not holding buffers: header (on-page), colour
    /// slack, and per-buffer padding, link and tag.
    pub fn waste_bytes(&self) -> usize {
        self.slab_size - self.bufs_per_slab * self.buf_size
    }

    /// [`waste_bytes`](Self::waste_bytes) as a fraction of the slab size.
    pub fn waste_fraction(&self) -> f64 {
        self.waste_bytes() as f64 / self.slab_size as f64
    }

    /// Bytes of an off-page header with its bitmap (0 when on-page).
    pub fn off_page_header_bytes(&self) -> usize {
        match self.placement {
            Placement::OnPage => 0,
            Placement::OffPage => size_of::<Slab>() + self.bitmap_words * 8,
        }
    }

    /// The metadata layout of one off-page header and its bitmap.
    pub(crate) fn header_layout(&self) -> core::alloc::Layout {
        core::alloc::Layout::from_size_align(
            size_of::<Slab>() + self.bitmap_words * 8,
            core::mem::align_of::<Slab>(),
        )
        .expect("header layout is small")
    }

    /// Computes the layout for `req`; `Err(reason)` when none exists.
    pub(crate) fn compute(req: &LayoutRequest) -> Result<SlabLayout, &'static str> {
        if req.size == 0 {
            return Err("buffer size is zero");
        }
        if !req.align.is_power_of_two() {
            return Err("alignment is not a power of two");
        }
        if req.align > req.page {
            return Err("alignment is larger than a page");
        }
        let align = req.align.max(WORD);
        let mut end = round_up(req.size, WORD).ok_or("buffer size overflows")?;
        let link_offset = if req.link_outside {
            end += WORD;
            end - WORD
        } else {
            0
        };
        let tag_offset = (req.tag_size > 0).then_some(end);
        end = end
            .checked_add(round_up(req.tag_size, WORD).ok_or("tag size overflows")?)
            .ok_or("chunk size overflows")?;
        let chunk = round_up(end, align).ok_or("chunk size overflows")?;
        if chunk > u32::MAX as usize / 2 {
            return Err("buffer size is too large for a slab");
        }
        let base = SlabLayout {
            buf_size: req.size,
            align,
            chunk_size: chunk,
            slab_size: 0,
            slab_align: 0,
            bufs_per_slab: 0,
            placement: Placement::OffPage,
            max_colour: 0,
            link_offset,
            tag_offset,
            tag_size: req.tag_size,
            header_offset: 0,
            bitmap_offset: 0,
            bitmap_words: 0,
        };
        let mut layout = if req.single {
            let slab = round_up(chunk, req.page).ok_or("buffer size overflows")?;
            off_page(base, slab, 1)
        } else if !req.off_page && chunk < req.page / VOID_FRACTION {
            let on = on_page(base, req.page);
            let on_waste = on.slab_size - on.bufs_per_slab * chunk;
            if on_waste >= req.page / MAX_WASTE_DIVISOR && req.page / chunk > on.bufs_per_slab {
                least_waste(base, req.page)?
            } else {
                on
            }
        } else {
            least_waste(base, req.page)?
        };
        if req.no_colour {
            layout.max_colour = 0;
        }
        layout.max_colour = layout.max_colour.min(req.page - 1) & !(align - 1);
        layout.slab_align = layout.slab_size.next_power_of_two();
        Ok(layout)
    }
}

/// Bitmap words for `n` buffers.
fn words(n: usize) -> usize {
    n.div_ceil(64)
}

/// One page with the header and bitmap at its end (UMA `uk_pgoff`).
fn on_page(mut l: SlabLayout, page: usize) -> SlabLayout {
    let header = size_of::<Slab>();
    let mut n = (page - header) / l.chunk_size;
    while n * l.chunk_size + header + words(n) * 8 > page {
        n -= 1;
    }
    l.slab_size = page;
    l.bufs_per_slab = n;
    l.placement = Placement::OnPage;
    l.header_offset = page - header;
    l.bitmap_words = words(n);
    l.bitmap_offset = l.header_offset - l.bitmap_words * 8;
    l.max_colour = l.bitmap_offset - n * l.chunk_size;
    l
}

/// A slab of `slab` bytes holding `n` buffers, header off-page.
fn off_page(mut l: SlabLayout, slab: usize, n: usize) -> SlabLayout {
    l.slab_size = slab;
    l.bufs_per_slab = n;
    l.placement = Placement::OffPage;
    l.bitmap_words = words(n);
    l.max_colour = slab - n * l.chunk_size;
    l
}

/// illumos' `bestfit` search over 1..=VOID_FRACTION chunks per slab.
fn least_waste(l: SlabLayout, page: usize) -> Result<SlabLayout, &'static str> {
    let chunk = l.chunk_size;
    let mut best: Option<(usize, usize)> = None;
    for want in 1..=VOID_FRACTION {
        let Some(slab) = chunk.checked_mul(want).and_then(|b| round_up(b, page)) else {
            break;
        };
        let n = slab / chunk;
        let waste = slab - n * chunk;
        // Compare waste per buffer, waste_a / n_a < waste_b / n_b, exactly.
        let better = match best {
            None => true,
            Some((bs, bn)) => waste * bn < (bs - bn * chunk) * n,
        };
        if better {
            best = Some((slab, n));
        }
    }
    let (slab, n) = best.ok_or("buffer size overflows a slab")?;
    Ok(off_page(l, slab, n))
}

/// `x` rounded up to a multiple of the power of two `to`; `None` on overflow.
pub(crate) fn round_up(x: usize, to: usize) -> Option<usize> {
    x.checked_add(to - 1).map(|v| v & !(to - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(size: usize, align: usize) -> LayoutRequest {
        LayoutRequest {
            size,
            align,
            off_page: false,
            single: false,
            no_colour: false,
            link_outside: false,
            tag_size: 0,
            page: 4096,
        }
    }

    #[test]
    fn small_buffers_go_on_page() {
        let l = SlabLayout::compute(&req(64, 8)).unwrap();
        assert_eq!(l.placement, Placement::OnPage);
        assert_eq!(l.slab_size, 4096);
        assert_eq!(l.chunk_size, 64);
        assert!(l.bufs_per_slab * 64 + size_of::<Slab>() + l.bitmap_words * 8 <= 4096);
        assert_eq!(l.header_offset + size_of::<Slab>(), 4096);
        assert!(l.max_colour < 64);
    }

    #[test]
    fn large_buffers_go_off_page_with_least_waste() {
        let l = SlabLayout::compute(&req(1376, 16)).unwrap();
        assert_eq!(l.placement, Placement::OffPage);
        assert!(l.waste_fraction() < 0.125, "{l:?}");
        // A page-multiple buffer wastes nothing with one buffer per slab.
        let l = SlabLayout::compute(&req(16384, 16)).unwrap();
        assert_eq!((l.slab_size, l.bufs_per_slab, l.waste_bytes()), (16384, 1, 0));
    }

    #[test]
    fn single_buffer_and_forced_off_page() {
        let mut r = req(5000, 8);
        r.single = true;
        let l = SlabLayout::compute(&r).unwrap();
        assert_eq!((l.bufs_per_slab, l.slab_size, l.slab_align), (1, 8192, 8192));
        let mut r = req(64, 8);
        r.off_page = true;
        let l = SlabLayout::compute(&r).unwrap();
        assert_eq!(l.placement, Placement::OffPage);
        assert_eq!(l.bufs_per_slab, 64);
    }

    #[test]
    fn link_and_tag_room() {
        let mut r = req(20, 8);
        r.link_outside = true;
        r.tag_size = 16;
        let l = SlabLayout::compute(&r).unwrap();
        assert_eq!((l.link_offset, l.tag_offset, l.chunk_size), (24, Some(32), 48));
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(SlabLayout::compute(&req(0, 8)).is_err());
        assert!(SlabLayout::compute(&req(8, 3)).is_err());
        assert!(SlabLayout::compute(&req(8, 8192)).is_err());
        assert!(SlabLayout::compute(&req(usize::MAX - 3, 8)).is_err());
    }

    #[test]
    fn waste_stays_under_an_eighth_for_every_size() {
        for size in (16..=8192).step_by(16) {
            let l = SlabLayout::compute(&req(size, 16)).unwrap();
            assert!(l.waste_fraction() <= 0.125, "size {size}: {l:?}");
            assert!(l.bufs_per_slab >= 1);
            assert!(l.bufs_per_slab * l.chunk_size + l.max_colour <= l.slab_size);
        }
    }
}
