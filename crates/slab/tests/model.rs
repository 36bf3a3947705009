//! Model-based test: `arbitrary` drives random alloc / free / batch / reap
//! sequences on kegs of random geometry against a reference map of live
//! buffers, checking after every step that buffers never overlap, are
//! aligned, keep their contents, that the keg's accounting matches, and that
//! every page is back with the source after freeing everything and reaping.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use kmem_slab::Keg;
use kmem_sys::OsPages;

#[derive(Debug, Arbitrary)]
struct Config {
    size: u16,
    align_shift: u8,
    off_page: bool,
    single: bool,
    no_colour: bool,
    tag: bool,
    init: bool,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Alloc,
    Free(u16),
    AllocBatch(u8),
    FreeBatch(u8),
    Reap,
}

struct Model {
    keg: Keg<Arc<OsPages>>,
    /// Live buffers: start → (end, fill byte).
    live: BTreeMap<usize, (usize, u8)>,
    stamp: u8,
}

impl Model {
    fn admit(&mut self, p: NonNull<u8>) {
        let l = *self.keg.layout();
        let a = p.as_ptr() as usize;
        assert_eq!(a % l.align, 0, "misaligned buffer {a:#x}");
        if let Some((&s, &(e, _))) = self.live.range(..=a).next_back() {
            assert!(e <= a, "{a:#x} overlaps live [{s:#x}, {e:#x})");
        }
        if let Some((&s, _)) = self.live.range(a..).next() {
            assert!(a + l.buf_size <= s, "{a:#x} overlaps live buffer at {s:#x}");
        }
        self.stamp = self.stamp.wrapping_add(1);
        // SAFETY: a fresh buffer of buf_size bytes.
        unsafe { p.as_ptr().write_bytes(self.stamp, l.buf_size) };
        self.live.insert(a, (a + l.buf_size, self.stamp));
    }

    fn release(&mut self, a: usize) -> NonNull<u8> {
        let (e, stamp) = self.live.remove(&a).expect("live");
        // SAFETY: a live buffer of e - a bytes.
        let bytes = unsafe { std::slice::from_raw_parts(a as *const u8, e - a) };
        assert!(
            bytes.iter().all(|&b| b == stamp),
            "buffer {a:#x} was overwritten"
        );
        NonNull::new(a as *mut u8).unwrap()
    }

    fn nth_live(&self, i: usize) -> Option<usize> {
        let n = self.live.len();
        (n > 0).then(|| *self.live.keys().nth(i % n).unwrap())
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Alloc => {
                let p = self.keg.alloc().unwrap();
                self.admit(p);
            }
            Op::Free(i) => {
                if let Some(a) = self.nth_live(i as usize) {
                    let p = self.release(a);
                    // SAFETY: a live buffer of this keg.
                    unsafe { self.keg.free(p) }.unwrap();
                }
            }
            Op::AllocBatch(n) => {
                let mut out = vec![NonNull::dangling(); n as usize % 40];
                let got = self.keg.alloc_batch(&mut out).unwrap();
                assert_eq!(got, out.len());
                out.into_iter().for_each(|p| self.admit(p));
            }
            Op::FreeBatch(n) => {
                let batch: Vec<_> = (0..n as usize % 40)
                    .filter_map(|i| self.nth_live(i * 7))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .map(|a| self.release(a))
                    .collect();
                // SAFETY: distinct live buffers of this keg.
                unsafe { self.keg.free_batch(&batch) }.unwrap();
            }
            Op::Reap => {
                let before = self.keg.stats();
                let n = self.keg.reap();
                assert_eq!(n, before.empty_slabs);
                assert_eq!(self.keg.stats().empty_slabs, 0);
            }
        }
        self.keg.check().unwrap();
        let s = self.keg.stats();
        assert_eq!(s.bufs_in_use, self.live.len());
        assert_eq!(s.bufs_in_use + s.bufs_free, s.slabs * s.bufs_per_slab);
        assert_eq!(s.slabs, s.partial_slabs + s.full_slabs + s.empty_slabs);
        assert_eq!(self.keg.source().bytes_in_use(), s.page_bytes());
    }
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let c = Config::arbitrary(&mut u)?;
    let size = 1 + c.size as usize % 6000;
    let mut b = Keg::builder("model", size, 1 << (c.align_shift % 8));
    if c.off_page {
        b = b.off_page();
    }
    if c.single {
        b = b.single_buffer();
    }
    if c.no_colour {
        b = b.no_colour();
    }
    if c.tag {
        b = b.debug_tag(16);
    }
    if c.init {
        b = b.init(|_| true).fini(|_| ());
    }
    let os = Arc::new(OsPages::new());
    let keg = b.source(Arc::clone(&os)).build().unwrap();
    let mut m = Model {
        keg,
        live: BTreeMap::new(),
        stamp: 0,
    };
    for _ in 0..200 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        m.step(op);
    }
    let rest: Vec<usize> = m.live.keys().copied().collect();
    for a in rest {
        let p = m.release(a);
        // SAFETY: a live buffer of this keg.
        unsafe { m.keg.free(p) }.unwrap();
    }
    m.keg.reap();
    m.keg.check().unwrap();
    assert_eq!(
        os.bytes_in_use(),
        0,
        "pages left after freeing all and reaping"
    );
    Ok(())
}

#[test]
#[cfg_attr(miri, ignore = "hundreds of random sequences: minutes under Miri")]
fn random_sequences_match_the_model() {
    // A replayable xorshift stream feeds `arbitrary`.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for case in 0..150 {
        let data: Vec<u8> = (0..1500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        if let Err(e) = run(&data) {
            panic!("case {case}: {e}");
        }
    }
}
