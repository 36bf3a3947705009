//! The seed's debugging interfaces on one arena, each a walk of its tags
//! under the arena lock: `vmem_whatis` ([`Whatis`]), `vmem_dump`
//! ([`Dump`]) and the DDB `show vmem` summary ([`Summary`]). As in
//! `check.rs`, the walks are an `impl` of the arena in a module of their
//! own, so that the tuned paths of `arena.rs` stay as they are.
//!
//! None of them allocates while it holds the arena lock, because the
//! global allocator may itself be built on the arena: [`Whatis`] and
//! [`Summary`] are plain values, and a [`Dump`] reserves its vectors with
//! the lock dropped, then takes the lock again and fills them, starting
//! over if the arena grew in between.
//!
//! The arena list (`registry.rs`) reaches arenas of any allocator type
//! through the [`Introspect`] trait object; [`Vmem`](crate::Vmem) calls
//! the same methods directly.

use core::fmt;

use allocator_api2::alloc::Allocator;
use kmem_sys::sync::Mutex;

use crate::arena::Arena;
use crate::error::ArenaName;
use crate::freelist::{NLISTS, list_min};
use crate::tag::{Kind, NIL, Tag};

/// Where an address lies in an arena: from [`Vmem::whatis`](crate::Vmem::whatis)
/// and, for every listed arena at once, [`whatis_all`](crate::whatis_all)
/// (the seed's `vmem_whatis`). Its `Display` is the seed's line, e.g.
/// `0x1234 is 0x1200+0x34 in vmem 'heap' (allocated)`.
///
/// A segment that a quantum cache holds for reuse is allocated in the
/// arena, so it is reported as allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Whatis {
    /// The arena.
    pub arena: ArenaName,
    /// Start of the segment holding the address.
    pub start: usize,
    /// Size of the segment.
    pub size: usize,
    /// Whether the segment is allocated (busy), not free.
    pub allocated: bool,
    /// The address's offset in the segment.
    pub offset: usize,
}

impl fmt::Display for Whatis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.allocated { "allocated" } else { "free" };
        write!(
            f,
            "{:#x} is {:#x}+{:#x} in vmem '{}' ({state})",
            self.start + self.offset,
            self.start,
            self.offset,
            self.arena
        )
    }
}

/// What a boundary tag describes (the seed's `BT_TYPE_*`); its `Display`
/// is the seed's name for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TagKind {
    /// A span imported from the source, given back once wholly free.
    Span,
    /// A span from the builder or [`Vmem::add`](crate::Vmem::add), kept
    /// for the arena's life.
    StaticSpan,
    /// A free segment.
    Free,
    /// An allocated segment.
    Busy,
}

impl TagKind {
    fn of(kind: Kind) -> Self {
        match kind {
            Kind::Span => TagKind::Span,
            Kind::StaticSpan => TagKind::StaticSpan,
            Kind::Free => TagKind::Free,
            Kind::Busy => TagKind::Busy,
            Kind::Unused => unreachable!("vmem: an unused tag is linked into the arena"),
        }
    }
}

impl fmt::Display for TagKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TagKind::Span => "span",
            TagKind::StaticSpan => "static span",
            TagKind::Free => "free",
            TagKind::Busy => "busy",
        })
    }
}

/// One span or segment of a [`Dump`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BoundaryTag {
    /// Its first address.
    pub start: usize,
    /// Its size.
    pub size: usize,
    /// Span or segment, and of which kind.
    pub kind: TagKind,
}

impl BoundaryTag {
    fn of(tag: &Tag) -> Self {
        BoundaryTag {
            start: tag.start,
            size: tag.size,
            kind: TagKind::of(tag.kind()),
        }
    }
}

impl fmt::Display for BoundaryTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} {:#x} {}", self.start, self.size, self.kind)
    }
}

/// The smallest and largest multiples of the quantum (`1 << qshift`) in a
/// size range of `first` quanta up to, not including, `next` (`None`: no
/// end). A range holding a segment has its smallest size in bytes; the
/// largest stops at the largest size a segment can have.
fn byte_bounds(first: usize, next: Option<usize>, qshift: u32) -> (usize, usize) {
    let last = next.map_or(usize::MAX, |n| n - 1).min(usize::MAX >> qshift);
    (first << qshift, last << qshift)
}

