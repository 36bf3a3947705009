//! Writing the report: `results.csv`, a markdown page of tables with ratios
//! against the best peer, and the summary printed at the end of a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::collect::{CSV_HEADER, Row};
use crate::plot::{self, Plot};

/// What the figures were measured on.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub toolchain: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let toolchain = Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown rustc".into());
        Machine {
            cpu,
            cores,
            toolchain,
        }
    }
}

/// Our crates' subjects start with `kmem`; everything else is a peer.
pub fn is_ours(subject: &str) -> bool {
    subject.starts_with("kmem")
}

/// The suites of `rows` in first-seen order, each once: criterion rows and
/// recorded rows of one suite need not be adjacent.
pub fn suites(rows: &[Row]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in rows {
        if !out.contains(&r.suite.as_str()) {
            out.push(&r.suite);
        }
    }
    out
}

/// Time, bytes and percentages are better low; rates (`…/s`) better high.
pub fn higher_is_better(row: &Row) -> bool {
    row.unit.ends_with("/s")
}

/// Each row's value divided by the best peer's value for the same suite,
/// benchmark and metric; `None` where no peer measured it.
pub fn ratios(rows: &[Row]) -> Vec<Option<f64>> {
    let mut best: BTreeMap<(&str, &str, &str), f64> = BTreeMap::new();
    for r in rows.iter().filter(|r| !is_ours(&r.subject)) {
        let k = (r.suite.as_str(), r.benchmark.as_str(), r.metric.as_str());
        let better = |old: f64| {
            if higher_is_better(r) {
                r.value > old
            } else {
                r.value < old
            }
        };
        match best.get(&k) {
            Some(&old) if !better(old) => {}
            _ => {
                best.insert(k, r.value);
            }
        }
    }
    rows.iter()
        .map(|r| {
            let b = *best.get(&(r.suite.as_str(), r.benchmark.as_str(), r.metric.as_str()))?;
            (b != 0.0).then(|| r.value / b)
        })
        .collect()
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{r:.2}x"))
}

/// How the report was asked for: `--quick`, and the `--filter` if any.
pub struct Invocation<'a> {
    pub quick: bool,
    pub filter: Option<&'a str>,
}

pub fn write(
    out: &Path,
    rows: &[Row],
    machine: &Machine,
    how: &Invocation<'_>,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for r in rows {
        csv.push_str(&r.to_csv());
        csv.push('\n');
    }
    let csv_path = out.join("results.csv");
    std::fs::write(&csv_path, csv)
        .map_err(|e| format!("cannot write {}: {e}", csv_path.display()))?;

    let plots = plot::write_all(out, rows)?;
    let md_path = out.join("README.md");
    std::fs::write(&md_path, markdown(rows, &plots, machine, how))
        .map_err(|e| format!("cannot write {}: {e}", md_path.display()))
}

fn markdown(rows: &[Row], plots: &[Plot], machine: &Machine, how: &Invocation<'_>) -> String {
    let ratios = ratios(rows);
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark results\n");
    let quick = if how.quick { " --quick" } else { "" };
    let _ = match how.filter {
        None => writeln!(
            md,
            "Written by `cargo xtask bench{quick}`; every figure in one run. \
             Raw rows: [results.csv](results.csv).\n"
        ),
        // Rows of the benchmarks not run were merged in from the last report.
        Some(f) => writeln!(
            md,
            "Written by `cargo xtask bench{quick} --filter {f}`: the figures of the benchmarks it \
             ran come from one run, the others' rows from the report before. \
             Raw rows: [results.csv](results.csv).\n"
        ),
    };
    let _ = writeln!(
        md,
        "Machine: {}, {} cores, {}.\n",
        machine.cpu, machine.cores, machine.toolchain
    );
    let _ = writeln!(
        md,
        "*vs best peer* is the figure divided by the best peer's figure for the same benchmark and metric \
         (peers are every subject not named `kmem…`). Times, bytes and percentages: lower is better, so \
         below 1.00x beats every peer. Rates (`…/s`): higher is better.\n"
    );
    if !plots.is_empty() {
        let _ = writeln!(md, "## Plots\n");
        for p in plots {
            let _ = writeln!(md, "- [{}]({})", p.title, p.file);
        }
        md.push('\n');
        for p in plots {
            let _ = writeln!(md, "![{}]({})\n", p.title, p.file);
        }
    }
    for suite in suites(rows) {
        let _ = writeln!(md, "## {suite}\n");
        if suite == WORKLOADS {
            md.push_str(&versus_table(rows, suite));
        }
        let _ = writeln!(
            md,
            "| benchmark | metric | subject | value | unit | vs best peer |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---|---:|");
        for (r, ratio) in rows.iter().zip(&ratios).filter(|(r, _)| r.suite == suite) {
            let subject = if is_ours(&r.subject) {
                format!("**{}**", r.subject)
            } else {
                r.subject.clone()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                r.benchmark,
                r.metric,
                subject,
                fmt_value(r.value),
                r.unit,
                fmt_ratio(*ratio)
            );
        }
        md.push('\n');
    }
    md
}

/// The suite of whole-program workloads, whose report also compares ours
/// with every peer one by one (see [`versus_table`]).
const WORKLOADS: &str = "workloads";

