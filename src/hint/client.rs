//! The library's side of the hint service: one session per process (a
//! connection and the process's hint memory, mapped), and each thread's
//! slot in that memory, found through a thread-local so that a hint is one
//! plain store.
//!
//! A forked child inherits neither: `pthread_atfork` drops the session in
//! the child and bumps a generation that every thread-local slot carries,
//! so the child registers as a process of its own on its first hint
//! instead of writing its parent's slots.

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::Error;
use super::protocol::{Answer, DEFAULT_TIMEOUT_MS, MAX_REPLY_LEN, Op, Reply, Request, TIMEOUT_ENV};
use crate::bpf_intf::{self, workload_phase_stats};
use crate::phase::Phase;
use crate::stats::NR_SLOTS;
use crate::sys::{self, Mapping};

/// A slot word holding no hint: SCX_PHASE_HINT_UNSET, node any.
pub const UNSET_WORD: u64 = bpf_intf::SCX_PHASE_HINT_UNSET as u64 | (u32::MAX as u64) << 32;
/// How long a missing service is remembered before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// A hint as one slot word: phase in the low half, node in the high half.
pub fn word(phase: u32, node: i32) -> u64 {
    phase as u64 | (node as u32 as u64) << 32
}

/// The (phase, node) in a slot word.
pub fn unword(w: u64) -> (u32, i32) {
    (w as u32, (w >> 32) as u32 as i32)
}

/// How long a request waits for its reply: `$SCX_PHASE_TIMEOUT_MS`, or
/// one second (1-60000 ms).
fn timeout_ms() -> u64 {
    static MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MS.get_or_init(|| {
        std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_TIMEOUT_MS)
            .clamp(1, 60_000)
    })
}

/// A connection to the hint service and this process's hint memory.
struct Session {
    sock: OwnedFd,
    memory: Mapping,
    wid: u32,
    generation: u32,
    allow: u32,
    grant: String,
    /// A request timed out: a late reply could answer the next one, so
    /// the connection is replaced before it is used again.
    broken: bool,
}

fn os(op: &'static str) -> impl Fn(io::Error) -> Error {
    move |e| Error::Os {
        op,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

impl Session {
    fn connect(path: &Path) -> Result<Session, Error> {
        let sock = sys::seqpacket_connect(path).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR) => Error::NotRunning {
                socket: path.to_path_buf(),
            },
            Some(libc::EACCES | libc::EPERM) => Error::Refused {
                errno: libc::EACCES,
                message: format!("permission denied on {}", path.display()),
            },
            errno => Error::Os {
                op: "connect to the hint service",
                errno: errno.unwrap_or(libc::EIO),
            },
        })?;
        sys::set_timeouts(sock.as_fd(), Duration::from_millis(timeout_ms()))
            .map_err(os("set the hint service's timeout"))?;
        let (reply, fd) = call(&sock, Request::Hello, None)?;
        let fd = fd.ok_or(Error::Os {
            op: "register with the hint service (no memory in its reply)",
            errno: libc::EPROTO,
        })?;
        let Answer::Registered {
            wid,
            generation,
            allow,
            slots,
            grant,
        } = reply.answer(Op::Hello)
        else {
            return Err(Error::Os {
                op: "register with the hint service",
                errno: libc::EPROTO,
            });
        };
        let len = (slots as usize * 8).next_multiple_of(4096);
        let memory = Mapping::new(fd.as_fd(), len).map_err(os("map the hint memory"))?;
        Ok(Session {
            sock,
            memory,
            wid,
            generation,
            allow,
            grant,
            broken: false,
        })
    }

    fn register_thread(&self) -> Result<u32, Error> {
        let me = sys::pidfd_open(sys::gettid(), true).map_err(os("pidfd_open"))?;
        let (reply, _) = call(&self.sock, Request::Thread, Some(&me))?;
        match reply.answer(Op::Thread) {
            Answer::Bound { slot } => Ok(slot),
            _ => Err(Error::Os {
                op: "bind a thread",
                errno: libc::EPROTO,
            }),
        }
    }
}

/// One request and its reply, on a blocking socket with a timeout.
fn call(
    sock: &OwnedFd,
    req: Request,
    fd: Option<&OwnedFd>,
) -> Result<(Reply, Option<OwnedFd>), Error> {
    let lost = |e: io::Error| match e.raw_os_error() {
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => Error::NotRunning {
            socket: PathBuf::from("(connection lost)"),
        },
        Some(libc::EAGAIN) => Error::TimedOut {
            after_ms: timeout_ms(),
        },
        errno => Error::Os {
            op: "talk to the hint service",
            errno: errno.unwrap_or(libc::EIO),
        },
    };
    sys::send_with_fd(sock.as_fd(), &req.encode(), fd.map(|f| f.as_fd()), 0).map_err(lost)?;
    let mut buf = [0u8; MAX_REPLY_LEN];
    let got = sys::recv_with_fds(sock.as_fd(), &mut buf, 0).map_err(lost)?;
    if got.len == 0 {
        return Err(lost(io::Error::from_raw_os_error(libc::ECONNRESET)));
    }
    let reply = Reply::decode(&buf[..got.len]).map_err(|_| Error::Os {
        op: "read the hint service's reply",
        errno: libc::EPROTO,
    })?;
    if reply.status < 0 {
        return Err(Error::Refused {
            errno: -reply.status,
            message: reply.message,
        });
    }
    Ok((reply, got.fds.into_iter().next()))
}

