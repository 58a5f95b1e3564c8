//! Overload: 2,560 runnable tasks on 4 CPUs (perf bench sched messaging,
//! 64 groups of 40). Before round 3 the kernel ejected scx_phase here
//! ("RCU CPU stall"), a task having waited 21 s while EEVDF's worst was
//! 13 s. Each scheduler's runnable waits are measured by the same probe
//! (runq-waits, from the scheduler core's tracepoints), in one boot,
//! EEVDF first.

use std::process::Command;

use crate::support::*;

const PROBE: &str = env!("CARGO_BIN_EXE_runq-waits");

/// What runq-waits reports for one run.
#[derive(Debug, Clone, Copy)]
struct Waits {
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn messaging(groups: u32, loops: u32) -> Waits {
    let out = Command::new(PROBE)
        .arg("--json")
        .arg("--")
        .args(["perf", "bench", "sched", "messaging"])
        .args(["-g", &groups.to_string(), "-l", &loops.to_string()])
        .output()
        .expect("runq-waits");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "perf bench failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().last().expect("a runq-waits line");
    let v: serde_json::Value = serde_json::from_str(line).expect("runq-waits JSON");
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {line}"));
    Waits {
        seconds: f("seconds"),
        p50_ms: f("p50_us") / 1e3,
        p99_ms: f("p99_us") / 1e3,
        max_ms: f("max_us") / 1e3,
    }
}

/// The worst of several runs' waits, and their mean time.
fn fold(runs: &[Waits]) -> Waits {
    let max = |f: fn(&Waits) -> f64| runs.iter().map(f).fold(0.0, f64::max);
    Waits {
        seconds: runs.iter().map(|w| w.seconds).sum::<f64>() / runs.len() as f64,
        p50_ms: max(|w| w.p50_ms),
        p99_ms: max(|w| w.p99_ms),
        max_ms: max(|w| w.max_ms),
    }
}

fn fmt(w: &Waits) -> String {
    format!(
        "{:.1} s, waits p50 {:.0} ms, p99 {:.0} ms, worst {:.0} ms",
        w.seconds, w.p50_ms, w.p99_ms, w.max_ms
    )
}

#[test]
fn messaging_at_2560_tasks_never_ejects_and_waits_no_longer_than_eevdf() {
    require_sched_ext();
    assert_eq!(
        std::thread::available_parallelism().unwrap().get(),
        4,
        "a 4-vCPU VM"
    );
    let (groups, loops) = (64, 20);
    // One run each: across every suite run so far (three kernels, two runs
    // each) scx_phase's worst wait was 0.12-0.32x EEVDF's, far inside the
    // 1.25x below, and each run costs about 35 s of a boot that the suite
    // makes on three kernels. scripts/bench.sh --overload repeats runs.
    const RUNS: usize = 1;
    let (mut eevdf, mut ours) = (Vec::new(), Vec::new());
    // The kernel's complaints while scx_phase ran (under TCG, EEVDF's runs
    // have had RCU stall warnings of their own: the emulated CPUs are slow).
    let mut ours_dmesg = Vec::new();
    let mut eevdf_stalls = 0;
    let mut readers = 0;
    for _ in 0..RUNS {
        assert_eq!(state(), "disabled");
        let before = dmesg_lines().len();
        eevdf.push(messaging(groups, loops));
        eevdf_stalls += kernel_complaints(&dmesg_lines().split_off(before)).len();
        let before = dmesg_lines().len();
        let loader = Loader::start(&[]);
        ours.push(messaging(groups, loops));
        // This instance's own count (its stats map is new).
        readers += scx_phase::stats::StatsMap::open(std::path::Path::new(PIN_DIR))
            .ok()
            .and_then(|m| m.read().ok())
            .map_or(0, |c| c.rcu_readers());
        assert!(
            state() == "enabled" && ops().starts_with("scx_phase"),
            "scx_phase was ejected under overload: {}",
            loader.log()
        );
        // Before the detach, whose own line is no complaint.
        ours_dmesg.extend(dmesg_lines().split_off(before));
        drop(loader);
    }
    let bad = kernel_complaints(&ours_dmesg);
    let (e, o) = (fold(&eevdf), fold(&ours));
    println!(
        "MEASURED overload, perf bench sched messaging -g {groups} -l {loops} (2,560 tasks) on 4 vCPUs, {RUNS} run(s) each, EEVDF first, in one boot: EEVDF {}; scx_phase {}; time ratio {:.2}, p99-wait ratio {:.2}, worst-wait ratio {:.2}; kernel complaints: {eevdf_stalls} under EEVDF, {} under scx_phase; {readers} tasks preempted inside RCU read-side sections run next",
        fmt(&e),
        fmt(&o),
        o.seconds / e.seconds,
        o.p99_ms / e.p99_ms,
        o.max_ms / e.max_ms,
        bad.len()
    );
    assert!(bad.is_empty(), "the kernel complained: {bad:#?}");
    // The wait bound: well inside the watchdog's 19 s (main.bpf.c) and the
    // 21 s RCU stall timeout, and no worse than EEVDF's on the same load
    // (1.25x: TCG's noise between runs).
    assert!(o.max_ms < 8_000.0, "a task waited {:.0} ms", o.max_ms);
    assert!(
        o.max_ms <= e.max_ms * 1.25,
        "worst wait {:.0} ms, EEVDF's {:.0} ms",
        o.max_ms,
        e.max_ms
    );
}
