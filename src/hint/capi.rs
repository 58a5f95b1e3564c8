//! The C ABI of the hint shim (`include/scx_phase.h`), over [`crate::hint`].
//! Every call returns 0 or a negative errno and never panics across the
//! boundary.

use std::ffi::{c_char, c_int};

use crate::hint;
use crate::hint::tid_map::Result;
use crate::phase::Phase;

fn ret(r: Result<()>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => -e.errno(),
    }
}

fn phase_of(phase: c_int) -> Option<Phase> {
    u32::try_from(phase).ok().and_then(Phase::from_number)
}

/// `node`: -1 for "any", else a node id.
fn node_of(node: c_int) -> Option<Option<u32>> {
    match node {
        -1 => Some(None),
        n => u32::try_from(n).ok().map(Some),
    }
}

fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(-libc::EIO)
}

/// Hint the calling thread's phase.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_set(phase: c_int) -> c_int {
    scx_phase_set_node(phase, -1)
}

/// Hint the calling thread's phase and NUMA node (-1: any).
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_set_node(phase: c_int, node: c_int) -> c_int {
    guarded(|| match (phase_of(phase), node_of(node)) {
        (Some(p), Some(n)) => ret(hint::set_phase_on(p, n)),
        _ => -libc::EINVAL,
    })
}

/// Hint thread `tid`'s phase and NUMA node (-1: any).
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_set_tid(tid: libc::pid_t, phase: c_int, node: c_int) -> c_int {
    guarded(
        || match (u32::try_from(tid), phase_of(phase), node_of(node)) {
            (Ok(t), Some(p), Some(n)) if t > 0 => ret(hint::set_thread_phase(t, p, n)),
            _ => -libc::EINVAL,
        },
    )
}

/// Remove the calling thread's hint.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_clear() -> c_int {
    guarded(|| ret(hint::clear_phase()))
}

/// A static, NUL-terminated description of a value these calls return.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_strerror(err: c_int) -> *const c_char {
    let s: &'static [u8] = match err.unsigned_abs() as c_int {
        0 => b"success\0",
        libc::ENOENT => b"no phase map: scx_phase is not running\0",
        libc::EACCES | libc::EPERM => b"permission denied on the phase map\0",
        libc::ESRCH => b"no thread with that id\0",
        libc::EINVAL => b"invalid phase or node, or not a scx_phase map\0",
        libc::E2BIG => b"the phase map is full\0",
        _ => b"system error\0",
    };
    s.as_ptr().cast()
}
