//! Hinting through the shim, counted; a no-op with --no-hints or without
//! a running scx_phase.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use scx_phase::Phase;
use scx_phase::hint;

static ENABLED: AtomicBool = AtomicBool::new(true);
static CALLS: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
/// The slowest call, in microseconds: a thread's first call waits for the
/// hint service to bind its slot, so this shows the service's latency.
static SLOWEST_US: AtomicU64 = AtomicU64::new(0);

pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Hint the calling thread; whether it took. Errors (no scheduler, a
/// service too slow to answer) are not the workload's: they are counted,
/// and a thread that hints once (a loader) tries again.
pub fn set(phase: Phase, node: Option<u32>) -> bool {
    if !ENABLED.load(Ordering::Relaxed) {
        return true;
    }
    CALLS.fetch_add(1, Ordering::Relaxed);
    let t = std::time::Instant::now();
    let ok = hint::set_phase_on(phase, node).is_ok();
    SLOWEST_US.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    if !ok {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// Hint calls that failed.
pub fn failed() -> u64 {
    FAILED.load(Ordering::Relaxed)
}

/// The slowest hint call so far, in milliseconds.
pub fn slowest_ms() -> f64 {
    SLOWEST_US.load(Ordering::Relaxed) as f64 / 1000.0
}

pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}
