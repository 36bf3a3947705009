//! Reading measurements: criterion's JSON output and the extra CSV rows that
//! benches record themselves.

use std::path::Path;

/// One measured figure: a row of `results.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub suite: String,
    pub benchmark: String,
    pub subject: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
}

pub const CSV_HEADER: &str = "suite,benchmark,subject,metric,value,unit";

impl Row {
    fn key(&self) -> (&str, &str, &str, &str) {
        (&self.suite, &self.benchmark, &self.subject, &self.metric)
    }

    pub fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            csv_field(&self.suite),
            csv_field(&self.benchmark),
            csv_field(&self.subject),
            csv_field(&self.metric),
            self.value,
            csv_field(&self.unit)
        )
    }

    fn parse_csv(line: &str) -> Result<Row, String> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 6 {
            return Err(format!("expected 6 fields, found {}: `{line}`", f.len()));
        }
        let value = f[4]
            .parse()
            .map_err(|e| format!("bad value `{}` in `{line}`: {e}", f[4]))?;
        Ok(Row {
            suite: f[0].into(),
            benchmark: f[1].into(),
            subject: f[2].into(),
            metric: f[3].into(),
            value,
            unit: f[5].into(),
        })
    }
}

/// Commas would break the plain CSV; names never need them.
fn csv_field(s: &str) -> String {
    s.replace(',', ";")
}

/// Every `new/benchmark.json` + `new/estimates.json` pair under `dir`: the
/// mean time per iteration in ns, or per element where the bench declared an
/// element throughput.
pub fn criterion_rows(dir: &Path) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    if dir.exists() {
        walk(dir, &mut rows)?;
    }
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    Ok(rows)
}

fn walk(dir: &Path, rows: &mut Vec<Row>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                if let Some(row) = read_measurement(&p)? {
                    rows.push(row);
                }
            } else {
                walk(&p, rows)?;
            }
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()))
}

fn read_measurement(new: &Path) -> Result<Option<Row>, String> {
    let (bench, est) = (new.join("benchmark.json"), new.join("estimates.json"));
    if !bench.exists() || !est.exists() {
        return Ok(None);
    }
    let b = read_json(&bench)?;
    let e = read_json(&est)?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let suite = text(&b["group_id"]).ok_or_else(|| format!("{}: no group_id", bench.display()))?;
    let benchmark = text(&b["function_id"]).ok_or_else(|| {
        format!(
            "{}: no function id; benches name measurements with kmem_benches::id(benchmark, subject)",
            bench.display()
        )
    })?;
    let subject = text(&b["value_str"]).unwrap_or_else(|| "-".into());
    let mut ns = e["mean"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("{}: no mean estimate", est.display()))?;
    let mut metric = "time".to_string();
    if let Some(n) = b["throughput"]["Elements"].as_f64().filter(|&n| n > 0.0) {
        ns /= n;
        metric = "time per item".into();
    }
    Ok(Some(Row {
        suite,
        benchmark,
        subject,
        metric,
        value: ns,
        unit: "ns".into(),
    }))
}

/// Rows that benches recorded through `kmem_benches::record`.
pub fn extra_rows(path: &Path) -> Result<Vec<Row>, String> {
    parse_rows(path, false)
}

fn parse_rows(path: &Path, has_header: bool) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .skip(usize::from(has_header))
        .filter(|l| !l.trim().is_empty())
        .map(|l| Row::parse_csv(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// For a filtered run: the previous report's rows, with the figures measured
/// now replacing theirs.
pub fn merge_with_previous(previous: &Path, new: Vec<Row>) -> Result<Vec<Row>, String> {
    if !previous.exists() {
        return Ok(new);
    }
    let mut rows: Vec<Row> = parse_rows(previous, true)?
        .into_iter()
        .filter(|old| {
            !new.iter()
                .any(|n| n.suite == old.suite && n.benchmark == old.benchmark)
        })
        .collect();
    rows.extend(new);
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(suite: &str, bench: &str, subject: &str, value: f64) -> Row {
        Row {
            suite: suite.into(),
            benchmark: bench.into(),
            subject: subject.into(),
            metric: "time".into(),
            value,
            unit: "ns".into(),
        }
    }

    #[test]
    fn csv_round_trip() {
        let r = row("vmem", "pair, 10 live", "kmem-vmem", 12.5);
        let back = Row::parse_csv(&r.to_csv()).unwrap();
        assert_eq!(back.benchmark, "pair; 10 live");
        assert_eq!(back.value, 12.5);
        assert!(Row::parse_csv("a,b,c").is_err());
        assert!(Row::parse_csv("a,b,c,d,x,ns").is_err());
    }

    #[test]
    fn merge_replaces_only_remeasured_benchmarks() {
        let dir = std::env::temp_dir().join(format!("xtask-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prev = dir.join("results.csv");
        let old = [row("a", "x", "kmem", 1.0), row("a", "y", "kmem", 2.0)];
        let text: Vec<String> = std::iter::once(CSV_HEADER.to_string())
            .chain(old.iter().map(Row::to_csv))
            .collect();
        std::fs::write(&prev, text.join("\n")).unwrap();
        let merged = merge_with_previous(&prev, vec![row("a", "x", "kmem", 9.0)]).unwrap();
        assert_eq!(
            merged,
            vec![row("a", "x", "kmem", 9.0), row("a", "y", "kmem", 2.0)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_criterion_layout() {
        let dir = std::env::temp_dir().join(format!("xtask-crit-{}", std::process::id()));
        let new = dir.join("sys/current cpu/kmem-sys/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"sys","function_id":"current cpu","value_str":"kmem-sys","throughput":{"Elements":4}}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":10.0}}"#,
        )
        .unwrap();
        let rows = criterion_rows(&dir).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value, 2.5);
        assert_eq!(rows[0].metric, "time per item");
        assert_eq!(rows[0].subject, "kmem-sys");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
