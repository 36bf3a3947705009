//! Whole-program workloads, modelled on the mimalloc-bench suite, that run
//! under whatever `#[global_allocator]` the calling binary sets.
//!
//! Peak resident size is a property of a process, so each allocator gets a
//! binary of its own under `benches/src/bin/`: `workload-system`,
//! `workload-mimalloc`, `workload-jemalloc` (and `workload-kmem` once the
//! `kmem` facade lands). Each is three lines: it sets the global allocator and
//! calls [`main`] with its subject name. `workload-NAME WORKLOAD [--quick]`
//! runs one workload and prints one [`Report`] line with its time, its peak
//! resident size (`VmHWM`) and a checksum. The `workloads` bench target runs
//! every binary on every workload, keeps the best time of a few runs, checks
//! that every allocator computed the same checksum, and records the figures
//! for `cargo xtask bench`.
//!
//! The workloads (see each module for what it models):
//!
//! | name | models | stresses |
//! |---|---|---|
//! | `larson` | mimalloc-bench `larson` | a server: threads replace random-size objects, then hand their objects to the next generation of threads |
//! | `cache-scratch` | `cache-scratch` (Hoard) | passive false sharing: does a thread reuse a block that shares a cache line with another thread's? |
//! | `xmalloc` | `xmalloc-test` | producer/consumer: every block is freed by a thread other than the one that allocated it |
//! | `mstress` | `mstress` (mimalloc `test-stress`) | churn over a large live set with occasional big blocks and blocks migrating between threads |
//! | `collections` | `alloc-test`, `espresso`-like | one thread building and dropping `Vec`, `String`, `HashMap` and `BTreeMap` |
//!
//! Every workload is deterministic in what it allocates (sizes come from
//! [`Rng`](crate::Rng) streams seeded per thread, never from timing), returns a
//! checksum of what it computed, and verifies the tag of every block it
//! frees, so an allocator that corrupts a block fails the run instead of
//! looking fast, and a workload cannot be optimised away.
//!
//! Adding `kmem::Kmem`: add `kmem.workspace = true` to `benches/Cargo.toml`
//! and the file `benches/src/bin/workload-kmem.rs`:
//!
//! ```ignore
//! //! The workloads under `kmem::Kmem`.
//! #[global_allocator]
//! static GLOBAL: kmem::Kmem = kmem::Kmem::new();
//!
//! fn main() -> std::process::ExitCode {
//!     kmem_benches::workloads::main("kmem")
//! }
//! ```
//!
//! The bench target finds it through `option_env!("CARGO_BIN_EXE_workload-kmem")`
//! and reports it as subject `kmem`; nothing else changes.

mod cache_scratch;
mod collections;
mod larson;
mod mstress;
mod object;
mod report;
mod xmalloc;

use std::process::ExitCode;
use std::time::Instant;

pub use report::Report;

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Unit tests: a few milliseconds.
    Tiny,
    /// `cargo xtask bench --quick`: a few tenths of a second per run.
    Quick,
    /// The full run: about a second per run.
    Full,
}

impl Scale {
    /// Picks the figure for this scale.
    fn pick<T>(self, tiny: T, quick: T, full: T) -> T {
        match self {
            Scale::Tiny => tiny,
            Scale::Quick => quick,
            Scale::Full => full,
        }
    }
}

/// The threads a multi-threaded workload runs: one per CPU, and at least two
/// so that blocks always cross threads.
fn threads() -> usize {
    kmem_sys::cpu_count().max(2)
}

/// A workload: its name on the command line and the function that runs it,
/// returning its checksum.
type Workload = (&'static str, fn(Scale) -> u64);

/// Every workload, in report order.
const WORKLOADS: [Workload; 5] = [
    ("larson", larson::run),
    ("cache-scratch", cache_scratch::run),
    ("xmalloc", xmalloc::run),
    ("mstress", mstress::run),
    ("collections", collections::run),
];

/// The names of every workload, in report order.
pub fn names() -> impl Iterator<Item = &'static str> {
    WORKLOADS.iter().map(|(n, _)| *n)
}

/// Runs workload `name` at `scale` and returns its checksum, or `None` if
/// there is no such workload.
pub fn run(name: &str, scale: Scale) -> Option<u64> {
    let (_, f) = WORKLOADS.iter().find(|(n, _)| *n == name)?;
    Some(f(scale))
}

/// The `main` of a `workload-SUBJECT` binary: `workload-SUBJECT WORKLOAD
/// [--quick | --tiny]` runs WORKLOAD under the binary's global allocator and
/// prints its [`Report`] (`--tiny` is the unit-test scale, for the tests that
/// run every binary); `workload-SUBJECT --list` prints the workload names.
pub fn main(subject: &str) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let names_given: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if flag("--list") {
        names().for_each(|n| println!("{n}"));
        return ExitCode::SUCCESS;
    }
    let [name] = names_given.as_slice() else {
        eprintln!(
            "usage: workload-{subject} WORKLOAD [--quick | --tiny] | --list\nworkloads: {}",
            names().collect::<Vec<_>>().join(", ")
        );
        return ExitCode::FAILURE;
    };
    let scale = if flag("--tiny") {
        Scale::Tiny
    } else if flag("--quick") {
        Scale::Quick
    } else {
        Scale::Full
    };
    let start = Instant::now();
    let Some(checksum) = run(name, scale) else {
        eprintln!(
            "workload-{subject}: no workload `{name}`; workloads: {}",
            names().collect::<Vec<_>>().join(", ")
        );
        return ExitCode::FAILURE;
    };
    let elapsed = start.elapsed();
    let Some(peak) = kmem_sys::mem::peak_resident_bytes() else {
        eprintln!("workload-{subject}: cannot read the peak resident size (VmHWM) from /proc");
        return ExitCode::FAILURE;
    };
    let report = Report {
        workload: name.to_string(),
        subject: subject.to_string(),
        time_ms: elapsed.as_secs_f64() * 1e3,
        peak_rss_bytes: peak as u64,
        checksum,
    };
    println!("{report}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_and_is_deterministic() {
        for name in names() {
            let a = run(name, Scale::Tiny).unwrap();
            let b = run(name, Scale::Tiny).unwrap();
            assert_eq!(a, b, "{name} computed different checksums");
            assert_ne!(a, 0, "{name} computed nothing");
        }
        assert_eq!(run("no-such-workload", Scale::Tiny), None);
    }
}
