//! The `set`, `get`, `clear` and `dump` subcommands: hints by hand.
//!
//! Root writes the pinned tid map directly (the admin path). Anyone else
//! goes through the hint service and its rules, naming threads as their
//! own PID namespace numbers them. `get` and `dump` read the pinned `hints`
//! iterator, which resolves every task's phase with the scheduler's own
//! code, so they show every effective hint from every source.

use std::path::Path;

use anyhow::{Result, bail};
use scx_phase::Phase;
use scx_phase::bpf_intf::{
    hint_dump, scx_phase_hint_source_SCX_PHASE_SRC_NAME as SRC_NAME,
    scx_phase_hint_source_SCX_PHASE_SRC_PROCESS as SRC_PROCESS,
    scx_phase_hint_source_SCX_PHASE_SRC_THREAD as SRC_THREAD,
    scx_phase_hint_source_SCX_PHASE_SRC_TID_MAP as SRC_TID_MAP,
};
use scx_phase::hint::protocol::Op;
use scx_phase::hint::tid_map::{self, PhaseHint, PhaseMap, thread_exists, thread_name};
use scx_phase::hint::{self, client};
use scx_phase::{bpffs, inspect};
use serde::Serialize;

use crate::loader::cli::Command;
use crate::service::status_file;

fn is_root() -> bool {
    // SAFETY: geteuid never fails.
    unsafe { libc::geteuid() == 0 }
}

/// "backward, node 1" / "backward, node any"
fn describe(h: &PhaseHint) -> String {
    let phase = h.phase().map_or_else(
        || format!("invalid ({})", h.phase),
        |p| p.name().to_string(),
    );
    let node = h
        .node()
        .map_or_else(|| "any".to_string(), |n| n.to_string());
    format!("{phase}, node {node}")
}

fn who(tid: u32) -> String {
    match thread_name(tid) {
        Some(name) => format!("tid {tid} ({name})"),
        None => format!("tid {tid} (exited)"),
    }
}

fn require_node(node: Option<u32>) -> Result<()> {
    if let Some(n) = node
        && !Path::new(&format!("/sys/devices/system/node/node{n}")).exists()
    {
        bail!("no NUMA node {n} on this host (see: scx_phase topology)");
    }
    Ok(())
}

