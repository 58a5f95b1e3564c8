//! Per-phase counters from the pinned `phase_stats` map and work counters
//! from `work_stats`: reading, deltas, and the table and JSON that
//! `--stats` and `--monitor` print.

use std::ffi::CString;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use libbpf_rs::libbpf_sys;
use serde::Serialize;

use crate::phase::Phase;

/// The stats map's name, in the kernel and in the pin folder.
pub const STATS_MAP_NAME: &str = "phase_stats";
/// One slot per phase plus one for tasks without a valid hint.
pub const NR_SLOTS: usize = Phase::ALL.len() + 1;
/// The work counters' map: per callback, the CPUs and queues it looked at.
pub const WORK_MAP_NAME: &str = "work_stats";
pub const NR_CALLBACKS: usize = crate::bpf_intf::scx_phase_callback_SCX_PHASE_NR_CALLBACKS as usize;
/// The callbacks' names, indexed by `enum scx_phase_callback` of `intf.h`.
pub const CALLBACKS: [&str; NR_CALLBACKS] = {
    use crate::bpf_intf as c;
    let mut n = [""; NR_CALLBACKS];
    n[c::scx_phase_callback_SCX_PHASE_CB_SELECT_CPU as usize] = "select_cpu";
    n[c::scx_phase_callback_SCX_PHASE_CB_ENQUEUE as usize] = "enqueue";
    n[c::scx_phase_callback_SCX_PHASE_CB_DISPATCH as usize] = "dispatch";
    n[c::scx_phase_callback_SCX_PHASE_CB_RUNNING as usize] = "running";
    n[c::scx_phase_callback_SCX_PHASE_CB_TICK as usize] = "tick";
    n[c::scx_phase_callback_SCX_PHASE_CB_STOPPING as usize] = "stopping";
    n[c::scx_phase_callback_SCX_PHASE_CB_SPILL_TIMER as usize] = "spill_timer";
    n[c::scx_phase_callback_SCX_PHASE_CB_CLAIMS_SYNC as usize] = "claims_sync";
    n
};
/// `struct work_counters` of `intf.h`.
pub type WorkCounters = crate::bpf_intf::work_counters;

/// Fold one CPU's work counters in: sums, and the maxima.
fn add_work(t: &mut WorkCounters, c: &WorkCounters) {
    t.calls += c.calls;
    t.cpus += c.cpus;
    t.queues += c.queues;
    t.max_cpus = t.max_cpus.max(c.max_cpus);
    t.max_queues = t.max_queues.max(c.max_queues);
}

/// `struct phase_counters` of `intf.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseCounters {
    pub enqueues: u64,
    pub runtime_ns: u64,
    pub wait_ns: u64,
    pub max_wait_ns: u64,
    pub max_wait_tid: u64,
    pub preemptions: u64,
    pub budget_exhaustions: u64,
    pub local_ns: u64,
    pub remote_ns: u64,
    pub invalid_hints: u64,
    pub refused_hints: u64,
    pub process_ns: u64,
    pub fair_steals: u64,
    pub fair_rebalances: u64,
    pub claim_passes: u64,
    pub rcu_readers: u64,
    pub tick_resolves: u64,
    pub threads: i64,
    pub wait_hist: [u64; WAIT_BUCKETS],
}

/// Buckets of `PhaseCounters::wait_hist`.
pub const WAIT_BUCKETS: usize =
    crate::bpf_intf::scx_phase_wait_hist_SCX_PHASE_WAIT_BUCKETS as usize;

/// The upper bound of wait_hist bucket `i`, in seconds (the last: none).
pub fn wait_bucket_le(i: usize) -> Option<f64> {
    const BOUNDS: [f64; WAIT_BUCKETS - 1] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    BOUNDS.get(i).copied()
}

