//! The training job: a trainer and K intra-op helpers meeting at barriers
//! for forward (F ms each), backward (2F) and an optimizer sweep over a
//! B MiB buffer; every C steps, a checkpoint of that buffer written and
//! fsynced on its own thread (the trainer waits only if the previous
//! checkpoint is still being written).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use scx_phase::Phase;

use crate::hints;
use crate::pipeline::Pipeline;
use crate::work::Work;

/// The barrier across ranks that ends every step (an all-reduce); it
/// returns whether to run another step.
pub type AllReduce<'a> = &'a (dyn Fn() -> bool + Sync);

pub struct Config<'a> {
    pub helpers: usize,
    pub forward_ms: f64,
    pub buffer_mib: usize,
    pub checkpoint_every: u64,
    pub dir: PathBuf,
    /// With --ranks: the run ends when the ranks agree to, not on `stop`.
    pub all_reduce: Option<AllReduce<'a>>,
    /// Steps that start before this (the warm-up) are run, not counted.
    pub count_from: Instant,
}

#[derive(Default)]
pub struct Outcome {
    pub step_ms: Vec<f64>,
    pub stall: Duration,
    pub checkpoint_ms: Vec<f64>,
    pub compute: ComputeClock,
    /// The trainer's time at barriers: waiting for its partners, and for
    /// them to be woken and run.
    pub barrier: Duration,
    /// With --ranks, per step: the time before the ranks' barrier, and the
    /// wait there (step_ms then runs from one barrier to the next).
    pub before_all_reduce_ms: Vec<f64>,
    pub all_reduce_wait_ms: Vec<f64>,
}

/// Where the compute threads' forward and backward time went, summed over
/// threads: the work asked for (calibrated ms), the CPU time the thread was
/// given, and the wall time it took. cpu > work: the CPU ran slower than at
/// calibration (in a VM, its vCPU shared a host core); wall > cpu: the
/// thread was runnable but not running (the guest scheduler's part).
#[derive(Default)]
pub struct ComputeClock {
    work_ns: AtomicU64,
    cpu_ns: AtomicU64,
    wall_ns: AtomicU64,
}

