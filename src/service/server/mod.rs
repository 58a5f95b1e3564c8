//! The service's event loop: one thread, one epoll set over the listening
//! socket, the clients, and the pidfds of registered processes and bound
//! threads (readable when they exit). Nothing in it blocks on a client:
//! sockets are non-blocking, each client gets a few messages per turn, a
//! client that does not read its replies or keeps sending garbage is cut
//! off, and every limit is per user as well as global.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, warn};
use scx_phase::bpf_intf::{phase_hint, service_counters};
use scx_phase::hint::protocol::{Carries, Op, REQUEST_LEN, Reply, Request};
use scx_phase::phase::Phase;
use scx_phase::sys;

use super::closer::{self, Closer};
use super::identity::Peer;
use super::maps::HintMaps;
use super::quota::{Cap, Counts, Owners};
use super::rules::{Policy, Who};
use super::watch::{Token, epoll_add};
use super::workload_api::{Config, Held, WorkloadApi};
use super::workloads::Workloads;

mod hints;
mod workload;

/// What one user or cgroup, and everyone, may hold at once (quota.rs).
#[derive(Clone, Debug)]
pub struct Limits {
    pub connections: usize,
    pub connections_per_uid: u32,
    pub workloads_per_uid: u32,
    pub bound_threads: usize,
    pub bound_threads_per_uid: usize,
    /// Entries of the tid map, and one user's or cgroup's.
    pub one_shots: usize,
    pub one_shots_per_uid: usize,
    /// Requests served per client per turn of the loop.
    pub messages_per_turn: usize,
    /// Malformed requests after which a client is cut off.
    pub bad_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 4096,
            // As many as its processes: a node of 8 ranks with 16 loaders
            // each is 136 processes of one user, each with a connection.
            connections_per_uid: 256,
            workloads_per_uid: 256,
            bound_threads: 65536,
            // A quarter: a 10,000-thread job fits, and no three users fill it.
            bound_threads_per_uid: 16384,
            // The tid map's default size (the loader's --max-hints), and a
            // quarter of it.
            one_shots: 65536,
            one_shots_per_uid: 16384,
            messages_per_turn: 8,
            bad_requests: 8,
        }
    }
}

impl Limits {
    fn connection_cap(&self) -> Cap {
        let per = u64::from(self.connections_per_uid);
        Cap::counted("connections", self.connections as u64, per)
    }

    fn one_shots(&self) -> Cap {
        let per = self.one_shots_per_uid as u64;
        Cap::counted("one-shot hints", self.one_shots as u64, per)
    }

    fn threads(&self) -> Cap {
        let per = self.bound_threads_per_uid as u64;
        Cap::counted("threads bound", self.bound_threads as u64, per)
    }
}

/// The uid charged for a client the service could not identify.
const UNKNOWN_UID: u32 = u32::MAX;
/// How often the counters are published and the stop flag looked at.
const TICK: Duration = Duration::from_millis(100);

struct Client {
    fd: OwnedFd,
    peer: Peer,
    who: Who,
    /// The workload it registered (id, generation).
    workload: Option<(u32, u32)>,
    bad: u32,
    /// What it holds through the workload API; released when it closes.
    held: Held,
}

pub struct Server {
    epoll: Arc<OwnedFd>,
    listener: OwnedFd,
    maps: HintMaps,
    policy: Policy,
    limits: Limits,
    clients: Vec<Option<Client>>,
    /// Bumped each time a client index is reused, so that a stale event
    /// never reaches its next occupant.
    client_gen: Vec<u32>,
    /// Open connections, by user and cgroup.
    connections: Counts,
    /// One-shot hints in the tid map, by who wrote them.
    one_shots: Owners,
    workloads: Workloads,
    api: WorkloadApi,
    counters: service_counters,
    published: Option<service_counters>,
    /// Closes what clients handed us: never on this loop.
    closer: Closer,
}

fn zero_counters() -> service_counters {
    service_counters {
        connections: 0,
        registrations: 0,
        one_shot_hints: 0,
        refused: 0,
        bad_requests: 0,
        dropped_clients: 0,
        workloads: 0,
        bound_threads: 0,
    }
}

