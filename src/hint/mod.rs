//! The hint library: what training code calls to tell the scheduler which
//! phase a thread, or a whole process, is in.
//!
//! Hints go through the hint service that `scx_phase` runs (a Unix socket,
//! `/run/scx_phase/hint.sock` or `$SCX_PHASE_SOCKET`). A process registers
//! once and gets its own hint memory; each thread binds itself to a slot
//! of it on its first hint, and from then on a hint is one plain store to
//! that slot: no system call, allowed under a container's default seccomp
//! profile, correct in any PID namespace. The service decides who may set
//! what (see `src/service/`), and the scheduler ignores anything else.
//!
//! With `$SCX_PHASE_MAP` set, hints go to that pinned tid map instead,
//! one `bpf()` call each: the root and admin path ([`tid_map`]).
//!
//! When neither is there, calls fail with [`Error::NotRunning`]; the
//! service is looked for again at most once a second.
//!
//! - [`capi`]: the C ABI of this module (`libscx_phase.so`).
//! - [`client`]: the session with the service and the per-thread slots.
//! - [`protocol`]: the wire format the service speaks.

pub mod capi;
pub mod client;
mod error;
pub mod protocol;
pub mod tid_map;
pub mod workload;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use self::client::{UNSET_WORD, unword, word};
use self::protocol::Op;
use self::tid_map::{PhaseHint, PhaseMap};
use crate::phase::Phase;

/// Environment variable naming a pinned tid map to write instead of
/// going through the hint service.
pub const MAP_ENV: &str = "SCX_PHASE_MAP";

pub use self::error::{Error, Result};

/// Where this process's hints go, chosen once from the environment.
enum Backend {
    Service(PathBuf),
    TidMap(PathBuf),
}

fn backend() -> &'static Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    BACKEND.get_or_init(|| match std::env::var_os(MAP_ENV) {
        Some(map) => Backend::TidMap(map.into()),
        None => Backend::Service(socket_path()),
    })
}

/// The hint service's socket this process uses.
pub fn socket_path() -> PathBuf {
    std::env::var_os(protocol::SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(protocol::DEFAULT_SOCKET))
}

/// The tid map of the admin path, opened on first use.
fn tid_map(path: &Path) -> Result<&'static PhaseMap> {
    static MAP: OnceLock<PhaseMap> = OnceLock::new();
    if let Some(m) = MAP.get() {
        return Ok(m);
    }
    let m = PhaseMap::open(path)?;
    Ok(MAP.get_or_init(|| m))
}

thread_local! {
    static TID: Cell<i32> = const { Cell::new(0) };
}

/// The calling thread's id in its own PID namespace, cached per thread.
pub fn current_tid() -> i32 {
    TID.with(|t| {
        if t.get() == 0 {
            t.set(crate::sys::gettid());
        }
        t.get()
    })
}

fn refused_phase(phase: Phase, grant: &str) -> Error {
    Error::Refused {
        errno: libc::EPERM,
        message: format!("refused: this process may not set {phase}: {grant}"),
    }
}

fn node_word(node: Option<u32>) -> i32 {
    node.and_then(|n| i32::try_from(n).ok())
        .unwrap_or(PhaseHint::NODE_ANY)
}

/// Hint the calling thread's phase.
pub fn set_phase(phase: Phase) -> Result<()> {
    set_phase_on(phase, None)
}

/// Hint the calling thread's phase and the NUMA node its data lives on.
pub fn set_phase_on(phase: Phase, node: Option<u32>) -> Result<()> {
    match backend() {
        Backend::TidMap(path) => {
            Ok(tid_map(path)?.set(current_tid() as u32, PhaseHint::new(phase, node))?)
        }
        Backend::Service(path) => store(path, client::own_slot(path)?, phase, node),
    }
}

/// Store `phase` in `slot` if this process may set it.
fn store(path: &Path, slot: client::Slot, phase: Phase, node: Option<u32>) -> Result<()> {
    if !slot.may_set(phase) {
        return Err(refused_phase(phase, &client::grant(path)?));
    }
    slot.store(word(phase as u32, node_word(node)));
    Ok(())
}

