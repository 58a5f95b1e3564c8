//! The `set`, `get`, `clear` and `dump` subcommands: the phase map by hand.

use std::path::Path;

use anyhow::{Result, bail};
use scx_phase::Phase;
use scx_phase::hint::tid_map::{self, PhaseHint, PhaseMap, thread_exists, thread_name};
use serde::Serialize;

use crate::loader::cli::Command;

fn open(pin_dir: &Path) -> Result<PhaseMap> {
    Ok(PhaseMap::open(tid_map::map_path(pin_dir))?)
}

/// "backward, node 1" / "backward, node any" / "invalid (99), node any"
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

#[derive(Serialize)]
struct DumpEntry {
    tid: u32,
    phase: Option<&'static str>,
    phase_number: u32,
    numa_node: i32,
    thread: Option<String>,
}

pub fn run(cmd: &Command, pin_dir: &Path) -> Result<()> {
    match cmd {
        Command::Set { tid, phase, node } => set(pin_dir, *tid, *phase, *node),
        Command::Get { tid } => {
            let map = open(pin_dir)?;
            match map.get(*tid)? {
                Some(h) => println!("{}: {}", who(*tid), describe(&h)),
                None if thread_exists(*tid) => println!("{}: no hint", who(*tid)),
                None => bail!("no thread with id {tid}"),
            }
            Ok(())
        }
        Command::Clear { tid } => {
            let map = open(pin_dir)?;
            // A dead thread's stale entry may still be cleared.
            if map.clear(*tid)? {
                println!("{}: hint cleared", who(*tid));
            } else if thread_exists(*tid) {
                println!("{}: had no hint", who(*tid));
            } else {
                bail!("no thread with id {tid}");
            }
            Ok(())
        }
        Command::Dump { json } => dump(pin_dir, *json),
        Command::Topology => unreachable!("handled by main"),
    }
}

fn set(pin_dir: &Path, tid: u32, phase: Phase, node: Option<u32>) -> Result<()> {
    require_node(node)?;
    let map = open(pin_dir)?;
    let hint = PhaseHint::new(phase, node);
    map.set_tid(tid, hint)?;
    println!("{}: {}", who(tid), describe(&hint));
    Ok(())
}

fn dump(pin_dir: &Path, json: bool) -> Result<()> {
    let map = open(pin_dir)?;
    let entries = map.entries()?;
    if json {
        let out: Vec<DumpEntry> = entries
            .iter()
            .map(|(tid, h)| DumpEntry {
                tid: *tid,
                phase: h.phase().map(Phase::name),
                phase_number: h.phase,
                numa_node: h.numa_node,
                thread: thread_name(*tid),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:>8}  {:<16} {:>5}  thread", "tid", "phase", "node");
    for (tid, h) in &entries {
        let phase = h
            .phase()
            .map_or_else(|| format!("invalid({})", h.phase), |p| p.name().to_string());
        let node = h
            .node()
            .map_or_else(|| "any".to_string(), |n| n.to_string());
        let thread = thread_name(*tid).unwrap_or_else(|| "(exited)".into());
        println!("{tid:>8}  {phase:<16} {node:>5}  {thread}");
    }
    println!("{} hint(s), capacity {}", entries.len(), map.capacity());
    Ok(())
}
