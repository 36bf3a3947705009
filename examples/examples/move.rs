//! The illumos slab consolidator: a hash table whose nodes move.
//!
//! Seed: `illumos-kmem.c.txt`, theory statement section 2 ("Making Objects
//! Movable") and `kmem_cache_set_move`, `kmem_move_buffer`,
//! `kmem_cache_defrag`. A table of 100 000 nodes loses 90% of them at
//! random: most slabs keep a few live nodes and all their pages. The
//! table gives its node cache a move callback, and a defragment call
//! (while a reader thread keeps looking keys up) moves the survivors into
//! full slabs and gives the rest back.
//!
//! How the callback stays correct (the three rules of the `kmem-move` docs):
//! 1. *recognise a live node*: under the table lock, read the candidate's
//!    tag and key as plain integers (any bit pattern is valid), then look
//!    for the node's address in its bucket's chain; only a linked node is
//!    live, anything else is answered `DontKnow`;
//! 2. *the lock*: the table lock guards every link and every node's
//!    contents, and readers take it too, so holding it makes the move
//!    atomic for them (a program whose readers hold nodes without the lock
//!    would try-lock a per-node lock and answer `Later` when busy);
//! 3. *references*: the only reference to a node is its predecessor's link
//!    (or the bucket head); the callback re-points it to the new node,
//!    swaps the contents and leaves the old buffer with the freshly
//!    constructed state (tag `FREE`), which the cache then frees.
//!
//! Run: `cargo run --release -p kmem-examples --example move`.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kmem::{Move, ObjectCache};

const LIVE: u64 = 0x4c49_5645_4e4f_4445; // "LIVENODE"
const FREE: u64 = 0;
const BUCKETS: usize = 1 << 14;

/// A chained hash-table node.
struct Node {
    tag: u64,
    key: u64,
    value: [u64; 4],
    next: *mut Node,
}

// SAFETY: a node is reached only through the table, under its lock.
unsafe impl Send for Node {}

/// Bucket heads; every link and every node is guarded by the table's lock.
struct Buckets(Vec<*mut Node>);

// SAFETY: as for `Node`.
unsafe impl Send for Buckets {}

fn bucket(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 50) as usize % BUCKETS
}

fn value_of(key: u64) -> [u64; 4] {
    [key, key ^ 1, key.rotate_left(7), !key]
}

/// Finds the link (bucket head or a node's `next`) that points to `target`.
///
/// # Safety
/// The table lock is held; every linked node is live.
unsafe fn link_to(b: &mut Buckets, key: u64, target: *mut Node) -> Option<*mut *mut Node> {
    let mut link: *mut *mut Node = &mut b.0[bucket(key)];
    // SAFETY: links of linked, live nodes, under the lock.
    unsafe {
        while !(*link).is_null() {
            if *link == target {
                return Some(link);
            }
            link = &mut (**link).next;
        }
    }
    None
}

/// Unlinks the node holding `key` and returns it in its constructed state
/// (tag `FREE`, no link; the value is left for the caller to read).
///
/// # Safety
/// The table lock is held and `key` is in the table.
unsafe fn unlink(b: &mut Buckets, key: u64) -> NonNull<Node> {
    let mut link: *mut *mut Node = &mut b.0[bucket(key)];
    // SAFETY: links of linked, live nodes, under the lock; the key is there,
    // so the walk ends on its node before a null link.
    unsafe {
        while (**link).key != key {
            link = &mut (**link).next;
        }
        let node = *link;
        *link = (*node).next;
        (*node).tag = FREE;
        (*node).next = ptr::null_mut();
        NonNull::new_unchecked(node)
    }
}

/// The move callback (see the module docs).
fn move_node(table: &Mutex<Buckets>, old: NonNull<Node>, new: &mut Node) -> Move {
    let mut b = table.lock().expect("table");
    let o = old.as_ptr();
    // SAFETY: the slab under `old` stays mapped during the callback; the
    // fields are read as integers, whatever the buffer holds now.
    let (tag, key) = unsafe {
        (
            ptr::addr_of!((*o).tag).read_volatile(),
            ptr::addr_of!((*o).key).read_volatile(),
        )
    };
    if tag != LIVE {
        return Move::DontKnow;
    }
    // SAFETY: the lock is held.
    let Some(link) = (unsafe { link_to(&mut b, key, o) }) else {
        return Move::DontKnow; // a stale tag: not linked, so not ours
    };
    // SAFETY: `old` is linked, so it is a live node, and the lock we hold
    // keeps everyone else away from it; `link` points at it.
    unsafe {
        ptr::swap(o, new);
        *link = new;
    }
    Move::Yes
}

