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

/// `struct scx_phase_stats` of the header: the scheduler's figures for one
/// phase slot (`intf.h`'s `struct workload_phase_stats`).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Default)]
pub struct scx_phase_stats {
    pub runtime_ns: u64,
    pub boosted_ns: u64,
    pub wait_ns: u64,
    pub waits: u64,
}

/// This process's figures: up to `max` slots into `out`; returns how many
/// slots there are.
///
/// # Safety
/// `out` must point to `max` writable entries (or be null with `max` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scx_phase_stats(out: *mut scx_phase_stats, max: c_int) -> c_int {
    guarded(|| {
        let max = match usize::try_from(max) {
            Ok(m) if m == 0 || !out.is_null() => m,
            _ => {
                return ret(Err(hint::Error::Refused {
                    errno: libc::EINVAL,
                    message: "invalid buffer: a null out or a negative max".into(),
                }));
            }
        };
        match hint::process_stats() {
            Ok(all) => {
                for (i, f) in all.iter().take(max).enumerate() {
                    let v = scx_phase_stats {
                        runtime_ns: f.runtime_ns,
                        boosted_ns: f.boosted_ns,
                        wait_ns: f.wait_ns,
                        waits: f.waits,
                    };
                    // SAFETY: the caller gave `max` entries; i < max.
                    unsafe { out.add(i).write(v) };
                }
                all.len() as c_int
            }
            Err(e) => ret(Err(e)),
        }
    })
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

// ---- The workload API (`scx_phase_workload_*`) ----

use crate::hint::workload::{
    LockedBuffer, Node, Placement, PressureEvent, Workload, WorkloadRequest,
};

/// `struct scx_phase_workload_req` of the header.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct scx_phase_workload_req {
    pub cpus: c_int,
    /// >= 0 a node, -1 any, -2 the GPU's node.
    pub node: c_int,
    pub exclusive: c_int,
    pub spread: c_int,
    pub locked_memory: u64,
}

/// `struct scx_phase_pressure` of the header.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct scx_phase_pressure {
    pub full: c_int,
    pub stall_us: u32,
    pub window_us: u32,
    pub some_avg10: f64,
    pub full_avg10: f64,
    pub figures: *const c_char,
}

/// The opaque `struct scx_phase_workload`: the handle and the buffers it
/// gave out, which live until it closes.
pub struct ScxPhaseWorkload {
    w: Workload,
    buffers: std::sync::Mutex<Vec<LockedBuffer>>,
}

/// A C callback and its argument, called from the workload's thread.
struct CCallback {
    f: extern "C" fn(*const scx_phase_pressure, *mut std::ffi::c_void),
    arg: *mut std::ffi::c_void,
}

// SAFETY: the caller hands `arg` over for use from another thread; that is
// the documented contract of scx_phase_workload_on_memory_pressure().
unsafe impl Send for CCallback {}
unsafe impl Sync for CCallback {}

impl CCallback {
    fn call(&self, ev: &scx_phase_pressure) {
        (self.f)(ev, self.arg);
    }
}

/// A claim's node in the C ABI (`SCX_PHASE_NODE_*`): any, or the GPU's.
pub const NODE_ANY: i32 = crate::bpf_intf::scx_phase_limits_SCX_PHASE_NODE_ANY;
pub const NODE_GPU: i32 = -2;

fn workload_request(req: &scx_phase_workload_req) -> Option<WorkloadRequest> {
    Some(WorkloadRequest {
        cpus: u32::try_from(req.cpus).ok()?,
        node: match req.node {
            NODE_ANY => Node::Any,
            NODE_GPU => Node::Gpu,
            n => Node::Id(u32::try_from(n).ok()?),
        },
        exclusive: req.exclusive != 0,
        placement: if req.spread != 0 {
            Placement::Spread
        } else {
            Placement::Pack
        },
        locked_memory: req.locked_memory,
    })
}

