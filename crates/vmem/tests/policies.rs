//! Each policy and constraint, with the edge cases of the address space.

use kmem_vmem::{Constraints, Policy, Vmem, VmemError};

const POLICIES: [Policy; 3] = [Policy::InstantFit, Policy::BestFit, Policy::NextFit];

fn arena(base: usize, size: usize, q: usize) -> Vmem {
    Vmem::builder("t")
        .span(base, size)
        .quantum(q)
        .build()
        .unwrap()
}

#[test]
fn every_policy_fills_and_empties_an_arena() {
    for p in POLICIES {
        let a = arena(0x1000, 0x100, 16);
        let mut got: Vec<usize> = (0..16).map(|_| a.alloc(16, p).unwrap()).collect();
        a.check().unwrap();
        assert!(
            matches!(a.alloc(16, p), Err(VmemError::Exhausted { .. })),
            "{p:?}"
        );
        got.sort();
        assert_eq!(got, (0..16).map(|i| 0x1000 + i * 16).collect::<Vec<_>>());
        for x in got {
            a.free(x, 16).unwrap();
            a.check().unwrap();
        }
        let s = a.stats();
        assert_eq!((s.allocated, s.free, s.free_segments), (0, 0x100, 1));
        assert_eq!(s.largest_free, 0x100);
    }
}

#[test]
fn sizes_round_up_to_the_quantum_and_zero_is_refused() {
    let a = arena(0, 0x1000, 64);
    let x = a.alloc(1, Policy::InstantFit).unwrap();
    assert_eq!(a.stats().allocated, 64);
    assert!(matches!(
        a.alloc(0, Policy::BestFit),
        Err(VmemError::InvalidSize { .. })
    ));
    assert!(matches!(
        a.alloc(usize::MAX, Policy::BestFit),
        Err(VmemError::InvalidSize { .. })
    ));
    a.free(x, 60).unwrap(); // 60 rounds to the same 64
}

#[test]
fn instant_fit_takes_a_list_head_best_fit_the_tightest_exact_size() {
    // Free segments of 5 and 3 quanta (in that address order), others busy.
    let a = arena(0, 16 * 16, 16);
    let all = a.alloc(16 * 16, Policy::InstantFit).unwrap();
    a.free(all, 16 * 16).unwrap();
    let xs: Vec<usize> = (0..16)
        .map(|_| a.alloc(16, Policy::BestFit).unwrap())
        .collect();
    for &x in &xs[1..6] {
        a.free(x, 16).unwrap();
    }
    for &x in &xs[8..11] {
        a.free(x, 16).unwrap();
    }
    a.check().unwrap();
    // Best fit for 3 quanta takes the exact 3-quantum hole.
    assert_eq!(a.alloc(48, Policy::BestFit).unwrap(), xs[8]);
    a.free(xs[8], 48).unwrap();
    // Instant fit for 3 quanta: the 3-quantum list's members all fit, so
    // it takes that list's head too; for 4 it must go to the 5-quantum one.
    assert_eq!(a.alloc(64, Policy::InstantFit).unwrap(), xs[1]);
    let st = a.stats();
    assert_eq!(
        (st.instant_fit, st.best_fit, st.instant_fallbacks),
        (2, 17, 0)
    );
}

#[test]
fn instant_fit_falls_back_to_best_fit_in_a_power_of_two_class() {
    // A 70-quantum hole lives on the 64..71 list, whose members do not all
    // hold 70: instant fit finds no list for it and falls back.
    let a = arena(0, 160 * 16, 16);
    let x = a.alloc(70 * 16, Policy::BestFit).unwrap();
    let _y = a.alloc(90 * 16, Policy::BestFit).unwrap();
    a.free(x, 70 * 16).unwrap();
    assert_eq!(a.alloc(70 * 16, Policy::InstantFit).unwrap(), x);
    assert_eq!(a.stats().instant_fallbacks, 1);
}

#[test]
fn instant_fit_takes_an_exact_list_head_without_falling_back() {
    // Below 64 quanta each size has its own list: a 40-quantum hole is the
    // head of a list whose every member holds 40.
    let a = arena(0, 128 * 16, 16);
    let x = a.alloc(40 * 16, Policy::BestFit).unwrap();
    let _y = a.alloc(88 * 16, Policy::BestFit).unwrap();
    a.free(x, 40 * 16).unwrap();
    assert_eq!(a.alloc(40 * 16, Policy::InstantFit).unwrap(), x);
    assert_eq!(a.stats().instant_fallbacks, 0);
}

