//! The C ABI of the hint library (`include/scx_phase.h`), over
//! [`crate::hint`]. Every call returns 0 or a negative errno and never
//! panics across the boundary; `scx_phase_last_error()` gives the one-line
//! reason for the calling thread's last failure.

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int};

use crate::hint::{self, Result};
use crate::phase::Phase;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn ret(r: Result<()>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => {
            let text = CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
            LAST_ERROR.with(|l| *l.borrow_mut() = text);
            -e.errno()
        }
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

fn invalid() -> c_int {
    ret(Err(hint::Error::Refused {
        errno: libc::EINVAL,
        message: "invalid phase (0-5), node (-1 or a node id) or thread id".into(),
    }))
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
        _ => invalid(),
    })
}

/// Hint thread `tid`'s phase and NUMA node (-1: any) until it exits.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_set_tid(tid: libc::pid_t, phase: c_int, node: c_int) -> c_int {
    guarded(|| match (phase_of(phase), node_of(node)) {
        (Some(p), Some(n)) if tid > 0 => ret(hint::set_thread_phase(tid, p, n)),
        _ => invalid(),
    })
}

/// Remove thread `tid`'s hint.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_clear_tid(tid: libc::pid_t) -> c_int {
    guarded(|| {
        if tid > 0 {
            ret(hint::clear_thread_phase(tid))
        } else {
            invalid()
        }
    })
}

/// Remove the calling thread's hint.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_clear() -> c_int {
    guarded(|| ret(hint::clear_phase()))
}

/// Set the phase of every thread of this process without a hint of its own.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_set_process(phase: c_int) -> c_int {
    scx_phase_set_process_node(phase, -1)
}

/// Set the process-wide phase and NUMA node (-1: any).
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_set_process_node(phase: c_int, node: c_int) -> c_int {
    guarded(|| match (phase_of(phase), node_of(node)) {
        (Some(p), Some(n)) => ret(hint::set_process_phase(p, n)),
        _ => invalid(),
    })
}

/// Remove the process-wide phase.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_clear_process() -> c_int {
    guarded(|| ret(hint::clear_process_phase()))
}

/// The one-line reason for the calling thread's last failed call ("" if
/// none). Valid until the thread's next failing call.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// A static, NUL-terminated description of a value these calls return.
#[unsafe(no_mangle)]
pub extern "C" fn scx_phase_strerror(err: c_int) -> *const c_char {
    let s: &'static [u8] = match err.unsigned_abs() as c_int {
        0 => b"success\0",
        libc::ENOENT => b"scx_phase is not running (no hint service)\0",
        libc::EPERM => b"refused by the hint service's rules\0",
        libc::EACCES => b"permission denied\0",
        libc::ESRCH => b"no thread with that id\0",
        libc::EINVAL => b"invalid phase, node or thread id\0",
        libc::ENOSPC => b"the hint service has no room left\0",
        libc::E2BIG => b"the phase map is full\0",
        _ => b"system error\0",
    };
    s.as_ptr().cast()
}
