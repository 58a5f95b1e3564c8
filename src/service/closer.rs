//! Closing what clients hand the service, off the event loop.
//!
//! The last close of a file runs its release, which may wait: a TCP socket
//! with SO_LINGER waits for its peer to take the data (forever, if the peer
//! never reads), a tty drains, a FUSE file asks its daemon. An fd a client
//! sent, and the client's own socket (whose unread messages may hold more
//! fds), may each be that last reference. One such close on the event loop
//! froze the service: another client's Hello got no answer within 5 s
//! (measured in the VM). So the loop hands them here; workers close them,
//! one more worker starting whenever none is idle, up to [`WORKERS`].
//!
//! Each user is charged for its files until they are closed, and runs on
//! at most [`WORKERS_PER_USER`] workers; its other files wait in its own
//! queue, so one user's blocked closes never hold another's. The server
//! refuses and cuts off a user with [`PER_USER`] files still to close.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Workers at most: closes that block each hold one.
pub const WORKERS: usize = 64;
/// Workers one user's files may hold at once.
pub const WORKERS_PER_USER: u32 = 4;
/// Files of one user still to close, beyond which the server refuses that
/// user. A close that does not block takes microseconds, so a
/// well-behaved client is never near it.
pub const PER_USER: u32 = 8;
/// A worker with nothing to do for this long ends.
const IDLE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct User {
    queued: VecDeque<OwnedFd>,
    running: u32,
}

#[derive(Default)]
struct State {
    users: HashMap<u32, User>,
    /// Users with files queued and a worker to spare, each once, in turn.
    ready: VecDeque<u32>,
    idle: usize,
    workers: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker never panics holding the lock; if one did, the state is
        // still counts and fds, consistent at every unlock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone, Default)]
pub struct Closer {
    shared: Arc<Shared>,
}

impl Closer {
    pub fn new() -> Closer {
        Closer::default()
    }

    /// Close `fd`, which came from a client of `uid`, on a worker.
    pub fn close(&self, uid: u32, fd: OwnedFd) {
        let mut s = self.shared.lock();
        let u = s.users.entry(uid).or_default();
        u.queued.push_back(fd);
        // It joins the turn when its first file queues with a worker to
        // spare; otherwise it is in the turn already, or at its limit.
        if u.queued.len() > 1 || u.running >= WORKERS_PER_USER {
            return;
        }
        s.ready.push_back(uid);
        start(&self.shared, &mut s);
    }

    /// Files of `uid` handed over and not yet closed.
    pub fn pending(&self, uid: u32) -> u32 {
        self.shared
            .lock()
            .users
            .get(&uid)
            .map_or(0, |u| u.queued.len() as u32 + u.running)
    }
}

/// A worker for the user just put in the turn: an idle one, or a new one.
fn start(shared: &Arc<Shared>, s: &mut State) {
    // Woken workers take the turn's users in order; start one more if
    // there are more users waiting than idle workers.
    if s.ready.len() <= s.idle {
        shared.work.notify_one();
        return;
    }
    if s.workers >= WORKERS {
        return;
    }
    let next = shared.clone();
    match std::thread::Builder::new()
        .name("scx_phase-close".into())
        .spawn(move || work(&next))
    {
        Ok(_) => s.workers += 1,
        // The file waits for a busy worker, or for the next close to
        // start one.
        Err(e) => log::warn!("hint service: cannot start a worker to close fds: {e}"),
    }
}

fn work(shared: &Arc<Shared>) {
    let mut s = shared.lock();
    loop {
        let Some(uid) = s.ready.pop_front() else {
            s.idle += 1;
            let (next, timeout) = shared
                .work
                .wait_timeout(s, IDLE)
                .unwrap_or_else(|p| p.into_inner());
            s = next;
            s.idle -= 1;
            if timeout.timed_out() && s.ready.is_empty() {
                s.workers -= 1;
                return;
            }
            continue;
        };
        let Some(u) = s.users.get_mut(&uid) else {
            continue;
        };
        let Some(fd) = u.queued.pop_front() else {
            continue;
        };
        u.running += 1;
        // Its next file gets a worker of its own, not this busy one.
        if !u.queued.is_empty() && u.running < WORKERS_PER_USER {
            s.ready.push_back(uid);
            start(shared, &mut s);
        }
        drop(s);
        // The close that may wait, with no lock held.
        drop(fd);
        s = shared.lock();
        let Some(u) = s.users.get_mut(&uid) else {
            continue;
        };
        u.running -= 1;
        // Back in the turn if it was at its limit with files queued.
        if !u.queued.is_empty() && u.running == WORKERS_PER_USER - 1 {
            s.ready.push_back(uid);
        } else if u.queued.is_empty() && u.running == 0 {
            s.users.remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;
    use std::time::Instant;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Read the pipe end `r`: it must be at end of file (every write end
    /// closed); blocks until then.
    fn read_to_eof(r: &OwnedFd) {
        let mut b = [0u8; 1];
        // SAFETY: a valid fd and buffer.
        let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(r), b.as_mut_ptr().cast(), 1) };
        assert_eq!(n, 0);
    }

    /// A TCP socket whose close waits `secs` for a peer that never reads,
    /// and that peer's listener (to keep).
    fn lingering(secs: i32) -> (OwnedFd, std::net::TcpListener) {
        use std::io::Write;
        use std::os::fd::{AsRawFd, IntoRawFd};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nonblocking(true).unwrap();
        while c.write(&[0u8; 65536]).is_ok() {}
        c.set_nonblocking(false).unwrap();
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: secs,
        };
        // SAFETY: a valid socket and option.
        let r = unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        // SAFETY: the stream's fd, given up by it.
        (unsafe { OwnedFd::from_raw_fd(c.into_raw_fd()) }, l)
    }

    #[test]
    fn one_users_blocked_closes_hold_neither_the_caller_nor_another_user() {
        let c = Closer::new();
        let mut peers = Vec::new();
        let t0 = Instant::now();
        for _ in 0..6 {
            let (fd, l) = lingering(2);
            peers.push(l);
            c.close(1, fd);
        }
        assert!(t0.elapsed() < Duration::from_millis(500), "close() waited");
        assert_eq!(c.pending(1), 6);
        let (r, w) = pipe();
        let t1 = Instant::now();
        c.close(2, w);
        read_to_eof(&r);
        let other = t1.elapsed();
        assert!(
            other < Duration::from_millis(500),
            "user 2 waited {other:?}"
        );
        // User 1 runs on at most its share of the workers.
        assert!(c.shared.lock().workers <= WORKERS_PER_USER as usize + 1);
        let t2 = Instant::now();
        while c.pending(1) > 0 {
            assert!(t2.elapsed() < Duration::from_secs(10), "closes never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn every_file_is_closed_and_uncharged() {
        let c = Closer::new();
        let mut readers = Vec::new();
        for uid in 0..50u32 {
            let (r, w) = pipe();
            c.close(uid % 3, w);
            readers.push(r);
        }
        let t0 = Instant::now();
        while (0..3).any(|uid| c.pending(uid) > 0) {
            assert!(t0.elapsed() < Duration::from_secs(5), "closes never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Each write end closed: each reader sees end of file.
        for r in readers {
            read_to_eof(&r);
        }
        assert!(c.shared.lock().workers <= WORKERS);
    }
}
