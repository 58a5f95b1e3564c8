//! Fair (un-hinted) work waits in a queue per CPU; those queues are kept
//! even, so no CPU's queue falls behind the others.

use std::path::Path;
use std::time::Duration;

use scx_phase::stats::StatsMap;

use crate::support::*;
use crate::workload::*;

/// 2 × CPUs + 1 hogs never divide evenly over per-CPU queues, and none
/// of those queues ever runs dry, so idle stealing alone cannot even them
/// out: without rebalancing, the hogs of the longer queues would get
/// (n+1)/n times less CPU than the others for good.
#[test]
fn an_odd_number_of_hogs_shares_the_cpus_evenly() {
    let _loader = Loader::start(&[]);
    let cpus = nr_cpus();
    let hogs = Hogs::start(2 * cpus + 1);
    std::thread::sleep(Duration::from_millis(500));
    let stats = StatsMap::open(Path::new(PIN_DIR)).unwrap();
    let before = stats.read().unwrap();
    let sh = shares(&hogs.tids(), Duration::from_secs(5));
    let after = stats.read().unwrap();
    let fair = 100.0 * cpus as f64 / hogs.0.len() as f64;
    let (min, max) = sh
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let rebalanced = after.fair_rebalances() - before.fair_rebalances();
    println!(
        "MEASURED fair queues: {} hogs on {cpus} vCPUs, 5 s: {} (fair share {fair:.1}%); {rebalanced} heads rebalanced, {} stolen",
        hogs.0.len(),
        fmt_pct(&sh),
        after.fair_steals() - before.fair_steals()
    );
    assert!(
        max - min <= fair / 4.0,
        "uneven shares {sh:?}, fair {fair:.1}%"
    );
    assert!(min >= fair * 0.8, "a hog got {min:.1}%, fair {fair:.1}%");
    assert!(rebalanced > 0, "no queue head was ever rebalanced");
}
