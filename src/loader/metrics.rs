//! `--metrics ADDR`: the scheduler's counters for Prometheus, served at
//! `/metrics` by a small HTTP/1.1 server on its own thread. Prometheus asks
//! for OpenMetrics and gets it; other clients (curl, promtool) get the
//! classic Prometheus text format of the same families.
//!
//! Everything is read at scrape time from what `--monitor` reads (the
//! pinned stats, the hint service's counters, the workload list), so a
//! scrape costs the scheduler nothing. The per-workload families are
//! bounded by `--metrics-max-workloads`: the busiest workloads get their
//! own pid/uid/cgroup labels, the rest one `pid="other"` series.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::service::status_file;
use crate::service::status_file::{WorkloadRow, WorkloadsFile};
use anyhow::{Context, Result};
use log::warn;
use scx_phase::stats::{self, NR_SLOTS, ServiceReport, Snapshot, StatsMap, WAIT_BUCKETS};

/// A client gets this long, in all, to send its request, and as long
/// again to take the answer: one that trickles a byte at a time cannot
/// hold its connection longer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Scrapes served at once, each on a thread of its own: a slow client
/// holds only its own. Connections beyond this are closed unanswered.
const MAX_CONCURRENT: usize = 16;
const MAX_REQUEST: usize = 8192;
const MAX_CGROUP_LABEL: usize = 256;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

struct Sample {
    suffix: &'static str,
    labels: Vec<(&'static str, String)>,
    value: f64,
}

struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: Vec<Sample>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, suffix: &'static str, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample {
            suffix,
            labels,
            value,
        });
    }

    /// One counter sample (`_total`).
    fn total(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.add("_total", labels, value);
    }
}

/// What a scrape sees: every part is optional, as any may be missing
/// (between a restart's detach and attach there are no stats).
pub struct Inputs {
    pub attached: bool,
    pub stats: Option<Snapshot>,
    pub service: Option<ServiceReport>,
    pub workloads: Option<WorkloadsFile>,
    pub max_workloads: usize,
}

impl Inputs {
    fn read(pin_dir: &Path, socket: &Path, max_workloads: usize) -> Inputs {
        Inputs {
            attached: crate::loader::preflight::scx_phase_attached(),
            stats: StatsMap::open(pin_dir).ok().and_then(|m| m.read().ok()),
            service: scx_phase::inspect::read_service_stats(pin_dir)
                .ok()
                .map(Into::into),
            workloads: status_file::read(pin_dir, socket).ok(),
            max_workloads,
        }
    }
}

