//! The one line a workload binary prints, and its parser.

use std::fmt;
use std::str::FromStr;

/// What one run of one workload under one allocator measured. It prints as
/// one line, `workload=larson subject=system time_ms=812.5
/// peak_rss_bytes=9437184 checksum=1234`, which [`FromStr`] reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The workload's name, e.g. `larson`.
    pub workload: String,
    /// The allocator: `system`, `mimalloc`, `jemalloc` or `kmem`.
    pub subject: String,
    /// Wall time of the workload alone (not process start-up), in ms.
    pub time_ms: f64,
    /// The process's peak resident size (`VmHWM`) after the workload.
    pub peak_rss_bytes: u64,
    /// What the workload computed; equal under every correct allocator.
    pub checksum: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workload={} subject={} time_ms={:.3} peak_rss_bytes={} checksum={}",
            self.workload, self.subject, self.time_ms, self.peak_rss_bytes, self.checksum
        )
    }
}

impl FromStr for Report {
    type Err = String;

    /// Reads a line printed by [`Display`](fmt::Display); the fields may come
    /// in any order, and each must appear once.
    fn from_str(line: &str) -> Result<Report, String> {
        let mut fields = [None; 5];
        const KEYS: [&str; 5] = [
            "workload",
            "subject",
            "time_ms",
            "peak_rss_bytes",
            "checksum",
        ];
        for word in line.split_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("`{word}` is not key=value in `{line}`"))?;
            let i = KEYS
                .iter()
                .position(|k| *k == key)
                .ok_or_else(|| format!("unknown field `{key}` in `{line}`"))?;
            if fields[i].replace(value).is_some() {
                return Err(format!("field `{key}` given twice in `{line}`"));
            }
        }
        let get = |i: usize| fields[i].ok_or_else(|| format!("no `{}` in `{line}`", KEYS[i]));
        let num = |i: usize| -> Result<u64, String> {
            get(i)?
                .parse()
                .map_err(|e| format!("bad `{}` in `{line}`: {e}", KEYS[i]))
        };
        let time_ms: f64 = get(2)?
            .parse()
            .map_err(|e| format!("bad `time_ms` in `{line}`: {e}"))?;
        if !(time_ms.is_finite() && time_ms >= 0.0) {
            return Err(format!(
                "`time_ms` must be a finite non-negative number in `{line}`"
            ));
        }
        Ok(Report {
            workload: get(0)?.to_string(),
            subject: get(1)?.to_string(),
            time_ms,
            peak_rss_bytes: num(3)?,
            checksum: num(4)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Report {
            workload: "larson".into(),
            subject: "mimalloc".into(),
            time_ms: 812.5,
            peak_rss_bytes: 9 << 20,
            checksum: 42,
        };
        let back: Report = r.to_string().parse().unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn bad_lines_are_rejected_with_the_reason() {
        let ok = "workload=a subject=b time_ms=1 peak_rss_bytes=2 checksum=3";
        assert!(ok.parse::<Report>().is_ok());
        let cases = [
            (
                "workload=a subject=b time_ms=1 peak_rss_bytes=2",
                "no `checksum`",
            ),
            (
                "workload=a subject=b time_ms=x peak_rss_bytes=2 checksum=3",
                "bad `time_ms`",
            ),
            (
                "workload=a subject=b time_ms=-1 peak_rss_bytes=2 checksum=3",
                "non-negative",
            ),
            (
                "workload=a workload=b time_ms=1 peak_rss_bytes=2 checksum=3",
                "twice",
            ),
            (
                "workload=a subject=b time_ms=1 peak_rss_bytes=2 checksum=3 x=1",
                "unknown field",
            ),
            ("hello", "not key=value"),
        ];
        for (line, why) in cases {
            let e = line.parse::<Report>().unwrap_err();
            assert!(e.contains(why), "`{line}`: {e}");
        }
    }
}