/// A snapshot of every span and segment of an arena in address order,
/// then of each non-empty free list with its members (the seed's
/// `vmem_dump`): from [`Vmem::dump`](crate::Vmem::dump). Its `Display`
/// prints it all, segments indented under their spans.
#[derive(Clone, Debug)]
pub struct Dump {
    name: ArenaName,
    quantum: usize,
    tags: Vec<BoundaryTag>,
    /// The members of every non-empty free list, list after list.
    free: Vec<BoundaryTag>,
    /// Each non-empty free list: its index and where its members end in
    /// `free`.
    lists: Vec<(usize, usize)>,
}

/// The room a [`Dump`] needs for an arena as it is.
pub(crate) struct DumpSize {
    tags: usize,
    free: usize,
    lists: usize,
}

impl Dump {
    /// The arena's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The arena's quantum.
    pub fn quantum(&self) -> usize {
        self.quantum
    }

    /// Every span and segment in address order, each span just before the
    /// segments that tile it (the seed's `vm_seglist`).
    pub fn tags(&self) -> &[BoundaryTag] {
        &self.tags
    }

    /// The non-empty free lists in size order, each with its free
    /// segments, most recently freed first. These are the crate's own
    /// lists (see the [crate docs](crate)), finer than the seed's classes.
    pub fn free_lists(&self) -> impl Iterator<Item = FreeList<'_>> {
        let qshift = self.quantum.trailing_zeros();
        let starts = core::iter::once(0).chain(self.lists.iter().map(|&(_, end)| end));
        self.lists
            .iter()
            .zip(starts)
            .map(move |(&(index, end), start)| {
                let next = (index + 1 < NLISTS).then(|| list_min(index + 1));
                let (min_size, max_size) = byte_bounds(list_min(index), next, qshift);
                FreeList {
                    index,
                    min_size,
                    max_size,
                    members: &self.free[start..end],
                }
            })
    }

    /// Makes room for `need` with no arena lock held.
    fn reserve(&mut self, need: &DumpSize) {
        self.tags.reserve(need.tags);
        self.free.reserve(need.free);
        self.lists.reserve(need.lists);
    }
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vmem '{}' (quantum {:#x})", self.name, self.quantum)?;
        for tag in &self.tags {
            let indent = match tag.kind {
                TagKind::Span | TagKind::StaticSpan => 2,
                TagKind::Free | TagKind::Busy => 4,
            };
            writeln!(f, "{:indent$}{tag}", "")?;
        }
        for list in self.free_lists() {
            write!(f, "free list {} ({:#x}", list.index, list.min_size)?;
            if list.max_size != list.min_size {
                write!(f, " to {:#x}", list.max_size)?;
            }
            writeln!(f, " bytes)")?;
            for tag in list.members {
                writeln!(f, "  {tag}")?;
            }
        }
        Ok(())
    }
}

/// One non-empty free list of a [`Dump`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct FreeList<'a> {
    /// The list's index, from 0 for the smallest sizes.
    pub index: usize,
    /// The smallest and largest segment sizes the list holds, in bytes.
    pub min_size: usize,
    /// See `min_size`.
    pub max_size: usize,
    /// Its free segments in list order.
    pub members: &'a [BoundaryTag],
}

/// Sizes of 1 to this many quanta have a summary class each (the seed's
/// orders 0 to 30: `SIZE2ORDER` of a size up to `VMEM_OPTVALUE - 1`).
const EXACT_CLASSES: usize = 31;
/// Summary classes: the exact ones, then one per power of two from 32
/// quanta up (the seed's `VMEM_MAXORDER`: 90 on a 64-bit machine).
const CLASSES: usize = EXACT_CLASSES + (usize::BITS - 5) as usize;

/// The summary class of a segment of `q` quanta (the seed's `SIZE2ORDER`).
fn class_of(q: usize) -> usize {
    if q <= EXACT_CLASSES {
        q - 1
    } else {
        EXACT_CLASSES + (q.ilog2() - 5) as usize
    }
}

/// The smallest size, in quanta, of summary class `c` (the seed's
/// `ORDER2SIZE`).
fn class_min(c: usize) -> usize {
    if c < EXACT_CLASSES {
        c + 1
    } else {
        1 << (c - EXACT_CLASSES + 5)
    }
}

/// Busy and free segments of one summary class.
#[derive(Clone, Copy, Debug, Default)]
struct ClassCount {
    busy: usize,
    busy_bytes: usize,
    free: usize,
    free_bytes: usize,
}