fn main() {
    let nodes = Arc::new(ObjectCache::new("hash nodes", || Node {
        tag: FREE,
        key: 0,
        value: [0; 4],
        next: ptr::null_mut(),
    }));
    let table = Arc::new(Mutex::new(Buckets(vec![ptr::null_mut(); BUCKETS])));
    // Before the first allocation: kmem_cache_set_move refuses a cache
    // whose objects were allocated not knowing they may move.
    let t = table.clone();
    nodes
        .set_move(move |old, new| move_node(&t, old, new))
        .expect("a fresh cache takes a move callback");

    let n = 100_000u64;
    {
        let mut b = table.lock().expect("table");
        for key in 0..n {
            let mut node = nodes.alloc();
            node.tag = LIVE;
            node.key = key;
            node.value = value_of(key);
            let h = bucket(key);
            node.next = b.0[h];
            b.0[h] = node.into_raw().as_ptr();
        }
    }
    // Remove 90% at random.
    let mut kept = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for key in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(10) {
            kept.push(key);
            continue;
        }
        let mut b = table.lock().expect("table");
        // SAFETY: the lock is held; every key below `n` is in the table.
        let node = unsafe { unlink(&mut b, key) };
        // SAFETY: unlinked, back in its constructed state, and ours alone.
        unsafe { nodes.free_raw(node) }.expect("a node of this cache");
    }
    let before = nodes.stats();
    println!(
        "{} nodes of {} B live, {} B of slabs ({:.1}x the live bytes), {:.0}% waste",
        kept.len(),
        before.buf_size,
        before.mem_in_use,
        before.mem_in_use as f64 / (kept.len() * before.buf_size) as f64,
        before.waste_percent()
    );

    // A reader keeps looking keys up while nodes move under it.
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let reader = {
        let (table, kept, stop, lookups) =
            (table.clone(), kept.clone(), stop.clone(), lookups.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = kept[i % kept.len()];
                i += 1;
                let b = table.lock().expect("table");
                let mut p = b.0[bucket(key)];
                // SAFETY: the lock is held; linked nodes are live.
                unsafe {
                    while (*p).key != key {
                        p = (*p).next;
                    }
                    assert_eq!((*p).value, value_of(key), "key {key} intact");
                }
                lookups.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let t0 = Instant::now();
    let mut passes = 0;
    loop {
        let d = nodes
            .cache()
            .defragment()
            .expect("the cache has a callback");
        passes += 1;
        println!(
            "  defragment pass {passes}: {} moves on this thread, partial slabs {} -> {}",
            d.moves, d.partial_before, d.partial_after
        );
        if d.partial_after >= d.partial_before {
            break;
        }
    }
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw every key intact");

    let after = nodes.stats();
    let m = after.moves;
    println!(
        "after {took:.1?}: {} B of slabs ({:.2}x the live bytes), {:.0}% waste; \
         {} lookups ran meanwhile",
        after.mem_in_use,
        after.mem_in_use as f64 / (kept.len() * after.buf_size) as f64,
        after.waste_percent(),
        lookups.load(Ordering::Relaxed)
    );
    println!(
        "moves: {} callbacks, {} yes, {} no, {} later, {} dont-need, {} dont-know \
         ({} found in a magazine), {} slabs freed",
        m.callbacks,
        m.yes,
        m.no,
        m.later,
        m.dont_need,
        m.dont_know,
        m.hunt_found,
        m.slabs_reclaimed
    );

    // Every key still maps to its value; then empty the table.
    let mut b = table.lock().expect("table");
    for &key in &kept {
        // SAFETY: the lock is held; every kept key is in the table.
        let node = unsafe { unlink(&mut b, key) };
        // SAFETY: unlinked, so no one else reaches the node.
        let value = unsafe { node.as_ref().value };
        assert_eq!(value, value_of(key));
        // SAFETY: unlinked, back in its constructed state, and ours alone.
        unsafe { nodes.free_raw(node) }.expect("a node of this cache");
    }
    assert!(b.0.iter().all(|p| p.is_null()));
    println!(
        "all {} keys found with their values, table emptied",
        kept.len()
    );
    print!("{}", kmem::stats::Table(&[nodes.stats()]));
}
