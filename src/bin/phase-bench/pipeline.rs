//! Data loaders feeding a bounded, ordered prefetch queue: samples are
//! made in any order by any loader, batches are consumed strictly in order.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub struct Pipeline {
    state: Mutex<State>,
    changed: Condvar,
    batch: u64,
    prefetch: u64,
}

struct State {
    next_sample: u64,
    ready: BTreeSet<u64>,
    consumed: u64,
    stopped: bool,
}

impl Pipeline {
    pub fn new(batch: u64, prefetch: u64) -> Pipeline {
        Pipeline {
            state: Mutex::new(State {
                next_sample: 0,
                ready: BTreeSet::new(),
                consumed: 0,
                stopped: false,
            }),
            changed: Condvar::new(),
            batch: batch.max(1),
            prefetch: prefetch.max(1),
        }
    }

    /// A loader's next sample index, once the queue has room; None at stop.
    pub fn claim(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stopped {
                return None;
            }
            if s.next_sample < (s.consumed + self.prefetch) * self.batch {
                s.next_sample += 1;
                return Some(s.next_sample - 1);
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn done(&self, sample: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.ready.insert(sample);
        self.changed.notify_all();
    }

    /// Wait for the next batch in order; returns how long the trainer
    /// waited, or None at stop.
    pub fn take_batch(&self) -> Option<Duration> {
        let t0 = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stopped {
                return None;
            }
            let first = s.consumed * self.batch;
            if (first..first + self.batch).all(|i| s.ready.contains(&i)) {
                for i in first..first + self.batch {
                    s.ready.remove(&i);
                }
                s.consumed += 1;
                self.changed.notify_all();
                return Some(t0.elapsed());
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn stop(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stopped = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn batches_come_in_order_and_the_queue_is_bounded() {
        let p = Arc::new(Pipeline::new(2, 2));
        // Room for 2 batches of 2: claims 0..4, then a fifth claim blocks.
        let claimed: Vec<u64> = (0..4).map(|_| p.claim().unwrap()).collect();
        assert_eq!(claimed, vec![0, 1, 2, 3]);
        let p2 = p.clone();
        let blocked = std::thread::spawn(move || p2.claim());
        // Finish batch 1 before batch 0: the trainer still waits for 0.
        p.done(3);
        p.done(2);
        p.done(1);
        let p3 = p.clone();
        let trainer = std::thread::spawn(move || p3.take_batch());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!trainer.is_finished(), "took batch 0 with sample 0 missing");
        p.done(0);
        assert!(trainer.join().unwrap().is_some());
        assert_eq!(
            blocked.join().unwrap(),
            Some(4),
            "room freed by the consumed batch"
        );
        p.stop();
        assert_eq!(p.claim(), None);
    }
}