fn phase(i: usize) -> Vec<(&'static str, String)> {
    vec![("phase", stats::slot_name(i).to_string())]
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn phase_families(s: &Snapshot) -> Vec<Family> {
    let mut cpu = Family::new(
        "scx_phase_cpu_seconds",
        Kind::Counter,
        "CPU time of threads in each phase (unhinted: no hint)",
    );
    let mut wait = Family::new(
        "scx_phase_wait_seconds",
        Kind::Histogram,
        "Time threads of each phase waited runnable before they ran",
    );
    let mut enq = Family::new(
        "scx_phase_enqueues",
        Kind::Counter,
        "Times a thread of each phase was queued to run",
    );
    let mut pre = Family::new(
        "scx_phase_preemptions",
        Kind::Counter,
        "CPUs a waking thread of each phase took from lower classes",
    );
    let mut budget = Family::new(
        "scx_phase_budget_exhaustions",
        Kind::Counter,
        "Boost-budget windows each phase used up",
    );
    let mut threads = Family::new(
        "scx_phase_threads",
        Kind::Gauge,
        "Threads in each phase now",
    );
    let mut from_process = Family::new(
        "scx_phase_process_phase_cpu_seconds",
        Kind::Counter,
        "CPU time in each phase that came from a process-wide phase",
    );
    for (i, c) in s.slots.iter().enumerate() {
        cpu.total(phase(i), secs(c.runtime_ns));
        let mut below = 0;
        for b in 0..WAIT_BUCKETS {
            below += c.wait_hist[b];
            let le = stats::wait_bucket_le(b).map_or("+Inf".to_string(), |v| format!("{v:e}"));
            let mut l = phase(i);
            l.push(("le", le));
            wait.add("_bucket", l, below as f64);
        }
        wait.add("_count", phase(i), below as f64);
        wait.add("_sum", phase(i), secs(c.wait_ns));
        enq.total(phase(i), c.enqueues as f64);
        pre.total(phase(i), c.preemptions as f64);
        budget.total(phase(i), c.budget_exhaustions as f64);
        threads.add("", phase(i), c.threads.max(0) as f64);
        from_process.total(phase(i), secs(c.process_ns));
    }
    let loading = &s.slots[scx_phase::Phase::DataLoading as usize];
    let mut locality = Family::new(
        "scx_phase_data_loading_cpu_seconds",
        Kind::Counter,
        "CPU time of data loaders on the NUMA node of their hint, and off it",
    );
    locality.total(vec![("node", "own".into())], secs(loading.local_ns));
    locality.total(vec![("node", "other".into())], secs(loading.remote_ns));
    let mut hints = Family::new(
        "scx_phase_ignored_hints",
        Kind::Counter,
        "Hints the scheduler ignored: out of range (invalid), or a phase the writer may not set (refused)",
    );
    hints.total(vec![("reason", "invalid".into())], s.invalid_hints() as f64);
    hints.total(vec![("reason", "refused".into())], s.refused_hints() as f64);
    let mut tick_resolves = Family::new(
        "scx_phase_tick_full_resolves",
        Kind::Counter,
        "Ticks that resolved their task's hint in full; the others found its slots and name unchanged",
    );
    tick_resolves.total(vec![], s.tick_resolves() as f64);
    let mut calls = Family::new(
        "scx_phase_callback_calls",
        Kind::Counter,
        "Times each scheduler callback ran",
    );
    let mut cpus = Family::new(
        "scx_phase_callback_cpus_visited",
        Kind::Counter,
        "CPUs each callback looked at, in all (divide by its calls for the mean)",
    );
    let mut queues = Family::new(
        "scx_phase_callback_queues_visited",
        Kind::Counter,
        "Queues each callback looked at, in all (divide by its calls for the mean)",
    );
    let mut cpus_max = Family::new(
        "scx_phase_callback_cpus_visited_max",
        Kind::Gauge,
        "Most CPUs one call of each callback looked at since start",
    );
    let mut queues_max = Family::new(
        "scx_phase_callback_queues_visited_max",
        Kind::Gauge,
        "Most queues one call of each callback looked at since start",
    );
    for (name, w) in stats::CALLBACKS.iter().zip(&s.work) {
        let l = || vec![("callback", name.to_string())];
        calls.total(l(), w.calls as f64);
        cpus.total(l(), w.cpus as f64);
        queues.total(l(), w.queues as f64);
        cpus_max.add("", l(), w.max_cpus as f64);
        queues_max.add("", l(), w.max_queues as f64);
    }
    vec![
        cpu,
        wait,
        enq,
        pre,
        budget,
        threads,
        from_process,
        locality,
        hints,
        tick_resolves,
        calls,
        cpus,
        queues,
        cpus_max,
        queues_max,
    ]
}

fn service_families(s: &ServiceReport) -> Vec<Family> {
    let mut reqs = Family::new(
        "scx_phase_service_requests",
        Kind::Counter,
        "Requests to the hint service, by outcome",
    );
    for (outcome, n) in [
        ("registered", s.registrations),
        ("one_shot_hint", s.one_shot_hints),
        ("refused", s.refused),
        ("bad", s.bad_requests),
    ] {
        reqs.total(vec![("outcome", outcome.into())], n as f64);
    }
    let mut dropped = Family::new(
        "scx_phase_service_dropped_clients",
        Kind::Counter,
        "Clients the hint service hung up on (floods, garbage)",
    );
    dropped.total(vec![], s.dropped_clients as f64);
    let mut conns = Family::new(
        "scx_phase_service_connections",
        Kind::Gauge,
        "Open connections to the hint service",
    );
    conns.add("", vec![], s.connections as f64);
    let mut procs = Family::new(
        "scx_phase_service_processes",
        Kind::Gauge,
        "Processes registered with the hint service",
    );
    procs.add("", vec![], s.workloads as f64);
    vec![reqs, dropped, conns, procs]
}

/// A workload's labels: pid, uid, and its cgroup (cut to a bounded length).
fn workload_labels(w: &WorkloadRow) -> Vec<(&'static str, String)> {
    let mut cgroup = w.cgroup.clone().unwrap_or_default();
    if cgroup.len() > MAX_CGROUP_LABEL {
        let mut cut = MAX_CGROUP_LABEL;
        while !cgroup.is_char_boundary(cut) {
            cut -= 1;
        }
        cgroup.truncate(cut);
    }
    vec![
        ("pid", w.pid.to_string()),
        ("uid", w.uid.to_string()),
        ("cgroup", cgroup),
    ]
}

fn workload_cpu_ms(w: &WorkloadRow, slot: usize) -> u64 {
    w.cpu_ms(stats::slot_name(slot))
}

fn workload_families(v: &WorkloadsFile, max: usize) -> Vec<Family> {
    let mut rows: Vec<&WorkloadRow> = v.workloads.iter().collect();
    let busy = |w: &WorkloadRow| (0..NR_SLOTS).map(|i| workload_cpu_ms(w, i)).sum::<u64>();
    rows.sort_by_key(|w| std::cmp::Reverse(busy(w)));
    let mut n = Family::new(
        "scx_phase_workloads",
        Kind::Gauge,
        "Workloads registered through the workload API",
    );
    n.add("", vec![], rows.len() as f64);
    let mut claimed = Family::new(
        "scx_phase_workload_claimed_cpus",
        Kind::Gauge,
        "CPUs a workload has claimed, exclusively or not",
    );
    let mut cpu = Family::new(
        "scx_phase_workload_cpu_seconds",
        Kind::Counter,
        "CPU time of a workload's threads in each phase since it registered",
    );
    let mut other_claims = [0u64; 2];
    let mut other_cpu = [0u64; NR_SLOTS];
    for (k, w) in rows.iter().enumerate() {
        let (shared, exclusive) = w.cpus_claimed();
        let cpus = [shared, exclusive];
        if k >= max {
            for (o, c) in other_claims.iter_mut().zip(cpus) {
                *o += c;
            }
            for (i, o) in other_cpu.iter_mut().enumerate() {
                *o += workload_cpu_ms(w, i);
            }
            continue;
        }
        let labels = workload_labels(w);
        for (excl, n) in ["false", "true"].iter().zip(cpus) {
            let mut l = labels.clone();
            l.push(("exclusive", excl.to_string()));
            claimed.add("", l, n as f64);
        }
        for i in 0..NR_SLOTS {
            let mut l = labels.clone();
            l.extend(phase(i));
            cpu.total(l, workload_cpu_ms(w, i) as f64 / 1e3);
        }
    }
    if rows.len() > max {
        let labels = vec![
            ("pid", "other".to_string()),
            ("uid", String::new()),
            ("cgroup", String::new()),
        ];
        for (excl, n) in ["false", "true"].iter().zip(other_claims) {
            let mut l = labels.clone();
            l.push(("exclusive", excl.to_string()));
            claimed.add("", l, n as f64);
        }
        for (i, ms) in other_cpu.iter().enumerate() {
            let mut l = labels.clone();
            l.extend(phase(i));
            cpu.total(l, *ms as f64 / 1e3);
        }
    }
    vec![n, claimed, cpu]
}

fn families(inp: &Inputs) -> Vec<Family> {
    let mut up = Family::new(
        "scx_phase_attached",
        Kind::Gauge,
        "1 when scx_phase is the attached sched_ext scheduler",
    );
    up.add("", vec![], f64::from(u8::from(inp.attached)));
    let mut info = Family::new(
        "scx_phase_build_info",
        Kind::Gauge,
        "The running scx_phase's version (always 1)",
    );
    info.add("", vec![("version", env!("CARGO_PKG_VERSION").into())], 1.0);
    let mut all = vec![up, info];
    if let Some(s) = &inp.stats {
        all.extend(phase_families(s));
    }
    if let Some(s) = &inp.service {
        all.extend(service_families(s));
    }
    if let Some(w) = &inp.workloads {
        all.extend(workload_families(w, inp.max_workloads));
    }
    all
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

/// The exposition: OpenMetrics 1.0 when `open_metrics`, else the
/// Prometheus text format 0.0.4 (whose counters are typed by their
/// `_total` name, and which has no `# EOF`).
pub fn render(inp: &Inputs, open_metrics: bool) -> String {
    let mut out = String::new();
    for f in families(inp) {
        let typed = if f.kind == Kind::Counter && !open_metrics {
            format!("{}_total", f.name)
        } else {
            f.name.to_string()
        };
        let _ = writeln!(out, "# TYPE {typed} {}", kind_name(f.kind));
        let _ = writeln!(out, "# HELP {typed} {}", f.help);
        for s in &f.samples {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", labels.join(","))
            };
            let _ = writeln!(out, "{}{}{labels} {}", f.name, s.suffix, s.value);
        }
    }
    if open_metrics {
        out.push_str("# EOF\n");
    }
    out
}

const OPEN_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The time left until `deadline`, or None once it passed.
fn left(deadline: Instant) -> Option<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    (!d.is_zero()).then_some(d)
}

