//! The process-wide list of live arenas (the seed's `vmem_list` under
//! `vmem_list_lock`), for the walks across arenas: [`whatis_all`]
//! (`vmem_whatis`) and [`for_each_arena`] (`vmem_printall`, DDB
//! `show all vmem`).
//!
//! An arena may sit under a `GlobalAlloc`, so joining and leaving the list
//! must not allocate. The list is intrusive: each arena's core, at a fixed
//! address from build to drop, holds a [`Node`] with the links and a type
//! erased pointer to the arena behind its lock (a `Mutex<dyn Introspect>`:
//! arenas of every metadata allocator type share one list). One static
//! futex lock from `kmem_sys::sync`, which never allocates either, guards
//! every node's links. A [`Vmem`](crate::Vmem) joins when it is built
//! (`vmem_init`'s `LIST_INSERT_HEAD`) and leaves first thing in its drop,
//! before anything of its core is torn down (`vmem_destroy`).
//!
//! Lock order: the list lock, then an arena's lock. No arena takes the
//! list lock while it holds its own: an arena joins or leaves only as it
//! is built or dropped, with no arena lock held.

use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::{self, NonNull};

use kmem_sys::sync::{Mutex, MutexGuard};

use crate::error::ArenaName;
use crate::introspect::{self, Dump, Introspect, Summary, Whatis};

/// An arena's place on the list, inside its core.
pub(crate) struct Node {
    /// The arena's name, for walkers that only print it.
    name: ArenaName,
    /// Read and written only under the list lock.
    links: UnsafeCell<Links>,
}

struct Links {
    /// The nodes before and after this one; null at the ends.
    prev: *const Node,
    next: *const Node,
    /// The arena, while the node is on the list.
    arena: Option<NonNull<Mutex<dyn Introspect>>>,
}

// SAFETY: the links are touched only under the list lock, which orders
// every access to them across threads, and `arena` points at a
// `Mutex<dyn Introspect>`, which is `Sync` because `Introspect: Send`.
unsafe impl Sync for Node {}
// SAFETY: as for `Sync`: nothing in a node belongs to a thread.
unsafe impl Send for Node {}

impl Node {
    /// A node not on the list, for the arena called `name`.
    pub(crate) fn new(name: ArenaName) -> Self {
        Node {
            name,
            links: UnsafeCell::new(Links {
                prev: ptr::null(),
                next: ptr::null(),
                arena: None,
            }),
        }
    }
}

/// The list's head and length.
struct List {
    head: *const Node,
    len: usize,
}

// SAFETY: `head` is only followed under the lock that owns the `List`, and
// every node on the list is alive and `Sync` (see `register`).
unsafe impl Send for List {}

static LIST: Mutex<List> = Mutex::new(List {
    head: ptr::null(),
    len: 0,
});

/// Puts the arena behind `arena` on the list, at its head, through
/// `node`.
///
/// # Safety
///
/// `node` is not on the list, and `node` and `arena` stay where they are,
/// alive and never borrowed mutably, until [`unregister`] of `node` has
/// returned.
pub(crate) unsafe fn register(node: &Node, arena: &Mutex<dyn Introspect>) {
    let mut list = LIST.lock();
    let this: *const Node = node;
    // SAFETY: the list lock is held, so no other thread touches any node's
    // links. The old head is on the list, so alive (the caller's promise
    // to `register` for it), and is another node than `node`, which is
    // not on the list: the two `&mut` do not overlap.
    unsafe {
        let links = &mut *node.links.get();
        debug_assert!(links.arena.is_none(), "vmem: an arena registered twice");
        *links = Links {
            prev: ptr::null(),
            next: list.head,
            arena: Some(NonNull::from(arena)),
        };
        if let Some(old) = list.head.as_ref() {
            (*old.links.get()).prev = this;
        }
    }
    list.head = this;
    list.len += 1;
}

/// Takes `node` off the list if it is on it. Once this returns no walker
/// reaches its arena: walkers hold the list lock for as long as they use
/// an arena.
pub(crate) fn unregister(node: &Node) {
    let mut list = LIST.lock();
    // SAFETY: the list lock is held, so no other thread touches any node's
    // links; `node`'s neighbours are on the list, so alive, and are other
    // nodes than `node`, so the references do not overlap.
    unsafe {
        let links = &mut *node.links.get();
        if links.arena.take().is_none() {
            return;
        }
        match links.prev.as_ref() {
            None => list.head = links.next,
            Some(prev) => (*prev.links.get()).next = links.next,
        }
        if let Some(next) = links.next.as_ref() {
            (*next.links.get()).prev = links.prev;
        }
    }
    list.len -= 1;
}

