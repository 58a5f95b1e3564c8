//! Requests about hints: registering a process (Hello), binding a thread
//! to a slot, one-shot hints for other threads, a process's own figures;
//! and what follows when a watched process or thread exits, or the service
//! restarts and takes its registry back.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use log::debug;
use scx_phase::Phase;
use scx_phase::bpf_intf::{
    phase_hint, scx_phase_hint_limits_SCX_PHASE_HINT_SLOTS as HINT_SLOTS,
    scx_phase_hint_limits_SCX_PHASE_PROCESS_SLOT as PROCESS_SLOT,
};
use scx_phase::hint::protocol::{Answer, Reply};
use scx_phase::stats::NR_SLOTS;
use scx_phase::sys;

use super::super::identity::Target;
use super::super::rules::{self, Whom};
use super::super::watch::{Token, Watched};
use super::super::workloads::Full;
use super::{Server, refusal};

impl Server {
    pub(super) fn hello(&mut self, index: usize) -> (Reply, Option<OwnedFd>) {
        let Some(c) = self.clients[index].as_ref() else {
            return (Reply::error(libc::EBADF, "gone"), None);
        };
        let wid = match self.workload_of(index) {
            Some(wid) => wid,
            None => match self.workloads.find(c.peer.pid, c.peer.start_time) {
                Some(wid) => {
                    if let Some(w) = self.workloads.get_mut(wid) {
                        w.connections += 1;
                    }
                    wid
                }
                None => match self.create_workload(index) {
                    Ok(wid) => wid,
                    Err(reply) => {
                        self.counters.refused += 1;
                        return (reply, None);
                    }
                },
            },
        };
        let Some(w) = self.workloads.get(wid) else {
            return (Reply::error(libc::EIO, "workload vanished"), None);
        };
        if let Some(c) = self.clients[index].as_mut() {
            c.workload = Some((wid, w.generation));
        }
        let fd = match w.memory_fd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                return (
                    Reply::error(libc::ENOSPC, format!("cannot share the hint memory: {e}")),
                    None,
                );
            }
        };
        let reply = Answer::Registered {
            wid,
            generation: w.generation,
            allow: w.allow,
            slots: HINT_SLOTS,
            grant: w.grant.clone(),
        }
        .into();
        (reply, Some(fd))
    }

    /// What the scheduler counted for the caller's own process in one
    /// phase slot: a process reads its own figures and nobody else's.
    pub(super) fn stats(&self, index: usize, slot: u32) -> Reply {
        let wid = match self.registered(index, "asking for its figures") {
            Ok(wid) => wid,
            Err(refused) => return refused,
        };
        let slot = slot as usize;
        if slot >= NR_SLOTS {
            return Reply::error(
                libc::EINVAL,
                format!("refused: phase slot {slot}; slots are 0-{}", NR_SLOTS - 1),
            );
        }
        match self.maps.workload_stats(wid, slot as u32) {
            Ok(f) => Answer::Figures(Some(f)).into(),
            Err(e) => Reply::error(libc::EIO, format!("cannot read the figures: {e}")),
        }
    }

    fn create_workload(&mut self, index: usize) -> Result<u32, Reply> {
        let c = self.clients[index]
            .as_ref()
            .ok_or_else(|| Reply::error(libc::EBADF, "gone"))?;
        let (allow, grant) = rules::grant(&c.who, &self.policy);
        let pidfd = c
            .peer
            .pidfd
            .try_clone()
            .map_err(|e| Reply::error(libc::ENOSPC, format!("refused: {e}")))?;
        let pidfd = Watched::new(&self.epoll, pidfd);
        let p = &c.peer;
        let (pid, uid, tenant, start, cgroup) = (p.pid, p.uid, p.tenant, p.start_time, p.cgroup_id);
        let wid = self
            .workloads
            .create(
                &self.maps, pid, uid, tenant, start, cgroup, allow, grant, pidfd,
            )
            .map_err(|f| match f {
                Full::Capped(why) => Reply::error(libc::ENOSPC, why),
                _ => Reply::error(
                    libc::ENOSPC,
                    "refused: the hint service holds as many processes as it can",
                ),
            })?;
        let w = self
            .workloads
            .get_mut(wid)
            .ok_or_else(|| Reply::error(libc::EIO, "vanished"))?;
        w.connections = 1;
        let process = w.binding_ref(PROCESS_SLOT);
        let bound = self
            .maps
            .rebind(w.pidfd.as_fd(), |b| b.process = process)
            .and_then(|_| w.pidfd.watch(Token::Process { wid }));
        if let Err(e) = bound {
            self.workloads.remove(&self.maps, wid);
            return Err(Reply::error(
                libc::ESRCH,
                format!("refused: cannot bind your process: {e}"),
            ));
        }
        let _ = self.maps.reset_workload_stats(wid);
        self.api.dirty = true;
        Ok(wid)
    }

    pub(super) fn thread(&mut self, index: usize, pidfd: OwnedFd) -> Reply {
        let wid = match self.registered(index, "its threads") {
            Ok(wid) => wid,
            Err(refused) => return refused,
        };
        let target = match Target::of(pidfd.as_fd()) {
            Ok(t) => t,
            Err(e) => return target_error(e),
        };
        let Some(w) = self.workloads.get(wid) else {
            return Reply::error(libc::EIO, "workload vanished");
        };
        // Its process exited (its end not handled yet): the pid may be
        // another's now.
        if sys::pidfd_exited(w.pidfd.as_fd()) {
            return target_error(io::Error::from_raw_os_error(libc::ESRCH));
        }
        if target.status.tgid != w.pid {
            return refusal(format!(
                "refused: thread {} is not in your process: a slot binds only your own threads (use a one-shot hint for others)",
                target.status.nspid.last().copied().unwrap_or(target.tid)
            ));
        }
        // Already bound (a second registration): the same slot again.
        if let Ok(Some(b)) = self.maps.binding(pidfd.as_fd())
            && b.thread.wid == wid
            && b.thread.generation == w.generation
            && w.thread_pidfd(b.thread.slot).is_some()
        {
            return Answer::Bound {
                slot: b.thread.slot,
            }
            .into();
        }
        let held = self.workloads.threads_bound_by(w.tenant);
        if let Err(why) = self.limits.threads().admit(w.tenant, held, 1) {
            return Reply::error(libc::ENOSPC, why);
        }
        let watch = match pidfd.try_clone() {
            Ok(fd) => Watched::new(&self.epoll, fd),
            Err(e) => return Reply::error(libc::ENOSPC, format!("refused: {e}")),
        };
        let slot = match self.workloads.take_slot(wid, watch) {
            Ok(s) => s,
            Err(_) => {
                return Reply::error(
                    libc::ENOSPC,
                    format!(
                        "refused: all {} slots of this process are bound",
                        HINT_SLOTS - 1
                    ),
                );
            }
        };
        let Some(w) = self.workloads.get_mut(wid) else {
            return Reply::error(libc::EIO, "workload vanished");
        };
        let r = w.binding_ref(slot);
        let done = self
            .maps
            .rebind(pidfd.as_fd(), |b| b.thread = r)
            .and_then(|_| w.watch_slot(slot, Token::Thread { wid, slot }));
        if let Err(e) = done {
            self.workloads.free_slot(wid, slot);
            return target_error(e);
        }
        self.counters.registrations += 1;
        Answer::Bound { slot }.into()
    }

    pub(super) fn one_shot(
        &mut self,
        index: usize,
        set: Option<(u32, i32)>,
        pidfd: OwnedFd,
    ) -> Reply {
        let Some(c) = self.clients[index].as_ref() else {
            return Reply::error(libc::EBADF, "gone");
        };
        let node = set.map_or(-1, |(_, node)| node);
        let phase = if let Some((phase, node)) = set {
            match Phase::from_number(phase) {
                Some(p) if (-1..1024).contains(&node) => Some(p),
                _ => {
                    return Reply::error(
                        libc::EINVAL,
                        "refused: a phase is 0-5 and a node -1 (any) or a node id",
                    );
                }
            }
        } else {
            None
        };
        let target = match Target::of(pidfd.as_fd()) {
            Ok(t) => t,
            Err(e) => return target_error(e),
        };
        match target.visible_to(&c.peer, pidfd.as_fd()) {
            Ok(true) => {}
            Ok(false) => {
                return refusal(
                    "refused: that thread is not in your PID namespace or below".into(),
                );
            }
            Err(e) => return target_error(e),
        }
        let whom = Whom::of(&target, &c.peer);
        let ruled = match phase {
            Some(p) => rules::may_set(&c.who, &whom, p, &self.policy),
            None => {
                let current = self
                    .maps
                    .tid_hint(target.tid)
                    .ok()
                    .flatten()
                    .and_then(|h| Phase::from_number(h.phase));
                rules::may_clear(&c.who, &whom, current, &self.policy)
            }
        };
        if let Err(why) = ruled {
            return refusal(why);
        }
        if phase.is_some()
            && let Err(why) =
                self.one_shots
                    .charge(&self.limits.one_shots(), target.tid, c.peer.tenant)
        {
            return Reply::error(libc::ENOSPC, why);
        }
        let written = match phase {
            Some(p) => self.maps.set_tid_hint(
                target.tid,
                &phase_hint {
                    phase: p as u32,
                    numa_node: node,
                },
            ),
            None => self.maps.clear_tid_hint(target.tid).map(|_| ()),
        };
        if phase.is_none() || written.is_err() {
            self.one_shots.forget(target.tid);
        }
        if let Err(e) = written {
            return Reply::error(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("refused: cannot write the tid map: {e}"),
            );
        }
        // If it died meanwhile, its exit may have run before our write:
        // take the hint back so its tid's next owner never inherits it.
        if !sys::pidfd_alive(pidfd.as_fd()) {
            let _ = self.maps.clear_tid_hint(target.tid);
            self.one_shots.forget(target.tid);
            return target_error(io::Error::from_raw_os_error(libc::ESRCH));
        }
        self.counters.one_shot_hints += 1;
        Reply::ok()
    }

    pub(super) fn thread_event(&mut self, wid: u32, slot: u32) {
        let Some(w) = self.workloads.get(wid) else {
            return;
        };
        // A stale event (from this turn's batch) for a slot that a new
        // thread holds now: ignore.
        if w.thread_pidfd(slot)
            .is_some_and(|fd| !sys::pidfd_exited(fd.as_fd()))
        {
            return;
        }
        self.workloads.free_slot(wid, slot);
    }

    pub(super) fn process_event(&mut self, wid: u32) {
        if let Some(w) = self.workloads.get(wid)
            && sys::pidfd_exited(w.pidfd.as_fd())
        {
            self.end_workload(wid);
        }
    }

    /// The workload's process exited, or its last connection closed.
    /// Everything granted to it ends now: connections still open to it
    /// (a child that kept the socket, a process it was passed to) are cut
    /// off, and what they hold (claims, locked memory, watches) released.
    pub(super) fn end_workload(&mut self, wid: u32) {
        self.api.dirty = true;
        let Some(w) = self.workloads.remove(&self.maps, wid) else {
            return;
        };
        let theirs: Vec<usize> = (0..self.clients.len())
            .filter(|&i| {
                self.clients[i]
                    .as_ref()
                    .is_some_and(|c| c.workload == Some((wid, w.generation)))
            })
            .collect();
        debug!(
            "hint service: workload {wid} (pid {}) ended, {} thread(s) unbound, {} connection(s) still open cut off",
            w.pid,
            w.bound(),
            theirs.len()
        );
        // Its entry is gone, so closing them does not end it again.
        for index in theirs {
            self.close_client(index);
        }
    }

    /// After a restart: take back the workloads in the pinned registry
    /// whose processes still live, and their threads' slots; drop the rest.
    pub(super) fn adopt(&mut self) {
        let mut adopted = 0;
        for wid in 1..scx_phase::bpf_intf::scx_phase_hint_limits_SCX_PHASE_MAX_WORKLOADS {
            let Ok(entry) = self.maps.workload(wid) else {
                continue;
            };
            self.workloads.note_generation(wid, entry.generation);
            if entry.pid == 0 {
                continue;
            }
            let alive = sys::pidfd_open(entry.pid as i32, false).ok().filter(|fd| {
                super::super::identity::start_time(entry.pid).ok() == Some(entry.start_time)
                    && sys::pidfd_alive(fd.as_fd())
            });
            let memory = self.maps.memory_of(wid);
            match (alive, memory) {
                (Some(pidfd), Ok(memory)) => {
                    let grant = format!(
                        "uid {} may set {} (adopted after a restart)",
                        entry.uid,
                        if entry.allow
                            == scx_phase::bpf_intf::scx_phase_hint_limits_SCX_PHASE_ALLOW_ALL
                        {
                            "every phase"
                        } else {
                            "idle only"
                        }
                    );
                    let mut pidfd = Watched::new(&self.epoll, pidfd);
                    if pidfd.watch(Token::Process { wid }).is_ok()
                        && self
                            .workloads
                            .adopt(wid, &entry, grant, pidfd, memory)
                            .is_ok()
                    {
                        adopted += 1;
                        continue;
                    }
                    self.forget(wid, entry.generation);
                }
                _ => self.forget(wid, entry.generation),
            }
        }
        if adopted == 0 {
            return;
        }
        let mut claimed = 0;
        for rec in self.maps.dump().unwrap_or_default() {
            let t = rec.binding.thread;
            let Some(w) = self.workloads.get(t.wid) else {
                continue;
            };
            if t.generation != w.generation || t.slot >= HINT_SLOTS {
                continue;
            }
            let Ok(pidfd) = sys::pidfd_open(rec.tid as i32, true) else {
                continue;
            };
            // The tid may name a new thread by now: its binding says.
            if !matches!(self.maps.binding(pidfd.as_fd()), Ok(Some(b)) if b.thread.wid == t.wid && b.thread.generation == t.generation && b.thread.slot == t.slot)
            {
                continue;
            }
            let mut pidfd = Watched::new(&self.epoll, pidfd);
            if pidfd
                .watch(Token::Thread {
                    wid: t.wid,
                    slot: t.slot,
                })
                .is_ok()
                && self.workloads.claim(t.wid, t.slot, pidfd)
            {
                claimed += 1;
            }
        }
        let wids: Vec<u32> = self.workloads.iter().map(|w| w.wid).collect();
        for wid in wids {
            self.workloads.settle(wid);
        }
        log::info!(
            "hint service: adopted {adopted} registered process(es) and {claimed} bound thread(s) from the pinned maps"
        );
    }

    /// Free a registry entry whose process is gone.
    fn forget(&mut self, wid: u32, generation: u32) {
        let free = scx_phase::bpf_intf::hint_workload {
            pid: 0,
            generation,
            allow: 0,
            uid: 0,
            start_time: 0,
            cgroup_id: 0,
        };
        let _ = self.maps.set_workload(wid, &free);
        let _ = self.maps.remove_memory(wid);
    }
}

fn target_error(e: io::Error) -> Reply {
    match e.raw_os_error() {
        Some(libc::ESRCH) | Some(libc::ENOENT) => Reply::error(
            libc::ESRCH,
            "refused: that thread does not exist (any more)",
        ),
        Some(libc::EBADF) => Reply::error(libc::EINVAL, "refused: the fd sent is not a pidfd"),
        _ => Reply::error(
            libc::EIO,
            format!("refused: cannot identify that thread: {e}"),
        ),
    }
}