/// An arena's sizes and tag counts, with its segments counted by size
/// class (the seed's DDB `show vmem`): from
/// [`Vmem::summary`](crate::Vmem::summary). Its `Display` is the seed's
/// table.
///
/// The classes are the seed's (`SIZE2ORDER`), not the crate's finer free
/// lists: one per size of 1 to 31 quanta, then one per power of two,
/// `[32, 63]` quanta, `[64, 127]` and so on. A summary holds its counts
/// inline, so taking one never allocates.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Summary {
    /// The arena.
    pub name: ArenaName,
    /// Its quantum.
    pub quantum: usize,
    /// Bytes in its spans (`vm_size`).
    pub size: usize,
    /// Bytes in busy segments (`vm_inuse`).
    pub inuse: usize,
    /// Bytes in free segments.
    pub free: usize,
    /// Busy segments (`vm_nbusytag`).
    pub busy_tags: usize,
    /// Tags allocated but not in use (`vm_nfreetags`, the seed's "free
    /// tags"), as [`VmemStats::unused_tags`](crate::VmemStats::unused_tags).
    pub unused_tags: usize,
    classes: [ClassCount; CLASSES],
}

/// The busy and free segments of one size class of a [`Summary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassUsage {
    /// The smallest and largest segment sizes of the class, in bytes.
    pub min_size: usize,
    /// See `min_size`.
    pub max_size: usize,
    /// Busy segments of the class, and their bytes.
    pub busy: usize,
    /// See `busy`.
    pub busy_bytes: usize,
    /// Free segments of the class, and their bytes.
    pub free: usize,
    /// See `free`.
    pub free_bytes: usize,
}

impl Summary {
    /// The classes that hold a busy or free segment, smallest sizes first.
    pub fn classes(&self) -> impl Iterator<Item = ClassUsage> + '_ {
        let qshift = self.quantum.trailing_zeros();
        self.classes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.busy + n.free != 0)
            .map(move |(c, n)| {
                let next = (c + 1 < CLASSES).then(|| class_min(c + 1));
                let (min_size, max_size) = byte_bounds(class_min(c), next, qshift);
                ClassUsage {
                    min_size,
                    max_size,
                    busy: n.busy,
                    busy_bytes: n.busy_bytes,
                    free: n.free,
                    free_bytes: n.free_bytes,
                }
            })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vmem '{}'", self.name)?;
        let lines = [
            ("quantum", self.quantum),
            ("size", self.size),
            ("inuse", self.inuse),
            ("free", self.free),
            ("busy tags", self.busy_tags),
            ("free tags", self.unused_tags),
        ];
        for (label, value) in lines {
            writeln!(f, "  {label:<10}{value:>20}")?;
        }
        writeln!(
            f,
            "  {:>20} {:>10} {:>20} {:>10} {:>20}",
            "class", "inuse", "size", "free", "size"
        )?;
        for c in self.classes() {
            writeln!(
                f,
                "  {:>20} {:>10} {:>20} {:>10} {:>20}",
                c.min_size, c.busy, c.busy_bytes, c.free, c.free_bytes
            )?;
        }
        Ok(())
    }
}

/// The walks the arena list makes through an arena whose allocator type
/// it does not know; each runs under the arena lock.
pub(crate) trait Introspect: Send {
    /// The segment holding `addr`, if a span does.
    fn whatis(&self, addr: usize) -> Option<Whatis>;

    /// The arena's sizes and per-class counts.
    fn summary(&self) -> Summary;

    /// Fills `dump` with the arena's tags if it has room for them, else
    /// says how much room it needs; it never grows `dump` itself.
    fn dump_into(&self, dump: &mut Dump) -> Result<(), DumpSize>;
}

impl<A: Allocator + Clone + Send> Introspect for Arena<A> {
    fn whatis(&self, addr: usize) -> Option<Whatis> {
        // The busy hash finds a segment only by its start, so walk the
        // span list, in address order, to the span holding `addr`, then
        // that span's segments, which follow its tag in address order.
        let mut s = self.span_head;
        while s != NIL {
            let span = self.tags.get(s);
            if addr < span.start {
                return None;
            }
            if addr <= span.end() {
                let mut t = span.next;
                while t != NIL {
                    let seg = self.tags.get(t);
                    if addr <= seg.end() {
                        return Some(Whatis {
                            arena: self.name,
                            start: seg.start,
                            size: seg.size,
                            allocated: seg.is(Kind::Busy),
                            offset: addr - seg.start,
                        });
                    }
                    t = seg.next;
                }
                unreachable!(
                    "vmem: span at {:#x} is not tiled by its segments",
                    span.start
                );
            }
            s = span.lnext;
        }
        None
    }