impl ComputeClock {
    fn run(&self, work: &Work, ms: f64) {
        let (c0, t0) = (thread_cpu_ns(), Instant::now());
        work.run_ms(ms);
        let (c1, wall) = (thread_cpu_ns(), t0.elapsed());
        self.work_ns.fetch_add((ms * 1e6) as u64, Ordering::Relaxed);
        self.cpu_ns
            .fetch_add(c1.saturating_sub(c0), Ordering::Relaxed);
        self.wall_ns
            .fetch_add(wall.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Calibrated work per CPU time, in percent (100: full speed).
    pub fn speed_pct(&self) -> f64 {
        self.work_ns.load(Ordering::Relaxed) as f64 * 100.0
            / self.cpu_ns.load(Ordering::Relaxed).max(1) as f64
    }

    /// CPU time per wall time while computing, in percent (100: never
    /// waited for a CPU).
    pub fn on_cpu_pct(&self) -> f64 {
        self.cpu_ns.load(Ordering::Relaxed) as f64 * 100.0
            / self.wall_ns.load(Ordering::Relaxed).max(1) as f64
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One part of the step, on every thread between two barriers.
/// Returns how long this thread then waited at the barrier.
fn part(barrier: &Barrier, phase: Phase, f: impl FnOnce()) -> Duration {
    let _ = hints::set(phase, None);
    f();
    let t0 = Instant::now();
    barrier.wait();
    t0.elapsed()
}

fn sweep(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
}

pub fn run(cfg: &Config, work: Arc<Work>, pipe: Arc<Pipeline>, stop: Arc<AtomicBool>) -> Outcome {
    let threads = cfg.helpers + 1;
    let barrier = Arc::new(Barrier::new(threads));
    let go = Arc::new(AtomicBool::new(true));
    let clock = Arc::new(ComputeClock::default());
    let chunk = cfg.buffer_mib * (1 << 20) / threads;
    let shards: Vec<Arc<Mutex<Vec<u8>>>> = (0..threads)
        .map(|_| Arc::new(Mutex::new(vec![1u8; chunk])))
        .collect();

    let helpers: Vec<JoinHandle<()>> = (1..threads)
        .map(|i| {
            let (b, g, w, shard, f, clk) = (
                barrier.clone(),
                go.clone(),
                work.clone(),
                shards[i].clone(),
                cfg.forward_ms,
                clock.clone(),
            );
            std::thread::Builder::new()
                .name(format!("intra_op_{i}"))
                .spawn(move || {
                    loop {
                        b.wait();
                        if !g.load(Ordering::Acquire) {
                            return;
                        }
                        part(&b, Phase::Forward, || clk.run(&w, f));
                        part(&b, Phase::Backward, || clk.run(&w, 2.0 * f));
                        part(&b, Phase::Optimizer, || {
                            sweep(&mut shard.lock().unwrap_or_else(|e| e.into_inner()))
                        });
                    }
                })
                .expect("spawn helper")
        })
        .collect();

    let (ckpt_tx, ckpt_rx) = mpsc::sync_channel::<Vec<u8>>(0);
    let ckpt_times = Arc::new(Mutex::new(Vec::new()));
    let ckpt_thread = {
        let (times, path) = (
            ckpt_times.clone(),
            cfg.dir
                .join(format!("phase-bench-ckpt-{}", std::process::id())),
        );
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                for data in ckpt_rx {
                    let _ = hints::set(Phase::Checkpoint, None);
                    let t0 = Instant::now();
                    let ok = std::fs::File::create(&path).and_then(|mut f| {
                        f.write_all(&data)?;
                        f.sync_all()
                    });
                    if ok.is_ok() {
                        times
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(crate::work::ms(t0.elapsed()));
                    }
                    let _ = hints::set(Phase::Idle, None);
                }
                let _ = std::fs::remove_file(&path);
            })
            .expect("spawn checkpoint")
    };

    let mut out = Outcome::default();
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let step_start = Instant::now();
        let _ = hints::set(Phase::Forward, None);
        let Some(waited) = pipe.take_batch() else {
            break;
        };
        let counted = step_start >= cfg.count_from;
        if counted {
            out.stall += waited;
        }
        let t0 = Instant::now();
        barrier.wait();
        out.barrier += part(&barrier, Phase::Forward, || {
            clock.run(&work, cfg.forward_ms)
        });
        out.barrier += part(&barrier, Phase::Backward, || {
            clock.run(&work, 2.0 * cfg.forward_ms)
        });
        out.barrier += part(&barrier, Phase::Optimizer, || {
            sweep(&mut shards[0].lock().unwrap_or_else(|e| e.into_inner()))
        });
        step += 1;
        if cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every) {
            // The step's own part of a checkpoint: copy the state (memcpy)
            // for the checkpoint thread to write, as torch.save's
            // state_dict copy runs on the training thread.
            let _ = hints::set(Phase::Checkpoint, None);
            let mut snapshot = Vec::with_capacity(cfg.buffer_mib << 20);
            for s in &shards {
                snapshot.extend_from_slice(&s.lock().unwrap_or_else(|e| e.into_inner()));
            }
            let _ = ckpt_tx.send(snapshot);
        }
        if let Some(all_reduce) = cfg.all_reduce {
            let arrived = Instant::now();
            let more = all_reduce();
            if counted {
                out.before_all_reduce_ms
                    .push(crate::work::ms(arrived - step_start));
                out.all_reduce_wait_ms
                    .push(crate::work::ms(arrived.elapsed()));
                out.step_ms.push(crate::work::ms(step_start.elapsed()));
            }
            if !more {
                break;
            }
            continue;
        }
        if counted {
            out.step_ms
                .push(crate::work::ms(t0.elapsed()) + crate::work::ms(waited));
        }
    }
    go.store(false, Ordering::Release);
    barrier.wait();
    for h in helpers {
        let _ = h.join();
    }
    drop(ckpt_tx);
    let _ = ckpt_thread.join();
    out.compute = Arc::try_unwrap(clock).unwrap_or_default();
    out.checkpoint_ms = std::mem::take(&mut *ckpt_times.lock().unwrap_or_else(|e| e.into_inner()));
    out
}