impl PhaseCounters {
    /// Fold one CPU's counters in: sums, except the max and the gauge
    /// (whose per-CPU parts may be negative).
    fn add(&mut self, c: &PhaseCounters) {
        self.enqueues += c.enqueues;
        self.runtime_ns += c.runtime_ns;
        self.wait_ns += c.wait_ns;
        if c.max_wait_ns > self.max_wait_ns {
            self.max_wait_ns = c.max_wait_ns;
            self.max_wait_tid = c.max_wait_tid;
        }
        self.preemptions += c.preemptions;
        self.budget_exhaustions += c.budget_exhaustions;
        self.local_ns += c.local_ns;
        self.remote_ns += c.remote_ns;
        self.invalid_hints += c.invalid_hints;
        self.refused_hints += c.refused_hints;
        self.process_ns += c.process_ns;
        self.fair_steals += c.fair_steals;
        self.fair_rebalances += c.fair_rebalances;
        self.claim_passes += c.claim_passes;
        self.rcu_readers += c.rcu_readers;
        self.tick_resolves += c.tick_resolves;
        self.threads = self.threads.wrapping_add(c.threads);
        for (t, n) in self.wait_hist.iter_mut().zip(c.wait_hist) {
            *t += n;
        }
    }
}

// SAFETY: plain 64-bit integers, no padding.
unsafe impl plain::Plain for PhaseCounters {}

/// The name of stats slot `i`.
pub fn slot_name(i: usize) -> &'static str {
    Phase::ALL.get(i).map_or("unhinted", |p| p.name())
}

/// Counters of every slot and callback, summed over CPUs, at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub slots: [PhaseCounters; NR_SLOTS],
    pub work: [WorkCounters; NR_CALLBACKS],
    pub at: Instant,
}

impl Snapshot {
    /// A scheduler-wide counter, summed over the slots that carry it.
    fn total(&self, field: fn(&PhaseCounters) -> u64) -> u64 {
        self.slots.iter().map(field).sum()
    }

    pub fn invalid_hints(&self) -> u64 {
        self.total(|c| c.invalid_hints)
    }

    pub fn refused_hints(&self) -> u64 {
        self.total(|c| c.refused_hints)
    }

    pub fn fair_steals(&self) -> u64 {
        self.total(|c| c.fair_steals)
    }

    pub fn fair_rebalances(&self) -> u64 {
        self.total(|c| c.fair_rebalances)
    }

    pub fn claim_passes(&self) -> u64 {
        self.total(|c| c.claim_passes)
    }

    pub fn rcu_readers(&self) -> u64 {
        self.total(|c| c.rcu_readers)
    }

    pub fn tick_resolves(&self) -> u64 {
        self.total(|c| c.tick_resolves)
    }
}

/// Fold the per-CPU values of each entry of the per-CPU array behind `fd`
/// into `totals`, one entry per key.
fn read_per_cpu<T: plain::Plain + Default + Copy>(
    fd: BorrowedFd<'_>,
    totals: &mut [T],
    fold: fn(&mut T, &T),
) -> std::io::Result<()> {
    for (key, total) in totals.iter_mut().enumerate() {
        for c in crate::sys::percpu_lookup::<u32, T>(fd, &(key as u32))? {
            fold(total, &c);
        }
    }
    Ok(())
}

/// Sum the per-CPU counters of the stats map behind `stats` and the work
/// counters behind `work`.
pub fn read(stats: BorrowedFd<'_>, work: BorrowedFd<'_>) -> std::io::Result<Snapshot> {
    let mut slots = [PhaseCounters::default(); NR_SLOTS];
    read_per_cpu(stats, &mut slots, PhaseCounters::add)?;
    let mut w = [WorkCounters::default(); NR_CALLBACKS];
    read_per_cpu(work, &mut w, add_work)?;
    Ok(Snapshot {
        slots,
        work: w,
        at: Instant::now(),
    })
}

/// The pinned stats maps of a running scheduler.
pub struct StatsMap {
    stats: OwnedFd,
    work: OwnedFd,
}

/// Open the map `name` pinned in `pin_dir`.
fn open_pin(pin_dir: &Path, name: &str) -> anyhow::Result<OwnedFd> {
    let path: PathBuf = pin_dir.join(name);
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        let err = std::io::Error::from_raw_os_error(-fd);
        if err.kind() == std::io::ErrorKind::NotFound {
            anyhow::bail!("no stats at {}: scx_phase is not running", path.display());
        }
        anyhow::bail!("cannot open {}: {err}", path.display());
    }
    // SAFETY: a fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl StatsMap {
    /// Open the stats maps pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> anyhow::Result<Self> {
        Ok(StatsMap {
            stats: open_pin(pin_dir, STATS_MAP_NAME)?,
            work: open_pin(pin_dir, WORK_MAP_NAME)?,
        })
    }

    pub fn read(&self) -> std::io::Result<Snapshot> {
        use std::os::fd::AsFd;
        read(self.stats.as_fd(), self.work.as_fd())
    }
}

