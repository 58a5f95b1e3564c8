//! phase-bench: a synthetic training job that hints every phase through the
//! shim, with optional noisy neighbours. It prints step-time percentiles,
//! throughput, data stall, checkpoint time and what the neighbours got done,
//! as a table and as JSON.

mod background;
mod hints;
mod pipeline;
mod ranks;
mod trainer;
mod work;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use scx_phase::Phase;
use scx_phase::hint::workload::{Node, Workload, WorkloadRequest};
use serde::Serialize;

/// A synthetic training job for comparing schedulers.
#[derive(Debug, Clone, Parser)]
#[command(name = "phase-bench", version)]
struct Opts {
    /// How long to run, in seconds, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Seconds run first and not counted: steps, their rates, data stall,
    /// barrier waits and loader samples count from then on; CPU shares
    /// cover the whole run [default: 0].
    #[arg(long, default_value_t = 0.0)]
    warmup_s: f64,
    /// Seed of the sample-cost distribution.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Intra-op helper threads beside the trainer (K).
    #[arg(long, default_value_t = 1)]
    helpers: usize,
    /// Forward compute per step and thread, in ms (F); backward is 2F.
    #[arg(long, default_value_t = 4.0)]
    forward_ms: f64,
    /// Optimizer buffer, swept every step and written by checkpoints (B MiB).
    #[arg(long, default_value_t = 8)]
    buffer_mib: usize,
    /// Checkpoint every C steps, on its own thread (0 = never).
    #[arg(long, default_value_t = 10)]
    checkpoint_every: u64,
    /// Data-loader threads (N).
    #[arg(long, default_value_t = 2)]
    loaders: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 4)]
    batch: u64,
    /// Median cost of one sample, in ms (lognormal).
    #[arg(long, default_value_t = 1.5)]
    sample_ms: f64,
    /// Log-space sigma of the sample cost: the tail's weight.
    #[arg(long, default_value_t = 0.8)]
    sample_sigma: f64,
    /// Batches the loaders may prepare ahead.
    #[arg(long, default_value_t = 4)]
    prefetch: u64,
    /// Un-hinted CPU hogs (H) [default: 0].
    #[arg(long, default_value_t = 0)]
    hogs: usize,
    /// Un-hinted memory streamers, each sweeping 32 MiB a cache line at a
    /// time [default: 0].
    #[arg(long, default_value_t = 0)]
    streamers: usize,
    /// Run an I/O writer that writes and fsyncs 1 MiB in a loop [default: off].
    #[arg(long)]
    io_writer: bool,
    /// NUMA node the loaders' data lives on [default: any].
    #[arg(long)]
    loader_node: Option<u32>,
    /// Write no hints at all [default: off].
    #[arg(long)]
    no_hints: bool,
    /// Claim this many CPUs through the workload API, on --loader-node if
    /// given, for the whole run [default: 0, none].
    #[arg(long, default_value_t = 0)]
    claim_cpus: u32,
    /// Make the claim exclusive: nobody else is placed on those CPUs
    /// [default: off].
    #[arg(long, requires = "claim_cpus")]
    exclusive: bool,
    /// Run N ranks of the job as processes, each with its trainer and
    /// loaders on its own NUMA node (ranks split evenly across the nodes),
    /// and a barrier across ranks ending every step, as an all-reduce
    /// [default: 0, one job without it].
    #[arg(long, default_value_t = 0, conflicts_with_all = ["claim_cpus", "loader_node"])]
    ranks: usize,
    /// Folder for checkpoint and I/O files.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Also print every step's time, in ms, one per line on stderr
    /// [default: off].
    #[arg(long)]
    print_steps: bool,
    /// Print only the JSON line [default: off].
    #[arg(long)]
    json: bool,
    /// Niceness of the background process, whatever the job's own (so
    /// that `nice -n -10 phase-bench` raises only the job).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    background_nice: i32,
    /// Internal: be the background process (hogs, I/O writer) and print
    /// the hogs' work when done.
    #[arg(long, hide = true)]
    background_only: bool,
}

