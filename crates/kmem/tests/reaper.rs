//! The background reaper gives a burst's memory back to the OS without a
//! manual reap, with `Kmem` (and its own reaper) as the global allocator.

use std::time::{Duration, Instant};

use kmem_sys::mem::resident_bytes;

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem::with_reaper(Duration::from_millis(40));

const BURST: usize = 64 << 20;

/// Allocates `BURST` bytes of small and medium buffers on a thread that
/// then exits (its magazines go to the depots), touching every byte.
fn burst() {
    std::thread::spawn(|| {
        let small: Vec<Box<[u8; 200]>> = (0..BURST / 2 / 200).map(|_| Box::new([7; 200])).collect();
        let medium: Vec<Vec<u8>> = (0..BURST / 2 / 3000).map(|i| vec![i as u8; 3000]).collect();
        let sum: usize = small.iter().map(|b| b[199] as usize).sum::<usize>()
            + medium.iter().map(|v| v[2999] as usize).sum::<usize>();
        assert!(sum > 0);
    })
    .join()
    .unwrap();
}

/// One test, in order: a reaper started by the second part would otherwise
/// reap the first part's burst.
#[test]
#[cfg_attr(
    miri,
    ignore = "reads the resident size from /proc/self/statm, which Miri cannot open"
)]
fn reapers() {
    resident_size_drops_after_a_burst_without_a_manual_reap();
    a_started_reaper_ticks_and_stops_on_drop();
}

fn resident_size_drops_after_a_burst_without_a_manual_reap() {
    let base = resident_bytes().unwrap();
    burst();
    let peak = resident_bytes().unwrap();
    assert!(
        peak >= base + BURST / 2,
        "the burst was not resident: {base} -> {peak}"
    );
    let ticks = kmem::reaper::global_ticks();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = peak;
    while now > base + (peak - base) / 4 {
        assert!(
            Instant::now() < deadline,
            "resident size only fell from {peak} to {now} (base {base}) in 20 s, {} reaps",
            kmem::reaper::global_ticks() - ticks
        );
        std::thread::sleep(Duration::from_millis(20));
        now = resident_bytes().unwrap();
    }
    // The tick that gave the memory back counts itself once its reap is
    // done, which may be just after the resident size fell.
    while kmem::reaper::global_ticks() == ticks {
        assert!(
            Instant::now() < deadline,
            "memory came back without the reaper running"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn a_started_reaper_ticks_and_stops_on_drop() {
    let reaper = kmem::reaper::start(Duration::from_millis(5));
    assert_eq!(reaper.interval(), Duration::from_millis(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while reaper.ticks() < 3 {
        assert!(Instant::now() < deadline, "the reaper did not tick");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    drop(reaper);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopping waited for a whole interval or more"
    );
    let long = kmem::reaper::start(Duration::from_secs(3600));
    let started = Instant::now();
    long.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopping a reaper in its hour-long sleep must not wait for it"
    );
}
