//! OS plumbing shared by the kmem-rs allocators, and nothing else: no
//! allocation policy lives here.
//!
//! # Theory
//!
//! The seeds are kernel code and take four things from the kernel that a user
//! program has to ask the OS for. This crate is where each is asked for, once:
//!
//! * **Which CPU am I on?** The illumos and UMA fast paths index per-CPU state
//!   with the current CPU (`CPU->cpu_cache_offset`, `curcpu`). [`current_cpu`]
//!   answers with one load of the `cpu_id` the kernel keeps in the thread's
//!   restartable-sequences area (Linux, glibc ≥ 2.35, x86_64/aarch64; found
//!   through glibc's `__rseq_offset`, looked up once with `dlsym`), else with
//!   `sched_getcpu`, else with a stable per-thread slot ([`thread_slot`])
//!   where there is no such call. The answer is a hint — a
//!   thread can migrate right after — so state indexed by it must still be
//!   locked or owned; [`PerCpu`] places the slots and leaves that to `T`.
//! * **How many CPUs, how big is a page?** [`cpu_count`] and [`page_size`],
//!   read once and cached.
//! * **No false sharing.** [`CachePadded`] pads a value to its own cache line
//!   (a pair of lines where the prefetcher fetches pairs), as the seeds pad
//!   `kmem_cpu_cache_t` and UMA's per-CPU caches.
//! * **Address space apart from memory.** FreeBSD `vm_kern.c` hands out kernel
//!   virtual addresses (`kva_alloc`) separately from the pages behind them
//!   (`kmem_back`/`kmem_unback`). [`Reservation`] is that split in user space:
//!   `mmap(PROT_NONE)` reserves, [`Reservation::commit`] makes a range usable,
//!   [`Reservation::decommit`] gives its pages back to the OS so the resident
//!   size really drops.
//!
//! Allocators that want whole pages without caring where they come from take a
//! [`PageSource`]; [`OsPages`] is the default that maps them straight from the
//! OS, and the `kmem` facade supplies one backed by its page layer.
//!
//! * **Locks that never allocate.** An allocator that may sit under
//!   `#[global_allocator]` cannot use `parking_lot` (it allocates its parking
//!   table through the global allocator); [`sync`] has a futex `Mutex` and
//!   `Condvar` with the same API that keep their state in one word.
//!
//! # Locking
//!
//! None inside this crate. Everything here is either immutable after first
//! use (cached figures), a system call, or an atomic counter.
//!
//! # Allocation
//!
//! Nothing here allocates through the global allocator except [`PerCpu`]'s
//! storage, which comes from the `allocator_api2::alloc::Allocator` it is given,
//! and the `/proc` readers in [`mem`], which are for tests and reports.
//!
//! # Example
//!
//! ```
//! use kmem_sys::{cpu_count, current_cpu, page_size, Reservation};
//!
//! assert!(current_cpu() < cpu_count());
//! let r = Reservation::new(1 << 20)?;          // 1 MiB of address space, no memory
//! r.commit(0, page_size())?;                   // one usable, zeroed page
//! # Ok::<(), kmem_sys::SysError>(())
//! ```

mod cpu;
mod error;
pub mod mem;
mod name;
mod page;
mod percpu;
mod reserve;
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri)
))]
mod rseq;
mod source;
pub mod sync;

pub use cpu::{cpu_count, current_cpu, thread_slot};
pub use error::SysError;
pub use name::Name;
pub use page::{HUGE_PAGE, advise_huge_pages, is_page_aligned, page_size, round_to_pages};
pub use percpu::{CACHE_PAD, CachePadded, PerCpu};
pub use reserve::Reservation;
pub use source::{OsPages, PageSource};
