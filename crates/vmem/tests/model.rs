//! Model-based test: `arbitrary` turns random bytes into sequences of add /
//! alloc / xalloc / free / bad-free operations, run against the arena and
//! against a reference model of free ranges (a `BTreeMap`), with `check()`
//! after every step. Every policy is complete (it finds a fitting segment if
//! any exists), so the arena must fail exactly when the model has no room;
//! next fit must also place where the model's roving cursor says.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use kmem_vmem::{Constraints, Policy, Vmem, VmemError};

const Q: usize = 16;
/// Spans are `SLOT`-byte slots of a 64 KiB window.
const SLOT: usize = 0x1000;
const SLOTS: usize = 16;

#[derive(Arbitrary, Debug)]
enum Op {
    Add(u8),
    Alloc {
        quanta: u8,
        policy: u8,
    },
    XAlloc {
        quanta: u8,
        policy: u8,
        align: u8,
        phase: u8,
        nocross: u8,
        lo: u16,
        hi: u16,
    },
    Free(u16),
    BadFree {
        which: u16,
        delta: i8,
    },
}

fn policy(p: u8) -> Policy {
    [Policy::InstantFit, Policy::BestFit, Policy::NextFit][usize::from(p % 3)]
}

/// The reference: free ranges `start -> end` (inclusive) that never merge
/// across a span boundary, and the allocated segments.
struct Model {
    base: usize,
    spans: Vec<usize>,
    free: BTreeMap<usize, usize>,
    busy: BTreeMap<usize, usize>,
}

impl Model {
    fn add(&mut self, start: usize) {
        self.spans.push(start);
        self.free.insert(start, start + (SLOT - 1));
    }

    /// Whether any free range can hold the request (brute force).
    fn fits(&self, size: usize, c: &Constraints) -> bool {
        let align = if c.align == 0 { Q } else { c.align };
        self.free.iter().any(|(&s, &e)| {
            let mut x = s;
            loop {
                let Some(last) = x.checked_add(size - 1) else {
                    return false;
                };
                if last > e {
                    return false;
                }
                let crosses = c.nocross != 0 && x / c.nocross != last / c.nocross;
                if x % align == c.phase && x >= c.min_addr && last <= c.max_addr && !crosses {
                    return true;
                }
                let Some(next) = x.checked_add(Q) else {
                    return false;
                };
                x = next;
            }
        })
    }

    /// Where next fit puts an unconstrained `size` with its cursor at
    /// `cursor`: the first place at or after the cursor, else, wrapping
    /// around, the start of the first free range below it that holds it.
    fn next_fit(&self, size: usize, cursor: usize) -> Option<usize> {
        let holds = |x: usize, e: usize| x.checked_add(size - 1).is_some_and(|last| last <= e);
        let after = self
            .free
            .iter()
            .filter(|&(_, &e)| e >= cursor)
            .map(|(&s, &e)| (s.max(cursor), e))
            .find(|&(x, e)| holds(x, e));
        let before = || {
            self.free
                .range(..cursor)
                .find(|&(&s, &e)| holds(s, e))
                .map(|(&s, &e)| (s, e))
        };
        after.or_else(before).map(|(x, _)| x)
    }

    fn take(&mut self, x: usize, size: usize) {
        let (&s, &e) = self
            .free
            .range(..=x)
            .next_back()
            .expect("allocated outside free space");
        let last = x + (size - 1);
        assert!(
            last <= e,
            "segment {x:#x}+{size:#x} overruns free range {s:#x}..={e:#x}"
        );
        self.free.remove(&s);
        if s < x {
            self.free.insert(s, x - 1);
        }
        if last < e {
            self.free.insert(last + 1, e);
        }
        self.busy.insert(x, size);
    }

    fn give(&mut self, x: usize) -> usize {
        let size = self.busy.remove(&x).unwrap();
        let (mut s, mut e) = (x, x + (size - 1));
        if let Some(&ne) = e.checked_add(1).and_then(|n| self.free.get(&n))
            && !self.spans.contains(&(e + 1))
        {
            self.free.remove(&(e + 1));
            e = ne;
        }
        if let Some((&ps, &pe)) = self.free.range(..s).next_back()
            && pe + 1 == s
            && !self.spans.contains(&s)
        {
            self.free.remove(&ps);
            s = ps;
        }
        self.free.insert(s, e);
        size
    }
}

fn valid(size: usize, c: &Constraints) -> bool {
    let align = if c.align == 0 { Q } else { c.align };
    let nocross_ok = c.nocross == 0
        || (c.nocross >= size && align <= c.nocross && (c.phase % c.nocross) + size <= c.nocross);
    nocross_ok && c.min_addr <= c.max_addr && c.max_addr - c.min_addr >= size - 1
}

