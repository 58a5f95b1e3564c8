//! `--metrics` with a real Prometheus (Debian's package) scraping it in
//! the VM: the target is up (so Prometheus parsed the OpenMetrics), a rate
//! queried through its API agrees with `--monitor` over the same interval,
//! `promtool check metrics` passes, and every query of the Grafana
//! dashboard in deploy/grafana/ returns data.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::clients::*;
use crate::support::*;
use crate::workload::*;

const METRICS: &str = "127.0.0.1:9464";
const PROMETHEUS: &str = "127.0.0.1:9090";

/// GET `path` from `addr`: (status line, body).
fn get(addr: &str, path: &str, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query through Prometheus's HTTP API, at unix time `at`.
fn query(expr: &str, at: f64) -> Vec<Value> {
    let (status, body) = get(
        PROMETHEUS,
        &format!("/api/v1/query?query={}&time={at:.3}", urlencode(expr)),
        None,
    );
    assert!(status.contains("200"), "{expr}: {status} {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{expr}: {body}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// An instant query now, asked again for up to 10 s while it finds
/// nothing; `misses` counts the empty answers. A scrape that misses its 1 s
/// timeout (TCG, hogs) marks every series stale until the next one, and a
/// query in between finds none (seen once in a suite run).
fn fresh_query(expr: &str, misses: &mut u32) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let r = query(expr, now());
        if !r.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return r;
        }
        *misses += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

struct Prometheus {
    child: Child,
}

impl Prometheus {
    fn start(dir: &std::path::Path) -> Prometheus {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: scx_phase\n    static_configs:\n      - targets: ['{METRICS}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package; scripts/setup.sh installs it)");
        Prometheus { child }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric names in a text exposition.
fn sample_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

#[test]
fn prometheus_scrapes_what_monitor_shows_and_the_dashboard_finds_its_metrics() {
    let _loader = Loader::start(&["--metrics", METRICS]);
    let dir = tempfile::tempdir().unwrap();
    let mut own = spin_c("3", "thread", None);
    let _ = own.line();
    // A workload with a claim, for the per-workload families.
    let mut workload = Command::new(bin_dir().join("workload_spin"))
        .args(["1", "-1", "0", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("workload_spin");
    let mut first = String::new();
    BufReader::new(workload.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.contains("\"error\": 0") || first.contains("\"error\":0"),
        "{first}"
    );

    // What a plain client (curl, promtool) gets: the text format, linted.
    let (status, text) = get(METRICS, "/metrics", None);
    assert!(status.contains("200"), "{status}");
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    let (_, om) = get(METRICS, "/metrics", Some("application/openmetrics-text"));
    assert!(om.ends_with("# EOF\n"), "OpenMetrics without # EOF");
    let (nf, _) = get(METRICS, "/nothing", None);

    let prom = Prometheus::start(dir.path());
    let t0 = Instant::now();
    let target = loop {
        let up = TcpStream::connect(PROMETHEUS).is_ok()
            && get(PROMETHEUS, "/api/v1/targets", None)
                .1
                .contains("\"health\":\"up\"");
        if up {
            let body = get(PROMETHEUS, "/api/v1/targets", None).1;
            let v: Value = serde_json::from_str(&body).unwrap();
            break v["data"]["activeTargets"][0].clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "Prometheus did not scrape {METRICS} in 90 s: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Un-hinted load for the figures, once Prometheus is up: among it,
    // Prometheus took longer to start than the rest of the test.
    let _hogs = Hogs::start(2);

    // --monitor over one 10 s interval, and Prometheus's rate over the same.
    let mut monitor = Command::new(BIN)
        .args(["--monitor", "10", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(monitor.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let at = now();
    let _ = monitor.kill();
    let _ = monitor.wait();
    let report: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line:?}"));
    let monitor_pct = |phase: &str| {
        report["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["phase"] == phase)
            .and_then(|p| p["cpu_pct"].as_f64())
            .unwrap()
    };
    // Let Prometheus take the scrape that closes the interval.
    std::thread::sleep(Duration::from_secs(3));
    let rate = |phase: &str| -> f64 {
        let r = query(
            &format!("rate(scx_phase_cpu_seconds_total{{phase=\"{phase}\"}}[10s])"),
            at,
        );
        r.first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            * 100.0
    };
    let (bwd_mon, bwd_prom) = (monitor_pct("backward"), rate("backward"));
    let (un_mon, un_prom) = (monitor_pct("unhinted"), rate("unhinted"));
    let mut stale = 0;
    let mut scraped = |name: &str| {
        fresh_query(name, &mut stale)
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let attached = scraped("scx_phase_attached");
    let claimed = scraped("sum(scx_phase_workload_claimed_cpus)");

    // The dashboard: every metric it names is served, every query answers.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/scx_phase.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().replace("$instance", ".*"));
        }
    }
    // Names from a fetch now, not the first one: the per-workload families
    // come from workloads.json, which the service rewrites at its next
    // tick after a claim, so a fetch right after the claim can miss them
    // (160 names, the workload's two families missing, in one suite run).
    let names = sample_names(&get(METRICS, "/metrics", None).1);
    let mut missing = Vec::new();
    let mut empty = Vec::new();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("scx_phase_") && !names.iter().any(|n| n == word) {
                missing.push(word.to_string());
            }
        }
        if fresh_query(e, &mut stale).is_empty() {
            empty.push(e.clone());
        }
    }
    let _ = workload.kill();
    let _ = workload.wait();
    drop(prom);

    println!(
        "MEASURED --metrics scraped by Prometheus 2.42 every 1 s (target {}, health {}, last error {:?}): over the same 10 s interval, backward CPU {bwd_mon:.1}% by --monitor vs {bwd_prom:.1}% by rate() through the API; unhinted {un_mon:.1}% vs {un_prom:.1}%; scx_phase_attached {attached}, claimed CPUs {claimed} ({stale} queries found no fresh sample first); promtool check metrics: exit {:?} {:?}; {} dashboard queries, {} metric names checked, missing {missing:?}, empty {empty:?}; /nothing: {nf}",
        target["scrapeUrl"],
        target["health"],
        target["lastError"],
        lint.status.code(),
        String::from_utf8_lossy(&lint.stdout).trim().to_string()
            + String::from_utf8_lossy(&lint.stderr).trim(),
        exprs.len(),
        names.len()
    );
    assert_eq!(target["health"], "up");
    assert_eq!(target["lastError"], "");
    assert!(lint.status.success(), "promtool check metrics failed");
    assert!(nf.contains("404"), "{nf}");
    assert!(bwd_mon > 80.0, "monitor: backward {bwd_mon:.1}%");
    assert!(
        (bwd_prom - bwd_mon).abs() < 10.0,
        "backward: {bwd_prom:.1}% scraped vs {bwd_mon:.1}% monitored"
    );
    assert!(
        (un_prom - un_mon).abs() < 15.0,
        "unhinted: {un_prom:.1}% scraped vs {un_mon:.1}% monitored"
    );
    assert_eq!(attached, 1.0);
    assert_eq!(claimed, 1.0);
    assert!(
        missing.is_empty(),
        "dashboard metrics not served: {missing:?}"
    );
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:?}"
    );
}

#[test]
fn a_client_that_trickles_its_request_delays_no_other_scrape() {
    let _loader = Loader::start(&["--metrics", METRICS]);
    let (status, _) = get(METRICS, "/metrics", None);
    assert!(status.contains("200"), "{status}");
    // Three clients send a byte every 1.5 s and never finish a request.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(METRICS).unwrap();
                let mut held = Duration::ZERO;
                for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || s.write_all(&[*b]).is_err()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1500));
                    held += Duration::from_millis(1500);
                }
                held
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut took = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let (status, body) = get(METRICS, "/metrics", None);
        took.push(t0.elapsed());
        assert!(
            status.contains("200") && body.contains("scx_phase_attached 1"),
            "{status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let held: Vec<Duration> = slow.into_iter().map(|h| h.join().unwrap()).collect();
    let worst = took.iter().max().unwrap();
    println!(
        "MEASURED 5 scrapes beside 3 clients sending a byte every 1.5 s: {:?} ms each; the slow clients were cut off after {:?} ms",
        took.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        held.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    assert!(
        *worst < Duration::from_millis(1500),
        "a scrape took {worst:?} beside slow clients"
    );
    assert_eq!(state(), "enabled");
}
