//! Process memory figures from `/proc`, for tests and benchmark reports.
//!
//! These read files and so allocate; never call them from inside an allocator.

/// Resident set size of this process in bytes (`/proc/self/statm`), or `None`
/// where `/proc` is not available.
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * crate::page_size())
}

/// Peak resident set size of this process in bytes (`VmHWM` in
/// `/proc/self/status`), or `None` where `/proc` is not available.
pub fn peak_resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether the mapping holding `addr` is advised for transparent huge pages
/// (`hg` among its `VmFlags` in `/proc/self/smaps`), or `None` where `addr`
/// is not mapped or `/proc` is not available.
pub fn huge_pages_advised(addr: usize) -> Option<bool> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        // A mapping starts with `start-end perms ...`; its fields follow.
        if let Some((range, _)) = line.split_once(' ')
            && let Some((lo, hi)) = range.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&addr);
        } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
            return Some(flags.split_whitespace().any(|f| f == "hg"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg_attr(
        miri,
        ignore = "reads /proc/self/statm and /proc/self/status, which Miri cannot open"
    )]
    fn figures_are_plausible() {
        let rss = super::resident_bytes().expect("/proc is mounted on Linux");
        let peak = super::peak_resident_bytes().expect("/proc is mounted on Linux");
        assert!(rss > 0);
        assert!(peak >= rss / 2, "peak {peak} far below current {rss}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc/self/smaps, which Miri cannot open")]
    fn unmapped_addresses_have_no_flags() {
        assert_eq!(super::huge_pages_advised(0), None);
    }
}
