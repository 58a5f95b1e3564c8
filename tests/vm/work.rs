//! Work counters: each callback counts the CPUs and queues it looked at,
//! per call, and only its own (a scope that leaked would charge one
//! callback's scan to the next).

use std::path::Path;
use std::time::Duration;

use scx_phase::Phase;
use scx_phase::hint::tid_map::{PhaseHint, PhaseMap, current_tid};
use scx_phase::stats::{CALLBACKS, Snapshot, StatsMap, WorkCounters};

use crate::support::*;
use crate::workload::*;

fn delta(a: &WorkCounters, b: &WorkCounters) -> (u64, u64, u64) {
    (b.calls - a.calls, b.cpus - a.cpus, b.queues - a.queues)
}

/// Hogs on every CPU, a boosted thread and a data loader that sleep 1 ms
/// at a time, then a pause: every hot callback runs, a boosted wake-up
/// finds no idle CPU and looks for one to take, a loader looks for an
/// idle CPU of its node, and idle CPUs steal. The counters before and
/// after.
fn load() -> (Snapshot, Snapshot) {
    let stats = StatsMap::open(Path::new(PIN_DIR)).unwrap();
    let before = stats.read().unwrap();
    let hogs = Hogs::start(2 * nr_cpus());
    let sleeper = |phase: Phase, node: Option<u32>| {
        std::thread::spawn(move || {
            sleep_lateness_ms(
                Duration::from_millis(1),
                1000,
                Duration::from_secs(3),
                move || {
                    PhaseMap::open_default()
                        .unwrap()
                        .set(current_tid(), PhaseHint::new(phase, node))
                        .unwrap();
                },
            )
        })
    };
    let loader = sleeper(Phase::DataLoading, Some(1));
    let backward = sleeper(Phase::Backward, None);
    loader.join().unwrap();
    backward.join().unwrap();
    drop(hogs);
    std::thread::sleep(Duration::from_millis(300));
    (before, stats.read().unwrap())
}

#[test]
fn every_callback_counts_the_cpus_and_queues_it_looks_at() {
    let _loader = Loader::start(&[]);
    let cpus = nr_cpus() as u64;
    let (before, after) = load();

    let mut line = Vec::new();
    for (i, name) in CALLBACKS.iter().enumerate() {
        let (calls, c, q) = delta(&before.work[i], &after.work[i]);
        let w = &after.work[i];
        line.push(format!(
            "{name} {calls} calls, cpus {:.2}/call (max {}), queues {:.2}/call (max {})",
            c as f64 / calls.max(1) as f64,
            w.max_cpus,
            q as f64 / calls.max(1) as f64,
            w.max_queues
        ));
    }
    println!(
        "MEASURED work counters, {cpus} vCPUs, {} hogs, a boosted and a loader 1 ms sleeper for 3 s: {}",
        2 * cpus,
        line.join("; ")
    );

    let w = |name: &str| {
        let i = CALLBACKS.iter().position(|c| *c == name).unwrap();
        (delta(&before.work[i], &after.work[i]), after.work[i])
    };
    for name in [
        "select_cpu",
        "enqueue",
        "dispatch",
        "running",
        "tick",
        "stopping",
    ] {
        let ((calls, _, _), _) = w(name);
        assert!(calls > 0, "{name} never counted a call");
    }
    // Every dispatch looks at a queue; with nothing of its own, an idle
    // CPU looks at the others' (so the most CPUs one dispatch saw grows
    // with the host until that scan is bounded).
    let ((calls, _, queues), d) = w("dispatch");
    assert!(
        queues >= calls,
        "dispatch: {queues} queues in {calls} calls"
    );
    assert!(
        d.max_cpus >= cpus - 1,
        "dispatch never scanned: max {}",
        d.max_cpus
    );
    // A boosted wake-up with no idle CPU looks for one to take.
    let ((_, sel_cpus, _), _) = w("select_cpu");
    assert!(sel_cpus > 0, "no boosted wake-up looked at a CPU");
    // Callbacks that scan nothing count nothing: the scopes do not leak.
    let ((_, cpus_stopping, queues_stopping), s) = w("stopping");
    assert_eq!(
        (cpus_stopping, queues_stopping, s.max_cpus, s.max_queues),
        (0, 0, 0, 0),
        "stopping looks at no CPU or queue"
    );
    // running: whether company waits (1-2 queues) and, for a fair task,
    // its queue's length for the slice (1 more); no other CPU.
    let ((calls, cpus_running, queues_running), r) = w("running");
    assert_eq!(
        (cpus_running, r.max_cpus),
        (0, 0),
        "running looks at no CPU"
    );
    assert!(
        queues_running >= calls && r.max_queues <= 3,
        "running: {queues_running} queues in {calls} calls, max {}",
        r.max_queues
    );
    for (i, name) in CALLBACKS.iter().enumerate() {
        let (calls, c, q) = delta(&before.work[i], &after.work[i]);
        let m = &after.work[i];
        assert!(
            c <= calls * m.max_cpus && q <= calls * m.max_queues,
            "{name}: a mean above its max"
        );
    }
}

/// The most CPUs one call of a hot callback may look at, on any host:
/// select_cpu this CPU and PREEMPT_SAMPLES (2) others, or a woken fair
/// task's 4 candidate queues' CPUs; enqueue the same (when select_cpu was
/// not called) and the CPU it kicks;
/// dispatch the CPU that kicked it and STEAL_TRIES (3) others; the rest
/// none. On 4 vCPUs the scans these replaced looked at 5 (select_cpu: this
/// CPU and every CPU) and 6 (dispatch: every other CPU, in two passes).
const MAX_CPUS: [(&str, u64); 6] = [
    ("select_cpu", 4),
    ("enqueue", 5),
    ("dispatch", 4),
    ("running", 0),
    ("tick", 0),
    ("stopping", 0),
];

#[test]
fn no_callback_looks_at_more_cpus_than_its_constant_bound() {
    let _loader = Loader::start(&[]);
    let (_, after) = load();
    let got: Vec<(&str, u64)> = MAX_CPUS
        .iter()
        .map(|(name, _)| {
            let i = CALLBACKS.iter().position(|c| c == name).unwrap();
            (*name, after.work[i].max_cpus)
        })
        .collect();
    println!(
        "MEASURED most CPUs one call looked at, {} vCPUs: {got:?}; bounds {MAX_CPUS:?}",
        nr_cpus()
    );
    for ((name, max), (_, bound)) in got.iter().zip(MAX_CPUS) {
        assert!(
            max <= &bound,
            "{name} looked at {max} CPUs in one call, bound {bound}"
        );
    }
}
