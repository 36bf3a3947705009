//! The seed's debugging interfaces on one arena: `vmem_whatis`,
//! `vmem_dump`, DDB `show vmem`, `vmem_roundup_size`, `vm_nfreetags`.
//! Each is checked against a model of the arena's busy segments.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use kmem_vmem::{BoundaryTag, Policy, TagKind, Vmem, VmemError, VmemStats};

const Q: usize = 16;
/// Two static spans with a gap between them, the second ending at the
/// top of the address space.
const SPANS: [(usize, usize); 2] = [(0x1_0000, 0x4000), (usize::MAX - 0x1fff, 0x2000)];

/// Seeds of the random arenas; one under Miri, where each takes a minute.
const SEEDS: core::ops::RangeInclusive<u64> = if cfg!(miri) { 1..=1 } else { 1..=8 };

/// xorshift64*: a fixed sequence per seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// The arena of [`SPANS`] after random allocations and frees, and its
/// busy segments (start to size).
fn churned(seed: u64) -> (Vmem, BTreeMap<usize, usize>) {
    let a = Vmem::builder("churned")
        .span(SPANS[0].0, SPANS[0].1)
        .quantum(Q)
        .build()
        .unwrap();
    a.add(SPANS[1].0, SPANS[1].1).unwrap();
    let mut rng = Rng(seed);
    let mut busy = BTreeMap::new();
    for _ in 0..300 {
        if busy.is_empty() || rng.below(3) != 0 {
            let size = (1 + rng.below(40)) * Q;
            let policy = [Policy::InstantFit, Policy::BestFit, Policy::NextFit][rng.below(3)];
            if let Ok(x) = a.alloc(size, policy) {
                busy.insert(x, size);
            }
        } else {
            let &x = busy.keys().nth(rng.below(busy.len())).unwrap();
            a.free(x, busy.remove(&x).unwrap()).unwrap();
        }
    }
    a.check().unwrap();
    (a, busy)
}

/// What `whatis(addr)` must say, from the model: the busy segment
/// holding `addr`, else the free segment between the busy ones (or span
/// ends) around it, as `(start, size, allocated)`; `None` outside spans.
fn expected(busy: &BTreeMap<usize, usize>, addr: usize) -> Option<(usize, usize, bool)> {
    let &(base, size) = SPANS.iter().find(|&&(b, s)| b <= addr && addr - b < s)?;
    let last = base + (size - 1);
    if let Some((&x, &n)) = busy.range(..=addr).next_back()
        && addr - x < n
    {
        return Some((x, n, true));
    }
    let start = busy
        .range(base..=addr)
        .next_back()
        .map_or(base, |(&x, &n)| x + n);
    let end = busy.range(addr..=last).next().map_or(last, |(&x, _)| x - 1);
    Some((start, end - start + 1, false))
}

#[test]
fn whatis_finds_the_segment_holding_any_address() {
    for seed in SEEDS {
        let (a, busy) = churned(seed);
        let mut rng = Rng(seed * 7919);
        let mut probes: Vec<usize> = vec![0, SPANS[0].0 - 1, SPANS[0].0 + SPANS[0].1, usize::MAX];
        for &(base, size) in &SPANS {
            probes.extend((0..200).map(|_| base + rng.below(size)));
        }
        for (&x, &n) in &busy {
            probes.extend([x, x + (n - 1), x.wrapping_add(n)]);
        }
        for addr in probes {
            let got = a.whatis(addr);
            let want = expected(&busy, addr);
            assert_eq!(
                got.map(|w| (w.start, w.size, w.allocated)),
                want,
                "seed {seed}, address {addr:#x}"
            );
            if let Some(w) = got {
                assert_eq!(w.offset, addr - w.start);
                assert_eq!(w.arena.as_str(), "churned");
            }
        }
    }
}

#[test]
fn whatis_of_an_empty_arena_is_none() {
    let a = Vmem::builder("empty").build().unwrap();
    assert_eq!(a.whatis(0), None);
    assert_eq!(a.whatis(usize::MAX), None);
}

