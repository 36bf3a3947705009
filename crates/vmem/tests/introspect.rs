//! The seed's debugging interfaces on one arena: `vmem_roundup_size`,
//! `vm_nfreetags`.

use kmem_vmem::{Policy, Vmem, VmemError, VmemStats};

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