/// Open a workload: claim CPUs, reserve locked memory. 0 and `*out` set,
/// or a negative errno.
///
/// # Safety
/// `req` must point to a valid request and `out` to writable storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scx_phase_workload_open(
    req: *const scx_phase_workload_req,
    out: *mut *mut ScxPhaseWorkload,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller's contract.
        let (Some(req), false) = (unsafe { req.as_ref() }, out.is_null()) else {
            return invalid();
        };
        let Some(r) = workload_request(req) else {
            return invalid();
        };
        match Workload::open(&r) {
            Ok(w) => {
                let b = Box::new(ScxPhaseWorkload {
                    w,
                    buffers: std::sync::Mutex::new(Vec::new()),
                });
                // SAFETY: checked non-null above.
                unsafe { *out = Box::into_raw(b) };
                0
            }
            Err(e) => ret(Err(e)),
        }
    })
}

/// The CPUs claimed: up to `max` written to `cpus`; returns how many there
/// are (maybe more than `max`).
///
/// # Safety
/// `w` from scx_phase_workload_open(); `cpus` writable for `max` ints.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scx_phase_workload_cpus(
    w: *const ScxPhaseWorkload,
    cpus: *mut c_int,
    max: c_int,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller's contract.
        let Some(w) = (unsafe { w.as_ref() }) else {
            return invalid();
        };
        let list = w.w.cpus();
        if !cpus.is_null() {
            for (i, c) in list.iter().take(max.max(0) as usize).enumerate() {
                // SAFETY: i < max, within the caller's buffer.
                unsafe { *cpus.add(i) = *c as c_int };
            }
        }
        list.len() as c_int
    })
}

/// The node of the claimed CPUs, or -1.
///
/// # Safety
/// `w` from scx_phase_workload_open().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scx_phase_workload_node(w: *const ScxPhaseWorkload) -> c_int {
    guarded(|| {
        // SAFETY: the caller's contract.
        unsafe { w.as_ref() }
            .and_then(|w| w.w.node())
            .map_or(-1, |n| n as c_int)
    })
}

/// `size` bytes of locked, resident memory in `*buf`, valid until the
/// workload closes.
///
/// # Safety
/// `w` from scx_phase_workload_open(); `buf` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scx_phase_workload_checkpoint_buffer(
    w: *mut ScxPhaseWorkload,
    size: usize,
    buf: *mut *mut std::ffi::c_void,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller's contract.
        let (Some(w), false) = (unsafe { w.as_ref() }, buf.is_null()) else {
            return invalid();
        };
        match w.w.checkpoint_buffer(size) {
            Ok(b) => {
                // SAFETY: checked non-null above.
                unsafe { *buf = b.as_ptr().cast() };
                if let Ok(mut v) = w.buffers.lock() {
                    v.push(b);
                }
                0
            }
            Err(e) => ret(Err(e)),
        }
    })
}

/// Call `fn(event, arg)` from a background thread whenever `stall_ms` of
/// memory stall ("full" if `full`, else "some") builds up within
/// `window_ms`.
///
/// # Safety
/// `w` from scx_phase_workload_open(); `arg` usable from another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scx_phase_workload_on_memory_pressure(
    w: *mut ScxPhaseWorkload,
    stall_ms: u32,
    window_ms: u32,
    full: c_int,
    f: Option<extern "C" fn(*const scx_phase_pressure, *mut std::ffi::c_void)>,
    arg: *mut std::ffi::c_void,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller's contract.
        let (Some(w), Some(f)) = (unsafe { w.as_ref() }, f) else {
            return invalid();
        };
        let cb = CCallback { f, arg };
        let call = move |ev: &PressureEvent| {
            let figures = CString::new(ev.figures.replace('\0', " ")).unwrap_or_default();
            let c = scx_phase_pressure {
                full: c_int::from(ev.level == "full"),
                stall_us: ev.stall_us,
                window_us: ev.window_us,
                some_avg10: ev.some_avg10,
                full_avg10: ev.full_avg10,
                figures: figures.as_ptr(),
            };
            cb.call(&c);
        };
        ret(w.w.on_memory_pressure(
            std::time::Duration::from_millis(stall_ms as u64),
            std::time::Duration::from_millis(window_ms as u64),
            full != 0,
            call,
        ))
    })
}

/// Release everything the workload holds: CPUs, locked memory (its buffers
/// are unmapped), pressure watches.
///
/// # Safety
/// `w` from scx_phase_workload_open(), not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scx_phase_workload_close(w: *mut ScxPhaseWorkload) {
    if !w.is_null() {
        // SAFETY: the caller's contract: ours, closed once.
        drop(unsafe { Box::from_raw(w) });
    }
}