/// The background lives in its own process: a nice value or a cgroup given
/// to the job must not reach its neighbours.
fn spawn_background(opts: &Opts) -> Option<std::process::Child> {
    if opts.hogs == 0 && opts.streamers == 0 && !opts.io_writer {
        return None;
    }
    let exe = std::env::current_exe().expect("own executable");
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--background-only", "--hogs", &opts.hogs.to_string()])
        .args(["--streamers", &opts.streamers.to_string()])
        .args([
            "--duration-s",
            &(opts.warmup_s + opts.duration_s).to_string(),
        ])
        .args(["--background-nice", &opts.background_nice.to_string()])
        .arg("--dir")
        .arg(&opts.dir)
        .stdout(std::process::Stdio::piped());
    if opts.io_writer {
        cmd.arg("--io-writer");
    }
    Some(cmd.spawn().expect("spawn the background process"))
}

/// CPU time this process has used so far, all threads, in seconds.
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The background process: run for the duration, print the hogs' spin
/// iterations, the CPU seconds the process used and the bytes streamed.
fn background_only(opts: &Opts) {
    // SAFETY: setpriority on this thread; threads spawned after inherit it.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, opts.background_nice) };
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = process_cpu_s();
    let bg = background::Background::start(
        opts.hogs,
        opts.streamers,
        opts.io_writer,
        &opts.dir,
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs_f64(opts.duration_s.max(0.1)));
    stop.store(true, Ordering::Relaxed);
    let work = bg.hog_work.load(Ordering::Relaxed);
    let streamed = bg.streamed.load(Ordering::Relaxed);
    bg.join();
    println!("{work} {:.6} {streamed}", process_cpu_s() - cpu0);
}

#[derive(Serialize)]
struct Results {
    steps: usize,
    step_ms_p50: f64,
    step_ms_p99: f64,
    step_ms_max: f64,
    samples_per_s: f64,
    data_stall_pct: f64,
    checkpoints: usize,
    checkpoint_ms_mean: f64,
    checkpoint_ms_max: f64,
    hog_work_per_s: f64,
    /// What the memory streamers swept, in MiB/s.
    stream_mib_per_s: f64,
    /// CPUs online, and the share of all of them the job and the
    /// background used.
    cpus: usize,
    job_cpu_pct: f64,
    background_cpu_pct: f64,
    /// The background's CPU time over what the job left unused.
    hog_share_of_unused_pct: Option<f64>,
    loader_local_pct: Option<f64>,
    /// Forward and backward: calibrated work per CPU time (100 = as fast as
    /// on the idle machine), and CPU time per wall time (100 = never
    /// waited for a CPU).
    compute_speed_pct: f64,
    compute_on_cpu_pct: f64,
    /// The trainer's wall time spent at barriers, in percent.
    barrier_pct: f64,
    set_phase_per_s: f64,
    /// Hint calls that failed (no scheduler, or the service did not answer).
    hint_failures: u64,
    /// The slowest hint call, in ms: a thread's first waits for the
    /// hint service to bind its slot.
    hint_ms_max: f64,
    wall_s: f64,
    /// The CPUs the job held through the workload API.
    claimed_cpus: Vec<u32>,
    claim_exclusive: bool,
}

/// The workload the job runs as, with --claim-cpus; a refusal ends the
/// run with the service's reason.
fn claim(opts: &Opts) -> Option<Workload> {
    if opts.claim_cpus == 0 {
        return None;
    }
    let req = WorkloadRequest {
        cpus: opts.claim_cpus,
        node: opts.loader_node.map_or(Node::Any, Node::Id),
        exclusive: opts.exclusive,
        ..Default::default()
    };
    match Workload::open(&req) {
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!("phase-bench: --claim-cpus {}: {e}", opts.claim_cpus);
            std::process::exit(1);
        }
    }
}

/// The NUMA node the calling thread runs on now (getcpu(2): the CPU and
/// its node in one call, no file to read while the loaders are busy).
fn current_node() -> Option<u32> {
    let (mut cpu, mut node) = (0u32, 0u32);
    // SAFETY: getcpu writes the two integers we own; the cache is unused.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    (rc == 0).then_some(node)
}