#[test]
fn next_fit_roves_and_wraps() {
    let a = arena(10, 5, 1);
    let v: Vec<usize> = (0..5)
        .map(|_| a.alloc(1, Policy::NextFit).unwrap())
        .collect();
    assert_eq!(v, [10, 11, 12, 13, 14]);
    a.free(11, 1).unwrap();
    a.free(13, 1).unwrap();
    // The cursor is past 14: wrap to the lowest free, then the next.
    assert_eq!(a.alloc(1, Policy::NextFit).unwrap(), 11);
    a.free(12, 1).unwrap();
    assert_eq!(a.alloc(1, Policy::NextFit).unwrap(), 12);
    assert_eq!(a.alloc(1, Policy::NextFit).unwrap(), 13);
    assert!(a.alloc(1, Policy::NextFit).is_err());
    a.check().unwrap();
}

#[test]
fn next_fit_does_not_hand_back_what_a_free_merged_behind_the_cursor() {
    // Freeing the last next-fit segment merges it into the free space
    // after it; the cursor still points past it.
    let a = Vmem::builder("ids").span(1, 100).build().unwrap();
    let ids: Vec<usize> = (0..3)
        .map(|_| a.alloc(1, Policy::NextFit).unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    a.free(3, 1).unwrap();
    assert_eq!(a.alloc(1, Policy::NextFit).unwrap(), 4);
    // Both of the last two freed: they merge with each other and with
    // the free space after them.
    a.free(2, 1).unwrap();
    a.free(4, 1).unwrap();
    assert_eq!(a.alloc(1, Policy::NextFit).unwrap(), 5);
    a.check().unwrap();
}

#[test]
fn next_fit_wraps_from_the_top_of_the_address_space() {
    let a = Vmem::builder("top")
        .span(usize::MAX - 15, 16)
        .quantum(1)
        .build()
        .unwrap();
    let x = a.alloc(16, Policy::NextFit).unwrap();
    assert_eq!(x, usize::MAX - 15);
    a.free(x, 16).unwrap();
    assert_eq!(a.alloc(8, Policy::NextFit).unwrap(), usize::MAX - 15);
    assert_eq!(a.alloc(8, Policy::NextFit).unwrap(), usize::MAX - 7);
    a.check().unwrap();
}

#[test]
fn a_span_at_address_zero_hands_out_zero() {
    for p in POLICIES {
        let a = arena(0, 64, 8);
        assert_eq!(a.alloc(8, p).unwrap(), 0);
        a.free(0, 8).unwrap();
        a.check().unwrap();
    }
}

#[test]
fn a_span_ending_at_usize_max_is_usable_to_the_last_byte() {
    for p in POLICIES {
        let q = 4096;
        let base = usize::MAX - 4 * q + 1;
        let a = arena(base, 4 * q, q);
        let xs: Vec<usize> = (0..4).map(|_| a.alloc(q, p).unwrap()).collect();
        assert!(xs.contains(&(usize::MAX - q + 1)), "{p:?}");
        a.check().unwrap();
        for x in xs {
            a.free(x, q).unwrap();
        }
        let c = Constraints {
            align: 2 * q,
            ..Constraints::default()
        };
        let hi = Constraints {
            min_addr: usize::MAX - q + 1,
            ..Constraints::default()
        };
        assert_eq!(a.xalloc(q, &hi, p).unwrap(), usize::MAX - q + 1);
        assert_eq!(a.xalloc(2 * q, &c, p).unwrap() % (2 * q), 0);
        a.check().unwrap();
        assert_eq!(a.stats().total, 4 * q);
    }
}

#[test]
fn alignment_larger_than_the_span_fails_cleanly() {
    let a = arena(0x1000, 0x1000, 16);
    let c = Constraints {
        align: 0x10000,
        ..Constraints::default()
    };
    for p in POLICIES {
        assert!(matches!(
            a.xalloc(16, &c, p),
            Err(VmemError::Exhausted { .. })
        ));
    }
    // ...unless the span happens to contain such a boundary.
    let b = arena(0xf000, 0x2000, 16);
    assert_eq!(b.xalloc(16, &c, Policy::InstantFit).unwrap(), 0x10000);
    a.check().unwrap();
    b.check().unwrap();
}

#[test]
fn nocross_equal_to_size_places_on_the_boundary() {
    for p in POLICIES {
        let a = arena(0x100, 0x400, 16);
        let _first = a.alloc(16, p).unwrap(); // 0x100 .. 0x110 busy
        let c = Constraints {
            nocross: 0x100,
            ..Constraints::default()
        };
        let x = a.xalloc(0x100, &c, p).unwrap();
        assert_eq!(x, 0x200, "{p:?}");
        a.check().unwrap();
    }
}

#[test]
fn phase_and_window_constraints_hold() {
    for p in POLICIES {
        let a = arena(0, 0x10000, 16);
        let c = Constraints {
            align: 0x100,
            phase: 0x30,
            nocross: 0x1000,
            min_addr: 0x2345,
            max_addr: 0x7fff,
        };
        let mut got = vec![];
        while let Ok(x) = a.xalloc(0x200, &c, p) {
            assert_eq!(x % 0x100, 0x30);
            assert!(x >= 0x2345 && x + 0x1ff <= 0x7fff);
            assert_eq!(x / 0x1000, (x + 0x1ff) / 0x1000, "{x:#x} crosses");
            got.push(x);
        }
        assert!(got.len() >= 16, "{p:?}: {}", got.len());
        a.check().unwrap();
        assert_eq!(a.stats().constrained, got.len() as u64);
    }
}

#[test]
fn constrained_search_keeps_looking_past_a_failing_list_head() {
    // Two free 4-quantum holes; only the second is 64-aligned.
    let a = arena(0, 0x400, 16);
    let all: Vec<usize> = (0..64)
        .map(|_| a.alloc(16, Policy::BestFit).unwrap())
        .collect();
    for x in (0x40..0x80).step_by(16).chain((0x100..0x140).step_by(16)) {
        a.free(all[x / 16], 16).unwrap();
    }
    let c = Constraints {
        align: 0x80,
        ..Constraints::default()
    };
    for p in POLICIES {
        let x = a.xalloc(0x40, &c, p).unwrap();
        assert_eq!(x, 0x100, "{p:?}");
        a.xfree(x, 0x40).unwrap();
    }
}

#[test]
fn invalid_constraints_name_the_arena() {
    let a = arena(0, 0x1000, 16);
    let e = a
        .xalloc(
            0x40,
            &Constraints {
                align: 48,
                ..Constraints::default()
            },
            Policy::BestFit,
        )
        .unwrap_err();
    assert!(matches!(e, VmemError::InvalidConstraints { .. }));
    assert!(e.to_string().contains("vmem arena t"), "{e}");
}

#[test]
fn bad_frees_are_errors_that_change_nothing() {
    let a = arena(0x1000, 0x1000, 16);
    let x = a.alloc(64, Policy::InstantFit).unwrap();
    let y = a.alloc(64, Policy::InstantFit).unwrap();
    let before = a.stats();
    for (addr, size) in [(x, 32), (x, 128), (x + 16, 48), (0x5000, 16), (y + 64, 64)] {
        let e = a.free(addr, size).unwrap_err();
        assert!(
            matches!(
                e,
                VmemError::NotAllocated { .. } | VmemError::WrongSize { .. }
            ),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("{addr:#x}")), "{e}");
        a.check().unwrap();
    }
    assert!(a.free(x, 0).is_err());
    a.free(x, 64).unwrap();
    assert!(matches!(a.free(x, 64), Err(VmemError::NotAllocated { .. })));
    let after = a.stats();
    assert_eq!(after.allocated, before.allocated - 64);
    assert_eq!(after.bad_frees, 7);
    a.free(y, 64).unwrap();
    a.check().unwrap();
}