    fn summary(&self) -> Summary {
        let mut sum = Summary {
            name: self.name,
            quantum: self.quantum(),
            size: self.total,
            inuse: self.inuse,
            free: self.total - self.inuse,
            busy_tags: self.hash.len(),
            unused_tags: self.tags.n_unused(),
            classes: [ClassCount::default(); CLASSES],
        };
        let mut t = self.seg_head;
        while t != NIL {
            let tag = self.tags.get(t);
            let n = &mut sum.classes[class_of(tag.size >> self.qshift)];
            if tag.is(Kind::Busy) {
                n.busy += 1;
                n.busy_bytes += tag.size;
            } else if tag.is(Kind::Free) {
                n.free += 1;
                n.free_bytes += tag.size;
            }
            t = tag.next;
        }
        sum
    }

    fn dump_into(&self, dump: &mut Dump) -> Result<(), DumpSize> {
        let need = DumpSize {
            tags: self.tags.capacity() - self.tags.n_unused(),
            free: self.n_free_segs,
            lists: self.n_free_segs.min(NLISTS),
        };
        if dump.tags.capacity() < need.tags
            || dump.free.capacity() < need.free
            || dump.lists.capacity() < need.lists
        {
            return Err(need);
        }
        dump.name = self.name;
        dump.quantum = self.quantum();
        dump.tags.clear();
        dump.free.clear();
        dump.lists.clear();
        let mut t = self.seg_head;
        while t != NIL {
            let tag = self.tags.get(t);
            dump.tags.push(BoundaryTag::of(tag));
            t = tag.next;
        }
        let mut list = self.free.first_nonempty(0);
        while let Some(i) = list {
            let mut t = self.free.head(i);
            while t != NIL {
                let tag = self.tags.get(t);
                dump.free.push(BoundaryTag::of(tag));
                t = tag.lnext;
            }
            dump.lists.push((i, dump.free.len()));
            list = self.free.first_nonempty(i + 1);
        }
        // The counts were exact, so no push above allocated under the lock.
        debug_assert_eq!((dump.tags.len(), dump.free.len()), (need.tags, need.free));
        Ok(())
    }
}

/// A [`Dump`] of the arena behind `arena`, its vectors allocated with the
/// lock dropped (see the module docs).
pub(crate) fn dump(arena: &Mutex<dyn Introspect + '_>) -> Dump {
    let mut dump = Dump {
        name: ArenaName::new(""),
        quantum: 0,
        tags: Vec::new(),
        free: Vec::new(),
        lists: Vec::new(),
    };
    loop {
        let need = match arena.lock().dump_into(&mut dump) {
            Ok(()) => return dump,
            Err(need) => need,
        };
        dump.reserve(&need);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_the_seeds_orders() {
        // SIZE2ORDER: exact below 32 quanta, then by highest bit.
        let cases = [(1, 0), (31, 30), (32, 31), (63, 31), (64, 32), (127, 32)];
        for (q, c) in cases {
            assert_eq!(class_of(q), c, "{q} quanta");
        }
        assert_eq!(class_of(usize::MAX), CLASSES - 1);
        assert_eq!(CLASSES, 31 + usize::BITS as usize - 5);
        // ORDER2SIZE is the least size of each class, and the classes
        // cover every size once, in order.
        for c in 0..CLASSES {
            assert_eq!(class_of(class_min(c)), c, "class {c}");
            if c > 0 {
                assert_eq!(class_of(class_min(c) - 1), c - 1, "class {c}");
            }
        }
    }

    #[test]
    fn byte_bounds_stop_at_the_largest_segment() {
        assert_eq!(byte_bounds(1, Some(2), 4), (16, 16));
        assert_eq!(byte_bounds(32, Some(64), 4), (512, 63 * 16));
        let top = usize::MAX >> 4;
        assert_eq!(byte_bounds(1 << 59, None, 4), (1 << 63, top << 4));
    }
}
