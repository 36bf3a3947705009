//! SVG plots of a report, drawn with plotters' SVG backend:
//!
//! - `ratio-SUITE.svg`, one per suite: every figure of ours divided by the
//!   best peer's, one horizontal bar per benchmark/subject (and metric, where
//!   a suite has several), on a log axis with a line at 1.0x so that "twice as
//!   fast" and "twice as slow" are bars of the same length.
//! - `vmem-curve.svg`: suite `vmem`, benchmarks `random N=<N>`: time per
//!   allocate/free pair against the number of live segments N, one line per
//!   subject, both axes log.
//! - `slab-waste.svg`: suite `slab waste`, benchmarks `size=<N>`, metric
//!   `waste` in `%`: waste against object size, one line per subject.
//!
//! A plot whose rows are absent is not drawn; every SVG of a previous run is
//! removed first so that no stale plot outlives its data.

mod draw;

use std::collections::BTreeMap;
use std::path::Path;

use crate::collect::Row;
use crate::report::{higher_is_better, is_ours, ratios, suites};
use draw::{Axes, draw_bars, draw_curve};

/// One SVG written, for the report to link.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// File name inside the report directory, e.g. `ratio-sys.svg`.
    pub file: String,
    /// What it shows, for the link text.
    pub title: String,
}

/// One bar of a ratio chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub ratio: f64,
    /// Whether the ratio beats the best peer (below 1 for times, bytes and
    /// percentages; above 1 for rates).
    pub better: bool,
}

/// One line of a curve: (x, y) points sorted by x.
pub type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// Draws every plot the rows have data for into `out` and returns them in
/// the order the report lists them.
pub fn write_all(out: &Path, rows: &[Row]) -> Result<Vec<Plot>, String> {
    remove_old_svgs(out)?;
    let mut plots = Vec::new();
    for suite in suites(rows) {
        let bars = ratio_bars(rows, suite);
        if bars.is_empty() {
            continue;
        }
        let plot = Plot {
            file: format!("ratio-{}.svg", slug(suite)),
            title: format!("{suite}: ours vs the best peer"),
        };
        draw_bars(&out.join(&plot.file), &plot.title, &bars)?;
        plots.push(plot);
    }
    let vmem = series(rows, "vmem", "random N=", |r| r.unit == "ns");
    if !vmem.is_empty() {
        let plot = Plot {
            file: "vmem-curve.svg".into(),
            title: "vmem: time per allocate/free pair against live segments".into(),
        };
        let axes = Axes {
            x: "live segments N",
            y: "ns per pair",
            x_log: true,
            y_log: true,
        };
        draw_curve(&out.join(&plot.file), &plot.title, &axes, &vmem)?;
        plots.push(plot);
    }
    let waste = series(rows, "slab waste", "size=", |r| {
        r.metric == "waste" && r.unit == "%"
    });
    if !waste.is_empty() {
        let plot = Plot {
            file: "slab-waste.svg".into(),
            title: "slab: memory wasted against object size".into(),
        };
        let axes = Axes {
            x: "object size (bytes)",
            y: "waste (%)",
            x_log: true,
            y_log: false,
        };
        draw_curve(&out.join(&plot.file), &plot.title, &axes, &waste)?;
        plots.push(plot);
    }
    Ok(plots)
}