#[test]
fn add_merges_nothing_across_spans_and_refuses_overlap() {
    let a = arena(0, 0x100, 16);
    a.add(0x100, 0x100).unwrap();
    // Adjacent spans stay separate: a segment never straddles two spans.
    assert!(a.alloc(0x200, Policy::BestFit).is_err());
    let x = a.alloc(0x100, Policy::BestFit).unwrap();
    a.free(x, 0x100).unwrap();
    for (b, s) in [
        (0x80, 0x100),
        (0x180, 0x10),
        (0, 0),
        (0x208, 0x10),
        (usize::MAX - 15, 32),
    ] {
        assert!(
            matches!(a.add(b, s), Err(VmemError::InvalidSpan { .. })),
            "{b:#x}+{s:#x}"
        );
    }
    a.add(usize::MAX - 15, 16).unwrap();
    a.check().unwrap();
    assert_eq!(a.stats().spans, 3);
}

#[test]
fn builder_refuses_bad_settings() {
    for b in [
        Vmem::builder("b").quantum(24).build(),
        Vmem::builder("b").quantum(16).qcache_max(24).build(),
        Vmem::builder("b").quantum(16).qcache_max(17 * 16).build(),
        Vmem::builder("b").quantum(16).span(8, 16).build(),
    ] {
        assert!(b.is_err());
    }
    let long = "a-very-long-arena-name-that-goes-on-and-on";
    let a = Vmem::builder(long).build().unwrap();
    assert_eq!(a.name(), &long[..kmem_vmem::NAME_MAX]);
}