/// Checks that `tags` is a dump of the arena whose busy segments are
/// `busy`: spans in order, each tiled by its segments, free ones never
/// adjacent; and returns its free segments.
fn check_tags(tags: &[BoundaryTag], busy: &BTreeMap<usize, usize>) -> Vec<BoundaryTag> {
    let mut free = vec![];
    let mut dumped = BTreeMap::new();
    let mut spans = vec![];
    // Where the next segment must start, and the current span's last byte.
    let (mut next, mut last) = (None::<usize>, 0);
    let mut prev_free = false;
    for t in tags {
        match t.kind {
            TagKind::StaticSpan | TagKind::Span => {
                assert!(
                    next.is_none(),
                    "span at {:#x} before the last one is tiled",
                    t.start
                );
                spans.push((t.start, t.size));
                (next, last) = (Some(t.start), t.start + (t.size - 1));
                prev_free = false;
                continue;
            }
            TagKind::Busy => {
                dumped.insert(t.start, t.size);
                prev_free = false;
            }
            TagKind::Free => {
                assert!(!prev_free, "adjacent free segments at {:#x}", t.start);
                free.push(*t);
                prev_free = true;
            }
            other => panic!("unknown kind {other:?}"),
        }
        assert_eq!(Some(t.start), next, "a segment out of place");
        let end = t.start + (t.size - 1);
        assert!(end <= last, "a segment past its span");
        next = (end != last).then(|| end + 1);
    }
    assert!(next.is_none(), "the last span is not tiled");
    assert_eq!(spans, SPANS);
    assert_eq!(&dumped, busy);
    free
}

#[test]
fn dump_lists_spans_segments_and_free_lists() {
    for seed in SEEDS {
        let (a, busy) = churned(seed);
        let d = a.dump();
        assert_eq!((d.name(), d.quantum()), ("churned", Q));
        let mut free = check_tags(d.tags(), &busy);
        // The free lists hold exactly the free segments, each on the list
        // for its size, lists in size order.
        let mut listed = vec![];
        let mut prev_index = None;
        for list in d.free_lists() {
            assert!(prev_index < Some(list.index), "lists out of order");
            prev_index = Some(list.index);
            assert!(!list.members.is_empty());
            for m in list.members {
                assert_eq!(m.kind, TagKind::Free);
                assert!(
                    list.min_size <= m.size && m.size <= list.max_size,
                    "{m} on list {}",
                    list.index
                );
            }
            listed.extend_from_slice(list.members);
        }
        let by_start = |t: &BoundaryTag| t.start;
        free.sort_by_key(by_start);
        listed.sort_by_key(by_start);
        assert_eq!(listed, free, "seed {seed}");
        assert_eq!(free.len(), a.stats().free_segments);
        // Printed: a header, a line per tag and per free list and member.
        let text = d.to_string();
        assert!(
            text.starts_with("vmem 'churned' (quantum 0x10)\n"),
            "{text}"
        );
        let lines = 1 + d.tags().len() + d.free_lists().count() + free.len();
        assert_eq!(text.lines().count(), lines);
        let first_busy = busy
            .iter()
            .next()
            .map(|(&x, &n)| format!("    {x:#x} {n:#x} busy"));
        assert!(
            first_busy.is_none_or(|l| text.lines().any(|t| t == l)),
            "{text}"
        );
    }
}

#[test]
fn dump_of_an_arena_with_no_spans_is_its_header() {
    let d = Vmem::builder("bare").quantum(64).build().unwrap().dump();
    assert!(d.tags().is_empty());
    assert_eq!(d.free_lists().count(), 0);
    assert_eq!(d.to_string(), "vmem 'bare' (quantum 0x40)\n");
}

/// Every dump taken while another thread adds spans, allocates and frees
/// is whole: the arena may grow between sizing the snapshot and taking it,
/// and then the dump starts over.
#[test]
fn dumps_taken_during_changes_are_consistent() {
    let a = Vmem::builder("busy").quantum(Q).build().unwrap();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng(42);
            let mut live = vec![];
            let rounds = if cfg!(miri) { 40 } else { 4000 };
            for i in 0..rounds {
                if i % 50 == 0 {
                    a.add(0x10_0000 * (i / 50 + 1), 0x1_0000).unwrap();
                }
                if live.is_empty() || rng.below(3) != 0 {
                    let size = (1 + rng.below(8)) * Q;
                    live.push((a.alloc(size, Policy::InstantFit).unwrap(), size));
                } else {
                    let (x, size) = live.swap_remove(rng.below(live.len()));
                    a.free(x, size).unwrap();
                }
            }
            done.store(true, Ordering::Release);
        });
        let mut dumps = 0;
        while !done.load(Ordering::Acquire) || dumps == 0 {
            let d = a.dump();
            dumps += 1;
            let mut next = None;
            for t in d.tags() {
                if matches!(t.kind, TagKind::StaticSpan) {
                    assert!(next.is_none(), "a span is not tiled");
                    next = Some(t.start);
                } else {
                    assert_eq!(Some(t.start), next, "a segment out of place");
                    next = Some(t.start + t.size).filter(|&n| n % 0x1_0000 != 0);
                }
            }
            let free: usize = d.free_lists().map(|l| l.members.len()).sum();
            let free_tags = d.tags().iter().filter(|t| t.kind == TagKind::Free).count();
            assert_eq!(free, free_tags);
        }
    });
}

