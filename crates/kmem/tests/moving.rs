//! The slab consolidator wired into caches: refusals, a desperate
//! defragment through magazines, the typed callback, and dropping a cache
//! whose consolidator is busy.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmem::{Cache, KmemError, Move, ObjectCache};

type Table = Arc<Mutex<HashMap<usize, u64>>>;

fn write(p: usize, id: u64) {
    // SAFETY: a live 16-byte-or-larger buffer of the test cache.
    unsafe { (p as *mut [u64; 2]).write([id, !id]) };
}

fn read(p: usize) -> [u64; 2] {
    // SAFETY: as above.
    unsafe { (p as *const [u64; 2]).read() }
}

fn mover(t: Table) -> impl Fn(NonNull<u8>, NonNull<u8>, usize) -> Move + Send + Sync {
    move |old, new, _| {
        let mut t = t.lock().unwrap();
        let Some(id) = t.remove(&(old.as_ptr() as usize)) else {
            return Move::DontKnow;
        };
        assert_eq!(read(old.as_ptr() as usize), [id, !id]);
        write(new.as_ptr() as usize, id);
        t.insert(new.as_ptr() as usize, id);
        Move::Yes
    }
}

#[test]
fn set_move_is_refused_once_the_cache_has_allocated() {
    let c = Cache::builder("move-refused", 64, 8).build().unwrap();
    let p = c.alloc().unwrap();
    // SAFETY: p came from c.
    unsafe { c.free(p).unwrap() };
    let e = c.set_move(|_, _, _| Move::Yes).unwrap_err();
    assert!(
        matches!(
            e,
            KmemError::Move {
                cache: "move-refused",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("already allocated"), "{e}");
    assert!(c.defragment().is_err() && c.move_stats().is_none());

    let fresh = Cache::builder("move-twice", 64, 8).build().unwrap();
    fresh.set_move(|_, _, _| Move::Yes).unwrap();
    assert!(fresh.set_move(|_, _, _| Move::Yes).is_err());
    let second = fresh.secondary("move-second").build();
    assert!(matches!(second, Err(KmemError::InvalidRequest { .. })));

    let per = Cache::builder("move-per-alloc", 64, 8)
        .per_alloc()
        .build()
        .unwrap();
    assert!(per.set_move(|_, _, _| Move::Yes).is_err());
    let primary = Cache::builder("move-shared", 64, 8).build().unwrap();
    let _sec = primary.secondary("move-shared-2").build().unwrap();
    assert!(primary.set_move(|_, _, _| Move::Yes).is_err());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "20 000 objects and over a thousand moves to count: many minutes under Miri"
)]
fn defragment_moves_objects_out_of_sparse_slabs() {
    let c = Cache::builder("move-defrag", 64, 8).build().unwrap();
    let table: Table = Arc::default();
    c.set_move(mover(table.clone())).unwrap();
    let all: Vec<_> = (0..20_000u64)
        .map(|id| {
            let p = c.alloc().unwrap();
            write(p.as_ptr() as usize, id);
            (id, p)
        })
        .collect();
    for (id, p) in all {
        if id % 10 == 0 {
            table.lock().unwrap().insert(p.as_ptr() as usize, id);
        } else {
            // SAFETY: p came from c, freed once.
            unsafe { c.free(p).unwrap() };
        }
    }
    let before = c.stats();
    loop {
        let d = c.defragment().unwrap();
        if d.partial_after >= d.partial_before {
            break;
        }
    }
    let after = c.stats();
    for (&p, &id) in table.lock().unwrap().iter() {
        assert_eq!(read(p), [id, !id], "object {id}");
    }
    assert!(after.moves.yes > 1000, "{:?}", after.moves);
    assert!(
        after.mem_in_use * 3 < before.mem_in_use,
        "slab memory {} -> {}",
        before.mem_in_use,
        after.mem_in_use
    );
    assert!(
        kmem::stats::Table(std::slice::from_ref(&after))
            .to_string()
            .contains("moved")
    );
    c.check().unwrap();
    for (p, _) in table.lock().unwrap().drain() {
        // SAFETY: live objects of c, freed once.
        unsafe { c.free(NonNull::new(p as *mut u8).unwrap()).unwrap() };
    }
}

struct Node {
    id: u64,
    payload: Vec<u64>,
}

#[test]
fn typed_callback_swaps_objects() {
    let nodes = ObjectCache::new("move-typed", || Node {
        id: u64::MAX,
        payload: Vec::new(),
    });
    let live: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let l = live.clone();
    nodes
        .set_move(move |old, new| {
            let mut live = l.lock().unwrap();
            let Some((&id, _)) = live.iter().find(|(_, p)| **p == old.as_ptr() as usize) else {
                return Move::DontKnow;
            };
            // SAFETY: `old` is linked in `live`, whose lock we hold: it is
            // a live node nobody else is using.
            unsafe { core::ptr::swap(old.as_ptr(), new) };
            live.insert(id, new as *mut Node as usize);
            Move::Yes
        })
        .unwrap();
    // Nodes (about 25 slabs); under Miri, which takes a minute over them,
    // five slabs' worth still leaves several partial slabs to empty.
    const NODES: u64 = if cfg!(miri) { 600 } else { 3000 };
    let mut kept = Vec::new();
    let all: Vec<_> = (0..NODES)
        .map(|id| {
            let mut n = nodes.alloc();
            n.id = id;
            n.payload = vec![id; 3];
            n
        })
        .collect();
    for n in all {
        if n.id % 16 == 0 {
            kept.push(n.id);
            live.lock()
                .unwrap()
                .insert(n.id, n.into_raw().as_ptr() as usize);
        }
    }
    nodes.cache().defragment().unwrap();
    let s = nodes.stats();
    assert!(s.moves.yes > 0, "{:?}", s.moves);
    let live = live.lock().unwrap();
    for id in kept {
        // SAFETY: a live node owned by the map.
        let n = unsafe { &*(live[&id] as *const Node) };
        assert_eq!((n.id, n.payload.as_slice()), (id, &[id; 3][..]));
    }
    for p in live.values() {
        // SAFETY: raw nodes of this cache, freed once.
        unsafe {
            nodes
                .free_raw(NonNull::new(*p as *mut Node).unwrap())
                .unwrap()
        };
    }
}

#[test]
fn dropping_a_cache_with_moves_pending_is_safe() {
    let c = Cache::builder("move-drop", 64, 8).build().unwrap();
    let table: Table = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (t, k) = (table.clone(), calls.clone());
    let inner = mover(t);
    c.set_move(move |o, n, s| {
        k.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1));
        inner(o, n, s)
    })
    .unwrap();
    // Objects (about 80 slabs); under Miri, which takes minutes over them,
    // a fifth still keeps 125 objects to move at 1 ms each.
    const OBJECTS: u64 = if cfg!(miri) { 1000 } else { 5000 };
    let all: Vec<_> = (0..OBJECTS).map(|_| c.alloc().unwrap()).collect();
    for (id, p) in (0u64..).zip(all) {
        write(p.as_ptr() as usize, id);
        if id % 8 == 0 {
            table.lock().unwrap().insert(p.as_ptr() as usize, id);
        } else {
            // SAFETY: p came from c.
            unsafe { c.free(p).unwrap() };
        }
    }
    let c2 = c.clone();
    let worker = std::thread::spawn(move || c2.defragment().unwrap());
    while calls.load(Ordering::SeqCst) == 0 && !worker.is_finished() {
        std::thread::yield_now();
    }
    assert!(!worker.is_finished(), "moves take 1 ms each: still running");
    drop(c);
    let d = worker.join().unwrap();
    assert!(d.moves > 0);
    // The last handle went with the worker: the cache, its consolidator
    // and its slabs are gone, and every object seen was intact.
    assert!(
        !kmem::stats::caches().iter().any(|r| r.name == "move-drop"),
        "the cache is gone"
    );
}
