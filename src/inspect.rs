//! The hint service's pinned state, as an admin (or the service itself,
//! after a restart) reads it: the `hints` iterator, which reports every
//! task's effective hint and binding as the scheduler resolves them, and
//! the `hint_workloads` registry of registered processes.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::bpf_intf::{
    hint_dump, hint_workload, scx_phase_hint_limits_SCX_PHASE_MAX_WORKLOADS, service_counters,
    workload_phase_stats,
};
use crate::sys;

/// Names in the pin folder (besides the tid map and the stats).
pub const HINTS_ITER: &str = "hints";
pub const WORKLOADS_MAP: &str = "hint_workloads";
pub const MEMORY_MAP: &str = "hint_memory";
pub const TASKS_MAP: &str = "hint_tasks";
pub const SERVICE_STATS: &str = "service_stats";
pub const WORKLOAD_STATS_MAP: &str = "workload_stats";

/// Workload `wid`'s figures per phase slot (the phases, then un-hinted),
/// from the pinned map in `pin_dir`.
pub fn read_workload_stats(
    pin_dir: &Path,
    wid: u32,
) -> io::Result<[workload_phase_stats; crate::stats::NR_SLOTS]> {
    let map = sys::obj_get(&pin_dir.join(WORKLOAD_STATS_MAP))?;
    let mut out = [workload_phase_stats::default(); crate::stats::NR_SLOTS];
    for (slot, v) in out.iter_mut().enumerate() {
        *v = workload_stats(map.as_fd(), wid, slot as u32)?;
    }
    Ok(out)
}

/// Workload `wid`'s figures in phase slot `slot`, from the workload_stats
/// map behind `map`: the sum of its CPUs' shares (it is per CPU).
pub fn workload_stats(
    map: BorrowedFd<'_>,
    wid: u32,
    slot: u32,
) -> io::Result<workload_phase_stats> {
    let key = wid * crate::stats::NR_SLOTS as u32 + slot;
    let per_cpu = sys::percpu_lookup::<u32, workload_phase_stats>(map, &key)?;
    Ok(per_cpu
        .iter()
        .fold(workload_phase_stats::default(), |t, c| {
            workload_phase_stats {
                runtime_ns: t.runtime_ns + c.runtime_ns,
                boosted_ns: t.boosted_ns + c.boosted_ns,
                wait_ns: t.wait_ns + c.wait_ns,
                waits: t.waits + c.waits,
            }
        }))
}

/// Set workload `wid`'s figures in phase slot `slot` to `figures` (held by
/// the first CPU, the others zeroed): zero for a new workload id.
pub fn set_workload_stats(
    map: BorrowedFd<'_>,
    wid: u32,
    slot: u32,
    figures: workload_phase_stats,
) -> io::Result<()> {
    let key = wid * crate::stats::NR_SLOTS as u32 + slot;
    sys::percpu_update(map, &key, &[figures])
}

/// Every record of the pinned `hints` iterator in `pin_dir`.
pub fn read_hints(pin_dir: &Path) -> io::Result<Vec<hint_dump>> {
    read_records(&pin_dir.join(HINTS_ITER))
}

fn read_records(path: &PathBuf) -> io::Result<Vec<hint_dump>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let size = std::mem::size_of::<hint_dump>();
    let mut out = Vec::with_capacity(bytes.len() / size);
    for chunk in bytes.chunks_exact(size) {
        // SAFETY: plain data; every bit pattern is valid.
        let mut rec: hint_dump = unsafe { std::mem::zeroed() };
        plain::copy_from_bytes(&mut rec, chunk)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        out.push(rec);
    }
    Ok(out)
}

/// The registered workloads in `pin_dir`, by id (free ids left out).
pub fn read_workloads(pin_dir: &Path) -> io::Result<Vec<(u32, hint_workload)>> {
    let map = sys::obj_get(&pin_dir.join(WORKLOADS_MAP))?;
    let mut out = Vec::new();
    for wid in 1..scx_phase_hint_limits_SCX_PHASE_MAX_WORKLOADS {
        if let Some(w) = sys::map_lookup::<u32, hint_workload>(map.as_fd(), &wid)?
            && w.pid != 0
        {
            out.push((wid, w));
        }
    }
    Ok(out)
}

/// The hint service's counters in `pin_dir`.
pub fn read_service_stats(pin_dir: &Path) -> io::Result<service_counters> {
    let map = sys::obj_get(&pin_dir.join(SERVICE_STATS))?;
    sys::map_lookup::<u32, service_counters>(map.as_fd(), &0)?
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}
