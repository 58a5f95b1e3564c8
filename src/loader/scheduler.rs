//! Loading, attaching and running the BPF scheduler.

use std::fs;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::OpenObject;
use log::{info, warn};
use scx_phase::stats::{self, STATS_MAP_NAME, WORK_MAP_NAME};
use scx_utils::{
    UserExitInfo, compat, scx_ops_attach, scx_ops_load, scx_ops_open, uei_exited, uei_report,
};

use crate::loader::access;
use crate::loader::bpf_skel::*;
use crate::loader::cli::RunOpts;
use crate::loader::metrics;
use crate::loader::notify;
use crate::loader::output::{full_report, print_report};
use crate::loader::status::Recorder;
use crate::loader::topology::HostTopology;
use crate::loader::{kernel, preflight};
use crate::service::Service;
use crate::service::bpf::ServiceBpf;
use crate::service::classify::{self, NameRules};
use crate::service::memlock;
use crate::service::rules::Policy;
use crate::service::workload_api::Config;

/// How often the run loop looks for Ctrl-C and a kernel-side exit: bounds
/// the detach latency.
const POLL: Duration = Duration::from_millis(50);

pub struct Scheduler<'a> {
    skel: BpfSkel<'a>,
    link: Option<libbpf_rs::Link>,
    stats_pins: [PathBuf; 2],
    pin_dir: PathBuf,
    socket: PathBuf,
}

impl<'a> Scheduler<'a> {
    pub fn init(
        opts: &RunOpts,
        pin_dir: &Path,
        topo: &HostTopology,
        rules: &NameRules,
        service: &ServiceBpf<'_>,
        socket: &Path,
        open_object: &'a mut MaybeUninit<OpenObject>,
    ) -> Result<Self> {
        scx_utils::try_set_rlimit_infinity();

        let mut builder = BpfSkelBuilder::default();
        builder.obj_builder.debug(opts.verbose);
        let mut skel = scx_ops_open!(
            builder,
            open_object,
            phase_ops,
            None::<libbpf_rs::libbpf_sys::bpf_object_open_opts>
        )?;
        skel.struct_ops.phase_ops_mut().exit_dump_len = opts.exit_dump_len;

        // Per-node idle tracking once there is more than one node (kernel
        // 6.15+); the BPF side then only uses the per-node idle kfuncs.
        let numa_idle = topo.nodes.len() > 1 && *compat::SCX_OPS_BUILTIN_IDLE_PER_NODE != 0;
        if numa_idle {
            skel.struct_ops.phase_ops_mut().flags |= *compat::SCX_OPS_BUILTIN_IDLE_PER_NODE;
        }

        let rodata = skel
            .maps
            .rodata_data
            .as_mut()
            .context("BPF object has no read-only data")?;
        rodata.slice_ns = opts.slice_us * 1000;
        rodata.budget_window_ns = opts.boost_window_ms * 1_000_000;
        rodata.budget_ns = rodata.budget_window_ns / 100 * opts.boost_budget_pct;
        rodata.weight_critical = opts.boost_weights.critical;
        rodata.weight_high = opts.boost_weights.high;
        rodata.weight_normal = opts.boost_weights.normal;
        rodata.idle_divisor = opts.idle_divisor;
        rodata.weight_loader = opts.loader_weight;
        rodata.numa_idle = numa_idle;
        rodata.numa_spill_ns = opts.numa_spill_us.unwrap_or(0) * 1000;
        write_topology(rodata, topo);
        crate::write_rules!(rodata, rules);

        // The hint maps belong to the hint service's object, which pinned
        // them; this object reads the same maps.
        let shared = service.shared_maps();
        skel.maps
            .phase_map
            .set_max_entries(map_capacity(shared.tid_map)?)?;
        skel.maps.phase_map.reuse_fd(shared.tid_map)?;
        skel.maps.hint_memory.reuse_fd(shared.memory)?;
        skel.maps.hint_workloads.reuse_fd(shared.workloads)?;
        skel.maps.hint_tasks.reuse_fd(shared.tasks)?;
        skel.maps.cpu_claims.reuse_fd(shared.cpu_claims)?;
        skel.maps.workload_claims.reuse_fd(shared.workload_claims)?;
        skel.maps.claim_state.reuse_fd(shared.claim_state)?;
        skel.maps.workload_stats.reuse_fd(shared.workload_stats)?;

        let mut skel =
            scx_ops_load!(skel, phase_ops, uei).map_err(preflight::explain_load_failure)?;

        // Stats pins left by a killed instance are stale: replace them.
        let stats_pins = [pin_dir.join(STATS_MAP_NAME), pin_dir.join(WORK_MAP_NAME)];
        for (map, pin) in [&mut skel.maps.phase_stats, &mut skel.maps.work_stats]
            .into_iter()
            .zip(&stats_pins)
        {
            let _ = fs::remove_file(pin);
            map.pin(pin)
                .with_context(|| format!("cannot pin {}", pin.display()))?;
        }

        let link = scx_ops_attach!(skel, phase_ops)?;
        info!(
            "scx_phase attached: slice {} us, {} NUMA node(s){}, boost budget {}% of {} ms, {}, pins in {}",
            opts.slice_us,
            topo.nodes.len(),
            if numa_idle {
                " with per-node idle tracking"
            } else {
                ""
            },
            opts.boost_budget_pct,
            opts.boost_window_ms,
            rules.describe(),
            pin_dir.display()
        );
        Ok(Scheduler {
            skel,
            link: Some(link),
            stats_pins,
            pin_dir: pin_dir.to_path_buf(),
            socket: socket.to_path_buf(),
        })
    }