/// Runs one sequence; returns how many allocations succeeded and failed.
fn run(data: &[u8]) -> (usize, usize) {
    let mut u = Unstructured::new(data);
    let high = bool::arbitrary(&mut u).unwrap_or(false);
    // Either the bottom or the very top of the address space.
    let base = if high {
        usize::MAX - SLOT * SLOTS + 1
    } else {
        0
    };
    let a = Vmem::builder("model").quantum(Q).build().unwrap();
    let mut m = Model {
        base,
        spans: vec![],
        free: BTreeMap::new(),
        busy: BTreeMap::new(),
    };
    let mut live: Vec<usize> = vec![];
    // Just past the last next-fit allocation, as the arena keeps it.
    let mut cursor = 0usize;
    let (mut ok, mut failed) = (0, 0);
    // `arbitrary` pads exhausted input with zeros, so stop when it runs out.
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        match op {
            Op::Add(slot) => {
                let start = m.base + usize::from(slot) % SLOTS * SLOT;
                let r = a.add(start, SLOT);
                if m.spans.contains(&start) {
                    assert!(matches!(r, Err(VmemError::InvalidSpan { .. })), "{r:?}");
                } else {
                    r.unwrap();
                    m.add(start);
                }
            }
            Op::Alloc { quanta, policy: p } => {
                let size = (usize::from(quanta) % 64 + 1) * Q;
                match a.alloc(size, policy(p)) {
                    Ok(x) => {
                        if policy(p) == Policy::NextFit {
                            assert_eq!(Some(x), m.next_fit(size, cursor), "cursor {cursor:#x}");
                            cursor = x.wrapping_add(size);
                        }
                        m.take(x, size);
                        live.push(x);
                        ok += 1;
                    }
                    Err(e) => {
                        failed += 1;
                        assert!(matches!(e, VmemError::Exhausted { .. }), "{e}");
                        assert!(!m.fits(size, &Constraints::default()), "{e} but it fits");
                    }
                }
            }
            Op::XAlloc {
                quanta,
                policy: p,
                align,
                phase,
                nocross,
                lo,
                hi,
            } => {
                let size = (usize::from(quanta) % 16 + 1) * Q;
                let align = if align % 5 == 0 { 0 } else { Q << (align % 10) };
                let c = Constraints {
                    align,
                    phase: if align == 0 {
                        0
                    } else {
                        usize::from(phase) * Q % align
                    },
                    nocross: if nocross % 3 == 0 {
                        0
                    } else {
                        Q << (nocross % 12)
                    },
                    min_addr: m.base + usize::from(lo),
                    max_addr: if hi < 0x100 {
                        usize::MAX
                    } else {
                        m.base + usize::from(hi)
                    },
                };
                match a.xalloc(size, &c, policy(p)) {
                    Ok(x) => {
                        assert!(valid(size, &c));
                        assert!(m.fits(size, &c));
                        let align = if c.align == 0 { Q } else { c.align };
                        assert_eq!(x % align, c.phase);
                        assert!(x >= c.min_addr && x + (size - 1) <= c.max_addr);
                        if let (Some(a), Some(b)) = (
                            x.checked_div(c.nocross),
                            (x + (size - 1)).checked_div(c.nocross),
                        ) {
                            assert_eq!(a, b, "{x:#x}+{size:#x} crosses {:#x}", c.nocross);
                        }
                        if policy(p) == Policy::NextFit {
                            cursor = x.wrapping_add(size);
                        }
                        m.take(x, size);
                        live.push(x);
                        ok += 1;
                    }
                    Err(VmemError::InvalidConstraints { .. }) => assert!(!valid(size, &c), "{c:?}"),
                    Err(e) => {
                        assert!(matches!(e, VmemError::Exhausted { .. }), "{e}");
                        assert!(valid(size, &c), "{c:?} is invalid, yet {e}");
                        assert!(!m.fits(size, &c), "{e} but {c:?} fits");
                    }
                }
            }
            Op::Free(i) if !live.is_empty() => {
                let x = live.swap_remove(usize::from(i) % live.len());
                let size = m.busy[&x];
                a.free(x, size).unwrap();
                m.give(x);
            }
            Op::Free(_) => {}
            Op::BadFree { which, delta } => {
                let before = a.stats();
                let (addr, size) = match live.get(usize::from(which) % live.len().max(1)) {
                    Some(&x) if delta != 0 => {
                        let size = m.busy[&x];
                        (x, size.wrapping_add_signed(isize::from(delta) * Q as isize))
                    }
                    _ => (m.base.wrapping_add(usize::from(which) * Q + Q / 2), Q),
                };
                if m.busy.get(&addr).copied() != size.checked_next_multiple_of(Q) {
                    assert!(a.free(addr, size).is_err(), "{addr:#x}+{size:#x}");
                    let after = a.stats();
                    assert_eq!(
                        (after.allocated, after.free),
                        (before.allocated, before.free)
                    );
                }
            }
        }
        a.check().unwrap();
        let s = a.stats();
        assert_eq!(s.allocated, m.busy.values().sum::<usize>());
        assert_eq!(s.free_segments, m.free.len());
    }
    for x in live {
        let size = m.busy[&x];
        a.free(x, size).unwrap();
    }
    a.check().unwrap();
    let s = a.stats();
    assert_eq!(
        (s.allocated, s.free, s.free_segments),
        (0, s.total, s.spans)
    );
    assert_eq!(s.total, m.spans.len() * SLOT);
    (ok, failed)
}

#[test]
fn random_sequences_match_the_model() {
    let runs = if cfg!(debug_assertions) { 200 } else { 3000 };
    let (mut ok, mut failed) = (0, 0);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..runs {
        let data: Vec<u8> = (0..2048)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let (o, f) = run(&data);
        ok += o;
        failed += f;
    }
    // The sequences reach both outcomes often.
    assert!(
        ok > runs * 20 && failed > runs / 2,
        "{ok} allocations, {failed} failures"
    );
}