/// Calls `f` on every arena on the locked `list`, most recently built
/// first.
fn walk(list: &MutexGuard<'_, List>, mut f: impl FnMut(ArenaRef<'_>)) {
    let mut at = list.head;
    // SAFETY: `list` is locked, and a node leaves the list only under that
    // lock, before its arena is torn down (the promise made to
    // `register`): every node reached from `head`, and the arena its
    // `arena` names, is alive with its links unchanged for as long as the
    // borrow of `list`. The references made here last no longer: `f`
    // takes an `ArenaRef` of any lifetime, so it cannot keep one.
    while let Some(node) = unsafe { at.as_ref() } {
        // SAFETY: as above; links are only written under the lock we hold.
        let links = unsafe { &*node.links.get() };
        if let Some(arena) = links.arena {
            f(ArenaRef {
                // SAFETY: as above.
                arena: unsafe { arena.as_ref() },
                name: &node.name,
            });
        }
        at = links.next;
    }
}

/// Calls `f` on every live arena, most recently built first: to print
/// every arena's [`summary`](ArenaRef::summary) (DDB `show all vmem`) or
/// [`dump`](ArenaRef::dump) (`vmem_printall`).
///
/// `f` runs with the arena list locked, so that no arena it is given can
/// be dropped meanwhile. It must not build or drop an arena, nor walk the
/// list again ([`whatis_all`], `for_each_arena`): those take the list
/// lock, and would wait for ever. (An arena not on the list, the
/// default, may be built and dropped.)
///
/// ```
/// use kmem_vmem::{Policy, Vmem};
///
/// let heap = Vmem::builder("doc heap").span(0x1000, 0x1000).quantum(16).listed(true).build()?;
/// heap.alloc(64, Policy::InstantFit)?;
/// let mut inuse = None;
/// kmem_vmem::for_each_arena(|arena| {
///     if arena.name() == "doc heap" {
///         inuse = Some(arena.summary().inuse);
///         print!("{}", arena.summary());
///     }
/// });
/// assert_eq!(inuse, Some(64));
/// # Ok::<(), kmem_vmem::VmemError>(())
/// ```
pub fn for_each_arena(f: impl FnMut(ArenaRef<'_>)) {
    walk(&LIST.lock(), f);
}

/// Where `addr` lies in every live arena that holds it (the seed's
/// `vmem_whatis`), most recently built first: a parent arena and the
/// child that imported the span both report it.
///
/// The vector is allocated from the global allocator with no lock held,
/// and filled under the list lock; do not call this from inside a global
/// allocator.
///
/// ```
/// use kmem_vmem::{Policy, Vmem};
/// use std::sync::Arc;
///
/// let va = Vmem::builder("doc va").span(0x4000_0000, 1 << 20).quantum(4096).listed(true);
/// let va = Arc::new(va.build()?);
/// let heap = Vmem::builder("doc child").quantum(4096).source(va.clone(), 0x1_0000);
/// let heap = heap.listed(true).build()?;
/// let p = heap.alloc(4096, Policy::InstantFit)?;
/// for w in kmem_vmem::whatis_all(p + 8) {
///     println!("{w}"); // e.g. "0x40000008 is 0x40000000+0x8 in vmem 'doc child' (allocated)"
/// }
/// let names: Vec<_> = kmem_vmem::whatis_all(p + 8).iter().map(|w| w.arena).collect();
/// assert!(names.iter().any(|n| n.as_str() == "doc va"));
/// assert!(names.iter().any(|n| n.as_str() == "doc child"));
/// # Ok::<(), kmem_vmem::VmemError>(())
/// ```
pub fn whatis_all(addr: usize) -> Vec<Whatis> {
    let mut found = Vec::new();
    loop {
        let list = LIST.lock();
        // At most one entry per arena: with room for all of them, no push
        // below allocates under the lock.
        if list.len <= found.capacity() {
            walk(&list, |arena| found.extend(arena.whatis(addr)));
            return found;
        }
        let len = list.len;
        drop(list);
        found.reserve(len);
    }
}

/// A live arena, as [`for_each_arena`] shows it: its walks run under the
/// arena's lock, as those of [`Vmem`](crate::Vmem) do.
#[derive(Clone, Copy)]
pub struct ArenaRef<'a> {
    arena: &'a Mutex<dyn Introspect>,
    name: &'a ArenaName,
}

impl ArenaRef<'_> {
    /// The arena's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// As [`Vmem::whatis`](crate::Vmem::whatis).
    pub fn whatis(&self, addr: usize) -> Option<Whatis> {
        self.arena.lock().whatis(addr)
    }

    /// As [`Vmem::summary`](crate::Vmem::summary).
    pub fn summary(&self) -> Summary {
        self.arena.lock().summary()
    }

    /// As [`Vmem::dump`](crate::Vmem::dump). It allocates from the global
    /// allocator while the walk holds the list lock, so that allocator
    /// must not build or drop listed arenas.
    pub fn dump(&self) -> Dump {
        introspect::dump(self.arena)
    }
}

impl fmt::Debug for ArenaRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaRef")
            .field("name", self.name)
            .finish_non_exhaustive()
    }
}
