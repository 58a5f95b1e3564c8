//! --ranks N: one job's N ranks as processes, as a GPU node runs one per
//! GPU. Each rank has its trainer and its loaders on its own NUMA node, and
//! every step ends at a barrier across the ranks, as an all-reduce does: a
//! rank slowed by a neighbour holds up all of them.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The barrier's state, in memory shared by the ranks (mapped before they
/// are forked).
#[repr(C)]
struct Shared {
    arrived: AtomicU32,
    /// Bumped by the last rank to arrive: the others wait on it (futex).
    generation: AtomicU32,
    /// Whether the run ends at this barrier: decided by the last rank to
    /// arrive, so that every rank leaves the same barrier and none waits
    /// for one that has stopped.
    stop: AtomicU32,
    /// Set by the parent when a rank died: the others stop waiting.
    abort: AtomicU32,
}

/// A barrier across processes: a futex word in a shared anonymous mapping.
pub struct Barrier {
    shared: *mut Shared,
    ranks: u32,
    deadline_ns: u64,
}

// SAFETY: the mapping lives as long as the process, and every field is atomic.
unsafe impl Send for Barrier {}
unsafe impl Sync for Barrier {}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Barrier {
    /// A barrier for `ranks` processes whose run ends at the first barrier
    /// after `duration`. Call before forking them.
    pub fn new(ranks: u32, duration: Duration) -> Barrier {
        // SAFETY: a fresh anonymous shared mapping, checked below; zeroed
        // memory is a valid Shared (all atomics at 0).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Shared>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "phase-bench: cannot map the ranks' barrier"
        );
        Barrier {
            shared: p.cast(),
            ranks,
            deadline_ns: monotonic_ns() + duration.as_nanos() as u64,
        }
    }

    fn shared(&self) -> &Shared {
        // SAFETY: mapped in new() and never unmapped.
        unsafe { &*self.shared }
    }

    /// Wait for every rank; whether to run another step.
    pub fn wait(&self) -> bool {
        let s = self.shared();
        let generation = s.generation.load(Ordering::Acquire);
        if s.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.ranks {
            s.arrived.store(0, Ordering::Relaxed);
            if monotonic_ns() >= self.deadline_ns {
                s.stop.store(1, Ordering::Relaxed);
            }
            s.generation.fetch_add(1, Ordering::Release);
            futex(&s.generation, libc::FUTEX_WAKE, i32::MAX as u32);
        } else {
            while s.generation.load(Ordering::Acquire) == generation {
                if s.abort.load(Ordering::Relaxed) != 0 {
                    return false;
                }
                futex(&s.generation, libc::FUTEX_WAIT, generation);
            }
        }
        s.stop.load(Ordering::Relaxed) == 0 && s.abort.load(Ordering::Relaxed) == 0
    }

    /// A rank is gone: nobody waits for it any more.
    pub fn abort(&self) {
        let s = self.shared();
        s.abort.store(1, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        futex(&s.generation, libc::FUTEX_WAKE, i32::MAX as u32);
    }
}

/// FUTEX_WAIT (up to 200 ms, so that an abort is seen) or FUTEX_WAKE on a
/// word shared between processes (not FUTEX_PRIVATE).
fn futex(word: &AtomicU32, op: i32, val: u32) {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    // SAFETY: the word is valid shared memory; the timeout outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            &timeout as *const libc::timespec,
        )
    };
}

/// The NUMA nodes that have CPUs, in order.
pub fn nodes_with_cpus() -> Vec<u32> {
    let mut nodes: Vec<u32> = std::fs::read_dir("/sys/devices/system/node")
        .map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                let n: u32 = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
                let cpus = std::fs::read_to_string(e.path().join("cpulist")).ok()?;
                (!cpus.trim().is_empty()).then_some(n)
            })
            .collect()
        })
        .unwrap_or_default();
    nodes.sort_unstable();
    if nodes.is_empty() {
        nodes.push(0);
    }
    nodes
}

/// The node of rank `rank` of `ranks`: the ranks split evenly across the
/// nodes, in order (8 ranks on 2 nodes: 0-3 on the first, 4-7 on the second).
pub fn rank_node(rank: usize, ranks: usize, nodes: &[u32]) -> u32 {
    nodes[rank * nodes.len() / ranks.max(1)]
}