/// The background's report: "<hog spin iterations> <CPU seconds> <bytes
/// streamed>".
fn parse_background(out: &str) -> (u64, f64, u64) {
    let mut it = out.split_whitespace();
    let work = it.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let cpu = it.next().and_then(|c| c.parse().ok()).unwrap_or(0.0);
    let streamed = it.next().and_then(|b| b.parse().ok()).unwrap_or(0);
    (work, cpu, streamed)
}

/// One job's run: its results, and with a barrier across ranks, what the
/// rank measured.
fn job(
    opts: &Opts,
    work: Arc<work::Work>,
    all_reduce: Option<trainer::AllReduce>,
) -> (Results, ranks::RankRun) {
    // Before any thread starts: a claim places the job's threads as they
    // are created.
    let workload = claim(opts);
    let count_from = Instant::now() + Duration::from_secs_f64(opts.warmup_s.max(0.0));
    let stop = Arc::new(AtomicBool::new(false));
    let pipe = Arc::new(pipeline::Pipeline::new(opts.batch, opts.prefetch));
    let (local, placed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    let loaders: Vec<_> = (0..opts.loaders)
        .map(|i| {
            let (p, w, l, n) = (pipe.clone(), work.clone(), local.clone(), placed.clone());
            let (seed, median, sigma, node) = (
                opts.seed,
                opts.sample_ms,
                opts.sample_sigma,
                opts.loader_node,
            );
            std::thread::Builder::new()
                .name(format!("loader_{i}"))
                .spawn(move || {
                    // A loader hints once: one whose hint failed (the
                    // service too slow to answer under load) tries again
                    // before each sample until it takes.
                    let mut hinted = hints::set(Phase::DataLoading, node);
                    // The scheduler applies a node at the thread's next
                    // scheduling event: take one now, so that the first
                    // sample is not counted off its node for a thread that
                    // has not yet been placed.
                    std::thread::yield_now();
                    while let Some(sample) = p.claim() {
                        if !hinted {
                            hinted = hints::set(Phase::DataLoading, node);
                        }
                        w.run_ms(work::sample_ms(seed, sample, median, sigma));
                        if let Some(want) = node.filter(|_| Instant::now() >= count_from) {
                            n.fetch_add(1, Ordering::Relaxed);
                            if current_node() == Some(want) {
                                l.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        p.done(sample);
                    }
                })
                .expect("spawn loader")
        })
        .collect();
    let background = spawn_background(opts);

    // Ranks end together, when their barrier says so; a lone job on time.
    let timer = all_reduce.is_none().then(|| {
        let (s, p, d) = (
            stop.clone(),
            pipe.clone(),
            Duration::from_secs_f64(opts.warmup_s.max(0.0) + opts.duration_s.max(0.1)),
        );
        std::thread::spawn(move || {
            std::thread::sleep(d);
            s.store(true, Ordering::Relaxed);
            p.stop();
        })
    });
    let t0 = Instant::now();
    let cpu0 = process_cpu_s();
    let cfg = trainer::Config {
        helpers: opts.helpers,
        forward_ms: opts.forward_ms,
        buffer_mib: opts.buffer_mib,
        checkpoint_every: opts.checkpoint_every,
        dir: opts.dir.clone(),
        all_reduce,
        count_from,
    };
    let mut out = trainer::run(&cfg, work.clone(), pipe.clone(), stop.clone());
    let wall = t0.elapsed().as_secs_f64();
    // What the counted figures are over: the run less its warm-up.
    let counted_wall = count_from.elapsed().as_secs_f64().max(1e-3);
    let job_cpu = process_cpu_s() - cpu0;
    match timer {
        Some(timer) => {
            let _ = timer.join();
        }
        None => {
            stop.store(true, Ordering::Relaxed);
            pipe.stop();
        }
    }
    for l in loaders {
        let _ = l.join();
    }
    let has_background = background.is_some();
    let (hog_work, bg_cpu, streamed) = background
        .and_then(|child| child.wait_with_output().ok())
        .map(|out| parse_background(&String::from_utf8_lossy(&out.stdout)))
        .unwrap_or((0, 0.0, 0));
    // SAFETY: sysconf has no memory arguments.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let capacity = cpus as f64 * wall;

    if opts.print_steps {
        for (i, ms) in out.step_ms.iter().enumerate() {
            eprintln!("step {i} {ms:.1}");
        }
    }
    let rank = ranks::RankRun {
        rank: 0,
        node: opts.loader_node.unwrap_or(0),
        step_ms: out.step_ms.clone(),
        compute_ms: std::mem::take(&mut out.before_all_reduce_ms),
        wait_ms: std::mem::take(&mut out.all_reduce_wait_ms),
        loader_local: local.load(Ordering::Relaxed),
        loader_placed: placed.load(Ordering::Relaxed),
        wall_s: counted_wall,
        compute_speed_pct: out.compute.speed_pct(),
        compute_on_cpu_pct: out.compute.on_cpu_pct(),
        data_stall_pct: out.stall.as_secs_f64() * 100.0 / counted_wall,
        hint_failures: hints::failed(),
        hint_ms_max: hints::slowest_ms(),
    };
    let mut steps = out.step_ms.clone();
    steps.sort_by(f64::total_cmp);
    let ck = &out.checkpoint_ms;
    let r = Results {
        steps: steps.len(),
        step_ms_p50: ranks::percentile(&steps, 0.5),
        step_ms_p99: ranks::percentile(&steps, 0.99),
        step_ms_max: steps.last().copied().unwrap_or(0.0),
        samples_per_s: (steps.len() as u64 * opts.batch) as f64 / counted_wall,
        data_stall_pct: out.stall.as_secs_f64() * 100.0 / counted_wall,
        checkpoints: ck.len(),
        checkpoint_ms_mean: if ck.is_empty() {
            0.0
        } else {
            ck.iter().sum::<f64>() / ck.len() as f64
        },
        checkpoint_ms_max: ck.iter().copied().fold(0.0, f64::max),
        // In calibrated milliseconds of work per second.
        hog_work_per_s: hog_work as f64 / work.units_per_ms() as f64 / wall,
        stream_mib_per_s: streamed as f64 / (1 << 20) as f64 / wall,
        cpus,
        job_cpu_pct: job_cpu * 100.0 / capacity,
        background_cpu_pct: bg_cpu * 100.0 / capacity,
        hog_share_of_unused_pct: has_background
            .then(|| bg_cpu * 100.0 / (capacity - job_cpu).max(1e-3)),
        loader_local_pct: opts.loader_node.map(|_| {
            local.load(Ordering::Relaxed) as f64 * 100.0
                / placed.load(Ordering::Relaxed).max(1) as f64
        }),
        compute_speed_pct: out.compute.speed_pct(),
        compute_on_cpu_pct: out.compute.on_cpu_pct(),
        barrier_pct: out.barrier.as_secs_f64() * 100.0 / wall,
        set_phase_per_s: hints::calls() as f64 / wall,
        hint_failures: hints::failed(),
        hint_ms_max: hints::slowest_ms(),
        wall_s: wall,
        claimed_cpus: workload.as_ref().map(Workload::cpus).unwrap_or_default(),
        claim_exclusive: opts.exclusive,
    };
    drop(workload);
    (r, rank)
}

fn print_results(r: &Results) {
    println!(
        "steps {}  step p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.steps, r.step_ms_p50, r.step_ms_p99, r.step_ms_max
    );
    println!(
        "samples/s {:.0}  data stall {:.1}%  checkpoints {} (mean {:.1} ms, max {:.1} ms)",
        r.samples_per_s, r.data_stall_pct, r.checkpoints, r.checkpoint_ms_mean, r.checkpoint_ms_max
    );
    let local = r
        .loader_local_pct
        .map_or_else(|| "-".to_string(), |p| format!("{p:.1}%"));
    println!(
        "hog work {:.0} ms/s  streamed {:.0} MiB/s  loader samples on their node {local}  set_phase {:.0}/s (slowest {:.1} ms)",
        r.hog_work_per_s, r.stream_mib_per_s, r.set_phase_per_s, r.hint_ms_max
    );
    let share = r
        .hog_share_of_unused_pct
        .map_or_else(|| "-".to_string(), |p| format!("{p:.1}%"));
    println!(
        "CPU on {} CPUs: job {:.1}%  background {:.1}%  background's share of what the job left {share}",
        r.cpus, r.job_cpu_pct, r.background_cpu_pct
    );
    println!(
        "compute: speed {:.1}% of calibrated, on CPU {:.1}% of its wall time; trainer at barriers {:.1}%",
        r.compute_speed_pct, r.compute_on_cpu_pct, r.barrier_pct
    );
    if !r.claimed_cpus.is_empty() {
        let kind = if r.claim_exclusive {
            "exclusive"
        } else {
            "preferred"
        };
        println!("claimed CPUs ({kind}): {:?}", r.claimed_cpus);
    }
}

fn print_ranks(s: &ranks::Summary) {
    println!(
        "{} ranks, {} steps  step p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        s.ranks, s.steps, s.step_ms_p50, s.step_ms_p99, s.step_ms_max
    );
    println!(
        "straggler gap (slowest rank less the median, per step): p50 {:.1} ms  p99 {:.1} ms  mean {:.1} ms",
        s.straggler_ms_p50, s.straggler_ms_p99, s.straggler_ms_mean
    );
    println!(
        "at the barrier: {:.1}% of the ranks' time (most {:.1}%)  loader samples on their node {:.1}% (worst rank {:.1}%)",
        s.barrier_wait_pct, s.barrier_wait_pct_max, s.loader_local_pct, s.loader_local_pct_min
    );
    println!(
        "compute: speed {:.1}% of calibrated, on CPU {:.1}% of its wall time; data stall {:.1}% (rank means); hint calls failed: {}, slowest {:.1} ms",
        s.compute_speed_pct, s.compute_on_cpu_pct, s.data_stall_pct, s.hint_failures, s.hint_ms_max
    );
    for r in &s.per_rank {
        println!(
            "  rank {} node {}: before the barrier p50 {:.1} ms, at it {:.1}%, loaders on node {:.1}%",
            r.rank, r.node, r.compute_ms_p50, r.barrier_wait_pct, r.loader_local_pct
        );
    }
}

/// --ranks N: fork the ranks before any thread starts; the neighbours run
/// once, in the parent's background process, not once per rank.
fn run_ranks(opts: &Opts, work: Arc<work::Work>) {
    let background = spawn_background(opts);
    let rank_opts = |node: u32| Opts {
        loader_node: Some(node),
        hogs: 0,
        streamers: 0,
        io_writer: false,
        print_steps: false,
        ..opts.clone()
    };
    let duration = Duration::from_secs_f64(opts.warmup_s.max(0.0) + opts.duration_s.max(0.1));
    let runs = ranks::run(opts.ranks, duration, |i, node, barrier| {
        let all_reduce = || barrier.wait();
        let (_, mut run) = job(&rank_opts(node), work.clone(), Some(&all_reduce));
        run.rank = i;
        run
    });
    if let Some(child) = background {
        let _ = child.wait_with_output();
    }
    let runs = match runs {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("phase-bench: --ranks {}: {e}", opts.ranks);
            std::process::exit(1);
        }
    };
    let summary = ranks::summarize(&runs);
    if !opts.json {
        print_ranks(&summary);
    }
    match serde_json::to_string(&summary) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("phase-bench: cannot encode results: {e}"),
    }
}

fn main() {
    let opts = Opts::parse();
    if opts.background_only {
        background_only(&opts);
        return;
    }
    if opts.no_hints {
        hints::disable();
    }
    // Calibrated once, before any rank is forked: ranks calibrating at
    // once would each measure a share of the CPUs.
    let work = Arc::new(work::Work::calibrate());
    if opts.ranks > 0 {
        run_ranks(&opts, work);
        return;
    }
    let (r, _) = job(&opts, work, None);
    if !opts.json {
        print_results(&r);
    }
    match serde_json::to_string(&r) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("phase-bench: cannot encode results: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_report_parses_and_tolerates_garbage() {
        assert_eq!(parse_background("1200 3.500000 4096\n"), (1200, 3.5, 4096));
        assert_eq!(parse_background("77"), (77, 0.0, 0));
        assert_eq!(parse_background(""), (0, 0.0, 0));
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(ranks::percentile(&v, 0.5), 51.0);
        assert_eq!(ranks::percentile(&v, 0.99), 99.0);
        assert_eq!(ranks::percentile(&[], 0.5), 0.0);
    }
}
