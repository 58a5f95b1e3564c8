//! Cost of one set_phase from Rust, C and Python, on the host against a
//! real BPF hash map in a private bpffs: `cargo bench --bench set_phase`.
//! Prints p50 and p99 per call, and a JSON line for machines.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use scx_phase::Phase;
use scx_phase::hint;
use scx_phase::hint::tid_map::{self, PhaseMap};

use common::{TempBpffs, build_c, lib_dir};

const CALLS: usize = 200_000;

fn percentiles(mut d: Vec<u64>) -> (u64, u64) {
    d.sort_unstable();
    (d[d.len() / 2], d[d.len() * 99 / 100])
}

fn rust(map_path: &Path) -> (u64, u64) {
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var(hint::MAP_ENV, map_path) };
    hint::set_phase(Phase::Forward).expect("map");
    let mut d = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let p = if i & 1 == 0 {
            Phase::Backward
        } else {
            Phase::Forward
        };
        let t0 = Instant::now();
        hint::set_phase(p).unwrap();
        d.push(t0.elapsed().as_nanos() as u64);
    }
    percentiles(d)
}

fn c(map_path: &Path, work: &Path) -> (u64, u64) {
    let exe = work.join("hint_bench");
    build_c("hint_bench.c", &exe, "-O2");
    let out = Command::new(&exe)
        .arg(CALLS.to_string())
        .env(hint::MAP_ENV, map_path)
        .output()
        .expect("run C bench");
    assert!(out.status.success(), "C bench failed");
    p50_p99(&out.stdout)
}

/// "<p50> <p99>" as printed by the C and Python benches.
fn p50_p99(stdout: &[u8]) -> (u64, u64) {
    let s = String::from_utf8_lossy(stdout);
    let v: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [p50, p99, ..] => (p50, p99),
        _ => panic!("expected '<p50> <p99>', got {s:?}"),
    }
}

const PY_BENCH: &str = r#"
import sys, time, scx_phase
n = int(sys.argv[1])
set_phase = scx_phase.set_phase
clock = time.perf_counter_ns
set_phase("forward")
d = []
for i in range(n):
    p = "backward" if i & 1 else "forward"
    t0 = clock()
    set_phase(p)
    d.append(clock() - t0)
d.sort()
print(d[n // 2], d[n * 99 // 100])
"#;

fn python(map_path: &Path) -> (u64, u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PY_BENCH, &(CALLS / 2).to_string()])
        .env("PYTHONPATH", root.join("python"))
        .env("SCX_PHASE_LIB", lib_dir().join("libscx_phase.so"))
        .env(hint::MAP_ENV, map_path)
        .output()
        .expect("/usr/bin/python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p50_p99(&out.stdout)
}

fn main() {
    let fs = TempBpffs::new();
    let dir = fs.pin_dir();
    let path = tid_map::map_path(&dir);
    let _map = PhaseMap::create_pinned(&path, 65_536).expect("create map");
    let work = tempfile::tempdir().unwrap();

    let (r50, r99) = rust(&path);
    let (c50, c99) = c(&path, work.path());
    let (p50, p99) = python(&path);
    println!("set_phase cost, {CALLS} calls each, real BPF hash map on this host:");
    println!("  {:<8} p50 {:>6} ns   p99 {:>6} ns", "Rust", r50, r99);
    println!("  {:<8} p50 {:>6} ns   p99 {:>6} ns", "C", c50, c99);
    println!("  {:<8} p50 {:>6} ns   p99 {:>6} ns", "Python", p50, p99);
    println!(
        "{{\"rust_p50_ns\":{r50},\"rust_p99_ns\":{r99},\"c_p50_ns\":{c50},\"c_p99_ns\":{c99},\"python_p50_ns\":{p50},\"python_p99_ns\":{p99}}}"
    );
}
