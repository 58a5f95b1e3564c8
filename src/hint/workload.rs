//! The workload API: what a training job asks of the host when it starts,
//! held until it ends. CPUs on a NUMA node (the GPU's, by default), all to
//! itself if it asks; locked memory for checkpoint buffers; a callback when
//! memory runs low. A `Workload` is a connection of its own to the hint
//! service, and everything it holds is released when that connection
//! closes: when the handle is dropped, and when the process exits or dies.
//!
//! ```no_run
//! use scx_phase::hint::workload::{Node, Workload, WorkloadRequest};
//! let w = Workload::open(&WorkloadRequest {
//!     cpus: 8,
//!     node: Node::Gpu,
//!     exclusive: true,
//!     locked_memory: 4 << 30,
//!     ..Default::default()
//! })?;
//! let mut buf = w.checkpoint_buffer(1 << 30)?;
//! w.on_memory_pressure(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1), false,
//!     |ev| eprintln!("memory pressure: {}", ev.figures))?;
//! # Ok::<(), scx_phase::hint::Error>(())
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::Error;
use super::protocol::{Answer, CLAIM_EXCLUSIVE, CLAIM_SPREAD, MAX_REPLY_LEN, Op, Reply, Request};
use crate::sys::{self, Mapping};

/// Which NUMA node the CPUs should be on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Node {
    /// Wherever there is room.
    #[default]
    Any,
    Id(u32),
    /// The node of the GPU this process uses: `CUDA_VISIBLE_DEVICES` and
    /// `LOCAL_RANK` name it, the service's PCI topology places it.
    Gpu,
}

/// How the CPUs are picked on the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Fewest cores: SMT siblings together.
    #[default]
    Pack,
    /// One CPU per core first.
    Spread,
}

/// What a job asks for. Zero CPUs claims none; zero bytes locks none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadRequest {
    pub cpus: u32,
    pub node: Node,
    /// No other workload and no un-hinted task is placed on the CPUs.
    pub exclusive: bool,
    pub placement: Placement,
    /// Locked memory to reserve for checkpoint buffers, in bytes.
    pub locked_memory: u64,
}

/// The lock (or reservation) a LockMemory reply names.
fn held_lock(r: &Reply) -> u32 {
    match r.answer(Op::LockMemory) {
        Answer::Held { lock, .. } => lock,
        _ => 0, // answer(LockMemory) is always Held
    }
}

/// A memory-pressure event: the trigger that fired and PSI's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct PressureEvent {
    /// "some" or "full".
    pub level: &'static str,
    pub stall_us: u32,
    pub window_us: u32,
    /// avg10 of "some" and "full", in percent.
    pub some_avg10: f64,
    pub full_avg10: f64,
    /// The pressure file's lines, joined with "; ".
    pub figures: String,
}

impl PressureEvent {
    fn parse(full: bool, stall_us: u32, window_us: u32, figures: String) -> PressureEvent {
        let avg10 = |kind: &str| -> f64 {
            figures
                .split("; ")
                .find(|l| l.starts_with(kind))
                .and_then(|l| {
                    l.split_whitespace()
                        .find_map(|f| f.strip_prefix("avg10="))?
                        .parse()
                        .ok()
                })
                .unwrap_or(0.0)
        };
        PressureEvent {
            level: if full { "full" } else { "some" },
            stall_us,
            window_us,
            some_avg10: avg10("some"),
            full_avg10: avg10("full"),
            figures,
        }
    }
}

type Callback = Box<dyn Fn(&PressureEvent) + Send + Sync>;

/// A trigger: stall and window in µs, and whether its level is "full".
type Trigger = (u32, u32, bool);

struct Shared {
    sock: OwnedFd,
    cpus: Mutex<(Option<u32>, Vec<u32>)>,
    /// Each callback with the trigger it was registered for.
    callbacks: Mutex<Vec<(Trigger, Callback)>>,
}

