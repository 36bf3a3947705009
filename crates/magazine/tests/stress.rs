//! Many threads against one cache with a counting backend: every imported
//! item is handed out or released, never both, never twice; nothing is lost
//! when threads exit.

mod common;

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::Counting;
use kmem_magazine::{Config, Magazines, Mode};

const THREADS: usize = 4;
const OPS: usize = 20_000;

fn stress(mode: Mode) {
    let m = Arc::new(
        Magazines::new(
            Counting::new(usize::MAX),
            Config::new("stress", 64).mode(mode).magazine_size(3),
        )
        .unwrap(),
    );
    let held = Arc::new(Mutex::new(HashSet::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (m, held) = (m.clone(), held.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut x = t as u64 * 7919 + 1;
                for _ in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x % 5 < 3 || mine.is_empty() {
                        let i = m.alloc().unwrap();
                        assert!(held.lock().unwrap().insert(i), "item {i} handed out twice");
                        mine.push(i);
                    } else {
                        let i = mine.swap_remove((x as usize / 5) % mine.len());
                        assert!(held.lock().unwrap().remove(&i));
                        m.free(i);
                    }
                }
                // Keep some items past thread exit; free the rest.
                let keep = mine.split_off(mine.len() / 2);
                for i in mine {
                    assert!(held.lock().unwrap().remove(&i));
                    m.free(i);
                }
                keep
            })
        })
        .collect();
    let kept: Vec<usize> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    m.check().unwrap();
    // Exited threads flushed their pairs: everything not held is reachable.
    let b = m.backend();
    assert_eq!(
        b.outstanding(),
        kept.len() + m.stats().cached,
        "{mode:?}: items lost at thread exit"
    );
    for i in kept {
        m.free(i);
    }
    m.purge();
    let s = m.stats();
    assert_eq!(m.backend().outstanding(), 0, "{mode:?}: {s:?}");
    assert_eq!(s.released as usize, m.backend().imported());
    assert_eq!(s.imported as usize, m.backend().imported());
}

#[test]
fn stress_per_cpu() {
    stress(Mode::PerCpu);
}

#[test]
fn stress_per_thread() {
    stress(Mode::PerThread);
}

thread_local! {
    static LATE: RefCell<Option<Arc<Magazines<Counting>>>> = const { RefCell::new(None) };
}

struct FreeOnExit(Arc<Magazines<Counting>>, usize);

impl Drop for FreeOnExit {
    fn drop(&mut self) {
        self.0.free(self.1);
        let j = self.0.alloc().unwrap();
        self.0.free(j);
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<FreeOnExit>> = const { RefCell::new(None) };
}

#[test]
fn thread_teardown_allocations_are_not_lost() {
    let m =
        Arc::new(Magazines::new(Counting::new(usize::MAX), Config::new("teardown", 64)).unwrap());
    assert_eq!(m.mode(), Mode::PerThread);
    for _ in 0..8 {
        let m2 = m.clone();
        std::thread::spawn(move || {
            let i = m2.alloc().unwrap();
            ON_EXIT.with(|s| *s.borrow_mut() = Some(FreeOnExit(m2.clone(), i)));
            LATE.with(|s| *s.borrow_mut() = Some(m2));
        })
        .join()
        .unwrap();
    }
    let s = m.stats();
    assert_eq!(m.backend().outstanding(), s.cached, "{s:?}");
    assert!(s.counts.free_hits + s.counts.free_misses >= 16, "{s:?}");
    m.purge();
    assert_eq!(m.backend().outstanding(), 0);
}

#[test]
fn many_caches_share_the_registry() {
    // More per-thread caches than registry ids: the rest use per-CPU slots.
    let caches: Vec<_> = (0..kmem_magazine::MAX_THREAD_CACHES + 4)
        .map(|i| Magazines::new(Counting::new(100), Config::new(&format!("c{i}"), 64)).unwrap())
        .collect();
    assert!(caches.iter().any(|c| c.mode() == Mode::PerCpu));
    for c in &caches {
        let i = c.alloc().unwrap();
        c.free(i);
    }
    drop(caches);
    // Ids are free again.
    let c = Magazines::new(Counting::new(100), Config::new("again", 64)).unwrap();
    assert_eq!(c.mode(), Mode::PerThread);
}
