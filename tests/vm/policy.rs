//! The phase policy, measured: boost, class order, the budget, wake-up
//! latency, thread-name classification and stale hints.

use std::path::Path;
use std::time::{Duration, Instant};

use scx_phase::Phase;
use scx_phase::hint::tid_map::{PhaseHint, PhaseMap};
use scx_phase::stats::StatsMap;

use crate::support::*;
use crate::workload::*;

const MEASURE: Duration = Duration::from_secs(5);

fn hint(tid: u32, phase: Phase) {
    PhaseMap::open_default()
        .unwrap()
        .set(tid, PhaseHint::new(phase, None))
        .unwrap();
}

#[test]
fn backward_gets_a_cpu_among_hogs_and_hogs_still_run() {
    let _loader = Loader::start(&[]);
    let hogs = Hogs::start(4);
    let spinner = Spinner::start(None);
    let mut tids = vec![spinner.tid];
    tids.extend(hogs.tids());

    let before = shares(&tids, MEASURE);
    hint(spinner.tid, Phase::Backward);
    let after = shares(&tids, MEASURE);
    println!(
        "MEASURED boost on {} vCPUs, 4 hogs, 5 s each: spinner un-hinted {:.1}%, hinted backward {:.1}%; hogs while boosted: {}",
        nr_cpus(),
        before[0],
        after[0],
        fmt_pct(&after[1..])
    );
    assert!(
        after[0] >= 85.0,
        "hinted spinner got {:.1}% of a CPU",
        after[0]
    );
    assert!(
        after[0] - before[0] >= 25.0,
        "no boost: {before:?} -> {after:?}"
    );
    for (i, h) in after[1..].iter().enumerate() {
        assert!(
            *h >= 10.0,
            "hog {i} got {h:.1}% while the spinner was boosted"
        );
    }
}

#[test]
fn classes_order_checkpoint_over_backward_over_forward() {
    let _loader = Loader::start(&[]);
    let cpu = nr_cpus() - 1;
    let spinners: Vec<Spinner> = (0..3).map(|_| Spinner::start(None)).collect();
    for (s, p) in spinners
        .iter()
        .zip([Phase::Checkpoint, Phase::Backward, Phase::Forward])
    {
        set_affinity(s.tid, &[cpu]);
        hint(s.tid, p);
    }
    std::thread::sleep(Duration::from_millis(300));
    let tids: Vec<u32> = spinners.iter().map(|s| s.tid).collect();
    let sh = shares(&tids, MEASURE);
    println!(
        "MEASURED class order on one CPU, 5 s: checkpoint {:.1}%, backward {:.1}%, forward {:.1}%",
        sh[0], sh[1], sh[2]
    );
    assert!(sh[0] > sh[1] && sh[1] > sh[2], "order broken: {sh:?}");
    assert!(sh[2] > 1.0, "forward starved: {sh:?}");
}

#[test]
fn the_budget_leaves_hogs_cpu_and_nobody_waits_a_second() {
    let _loader = Loader::start(&[]);
    let hogs = Hogs::start(4);
    let boosted: Vec<Spinner> = (0..nr_cpus()).map(|_| Spinner::start(None)).collect();
    for s in &boosted {
        hint(s.tid, Phase::Backward);
    }
    let sh = shares(&hogs.tids(), MEASURE);
    let stats = StatsMap::open(Path::new(PIN_DIR)).unwrap().read().unwrap();
    let max_wait = stats.slots.iter().map(|c| c.max_wait_ns).max().unwrap();
    let exhausted = stats.slots[Phase::Backward as usize].budget_exhaustions;
    println!(
        "MEASURED budget: {} backward spinners on {} vCPUs; hogs got {}; longest wait {:.0} ms; {} budget exhaustions",
        boosted.len(),
        nr_cpus(),
        fmt_pct(&sh),
        max_wait as f64 / 1e6,
        exhausted
    );
    for (i, h) in sh.iter().enumerate() {
        assert!(*h >= 5.0, "hog {i} got {h:.1}% under a saturating boost");
    }
    assert!(
        max_wait < 1_000_000_000,
        "a task waited {} ms",
        max_wait / 1_000_000
    );
    assert!(exhausted > 0, "the budget never bound");
}

/// Median and p90 of how late a 1 ms sleep wakes up, in µs, measured on
/// the sleeping thread's own clock.
fn wake_delays(phase: Option<Phase>) -> (f64, f64) {
    let d = sleep_lateness_ms(Duration::from_millis(1), 600, Duration::MAX, move || {
        if let Some(p) = phase {
            hint(scx_phase::hint::tid_map::current_tid(), p);
        }
    });
    (d[d.len() / 2] * 1e3, d[d.len() * 9 / 10] * 1e3)
}

