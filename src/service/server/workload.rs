//! The workload API's requests: CPU claims, locked memory and
//! memory-pressure watches, each held by the connection that asked for it
//! (see `workload_api`), and what the service does for them every tick.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use super::super::status_file::{ClaimRow, Level, Placement, WatchRow, WorkloadRow, WorkloadsFile};
use log::{debug, warn};
use scx_phase::hint::protocol::{Answer, CLAIM_EXCLUSIVE, CLAIM_SPREAD, Reply};
use scx_phase::sys;

use super::super::claims::{ClaimRequest, CpuTopology, Holder, NodeChoice, format_cpulist};
use super::super::memlock::human;
use super::super::pressure::Watch;
use super::super::quota::{self, Cap, Tenant};
use super::super::rules;
use super::super::watch::{Token, epoll_add_events};
use super::super::workload_api::online_cpus;
use super::{Client, Server};

/// Pressure watches a connection may hold, and a user.
const WATCHES_PER_CLIENT: usize = 4;
/// Pressure watches (an fd each) for everyone, and for one user or cgroup.
const WATCHES: Cap = Cap::counted("pressure watches", 1024, 16);
/// How often the online CPUs are looked at, for hotplug.
const HOTPLUG_CHECK: Duration = Duration::from_secs(1);

fn refusal(errno: i32, message: impl Into<String>) -> Reply {
    Reply::error(errno, message)
}

impl Server {
    /// Publish the claims to the scheduler.
    fn publish_claims(&mut self) {
        let api = &mut self.api;
        let by_cpu = api.claims.by_cpu();
        let mut by_wid: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (&cpu, &(wid, _)) in &by_cpu {
            by_wid.entry(wid).or_default().push(cpu);
        }
        api.written_cpus
            .extend(api.claims.topo.nodes.values().flatten().copied());
        api.written_cpus.extend(by_cpu.keys().copied());
        let all: Vec<u32> = api.written_cpus.iter().copied().collect();
        let cleared: Vec<u32> = api.claimed_wids.iter().copied().collect();
        api.generation += 1;
        if let Err(e) = self
            .maps
            .write_claims(&all, &by_cpu, &by_wid, &cleared, api.generation)
        {
            warn!("hint service: cannot publish the CPU claims: {e}");
        }
        api.claimed_wids = by_wid.keys().copied().collect();
        api.dirty = true;
    }

    pub(super) fn claim(&mut self, index: usize, cpus: u32, node: i32, flags: u32) -> Reply {
        let wid = match self.registered(index, "claiming CPUs") {
            Ok(wid) => wid,
            Err(refused) => return refused,
        };
        let Some(c) = self.clients[index].as_ref() else {
            return refusal(libc::EBADF, "gone");
        };
        if let Err(why) = rules::may_claim(&c.who, &self.policy) {
            return refusal(libc::EPERM, why);
        }
        if flags & !(CLAIM_EXCLUSIVE | CLAIM_SPREAD) != 0 {
            return refusal(
                libc::EINVAL,
                format!("refused: unknown claim flags {flags:#x}"),
            );
        }
        let request = ClaimRequest {
            cpus,
            node: NodeChoice::from_wire(node),
            exclusive: flags & CLAIM_EXCLUSIVE != 0,
            spread: flags & CLAIM_SPREAD != 0,
        };
        let holder = Holder {
            wid,
            pid: c.peer.pid,
            tenant: c.peer.tenant,
        };
        let id = match self.api.claims.grant(holder, request) {
            Ok(id) => id,
            Err(why) => return refusal(libc::EBUSY, why),
        };
        if let Some(c) = self.clients[index].as_mut() {
            c.held.claims.push(id);
        }
        self.publish_claims();
        let Some(claim) = self.api.claims.get(id) else {
            return refusal(libc::EIO, "claim vanished");
        };
        Answer::Claimed {
            node: claim.node,
            count: claim.cpus.len() as u32,
            cpus: format_cpulist(&claim.cpus),
        }
        .into()
    }

    /// The caller's process, alive and registered, or the refusal.
    fn memory_holder(&self, index: usize) -> Result<(u32, Tenant), Reply> {
        // Every grant belongs to a registered process and ends with it.
        self.registered(index, "locking memory")?;
        let Some(c) = self.clients[index].as_ref() else {
            return Err(refusal(libc::EBADF, "gone"));
        };
        if !sys::pidfd_alive(c.peer.pidfd.as_fd()) {
            return Err(refusal(libc::ESRCH, "refused: your process is gone"));
        }
        Ok((c.peer.pid, c.peer.tenant))
    }

    fn hold_memory(&mut self, index: usize, id: u64) {
        if let Some(c) = self.clients[index].as_mut() {
            c.held.memlock.push(id);
        }
        self.api.dirty = true;
    }

