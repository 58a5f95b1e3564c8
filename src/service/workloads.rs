//! The registered processes (workloads): each has an id, its own hint
//! memory (mapped here too, to reset slots), and a pidfd per bound thread.
//! A workload ends when its process exits or closes its last connection;
//! then its threads are unbound and its memory is dropped.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use scx_phase::bpf_intf::{
    hint_ref, hint_workload, scx_phase_hint_limits_SCX_PHASE_HINT_SLOTS as HINT_SLOTS,
    scx_phase_hint_limits_SCX_PHASE_MAX_WORKLOADS as MAX_WORKLOADS,
    scx_phase_hint_limits_SCX_PHASE_PROCESS_SLOT as PROCESS_SLOT,
};
use scx_phase::hint::client::UNSET_WORD;
use scx_phase::sys::Mapping;

use super::identity::charged_cgroup;
use super::maps::{HintMaps, Installer, MEMORY_BYTES, NO_REF};
use super::quota::{self, Cap, Counts, Holding, Tenant};
use super::watch::{Token, Watched};

pub struct Workload {
    pub wid: u32,
    pub generation: u32,
    pub pid: u32,
    pub uid: u32,
    /// Who is charged for it (quota.rs).
    pub tenant: Tenant,
    pub start_time: u64,
    pub allow: u32,
    pub grant: String,
    /// Its process, watched for exit; the key of its process binding.
    pub pidfd: Watched,
    pub memory_fd: OwnedFd,
    memory: Mapping,
    /// Slot -> the pidfd of the thread bound to it, watched for its exit.
    threads: Vec<Option<Watched>>,
    free: Vec<u32>,
    /// Slots bound to a thread now.
    bound_count: usize,
    pub connections: u32,
}

impl Workload {
    /// Slots bound to a thread now.
    pub fn bound(&self) -> usize {
        self.bound_count
    }

    pub fn binding_ref(&self, slot: u32) -> hint_ref {
        hint_ref {
            wid: self.wid,
            slot,
            generation: self.generation,
            _pad: 0,
        }
    }

    fn reset_slot(&self, slot: u32) {
        if let Some(w) = self.memory.word(slot as usize) {
            w.store(UNSET_WORD, Ordering::Relaxed);
        }
    }

    pub fn thread_pidfd(&self, slot: u32) -> Option<&Watched> {
        self.threads.get(slot as usize)?.as_ref()
    }