/// What one rank measured, sent to the parent as a JSON line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RankRun {
    pub rank: usize,
    pub node: u32,
    /// Per step: the rank's step, from leaving one barrier to leaving the
    /// next; its time before the barrier (data, forward, backward,
    /// optimizer); its wait at the barrier.
    pub step_ms: Vec<f64>,
    pub compute_ms: Vec<f64>,
    pub wait_ms: Vec<f64>,
    pub loader_local: u64,
    pub loader_placed: u64,
    pub wall_s: f64,
    /// Forward and backward: calibrated work per CPU time (below 100: the
    /// CPU ran slower, e.g. a vCPU sharing a host core), and CPU time per
    /// wall time (below 100: waited for a CPU, the guest scheduler's part).
    pub compute_speed_pct: f64,
    pub compute_on_cpu_pct: f64,
    /// The trainer's wall time waiting for its loaders' batches, in percent.
    pub data_stall_pct: f64,
    pub hint_failures: u64,
    /// The rank's slowest hint call (a first one waits for the service).
    pub hint_ms_max: f64,
}

/// One rank's line in the summary.
#[derive(Debug, Serialize)]
pub struct RankLine {
    pub rank: usize,
    pub node: u32,
    pub compute_ms_p50: f64,
    pub barrier_wait_pct: f64,
    pub loader_local_pct: f64,
}

/// The node's figures: the job's step, the straggler gap, the barrier.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub ranks: usize,
    pub steps: usize,
    /// The job's step: from one barrier to the next, as the last rank
    /// leaves it.
    pub step_ms_p50: f64,
    pub step_ms_p99: f64,
    pub step_ms_max: f64,
    /// Per step, the slowest rank's time before the barrier minus the
    /// median rank's.
    pub straggler_ms_p50: f64,
    pub straggler_ms_p99: f64,
    pub straggler_ms_mean: f64,
    /// The ranks' time waiting at the barrier, in percent of their wall
    /// time: the mean over ranks, and the most of one rank.
    pub barrier_wait_pct: f64,
    pub barrier_wait_pct_max: f64,
    /// Loader samples run on their rank's node: all ranks, and the worst.
    pub loader_local_pct: f64,
    pub loader_local_pct_min: f64,
    /// The ranks' mean compute speed, time on CPU and data stall (RankRun's).
    pub compute_speed_pct: f64,
    pub compute_on_cpu_pct: f64,
    pub data_stall_pct: f64,
    /// Hint calls that failed, all ranks, and the slowest call of any.
    pub hint_failures: u64,
    pub hint_ms_max: f64,
    pub per_rank: Vec<RankLine>,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn mean_of(runs: &[RankRun], f: impl Fn(&RankRun) -> f64) -> f64 {
    runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
}