fn remove_old_svgs(out: &Path) -> Result<(), String> {
    let entries =
        std::fs::read_dir(out).map_err(|e| format!("cannot list {}: {e}", out.display()))?;
    for p in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if p.extension().is_some_and(|x| x == "svg") {
            std::fs::remove_file(&p)
                .map_err(|e| format!("cannot remove stale {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// A file-name-safe form of a suite name: `slab waste` → `slab-waste`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The bars of `suite`'s ratio chart: each of our rows that has a peer to
/// compare with, in report order.
pub fn ratio_bars(rows: &[Row], suite: &str) -> Vec<Bar> {
    let ratios = ratios(rows);
    let in_suite = |r: &&Row| r.suite == suite;
    let mut metrics: Vec<&str> = rows
        .iter()
        .filter(in_suite)
        .map(|r| r.metric.as_str())
        .collect();
    metrics.sort_unstable();
    metrics.dedup();
    rows.iter()
        .zip(ratios)
        .filter(|(r, _)| r.suite == suite && is_ours(&r.subject))
        .filter_map(|(r, ratio)| {
            let ratio = ratio.filter(|x| x.is_finite() && *x > 0.0)?;
            let mut label = format!("{} / {}", r.benchmark, r.subject);
            if metrics.len() > 1 {
                label = format!("{label} ({})", r.metric);
            }
            let better = if higher_is_better(r) {
                ratio > 1.0
            } else {
                ratio < 1.0
            };
            Some(Bar {
                label,
                ratio,
                better,
            })
        })
        .collect()
}

/// The N in a benchmark named `<prefix><N>`, e.g. `random N=1000` → 1000.
pub fn parameter(benchmark: &str, prefix: &str) -> Option<f64> {
    let n: u64 = benchmark.strip_prefix(prefix)?.trim().parse().ok()?;
    Some(n as f64)
}

/// The curves of `suite` over benchmarks `<prefix><N>`, keyed by subject
/// (and metric, where the picked rows have several), keeping rows `keep`
/// accepts and whose value is positive.
pub fn series(rows: &[Row], suite: &str, prefix: &str, keep: impl Fn(&Row) -> bool) -> Series {
    let picked: Vec<(&Row, f64)> = rows
        .iter()
        .filter(|r| r.suite == suite && keep(r) && r.value > 0.0 && r.value.is_finite())
        .filter_map(|r| Some((r, parameter(&r.benchmark, prefix)?)))
        .collect();
    let mut metrics: Vec<&str> = picked.iter().map(|(r, _)| r.metric.as_str()).collect();
    metrics.sort_unstable();
    metrics.dedup();
    let mut out = Series::new();
    for (r, x) in picked {
        let name = if metrics.len() > 1 {
            format!("{} ({})", r.subject, r.metric)
        } else {
            r.subject.clone()
        };
        out.entry(name).or_default().push((x, r.value));
    }
    for points in out.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::draw::{ratio_tick, tick};
    use super::*;

    fn row(suite: &str, bench: &str, subject: &str, metric: &str, value: f64, unit: &str) -> Row {
        Row {
            suite: suite.into(),
            benchmark: bench.into(),
            subject: subject.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
        }
    }

    #[test]
    fn parameters_are_read_from_benchmark_names() {
        assert_eq!(parameter("random N=1000", "random N="), Some(1000.0));
        assert_eq!(parameter("size=64", "size="), Some(64.0));
        assert_eq!(parameter("random N=", "random N="), None);
        assert_eq!(parameter("random N=1e3", "random N="), None);
        assert_eq!(parameter("sequential N=10", "random N="), None);
        assert_eq!(slug("slab waste"), "slab-waste");
        assert_eq!(slug("vmem / xalloc"), "vmem-xalloc");
        assert_eq!(ratio_tick(2.0), "4x");
        assert_eq!(ratio_tick(0.0), "1x");
        assert_eq!(ratio_tick(-3.0), "1/8x");
        assert_eq!(tick(12.5), "12");
        assert_eq!(tick(2.5), "2.5");
    }

    #[test]
    fn series_group_by_subject_and_sort_by_parameter() {
        let rows = vec![
            row("vmem", "random N=1000", "kmem-vmem", "time", 40.0, "ns"),
            row("vmem", "random N=10", "kmem-vmem", "time", 20.0, "ns"),
            row("vmem", "random N=10", "vmem", "time", 30.0, "ns"),
            row("vmem", "pair", "kmem-vmem", "time", 5.0, "ns"),
            row("other", "random N=10", "kmem-vmem", "time", 1.0, "ns"),
            row("vmem", "random N=10", "kmem-vmem", "peak", 9.0, "MiB"),
        ];
        let s = series(&rows, "vmem", "random N=", |r| r.unit == "ns");
        assert_eq!(s.len(), 2);
        assert_eq!(s["kmem-vmem"], vec![(10.0, 20.0), (1000.0, 40.0)]);
        assert_eq!(s["vmem"], vec![(10.0, 30.0)]);
        assert!(series(&rows, "slab waste", "size=", |_| true).is_empty());
    }

    #[test]
    fn ratio_bars_cover_our_rows_with_a_peer() {
        let rows = vec![
            row("w", "larson", "kmem", "time", 50.0, "ms"),
            row("w", "larson", "system", "time", 100.0, "ms"),
            row("w", "larson", "kmem", "peak RSS", 30.0, "MiB"),
            row("w", "larson", "system", "peak RSS", 20.0, "MiB"),
            row("w", "lonely", "kmem", "time", 1.0, "ms"),
            row("r", "rate", "kmem-x", "ops", 3.0, "ops/s"),
            row("r", "rate", "peer", "ops", 2.0, "ops/s"),
        ];
        let bars = ratio_bars(&rows, "w");
        assert_eq!(bars.len(), 2, "{bars:?}");
        assert_eq!(bars[0].label, "larson / kmem (time)");
        assert_eq!((bars[0].ratio, bars[0].better), (0.5, true));
        assert_eq!((bars[1].ratio, bars[1].better), (1.5, false));
        let rate = ratio_bars(&rows, "r");
        assert_eq!(rate[0].label, "rate / kmem-x");
        assert!(rate[0].better);
    }

    #[test]
    fn plots_are_written_only_where_there_is_data() {
        let dir = std::env::temp_dir().join(format!("xtask-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stale.svg"), "old").unwrap();
        let rows = vec![
            row("vmem", "random N=10", "kmem-vmem", "time", 20.0, "ns"),
            row("vmem", "random N=1000", "kmem-vmem", "time", 40.0, "ns"),
            row("sys", "page", "kmem-sys", "time", 5.0, "ns"),
            row("sys", "page", "system", "time", 6.0, "ns"),
            // The same suite again after another one: still one plot.
            row("vmem", "random N=10", "vmem", "time", 30.0, "ns"),
            row("vmem", "random N=1000", "vmem", "time", 90.0, "ns"),
        ];
        let plots = write_all(&dir, &rows).unwrap();
        let files: Vec<&str> = plots.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["ratio-vmem.svg", "ratio-sys.svg", "vmem-curve.svg"]);
        assert!(!dir.join("stale.svg").exists());
        let svg = std::fs::read_to_string(dir.join("ratio-vmem.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("random N=10 / kmem-vmem"));
        let curve = std::fs::read_to_string(dir.join("vmem-curve.svg")).unwrap();
        assert!(curve.contains("kmem-vmem") && curve.contains("<polyline"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