    /// Watch the pidfd of the thread bound to `slot`, tagged `token`.
    pub fn watch_slot(&mut self, slot: u32, token: Token) -> std::io::Result<()> {
        match self.threads.get_mut(slot as usize) {
            Some(Some(t)) => t.watch(token),
            _ => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
}

/// Memory installed in the outer map ahead of any registration, so that a
/// process registers without waiting for an RCU grace period. Installed at
/// registration, 8 ranks starting among 32 CPU hogs on 16 vCPUs took their
/// turns at 320-575 ms each, and the scheduler honoured the last rank's
/// loaders' hints 3.5 s after they were stored: they ran off their node.
pub const SPARES: usize = 16;

struct Spare {
    wid: u32,
    memory_fd: OwnedFd,
    memory: Mapping,
    /// Set by the installer once the memory is in the outer map.
    ready: Arc<AtomicBool>,
}

/// Why a workload or a slot could not be had.
pub enum Full {
    Workloads,
    /// A cap of its user or cgroup (the refusal).
    Capped(String),
    Slots,
}

/// A workload's memory and its mapping, every slot unset.
fn new_memory(maps: &HintMaps) -> Option<(OwnedFd, Mapping)> {
    let fd = maps.create_memory().ok()?;
    let memory = Mapping::new(fd.as_fd(), MEMORY_BYTES).ok()?;
    for i in 0..HINT_SLOTS as usize {
        if let Some(w) = memory.word(i) {
            w.store(UNSET_WORD, Ordering::Relaxed);
        }
    }
    Some((fd, memory))
}

pub struct Workloads {
    installer: Installer,
    table: Vec<Option<Workload>>,
    /// Ids whose memory is (being) installed, for the next registrations.
    spares: Vec<Spare>,
    /// The generation each id was last handed out with.
    generations: Vec<u32>,
    by_process: HashMap<(u32, u64), u32>,
    counts: Counts,
    cap: Cap,
    /// Threads bound to a slot, across all workloads.
    bound: usize,
    /// The id handed out last: the next goes to the first free one after
    /// it, so an id comes back only after all the others (a lookup by a
    /// stale id, in the scheduler or in a claim, meets an empty entry,
    /// not the next process).
    last_wid: u32,
}

impl Workloads {
    pub fn new(installer: Installer, per_tenant: u32) -> Workloads {
        Workloads {
            installer,
            table: (0..MAX_WORKLOADS).map(|_| None).collect(),
            spares: Vec::new(),
            generations: vec![0; MAX_WORKLOADS as usize],
            by_process: HashMap::new(),
            counts: Counts::default(),
            cap: Cap::counted(
                "processes registered",
                u64::from(MAX_WORKLOADS - 1),
                u64::from(per_tenant),
            ),
            bound: 0,
            last_wid: 0,
        }
    }

    pub fn get(&self, wid: u32) -> Option<&Workload> {
        self.table.get(wid as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, wid: u32) -> Option<&mut Workload> {
        self.table.get_mut(wid as usize)?.as_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Workload> {
        self.table.iter().flatten()
    }

    pub fn find(&self, pid: u32, start_time: u64) -> Option<u32> {
        self.by_process.get(&(pid, start_time)).copied()
    }

    pub fn len(&self) -> usize {
        self.by_process.len()
    }

    pub fn threads_bound(&self) -> usize {
        self.bound
    }

    /// Threads bound by the workloads of `t`'s user and cgroup (a walk
    /// over at most a thousand workloads, only when a thread registers).
    pub fn threads_bound_by(&self, t: Tenant) -> Holding {
        quota::sum(self.iter(), t, |w| (w.tenant, w.bound_count as u64))
    }

    /// Remember the generation an adopted or dead entry of the registry
    /// had, so that a reused id never repeats one.
    pub fn note_generation(&mut self, wid: u32, generation: u32) {
        if let Some(g) = self.generations.get_mut(wid as usize) {
            *g = (*g).max(generation);
        }
    }

    /// Register a process: new memory, installed, and its registry entry.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        maps: &HintMaps,
        pid: u32,
        uid: u32,
        tenant: Tenant,
        start_time: u64,
        cgroup_id: u64,
        allow: u32,
        grant: String,
        pidfd: Watched,
    ) -> Result<u32, Full> {
        self.cap
            .admit(tenant, self.counts.holding(tenant), 1)
            .map_err(Full::Capped)?;
        let spare = self
            .spares
            .iter()
            .position(|s| s.ready.load(Ordering::Acquire))
            .map(|i| self.spares.swap_remove(i));
        let spare_taken = spare.is_some();
        let (wid, memory_fd, memory) = match spare {
            Some(s) => (s.wid, s.memory_fd, s.memory),
            None => {
                let wid = self.free_wid().ok_or(Full::Workloads)?;
                let (fd, memory) = new_memory(maps).ok_or(Full::Workloads)?;
                (wid, fd, memory)
            }
        };
        let generation = self.generations[wid as usize].wrapping_add(1).max(1);
        let entry = hint_workload {
            pid,
            generation,
            allow,
            uid,
            start_time,
            cgroup_id,
        };
        if spare_taken {
            // In the outer map already: published now, honoured at once.
            maps.set_workload(wid, &entry)
                .map_err(|_| Full::Workloads)?;
        } else {
            let shared = memory_fd.try_clone().map_err(|_| Full::Workloads)?;
            self.installer.install(wid, shared, entry);
        }
        self.generations[wid as usize] = generation;
        self.insert(Workload {
            wid,
            generation,
            pid,
            uid,
            tenant,
            start_time,
            allow,
            grant,
            pidfd,
            memory_fd,
            memory,
            threads: (0..HINT_SLOTS).map(|_| None).collect(),
            // Slot 0 is the process-wide phase; hand out low slots first.
            free: (PROCESS_SLOT + 1..HINT_SLOTS).rev().collect(),
            bound_count: 0,
            connections: 0,
        });
        self.refill(maps);
        Ok(wid)
    }

    /// The next id after the last one handed out that is neither held
    /// nor a spare's.
    fn free_wid(&mut self) -> Option<u32> {
        let wid = (0..MAX_WORKLOADS - 1)
            .map(|i| 1 + (self.last_wid + i) % (MAX_WORKLOADS - 1))
            .find(|&w| {
                self.table[w as usize].is_none() && self.spares.iter().all(|s| s.wid != w)
            })?;
        self.last_wid = wid;
        Some(wid)
    }

    /// Queue installs until `SPARES` spares exist or are on their way.
    /// Each is a map and a mapping made here (no grace period); the
    /// installer puts it in the outer map in its turn.
    pub fn refill(&mut self, maps: &HintMaps) {
        while self.spares.len() < SPARES {
            let Some(wid) = self.free_wid() else { return };
            let Some((memory_fd, memory)) = new_memory(maps) else {
                return;
            };
            let Ok(shared) = memory_fd.try_clone() else {
                return;
            };
            let ready = Arc::new(AtomicBool::new(false));
            self.installer.preinstall(wid, shared, ready.clone());
            self.spares.push(Spare {
                wid,
                memory_fd,
                memory,
                ready,
            });
        }
    }

    /// Take over an entry of the pinned registry after a restart; its
    /// slots are all free until `claim` gives them back to their threads.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        wid: u32,
        entry: &hint_workload,
        grant: String,
        pidfd: Watched,
        memory_fd: OwnedFd,
    ) -> std::io::Result<()> {
        let memory = Mapping::new(memory_fd.as_fd(), MEMORY_BYTES)?;
        self.note_generation(wid, entry.generation);
        self.last_wid = self.last_wid.max(wid);
        self.insert(Workload {
            wid,
            generation: entry.generation,
            pid: entry.pid,
            uid: entry.uid,
            // Its owner's namespace is not recorded: charged as its uid.
            tenant: Tenant {
                uid: entry.uid,
                cgroup: charged_cgroup(entry.cgroup_id),
            },
            start_time: entry.start_time,
            allow: entry.allow,
            grant,
            pidfd,
            memory_fd,
            memory,
            threads: (0..HINT_SLOTS).map(|_| None).collect(),
            free: Vec::new(),
            bound_count: 0,
            connections: 0,
        });
        Ok(())
    }

    fn insert(&mut self, w: Workload) {
        self.by_process.insert((w.pid, w.start_time), w.wid);
        self.counts.add(w.tenant, 1);
        let wid = w.wid as usize;
        self.table[wid] = Some(w);
    }

    /// Give an adopted workload's slot back to the thread still bound to it.
    pub fn claim(&mut self, wid: u32, slot: u32, pidfd: Watched) -> bool {
        let Some(w) = self.get_mut(wid) else {
            return false;
        };
        match w.threads.get_mut(slot as usize) {
            Some(t @ None) if slot != PROCESS_SLOT => {
                *t = Some(pidfd);
                w.bound_count += 1;
                self.bound += 1;
                true
            }
            _ => false,
        }
    }

    /// After adoption: every slot no thread claimed is free and emptied.
    pub fn settle(&mut self, wid: u32) {
        if let Some(w) = self.get_mut(wid) {
            w.free = (PROCESS_SLOT + 1..HINT_SLOTS)
                .rev()
                .filter(|&s| w.threads[s as usize].is_none())
                .collect();
            for &s in &w.free {
                w.reset_slot(s);
            }
        }
    }

    /// A free slot of `wid`, emptied, holding `pidfd` from now on.
    pub fn take_slot(&mut self, wid: u32, pidfd: Watched) -> Result<u32, Full> {
        let w = self.get_mut(wid).ok_or(Full::Slots)?;
        let slot = w.free.pop().ok_or(Full::Slots)?;
        w.reset_slot(slot);
        w.threads[slot as usize] = Some(pidfd);
        w.bound_count += 1;
        self.bound += 1;
        Ok(slot)
    }

    /// Free `slot` of `wid` (its thread exited); the binding went with the
    /// thread's task storage.
    pub fn free_slot(&mut self, wid: u32, slot: u32) {
        if let Some(w) = self.get_mut(wid)
            && let Some(t) = w.threads.get_mut(slot as usize)
            && t.take().is_some()
        {
            w.reset_slot(slot);
            w.free.push(slot);
            w.bound_count -= 1;
            self.bound -= 1;
        }
    }

    /// End workload `wid`: unbind its threads and its process, drop its
    /// memory and registry entry.
    pub fn remove(&mut self, maps: &HintMaps, wid: u32) -> Option<Workload> {
        let w = self.table.get_mut(wid as usize)?.take()?;
        self.bound -= w.bound();
        self.by_process.remove(&(w.pid, w.start_time));
        self.counts.sub(w.tenant, 1);
        // A thread that outlives the workload (after an exec) must not keep
        // reading its slot; the generation check would stop it anyway.
        for pidfd in w.threads.iter().flatten() {
            let _ = maps.rebind(pidfd.as_fd(), |b| {
                if b.thread.wid == wid {
                    b.thread = NO_REF;
                }
            });
        }
        let _ = maps.rebind(w.pidfd.as_fd(), |b| {
            if b.process.wid == wid {
                b.process = NO_REF;
            }
        });
        let free = hint_workload {
            pid: 0,
            generation: w.generation,
            allow: 0,
            uid: 0,
            start_time: 0,
            cgroup_id: 0,
        };
        // At once, so the scheduler stops honouring its bindings; the
        // memory goes from the outer map in the installer's turn.
        let _ = maps.set_workload(wid, &free);
        self.installer.remove(wid, free);
        Some(w)
    }
}
