//! Each reply's path, notifications, the dead-slab list and dropping a
//! consolidator with moves pending.

mod common;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kmem_move::{Consolidator, DISBELIEF, Move, SCAN_INTERVAL};

fn per(c: &TestClient) -> usize {
    c.keg.layout().bufs_per_slab
}

#[test]
fn yes_moves_objects_and_frees_slabs() {
    let c = client();
    let n = per(&c) * 40;
    let table = fragment(&c, n, 10);
    let live = table.lock().unwrap().by_id.len();
    let before = c.keg.stats();
    assert!(before.partial_slabs >= 39);
    let cons = Consolidator::spawn(c, mover(table.clone()), SCAN_INTERVAL).unwrap();
    let mut moved = 0;
    loop {
        let d = cons.defragment();
        moved += d.moves;
        if d.moves == 0 || d.partial_after >= d.partial_before {
            break;
        }
    }
    let c = cons.client();
    verify(c, &table);
    let s = cons.stats();
    let k = c.keg.stats();
    assert!(moved > 0 && s.yes > 0 && s.callbacks == s.yes, "{s:?}");
    assert!(k.partial_slabs <= 1, "{k:?}");
    assert_eq!(k.bufs_in_use, live, "no buffer lost or leaked");
    assert_eq!(k.slabs - k.empty_slabs, live.div_ceil(per(c)));
    assert!(s.slabs_reclaimed >= 30 && s.dead_slabs_freed >= 30, "{s:?}");
    assert!(k.slabs < before.slabs / 4);
    assert_eq!(cons.pending(), 0);
}

#[test]
fn no_marks_the_slab_and_notify_retries() {
    let c = client();
    let n = per(&c) * 110;
    // One object in 11 live: every slab stays under 1/8 full (at most 6 of
    // 62 buffers, or 3 of 31 under Miri), so the ordinary threshold takes
    // the move a notification queues.
    let table = fragment(&c, n, 11);
    let refuse = Arc::new(AtomicUsize::new(1));
    let r = refuse.clone();
    let yes = mover(table.clone());
    let refused = Arc::new(Mutex::new(Vec::new()));
    let l = refused.clone();
    let cons = Consolidator::spawn(
        c,
        move |o, n, s| {
            if r.load(Ordering::SeqCst) == 1 {
                l.lock().unwrap().push(Obj(o));
                Move::No
            } else {
                yes(o, n, s)
            }
        },
        NO_TIMED_SCAN,
    )
    .unwrap();
    let d = cons.defragment();
    let s = cons.stats();
    assert!(
        d.moves > 0 && s.no > 0 && s.no == s.callbacks,
        "{d:?} {s:?}"
    );
    assert_eq!(d.partial_after, d.partial_before, "nothing moved");
    // Every candidate slab is now marked: an ordinary scan (the keg is
    // fragmented: 110 slabs, 10 buffers in 11 free) finds no candidate and
    // calls no one.
    cons.scan();
    cons.wait_idle();
    assert_eq!(cons.stats().callbacks, s.callbacks);
    assert_eq!(cons.stats().scans, 1);
    // The client says the objects it refused in one slab can move now. Only
    // the one that left the slab marked (the last refusal recorded there;
    // with the thread helping, which one that is depends on timing) clears
    // the mark and is retried; notifying the others changes nothing.
    refuse.store(0, Ordering::SeqCst);
    let keg = &cons.client().keg;
    let slab_of = |o: Obj| keg.slab_of(o.0).unwrap();
    let refused = refused.lock().unwrap().clone();
    let slab = slab_of(refused[refused.len() - 1]);
    let mine: Vec<Obj> = refused
        .into_iter()
        .filter(|&o| slab_of(o) == slab)
        .collect();
    let ids: Vec<u64> = {
        let t = table.lock().unwrap();
        mine.iter().map(|o| t.by_addr[&o.addr()]).collect()
    };
    for o in &mine {
        cons.move_notify(o.0).unwrap();
        cons.wait_idle();
    }
    let s2 = cons.stats();
    assert_eq!(
        (s2.notify, s2.notify_callbacks, s2.yes),
        (mine.len() as u64, 1, 1),
        "{s2:?}"
    );
    let t = table.lock().unwrap();
    let moved = ids
        .iter()
        .zip(&mine)
        .filter(|&(id, a)| t.by_id[id] != *a)
        .count();
    assert_eq!(moved, 1, "exactly the marked object moved");
    drop(t);
    verify(cons.client(), &table);
    // A pointer that is no buffer of the keg is an error naming the cache.
    let stranger = Box::new(0u64);
    let e = cons
        .move_notify(NonNull::from(&*stranger).cast())
        .unwrap_err();
    assert!(e.to_string().starts_with("test: move_notify(0x"), "{e}");
}