/// Locked, resident memory for a checkpoint: a memfd of this process's,
/// every page written here (so charged to its cgroup), then locked by the
/// hint service in its own address space. Nothing of this process's
/// limits changes. Dropping it unmaps it and ends the lock.
pub struct LockedBuffer {
    map: Mapping,
    /// The service's name for the lock.
    lock: u32,
    conn: Weak<Conn>,
}

impl std::fmt::Debug for LockedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedBuffer")
            .field("len", &self.map.len())
            .field("lock", &self.lock)
            .finish()
    }
}

impl LockedBuffer {
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl std::ops::Deref for LockedBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }
}

impl std::ops::DerefMut for LockedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr(), self.map.len()) }
    }
}

impl Drop for LockedBuffer {
    fn drop(&mut self) {
        // Once the workload is closed, the service has ended every lock.
        if let Some(conn) = self.conn.upgrade() {
            let _ = conn.call(Request::UnlockMemory { lock: self.lock }, None);
        }
    }
}

/// The connection and the replies to it, in order.
struct Conn {
    shared: Arc<Shared>,
    replies: Mutex<Receiver<Reply>>,
}

impl Conn {
    /// One request and its reply (replies come in order).
    fn call(&self, req: Request, fd: Option<BorrowedFd<'_>>) -> Result<Reply, Error> {
        let rx = self.replies.lock().map_err(|_| Error::Os {
            op: "use the workload",
            errno: libc::EIO,
        })?;
        sys::send_with_fd(
            self.shared.sock.as_fd(),
            &req.encode(),
            fd,
            libc::MSG_NOSIGNAL,
        )
        .map_err(os("talk to the hint service"))?;
        let r = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::Os {
                    op: "wait for the hint service",
                    errno: libc::ETIMEDOUT,
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::NotRunning {
                    socket: "(connection lost)".into(),
                });
            }
        };
        if r.status < 0 {
            return Err(Error::Refused {
                errno: -r.status,
                message: r.message,
            });
        }
        Ok(r)
    }
}

/// A training job's hold on the host.
pub struct Workload {
    conn: Arc<Conn>,
    reader: Option<JoinHandle<()>>,
    /// Locked memory reserved and not yet given to a buffer.
    reserved: AtomicU64,
}

fn os(op: &'static str) -> impl Fn(io::Error) -> Error {
    move |e| Error::Os {
        op,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// The index of the GPU this process uses: the LOCAL_RANK-th entry of
/// CUDA_VISIBLE_DEVICES if that is a number, else LOCAL_RANK.
pub fn gpu_index() -> u32 {
    let rank: usize = std::env::var("LOCAL_RANK")
        .ok()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(0);
    std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|v| v.split(',').nth(rank)?.trim().parse().ok())
        .unwrap_or(rank as u32)
}

/// Reads what the service sends: replies go to the caller waiting for
/// one, events to the callbacks. Ends when the connection does.
fn read_loop(shared: Arc<Shared>, tx: Sender<Reply>) {
    let mut buf = [0u8; MAX_REPLY_LEN];
    loop {
        let Ok(got) = sys::recv_with_fds(shared.sock.as_fd(), &mut buf, 0) else {
            return;
        };
        if got.len == 0 {
            return;
        }
        let Ok(r) = Reply::decode(&buf[..got.len]) else {
            continue;
        };
        match r.event() {
            Some(Answer::Pressure {
                full,
                stall_us,
                window_us,
                figures,
            }) => {
                let ev = PressureEvent::parse(full, stall_us, window_us, figures);
                let fired = (ev.stall_us, ev.window_us, ev.level == "full");
                if let Ok(cbs) = shared.callbacks.lock() {
                    for (_, cb) in cbs.iter().filter(|(t, _)| *t == fired) {
                        cb(&ev);
                    }
                }
            }
            Some(Answer::ClaimMoved { node, cpus, .. }) => {
                if let Ok(mut c) = shared.cpus.lock() {
                    *c = (Some(node), parse_cpus(&cpus));
                }
            }
            _ => {
                if tx.send(r).is_err() {
                    return;
                }
            }
        }
    }
}

fn parse_cpus(list: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<u32>().ok()),
        }
    }
    v
}