/// One slot's activity between two snapshots, and its totals.
#[derive(Clone, Debug, Serialize)]
pub struct SlotRate {
    pub phase: &'static str,
    /// Tasks in this phase now.
    pub threads: i64,
    pub enqueues_per_s: f64,
    /// CPU used in the interval, in percent of one CPU.
    pub cpu_pct: f64,
    /// Mean wait from runnable to running in the interval, in µs.
    pub wait_avg_us: f64,
    /// Longest single wait since the scheduler started, in ms, and the
    /// thread (kernel tid) that waited it.
    pub wait_max_ms: f64,
    pub wait_max_tid: u64,
    pub preemptions: u64,
    pub budget_exhaustions: u64,
    /// data_loading: share of run time on the thread's own node, in percent
    /// (None before any loader ran).
    pub local_pct: Option<f64>,
    /// CPU used in the interval by threads that were in this phase through
    /// their process's process-wide phase, in percent of one CPU.
    pub process_cpu_pct: f64,
    pub enqueues: u64,
    pub runtime_ms: u64,
    pub process_ms: u64,
    pub local_ms: u64,
    pub remote_ms: u64,
}

/// Activity between `prev` and `cur`, plus cumulative totals.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub interval_s: f64,
    pub phases: Vec<SlotRate>,
    /// Hint values the scheduler ignored since start: garbage, and phases
    /// their writer may not set.
    pub invalid_hints: u64,
    pub refused_hints: u64,
    /// Fair tasks run by a CPU other than the one whose queue they joined,
    /// since the scheduler started: taken by an idle CPU, or as a lagging
    /// head by a busy one.
    pub fair_steals: u64,
    pub fair_rebalances: u64,
    /// Claimants' tasks that an exclusively claimed CPU ran from behind
    /// others' tasks queued there before the claim, since start.
    pub claim_passes: u64,
    /// Tasks preempted inside an RCU read-side section and run next, so
    /// that no grace period waits behind user work, since start.
    pub rcu_readers: u64,
    /// Ticks since start, and those that resolved their task's hint in
    /// full (the others found its slots and name unchanged).
    pub ticks: u64,
    pub tick_resolves: u64,
    /// The longest single wait of any phase since start, and who waited.
    pub longest_wait: Option<LongestWait>,
    /// What each callback looked at per call.
    pub work: Vec<CallbackWork>,
    /// The hint service's counters, when it could be read.
    pub service: Option<ServiceReport>,
    /// Totals of the workload API, when the service's status could be read.
    pub workloads: Option<WorkloadsReport>,
}

/// What the registered workloads hold in all, and their CPU time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkloadsReport {
    pub workloads: u64,
    pub cpus_claimed: u64,
    pub cpus_exclusive: u64,
    pub locked_bytes: u64,
    pub pressure_watches: u64,
    /// CPU time of their threads per phase slot since they registered, ms.
    pub cpu_ms: Vec<u64>,
}

/// The hint service's counters (`struct service_counters`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceReport {
    pub workloads: u64,
    pub bound_threads: u64,
    pub connections: u64,
    pub registrations: u64,
    pub one_shot_hints: u64,
    pub refused: u64,
    pub bad_requests: u64,
    pub dropped_clients: u64,
}

impl From<crate::bpf_intf::service_counters> for ServiceReport {
    fn from(c: crate::bpf_intf::service_counters) -> Self {
        ServiceReport {
            workloads: c.workloads,
            bound_threads: c.bound_threads,
            connections: c.connections,
            registrations: c.registrations,
            one_shot_hints: c.one_shot_hints,
            refused: c.refused,
            bad_requests: c.bad_requests,
            dropped_clients: c.dropped_clients,
        }
    }
}

/// One callback's work: calls and mean CPUs and queues looked at per call
/// in the interval, the most one call looked at since start, and the
/// totals since start. The means grow with the host only if a hot path
/// scans it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallbackWork {
    pub callback: &'static str,
    pub calls_per_s: f64,
    pub cpus_mean: f64,
    pub queues_mean: f64,
    pub cpus_max: u64,
    pub queues_max: u64,
    pub calls: u64,
    pub cpus: u64,
    pub queues: u64,
}

