//! The scx project's smoke test: heavy CPU, fork and affinity churn while
//! the scheduler stays attached and the kernel reports no stall.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn stress_ng_45s_with_affinity_churn_no_stall() {
    let dmesg_before = dmesg_lines();
    let loader = Loader::start(&[]);
    let n = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let t0 = Instant::now();
    let mut stress = Command::new("stress-ng")
        .args(["--cpu", &n, "--fork", &n, "--affinity", &n, "--aggressive"])
        .args(["--timeout", "45s", "--metrics-brief"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("stress-ng (scripts/setup.sh installs it)");
    let mut samples = 0;
    let mut detached_at = None;
    while stress.try_wait().unwrap().is_none() {
        samples += 1;
        if detached_at.is_none() && !(state() == "enabled" && ops().starts_with("scx_phase")) {
            detached_at = Some(t0.elapsed());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "stress-ng did not finish"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = stress.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        detached_at,
        None,
        "scheduler detached during stress-ng: {}",
        loader.log()
    );
    assert!(out.status.success(), "stress-ng failed: {report}");
    assert_eq!(state(), "enabled");

    // Only what the kernel said during this test.
    let dmesg: Vec<String> = dmesg_lines().split_off(dmesg_before.len());
    let bad = kernel_complaints(&dmesg);
    assert!(bad.is_empty(), "dmesg: {bad:#?}");
    let metrics: Vec<&str> = report
        .lines()
        .filter(|l| {
            l.contains("cpu ")
                || l.contains("fork ")
                || l.contains("affinity ")
                || l.contains("successful run")
        })
        .collect();
    println!(
        "MEASURED stress-ng smoke: {:.0} s, {samples} state samples all 'enabled', no stall in dmesg\n{}",
        t0.elapsed().as_secs_f64(),
        metrics.join("\n")
    );
    drop(loader);
}
