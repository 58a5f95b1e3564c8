//! Printing stats, and `--monitor`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use scx_phase::stats::{self, Report, StatsMap};

use crate::loader::preflight;

/// The report between two snapshots, with the hint service's counters
/// from `pin_dir` when they can be read.
pub fn full_report(prev: &stats::Snapshot, cur: &stats::Snapshot, pin_dir: &Path) -> Report {
    let mut r = stats::report(prev, cur);
    r.service = scx_phase::inspect::read_service_stats(pin_dir)
        .ok()
        .map(Into::into);
    r
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
pub fn monitor(pin_dir: &Path, interval: f64, json: bool, shutdown: Arc<AtomicBool>) -> Result<()> {
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
        print_report(&full_report(&prev, &cur, pin_dir), json);
        prev = cur;
    }
    Ok(())
}