fn callback_work(dt: f64, prev: &Snapshot, cur: &Snapshot) -> Vec<CallbackWork> {
    CALLBACKS
        .iter()
        .zip(prev.work.iter().zip(&cur.work))
        .map(|(name, (a, b))| {
            let calls = b.calls.saturating_sub(a.calls);
            let mean = |x: u64, y: u64| {
                if calls > 0 {
                    y.saturating_sub(x) as f64 / calls as f64
                } else {
                    0.0
                }
            };
            CallbackWork {
                callback: name,
                calls_per_s: calls as f64 / dt,
                cpus_mean: mean(a.cpus, b.cpus),
                queues_mean: mean(a.queues, b.queues),
                cpus_max: b.max_cpus,
                queues_max: b.max_queues,
                calls: b.calls,
                cpus: b.cpus,
                queues: b.queues,
            }
        })
        .collect()
}

/// The thread behind the longest wait: starvation shows up here first.
#[derive(Clone, Debug, Serialize)]
pub struct LongestWait {
    pub phase: &'static str,
    pub ms: f64,
    pub tid: u64,
    /// Its name now, read from /proc; "exited" if it is gone.
    pub comm: String,
}

fn longest_wait(s: &Snapshot) -> Option<LongestWait> {
    let (i, c) = s
        .slots
        .iter()
        .enumerate()
        .filter(|(_, c)| c.max_wait_ns > 0)
        .max_by_key(|(_, c)| c.max_wait_ns)?;
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", c.max_wait_tid))
        .map_or_else(|_| "exited".to_string(), |s| s.trim().to_string());
    Some(LongestWait {
        phase: slot_name(i),
        ms: c.max_wait_ns as f64 / 1e6,
        tid: c.max_wait_tid,
        comm,
    })
}

pub fn report(prev: &Snapshot, cur: &Snapshot) -> Report {
    let dt = cur.at.duration_since(prev.at).as_secs_f64().max(1e-9);
    let phases = (0..NR_SLOTS)
        .map(|i| {
            let (a, b) = (&prev.slots[i], &cur.slots[i]);
            let enq = b.enqueues.saturating_sub(a.enqueues);
            let wait = b.wait_ns.saturating_sub(a.wait_ns);
            let placed = b.local_ns + b.remote_ns;
            SlotRate {
                phase: slot_name(i),
                threads: b.threads,
                enqueues_per_s: enq as f64 / dt,
                cpu_pct: b.runtime_ns.saturating_sub(a.runtime_ns) as f64 / dt / 1e7,
                wait_avg_us: if enq > 0 {
                    wait as f64 / enq as f64 / 1e3
                } else {
                    0.0
                },
                wait_max_ms: b.max_wait_ns as f64 / 1e6,
                wait_max_tid: b.max_wait_tid,
                preemptions: b.preemptions,
                budget_exhaustions: b.budget_exhaustions,
                local_pct: (placed > 0).then(|| b.local_ns as f64 * 100.0 / placed as f64),
                process_cpu_pct: b.process_ns.saturating_sub(a.process_ns) as f64 / dt / 1e7,
                enqueues: b.enqueues,
                runtime_ms: b.runtime_ns / 1_000_000,
                process_ms: b.process_ns / 1_000_000,
                local_ms: b.local_ns / 1_000_000,
                remote_ms: b.remote_ns / 1_000_000,
            }
        })
        .collect();
    Report {
        interval_s: dt,
        phases,
        invalid_hints: cur.invalid_hints(),
        refused_hints: cur.refused_hints(),
        fair_steals: cur.fair_steals(),
        fair_rebalances: cur.fair_rebalances(),
        claim_passes: cur.claim_passes(),
        rcu_readers: cur.rcu_readers(),
        ticks: cur.work[crate::bpf_intf::scx_phase_callback_SCX_PHASE_CB_TICK as usize].calls,
        tick_resolves: cur.tick_resolves(),
        longest_wait: longest_wait(cur),
        work: callback_work(dt, prev, cur),
        service: None,
        workloads: None,
    }
}

