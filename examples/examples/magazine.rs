//! Bonwick's magazine layer over an ID allocator.
//!
//! Seed: `illumos-kmem.c.txt` (`kmem_cache_alloc` / `kmem_cache_free` and
//! `kmem_cpu_reload` for the loaded/previous pair, `kmem_depot_alloc` /
//! `kmem_depot_free`, `kmem_depot_ws_update` / `kmem_depot_ws_reap`,
//! `kmem_cache_magazine_purge`, the `kmem_magtype[]` table); UMA's per-CPU
//! buckets in `freebsd-uma_core.c.txt` for the per-thread front end.
//!
//! The backend is a small ID allocator (think PIDs or inode numbers): the
//! magazines cache IDs so that four busy threads almost never reach it.
//! The example checks that no ID is ever held by two callers at once.
//!
//! What to look for in the output:
//! 1. per-thread and per-CPU `Magazines`: nearly every alloc and free a
//!    magazine *hit*, few backend imports, the depot trading whole magazines
//!    (`depot_alloc` / `depot_free`), and `cached` = IDs the backend has out;
//!    per CPU there are more misses, as threads sharing a CPU share its slot;
//! 2. `reap` releasing nothing until two working-set intervals have passed
//!    (a manual clock stands in for the seed's 15 s `kmem_reap_interval`),
//!    then every idle depot magazine; `purge` returning the rest;
//! 3. `MagazinePair`s owned by the threads against one `Depot`: the same
//!    rules without a thread-local lookup, LIFO reuse of the hot ID, and
//!    `flush` handing the pair's magazines to the depot.
//!
//! Run: `cargo run -p kmem-examples --example magazine`.

use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kmem_magazine::{
    Backend, Config, Depot, MagazineError, MagazinePair, Magazines, ManualClock, Mode, Stats,
};

const MAX_ID: usize = 1 << 16;
const THREADS: usize = 4;
const ROUNDS: usize = 20_000;
const HELD: usize = 20;

/// Hands out IDs `0..MAX_ID`, reusing released ones first.
struct Ids {
    state: Mutex<(usize, Vec<usize>)>,
    /// IDs the magazine layer has (imported and not released).
    out: AtomicUsize,
    /// IDs held by a caller right now: the example's own double-use check.
    live: Vec<AtomicBool>,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            state: Mutex::new((0, Vec::new())),
            out: AtomicUsize::new(0),
            live: (0..MAX_ID).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn out(&self) -> usize {
        self.out.load(Ordering::Relaxed)
    }
}

impl Backend for Ids {
    type Item = usize;

    fn import(&self, slots: &mut [MaybeUninit<usize>]) -> usize {
        let mut st = self.state.lock().unwrap();
        let mut n = 0;
        for slot in slots.iter_mut() {
            let id = match st.1.pop() {
                Some(id) => id,
                None if st.0 < MAX_ID => {
                    st.0 += 1;
                    st.0 - 1
                }
                None => break,
            };
            slot.write(id);
            n += 1;
        }
        self.out.fetch_add(n, Ordering::Relaxed);
        n
    }

    fn release(&self, items: &[usize]) {
        self.state.lock().unwrap().1.extend_from_slice(items);
        self.out.fetch_sub(items.len(), Ordering::Relaxed);
    }
}

/// Something to take IDs from and give them back to.
trait Front {
    fn get(&mut self) -> Option<usize>;
    fn put(&mut self, id: usize);
}

impl Front for &Magazines<&Ids> {
    fn get(&mut self) -> Option<usize> {
        self.alloc()
    }
    fn put(&mut self, id: usize) {
        self.free(id)
    }
}

/// A pair owned by one thread, used against a shared depot.
struct Own<'d, 'b> {
    pair: MagazinePair<usize>,
    depot: &'d Depot<&'b Ids>,
}

impl Front for Own<'_, '_> {
    fn get(&mut self) -> Option<usize> {
        self.pair.alloc(self.depot)
    }
    fn put(&mut self, id: usize) {
        self.pair.free(self.depot, id)
    }
}

/// Takes `HELD` IDs and gives them back, `ROUNDS` times, checking that no
/// ID is held twice.
fn work(ids: &Ids, front: &mut impl Front) {
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..ROUNDS {
        for _ in 0..HELD {
            let id = front.get().expect("IDs left");
            assert!(
                !ids.live[id].swap(true, Ordering::Relaxed),
                "ID {id} handed out twice"
            );
            held.push(id);
        }
        while let Some(id) = held.pop() {
            ids.live[id].store(false, Ordering::Relaxed);
            front.put(id);
        }
    }
}

fn show(s: &Stats, ids: &Ids) {
    let c = s.counts;
    println!(
        "  alloc hits {:>6} misses {:>4} | free hits {:>6} misses {:>4} | magazine size {} (type {})",
        c.alloc_hits, c.alloc_misses, c.free_hits, c.free_misses, s.magazine_size, s.magazine_type
    );
    println!(
        "  depot: alloc {} free {} contention {} | full mags {} empty mags {} | cached {} reaped {}",
        s.depot_alloc,
        s.depot_free,
        s.depot_contention,
        s.full_magazines,
        s.empty_magazines,
        s.cached,
        s.reaped
    );
    println!(
        "  backend: imported {} in {} calls, released {} in {} calls, {} IDs out",
        s.imported,
        s.import_calls,
        s.released,
        s.release_calls,
        ids.out()
    );
}