/// A mutex that fork cannot leave locked: held across fork() by the
/// atfork handlers, released in both parent and child.
struct ForkLock<T> {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through `with`, under the mutex.
unsafe impl<T: Send> Sync for ForkLock<T> {}

impl<T> ForkLock<T> {
    const fn new(value: T) -> Self {
        ForkLock {
            mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
            value: UnsafeCell::new(value),
        }
    }

    fn lock(&self) {
        // SAFETY: a statically initialised mutex that never moves.
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
    }

    fn unlock(&self) {
        // SAFETY: as above; only called by the holder.
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        struct Unlock<'a, T>(&'a ForkLock<T>);
        impl<T> Drop for Unlock<'_, T> {
            fn drop(&mut self) {
                self.0.unlock();
            }
        }
        self.lock();
        let _u = Unlock(self);
        // SAFETY: exclusive under the mutex.
        f(unsafe { &mut *self.value.get() })
    }
}

struct State {
    session: Option<Session>,
    /// When the service was last missing or silent, and the error then.
    last_miss: Option<(Instant, Missed)>,
    /// Memory the service replaced: another thread may be storing to a
    /// slot in it right now, so it stays mapped until the process ends.
    retired: Vec<Mapping>,
}

#[derive(Clone, Copy)]
enum Missed {
    NotRunning,
    TimedOut,
}

impl Missed {
    fn error(self, path: &Path) -> Error {
        match self {
            Missed::NotRunning => Error::NotRunning {
                socket: path.to_path_buf(),
            },
            Missed::TimedOut => Error::TimedOut {
                after_ms: timeout_ms(),
            },
        }
    }

    fn of(e: &Error) -> Option<Missed> {
        match e {
            Error::NotRunning { .. } => Some(Missed::NotRunning),
            Error::TimedOut { .. } => Some(Missed::TimedOut),
            _ => None,
        }
    }
}

static STATE: ForkLock<State> = ForkLock::new(State {
    session: None,
    last_miss: None,
    retired: Vec::new(),
});
/// Bumped whenever every thread's slot must be looked up again: in a
/// forked child, and when the service handed out new memory.
static GENERATION: AtomicU64 = AtomicU64::new(1);
static ATFORK: Once = Once::new();

extern "C" fn before_fork() {
    STATE.lock();
}

extern "C" fn after_fork_parent() {
    STATE.unlock();
}

extern "C" fn after_fork_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    // SAFETY: we hold the lock (before_fork) and are the only thread.
    let st = unsafe { &mut *STATE.value.get() };
    // Closes the parent's connection and unmaps its memory in the child.
    st.session = None;
    st.last_miss = None;
    st.retired.clear();
    STATE.unlock();
}

/// A thread's slot: a word of the process's hint memory.
#[derive(Clone, Copy)]
pub struct Slot {
    word: *const AtomicU64,
    pub allow: u32,
}

impl Slot {
    pub fn store(&self, w: u64) {
        // SAFETY: `word` points into the session's mapping, which lives as
        // long as the generation this slot was taken in.
        unsafe { (*self.word).store(w, Ordering::Relaxed) }
    }

    pub fn load(&self) -> u64 {
        // SAFETY: as in `store`.
        unsafe { (*self.word).load(Ordering::Relaxed) }
    }

    pub fn may_set(&self, phase: Phase) -> bool {
        self.allow & (1 << phase as u32) != 0
    }
}

#[derive(Clone, Copy)]
struct Cached {
    slot: Option<Slot>,
    generation: u64,
}

thread_local! {
    static MINE: Cell<Cached> = const { Cell::new(Cached { slot: None, generation: 0 }) };
}