impl Workload {
    /// Connect and take what `req` asks, whole, or fail with the service's
    /// one-line reason (nothing is half-granted).
    pub fn open(req: &WorkloadRequest) -> Result<Workload, Error> {
        Self::open_at(&super::socket_path(), req)
    }

    pub fn open_at(socket: &Path, req: &WorkloadRequest) -> Result<Workload, Error> {
        let sock = sys::seqpacket_connect(socket).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR) => Error::NotRunning {
                socket: socket.to_path_buf(),
            },
            errno => Error::Os {
                op: "connect to the hint service",
                errno: errno.unwrap_or(libc::EIO),
            },
        })?;
        let shared = Arc::new(Shared {
            sock,
            cpus: Mutex::new((None, Vec::new())),
            callbacks: Mutex::new(Vec::new()),
        });
        let (tx, rx) = channel();
        let s = shared.clone();
        let reader = std::thread::Builder::new()
            .name("scx_phase-workload".into())
            .spawn(move || read_loop(s, tx))
            .map_err(os("start the workload's reader"))?;
        let w = Workload {
            conn: Arc::new(Conn {
                shared,
                replies: Mutex::new(rx),
            }),
            reader: Some(reader),
            reserved: AtomicU64::new(0),
        };
        // The service keeps the workload's connection as its own.
        w.conn.call(Request::Hello, None)?;
        if req.cpus > 0 {
            let node = match req.node {
                Node::Any => -1,
                Node::Id(n) => n as i32,
                Node::Gpu => -2 - gpu_index() as i32,
            };
            let mut flags = 0;
            if req.exclusive {
                flags |= CLAIM_EXCLUSIVE;
            }
            if req.placement == Placement::Spread {
                flags |= CLAIM_SPREAD;
            }
            let r = w.conn.call(
                Request::Claim {
                    cpus: req.cpus,
                    node,
                    flags,
                },
                None,
            )?;
            if let Answer::Claimed { node, cpus, .. } = r.answer(Op::Claim)
                && let Ok(mut c) = w.conn.shared.cpus.lock()
            {
                *c = (Some(node), parse_cpus(&cpus));
            }
        }
        if req.locked_memory > 0 {
            w.conn.call(
                Request::LockMemory {
                    bytes: req.locked_memory,
                },
                None,
            )?;
            w.reserved.store(req.locked_memory, Ordering::Relaxed);
        }
        Ok(w)
    }

    /// The CPUs claimed (they change if one goes offline).
    pub fn cpus(&self) -> Vec<u32> {
        self.conn
            .shared
            .cpus
            .lock()
            .map(|c| c.1.clone())
            .unwrap_or_default()
    }

    /// The node the CPUs are on, if any were claimed.
    pub fn node(&self) -> Option<u32> {
        self.conn.shared.cpus.lock().ok().and_then(|c| c.0)
    }

    /// `size` bytes (rounded up to pages) of locked, resident memory: out
    /// of what the workload reserved, else of the host's budget.
    pub fn checkpoint_buffer(&self, size: usize) -> Result<LockedBuffer, Error> {
        // SAFETY: sysconf never fails for _SC_PAGESIZE.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = size.max(1).next_multiple_of(page);
        let need = len as u64;
        // The budget first, before a page is allocated: a refused size
        // costs nothing.
        let have = self.reserved.load(Ordering::Relaxed);
        let extra = if have >= need {
            self.reserved.fetch_sub(need, Ordering::Relaxed);
            None
        } else {
            let r = self
                .conn
                .call(Request::LockMemory { bytes: need - have }, None)?;
            self.reserved.store(0, Ordering::Relaxed);
            Some(held_lock(&r))
        };
        let give_back = |e: Error| {
            if let Some(id) = extra {
                let _ = self.conn.call(Request::UnlockMemory { lock: id }, None);
            }
            e
        };
        let fd = sys::memfd("scx_phase-checkpoint", need)
            .map_err(os("make a checkpoint buffer"))
            .map_err(give_back)?;
        let map = Mapping::new(fd.as_fd(), len)
            .map_err(os("map a checkpoint buffer"))
            .map_err(give_back)?;
        // Written here, before the service locks them: the pages are this
        // process's and count against its cgroup, not the service's.
        map.populate()
            .map_err(|e| Error::Refused {
                errno: e.raw_os_error().unwrap_or(libc::ENOMEM),
                message: format!("cannot allocate a {len}-byte checkpoint buffer: {e}"),
            })
            .map_err(give_back)?;
        let r = self
            .conn
            .call(Request::LockMemory { bytes: need }, Some(fd.as_fd()))
            .map_err(give_back)?;
        Ok(LockedBuffer {
            map,
            lock: held_lock(&r),
            conn: Arc::downgrade(&self.conn),
        })
    }

    /// Call `callback` (on a background thread) whenever `stall` of
    /// memory stall (level "full" if `full`, else "some") builds up within
    /// `window`, in this process's cgroup or, at its root, the host's.
    pub fn on_memory_pressure(
        &self,
        stall: Duration,
        window: Duration,
        full: bool,
        callback: impl Fn(&PressureEvent) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        let us = |d: Duration| d.as_micros().min(u32::MAX as u128) as u32;
        let trigger = (us(stall), us(window), full);
        // Registered first: an event may follow the reply at once.
        if let Ok(mut cbs) = self.conn.shared.callbacks.lock() {
            cbs.push((trigger, Box::new(callback)));
        }
        let r = self.conn.call(
            Request::WatchPressure {
                stall_us: trigger.0,
                window_us: trigger.1 as i32,
                level: u32::from(full),
            },
            None,
        );
        if r.is_err()
            && let Ok(mut cbs) = self.conn.shared.callbacks.lock()
        {
            cbs.pop();
        }
        r.map(|_| ())
    }

    /// Release everything now (dropping does the same).
    pub fn close(self) {}
}