/// Read one request head: its request line and whether it asks for
/// OpenMetrics. None if the client sent nothing usable by `deadline`.
fn read_request(conn: &mut TcpStream, deadline: Instant) -> Option<(String, bool)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        conn.set_read_timeout(Some(left(deadline)?)).ok()?;
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next()?.to_string();
    let open_metrics = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("accept:") && l.contains("application/openmetrics-text")
    });
    Some((line, open_metrics))
}

/// Write all of `bytes` by `deadline`, or give up.
fn write_by(conn: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> Option<()> {
    while !bytes.is_empty() {
        conn.set_write_timeout(Some(left(deadline)?)).ok()?;
        match conn.write(bytes) {
            Ok(0) => return None,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(())
}

fn answer(conn: &mut TcpStream, status: &str, ctype: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A client that went away, or reads too slowly, is its own problem.
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let _ = write_by(conn, head.as_bytes(), deadline)
        .and_then(|_| write_by(conn, body.as_bytes(), deadline));
}

fn serve_one(mut conn: TcpStream, pin_dir: &Path, socket: &Path, max_workloads: usize) {
    let Some((line, open_metrics)) = read_request(&mut conn, Instant::now() + CLIENT_TIMEOUT)
    else {
        return;
    };
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let inp = Inputs::read(pin_dir, socket, max_workloads);
            let ctype = if open_metrics { OPEN_METRICS } else { TEXT };
            answer(&mut conn, "200 OK", ctype, &render(&inp, open_metrics));
        }
        ("GET", _) => answer(
            &mut conn,
            "404 Not Found",
            "text/plain",
            "scx_phase serves /metrics only\n",
        ),
        _ => answer(
            &mut conn,
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n",
        ),
    }
}

/// One scrape being served; counted out when its thread ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Listen on `addr` and serve scrapes for as long as the process runs,
/// each on a thread of its own, up to MAX_CONCURRENT at once. Fails only
/// if `addr` cannot be bound.
pub fn start(addr: SocketAddr, pin_dir: &Path, socket: &Path, max_workloads: usize) -> Result<()> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("--metrics: cannot listen on {addr}"))?;
    let (pin_dir, socket): (Arc<PathBuf>, Arc<PathBuf>) =
        (Arc::new(pin_dir.into()), Arc::new(socket.into()));
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("scx_phase-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("--metrics: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONCURRENT {
                    active.fetch_sub(1, Ordering::Relaxed);
                    continue; // closed unanswered: as many are being served
                }
                let guard = Active(Arc::clone(&active));
                let (pin_dir, socket) = (Arc::clone(&pin_dir), Arc::clone(&socket));
                let spawned = std::thread::Builder::new()
                    .name("scx_phase-scrape".into())
                    .spawn(move || {
                        let _guard = guard;
                        serve_one(conn, &pin_dir, &socket, max_workloads);
                    });
                if let Err(e) = spawned {
                    warn!("--metrics: cannot start a thread for a scrape: {e}");
                }
            }
        })
        .context("--metrics: cannot start its thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::service::status_file::ClaimRow;

    fn inputs() -> Inputs {
        let mut s = Snapshot {
            slots: Default::default(),
            work: Default::default(),
            at: std::time::Instant::now(),
        };
        s.work[2].calls = 40;
        s.work[2].cpus = 120;
        s.work[2].max_cpus = 7;
        let bwd = scx_phase::Phase::Backward as usize;
        s.slots[bwd].runtime_ns = 2_500_000_000;
        s.slots[bwd].wait_hist = [1, 2, 3, 0, 0, 0, 4];
        s.slots[bwd].wait_ns = 7_000_000_000;
        let row =
            |pid: u32, cgroup: &str, cpus: &[u32], exclusive: bool, ms: (&str, u64)| WorkloadRow {
                pid,
                uid: 990 + pid,
                cgroup: Some(cgroup.into()),
                claims: if cpus.is_empty() {
                    vec![]
                } else {
                    vec![ClaimRow {
                        cpus: cpus.to_vec(),
                        exclusive,
                        ..Default::default()
                    }]
                },
                cpu_ms: Some(BTreeMap::from([(ms.0.to_string(), ms.1)])),
                ..Default::default()
            };
        let workloads = WorkloadsFile {
            workloads: vec![
                row(10, "/a\"b", &[2, 3], true, ("backward", 1500)),
                row(11, "/c", &[], false, ("forward", 10)),
                row(12, "/d", &[1], false, ("forward", 5)),
            ],
            ..Default::default()
        };
        Inputs {
            attached: true,
            stats: Some(s),
            service: Some(ServiceReport::default()),
            workloads: Some(workloads),
            max_workloads: 1,
        }
    }

    #[test]
    fn open_metrics_types_families_and_ends_with_eof() {
        let text = render(&inputs(), true);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("scx_phase_callback_cpus_visited_total{callback=\"dispatch\"} 120\n")
        );
        assert!(text.contains("scx_phase_callback_cpus_visited_max{callback=\"dispatch\"} 7\n"));
        assert!(text.contains("scx_phase_callback_calls_total{callback=\"spill_timer\"} 0\n"));
        assert!(text.contains("# TYPE scx_phase_cpu_seconds counter\n"));
        assert!(text.contains("scx_phase_cpu_seconds_total{phase=\"backward\"} 2.5\n"));
        // Buckets are cumulative and end at +Inf with the count.
        assert!(text.contains("scx_phase_wait_seconds_bucket{phase=\"backward\",le=\"1e-5\"} 1\n"));
        assert!(text.contains("scx_phase_wait_seconds_bucket{phase=\"backward\",le=\"1e-3\"} 6\n"));
        assert!(
            text.contains("scx_phase_wait_seconds_bucket{phase=\"backward\",le=\"+Inf\"} 10\n")
        );
        assert!(text.contains("scx_phase_wait_seconds_count{phase=\"backward\"} 10\n"));
        assert!(text.contains("scx_phase_wait_seconds_sum{phase=\"backward\"} 7\n"));
        assert!(text.contains("scx_phase_attached 1\n"));
    }

    #[test]
    fn the_text_format_names_counters_by_their_total() {
        let text = render(&inputs(), false);
        assert!(text.contains("# TYPE scx_phase_cpu_seconds_total counter\n"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn workloads_past_the_bound_are_summed_as_other_and_labels_escaped() {
        let text = render(&inputs(), true);
        // The busiest one by name, with its quote escaped.
        assert!(text.contains(
            "scx_phase_workload_claimed_cpus{pid=\"10\",uid=\"1000\",cgroup=\"/a\\\"b\",exclusive=\"true\"} 2\n"
        ), "{text}");
        assert!(!text.contains("pid=\"11\""));
        assert!(text.contains(
            "scx_phase_workload_claimed_cpus{pid=\"other\",uid=\"\",cgroup=\"\",exclusive=\"false\"} 1\n"
        ));
        assert!(text.contains(
            "scx_phase_workload_cpu_seconds_total{pid=\"other\",uid=\"\",cgroup=\"\",phase=\"forward\"} 0.015\n"
        ));
        assert!(text.contains("scx_phase_workloads 3\n"));
    }

    #[test]
    fn a_bound_of_zero_names_no_tenant() {
        let mut inp = inputs();
        inp.max_workloads = 0;
        let text = render(&inp, true);
        for tenant in ["pid=\"10\"", "pid=\"11\"", "uid=\"1000\"", "cgroup=\"/c\""] {
            assert!(!text.contains(tenant), "{tenant} in {text}");
        }
        assert!(text.contains(
            "scx_phase_workload_cpu_seconds_total{pid=\"other\",uid=\"\",cgroup=\"\",phase=\"backward\"} 1.5\n"
        ), "{text}");
    }
}
