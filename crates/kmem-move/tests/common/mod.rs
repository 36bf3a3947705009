//! A test client over a bare keg: objects are `[id, !id]` words, a table
//! maps live ids to addresses, and a fake magazine holds freed objects.

#![allow(dead_code)]

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmem_move::{Client, Move};
use kmem_slab::Keg;

/// The buffer size. Under Miri, 128 bytes instead of 64, so that a slab
/// holds 31 buffers instead of 62 and the tests that need a hundred slabs
/// and more (the fragmentation floor is 101) allocate half as many buffers:
/// each costs milliseconds there.
pub const SIZE: usize = if cfg!(miri) { 128 } else { 64 };

/// A scan interval no test outlives, for the tests that count scans and
/// callbacks: they see only the scans they ask for. The seed's 15 s
/// [`SCAN_INTERVAL`](kmem_move::SCAN_INTERVAL) is none under Miri, where
/// such a test runs for more than a minute of the clock.
pub const NO_TIMED_SCAN: Duration = Duration::from_secs(24 * 60 * 60);

/// The tables' hasher: one multiply per integer key. SipHash, the std
/// default, costs milliseconds a key under Miri, and the tests keep up to a
/// few thousand keys.
#[derive(Default)]
pub struct Mix(u64);

impl std::hash::Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
}

pub type Map<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Mix>>;

/// A live object's buffer, as the keg or the consolidator handed it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obj(pub NonNull<u8>);

// SAFETY: holding an `Obj` gives no access to the object; the tests reach it
// only while the table says it lives there, under the table's lock or as
// the move callback's `old`.
unsafe impl Send for Obj {}

impl Obj {
    /// The address, the key of [`Table::by_addr`].
    pub fn addr(self) -> usize {
        self.0.addr().get()
    }
}

/// Live objects by id and by address.
#[derive(Default)]
pub struct Table {
    pub by_id: Map<u64, Obj>,
    pub by_addr: Map<usize, u64>,
}

pub struct TestClient {
    pub keg: Arc<Keg>,
    pub constructed: AtomicUsize,
    pub destroyed: AtomicUsize,
    /// Freed objects still "cached": allocated as far as the keg knows.
    pub magazine: Mutex<Vec<usize>>,
}

impl Client for TestClient {
    type Source = kmem_sys::OsPages;
    type Meta = allocator_api2::alloc::Global;

    fn name(&self) -> &'static str {
        "test"
    }
    fn keg(&self) -> &Keg {
        &self.keg
    }
    fn construct(&self, buf: NonNull<u8>) -> bool {
        self.constructed.fetch_add(1, Ordering::Relaxed);
        // SAFETY: a raw buffer of SIZE bytes the consolidator owns.
        unsafe { buf.cast::<[u64; 2]>().write([u64::MAX, 0]) };
        true
    }
    fn destroy(&self, buf: NonNull<u8>) {
        self.destroyed.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { buf.cast::<[u64; 2]>().write([0xdead, 0xdead]) };
    }
    fn hunt(&self, buf: NonNull<u8>) -> bool {
        let mut m = self.magazine.lock().unwrap();
        match m.iter().position(|&a| a == buf.as_ptr() as usize) {
            Some(i) => {
                m.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

pub fn client() -> TestClient {
    TestClient {
        keg: Arc::new(Keg::builder("move-test", SIZE, 8).build().unwrap()),
        constructed: AtomicUsize::new(0),
        destroyed: AtomicUsize::new(0),
        magazine: Mutex::new(Vec::new()),
    }
}

pub fn write(p: NonNull<u8>, id: u64) {
    // SAFETY: a live object of the test keg.
    unsafe { p.cast::<[u64; 2]>().write([id, !id]) };
}

pub fn read(p: NonNull<u8>) -> [u64; 2] {
    // SAFETY: as above.
    unsafe { p.cast::<[u64; 2]>().read() }
}

/// Allocates `n` objects, then frees all but every `keep`-th, leaving the
/// rest live in `table`. Returns the table.
pub fn fragment(c: &TestClient, n: usize, keep: usize) -> Arc<Mutex<Table>> {
    let live = n.div_ceil(keep);
    let mut t = Table {
        by_id: Map::with_capacity_and_hasher(live, Default::default()),
        by_addr: Map::with_capacity_and_hasher(live, Default::default()),
    };
    let mut all = Vec::new();
    for id in 0..n as u64 {
        let p = c.keg.alloc().unwrap();
        c.construct(p);
        write(p, id);
        all.push((id, Obj(p)));
    }
    for (i, (id, o)) in all.into_iter().enumerate() {
        if i % keep == 0 {
            t.by_id.insert(id, o);
            t.by_addr.insert(o.addr(), id);
        } else {
            free(c, o.0);
        }
    }
    Arc::new(Mutex::new(t))
}

pub fn free(c: &TestClient, p: NonNull<u8>) {
    c.destroy(p);
    // SAFETY: a live buffer of this keg, freed once.
    unsafe { c.keg.free(p) }.unwrap();
}

/// The well-behaved callback: moves a live object, re-points the table.
pub fn mover(table: Arc<Mutex<Table>>) -> impl Fn(NonNull<u8>, NonNull<u8>, usize) -> Move {
    move |old, new, size| {
        assert_eq!(size, SIZE);
        let (old, new) = (Obj(old), Obj(new));
        let mut t = table.lock().unwrap();
        let Some(id) = t.by_addr.remove(&old.addr()) else {
            return Move::DontKnow;
        };
        assert_eq!(read(new.0), [u64::MAX, 0], "the destination is constructed");
        assert_eq!(read(old.0), [id, !id], "object {id} intact before its move");
        write(new.0, id);
        t.by_addr.insert(new.addr(), id);
        t.by_id.insert(id, new);
        Move::Yes
    }
}

/// Every live object holds its id.
pub fn verify(c: &TestClient, table: &Mutex<Table>) {
    verify_keg(&c.keg, table);
}

/// As [`verify`], given only the keg.
pub fn verify_keg(keg: &Keg, table: &Mutex<Table>) {
    let t = table.lock().unwrap();
    for (&id, &o) in &t.by_id {
        assert_eq!(read(o.0), [id, !id], "object {id} at {:p}", o.0);
        assert!(keg.is_allocated(o.0).unwrap());
    }
    assert_eq!(t.by_id.len(), t.by_addr.len());
    keg.check().unwrap();
}
