//! Hinting through the shim, counted; a no-op with --no-hints or without
//! a running scx_phase.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use scx_phase::Phase;
use scx_phase::hint;

static ENABLED: AtomicBool = AtomicBool::new(true);
static CALLS: AtomicU64 = AtomicU64::new(0);

pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Hint the calling thread; errors (no scheduler) are not the workload's.
pub fn set(phase: Phase, node: Option<u32>) {
    if ENABLED.load(Ordering::Relaxed) {
        CALLS.fetch_add(1, Ordering::Relaxed);
        let _ = hint::set_phase_on(phase, node);
    }
}

pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}