/// The tid map, for root; None when hints must go through the service.
fn admin_map(pin_dir: &Path) -> Result<Option<PhaseMap>> {
    if !is_root() {
        return Ok(None);
    }
    match PhaseMap::open(tid_map::map_path(pin_dir)) {
        Ok(m) => Ok(Some(m)),
        // Root in a container without the pins: the service serves it.
        Err(tid_map::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn through_service(socket: &Path, op: Op, tid: u32, phase: u32, node: i32) -> Result<()> {
    let tid = i32::try_from(tid).map_err(|_| anyhow::anyhow!("no thread with id {tid}"))?;
    match client::one_shot(socket, op, tid, phase, node) {
        Ok(()) => Ok(()),
        Err(hint::Error::NotRunning { .. }) => bail!(
            "scx_phase is not running (no hint service at {})",
            socket.display()
        ),
        Err(e) => Err(e.into()),
    }
}

pub fn run(cmd: &Command, pin_dir: &Path, socket: &Path) -> Result<()> {
    match cmd {
        Command::Set { tid, phase, node } => {
            require_node(*node)?;
            let hint = PhaseHint::new(*phase, *node);
            match admin_map(pin_dir)? {
                Some(map) => map.set_tid(*tid, hint)?,
                None => through_service(socket, Op::Set, *tid, hint.phase, hint.numa_node)?,
            }
            println!("{}: {}", who(*tid), describe(&hint));
            Ok(())
        }
        Command::Clear { tid } => {
            match admin_map(pin_dir)? {
                // A dead thread's stale entry may still be cleared.
                Some(map) => {
                    if !map.clear(*tid)? && !thread_exists(*tid) {
                        bail!("no thread with id {tid}");
                    }
                }
                None => through_service(socket, Op::Clear, *tid, 0, -1)?,
            }
            println!("{}: hint cleared", who(*tid));
            Ok(())
        }
        Command::Get { tid } => {
            let records = read(pin_dir)?;
            match records.iter().find(|r| r.tid == *tid) {
                Some(r) => println!("{}: {}", who(*tid), entry(r).summary()),
                None if thread_exists(*tid) => println!("{}: no hint", who(*tid)),
                None => bail!("no thread with id {tid}"),
            }
            Ok(())
        }
        Command::Dump { json } => dump(pin_dir, *json),
        Command::Workloads { json } => workloads(pin_dir, socket, *json),
        Command::Status { json } => crate::loader::status::status(pin_dir, socket, *json),
        Command::Topology => unreachable!("handled by main"),
    }
}

/// The iterator's records, or a one-line reason why there are none.
fn read(pin_dir: &Path) -> Result<Vec<hint_dump>> {
    if let Some(why) = bpffs::missing_bpffs(pin_dir) {
        bail!("{why}");
    }
    match inspect::read_hints(pin_dir) {
        Ok(r) => Ok(r),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "scx_phase is not running (no hint dump at {})",
            pin_dir.join(inspect::HINTS_ITER).display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "permission denied on {}: reading every thread's hint needs root",
            pin_dir.display()
        ),
        Err(e) => bail!("cannot read {}: {e}", pin_dir.display()),
    }
}

fn source_name(source: u32) -> &'static str {
    match source {
        SRC_TID_MAP => "tid map",
        SRC_THREAD => "thread",
        SRC_NAME => "name rule",
        SRC_PROCESS => "process",
        _ => "none",
    }
}

fn phase_text(n: u32) -> String {
    Phase::from_number(n).map_or_else(|| format!("invalid({n})"), |p| p.name().to_string())
}

/// One thread's hint and the workload it belongs to.
#[derive(Serialize)]
struct Entry {
    tid: u32,
    thread: Option<String>,
    phase: Option<&'static str>,
    phase_number: u32,
    numa_node: i32,
    source: &'static str,
    /// Its process, as numbered here, and the ids the thread has in its
    /// own PID namespace (what a container sees).
    pid: u32,
    ns_tid: Option<u32>,
    uid: Option<u32>,
    cgroup: Option<String>,
    /// The hint service's id of its process, if it registered.
    workload: Option<u32>,
    /// A value the scheduler ignored: garbage, or a phase its writer may
    /// not set.
    ignored: Option<String>,
}

impl Entry {
    fn summary(&self) -> String {
        let mut s = match self.phase {
            Some(p) => {
                let node = if self.numa_node < 0 {
                    "any".to_string()
                } else {
                    self.numa_node.to_string()
                };
                format!("{p}, node {node} (from the {})", self.source)
            }
            None => "no hint".to_string(),
        };
        if let Some(i) = &self.ignored {
            s.push_str(&format!("; ignored {i}"));
        }
        s
    }
}

fn status_field(pid: u32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn entry(r: &hint_dump) -> Entry {
    let ignored = (r.ignored != scx_phase::bpf_intf::SCX_PHASE_HINT_UNSET).then(|| {
        if Phase::from_number(r.ignored).is_some() {
            format!("{} (not allowed)", phase_text(r.ignored))
        } else {
            format!("{} (invalid)", r.ignored)
        }
    });
    let phase = Phase::from_number(r.phase).map(Phase::name);
    let workload = [r.binding.thread, r.binding.process]
        .iter()
        .map(|b| b.wid)
        .find(|&w| w != 0);
    Entry {
        tid: r.tid,
        thread: thread_name(r.tid),
        phase,
        phase_number: r.phase,
        numa_node: r.numa_node,
        source: source_name(r.source),
        pid: r.tgid,
        ns_tid: status_field(r.tid, "NSpid")
            .and_then(|v| v.split_whitespace().last()?.parse().ok()),
        uid: status_field(r.tgid, "Uid").and_then(|v| v.split_whitespace().nth(1)?.parse().ok()),
        cgroup: crate::service::identity::cgroup_of(r.tgid),
        workload,
        ignored,
    }
}

fn dump(pin_dir: &Path, json: bool) -> Result<()> {
    let mut entries: Vec<Entry> = read(pin_dir)?
        .iter()
        .filter(|r| r.source != 0 || r.ignored != scx_phase::bpf_intf::SCX_PHASE_HINT_UNSET)
        .map(entry)
        .collect();
    entries.sort_by_key(|e| e.tid);
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "{:>8}  {:<15} {:<13} {:>4}  {:<9} {:>8} {:>6} {:>6}  cgroup",
        "tid", "thread", "phase", "node", "source", "pid", "ns tid", "uid"
    );
    for e in &entries {
        let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        println!(
            "{:>8}  {:<15} {:<13} {:>4}  {:<9} {:>8} {:>6} {:>6}  {}{}",
            e.tid,
            e.thread.as_deref().unwrap_or("(exited)"),
            e.phase.unwrap_or("-"),
            if e.numa_node < 0 {
                "any".to_string()
            } else {
                e.numa_node.to_string()
            },
            e.source,
            e.pid,
            opt(e.ns_tid),
            opt(e.uid),
            e.cgroup.as_deref().unwrap_or("-"),
            e.ignored
                .as_ref()
                .map_or_else(String::new, |i| format!("  [ignored {i}]"))
        );
    }
    println!(
        "{} thread(s) with a hint; {} process(es) registered with the hint service",
        entries.iter().filter(|e| e.phase.is_some()).count(),
        inspect::read_workloads(pin_dir).map_or(0, |w| w.len())
    );
    Ok(())
}

fn workloads(pin_dir: &Path, socket: &Path, json: bool) -> Result<()> {
    let v = status_file::read(pin_dir, socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:>8} {:>6}  {:<12} {:<5} {:>9}  {:<14} {:>7}  {:<34}  cgroup",
        "pid",
        "uid",
        "cpus",
        "excl",
        "locked",
        "pressure",
        "threads",
        "cpu s: idle load fwd bwd opt ckpt none"
    );
    for r in &v.workloads {
        let cpus: Vec<String> = r
            .claims
            .iter()
            .flat_map(|c| &c.cpus)
            .map(u32::to_string)
            .collect();
        let excl = r.claims.iter().any(|c| c.exclusive);
        let watches: Vec<String> = r
            .pressure_watches
            .iter()
            .map(|w| format!("{}ms/{}ms", w.stall_ms, w.window_ms))
            .collect();
        let secs: Vec<String> = (0..scx_phase::stats::NR_SLOTS)
            .map(|i| {
                format!(
                    "{:.1}",
                    r.cpu_ms(scx_phase::stats::slot_name(i)) as f64 / 1000.0
                )
            })
            .collect();
        println!(
            "{:>8} {:>6}  {:<12} {:<5} {:>9}  {:<14} {:>7}  {:<34}  {}",
            r.pid,
            r.uid,
            if cpus.is_empty() {
                "-".into()
            } else {
                cpus.join(",")
            },
            if r.claims.is_empty() {
                "-"
            } else if excl {
                "yes"
            } else {
                "no"
            },
            crate::service::memlock::human(r.locked_bytes),
            if watches.is_empty() {
                "-".into()
            } else {
                watches.join(",")
            },
            r.threads_bound,
            secs.join(" "),
            r.cgroup.as_deref().unwrap_or("-"),
        );
    }
    println!(
        "{} workload(s); locked memory {} of {}",
        v.workloads.len(),
        crate::service::memlock::human(v.locked_used_bytes),
        crate::service::memlock::human(v.locked_budget_bytes)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_have_names() {
        assert_eq!(source_name(SRC_TID_MAP), "tid map");
        assert_eq!(source_name(SRC_THREAD), "thread");
        assert_eq!(source_name(SRC_NAME), "name rule");
        assert_eq!(source_name(SRC_PROCESS), "process");
        assert_eq!(source_name(0), "none");
        assert_eq!(phase_text(3), "backward");
        assert_eq!(phase_text(99), "invalid(99)");
    }
}