/// Remove the calling thread's hint.
pub fn clear_phase() -> Result<()> {
    match backend() {
        Backend::TidMap(path) => tid_map(path)?
            .clear(current_tid() as u32)
            .map(|_| ())
            .map_err(Error::from),
        // A thread that never hinted has nothing to clear.
        Backend::Service(_) => {
            if let Some(slot) = client::registered_slot() {
                slot.store(UNSET_WORD);
            }
            Ok(())
        }
    }
}

/// The calling thread's own hint, if any.
pub fn current_phase() -> Result<Option<PhaseHint>> {
    match backend() {
        Backend::TidMap(path) => Ok(tid_map(path)?.get(current_tid() as u32)?),
        Backend::Service(_) => Ok(client::registered_slot().and_then(|s| {
            let (phase, numa_node) = unword(s.load());
            (phase != crate::bpf_intf::SCX_PHASE_HINT_UNSET)
                .then_some(PhaseHint { phase, numa_node })
        })),
    }
}

/// Set the phase of every thread of this process that has no hint of its
/// own and no name rule (a framework's intra-op pool, say).
pub fn set_process_phase(phase: Phase, node: Option<u32>) -> Result<()> {
    let Backend::Service(path) = backend() else {
        return Err(Error::Refused {
            errno: libc::EOPNOTSUPP,
            message: "the process-wide phase needs the hint service (unset SCX_PHASE_MAP)".into(),
        });
    };
    store(path, client::process_slot(path)?, phase, node)
}

/// Remove the process-wide phase.
pub fn clear_process_phase() -> Result<()> {
    match backend() {
        Backend::Service(path) => {
            client::process_slot(path)?.store(UNSET_WORD);
            Ok(())
        }
        Backend::TidMap(_) => Ok(()),
    }
}

/// What the scheduler counted for this process since it registered with
/// the hint service, per phase slot: the six phases, then un-hinted
/// threads ([`crate::stats::slot_name`]). Registers the process if it has
/// not yet. A process reads its own figures only.
pub fn process_stats() -> Result<[crate::bpf_intf::workload_phase_stats; crate::stats::NR_SLOTS]> {
    let Backend::Service(path) = backend() else {
        return Err(Error::Refused {
            errno: libc::EOPNOTSUPP,
            message: "a process's figures need the hint service (unset SCX_PHASE_MAP)".into(),
        });
    };
    client::process_stats(path)
}

/// Hint another thread's phase (`tid` as numbered in this process's PID
/// namespace) until it exits. The service checks that this process could
/// signal it; it fails with [`Error::NoSuchThread`] if it is not alive.
pub fn set_thread_phase(tid: i32, phase: Phase, node: Option<u32>) -> Result<()> {
    match backend() {
        Backend::TidMap(path) => {
            let tid = u32::try_from(tid).map_err(|_| Error::NoSuchThread { tid })?;
            Ok(tid_map(path)?.set_tid(tid, PhaseHint::new(phase, node))?)
        }
        Backend::Service(path) => {
            client::one_shot(path, Op::Set, tid, phase as u32, node_word(node))
        }
    }
}

/// Remove another thread's one-shot hint.
pub fn clear_thread_phase(tid: i32) -> Result<()> {
    match backend() {
        Backend::TidMap(path) => {
            let tid = u32::try_from(tid).map_err(|_| Error::NoSuchThread { tid })?;
            tid_map(path)?.clear(tid).map(|_| ()).map_err(Error::from)
        }
        Backend::Service(path) => client::one_shot(path, Op::Clear, tid, 0, -1),
    }
}

/// Restores the calling thread's previous hint (or none) when dropped.
#[must_use = "the phase reverts when the guard is dropped"]
pub struct PhaseGuard {
    prev: Option<PhaseHint>,
}

/// Enter `phase` on the calling thread until the guard is dropped.
pub fn enter(phase: Phase) -> Result<PhaseGuard> {
    enter_on(phase, None)
}

/// Enter `phase` with a NUMA node until the guard is dropped.
pub fn enter_on(phase: Phase, node: Option<u32>) -> Result<PhaseGuard> {
    let prev = current_phase()?;
    set_phase_on(phase, node)?;
    Ok(PhaseGuard { prev })
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        // A failure here has nowhere to go; the next hint overwrites it.
        let _ = match self.prev.and_then(|h| h.phase().map(|p| (p, h.node()))) {
            Some((p, node)) => set_phase_on(p, node),
            None => clear_phase(),
        };
    }
}
