//! Fair (un-hinted) work waits in a queue per CPU; those queues are kept
//! even, so no CPU's queue falls behind the others, and one clock orders
//! them that no single CPU can run away with.

use std::path::Path;
use std::time::Duration;

use scx_phase::Phase;
use scx_phase::hint::tid_map::{PhaseHint, PhaseMap};
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

/// A task that runs alone on a CPU runs out of vtime order (nobody waits
/// there), and an idle-phase one is charged 8 times its run time. If such
/// runs moved the fair clock that waking tasks are placed by, a task woken
/// on another CPU would queue behind that CPU's hogs until they caught up,
/// which they never do.
#[test]
fn a_thread_alone_on_its_cpu_does_not_push_back_wake_ups_elsewhere() {
    let _loader = Loader::start(&[]);
    let hogs = Hogs::start(3);
    for t in hogs.tids() {
        set_affinity(t, &[0]);
    }
    let lone = Spinner::start(None);
    set_affinity(lone.tid, &[1]);
    PhaseMap::open_default()
        .unwrap()
        .set(lone.tid, PhaseHint::new(Phase::Idle, None))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let d = sleep_lateness_ms(
        Duration::from_millis(5),
        usize::MAX,
        Duration::from_secs(3),
        || set_affinity(0, &[0]),
    );
    let pct = |q: f64| d[((d.len() - 1) as f64 * q) as usize];
    println!(
        "MEASURED wake-ups among 3 hogs on CPU 0, an idle-phase spinner alone on CPU 1: {} wake-ups of 5 ms sleeps in 3 s, late p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        d.len(),
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
    assert!(d.len() >= 100, "only {} wake-ups in 3 s", d.len());
    // Two slices: the sleeper, queued ahead of the hogs, waits for one.
    assert!(pct(0.9) <= 10.0, "p90 late by {:.1} ms", pct(0.9));
}

/// Involuntary context switches of `tid` so far.
fn preemptions(tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The median, over `n` hogs pinned to CPU 0, of how long each ran
/// between two preemptions, in ms over 3 s.
fn median_run_ms(n: usize) -> f64 {
    let hogs = Hogs::start(n);
    let tids = hogs.tids();
    for &t in &tids {
        set_affinity(t, &[0]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<(u64, u64)> = tids.iter().map(|&t| (cpu_ns(t), preemptions(t))).collect();
    std::thread::sleep(Duration::from_secs(3));
    let mut runs: Vec<f64> = tids
        .iter()
        .zip(&before)
        .map(|(&t, &(ns, sw))| (cpu_ns(t) - ns) as f64 / 1e6 / (preemptions(t) - sw).max(1) as f64)
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// A CPU's slice shortens as its queue grows: the scheduler writes it as
/// the task starts to run (scx_bpf_task_set_slice from 6.19; before it,
/// into the task itself, as 6.12 has no kfunc for it). Tasks are queued
/// with the full slice, so a write that did not land would leave every
/// slice full: 3 hogs on one CPU (2 waiting) run the full 20 ms, 9 (8
/// waiting) half of it. The tick (4 ms at HZ=250) rounds each up.
#[test]
fn a_deep_queue_runs_the_shorter_slice_the_scheduler_wrote() {
    let _loader = Loader::start(&["--slice-us", "20000"]);
    let shallow = median_run_ms(3);
    let deep = median_run_ms(9);
    println!(
        "MEASURED slices, --slice-us 20000, hogs pinned to CPU 0: 3 hogs ran {shallow:.1} ms between preemptions (full slice 20 ms), 9 hogs {deep:.1} ms (written: 10 ms)"
    );
    assert!(
        shallow >= 17.0,
        "3 hogs ran {shallow:.1} ms slices, not the full 20 ms"
    );
    assert!(
        (8.0..=15.0).contains(&deep),
        "9 hogs ran {deep:.1} ms slices, not the 10 ms written (20 ms: the write did not land)"
    );
}