static CLOCK: ManualClock = ManualClock::new();

fn run_threads(ids: &Ids, cache: &Magazines<&Ids>) {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| s.spawn(|| work(ids, &mut { cache })))
            .collect();
        // Joining waits for the threads to exit, and a per-thread pair is
        // flushed into the depot (with its hit counts) at thread exit.
        for h in handles {
            h.join().unwrap();
        }
    });
}

fn main() -> Result<(), MagazineError> {
    let total = (THREADS * ROUNDS * HELD) as u64;

    println!("1. per-thread magazines, {THREADS} threads x {ROUNDS} x {HELD} IDs");
    let ids = Ids::new();
    let config = Config::new("ids", 8).clock(&CLOCK);
    let cache = Magazines::new(&ids, config.mode(Mode::PerThread))?;
    assert_eq!(cache.mode(), Mode::PerThread);
    run_threads(&ids, &cache);
    // The main thread keeps a few IDs in its own pair.
    let mine: Vec<usize> = (0..5).map(|_| cache.alloc().unwrap()).collect();
    for &id in &mine {
        cache.free(id);
    }
    let s = cache.stats();
    show(&s, &ids);
    assert_eq!(s.counts.alloc_hits + s.counts.alloc_misses, total + 5);
    assert_eq!(s.counts.free_hits + s.counts.free_misses, total + 5);
    assert!(
        s.counts.alloc_hits > 9 * s.counts.alloc_misses,
        "mostly hits"
    );
    assert_eq!(s.cached, ids.out(), "every ID out is cached");
    cache.check()?;

    println!("\n2. reap and purge");
    cache.reap();
    let s0 = cache.stats();
    println!(
        "  reap at once: {} released (no working set yet)",
        s0.released
    );
    assert_eq!(s0.released, s.released);
    for _ in 0..2 {
        CLOCK.advance(Duration::from_secs(15));
        cache.update();
    }
    cache.reap();
    let s1 = cache.stats();
    println!(
        "  reap after two idle intervals: {} magazines freed, {} IDs released, {} IDs still out",
        s1.reaped,
        s1.released - s0.released,
        ids.out()
    );
    assert!(s1.reaped > 0);
    assert_eq!((s1.full_magazines, s1.empty_magazines), (0, 0));
    // What is left is in the main thread's pair: a whole magazine it took
    // from the depot on its first miss, which only purge reaches.
    assert!(ids.out() > 0);
    assert_eq!(
        ids.out(),
        s1.cached,
        "only the main thread's pair holds IDs"
    );
    cache.purge();
    println!("  purge: {} IDs out", ids.out());
    assert_eq!(ids.out(), 0);

    println!("\n3. per-CPU magazines (the seed's shape), same load");
    let cpu_ids = Ids::new();
    let cpus = Magazines::new(&cpu_ids, config.mode(Mode::PerCpu))?;
    assert_eq!(cpus.mode(), Mode::PerCpu);
    run_threads(&cpu_ids, &cpus);
    let s = cpus.stats();
    show(&s, &cpu_ids);
    assert_eq!(s.counts.alloc_hits + s.counts.alloc_misses, total);
    // Threads that share a CPU share its slot, so there are more misses
    // than per thread: how many depends on the scheduler.
    assert!(
        s.counts.alloc_hits > 2 * s.counts.alloc_misses,
        "mostly hits"
    );
    assert_eq!(s.cached, cpu_ids.out());
    cpus.check()?;
    cpus.purge();
    println!("  purge: {} IDs out", cpu_ids.out());
    assert_eq!(cpu_ids.out(), 0);

    println!("\n4. MagazinePairs owned by the threads, one Depot");
    let pair_ids = Ids::new();
    let depot = Depot::new(&pair_ids, Config::new("ids-pairs", 8).magazine_size(31))?;
    assert_eq!(depot.magazine_size(), 31);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let mut own = Own {
                    pair: MagazinePair::new(),
                    depot: &depot,
                };
                let a = own.get().unwrap();
                own.put(a);
                assert_eq!(own.get(), Some(a), "LIFO: the hot ID comes back");
                own.put(a);
                work(&pair_ids, &mut own);
                own.pair.flush(&depot);
                assert_eq!(own.pair.cached(), 0);
            });
        }
    });
    let s = depot.stats();
    show(&s, &pair_ids);
    assert_eq!(
        s.counts.alloc_hits + s.counts.alloc_misses,
        total + 2 * THREADS as u64
    );
    assert_eq!(s.cached, pair_ids.out());
    depot.check()?;
    depot.purge();
    println!("  purge: {} IDs out", pair_ids.out());
    assert_eq!(pair_ids.out(), 0);
    Ok(())
}
