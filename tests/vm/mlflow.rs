//! `python -m scx_phase.run --mlflow` with the real scheduler: an ordinary
//! MLflow training script (its own run, its own loss metric), run under
//! contention, ends with the scheduler's per-phase figures for that process
//! in its run, logged periodically and at the end, and they agree with the
//! scheduler's own counters over the same time.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use scx_phase::stats::{NR_SLOTS, StatsMap, slot_name};
use serde_json::Value;

use crate::clients::{client_env, root};
use crate::support::*;
use crate::workload::Hogs;

/// The pinned virtualenv (scripts/setup.sh): MLflow beside Debian's torch.
fn venv_python() -> std::path::PathBuf {
    let py = root().join(".cache/py/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup.sh",
        py.display()
    );
    py
}

fn store_env(uri: &str) -> [(&'static str, String); 2] {
    [
        ("MLFLOW_TRACKING_URI", uri.to_string()),
        // mlflow-skinny 3 wants a database; a file store is what a test needs.
        ("MLFLOW_ALLOW_FILE_STORE", "true".into()),
    ]
}

/// The virtualenv's python on the store at `uri`, with HOME `home` and
/// every stdio a pipe.
fn in_store(uri: &str, home: &Path) -> Command {
    let mut c = Command::new(venv_python());
    c.envs(store_env(uri))
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn a_training_runs_mlflow_run_gets_the_schedulers_figures() {
    let _loader = Loader::start(&[]);
    let stats = StatsMap::open(Path::new(PIN_DIR)).unwrap();
    let store = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", store.path().join("mlruns").display());
    // The store's reader starts first and imports MLflow (about 33 s under
    // TCG) beside the run's own imports; it reads the run id from stdin.
    let mut query = in_store(&uri, store.path())
        .arg(root().join("tests/tools/mlflow_run.py"))
        .arg("-")
        .spawn()
        .expect("mlflow_run.py");
    let before = stats.read().unwrap();
    let t0 = Instant::now();
    let mut child = in_store(&uri, store.path())
        .args(["-m", "scx_phase.run", "--mlflow", "--mlflow-every", "3"])
        .arg(root().join("tests/vm/assets/train_mlflow.py"))
        .args(["--seconds", "12", "--hold"])
        .envs(client_env())
        .spawn()
        .expect("the virtualenv's python");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let id = first
        .strip_prefix("started ")
        .unwrap_or_else(|| panic!("no run id: {first:?}"))
        .trim()
        .to_string();
    // Imports done and the run started: train beside two hogs.
    let hogs = Hogs::start(2);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let status = child.wait().unwrap();
    drop(hogs);
    let took = t0.elapsed().as_secs_f64();
    let after = stats.read().unwrap();
    assert!(status.success(), "{text}");
    assert!(!text.contains("not running"), "{text}");
    let loop_cpu: f64 = text
        .lines()
        .find_map(|l| l.split("loop cpu ").nth(1))
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("no loop cpu: {text}"));

    query
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{id}\n").as_bytes())
        .unwrap();
    let q = query.wait_with_output().expect("mlflow_run.py");
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let run: Value = serde_json::from_slice(&q.stdout).unwrap();
    let m = &run["metrics"];
    assert_eq!(run["runs"], serde_json::json!([id]), "one run: {run}");
    assert_eq!(run["status"], "FINISHED", "{run}");
    assert!(m["loss"].is_number(), "the script's own metric: {run}");
    let metric = |name: &str, slot: &str| {
        m[format!("scx_phase.{name}.{slot}")]
            .as_f64()
            .unwrap_or(0.0)
    };

    // The scheduler's counters over the same time; only this process hints.
    let global = |i: usize| {
        let (a, b) = (&after.slots[i], &before.slots[i]);
        (
            (a.runtime_ns - b.runtime_ns) as f64 / 1e9,
            (a.wait_ns - b.wait_ns) as f64 / 1e9,
            (a.wait_hist.iter().sum::<u64>() - b.wait_hist.iter().sum::<u64>()) as f64,
        )
    };
    let mut rows = Vec::new();
    let (mut total, mut boosted_phases) = (0.0, 0.0);
    for i in 0..NR_SLOTS {
        let slot = slot_name(i);
        let cpu = metric("cpu_seconds", slot);
        total += cpu;
        if (2..=5).contains(&i) {
            boosted_phases += cpu;
        }
        if cpu > 0.0 || metric("waits", slot) > 0.0 {
            let (g_cpu, g_wait, g_waits) = global(i);
            rows.push(format!(
                "{slot}: cpu {cpu:.2} s (scheduler {g_cpu:.2}), waited {:.3} s in {} waits (scheduler {g_wait:.3} s in {g_waits})",
                metric("wait_seconds", slot),
                metric("waits", slot)
            ));
        }
    }
    let share = m["scx_phase.boosted_share"].as_f64().unwrap_or(-1.0);
    let logs = run["history"]["scx_phase.cpu_seconds.backward"]
        .as_array()
        .map_or(0, |h| h.len());
    println!(
        "MEASURED MLflow (mlflow-skinny 3.18, file store), `python -m scx_phase.run --mlflow --mlflow-every 3`, a 12 s training loop beside 2 hogs on 2 vCPUs ({took:.0} s in all): run {id} {}; boosted_share {share:.3}; {}; {} periodic and final logs; the loop's own CPU {loop_cpu:.2} s, the logged total {total:.2} s",
        run["status"],
        rows.join("; "),
        logs
    );

    // The training phases ran and waited, and their figures are this
    // process's share of what the scheduler counted in those phases.
    for (i, slot) in [(2, "forward"), (3, "backward"), (4, "optimizer")] {
        let cpu = metric("cpu_seconds", slot);
        let (g_cpu, _, _) = global(i);
        assert!(cpu > 0.1, "{slot}: {cpu} s: {run}");
        assert!(
            (cpu - g_cpu).abs() <= 0.1 * g_cpu + 0.05,
            "{slot}: MLflow {cpu} s vs the scheduler's {g_cpu} s"
        );
    }
    let (_, g_wait, g_waits) = global(3);
    let waits = metric("waits", "backward");
    assert!(waits > 0.0, "backward never waited beside 2 hogs: {run}");
    assert!(
        (waits - g_waits).abs() <= 0.1 * g_waits + 2.0
            && (metric("wait_seconds", "backward") - g_wait).abs() <= 0.1 * g_wait + 0.01,
        "backward waits: MLflow {waits} / {} s vs the scheduler's {g_waits} / {g_wait} s",
        metric("wait_seconds", "backward")
    );
    // Forward, backward, optimizer and checkpoint are the boosted classes.
    assert!(
        (share - boosted_phases / total).abs() < 0.02,
        "boosted_share {share} vs boosted phases' {} of the CPU",
        boosted_phases / total
    );
    // Everything the loop ran is in the figures, and in its boosted phases
    // but what the MLflow logger thread took meanwhile. Not the share
    // itself: the process's un-hinted CPU is mostly importing torch and
    // MLflow, which the host's load stretches (the share was 0.46-0.58 in
    // runs right in every other figure).
    assert!(
        total >= 0.9 * loop_cpu,
        "{total} s logged, the loop ran {loop_cpu} s"
    );
    assert!(
        boosted_phases >= 0.85 * loop_cpu && share > 0.0,
        "{boosted_phases} s in boosted phases of the loop's {loop_cpu} s (share {share})"
    );
    assert!(logs >= 3, "{logs} logs of a 12 s loop every 3 s: {run}");
}