#[test]
#[cfg_attr(miri, ignore = "100 000 segments: far too slow under Miri")]
fn metadata_stays_small_per_segment() {
    let a = arena(0, 1 << 30, 16);
    let n = 100_000;
    for _ in 0..n {
        a.alloc(16, Policy::InstantFit).unwrap();
    }
    let s = a.stats();
    assert_eq!(s.busy_segments, n);
    let per = s.metadata_bytes / n;
    assert!(per <= 64, "{per} bytes per segment");
}

#[test]
fn metadata_shrinks_after_a_peak() {
    // Up to a peak of segments of mixed sizes, then freed in a scattered
    // order (so segments merge both ways and tags get renumbered while
    // free, busy and span tags are interleaved), with `check` along the
    // way; then back up, to see the renumbered arena still works.
    let n = if cfg!(miri) { 300 } else { 20_000 };
    let a = Vmem::builder("peak")
        .span(0, 1 << 30)
        .quantum(16)
        .build()
        .unwrap();
    a.add(1 << 31, 1 << 30).unwrap();
    let mut live: Vec<(usize, usize)> = (0..n)
        .map(|i| {
            let size = 16 * (i % 7 + 1);
            (a.alloc(size, POLICIES[i % 3]).unwrap(), size)
        })
        .collect();
    let peak = a.stats();
    for k in 0..n {
        let (x, size) = live.swap_remove((k * 7919) % live.len());
        a.free(x, size).unwrap();
        if k % (n / 20) == 0 {
            a.check().unwrap();
        }
    }
    a.check().unwrap();
    let after = a.stats();
    assert_eq!((after.allocated, after.busy_segments), (0, 0));
    assert!(
        after.tags < peak.tags / 3 && after.metadata_bytes < peak.metadata_bytes / 2,
        "peak {} tags, {} B; after {} tags, {} B",
        peak.tags,
        peak.metadata_bytes,
        after.tags,
        after.metadata_bytes
    );
    // A pool of up to four chunks of 32 tags is left as it is.
    assert!(after.tags <= 4 * 32, "{} tags", after.tags);
    live = (0..n / 2)
        .map(|i| (a.alloc(16, POLICIES[i % 3]).unwrap(), 16))
        .collect();
    a.check().unwrap();
    for (x, size) in live {
        a.free(x, size).unwrap();
    }
    a.check().unwrap();
    assert_eq!(a.stats().free_segments, 2);
}

#[test]
fn a_small_arena_stays_small() {
    // An ID allocator with a handful of IDs out: the arena's own structure
    // and one small tag chunk, not kilobytes of spare tags.
    let a = arena(0, 1 << 20, 16);
    for _ in 0..10 {
        a.alloc(16, Policy::InstantFit).unwrap();
    }
    let s = a.stats();
    assert!(s.tags <= 64, "{} tags for 10 segments", s.tags);
    assert!(s.metadata_bytes <= 4096, "{} bytes", s.metadata_bytes);
}
