//! The training job: a trainer and K intra-op helpers meeting at barriers
//! for forward (F ms each), backward (2F) and an optimizer sweep over a
//! B MiB buffer; every C steps, a checkpoint of that buffer written and
//! fsynced on its own thread (the trainer waits only if the previous
//! checkpoint is still being written).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use scx_phase::Phase;

use crate::hints;
use crate::pipeline::Pipeline;
use crate::work::Work;

pub struct Config {
    pub helpers: usize,
    pub forward_ms: f64,
    pub buffer_mib: usize,
    pub checkpoint_every: u64,
    pub dir: PathBuf,
}

#[derive(Default)]
pub struct Outcome {
    pub step_ms: Vec<f64>,
    pub stall: Duration,
    pub checkpoint_ms: Vec<f64>,
}

/// One part of the step, on every thread between two barriers.
fn part(barrier: &Barrier, phase: Phase, f: impl FnOnce()) {
    hints::set(phase, None);
    f();
    barrier.wait();
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
    let chunk = cfg.buffer_mib * (1 << 20) / threads;
    let shards: Vec<Arc<Mutex<Vec<u8>>>> = (0..threads)
        .map(|_| Arc::new(Mutex::new(vec![1u8; chunk])))
        .collect();

    let helpers: Vec<JoinHandle<()>> = (1..threads)
        .map(|i| {
            let (b, g, w, shard, f) = (
                barrier.clone(),
                go.clone(),
                work.clone(),
                shards[i].clone(),
                cfg.forward_ms,
            );
            std::thread::Builder::new()
                .name(format!("intra_op_{i}"))
                .spawn(move || {
                    loop {
                        b.wait();
                        if !g.load(Ordering::Acquire) {
                            return;
                        }
                        part(&b, Phase::Forward, || w.run_ms(f));
                        part(&b, Phase::Backward, || w.run_ms(2.0 * f));
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
                    hints::set(Phase::Checkpoint, None);
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
                    hints::set(Phase::Idle, None);
                }
                let _ = std::fs::remove_file(&path);
            })
            .expect("spawn checkpoint")
    };

    let mut out = Outcome::default();
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        hints::set(Phase::Forward, None);
        let Some(waited) = pipe.take_batch() else {
            break;
        };
        out.stall += waited;
        let t0 = Instant::now();
        barrier.wait();
        part(&barrier, Phase::Forward, || work.run_ms(cfg.forward_ms));
        part(&barrier, Phase::Backward, || {
            work.run_ms(2.0 * cfg.forward_ms)
        });
        part(&barrier, Phase::Optimizer, || {
            sweep(&mut shards[0].lock().unwrap_or_else(|e| e.into_inner()))
        });
        step += 1;
        if cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every) {
            // The step's own part of a checkpoint: copy the state (memcpy)
            // for the checkpoint thread to write, as torch.save's
            // state_dict copy runs on the training thread.
            hints::set(Phase::Checkpoint, None);
            let mut snapshot = Vec::with_capacity(cfg.buffer_mib << 20);
            for s in &shards {
                snapshot.extend_from_slice(&s.lock().unwrap_or_else(|e| e.into_inner()));
            }
            let _ = ckpt_tx.send(snapshot);
        }
        out.step_ms
            .push(crate::work::ms(t0.elapsed()) + crate::work::ms(waited));
    }
    go.store(false, Ordering::Release);
    barrier.wait();
    for h in helpers {
        let _ = h.join();
    }
    drop(ckpt_tx);
    let _ = ckpt_thread.join();
    out.checkpoint_ms = std::mem::take(&mut *ckpt_times.lock().unwrap_or_else(|e| e.into_inner()));
    out
}