    /// LockMemory without an fd: bytes set aside for buffers to come.
    pub(super) fn reserve_memory(&mut self, index: usize, bytes: u64) -> Reply {
        let (pid, tenant) = match self.memory_holder(index) {
            Ok(h) => h,
            Err(refused) => return refused,
        };
        match self.api.budget.reserve(pid, tenant, bytes) {
            Ok(id) => {
                self.hold_memory(index, id);
                Answer::Held {
                    lock: id as u32,
                    note: format!("{} reserved for pid {pid}", human(bytes)),
                }
                .into()
            }
            Err(why) => refusal(libc::ENOMEM, why),
        }
    }

    /// LockMemory with a memfd: its pages locked here, resident until the
    /// lock ends.
    pub(super) fn lock_memory(&mut self, index: usize, fd: BorrowedFd<'_>, bytes: u64) -> Reply {
        let (pid, tenant) = match self.memory_holder(index) {
            Ok(h) => h,
            Err(refused) => return refused,
        };
        match self.api.budget.lock(pid, tenant, fd, bytes) {
            Ok(id) => {
                self.hold_memory(index, id);
                Answer::Held {
                    lock: id as u32,
                    note: format!("{} locked for pid {pid}", human(bytes)),
                }
                .into()
            }
            Err(why) => refusal(libc::ENOMEM, why),
        }
    }

    /// UnlockMemory: one of this connection's locks (or reservations) ends.
    pub(super) fn unlock_memory(&mut self, index: usize, lock: u32) -> Reply {
        let id = u64::from(lock);
        let Some(c) = self.clients[index].as_mut() else {
            return refusal(libc::EBADF, "gone");
        };
        let Some(at) = c.held.memlock.iter().position(|h| *h == id) else {
            return refusal(
                libc::ENOENT,
                format!("refused: lock {id} is not one this connection holds"),
            );
        };
        c.held.memlock.swap_remove(at);
        self.api.budget.release(id);
        self.api.dirty = true;
        Reply::ok()
    }

    pub(super) fn watch(
        &mut self,
        index: usize,
        stall_us: u32,
        window_us: i32,
        level: u32,
    ) -> Reply {
        if let Err(refused) = self.registered(index, "watching memory pressure") {
            return refused;
        }
        let Some(c) = self.clients[index].as_ref() else {
            return refusal(libc::EBADF, "gone");
        };
        if c.held.watches.len() >= WATCHES_PER_CLIENT {
            return refusal(
                libc::ENOSPC,
                format!(
                    "refused: a connection watches at most {WATCHES_PER_CLIENT} pressure triggers"
                ),
            );
        }
        if level > 1 {
            return refusal(
                libc::EINVAL,
                format!("refused: pressure level {level} (0 some, 1 full)"),
            );
        }
        let tenant = c.peer.tenant;
        let held = quota::sum(self.api.watches.values(), tenant, |w| (w.3, 1));
        if let Err(why) = WATCHES.admit(tenant, held, 1) {
            return refusal(libc::ENOSPC, why);
        }
        let watch = match Watch::open(c.peer.pid, stall_us, window_us.max(0) as u32, level == 1) {
            Ok(w) => w,
            Err(why) => return refusal(libc::EINVAL, why),
        };
        // Its cgroup was read by pid: still the same process?
        if !sys::pidfd_alive(c.peer.pidfd.as_fd()) {
            return refusal(libc::ESRCH, "refused: your process is gone");
        }
        // Ids wrap after 2^32 watches; one still held is skipped.
        let mut id = self.api.next_watch;
        while self.api.watches.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.api.next_watch = id.wrapping_add(1);
        let token = Token::Pressure { id };
        if let Err(e) = epoll_add_events(
            self.epoll.as_fd(),
            watch.fd(),
            token,
            (libc::EPOLLPRI | libc::EPOLLERR) as u32,
        ) {
            return refusal(libc::EIO, format!("refused: cannot poll the trigger: {e}"));
        }
        let path = watch.path.display().to_string();
        let owner_gen = self.client_gen[index];
        self.api
            .watches
            .insert(id, (watch, index, owner_gen, tenant));
        if let Some(c) = self.clients[index].as_mut() {
            c.held.watches.push(id);
        }
        self.api.dirty = true;
        Answer::Done {
            note: format!("watching {path}"),
        }
        .into()
    }