fn pct(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

/// The node's figures from every rank's. Steps are matched by index: the
/// barrier keeps the ranks in lockstep.
pub fn summarize(runs: &[RankRun]) -> Summary {
    let steps = runs.iter().map(|r| r.step_ms.len()).min().unwrap_or(0);
    let mut job_steps = Vec::with_capacity(steps);
    let mut gaps = Vec::with_capacity(steps);
    for k in 0..steps {
        job_steps.push(runs.iter().map(|r| r.step_ms[k]).fold(0.0, f64::max));
        let mut before: Vec<f64> = runs.iter().map(|r| r.compute_ms[k]).collect();
        let slowest = before.iter().copied().fold(0.0, f64::max);
        gaps.push(slowest - median(&mut before));
    }
    let mean_gap = if gaps.is_empty() {
        0.0
    } else {
        gaps.iter().sum::<f64>() / gaps.len() as f64
    };
    job_steps.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    let per_rank: Vec<RankLine> = runs
        .iter()
        .map(|r| RankLine {
            rank: r.rank,
            node: r.node,
            compute_ms_p50: median(&mut r.compute_ms.clone()),
            barrier_wait_pct: r.wait_ms.iter().sum::<f64>() / 10.0 / r.wall_s.max(1e-3),
            loader_local_pct: pct(r.loader_local, r.loader_placed),
        })
        .collect();
    let waits: Vec<f64> = per_rank.iter().map(|r| r.barrier_wait_pct).collect();
    Summary {
        ranks: runs.len(),
        steps,
        step_ms_p50: percentile(&job_steps, 0.5),
        step_ms_p99: percentile(&job_steps, 0.99),
        step_ms_max: job_steps.last().copied().unwrap_or(0.0),
        straggler_ms_p50: percentile(&gaps, 0.5),
        straggler_ms_p99: percentile(&gaps, 0.99),
        straggler_ms_mean: mean_gap,
        barrier_wait_pct: waits.iter().sum::<f64>() / waits.len().max(1) as f64,
        barrier_wait_pct_max: waits.iter().copied().fold(0.0, f64::max),
        loader_local_pct: pct(
            runs.iter().map(|r| r.loader_local).sum(),
            runs.iter().map(|r| r.loader_placed).sum(),
        ),
        loader_local_pct_min: per_rank
            .iter()
            .map(|r| r.loader_local_pct)
            .fold(100.0, f64::min),
        compute_speed_pct: mean_of(runs, |r| r.compute_speed_pct),
        compute_on_cpu_pct: mean_of(runs, |r| r.compute_on_cpu_pct),
        data_stall_pct: mean_of(runs, |r| r.data_stall_pct),
        hint_failures: runs.iter().map(|r| r.hint_failures).sum(),
        hint_ms_max: runs.iter().map(|r| r.hint_ms_max).fold(0.0, f64::max),
        per_rank,
    }
}

/// Fork `ranks` processes, each running `rank(i, node, barrier)`, and
/// collect what each returns. A rank that dies ends the run with its
/// exit status: the others are told to stop at their next barrier.
pub fn run(
    ranks: usize,
    duration: Duration,
    rank: impl Fn(usize, u32, &Barrier) -> RankRun,
) -> Result<Vec<RankRun>, String> {
    let nodes = nodes_with_cpus();
    let barrier = Barrier::new(ranks as u32, duration);
    let mut children = Vec::with_capacity(ranks);
    for i in 0..ranks {
        let mut fds = [0; 2];
        // SAFETY: pipe fills the array we own.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the caller forks before it starts any thread (main()), so
        // the child holds no lock another thread owned.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: our end of the pipe, ours alone in this process.
            unsafe { libc::close(fds[0]) };
            let out = rank(i, rank_node(i, ranks, &nodes), &barrier);
            // SAFETY: the write end, owned here from now on.
            let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[1]) };
            let line = serde_json::to_string(&out).unwrap_or_default();
            let ok = pipe.write_all(line.as_bytes()).is_ok();
            // Without running the parent's atexit handlers or destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        // SAFETY: the child's end, not ours.
        unsafe { libc::close(fds[1]) };
        children.push((pid, fds[0]));
    }
    // Each rank's result is read on a thread of its own (a long run's can
    // outgrow a pipe's buffer), while this one reaps the ranks as they end:
    // one that dies tells the others at once, so none waits at a barrier
    // for it. (Reading the ranks in order hung on a barrier when a later
    // one died.)
    let readers: Vec<_> = children
        .iter()
        .map(|&(_, fd)| {
            std::thread::spawn(move || {
                // SAFETY: the read end, ours alone.
                let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        })
        .collect();
    // Its own children by pid, polled: waitpid(-1) could reap a child that
    // is not a rank (another of this process's, as in the unit tests).
    let mut statuses = vec![None; ranks];
    while statuses.iter().any(Option::is_none) {
        for (i, &(pid, _)) in children.iter().enumerate() {
            let mut status = 0;
            // SAFETY: waitpid on our own child, without blocking.
            if statuses[i].is_none()
                && unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid
            {
                statuses[i] = Some(status);
                if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    barrier.abort();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut runs = Vec::with_capacity(ranks);
    let mut failed = None;
    for (i, reader) in readers.into_iter().enumerate() {
        let text = reader.join().unwrap_or_default();
        let status = statuses[i].unwrap_or(-1);
        match serde_json::from_str::<RankRun>(&text) {
            Ok(r) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => runs.push(r),
            _ => {
                failed.get_or_insert(format!("rank {i} failed (wait status {status:#x})"));
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(runs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(rank: usize, compute: &[f64], wait: &[f64]) -> RankRun {
        RankRun {
            rank,
            node: rank as u32 / 2,
            step_ms: compute.iter().zip(wait).map(|(c, w)| c + w).collect(),
            compute_ms: compute.to_vec(),
            wait_ms: wait.to_vec(),
            loader_local: 99 + rank as u64,
            loader_placed: 100 + rank as u64,
            wall_s: 1.0,
            compute_speed_pct: 90.0 + rank as f64,
            compute_on_cpu_pct: 80.0,
            data_stall_pct: 10.0 * rank as f64,
            hint_failures: rank as u64,
            hint_ms_max: 10.0 * rank as f64,
        }
    }

    #[test]
    fn ranks_split_evenly_across_nodes_in_order() {
        let nodes = [0, 1];
        let of: Vec<u32> = (0..8).map(|r| rank_node(r, 8, &nodes)).collect();
        assert_eq!(of, [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(rank_node(1, 2, &nodes), 1);
        assert_eq!(rank_node(2, 3, &[3]), 3);
        let four: Vec<u32> = (0..8).map(|r| rank_node(r, 8, &[0, 1, 2, 3])).collect();
        assert_eq!(four, [0, 0, 1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn the_straggler_gap_is_the_slowest_rank_less_the_median_one() {
        // Step 0: ranks at 10, 10, 10, 30 ms before the barrier: the median
        // is 10, the gap 20. Step 1: 10, 12, 14, 16: median 13, gap 3.
        let runs = [
            run_of(0, &[10.0, 10.0], &[20.0, 6.0]),
            run_of(1, &[10.0, 12.0], &[20.0, 4.0]),
            run_of(2, &[10.0, 14.0], &[20.0, 2.0]),
            run_of(3, &[30.0, 16.0], &[0.0, 0.0]),
        ];
        let s = summarize(&runs);
        assert_eq!(s.steps, 2);
        assert_eq!(s.straggler_ms_mean, 11.5);
        assert_eq!(s.straggler_ms_p99, 20.0);
        // The job's step: the slowest rank's, 30 then 16.
        assert_eq!(s.step_ms_max, 30.0);
        assert_eq!(s.step_ms_p50, 30.0);
        // Rank 0 waited 26 ms of its 1 s; rank 3 never.
        assert!((s.per_rank[0].barrier_wait_pct - 2.6).abs() < 1e-9);
        assert_eq!(s.barrier_wait_pct_max, s.per_rank[0].barrier_wait_pct);
        assert_eq!(s.per_rank[3].barrier_wait_pct, 0.0);
        assert_eq!(s.loader_local_pct_min, 99.0);
        assert_eq!(s.per_rank[1].compute_ms_p50, 11.0);
        assert_eq!(s.compute_speed_pct, 91.5);
        assert_eq!(s.hint_failures, 6);
        assert_eq!(s.hint_ms_max, 30.0);
        assert_eq!(s.data_stall_pct, 15.0);
    }

    #[test]
    fn ranks_of_unequal_length_are_matched_up_to_the_shortest() {
        let runs = [
            run_of(0, &[5.0, 5.0, 5.0], &[1.0; 3]),
            run_of(1, &[7.0], &[0.0]),
        ];
        let s = summarize(&runs);
        assert_eq!(s.steps, 1);
        assert_eq!(s.straggler_ms_mean, 1.0);
        assert_eq!(summarize(&[]).steps, 0);
    }

    #[test]
    fn a_rank_that_dies_ends_the_run_instead_of_hanging_the_others() {
        let t0 = std::time::Instant::now();
        let out = run(3, Duration::from_secs(60), |i, _, barrier| {
            if i == 2 {
                // SAFETY: leave at once, as a crashed rank does.
                unsafe { libc::_exit(3) };
            }
            while barrier.wait() {}
            RankRun::default()
        });
        let err = out.expect_err("a dead rank fails the run");
        assert!(err.contains("rank 2"), "{err}");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn forked_ranks_meet_at_every_barrier_and_stop_together() {
        // Three ranks; rank 2 is slow. Every rank must run the same number
        // of steps, and the fast ones wait at the barrier for the slow one.
        let runs = run(3, Duration::from_millis(300), |i, node, barrier| {
            let mut r = RankRun {
                rank: i,
                node,
                wall_s: 0.3,
                ..Default::default()
            };
            loop {
                let t = std::time::Instant::now();
                std::thread::sleep(Duration::from_millis(if i == 2 { 20 } else { 2 }));
                r.compute_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let w = std::time::Instant::now();
                let more = barrier.wait();
                r.wait_ms.push(w.elapsed().as_secs_f64() * 1e3);
                r.step_ms.push(t.elapsed().as_secs_f64() * 1e3);
                if !more {
                    break r;
                }
            }
        })
        .expect("ranks ran");
        assert_eq!(runs.len(), 3);
        let steps = runs[0].step_ms.len();
        assert!(steps >= 5, "{steps} steps in 300 ms of 20 ms steps");
        assert!(runs.iter().all(|r| r.step_ms.len() == steps));
        let s = summarize(&runs);
        assert!(s.straggler_ms_p50 >= 10.0, "{s:?}");
        assert!(s.per_rank[0].barrier_wait_pct > s.per_rank[2].barrier_wait_pct);
    }
}