impl Drop for Workload {
    fn drop(&mut self) {
        // SAFETY: shutdown(2) of our own socket wakes the reader, which
        // then ends; the service releases what this connection held.
        unsafe { libc::shutdown(self.conn.shared.sock.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hint::protocol::EVENT_PRESSURE;

    #[test]
    fn events_parse() {
        let r = Reply {
            status: EVENT_PRESSURE,
            slot: 100_000,
            slots: 1_000_000,
            allow: 0,
            message: "some avg10=12.50 avg60=3.00 avg300=0.00 total=123; full avg10=4.25 avg60=0.00 avg300=0.00 total=45".into(),
            ..Reply::default()
        };
        let Some(Answer::Pressure {
            full,
            stall_us,
            window_us,
            figures,
        }) = r.event()
        else {
            panic!("not a pressure event: {r:?}");
        };
        let ev = PressureEvent::parse(full, stall_us, window_us, figures);
        assert_eq!(
            (ev.level, ev.stall_us, ev.window_us),
            ("some", 100_000, 1_000_000)
        );
        assert_eq!((ev.some_avg10, ev.full_avg10), (12.5, 4.25));
        assert_eq!(parse_cpus("2-3,6"), vec![2, 3, 6]);
    }

    #[test]
    fn the_gpu_is_the_ranks_visible_device() {
        // SAFETY: this test alone reads these variables.
        unsafe {
            std::env::set_var("LOCAL_RANK", "1");
            std::env::set_var("CUDA_VISIBLE_DEVICES", "3,5");
        }
        assert_eq!(gpu_index(), 5);
        unsafe { std::env::remove_var("CUDA_VISIBLE_DEVICES") };
        assert_eq!(gpu_index(), 1);
        unsafe { std::env::remove_var("LOCAL_RANK") };
        assert_eq!(gpu_index(), 0);
    }
}