/// A markdown table with one line per benchmark and metric of `suite`: each
/// subject's value, then each of our subjects divided by each peer (e.g.
/// `kmem / mimalloc`), for a reader who picks between two allocators rather
/// than against the best of all of them.
pub fn versus_table(rows: &[Row], suite: &str) -> String {
    let in_suite: Vec<&Row> = rows.iter().filter(|r| r.suite == suite).collect();
    let mut subjects: Vec<&str> = Vec::new();
    let mut lines: Vec<(&str, &str, &str)> = Vec::new();
    let mut value: BTreeMap<(&str, &str, &str), f64> = BTreeMap::new();
    for r in &in_suite {
        if !subjects.contains(&r.subject.as_str()) {
            subjects.push(&r.subject);
        }
        let line = (r.benchmark.as_str(), r.metric.as_str(), r.unit.as_str());
        if !lines.contains(&line) {
            lines.push(line);
        }
        value.insert((&r.benchmark, &r.metric, &r.subject), r.value);
    }
    // Ours first, as the ratio columns read.
    subjects.sort_by_key(|s| !is_ours(s));
    let ours: Vec<&str> = subjects.iter().copied().filter(|s| is_ours(s)).collect();
    let peers: Vec<&str> = subjects.iter().copied().filter(|s| !is_ours(s)).collect();
    let pairs: Vec<(&str, &str)> = ours
        .iter()
        .flat_map(|o| peers.iter().map(move |p| (*o, *p)))
        .collect();

    let mut md = String::from("| benchmark | metric |");
    for s in &subjects {
        let _ = write!(md, " {s} |");
    }
    for (o, p) in &pairs {
        let _ = write!(md, " {o} / {p} |");
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---:|".repeat(subjects.len() + pairs.len()));
    md.push('\n');
    for (bench, metric, unit) in lines {
        let _ = write!(md, "| {bench} | {metric} ({unit}) |");
        for s in &subjects {
            let v = value.get(&(bench, metric, s));
            let _ = write!(md, " {} |", v.map_or_else(|| "—".into(), |v| fmt_value(*v)));
        }
        for (o, p) in &pairs {
            let ratio = match (
                value.get(&(bench, metric, o)),
                value.get(&(bench, metric, p)),
            ) {
                (Some(o), Some(p)) if *p != 0.0 => Some(o / p),
                _ => None,
            };
            let _ = write!(md, " {} |", fmt_ratio(ratio));
        }
        md.push('\n');
    }
    md.push('\n');
    md
}

/// Our figures with their ratios, as an aligned text table.
pub fn summary(rows: &[Row]) -> String {
    let ratios = ratios(rows);
    let ours: Vec<(&Row, Option<f64>)> = rows
        .iter()
        .zip(ratios)
        .filter(|(r, _)| is_ours(&r.subject))
        .collect();
    let bench_w = ours
        .iter()
        .map(|(r, _)| r.suite.len() + r.benchmark.len() + 3)
        .max()
        .unwrap_or(9)
        .max(9);
    if ours.is_empty() {
        return "No figure of ours in this run (subjects named `kmem…`): only peers were measured.\n"
            .into();
    }
    let mut s = format!(
        "{:<bench_w$}  {:<16}  {:>12}  {:<6}  {:>12}\n",
        "benchmark", "subject", "value", "unit", "vs best peer"
    );
    for (r, ratio) in ours {
        let name = format!("{} / {}", r.suite, r.benchmark);
        let _ = writeln!(
            s,
            "{:<bench_w$}  {:<16}  {:>12}  {:<6}  {:>12}",
            name,
            r.subject,
            fmt_value(r.value),
            r.unit,
            fmt_ratio(ratio)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bench: &str, subject: &str, value: f64, unit: &str) -> Row {
        Row {
            suite: "s".into(),
            benchmark: bench.into(),
            subject: subject.into(),
            metric: "m".into(),
            value,
            unit: unit.into(),
        }
    }

    #[test]
    fn ratios_use_the_best_peer_per_benchmark() {
        let rows = vec![
            row("a", "kmem-x", 5.0, "ns"),
            row("a", "system", 20.0, "ns"),
            row("a", "mimalloc", 10.0, "ns"),
            row("b", "kmem-x", 4.0, "ops/s"),
            row("b", "peer", 2.0, "ops/s"),
            row("b", "peer2", 8.0, "ops/s"),
            row("c", "kmem-x", 1.0, "ns"),
        ];
        let r = ratios(&rows);
        assert_eq!(r[0], Some(0.5));
        assert_eq!(r[1], Some(2.0));
        assert_eq!(r[3], Some(0.5));
        assert_eq!(r[6], None);
        let text = summary(&rows);
        assert!(text.contains("0.50x"), "{text}");
        assert!(
            !text.contains("mimalloc"),
            "summary lists only our rows: {text}"
        );
        let peers_only = summary(&rows[1..3]);
        assert!(peers_only.contains("only peers"), "{peers_only}");
    }

    #[test]
    fn versus_table_compares_ours_with_each_peer() {
        let mut rows = vec![
            row("larson", "kmem", 50.0, "ms"),
            row("larson", "system", 100.0, "ms"),
            row("larson", "mimalloc", 25.0, "ms"),
            row("xmalloc", "system", 8.0, "ms"),
        ];
        for r in &mut rows {
            r.suite = WORKLOADS.into();
        }
        let md = versus_table(&rows, WORKLOADS);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| benchmark | metric | kmem | system | mimalloc | kmem / system | kmem / mimalloc |"
        );
        assert_eq!(lines[1], "|---|---|---:|---:|---:|---:|---:|");
        assert_eq!(
            lines[2],
            "| larson | m (ms) | 50 | 100 | 25 | 0.50x | 2.00x |"
        );
        assert_eq!(lines[3], "| xmalloc | m (ms) | — | 8 | — | — | — |");
    }
}
