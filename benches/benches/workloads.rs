//! The `workloads` suite: every `workload-*` binary on every workload of
//! `kmem_benches::workloads`, one process per run, so each allocator's peak
//! resident size is its own.
//!
//! Runs of the allocators are interleaved (all allocators once, then all
//! again) so that a burst of load on a shared machine does not hit one
//! allocator only. Per workload and allocator it records the best time of
//! the runs (metric `time`, ms) and the median peak resident size (metric
//! `peak RSS`, MiB). Every run must print the same checksum under every
//! allocator, or the suite fails.
//!
//! Not a criterion bench (`harness = false`): it reads criterion's command
//! line only for a filter, matched against `workloads/WORKLOAD/SUBJECT`.

use std::process::Command;

use kmem_benches::workloads::{Report, names};
use kmem_benches::{quick, record};

/// Each allocator's workload binary; `kmem` appears once
/// `benches/src/bin/workload-kmem.rs` exists.
const SUBJECTS: [(&str, Option<&str>); 4] = [
    ("system", Some(env!("CARGO_BIN_EXE_workload-system"))),
    ("mimalloc", Some(env!("CARGO_BIN_EXE_workload-mimalloc"))),
    ("jemalloc", Some(env!("CARGO_BIN_EXE_workload-jemalloc"))),
    ("kmem", option_env!("CARGO_BIN_EXE_workload-kmem")),
];

/// Criterion options that take a value; anything else not starting with `-`
/// is the filter.
const VALUED: [&str; 8] = [
    "--warm-up-time",
    "--measurement-time",
    "--sample-size",
    "--save-baseline",
    "--baseline",
    "--load-baseline",
    "--profile-time",
    "--output-format",
];

fn filter() -> Option<String> {
    let mut args = std::env::args().skip(1);
    let mut found = None;
    while let Some(a) = args.next() {
        if VALUED.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            found = Some(a);
        }
    }
    found
}

fn run_once(exe: &str, workload: &str, subject: &str, quick: bool) -> Report {
    let mut cmd = Command::new(exe);
    cmd.arg(workload);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!(
            "{workload} under {subject} failed with {}:\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    let report: Report = line
        .parse()
        .unwrap_or_else(|e| panic!("{workload} under {subject}: {e}"));
    assert!(
        report.workload == workload && report.subject == subject,
        "{exe} reported `{line}` for workload {workload}, subject {subject}"
    );
    report
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let quick = quick();
    let runs = if quick { 3 } else { 5 };
    let filter = filter();
    let subjects: Vec<(&str, &str)> = SUBJECTS
        .iter()
        .filter_map(|&(name, exe)| Some((name, exe?)))
        .collect();
    for workload in names() {
        let picked: Vec<(&str, &str)> = subjects
            .iter()
            .copied()
            .filter(|(s, _)| {
                filter
                    .as_deref()
                    .is_none_or(|f| format!("workloads/{workload}/{s}").contains(f))
            })
            .collect();
        if picked.is_empty() {
            continue;
        }
        let mut reports: Vec<Vec<Report>> = vec![Vec::new(); picked.len()];
        for _ in 0..runs {
            for (i, (subject, exe)) in picked.iter().enumerate() {
                reports[i].push(run_once(exe, workload, subject, quick));
            }
        }
        let expected = reports[0][0].checksum;
        for ((subject, _), rs) in picked.iter().zip(&reports) {
            if let Some(bad) = rs.iter().find(|r| r.checksum != expected) {
                panic!(
                    "{workload} under {subject} computed checksum {}, but {} computed {expected}",
                    bad.checksum, picked[0].0
                );
            }
            let best = rs.iter().map(|r| r.time_ms).fold(f64::INFINITY, f64::min);
            let rss = median(rs.iter().map(|r| r.peak_rss_bytes).collect()) as f64 / 1048576.0;
            println!(
                "workloads/{workload:<14} {subject:<9} {best:>9.1} ms  {rss:>8.1} MiB peak RSS"
            );
            record("workloads", workload, subject, "time", best, "ms");
            record("workloads", workload, subject, "peak RSS", rss, "MiB");
        }
    }
}