impl Report {
    /// A human table, one line per phase.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<13} {:>7} {:>7} {:>8} {:>9} {:>9} {:>8} {:>7} {:>7}\n",
            "phase",
            "threads",
            "cpu%",
            "enq/s",
            "wait(us)",
            "max(ms)",
            "preempt",
            "budget",
            "local%"
        );
        for r in &self.phases {
            let local = r
                .local_pct
                .map_or_else(|| "-".to_string(), |p| format!("{p:.1}"));
            s += &format!(
                "{:<13} {:>7} {:>7.1} {:>8.0} {:>9.0} {:>9.1} {:>8} {:>7} {:>7}\n",
                r.phase,
                r.threads,
                r.cpu_pct,
                r.enqueues_per_s,
                r.wait_avg_us,
                r.wait_max_ms,
                r.preemptions,
                r.budget_exhaustions,
                local
            );
        }
        s += &format!(
            "hints ignored: {} invalid, {} not allowed\n",
            self.invalid_hints, self.refused_hints
        );
        if let Some(w) = &self.workloads {
            let times: Vec<String> = w
                .cpu_ms
                .iter()
                .enumerate()
                .filter(|(_, ms)| **ms > 0)
                .map(|(i, ms)| format!("{} {:.1} s", slot_name(i), *ms as f64 / 1000.0))
                .collect();
            s += &format!(
                "workloads: {}, {} CPUs claimed ({} exclusive), {} MiB locked, {} pressure watches; their CPU time: {}\n",
                w.workloads,
                w.cpus_claimed,
                w.cpus_exclusive,
                w.locked_bytes >> 20,
                w.pressure_watches,
                if times.is_empty() {
                    "none".into()
                } else {
                    times.join(", ")
                }
            );
        }
        if let Some(h) = &self.service {
            s += &format!(
                "hint service: {} processes, {} threads bound; {} refused, {} bad requests, {} clients cut off\n",
                h.workloads, h.bound_threads, h.refused, h.bad_requests, h.dropped_clients
            );
        }
        s += &format!(
            "fair queues: {} stolen by idle CPUs, {} rebalanced; {} claimants' tasks run past others' on their CPUs\n",
            self.fair_steals, self.fair_rebalances, self.claim_passes
        );
        s += &format!(
            "RCU readers preempted inside a read-side section, run next: {}\n",
            self.rcu_readers
        );
        s += &format!(
            "ticks that resolved a hint in full: {} of {} ({:.1}%)\n",
            self.tick_resolves,
            self.ticks,
            100.0 * self.tick_resolves as f64 / self.ticks.max(1) as f64
        );
        if let Some(w) = &self.longest_wait {
            s += &format!(
                "longest wait: {:.1} ms, tid {} ({}), {}\n",
                w.ms, w.tid, w.comm, w.phase
            );
        }
        s += "work per call (CPUs and queues looked at: mean in the interval, max since start):\n";
        s += &format!(
            "  {:<12} {:>9} {:>9} {:>8} {:>10} {:>8}\n",
            "callback", "calls/s", "cpus", "max", "queues", "max"
        );
        for w in &self.work {
            s += &format!(
                "  {:<12} {:>9.0} {:>9.2} {:>8} {:>10.2} {:>8}\n",
                w.callback, w.calls_per_s, w.cpus_mean, w.cpus_max, w.queues_mean, w.queues_max
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn report_turns_deltas_into_rates() {
        let t0 = Instant::now();
        let mut a = Snapshot {
            slots: [PhaseCounters::default(); NR_SLOTS],
            work: [WorkCounters::default(); NR_CALLBACKS],
            at: t0,
        };
        a.slots[3].enqueues = 10;
        let mut b = a.clone();
        b.at = t0 + Duration::from_secs(2);
        b.slots[3].enqueues = 30;
        b.slots[3].runtime_ns = 1_000_000_000; // 1 s of CPU in 2 s
        b.slots[3].wait_ns = 2_000_000; // 2 ms over 20 enqueues
        b.slots[3].threads = 2;
        b.slots[1].local_ns = 990;
        b.slots[1].remote_ns = 10;
        b.slots[NR_SLOTS - 1].invalid_hints = 4;
        b.slots[NR_SLOTS - 1].refused_hints = 5;
        b.slots[3].process_ns = 500_000_000;
        b.slots[NR_SLOTS - 1].fair_steals = 3;
        b.slots[NR_SLOTS - 1].fair_rebalances = 2;
        b.slots[NR_SLOTS - 1].max_wait_ns = 2_500_000;
        b.slots[NR_SLOTS - 1].max_wait_tid = std::process::id().into();
        b.slots[3].max_wait_ns = 1_000_000;
        let r = report(&a, &b);
        let bw = &r.phases[3];
        assert_eq!(bw.phase, "backward");
        assert!((bw.enqueues_per_s - 10.0).abs() < 1e-6);
        assert!((bw.cpu_pct - 50.0).abs() < 1e-6);
        assert!((bw.wait_avg_us - 100.0).abs() < 1e-6);
        assert_eq!(bw.threads, 2);
        assert_eq!(r.phases[1].local_pct, Some(99.0));
        assert_eq!(r.phases[2].local_pct, None);
        assert_eq!(r.phases[NR_SLOTS - 1].phase, "unhinted");
        assert_eq!((r.invalid_hints, r.refused_hints), (4, 5));
        assert!((bw.process_cpu_pct - 25.0).abs() < 1e-6);
        assert!(
            r.table()
                .contains("hints ignored: 4 invalid, 5 not allowed")
        );
        assert!(!r.table().contains("hint service:"));
        let mut r = r;
        r.service = Some(ServiceReport {
            workloads: 2,
            bound_threads: 9,
            refused: 1,
            ..Default::default()
        });
        assert!(
            r.table()
                .contains("hint service: 2 processes, 9 threads bound; 1 refused")
        );
        assert_eq!((r.fair_steals, r.fair_rebalances), (3, 2));
        assert!(
            r.table()
                .contains("fair queues: 3 stolen by idle CPUs, 2 rebalanced")
        );
        assert!(r.table().contains("backward"));
        let w = r.longest_wait.as_ref().expect("a longest wait");
        assert_eq!((w.phase, w.tid), ("unhinted", std::process::id().into()));
        assert!((w.ms - 2.5).abs() < 1e-9);
        assert!(!w.comm.is_empty() && w.comm != "exited", "{}", w.comm);
        assert!(r.table().contains(&format!(
            "longest wait: 2.5 ms, tid {} ({}), unhinted",
            w.tid, w.comm
        )));
    }

    #[test]
    fn per_cpu_parts_fold_into_sums_max_and_gauge() {
        let mut t = PhaseCounters::default();
        t.add(&PhaseCounters {
            runtime_ns: 5,
            max_wait_ns: 7,
            max_wait_tid: 70,
            threads: 3,
            ..Default::default()
        });
        t.add(&PhaseCounters {
            runtime_ns: 6,
            max_wait_ns: 4,
            max_wait_tid: 40,
            threads: -1,
            ..Default::default()
        });
        assert_eq!(
            (t.runtime_ns, t.max_wait_ns, t.max_wait_tid, t.threads),
            (11, 7, 70, 2)
        );
    }

    #[test]
    fn every_callback_of_intf_h_has_a_name() {
        assert!(CALLBACKS.iter().all(|n| !n.is_empty()), "{CALLBACKS:?}");
    }

    #[test]
    fn work_counters_fold_sums_and_maxima_and_report_means_per_call() {
        let mut t = WorkCounters::default();
        for (calls, cpus, max_cpus) in [(4, 10, 5), (6, 20, 9)] {
            add_work(
                &mut t,
                &WorkCounters {
                    calls,
                    cpus,
                    queues: calls * 2,
                    max_cpus,
                    max_queues: 3,
                },
            );
        }
        assert_eq!(
            (t.calls, t.cpus, t.queues, t.max_cpus, t.max_queues),
            (10, 30, 20, 9, 3)
        );

        let t0 = Instant::now();
        let a = Snapshot {
            slots: [PhaseCounters::default(); NR_SLOTS],
            work: [WorkCounters::default(); NR_CALLBACKS],
            at: t0,
        };
        let mut b = a.clone();
        b.at = t0 + Duration::from_secs(2);
        b.work[2] = t;
        let r = report(&a, &b);
        assert_eq!(r.work.len(), NR_CALLBACKS);
        let d = &r.work[2];
        assert_eq!(d.callback, "dispatch");
        assert!((d.calls_per_s - 5.0).abs() < 1e-9);
        assert!((d.cpus_mean - 3.0).abs() < 1e-9);
        assert!((d.queues_mean - 2.0).abs() < 1e-9);
        assert_eq!((d.cpus_max, d.queues_max, d.calls), (9, 3, 10));
        assert_eq!((d.cpus, d.queues), (30, 20));
        // A callback that did not run in the interval has no mean, not NaN.
        assert_eq!(r.work[0].cpus_mean, 0.0);
        let table = r.table();
        assert!(table.contains("work per call"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["dispatch", "5", "3.00", "9", "2.00", "3"]),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["work"][2]["cpus_max"], 9);
    }
}
