//! The zone table: `zones()`, its rendering, and the page counters.

use kmem_zone_compat::compat::{self, ZONE_NONE};
use kmem_zone_compat::{Zone, ZoneFlags, render, zone_counters, zones};

#[test]
fn table_lists_live_zones_with_the_seed_columns() {
    let z = Zone::builder("table-zone", 100).cpus(2).build().unwrap();
    let a = z.alloc_on(0).unwrap();
    let b = z.alloc_on(1).unwrap();
    // SAFETY: freed once.
    unsafe { z.free_on(1, b).unwrap() };
    let row = zones()
        .into_iter()
        .find(|r| r.name == "table-zone")
        .unwrap();
    assert_eq!((row.size, row.limit, row.used), (128, 0, 1));
    assert_eq!(row.requests, 2);
    assert_eq!(row.free, row.total - 1);
    assert_eq!(row.per_cpu.len(), 2);
    // CPU 1 refilled a burst of 128, used one and got it back.
    assert_eq!((row.per_cpu[0].free, row.per_cpu[1].free), (0, 128));
    assert_eq!((row.per_cpu[0].requests, row.per_cpu[1].requests), (0, 1));
    assert_eq!(row.flags, ZoneFlags::NONE);

    let text = render(std::slice::from_ref(&row));
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "ITEM            SIZE     LIMIT    USED    FREE  REQUESTS"
    );
    let expect = format!(
        "table-zone:   000128, 00000000, 000001, {:06}, 00000002",
        row.free
    );
    assert_eq!(lines.next().unwrap(), expect);
    assert!(text.contains("cpu1"));
    assert!(compat::sysctl_vm_zone().contains("table-zone:"));

    // SAFETY: freed once.
    unsafe { z.free_on(0, a).unwrap() };
    drop(z);
    assert!(zones().iter().all(|r| r.name != "table-zone"));
}

#[test]
fn long_names_are_cut_as_the_seed_does() {
    let z = compat::zinit("a-very-long-zone-name", 32, 0, ZONE_NONE).unwrap();
    let text = render(&[z.stats()]);
    assert!(text.lines().nth(1).unwrap().starts_with("a-very-long-: "));
}

#[test]
fn counters_follow_pages() {
    // Other tests in this binary make zones too, so compare differences
    // only for counters no other test here touches.
    let before = zone_counters();
    let z = Zone::builder("counted", 64)
        .flags(ZoneFlags::INTERRUPT)
        .nentries(4096)
        .build()
        .unwrap();
    let after = zone_counters();
    assert_eq!(after.kmem_kvaspace - before.kmem_kvaspace, 4096 * 64);
    assert_eq!(after.kmem_pages - before.kmem_pages, 8);
    drop(z);
    let gone = zone_counters();
    assert_eq!(gone.kmem_kvaspace, before.kmem_kvaspace);
    assert_eq!(gone.kmem_pages, before.kmem_pages);
}