#[test]
fn later_turns_into_no_after_disbelief() {
    let c = client();
    let table = fragment(&c, per(&c) * 4, 16);
    let cons = Consolidator::spawn(c, |_, _, _| Move::Later, SCAN_INTERVAL).unwrap();
    for _ in 0..DISBELIEF {
        cons.defragment();
    }
    let s = cons.stats();
    assert!(s.later > 0 && s.later == s.callbacks, "{s:?}");
    assert!(s.disbelief > 0, "{s:?}");
    assert_eq!(s.no, 0, "disbelief is counted apart from real No replies");
    verify(cons.client(), &table);
}

#[test]
fn dont_need_frees_both_buffers() {
    let c = client();
    let table = fragment(&c, per(&c) * 4, 8);
    let live = table.lock().unwrap().by_id.len();
    let t = table.clone();
    let cons = Consolidator::spawn(
        c,
        move |old, _, _| {
            let mut t = t.lock().unwrap();
            let id = t.by_addr.remove(&(old.as_ptr() as usize)).unwrap();
            t.by_id.remove(&id);
            Move::DontNeed
        },
        SCAN_INTERVAL,
    )
    .unwrap();
    cons.defragment();
    let s = cons.stats();
    assert!(s.dont_need > 0, "{s:?}");
    let c = cons.client();
    let left = table.lock().unwrap().by_id.len();
    assert_eq!(left + s.dont_need as usize, live);
    assert_eq!(c.keg.stats().bufs_in_use, left, "old and new both freed");
    assert_eq!(
        c.destroyed.load(Ordering::Relaxed),
        c.constructed.load(Ordering::Relaxed) - left,
        "every freed buffer was destroyed"
    );
    verify(c, &table);
}

#[test]
fn dont_know_hunts_the_magazines() {
    let c = client();
    let table = fragment(&c, per(&c) * 4, 8);
    // The client "frees" some objects into a magazine: still allocated as
    // far as the keg is concerned, unknown to the table.
    let cached: Vec<usize> = {
        let mut t = table.lock().unwrap();
        let ids: Vec<u64> = t.by_id.keys().copied().step_by(3).collect();
        ids.iter()
            .map(|id| {
                let a = t.by_id.remove(id).unwrap().addr();
                t.by_addr.remove(&a);
                a
            })
            .collect()
    };
    c.magazine.lock().unwrap().extend(&cached);
    let in_use = c.keg.stats().bufs_in_use;
    let cons = Consolidator::spawn(c, mover(table.clone()), SCAN_INTERVAL).unwrap();
    cons.defragment();
    let s = cons.stats();
    let c = cons.client();
    assert!(s.dont_know > 0 && s.hunt_found == s.dont_know, "{s:?}");
    assert!(c.magazine.lock().unwrap().len() < cached.len());
    assert_eq!(
        c.keg.stats().bufs_in_use,
        in_use - s.hunt_found as usize,
        "hunted objects went back to their slabs"
    );
    verify(c, &table);
}