fn same(a: &service_counters, b: &service_counters) -> bool {
    let f = |c: &service_counters| {
        [
            c.connections,
            c.registrations,
            c.one_shot_hints,
            c.refused,
            c.bad_requests,
            c.dropped_clients,
            c.workloads,
            c.bound_threads,
        ]
    };
    f(a) == f(b)
}

/// Raise this process's `resource` limit, soft and hard, to `want` (or
/// to the hard limit, if that is higher); without the privilege to raise
/// the hard limit, the soft one goes up to it. Returns the soft limit.
fn raise_rlimit(resource: libc::__rlimit_resource_t, want: u64) -> u64 {
    // SAFETY: get/setrlimit on our own process with a valid struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(resource, &mut r) != 0 {
            return 0;
        }
        let want = want.max(r.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        if libc::setrlimit(resource, &raised) == 0 {
            return want;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(resource, &r);
        r.rlim_cur
    }
}

/// Let this process hold a pidfd per bound thread: as root, raise the fd
/// limit to fs.nr_open (at most 2^20); otherwise to the hard limit.
fn raise_fd_limit() -> usize {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    match raise_rlimit(libc::RLIMIT_NOFILE, nr_open.min(1 << 20)) {
        0 => 1024,
        n => n as usize,
    }
}

fn refusal(message: String) -> Reply {
    Reply::error(libc::EPERM, message)
}

impl Server {
    pub fn new(
        listener: OwnedFd,
        maps: HintMaps,
        config: Config,
        mut limits: Limits,
    ) -> io::Result<Server> {
        // Fds: one per client, two per workload, one per spare, one per
        // bound thread.
        let fds = raise_fd_limit();
        limits.connections = limits.connections.min(fds / 4);
        let workloads = 2 * scx_phase::bpf_intf::scx_phase_hint_limits_SCX_PHASE_MAX_WORKLOADS
            as usize
            + super::workloads::SPARES;
        limits.bound_threads = limits
            .bound_threads
            .min(fds.saturating_sub(limits.connections + workloads + 64));
        // SAFETY: plain epoll_create1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd.
        let epoll = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        epoll_add(epoll.as_fd(), listener.as_fd(), Token::Listener)?;
        let per_uid_workloads = limits.workloads_per_uid;
        let installer = maps.spawn_installer()?;
        let api = WorkloadApi::new(&config);
        // Jobs' checkpoint buffers are locked here, up to the budget; past
        // what this allows (no CAP_SYS_RESOURCE), a lock is refused in one line.
        raise_rlimit(libc::RLIMIT_MEMLOCK, api.budget.total);
        let mut server = Server {
            epoll,
            listener,
            maps,
            policy: config.policy,
            api,
            limits,
            clients: Vec::new(),
            client_gen: Vec::new(),
            connections: Counts::default(),
            one_shots: Owners::default(),
            workloads: Workloads::new(installer, per_uid_workloads),
            counters: zero_counters(),
            published: None,
            closer: Closer::new(),
        };
        // Before the first client is served, so that a process that
        // reconnects finds its workload.
        server.adopt();
        // After adoption, so that no spare takes an adopted id.
        server.workloads.refill(&server.maps);
        Ok(server)
    }

    /// Serve until `stop` is set.
    pub fn run(&mut self, stop: &Arc<AtomicBool>) {
        // This thread runs in the lowest boosted class (forward's), so
        // that a job's requests are answered while un-hinted work crowds
        // the CPUs: in the chaos soak, un-hinted, a Hello took 118 ms at
        // the median and 506 ms at worst beside 4 hogs and 3 attacking
        // users on 2 vCPUs. Like any boosted task it shares by class
        // weight and within the CPU's boost budget, so a flood of requests
        // costs others at most that.
        // SAFETY: gettid() has no preconditions.
        let me = unsafe { libc::gettid() } as u32;
        let own = phase_hint {
            phase: Phase::Forward as u32,
            numa_node: -1,
        };
        if let Err(e) = self.maps.set_tid_hint(me, &own) {
            debug!("hint service: cannot raise its own thread: {e}");
        }
        self.serve(stop);
        let _ = self.maps.clear_tid_hint(me);
    }