    fn read_stats(&self) -> Result<stats::Snapshot> {
        Ok(stats::read(
            self.skel.maps.phase_stats.as_fd(),
            self.skel.maps.work_stats.as_fd(),
        )?)
    }

    /// Run until `shutdown` is set or the kernel ends the scheduler, then
    /// detach and report the kernel's exit reason.
    pub fn run(&mut self, opts: &RunOpts, shutdown: &Arc<AtomicBool>) -> Result<UserExitInfo> {
        let interval = opts.stats.map(Duration::from_secs_f64);
        let mut prev = self.read_stats()?;
        let mut next_report = interval.map(|i| Instant::now() + i);
        while !shutdown.load(Ordering::Relaxed) && !uei_exited!(&self.skel, uei) {
            std::thread::sleep(POLL);
            if let (Some(at), Some(i)) = (next_report, interval)
                && Instant::now() >= at
            {
                let cur = self.read_stats()?;
                print_report(
                    &full_report(&prev, &cur, &self.pin_dir, &self.socket),
                    opts.json,
                );
                prev = cur;
                next_report = Some(at + i);
            }
        }
        self.link.take();
        uei_report!(&self.skel, uei)
    }

    /// The kernel's exit reason, as `uei_report!` prints it.
    fn exit_reason(&self) -> String {
        let Some(data) = self.skel.maps.data_data.as_ref() else {
            return "unknown".into();
        };
        let text = |chars: &[i8]| {
            let bytes: Vec<u8> = chars
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let (reason, msg) = (text(&data.uei.reason), text(&data.uei.msg));
        match (reason.is_empty(), msg.is_empty()) {
            (true, _) => "unknown".into(),
            (false, true) => format!("EXIT: {reason}"),
            (false, false) => format!("EXIT: {reason} ({msg})"),
        }
    }
}

impl Drop for Scheduler<'_> {
    fn drop(&mut self) {
        // Detach before anything else, so no task waits on a dead scheduler.
        self.link.take();
        // The phase map stays pinned (hints outlive a restart); the stats
        // pins go, so --monitor can tell that nothing runs.
        for pin in &self.stats_pins {
            if let Err(e) = fs::remove_file(pin) {
                warn!("cannot unpin {}: {e}", pin.display());
            }
        }
    }
}

type Rodata = crate::loader::bpf_skel::types::rodata;

fn write_topology(rodata: &mut Rodata, topo: &HostTopology) {
    let cpu_nodes = topo.cpu_nodes();
    rodata.nr_cpus = cpu_nodes.len() as u32;
    rodata.nr_nodes = topo.nodes.iter().map(|n| n.id + 1).max().unwrap_or(1) as u32;
    for (cpu, node) in cpu_nodes.iter().enumerate() {
        rodata.cpu_node[cpu] = *node as i32;
    }
    let mut next = 0;
    for n in &topo.nodes {
        rodata.node_nr_cpus[n.id] = n.cpus.len() as u32;
        rodata.node_first[n.id] = next as u32;
        for &c in &n.cpus {
            rodata.node_cpus[next] = c as u16;
            next += 1;
        }
    }
    let gpus = topo.gpus.iter().take(rodata.gpu_node.len());
    rodata.nr_gpus = gpus.len() as u32;
    for (i, g) in gpus.enumerate() {
        rodata.gpu_node[i] = g.node.map_or(-1, |n| n as i32);
    }
}