#[test]
fn summary_counts_segments_by_the_seeds_classes() {
    let a = Vmem::builder("classes")
        .span(0, 1 << 20)
        .quantum(Q)
        .build()
        .unwrap();
    // 1, 31 quanta: exact classes; 32 and 63: the class [32, 63]; 64: [64, 127].
    let mut xs = vec![];
    for quanta in [1, 31, 32, 63, 64, 1] {
        xs.push((a.alloc(quanta * Q, Policy::InstantFit).unwrap(), quanta * Q));
    }
    // Free the 31-quantum segment: a free segment of the exact class 31.
    let (x31, n31) = xs.remove(1);
    a.free(x31, n31).unwrap();
    let s = a.summary();
    assert_eq!(
        (s.name.as_str(), s.quantum, s.size),
        ("classes", Q, 1 << 20)
    );
    let inuse = (1 + 32 + 63 + 64 + 1) * Q;
    assert_eq!(
        (s.inuse, s.free, s.busy_tags),
        (inuse, (1 << 20) - inuse, 5)
    );
    assert_eq!(s.unused_tags, a.stats().unused_tags);
    let rows: Vec<_> = s
        .classes()
        .map(|c| {
            (
                c.min_size / Q,
                c.max_size / Q,
                c.busy,
                c.busy_bytes / Q,
                c.free,
                c.free_bytes / Q,
            )
        })
        .collect();
    let tail = (1 << 20) / Q - inuse / Q - 31; // the free rest of the span
    let tail_class = 1 << tail.ilog2();
    assert_eq!(
        rows,
        [
            (1, 1, 2, 2, 0, 0),
            (31, 31, 0, 0, 1, 31),
            (32, 63, 2, 95, 0, 0),
            (64, 127, 1, 64, 0, 0),
            (tail_class, 2 * tail_class - 1, 0, 0, 1, tail),
        ]
    );
    let text = s.to_string();
    assert!(text.starts_with("vmem 'classes'\n"), "{text}");
    let free_tags = format!("  free tags {:>20}", s.unused_tags);
    assert!(text.lines().any(|l| l == free_tags), "{text}");
    // A header line, six figures, the column heads and a row per class.
    assert_eq!(text.lines().count(), 1 + 6 + 1 + rows.len());
}

#[test]
fn round_size_is_the_size_the_arena_takes() {
    let a = Vmem::builder("round")
        .span(0, 1 << 20)
        .quantum(16)
        .build()
        .unwrap();
    assert_eq!(a.round_size(1).unwrap(), 16);
    assert_eq!(a.round_size(16).unwrap(), 16);
    assert_eq!(a.round_size(17).unwrap(), 32);
    assert_eq!(a.round_size(usize::MAX - 15).unwrap(), usize::MAX - 15);
    for bad in [0, usize::MAX - 14, usize::MAX] {
        assert!(
            matches!(a.round_size(bad), Err(VmemError::InvalidSize { size, .. }) if size == bad),
            "{bad:#x}"
        );
    }
    // What the arena takes for an allocation is the rounded size.
    a.alloc(17, Policy::InstantFit).unwrap();
    assert_eq!(a.stats().allocated, a.round_size(17).unwrap());
}

/// Tags in use: one per span and per segment.
fn linked(s: &VmemStats) -> usize {
    s.spans + s.busy_segments + s.free_segments
}

#[test]
fn unused_tags_are_the_allocated_tags_not_linked() {
    let a = Vmem::builder("tags").quantum(16).build().unwrap();
    assert_eq!((a.stats().tags, a.stats().unused_tags), (0, 0));
    a.add(0, 1 << 20).unwrap();
    let s = a.stats();
    assert!(s.unused_tags > 0);
    assert_eq!(s.tags - s.unused_tags, 2, "a span and its free segment");
    let mut xs = vec![];
    for size in [16, 48, 32, 160, 16, 64] {
        xs.push((a.alloc(size, Policy::BestFit).unwrap(), size));
        let s = a.stats();
        assert_eq!(s.tags - s.unused_tags, linked(&s));
    }
    // Every other segment first (no merging), then the rest (each merges).
    for &(x, size) in xs.iter().step_by(2).chain(xs.iter().skip(1).step_by(2)) {
        a.free(x, size).unwrap();
        let s = a.stats();
        assert_eq!(s.tags - s.unused_tags, linked(&s));
    }
    // Merging gave every segment's tag back but the span's and one free one.
    let s = a.stats();
    assert_eq!(s.tags - s.unused_tags, 2);
}
