//! Address space apart from memory — the split FreeBSD `vm_kern.c` makes between
//! `kva_alloc` (address space) and `kmem_back`/`kmem_unback` (pages), done in
//! user space with `kmem_sys::Reservation`.
//!
//! Run: `cargo run --example reserve`
//!
//! What to look at: reserving 1 GiB costs no resident memory; committing costs
//! none either until pages are touched; decommitting gives the touched pages
//! back, so the resident size falls to where it started.

use kmem_sys::{Reservation, cpu_count, current_cpu, mem::resident_bytes, page_size};

fn rss_mib() -> f64 {
    resident_bytes().unwrap_or(0) as f64 / (1 << 20) as f64
}

fn main() -> Result<(), kmem_sys::SysError> {
    println!(
        "cpu {} of {}, page size {} bytes",
        current_cpu(),
        cpu_count(),
        page_size()
    );
    println!("{:<34} {:>8.1} MiB resident", "start", rss_mib());

    let r = Reservation::new(1 << 30)?;
    println!("{:<34} {:>8.1} MiB resident", "reserved 1 GiB", rss_mib());

    let len = 64 << 20;
    r.commit(0, len)?;
    println!("{:<34} {:>8.1} MiB resident", "committed 64 MiB", rss_mib());

    for off in (0..len).step_by(page_size()) {
        // SAFETY: the first 64 MiB are committed and only this thread uses them.
        unsafe { r.base().as_ptr().add(off).write(1) };
    }
    println!(
        "{:<34} {:>8.1} MiB resident ({} pages by mincore)",
        "touched every page",
        rss_mib(),
        r.resident_pages(0, len)?
    );

    // SAFETY: nothing touches the range after this.
    unsafe { r.decommit(0, len)? };
    println!("{:<34} {:>8.1} MiB resident", "decommitted", rss_mib());
    r.release()
}