#[test]
fn a_waking_backward_thread_preempts_within_a_millisecond() {
    let _loader = Loader::start(&[]);
    let _hogs = Hogs::start(4);
    std::thread::sleep(Duration::from_millis(200));
    let (plain, plain90) = wake_delays(None);
    let (boosted, boosted90) = wake_delays(Some(Phase::Backward));
    println!(
        "MEASURED wake-up delay among 4 hogs (1 ms sleeps): un-hinted median {plain:.0} us (p90 {plain90:.0}), backward median {boosted:.0} us (p90 {boosted90:.0})"
    );
    assert!(
        boosted <= 1000.0,
        "backward median wake-up delay {boosted:.0} us"
    );
    assert!(
        boosted < plain,
        "no better than un-hinted: {boosted:.0} vs {plain:.0} us"
    );
}

#[test]
fn a_thread_named_pt_autograd_is_boosted_without_a_hint() {
    let share_of_named = |args: &[&str]| {
        let _loader = Loader::start(args);
        let hogs = Hogs::start(4);
        let named = Spinner::start(Some("pt_autograd_0"));
        assert!(
            PhaseMap::open_default()
                .unwrap()
                .get(named.tid)
                .unwrap()
                .is_none()
        );
        std::thread::sleep(Duration::from_millis(300));
        let sh = shares(&[named.tid], MEASURE)[0];
        let stats = StatsMap::open(Path::new(PIN_DIR)).unwrap().read().unwrap();
        drop(hogs);
        (sh, stats.slots[Phase::Backward as usize].runtime_ns)
    };
    let (classified, bwd_ns) = share_of_named(&[]);
    let (plain, plain_bwd_ns) = share_of_named(&["--no-classify"]);
    println!(
        "MEASURED classification: pt_autograd_0 got {classified:.1}% of a CPU among 4 hogs; with --no-classify {plain:.1}%"
    );
    assert!(classified >= 85.0, "pt_autograd_0 got {classified:.1}%");
    assert!(
        bwd_ns >= 2_000_000_000,
        "its run time was not counted as backward"
    );
    assert!(plain < 70.0, "--no-classify still boosted it: {plain:.1}%");
    assert!(
        plain_bwd_ns < 100_000_000,
        "--no-classify counted backward time"
    );
}

#[test]
fn an_exiting_thread_takes_its_hint_with_it() {
    let _loader = Loader::start(&[]);
    let map = PhaseMap::open_default().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let tid = scx_phase::hint::tid_map::current_tid();
        hint(tid, Phase::Checkpoint);
        tx.send(tid).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    });
    let tid = rx.recv().unwrap();
    assert!(map.get(tid).unwrap().is_some(), "hint not written");
    t.join().unwrap();
    let t0 = Instant::now();
    while map.get(tid).unwrap().is_some() {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "tid {tid}'s hint outlived it by 1 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "MEASURED stale hint gone {:.1} ms after the thread exited",
        ms(t0.elapsed())
    );
}

#[test]
fn a_value_of_99_written_with_bpftool_is_ignored_and_counted() {
    let _loader = Loader::start(&[]);
    let hogs = Hogs::start(4);
    let spinner = Spinner::start(None);
    let key: Vec<String> = spinner
        .tid
        .to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = std::process::Command::new("bpftool")
        .args([
            "map",
            "update",
            "pinned",
            &format!("{PIN_DIR}/phase_map"),
            "key",
            "hex",
        ])
        .args(&key)
        .args([
            "value", "hex", "63", "00", "00", "00", "ff", "ff", "ff", "ff",
        ])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = StatsMap::open(Path::new(PIN_DIR)).unwrap();
    let before = stats.read().unwrap();
    let sh = shares(&[spinner.tid], Duration::from_secs(2))[0];
    let after = stats.read().unwrap();
    drop(hogs);
    assert_eq!(state(), "enabled");
    assert!(
        after.invalid_hints() > before.invalid_hints(),
        "not counted"
    );
    assert!(sh < 70.0, "a garbage hint boosted the thread: {sh:.1}%");
    println!(
        "MEASURED phase 99: ignored ({sh:.1}% of a CPU, like an un-hinted thread), {} lookups counted invalid",
        after.invalid_hints() - before.invalid_hints()
    );
}