    /// A trigger fired: send the figures to its client (best effort: an
    /// event that does not fit in its socket is dropped).
    pub(super) fn watch_event(&mut self, id: u32, events: u32) {
        let Some((watch, index, owner_gen, _)) = self.api.watches.get_mut(&id) else {
            return;
        };
        if events & libc::EPOLLERR as u32 != 0 {
            // The cgroup went away.
            self.api.watches.remove(&id);
            return;
        }
        let figures = watch.figures().unwrap_or_default();
        let event = Reply::from(Answer::Pressure {
            full: watch.full,
            stall_us: watch.stall_us,
            window_us: watch.window_us,
            figures,
        });
        let (index, owner_gen) = (*index, *owner_gen);
        if self.client_gen.get(index) == Some(&owner_gen)
            && let Some(c) = self.clients[index].as_ref()
            && sys::send_with_fd(c.fd.as_fd(), &event.encode(), None, libc::MSG_DONTWAIT).is_err()
        {
            debug!(
                "hint service: a pressure event for pid {} was dropped",
                c.peer.pid
            );
        }
    }

    /// Everything a closing connection held goes back.
    pub(super) fn release_held(&mut self, c: &Client) {
        for id in &c.held.memlock {
            self.api.budget.release(*id);
        }
        for id in &c.held.watches {
            self.api.watches.remove(id);
        }
        let had_claims = !c.held.claims.is_empty();
        for id in &c.held.claims {
            self.api.claims.release(*id);
        }
        if had_claims {
            self.publish_claims();
        }
        if !c.held.memlock.is_empty() || !c.held.watches.is_empty() {
            self.api.dirty = true;
        }
    }

    /// Every tick: CPUs that went off or on line re-home the claims; the
    /// status file follows what changed.
    pub(super) fn api_tick(&mut self) {
        if self.api.last_check.elapsed() >= HOTPLUG_CHECK {
            self.api.last_check = Instant::now();
            let online = online_cpus();
            if online != self.api.online {
                self.api.online = online;
                let changed = self
                    .api
                    .claims
                    .rehome(CpuTopology::read(self.api.gpu_nodes.clone()));
                if !changed.is_empty() {
                    self.publish_claims();
                    self.tell_claims_changed(&changed);
                }
            }
        }
        if self.api.dirty {
            self.api.dirty = false;
            self.write_status();
        }
    }

    fn tell_claims_changed(&mut self, changed: &[u64]) {
        for c in self.clients.iter().flatten() {
            for id in c.held.claims.iter().filter(|id| changed.contains(id)) {
                if let Some(claim) = self.api.claims.get(*id) {
                    let event = Reply::from(Answer::ClaimMoved {
                        node: claim.node,
                        count: claim.cpus.len() as u32,
                        cpus: format_cpulist(&claim.cpus),
                    });
                    let _ =
                        sys::send_with_fd(c.fd.as_fd(), &event.encode(), None, libc::MSG_DONTWAIT);
                }
            }
        }
    }

    /// `workloads.json`: every registered process and what it holds.
    fn write_status(&self) {
        let Some(path) = &self.api.status_path else {
            return;
        };
        let rows = self
            .workloads
            .iter()
            .map(|w| WorkloadRow {
                wid: w.wid,
                pid: w.pid,
                uid: w.uid,
                cgroup: super::super::identity::cgroup_of(w.pid),
                threads_bound: w.bound(),
                connections: w.connections,
                claims: self
                    .api
                    .claims
                    .iter()
                    .filter(|(_, c)| c.holder.wid == w.wid)
                    .map(|(_, c)| ClaimRow {
                        node: c.node,
                        cpus: c.cpus.clone(),
                        exclusive: c.request.exclusive,
                        placement: if c.request.spread {
                            Placement::Spread
                        } else {
                            Placement::Pack
                        },
                    })
                    .collect(),
                locked_bytes: self.api.budget.held_by(w.pid),
                pressure_watches: self
                    .clients
                    .iter()
                    .flatten()
                    .filter(|c| c.workload.map(|x| x.0) == Some(w.wid))
                    .flat_map(|c| c.held.watches.iter())
                    .filter_map(|id| self.api.watches.get(id))
                    .map(|(wt, ..)| WatchRow {
                        path: wt.path.display().to_string(),
                        stall_ms: wt.stall_us / 1000,
                        window_ms: wt.window_us / 1000,
                        level: if wt.full { Level::Full } else { Level::Some },
                    })
                    .collect(),
                cpu_ms: None,
            })
            .collect();
        let status = WorkloadsFile {
            workloads: rows,
            locked_budget_bytes: self.api.budget.total,
            locked_used_bytes: self.api.budget.used(),
            max_exclusive_pct: self.api.claims.max_exclusive_pct,
        };
        // A fresh file, never one that is there (a symlink planted in a
        // shared folder would have root write where it points), then
        // renamed over the last, which replaces a symlink, not its target.
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, status.to_json().as_bytes()))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            debug!("hint service: cannot write {}: {e}", path.display());
        }
    }
}
