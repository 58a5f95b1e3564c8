//! Printing stats, and `--monitor`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use scx_phase::stats::{self, Report, StatsMap};

use crate::loader::preflight;
use crate::service::status_file::WorkloadsFile;

/// The report between two snapshots, with the hint service's counters
/// from `pin_dir` and the workloads' totals when they can be read.
pub fn full_report(
    prev: &stats::Snapshot,
    cur: &stats::Snapshot,
    pin_dir: &Path,
    socket: &Path,
) -> Report {
    let mut r = stats::report(prev, cur);
    r.service = scx_phase::inspect::read_service_stats(pin_dir)
        .ok()
        .map(Into::into);
    r.workloads = crate::service::status_file::read(pin_dir, socket)
        .ok()
        .map(|v| workloads_report(&v));
    r
}

fn workloads_report(v: &WorkloadsFile) -> stats::WorkloadsReport {
    let mut t = stats::WorkloadsReport {
        workloads: v.workloads.len() as u64,
        cpu_ms: vec![0; stats::NR_SLOTS],
        ..Default::default()
    };
    for r in &v.workloads {
        let (shared, exclusive) = r.cpus_claimed();
        t.cpus_claimed += shared + exclusive;
        t.cpus_exclusive += exclusive;
        t.locked_bytes += r.locked_bytes;
        t.pressure_watches += r.pressure_watches.len() as u64;
        for (i, ms) in t.cpu_ms.iter_mut().enumerate() {
            *ms += r.cpu_ms(stats::slot_name(i));
        }
    }
    t
}

pub fn print_report(r: &Report, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(line) => println!("{line}"),
            Err(e) => log::warn!("cannot encode stats: {e}"),
        }
    } else {
        println!("{}", r.table());
    }
}

/// Print the stats of a running scx_phase every `interval` until stopped.
pub fn monitor(
    pin_dir: &Path,
    socket: &Path,
    interval: f64,
    json: bool,
    shutdown: Arc<AtomicBool>,
) -> Result<()> {
    if !(interval > 0.0 && interval.is_finite()) {
        bail!("--monitor needs a positive interval in seconds, not {interval}");
    }
    let map = StatsMap::open(pin_dir)?;
    if !preflight::scx_phase_attached() {
        bail!(
            "scx_phase is not running (its stats pin in {} is stale)",
            pin_dir.display()
        );
    }
    let mut prev = map.read()?;
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    let interval = Duration::from_secs_f64(interval);
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        waited += step;
        if waited < interval {
            continue;
        }
        waited = Duration::ZERO;
        if !preflight::scx_phase_attached() {
            bail!("scx_phase stopped");
        }
        let cur = map.read()?;
        print_report(&full_report(&prev, &cur, pin_dir, socket), json);
        prev = cur;
    }
    Ok(())
}
