//! Several threads allocating and freeing through one zone, on whatever CPUs
//! the OS gives them, with every item accounted for.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use kmem_sys::OsPages;
use kmem_zone_compat::{Zone, ZoneFlags};

const THREADS: usize = 4;
const ROUNDS: usize = 20_000;

/// Each thread keeps a random working set, stamps each item it gets with its
/// id and a serial past the zone's two words, and checks the stamp before
/// freeing: two threads holding one item would overwrite each other's stamp.
fn run(zone: Arc<Zone<Arc<OsPages>>>) {
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let zone = zone.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ t as u64;
                let mut held: Vec<(usize, u64)> = Vec::new();
                barrier.wait();
                for serial in 0..ROUNDS as u64 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if held.len() < 600 && (held.is_empty() || !rng.is_multiple_of(3)) {
                        let p = zone.alloc().unwrap();
                        let stamp = (t as u64) << 48 | serial;
                        // SAFETY: the item is ours; 64 bytes, words 2.. are free for us.
                        unsafe { p.as_ptr().cast::<u64>().add(2).write(stamp) };
                        held.push((p.as_ptr() as usize, stamp));
                    } else {
                        let i = (rng as usize / 3) % held.len();
                        let (addr, stamp) = held.swap_remove(i);
                        let p = addr as *mut u8;
                        // SAFETY: still ours until the free below.
                        assert_eq!(unsafe { p.cast::<u64>().add(2).read() }, stamp);
                        // SAFETY: allocated by this thread, freed once.
                        unsafe { zone.free(std::ptr::NonNull::new(p).unwrap()).unwrap() };
                    }
                }
                held
            })
        })
        .collect();
    let mut live = HashSet::new();
    for h in handles {
        for (addr, stamp) in h.join().unwrap() {
            // SAFETY: the thread left the item allocated and stamped.
            assert_eq!(unsafe { (addr as *const u64).add(2).read() }, stamp);
            assert!(live.insert(addr), "item {addr:#x} held twice");
        }
    }
    zone.check().unwrap();
    let stats = zone.stats();
    assert_eq!(stats.used, live.len());
    assert_eq!(stats.used + stats.free, stats.total);
    for addr in live {
        // SAFETY: every item left allocated, freed once.
        unsafe {
            zone.free(std::ptr::NonNull::new(addr as *mut u8).unwrap())
                .unwrap()
        };
    }
    zone.check().unwrap();
    let stats = zone.stats();
    assert_eq!((stats.used, stats.free), (0, stats.total));
    let per_cpu: usize = stats.per_cpu.iter().map(|c| c.free).sum();
    assert_eq!(per_cpu + stats.global_free, stats.total);
}

#[test]
fn threads_share_an_ordinary_zone() {
    let os = Arc::new(OsPages::new());
    // A small burst so lists spill and refill often.
    let zone = Zone::builder("stress", 64)
        .burst(8)
        .source(os.clone())
        .build()
        .unwrap();
    run(Arc::new(zone));
    assert_eq!(os.bytes_in_use(), 0);
}

#[test]
fn threads_share_an_interrupt_zone() {
    let zone = Zone::builder("stress-intr", 64)
        .burst(16)
        .flags(ZoneFlags::INTERRUPT)
        .nentries(THREADS * 600)
        .source(Arc::new(OsPages::new()))
        .build()
        .unwrap();
    run(Arc::new(zone));
}