/// The capacity of the map behind `fd`.
fn map_capacity(fd: std::os::fd::BorrowedFd<'_>) -> Result<u32> {
    Ok(libbpf_rs::MapInfo::new(fd)?.info.max_entries)
}

/// Load the hint service's object and start the service: the part of
/// scx_phase that needs no sched_ext.
fn start_service<'a>(
    opts: &RunOpts,
    pin_dir: &Path,
    socket: &Path,
    rules: &NameRules,
    open_object: &'a mut MaybeUninit<OpenObject>,
) -> Result<(ServiceBpf<'a>, Service)> {
    let service = ServiceBpf::load(pin_dir, opts.max_hints, rules, opts.verbose, open_object)?;
    access::lock_down(pin_dir)?;
    let policy = Policy {
        hint_group: opts
            .hint_group
            .as_deref()
            .map(access::resolve_group)
            .transpose()?,
    };
    if let Some((name, gid)) = &policy.hint_group {
        info!("members of group {name} (gid {gid}) may raise threads through the hint service");
    }
    let gpu_nodes = HostTopology::discover()?
        .gpus
        .iter()
        .map(|g| g.node.map(|n| n as u32))
        .collect();
    let config = Config {
        policy,
        max_exclusive_pct: opts.max_exclusive_pct,
        max_locked_mem: match &opts.max_locked_mem {
            Some(s) => {
                memlock::parse_size(s).map_err(|e| anyhow::anyhow!("--max-locked-mem: {e}"))?
            }
            None => memlock::default_budget(),
        },
        gpu_nodes,
        status_path: None,
    };
    let running = Service::start(socket, service.hint_maps()?, config)?;
    Ok((service, running))
}

/// Tell systemd (Type=notify) where we are; a manager that does not listen
/// costs a warning, never the scheduler.
fn tell_manager(state: &str) {
    if let Err(e) = notify::notify(state) {
        warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
    }
}

/// Load, attach and run until stopped; restart when the kernel asks (CPU
/// hotplug). The hint service runs throughout, across restarts.
pub fn run(opts: &RunOpts, pin_dir: &Path, socket: &Path, shutdown: Arc<AtomicBool>) -> Result<()> {
    let rules = classify::load(
        opts.classify_rules.as_deref(),
        opts.no_classify,
        opts.trust_names,
    )?;
    let mut service_object = MaybeUninit::uninit();
    let (service, _running) = start_service(opts, pin_dir, socket, &rules, &mut service_object)?;
    if let Some(addr) = opts.metrics {
        metrics::start(addr, pin_dir, socket, opts.metrics_max_workloads)?;
    }
    if opts.hint_service_only {
        info!(
            "running the hint service only (--hint-service-only): nothing schedules by the hints"
        );
        tell_manager("READY=1\nSTATUS=hint service only");
        while !shutdown.load(Ordering::Relaxed) {
            std::thread::sleep(POLL);
        }
        return Ok(());
    }
    let mut open_object = MaybeUninit::uninit();
    let mut record = Recorder::new(socket);
    // What this kernel lacks, each with its fallback's cost: said once.
    let release = preflight::kernel_release();
    let lacks = kernel::missing_here(&release);
    for f in &lacks {
        info!("{}", kernel::line(&release, f));
    }
    record.kernel(kernel::record(&release, &lacks));
    loop {
        // Again on each restart: a hotplug restart means the CPUs changed.
        let topo = HostTopology::discover()?;
        let mut sched = Scheduler::init(
            opts,
            pin_dir,
            &topo,
            &rules,
            &service,
            socket,
            &mut open_object,
        )?;
        record.attached();
        tell_manager("READY=1\nSTATUS=attached");
        let uei = sched.run(opts, &shutdown);
        let restart =
            uei.as_ref().is_ok_and(|u| u.should_restart()) && !shutdown.load(Ordering::Relaxed);
        if !restart {
            tell_manager("STOPPING=1");
        }
        record.exited(&sched.exit_reason(), restart);
        uei?;
        if restart {
            info!("the kernel asked for a restart; reloading");
            continue;
        }
        return Ok(());
    }
}
