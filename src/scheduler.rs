//! Loading, attaching and running the BPF scheduler.

use std::fs;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use libbpf_rs::OpenObject;
use log::{info, warn};
use scx_phase::phase_map::{self, PhaseMap};
use scx_phase::stats::{self, STATS_MAP_NAME};
use scx_utils::{UserExitInfo, scx_ops_attach, scx_ops_load, scx_ops_open, uei_exited, uei_report};

use crate::bpf_skel::*;
use crate::cli::RunOpts;
use crate::output::print_report;
use crate::topology::HostTopology;

/// How often the run loop looks for Ctrl-C and a kernel-side exit: bounds
/// the detach latency.
const POLL: Duration = Duration::from_millis(50);

pub struct Scheduler<'a> {
    skel: BpfSkel<'a>,
    link: Option<libbpf_rs::Link>,
    stats_pin: PathBuf,
}

impl<'a> Scheduler<'a> {
    pub fn init(
        opts: &RunOpts,
        pin_dir: &Path,
        topo: &HostTopology,
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

        let rodata = skel
            .maps
            .rodata_data
            .as_mut()
            .context("BPF object has no read-only data")?;
        rodata.slice_ns = opts.slice_us * 1000;
        let cpu_nodes = topo.cpu_nodes();
        rodata.nr_cpus = cpu_nodes.len() as u32;
        rodata.nr_nodes = topo.nodes.len() as u32;
        for (cpu, node) in cpu_nodes.iter().enumerate() {
            rodata.cpu_node[cpu] = *node as i32;
        }
        let gpus = topo.gpus.iter().take(rodata.gpu_node.len());
        rodata.nr_gpus = gpus.len() as u32;
        for (i, g) in gpus.enumerate() {
            rodata.gpu_node[i] = g.node.map_or(-1, |n| n as i32);
        }

        // Reuse a pinned phase map so that hints survive a restart.
        let map_path = phase_map::map_path(pin_dir);
        let reused = match PhaseMap::open(&map_path) {
            Ok(pinned) => {
                let map = &mut skel.maps.phase_map;
                map.set_max_entries(pinned.capacity())?;
                map.reuse_fd(pinned.as_fd())
                    .with_context(|| format!("cannot reuse {}", map_path.display()))?;
                let kept = pinned.entries().map_or(0, |e| e.len());
                info!(
                    "reusing pinned phase map {} ({kept} hints kept, capacity {})",
                    map_path.display(),
                    pinned.capacity()
                );
                true
            }
            Err(phase_map::Error::NotFound { .. }) => {
                skel.maps.phase_map.set_max_entries(opts.max_hints)?;
                false
            }
            Err(e) => bail!("{e}"),
        };

        let mut skel = scx_ops_load!(skel, phase_ops, uei)?;

        fs::create_dir_all(pin_dir)
            .with_context(|| format!("cannot create {}", pin_dir.display()))?;
        if !reused {
            skel.maps
                .phase_map
                .pin(&map_path)
                .with_context(|| format!("cannot pin {}", map_path.display()))?;
        }
        // A stats pin left by a killed instance is stale: replace it.
        let stats_pin = pin_dir.join(STATS_MAP_NAME);
        let _ = fs::remove_file(&stats_pin);
        skel.maps
            .phase_stats
            .pin(&stats_pin)
            .with_context(|| format!("cannot pin {}", stats_pin.display()))?;

        let link = scx_ops_attach!(skel, phase_ops)?;
        info!(
            "scx_phase attached: slice {} us, {} NUMA node(s), phase map {}",
            opts.slice_us,
            topo.nodes.len(),
            map_path.display()
        );
        Ok(Scheduler {
            skel,
            link: Some(link),
            stats_pin,
        })
    }

    fn read_stats(&self) -> Result<stats::Snapshot> {
        Ok(stats::read(self.skel.maps.phase_stats.as_fd())?)
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
                print_report(&stats::report(&prev, &cur), opts.json);
                prev = cur;
                next_report = Some(at + i);
            }
        }
        self.link.take();
        uei_report!(&self.skel, uei)
    }
}

impl Drop for Scheduler<'_> {
    fn drop(&mut self) {
        // Detach before anything else, so no task waits on a dead scheduler.
        self.link.take();
        // The phase map stays pinned (hints outlive a restart); the stats
        // pin goes, so --monitor can tell that nothing runs.
        if let Err(e) = fs::remove_file(&self.stats_pin) {
            warn!("cannot unpin {}: {e}", self.stats_pin.display());
        }
    }
}

/// Load, attach and run until stopped; restart when the kernel asks (CPU
/// hotplug).
pub fn run(opts: &RunOpts, pin_dir: &Path, shutdown: Arc<AtomicBool>) -> Result<()> {
    let mut open_object = MaybeUninit::uninit();
    loop {
        // Again on each restart: a hotplug restart means the CPUs changed.
        let topo = HostTopology::discover()?;
        let mut sched = Scheduler::init(opts, pin_dir, &topo, &mut open_object)?;
        let uei = sched.run(opts, &shutdown)?;
        if uei.should_restart() && !shutdown.load(Ordering::Relaxed) {
            info!("the kernel asked for a restart; reloading");
            continue;
        }
        return Ok(());
    }
}
