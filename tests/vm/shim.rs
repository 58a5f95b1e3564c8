//! The hint libraries against the running scheduler: a C program's hints in
//! `scx_phase dump`, a Python thread's `with phase(...)` in the stats.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use scx_phase::Phase;
use scx_phase::stats::StatsMap;

use crate::common::{build_c, lib_dir};
use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_c_programs_hint_appears_in_dump_and_goes_with_it() {
    let _loader = Loader::start(&[]);
    let exe = std::env::temp_dir().join("hint_test");
    build_c("hint_test.c", &exe, "-O0");
    let mut child = Command::new(&exe)
        .args(["--hold", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let tid: u32 = line.trim().strip_prefix("tid=").unwrap().parse().unwrap();

    let out = scx_phase(&["dump", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["tid"] == serde_json::json!(tid))
        .unwrap_or_else(|| panic!("tid {tid} not in {v}"));
    assert_eq!(entry["phase"], "checkpoint", "{entry}");
    assert_eq!(entry["thread"], "hint_test", "{entry}");

    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    let out = scx_phase(&["get", "--tid", &tid.to_string()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the exited program's hint is still there"
    );
    println!("MEASURED C shim: hint of tid {tid} in `scx_phase dump` as {entry}; gone after exit");
}

#[test]
fn a_python_with_phase_block_shows_in_the_stats() {
    let _loader = Loader::start(&[]);
    let stats = StatsMap::open(Path::new(PIN_DIR)).unwrap();
    let before = stats.read().unwrap();
    let code = "import time, scx_phase\n\
                with scx_phase.phase('backward'):\n\
                \x20   t = time.monotonic()\n\
                \x20   while time.monotonic() - t < 1.5: pass\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", code])
        .env("PYTHONPATH", root().join("python"))
        .env("SCX_PHASE_LIB", lib_dir().join("libscx_phase.so"))
        .output()
        .expect("/usr/bin/python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = stats.read().unwrap();
    let bwd = Phase::Backward as usize;
    let ran = after.slots[bwd].runtime_ns - before.slots[bwd].runtime_ns;
    println!(
        "MEASURED Python shim: a 1.5 s `with phase('backward')` block: {:.0} ms accounted to backward",
        ran as f64 / 1e6
    );
    assert!(ran >= 1_000_000_000, "only {ran} ns accounted to backward");
}

#[test]
fn an_unmodified_pytorch_script_under_scx_phase_run_hints_every_phase() {
    let _loader = Loader::start(&[]);
    let stats = StatsMap::open(Path::new(PIN_DIR)).unwrap();
    let before = stats.read().unwrap();
    let script = root().join("tests/vm/assets/train_tiny.py");
    let t0 = std::time::Instant::now();
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "scx_phase.run"])
        .arg(&script)
        .args(["--steps", "4"])
        .env("PYTHONPATH", root().join("python"))
        .env("SCX_PHASE_LIB", lib_dir().join("libscx_phase.so"))
        .env("SCX_PHASE_VERBOSE", "1")
        .output()
        .expect("/usr/bin/python3 (python3-torch)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("step 3 loss"), "{text}");
    assert!(!text.contains("not running"), "{text}");
    let after = stats.read().unwrap();
    let ms = |p: Phase| {
        (after.slots[p as usize].runtime_ns - before.slots[p as usize].runtime_ns) as f64 / 1e6
    };
    let got: Vec<(Phase, f64)> = [
        Phase::DataLoading,
        Phase::Forward,
        Phase::Backward,
        Phase::Optimizer,
        Phase::Checkpoint,
    ]
    .into_iter()
    .map(|p| (p, ms(p)))
    .collect();
    println!(
        "MEASURED PyTorch {} under `python -m scx_phase.run`, 4 steps in {:.0} s: {}",
        text.lines().find(|l| l.contains("hooked")).unwrap_or("?"),
        t0.elapsed().as_secs_f64(),
        got.iter()
            .map(|(p, ms)| format!("{p} {ms:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (p, ms) in &got {
        assert!(*ms > 0.0, "no run time in {p}: {got:?}");
    }
    // The script itself never mentions scx_phase.
    let src = std::fs::read_to_string(&script).unwrap();
    assert!(!src.contains("import scx_phase"));
}