/// The session, connecting first if needed; at most one attempt a second
/// while the service is missing.
fn with_session<R>(path: &Path, f: impl Fn(&Session) -> Result<R, Error>) -> Result<R, Error> {
    ATFORK.call_once(|| {
        // SAFETY: registering plain extern "C" handlers.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            )
        };
    });
    STATE.with(|st| {
        // Missing or silent a moment ago: answer at once, un-hinted.
        if let Some((at, missed)) = st.last_miss
            && at.elapsed() < RETRY
        {
            return Err(missed.error(path));
        }
        let missing = || Error::NotRunning {
            socket: path.to_path_buf(),
        };
        let ready = match &st.session {
            None => Session::connect(path).map(|s| st.session = Some(s)),
            Some(s) if s.broken => reconnect(st, path),
            Some(_) => Ok(()),
        };
        let result = ready.and_then(|()| {
            match f(st.session.as_ref().ok_or_else(missing)?) {
                // The service restarted: reconnect once.
                Err(Error::NotRunning { .. }) => {
                    reconnect(st, path)?;
                    f(st.session.as_ref().ok_or_else(missing)?)
                }
                other => other,
            }
        });
        st.last_miss = match &result {
            Err(e) => Missed::of(e).map(|m| (Instant::now(), m)),
            Ok(_) => None,
        };
        if let (Some((_, Missed::TimedOut)), Some(s)) = (st.last_miss, st.session.as_mut()) {
            s.broken = true;
        }
        result
    })
}

/// A new connection in place of the session's. The service keeps this
/// process's memory, so existing slots stay valid; if it hands out other
/// memory, every thread looks its slot up again.
fn reconnect(st: &mut State, path: &Path) -> Result<(), Error> {
    let fresh = Session::connect(path)?;
    match st.session.as_mut() {
        Some(s) if (fresh.wid, fresh.generation) == (s.wid, s.generation) => {
            s.sock = fresh.sock;
            s.allow = fresh.allow;
            s.grant = fresh.grant;
            s.broken = false;
        }
        Some(s) => {
            GENERATION.fetch_add(1, Ordering::Relaxed);
            let old = std::mem::replace(s, fresh);
            st.retired.push(old.memory);
        }
        None => st.session = Some(fresh),
    }
    Ok(())
}

fn slot_in(s: &Session, index: u32) -> Result<Slot, Error> {
    let word = s.memory.word(index as usize).ok_or(Error::Os {
        op: "use a slot outside the hint memory",
        errno: libc::EPROTO,
    })?;
    Ok(Slot {
        word,
        allow: s.allow,
    })
}

/// The calling thread's slot, registering the thread on first use.
pub fn own_slot(path: &Path) -> Result<Slot, Error> {
    let generation = GENERATION.load(Ordering::Relaxed);
    let cached = MINE.with(|m| m.get());
    if cached.generation == generation
        && let Some(slot) = cached.slot
    {
        return Ok(slot);
    }
    let slot = with_session(path, |s| slot_in(s, s.register_thread()?))?;
    MINE.with(|m| {
        m.set(Cached {
            slot: Some(slot),
            generation: GENERATION.load(Ordering::Relaxed),
        })
    });
    Ok(slot)
}

/// The calling thread's slot if it has one already (no registration).
pub fn registered_slot() -> Option<Slot> {
    let cached = MINE.with(|m| m.get());
    (cached.generation == GENERATION.load(Ordering::Relaxed))
        .then_some(cached.slot)
        .flatten()
}

/// The process-wide slot.
pub fn process_slot(path: &Path) -> Result<Slot, Error> {
    with_session(path, |s| {
        slot_in(s, bpf_intf::scx_phase_hint_limits_SCX_PHASE_PROCESS_SLOT)
    })
}

/// What the service granted this process, in its words.
pub fn grant(path: &Path) -> Result<String, Error> {
    with_session(path, |s| Ok(s.grant.clone()))
}

/// What the scheduler counted for this process, per phase slot (the
/// phases, then un-hinted), since it registered.
pub fn process_stats(path: &Path) -> Result<[workload_phase_stats; NR_SLOTS], Error> {
    with_session(path, |s| {
        let mut out = [workload_phase_stats::default(); NR_SLOTS];
        for (slot, f) in out.iter_mut().enumerate() {
            let (reply, _) = call(&s.sock, Request::Stats { slot: slot as u32 }, None)?;
            let Answer::Figures(Some(figures)) = reply.answer(Op::Stats) else {
                return Err(Error::Os {
                    op: "read the hint service's figures",
                    errno: libc::EPROTO,
                });
            };
            *f = figures;
        }
        Ok(out)
    })
}

/// A one-shot request about thread `tid` (numbered in our PID namespace).
pub fn one_shot(path: &Path, op: Op, tid: i32, phase: u32, node: i32) -> Result<(), Error> {
    let target = sys::pidfd_open(tid, true).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => Error::NoSuchThread { tid },
        errno => Error::Os {
            op: "pidfd_open",
            errno: errno.unwrap_or(libc::EIO),
        },
    })?;
    with_session(path, |s| {
        let req = match op {
            Op::Set => Request::Set { phase, node },
            _ => Request::Clear,
        };
        call(&s.sock, req, Some(&target)).map(|_| ())
    })
}