    fn serve(&mut self, stop: &Arc<AtomicBool>) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let mut last_publish = Instant::now() - TICK;
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: a valid buffer of 64 events.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    TICK.as_millis() as i32,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("hint service: epoll_wait: {e}");
                    std::thread::sleep(TICK);
                }
                continue;
            }
            for ev in &events[..n as usize] {
                let (tag, events) = (ev.u64, ev.events);
                match Token::decode(tag) {
                    Some(Token::Listener) => self.accept(),
                    Some(Token::Client { index, generation }) => {
                        self.serve_client(index as usize, generation)
                    }
                    Some(Token::Thread { wid, slot }) => self.thread_event(wid, slot),
                    Some(Token::Process { wid }) => self.process_event(wid),
                    Some(Token::Pressure { id }) => self.watch_event(id, events),
                    None => {}
                }
            }
            if last_publish.elapsed() >= TICK {
                self.publish();
                self.api_tick();
                // A thread's exit deletes its entry: a full round of
                // 16,384 entries takes 6.4 s.
                let maps = &self.maps;
                self.one_shots
                    .sweep(256, |tid| matches!(maps.tid_hint(tid), Ok(None)));
                last_publish = Instant::now();
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        self.counters.workloads = self.workloads.len() as u64;
        self.counters.bound_threads = self.workloads.threads_bound() as u64;
        if self
            .published
            .as_ref()
            .is_some_and(|p| same(p, &self.counters))
        {
            return;
        }
        if let Err(e) = self.maps.publish(&self.counters) {
            debug!("hint service: cannot publish counters: {e}");
        }
        self.published = Some(self.counters);
    }

    fn accept(&mut self) {
        for _ in 0..16 {
            // SAFETY: accept4 without an address.
            let raw = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if raw < 0 {
                return;
            }
            // SAFETY: a fresh fd.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let peer = match Peer::of(fd.as_fd()) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    self.refuse_at_accept(
                        fd,
                        UNKNOWN_UID,
                        Reply::error(libc::EPERM, e.to_string()),
                    );
                    continue;
                }
                Err(e) => {
                    debug!("hint service: dropping a client we cannot identify: {e}");
                    self.closer.close(UNKNOWN_UID, fd);
                    continue;
                }
            };
            let tenant = peer.tenant;
            let closing = self.closer.pending(peer.uid);
            let why = if closing >= closer::PER_USER {
                Some(format!(
                    "refused: uid {} has {closing} files the service is still closing (fds it sent, or sockets holding them, that block when closed): connect again once they are closed",
                    peer.uid
                ))
            } else {
                self.limits
                    .connection_cap()
                    .admit(tenant, self.connections.holding(tenant), 1)
                    .err()
            };
            if let Some(why) = why {
                self.refuse_at_accept(fd, peer.uid, Reply::error(libc::EMFILE, why));
                continue;
            }
            let index = match self.clients.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.clients.push(None);
                    self.client_gen.push(0);
                    self.clients.len() - 1
                }
            };
            self.client_gen[index] = (self.client_gen[index] + 1) & 0xff_ffff;
            let token = Token::Client {
                index: index as u32,
                generation: self.client_gen[index],
            };
            if epoll_add(self.epoll.as_fd(), fd.as_fd(), token).is_err() {
                self.closer.close(peer.uid, fd);
                continue;
            }
            self.connections.add(tenant, 1);
            self.counters.connections += 1;
            let who = Who::of(&peer, &self.policy);
            self.clients[index] = Some(Client {
                fd,
                peer,
                who,
                workload: None,
                bad: 0,
                held: Held::default(),
            });
        }
    }

    /// Refuse a connection as it is accepted: one reply, if the client
    /// takes it at once, then it is closed (off the loop: messages it sent
    /// before the accept may hold fds).
    fn refuse_at_accept(&mut self, fd: OwnedFd, uid: u32, reply: Reply) {
        self.counters.refused += 1;
        let _ = sys::send_with_fd(fd.as_fd(), &reply.encode(), None, libc::MSG_DONTWAIT);
        self.closer.close(uid, fd);
    }

    /// Whether client `index` is still the one an event of `generation`
    /// was for.
    fn is_current(&self, index: usize, generation: u32) -> bool {
        self.client_gen.get(index) == Some(&generation) && self.clients[index].is_some()
    }

    pub(super) fn close_client(&mut self, index: usize) {
        let Some(c) = self.clients[index].take() else {
            return;
        };
        self.release_held(&c);
        // Unread messages in its socket may hold fds.
        self.closer.close(c.peer.uid, c.fd);
        self.connections.sub(c.peer.tenant, 1);
        if let Some((wid, generation)) = c.workload
            && let Some(w) = self.workloads.get_mut(wid)
            && w.generation == generation
        {
            w.connections = w.connections.saturating_sub(1);
            // Its last connection closed (on exit, or on exec, which
            // closes it): the workload ends with it.
            if w.connections == 0 {
                self.end_workload(wid);
            }
        }
    }

    /// A few requests of one client. A closed client reads as an empty
    /// message once its queue is drained, so hang-ups need no case of
    /// their own; what is left waits for the next turn.
    fn serve_client(&mut self, index: usize, generation: u32) {
        if !self.is_current(index, generation) {
            return;
        }
        let mut buf = [0u8; REQUEST_LEN + 1];
        for _ in 0..self.limits.messages_per_turn {
            let Some(c) = self.clients[index].as_ref() else {
                return;
            };
            let uid = c.peer.uid;
            let got = match sys::recv_with_fds(c.fd.as_fd(), &mut buf, libc::MSG_DONTWAIT) {
                Ok(g) if g.len == 0 && !g.truncated && g.fds.is_empty() => {
                    self.close_client(index);
                    return;
                }
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.close_client(index);
                    return;
                }
            };
            let sent = self.take_fd(uid, got.fds);
            let (reply, fd) = match Request::decode(&buf[..got.len.min(buf.len())]) {
                Ok(req)
                    if !got.truncated
                        && sent.as_ref().is_ok_and(|s| fits(req.op(), s.as_ref())) =>
                {
                    self.handle(index, uid, req, sent.ok().flatten())
                }
                decoded => {
                    let why = match decoded {
                        _ if got.truncated => "refused: a request is one message of 16 bytes".into(),
                        _ if sent.is_err() => "refused: the hint service takes one pidfd or memfd per request and no other fd".into(),
                        Ok(_) => "refused: Thread, Set and Clear need a pidfd, LockMemory a memfd or none, others none".into(),
                        Err(e) => format!("refused: bad request: {e}"),
                    };
                    if let Ok(Some(sent)) = sent {
                        self.discard(uid, sent);
                    }
                    self.bad_request(index, &why)
                }
            };
            // A client whose files block when closed is cut off before it
            // can hand over more (reply() closes it).
            if self.closer.pending(uid) >= closer::PER_USER
                && let Some(c) = self.clients[index].as_mut()
            {
                c.bad = u32::MAX;
            }
            if !self.reply(index, &reply, fd) {
                return;
            }
        }
    }

    /// The one pidfd or memfd a request may carry. Anything else (another
    /// kind of file, or more than one fd) goes to the closer before
    /// anything touches it: reading its fdinfo, or closing it here, could
    /// wait. Closing a pidfd or a memfd never waits.
    fn take_fd(&mut self, uid: u32, fds: Vec<OwnedFd>) -> Result<Option<Sent>, ()> {
        if fds.len() == 1 {
            if sys::is_pidfd(fds[0].as_fd()) {
                return Ok(fds.into_iter().next().map(Sent::Pidfd));
            }
            if let Some(bytes) = sys::memfd_size(fds[0].as_fd()) {
                return Ok(fds.into_iter().next().map(|fd| Sent::Memfd(fd, bytes)));
            }
        }
        let none = fds.is_empty();
        for fd in fds {
            self.closer.close(uid, fd);
        }
        if none { Ok(None) } else { Err(()) }
    }

    /// A file a request brought and nothing kept: a memfd goes to the
    /// closer, since its last close frees its pages, which takes time.
    fn discard(&mut self, uid: u32, sent: Sent) {
        match sent {
            Sent::Memfd(fd, _) => self.closer.close(uid, fd),
            Sent::Pidfd(fd) => drop(fd),
        }
    }

    fn bad_request(&mut self, index: usize, why: &str) -> (Reply, Option<OwnedFd>) {
        self.counters.bad_requests += 1;
        if let Some(c) = self.clients[index].as_mut() {
            c.bad += 1;
        }
        (Reply::error(libc::EINVAL, why), None)
    }

    /// Send a reply; a client that cannot take it (it does not read) is
    /// cut off. Returns whether the client is still there.
    fn reply(&mut self, index: usize, reply: &Reply, fd: Option<OwnedFd>) -> bool {
        let Some(c) = self.clients[index].as_ref() else {
            return false;
        };
        let sent = sys::send_with_fd(
            c.fd.as_fd(),
            &reply.encode(),
            fd.as_ref().map(|f| f.as_fd()),
            libc::MSG_DONTWAIT,
        );
        let too_bad = c.bad >= self.limits.bad_requests;
        if sent.is_err() || too_bad {
            self.counters.dropped_clients += 1;
            debug!(
                "hint service: cutting off pid {} ({})",
                c.peer.pid,
                if too_bad {
                    "malformed requests"
                } else {
                    "not reading its replies"
                }
            );
            self.close_client(index);
            return false;
        }
        true
    }

    fn handle(
        &mut self,
        index: usize,
        uid: u32,
        req: Request,
        fd: Option<Sent>,
    ) -> (Reply, Option<OwnedFd>) {
        // Rights never outlive the credentials they were read from: a
        // changed process is refused and cut off (reply() closes it).
        if let Some(c) = self.clients[index].as_mut()
            && let Err(why) = c.peer.unchanged()
        {
            c.bad = u32::MAX;
            self.counters.refused += 1;
            return (refusal(why), None);
        }
        let reply = match (req, fd) {
            (Request::Hello, _) => return self.hello(index),
            (Request::Thread, Some(Sent::Pidfd(fd))) => self.thread(index, fd),
            (Request::Set { phase, node }, Some(Sent::Pidfd(fd))) => {
                self.one_shot(index, Some((phase, node)), fd)
            }
            (Request::Clear, Some(Sent::Pidfd(fd))) => self.one_shot(index, None, fd),
            (Request::Claim { cpus, node, flags }, None) => self.claim(index, cpus, node, flags),
            (Request::LockMemory { bytes }, None) => self.reserve_memory(index, bytes),
            (Request::LockMemory { .. }, Some(Sent::Memfd(fd, bytes))) => {
                // Locked or not, the service's mapping holds what it keeps.
                let reply = self.lock_memory(index, fd.as_fd(), bytes);
                self.discard(uid, Sent::Memfd(fd, bytes));
                reply
            }
            (Request::UnlockMemory { lock }, None) => self.unlock_memory(index, lock),
            (
                Request::WatchPressure {
                    stall_us,
                    window_us,
                    level,
                },
                None,
            ) => self.watch(index, stall_us, window_us, level),
            (Request::Stats { slot }, None) => self.stats(index, slot),
            _ => Reply::error(libc::EINVAL, "refused: missing pidfd"),
        };
        match -reply.status {
            libc::EPERM => self.counters.refused += 1,
            libc::EINVAL => {
                self.counters.bad_requests += 1;
                if let Some(c) = self.clients[index].as_mut() {
                    c.bad += 1;
                }
            }
            _ => {}
        }
        (reply, None)
    }

    /// The client's workload, or the refusal to send: every request but
    /// Hello and one-shot hints needs a registered process (Hello) first.
    fn registered(&self, index: usize, before: &str) -> Result<u32, Reply> {
        self.workload_of(index).ok_or_else(|| {
            refusal(format!(
                "refused: register the process (Hello) before {before}"
            ))
        })
    }

    /// The client's workload, if it registered and it still exists.
    pub(super) fn workload_of(&self, index: usize) -> Option<u32> {
        let (wid, generation) = self.clients[index].as_ref()?.workload?;
        (self.workloads.get(wid)?.generation == generation).then_some(wid)
    }
}

/// The fd a request came with.
enum Sent {
    Pidfd(OwnedFd),
    /// A memfd, and its size.
    Memfd(OwnedFd, u64),
}

/// Whether a request of `op` may carry `sent`.
fn fits(op: Op, sent: Option<&Sent>) -> bool {
    matches!(
        (op.carries(), sent),
        (Carries::Nothing | Carries::MaybeMemfd, None)
            | (Carries::Pidfd, Some(Sent::Pidfd(_)))
            | (Carries::MaybeMemfd, Some(Sent::Memfd(..)))
    )
}
