//! The hint shim's process-wide API: what training code calls.
//!
//! One phase-map fd per process, opened on first use and shared by every
//! thread. Setting a phase is one `bpf(BPF_MAP_UPDATE_ELEM)` system call,
//! with no allocation. When the map is missing (scx_phase not running),
//! calls fail with [`Error::NotFound`] and the map is looked for again at
//! most once a second, so a scheduler started later is picked up.
//!
//! The map is the default one, or the one named by `SCX_PHASE_MAP`.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::phase::Phase;
pub mod capi;
pub mod tid_map;

use self::tid_map::{Error, PhaseHint, PhaseMap, Result};

/// Environment variable naming the pinned map to use.
pub const MAP_ENV: &str = "SCX_PHASE_MAP";

static MAP: OnceLock<PhaseMap> = OnceLock::new();
/// Monotonic ns of the last failed open (0: never failed).
static LAST_MISS: AtomicU64 = AtomicU64::new(0);
const RETRY_NS: u64 = 1_000_000_000;

thread_local! {
    static TID: Cell<u32> = const { Cell::new(0) };
}

fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime writes a timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The path of the map this process uses.
pub fn map_path() -> PathBuf {
    std::env::var_os(MAP_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| tid_map::map_path(std::path::Path::new(tid_map::DEFAULT_PIN_DIR)))
}

/// The process's map, opened on first use.
pub fn map() -> Result<&'static PhaseMap> {
    if let Some(m) = MAP.get() {
        return Ok(m);
    }
    let last = LAST_MISS.load(Ordering::Relaxed);
    if last != 0 && monotonic_ns().saturating_sub(last) < RETRY_NS {
        return Err(Error::NotFound {
            path: map_path(),
            bpffs_missing: None,
        });
    }
    match PhaseMap::open(map_path()) {
        Ok(m) => Ok(MAP.get_or_init(|| m)),
        Err(e) => {
            if matches!(e, Error::NotFound { .. }) {
                LAST_MISS.store(monotonic_ns().max(1), Ordering::Relaxed);
            }
            Err(e)
        }
    }
}

/// The calling thread's kernel id, cached per thread.
pub fn current_tid() -> u32 {
    TID.with(|t| {
        if t.get() == 0 {
            t.set(tid_map::current_tid());
        }
        t.get()
    })
}

/// Hint the calling thread's phase.
pub fn set_phase(phase: Phase) -> Result<()> {
    set_phase_on(phase, None)
}

/// Hint the calling thread's phase and the NUMA node its data lives on.
pub fn set_phase_on(phase: Phase, node: Option<u32>) -> Result<()> {
    map()?.set(current_tid(), PhaseHint::new(phase, node))
}

/// Hint another thread's phase; fails with [`Error::NoSuchThread`] if it
/// is not alive.
pub fn set_thread_phase(tid: u32, phase: Phase, node: Option<u32>) -> Result<()> {
    map()?.set_tid(tid, PhaseHint::new(phase, node))
}

/// Remove the calling thread's hint.
pub fn clear_phase() -> Result<()> {
    map()?.clear(current_tid()).map(|_| ())
}

/// The calling thread's hint, if any.
pub fn current_phase() -> Result<Option<PhaseHint>> {
    map()?.get(current_tid())
}

/// Restores the calling thread's previous hint (or none) when dropped.
#[must_use = "the phase reverts when the guard is dropped"]
pub struct PhaseGuard {
    tid: u32,
    prev: Option<PhaseHint>,
}

/// Enter `phase` on the calling thread until the guard is dropped.
pub fn enter(phase: Phase) -> Result<PhaseGuard> {
    enter_on(phase, None)
}

/// Enter `phase` with a NUMA node until the guard is dropped.
pub fn enter_on(phase: Phase, node: Option<u32>) -> Result<PhaseGuard> {
    let map = map()?;
    let tid = current_tid();
    let prev = map.get(tid)?;
    map.set(tid, PhaseHint::new(phase, node))?;
    Ok(PhaseGuard { tid, prev })
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        // A failure here has nowhere to go; the next hint overwrites it.
        if let Some(map) = MAP.get() {
            let _ = match self.prev {
                Some(h) => map.set(self.tid, h),
                None => map.clear(self.tid).map(|_| ()),
            };
        }
    }
}
