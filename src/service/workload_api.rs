//! What jobs hold through the workload API: CPU claims, locked memory and
//! memory-pressure watches. Each is held by the connection that asked for
//! it and ends when that connection closes, so a job that exits or crashes
//! releases everything. Claims need the raise privilege (CAP_SYS_NICE or
//! `--hint-group`); locked memory and pressure watches need nothing. The
//! requests are served in `server/workload.rs`, which also writes what
//! operators see to `workloads.json` beside the socket (root only).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use super::claims::{Claims, CpuTopology};
use super::memlock::Budget;
use super::pressure::Watch;
use super::quota::Tenant;
use super::rules::Policy;

/// What the admin set for the workload API.
#[derive(Clone, Debug)]
pub struct Config {
    pub policy: Policy,
    pub max_exclusive_pct: u32,
    pub max_locked_mem: u64,
    /// The node of each GPU, in the loader's (hwloc's) order.
    pub gpu_nodes: Vec<Option<u32>>,
    /// Where `workloads.json` goes; none, no file.
    pub status_path: Option<PathBuf>,
}

/// What one connection holds.
#[derive(Debug, Default)]
pub struct Held {
    pub claims: Vec<u64>,
    pub memlock: Vec<u64>,
    pub watches: Vec<u32>,
}

pub struct WorkloadApi {
    pub claims: Claims,
    pub budget: Budget,
    /// Id -> the watch, its client's index and generation, its tenant.
    pub(super) watches: BTreeMap<u32, (Watch, usize, u32, Tenant)>,
    pub(super) next_watch: u32,
    pub(super) generation: u64,
    /// Every CPU the claim maps have an entry for, and the workloads
    /// that had CPUs at the last write.
    pub(super) written_cpus: BTreeSet<u32>,
    pub(super) claimed_wids: BTreeSet<u32>,
    pub(super) status_path: Option<PathBuf>,
    pub dirty: bool,
    pub(super) online: String,
    pub(super) last_check: Instant,
    pub(super) gpu_nodes: Vec<Option<u32>>,
}

pub(super) fn online_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default()
}

impl WorkloadApi {
    pub fn new(config: &Config) -> WorkloadApi {
        WorkloadApi {
            claims: Claims::new(
                CpuTopology::read(config.gpu_nodes.clone()),
                config.max_exclusive_pct,
            ),
            budget: Budget::new(config.max_locked_mem),
            watches: BTreeMap::new(),
            next_watch: 1,
            generation: 0,
            written_cpus: BTreeSet::new(),
            claimed_wids: BTreeSet::new(),
            status_path: config.status_path.clone(),
            dirty: true,
            online: online_cpus(),
            last_check: Instant::now(),
            gpu_nodes: config.gpu_nodes.clone(),
        }
    }
}
