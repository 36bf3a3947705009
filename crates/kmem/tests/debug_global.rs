//! `Kmem` as the global allocator under `KMEM_DEBUG`: each scenario runs
//! in a child process (this test binary run again with the variable set),
//! so the allocator reads the variable at its first use, and its report
//! (or fault) is checked from the parent.

use std::hint::black_box;
use std::process::{Command, Output};

use kmem::debug::{self, DebugFlags, ErrorClass};

mod common;

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem::new();

const SCENARIO: &str = "KMEM_DEBUG_TEST_SCENARIO";

/// Runs `scenario` in a child with `KMEM_DEBUG=kmem_debug`.
fn child(scenario: &str, kmem_debug: &str) -> Output {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe)
        .args(["--exact", "run_scenario", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env("KMEM_DEBUG", kmem_debug)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Checks that the child failed before its scenario's end, killed by
/// `signal` (where signals exist).
fn assert_killed_midway(o: &Output, signal: i32) {
    assert!(!o.status.success(), "{}", stderr(o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("scenario ran to the end"));
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(signal), "{}", stderr(o));
    }
    #[cfg(not(unix))]
    let _ = signal;
}

/// The child's side: does nothing unless the parent set the scenario.
#[test]
fn run_scenario() {
    let Ok(s) = std::env::var(SCENARIO) else {
        return;
    };
    match s.as_str() {
        "use_after_free" => {
            let b = Box::new([7u8; 100]);
            let p = Box::into_raw(b).cast::<u64>();
            // SAFETY: the planted bug: freed, then written.
            unsafe {
                drop(Box::from_raw(p.cast::<[u8; 100]>()));
                p.add(2).write_volatile(0x2a);
            }
            // Reuse the class until the allocator notices.
            let held: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([0; 100])).collect();
            black_box(held);
        }
        "overrun" => {
            let mut v: Vec<u8> = Vec::with_capacity(100);
            // SAFETY: the planted bug: one byte past the 100 allocated.
            unsafe { v.as_mut_ptr().add(100).write_volatile(1) };
            drop(black_box(v));
        }
        "firewall_overrun" => {
            let mut v: Vec<u8> = Vec::with_capacity(8000);
            // SAFETY: the planted bug: one byte past the end, on the guard page.
            unsafe { v.as_mut_ptr().add(8000).write_volatile(1) };
            drop(black_box(v));
        }
        "kmem_alloc_checks" => {
            assert_eq!(debug::env_options().flags, DebugFlags::DEFAULT);
            let p = kmem::kmem_alloc(100).unwrap();
            // SAFETY: freed with a size of the same class but not its own.
            assert!(unsafe { kmem::kmem_free(p, 90) }.is_err());
            // SAFETY: the right size now.
            unsafe { kmem::kmem_free(p, 100) }.unwrap();
            let rs = debug::reports();
            assert_eq!(rs.len(), 1, "{rs:#?}");
            assert_eq!(rs[0].class, ErrorClass::WrongSize);
            assert_eq!(rs[0].sizes, Some((90, 100)));
            assert!(
                rs[0]
                    .to_string()
                    .contains("free size (90) != alloc size (100)")
            );
            // Realloc within a class keeps the size check right.
            let mut v: Vec<u64> = Vec::with_capacity(10);
            v.extend(0..12);
            drop(v);
            assert!(debug::verify().is_empty(), "{:#?}", debug::verify());
            assert_eq!(debug::reports().len(), 1);
            // A debugged class has no magazines: its row counts the keg's
            // allocations (two above, at least).
            let rows = kmem::stats::caches();
            let row = rows.iter().find(|r| r.name == "kmem_alloc_112").unwrap();
            assert!(row.allocs >= 2 && row.magazine_hits == 0, "{row:?}");
            println!("kmem_alloc checks passed");
        }
        "wrong_layout" => {
            let p = Box::into_raw(Box::new([7u8; 100])).cast::<u8>();
            let other_class = std::alloc::Layout::from_size_align(2000, 8).unwrap();
            // SAFETY: the planted bug: freed with the layout of another class.
            unsafe { std::alloc::dealloc(black_box(p), other_class) };
        }
        other => panic!("unknown scenario {other}"),
    }
    println!("scenario ran to the end");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs this test binary again as a child process, which Miri cannot"
)]
fn default_finds_a_planted_use_after_free() {
    let o = child("use_after_free", "default");
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    common::assert_says(
        &err,
        &[
            "kmem: buffer modified after being freed",
            "(0xdeadbeefdeadbeef replaced by 0x2a)",
            "cache: kmem_alloc_112",
            "previous transactions on buffer",
        ],
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs this test binary again as a child process, which Miri cannot"
)]
fn default_finds_a_planted_overrun() {
    let o = child("overrun", "default");
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    common::assert_says(
        &err,
        &[
            "kmem: redzone violation: write past end of buffer",
            "redzone damaged at offset 0x64 (0xbb replaced by 0x1)",
        ],
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs this test binary again as a child process, which Miri cannot"
)]
fn firewall_faults_at_once() {
    let o = child("firewall_overrun", "firewall=4k");
    assert_killed_midway(&o, libc::SIGSEGV);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs this test binary again as a child process, which Miri cannot"
)]
fn kmem_alloc_size_check_and_noabort() {
    let o = child("kmem_alloc_checks", "default,noabort");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("kmem_alloc checks passed"), "{out}");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs this test binary again as a child process, which Miri cannot"
)]
fn a_wrong_layout_aborts_with_a_message_even_without_debugging() {
    let o = child("wrong_layout", "");
    assert_killed_midway(&o, libc::SIGABRT);
    common::assert_says(
        &stderr(&o),
        &[
            "kmem: layout does not match the allocation: dealloc(0x",
            ", size 2000, align 8)",
        ],
    );
}
