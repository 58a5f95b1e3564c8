//! Cost of one set_phase from Rust, C and Python, on the host, on both
//! paths side by side: the hint service (a store to the process's hint
//! memory, after one registration) and the pinned tid map (one bpf() call
//! to a real BPF hash map in a private bpffs). `cargo bench --bench
//! set_phase`. Each figure is p50 and p99 over SAMPLES timings of BATCH
//! calls (a single store is shorter than the clock's own cost). Prints a
//! line per language and path, and a JSON line.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use scx_phase::Phase;
use scx_phase::hint::tid_map::{self, PhaseHint, PhaseMap};
use scx_phase::hint::{self, protocol};

use common::{HintService, build_c, lib_dir};

const SAMPLES: usize = 2000;
const BATCH: usize = 100;

fn percentiles(mut d: Vec<f64>) -> (f64, f64) {
    d.sort_by(f64::total_cmp);
    (d[d.len() / 2], d[d.len() * 99 / 100])
}

/// p50/p99 per call of `f` over SAMPLES batches.
fn time(mut f: impl FnMut(usize)) -> (f64, f64) {
    f(0);
    let mut d = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t0 = Instant::now();
        for i in 0..BATCH {
            f(i);
        }
        d.push(t0.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    percentiles(d)
}

fn phase(i: usize) -> Phase {
    if i & 1 == 0 {
        Phase::Backward
    } else {
        Phase::Forward
    }
}

fn rust_store() -> (f64, f64) {
    time(|i| hint::set_phase(phase(i)).expect("hint service"))
}

fn rust_bpf(map: &PhaseMap) -> (f64, f64) {
    let me = hint::current_tid() as u32;
    time(|i| map.set(me, PhaseHint::new(phase(i), None)).unwrap())
}

/// "<p50> <p99>" as printed by the C and Python benches.
fn p50_p99(stdout: &[u8]) -> (f64, f64) {
    let s = String::from_utf8_lossy(stdout);
    let v: Vec<f64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [p50, p99, ..] => (p50, p99),
        _ => panic!("expected '<p50> <p99>', got {s:?}"),
    }
}

fn c(exe: &Path, env: (&str, &Path)) -> (f64, f64) {
    let out = Command::new(exe)
        .arg(SAMPLES.to_string())
        .env(env.0, env.1)
        .output()
        .expect("run C bench");
    assert!(out.status.success(), "C bench failed");
    p50_p99(&out.stdout)
}

const PY_BENCH: &str = r#"
import sys, time, scx_phase
n, batch = int(sys.argv[1]), int(sys.argv[2])
set_phase = scx_phase.set_phase
clock = time.perf_counter_ns
set_phase("forward")
d = []
for _ in range(n):
    t0 = clock()
    for i in range(batch):
        set_phase("backward" if i & 1 else "forward")
    d.append((clock() - t0) / batch)
d.sort()
print(d[n // 2], d[n * 99 // 100])
"#;

fn python(env: (&str, &Path)) -> (f64, f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PY_BENCH, &SAMPLES.to_string(), &BATCH.to_string()])
        .env("PYTHONPATH", root.join("python"))
        .env("SCX_PHASE_LIB", lib_dir().join("libscx_phase.so"))
        .env(env.0, env.1)
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
    let svc = HintService::start();
    let socket = svc.socket();
    let map_path = tid_map::map_path(&svc.pin_dir());
    let map = PhaseMap::open(&map_path).expect("the service's tid map");
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var(protocol::SOCKET_ENV, &socket) };
    let work = tempfile::tempdir().unwrap();
    let exe = work.path().join("hint_bench");
    build_c("hint_bench.c", &exe, "-O2");

    let rows = [
        ("Rust/store", rust_store()),
        ("Rust/bpf", rust_bpf(&map)),
        ("C/store", c(&exe, (protocol::SOCKET_ENV, &socket))),
        ("C/bpf", c(&exe, (hint::MAP_ENV, &map_path))),
        ("Python/store", python((protocol::SOCKET_ENV, &socket))),
        ("Python/bpf", python((hint::MAP_ENV, &map_path))),
    ];
    println!(
        "set_phase cost per call on this host, {SAMPLES} timings of {BATCH} calls; store = hint service, bpf = tid map:"
    );
    for (name, (p50, p99)) in &rows {
        println!("  {name:<12} p50 {p50:>8.1} ns   p99 {p99:>8.1} ns");
    }
    let json: Vec<String> = rows
        .iter()
        .map(|(n, (a, b))| {
            let k = n.to_lowercase().replace('/', "_");
            format!("\"{k}_p50_ns\":{a:.1},\"{k}_p99_ns\":{b:.1}")
        })
        .collect();
    println!("{{{}}}", json.join(","));
}
