//! Every `workload-*` binary runs every workload (at the unit-test scale),
//! prints a report line the `workloads` bench can parse, and computes the
//! same checksum as every other allocator.

use std::process::Command;

use kmem_benches::workloads::{Report, names};

/// As in the `workloads` bench: `kmem` joins once its binary exists.
const BINS: [(&str, Option<&str>); 4] = [
    ("system", Some(env!("CARGO_BIN_EXE_workload-system"))),
    ("mimalloc", Some(env!("CARGO_BIN_EXE_workload-mimalloc"))),
    ("jemalloc", Some(env!("CARGO_BIN_EXE_workload-jemalloc"))),
    ("kmem", option_env!("CARGO_BIN_EXE_workload-kmem")),
];

fn bins() -> impl Iterator<Item = (&'static str, &'static str)> {
    BINS.iter()
        .filter_map(|&(subject, exe)| Some((subject, exe?)))
}

fn run(exe: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_binary_reports_every_workload_with_one_checksum() {
    for workload in names() {
        let mut checksums = Vec::new();
        for (subject, exe) in bins() {
            let (ok, stdout, stderr) = run(exe, &[workload, "--tiny"]);
            assert!(ok, "{workload} under {subject} failed: {stderr}");
            let report: Report = stdout.trim().parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(report.workload, workload);
            assert_eq!(report.subject, subject);
            assert!(report.peak_rss_bytes > 0, "{report}");
            checksums.push((subject, report.checksum));
        }
        assert!(
            checksums.iter().all(|c| c.1 == checksums[0].1),
            "{workload}: checksums differ between allocators: {checksums:?}"
        );
    }
}

#[test]
fn bad_command_lines_fail_with_usage() {
    let exe = bins().next().expect("the system binary always exists").1;
    let (ok, _, stderr) = run(exe, &["no-such-workload", "--tiny"]);
    assert!(!ok);
    assert!(
        stderr.contains("no workload `no-such-workload`"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(exe, &[]);
    assert!(!ok);
    assert!(stderr.contains("usage: workload-system"), "{stderr}");
    let (ok, stdout, _) = run(exe, &["--list"]);
    assert!(ok);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        names().collect::<Vec<_>>()
    );
}
