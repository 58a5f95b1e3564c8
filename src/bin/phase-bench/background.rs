//! The neighbours: un-hinted CPU hogs that count the work they get done,
//! memory streamers that sweep buffers larger than the caches (what an
//! exclusive claim should keep off the job's CPUs), and an I/O writer
//! that writes and fsyncs in a loop.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::work::spin;

pub struct Background {
    threads: Vec<JoinHandle<()>>,
    /// Spin iterations done by all hogs.
    pub hog_work: Arc<AtomicU64>,
    /// Bytes swept by all streamers.
    pub streamed: Arc<AtomicU64>,
}

/// Each streamer's buffer: well past any L2 and most LLC slices.
const STREAM_BYTES: usize = 32 << 20;

/// Sweep a buffer one cache line at a time, reading and writing, until
/// told to stop; count the bytes.
fn stream(stop: &AtomicBool, streamed: &AtomicU64) {
    let mut buf = vec![0u64; STREAM_BYTES / 8];
    while !stop.load(Ordering::Relaxed) {
        for line in buf.chunks_mut(8) {
            line[0] = line[0].wrapping_add(1);
        }
        std::hint::black_box(&buf);
        streamed.fetch_add(STREAM_BYTES as u64, Ordering::Relaxed);
    }
}

impl Background {
    pub fn start(
        hogs: usize,
        streamers: usize,
        io_writer: bool,
        dir: &Path,
        stop: Arc<AtomicBool>,
    ) -> Background {
        let hog_work = Arc::new(AtomicU64::new(0));
        let streamed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for i in 0..streamers {
            let (s, b) = (stop.clone(), streamed.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("streamer_{i}"))
                    .spawn(move || stream(&s, &b))
                    .expect("spawn streamer"),
            );
        }
        for i in 0..hogs {
            let (s, w) = (stop.clone(), hog_work.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("hog_{i}"))
                    .spawn(move || {
                        while !s.load(Ordering::Relaxed) {
                            spin(10_000);
                            w.fetch_add(10_000, Ordering::Relaxed);
                        }
                    })
                    .expect("spawn hog"),
            );
        }
        if io_writer {
            let (s, path) = (
                stop.clone(),
                dir.join(format!("phase-bench-io-{}", std::process::id())),
            );
            threads.push(
                std::thread::Builder::new()
                    .name("io_writer".into())
                    .spawn(move || {
                        let block = vec![0x5au8; 1 << 20];
                        while !s.load(Ordering::Relaxed) {
                            let ok = std::fs::File::create(&path).and_then(|mut f| {
                                f.write_all(&block)?;
                                f.sync_all()
                            });
                            if ok.is_err() {
                                break;
                            }
                        }
                        let _ = std::fs::remove_file(&path);
                    })
                    .expect("spawn io writer"),
            );
        }
        Background {
            threads,
            hog_work,
            streamed,
        }
    }

    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