#[test]
fn slabs_emptied_while_moves_are_pending_wait_on_the_dead_list() {
    let c = client();
    let table = fragment(&c, per(&c) * 4, 8);
    let (entered_tx, entered) = mpsc::channel::<Obj>();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let yes = mover(table.clone());
    let first = AtomicUsize::new(1);
    let cons = Consolidator::spawn(
        c,
        move |o, n, s| {
            if first.swap(0, Ordering::SeqCst) == 1 {
                entered_tx.send(Obj(o)).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
            yes(o, n, s)
        },
        SCAN_INTERVAL,
    )
    .unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| cons.defragment());
        let old = entered.recv().unwrap();
        let c = cons.client();
        let slab = c.keg.slab_of(old.0).unwrap();
        // Free every live object of that slab while its moves are pending.
        let mut t = table.lock().unwrap();
        let on_slab: Vec<u64> = t
            .by_id
            .iter()
            .filter(|(_, o)| c.keg.slab_of(o.0).unwrap() == slab)
            .map(|(id, _)| *id)
            .collect();
        for id in on_slab {
            let o = t.by_id.remove(&id).unwrap();
            t.by_addr.remove(&o.addr());
            free(c, o.0);
        }
        drop(t);
        assert_eq!(c.keg.slab_info(slab).unwrap().allocated, 0);
        assert_eq!(c.keg.reap(), 0, "a dead slab stays while moves are pending");
        assert!(c.keg.slab_info(slab).unwrap().pinned);
        release.send(()).unwrap();
    });
    let s = cons.stats();
    assert!(s.dead_slabs_freed >= 1, "{s:?}");
    assert!(
        s.hunt_found_slab + s.dont_know >= 1,
        "the freed objects were not moved: {s:?}"
    );
    verify(cons.client(), &table);
}

#[test]
fn dropping_a_consolidator_with_pending_moves_loses_nothing() {
    let c = client();
    // Fragmented by the seed's test: 120 slabs, one object in eight live.
    let table = fragment(&c, per(&c) * 120, 8);
    let live = table.lock().unwrap().by_id.len();
    let yes = mover(table.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let k = calls.clone();
    let cons = Consolidator::spawn(
        c,
        move |o, n, s| {
            k.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            yes(o, n, s)
        },
        NO_TIMED_SCAN,
    )
    .unwrap();
    let keg = cons.client().keg.clone();
    cons.scan();
    while calls.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    // The first callback has just begun and takes 20 ms: no move has ended
    // yet, so every move the scan queued is pending.
    let queued = cons.pending();
    assert!(queued > 1, "moves still queued when dropped");
    drop(cons);
    // The running move finished; the queued ones were dropped, not run, and
    // their destinations went back: the keg holds exactly the live objects.
    let ran = calls.load(Ordering::SeqCst);
    assert!(ran < queued, "{ran} of {queued} pending moves ran");
    verify_keg(&keg, &table);
    assert_eq!(keg.stats().bufs_in_use, live);
    assert!(keg.partial_slabs().iter().all(|s| !s.pinned), "no pin left");
}

#[test]
fn scans_raise_the_candidate_threshold_until_slabs_qualify() {
    let c = client();
    // 120 slabs, each a third full: fragmented (two thirds free), but no
    // slab is under 1/8 used, so the first scans find no candidate.
    let table = fragment(&c, per(&c) * 120, 3);
    let cons = Consolidator::spawn(c, mover(table.clone()), NO_TIMED_SCAN).unwrap();
    let scan = || {
        cons.scan();
        cons.wait_idle();
    };
    // Every RECLAIM_SCAN_RANGE scans without candidates raise the
    // threshold by 1/8: 2/8 after 12 scans, 3/8 after 24.
    for _ in 0..2 * kmem_move::RECLAIM_SCAN_RANGE {
        scan();
    }
    assert_eq!(cons.stats().callbacks, 0, "a third full is above 2/8");
    scan();
    let s = cons.stats();
    assert!(s.yes > 0 && s.yes == s.callbacks, "3/8 takes a slab: {s:?}");
    assert_eq!(s.scans, 2 * kmem_move::RECLAIM_SCAN_RANGE as u64 + 1);
    verify(cons.client(), &table);
}
