//! Project tasks. `cargo xtask bench [--quick] [--filter NAME]` runs every
//! bench target of `kmem-benches` and writes `docs/bench/results.csv`,
//! `docs/bench/README.md` and the SVG plots it links (see `plot`).

mod collect;
mod plot;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask bench [--quick] [--filter NAME]

  --quick        short warm-up and measurement, smaller inputs (a few minutes)
  --filter NAME  run only bench targets whose name contains NAME; if none
                 does, run all targets with NAME as criterion's filter.
                 Rows of benchmarks not run are kept from the last report.";

struct BenchArgs {
    quick: bool,
    filter: Option<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => parse_bench(&args[1..]).and_then(|a| bench(&a)),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_bench(args: &[String]) -> Result<BenchArgs, String> {
    let mut out = BenchArgs {
        quick: false,
        filter: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => out.quick = true,
            "--filter" => {
                let v = it.next().ok_or("--filter needs a NAME")?;
                out.filter = Some(v.clone());
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    Ok(out)
}

/// The workspace this xtask runs in. `cargo run` sets `CARGO_MANIFEST_DIR`
/// at run time too; prefer that to the compile-time value, which goes stale
/// when a target directory is copied between checkouts (cargo then reuses the
/// binary and it would run benches, and write reports, in the other checkout).
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The bench targets of kmem-benches: one file each under `benches/benches/`.
fn bench_targets(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("benches/benches");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    Ok(names)
}

fn bench(args: &BenchArgs) -> Result<(), String> {
    let root = workspace_root();
    let all = bench_targets(&root)?;
    let (targets, criterion_filter) = match &args.filter {
        None => (all, None),
        Some(f) => {
            let picked: Vec<String> = all
                .iter()
                .filter(|t| t.contains(f.as_str()))
                .cloned()
                .collect();
            if picked.is_empty() {
                (all, Some(f.clone()))
            } else {
                (picked, None)
            }
        }
    };

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let criterion_dir = target_dir.join("criterion");
    let work = target_dir.join("kmem-bench");
    // Only this run's measurements are reported: clear criterion's old ones.
    let _ = std::fs::remove_dir_all(&criterion_dir);
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let extra = work.join("extra.csv");
    std::fs::write(&extra, "").map_err(|e| format!("cannot reset {}: {e}", extra.display()))?;

    let started = Instant::now();
    println!(
        "xtask: building benches ({} mode)",
        if args.quick { "quick" } else { "full" }
    );
    run(Command::new(cargo()).current_dir(&root).args([
        "bench",
        "--package",
        "kmem-benches",
        "--no-run",
    ]))?;

    for (i, t) in targets.iter().enumerate() {
        println!(
            "\nxtask: [{}/{}] bench `{t}` ({:.0?} elapsed)",
            i + 1,
            targets.len(),
            started.elapsed()
        );
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&root)
            .args([
                "bench",
                "--quiet",
                "--package",
                "kmem-benches",
                "--bench",
                t,
                "--",
            ])
            .arg("--noplot")
            .env("KMEM_BENCH_EXTRA", &extra)
            .env("KMEM_BENCH_QUICK", if args.quick { "1" } else { "0" });
        if args.quick {
            cmd.args([
                "--warm-up-time",
                "0.3",
                "--measurement-time",
                "1",
                "--sample-size",
                "10",
            ]);
        } else {
            cmd.args(["--warm-up-time", "1", "--measurement-time", "3"]);
        }
        if let Some(f) = &criterion_filter {
            cmd.arg(f);
        }
        run(&mut cmd)?;
    }

    let mut rows = collect::criterion_rows(&criterion_dir)?;
    rows.extend(collect::extra_rows(&extra)?);
    if rows.is_empty() {
        return Err("no benchmark produced a result".into());
    }
    let out = root.join("docs/bench");
    let csv = out.join("results.csv");
    if args.filter.is_some() {
        rows = collect::merge_with_previous(&csv, rows)?;
    }
    let machine = report::Machine::detect();
    let how = report::Invocation {
        quick: args.quick,
        filter: args.filter.as_deref(),
    };
    report::write(&out, &rows, &machine, &how)?;
    println!("\n{}", report::summary(&rows));
    println!(
        "xtask: {} figures in {:.0?}; wrote {} and {}",
        rows.len(),
        started.elapsed(),
        csv.display(),
        out.join("README.md").display()
    );
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}
