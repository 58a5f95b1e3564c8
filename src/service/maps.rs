//! The service thread's handles on the hint maps, and every write it makes
//! to them: workloads' memory and registry entries, task bindings (keyed
//! by a pidfd, so a binding can only reach the task the pidfd holds), and
//! one-shot tid-map hints.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use scx_phase::bpf_intf::{
    claim_state, cpu_claim, hint_dump, hint_ref, hint_task, hint_workload, phase_hint,
    scx_phase_claim_limits_SCX_PHASE_CLAIM_MAX_CPUS as CLAIM_MAX_CPUS,
    scx_phase_hint_limits_SCX_PHASE_HINT_SLOTS as HINT_SLOTS, service_counters, workload_claim,
    workload_phase_stats,
};
use scx_phase::inspect;
use scx_phase::stats::NR_SLOTS;
use scx_phase::sys;

/// Bytes of one workload's hint memory.
pub const MEMORY_BYTES: usize = HINT_SLOTS as usize * 8;

pub struct HintMaps {
    pub tid_map: OwnedFd,
    pub memory: OwnedFd,
    pub workloads: OwnedFd,
    pub tasks: OwnedFd,
    pub stats: OwnedFd,
    pub cpu_claims: OwnedFd,
    pub workload_claims: OwnedFd,
    pub claim_state: OwnedFd,
    pub workload_stats: OwnedFd,
    pub btf: OwnedFd,
    pub key_type: u32,
    pub value_type: u32,
    pub pin_dir: PathBuf,
}

fn errno(ret: i32) -> io::Error {
    io::Error::from_raw_os_error(if ret < 0 { -ret } else { libc::EIO })
}

impl HintMaps {
    /// A new workload's memory: an mmapable array of slots, with the
    /// object's BTF so that bpftool names its fields.
    pub fn create_memory(&self) -> io::Result<OwnedFd> {
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            btf_fd: self.btf.as_raw_fd() as u32,
            btf_key_type_id: self.key_type,
            btf_value_type_id: self.value_type,
            map_flags: libbpf_rs::libbpf_sys::BPF_F_MMAPABLE,
            ..Default::default()
        };
        // SAFETY: a static name and valid opts.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_create(
                libbpf_rs::libbpf_sys::BPF_MAP_TYPE_ARRAY,
                c"hint_slots".as_ptr(),
                4,
                std::mem::size_of::<phase_hint>() as u32,
                HINT_SLOTS,
                &opts,
            )
        };
        if fd < 0 {
            return Err(errno(fd));
        }
        // SAFETY: a fresh fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn remove_memory(&self, wid: u32) -> io::Result<()> {
        sys::map_delete(self.memory.as_fd(), &wid).map(|_| ())
    }

    /// A thread that installs and removes workloads' memory in the outer
    /// map. Each such update waits for an RCU grace period (the kernel makes
    /// sure no BPF program still sees the old value): 5-20 ms on an idle
    /// host, 320-575 ms with 32 CPU hogs on 16 vCPUs. The event loop must
    /// not wait, and a registration need not (spares, workloads.rs). Jobs run in order, so a removal and a reuse of the
    /// same id never swap.
    pub fn spawn_installer(&self) -> io::Result<Installer> {
        let memory = self.memory.try_clone()?;
        let workloads = self.workloads.try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("hint-installer".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        // The registry entry last: the scheduler honours
                        // the workload's bindings from then on.
                        Job::Install(wid, fd, entry) => {
                            if sys::map_update(memory.as_fd(), &wid, &fd.as_raw_fd()).is_ok() {
                                let _ = sys::map_update(workloads.as_fd(), &wid, &entry);
                            }
                        }
                        Job::Preinstall(wid, fd, ready) => {
                            if sys::map_update(memory.as_fd(), &wid, &fd.as_raw_fd()).is_ok() {
                                ready.store(true, std::sync::atomic::Ordering::Release);
                            }
                        }
                        Job::Remove(wid, entry) => {
                            let _ = sys::map_update(workloads.as_fd(), &wid, &entry);
                            let _ = sys::map_delete(memory.as_fd(), &wid);
                        }
                    }
                }
            })?;
        Ok(Installer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Workload `wid`'s memory, from the pinned outer map (after a restart).
    pub fn memory_of(&self, wid: u32) -> io::Result<OwnedFd> {
        let id: u32 = sys::map_lookup(self.memory.as_fd(), &wid)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        // SAFETY: a plain id lookup.
        let fd = unsafe { libbpf_rs::libbpf_sys::bpf_map_get_fd_by_id(id) };
        if fd < 0 {
            return Err(errno(fd));
        }
        // SAFETY: a fresh fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn workload(&self, wid: u32) -> io::Result<hint_workload> {
        sys::map_lookup(self.workloads.as_fd(), &wid)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    pub fn set_workload(&self, wid: u32, w: &hint_workload) -> io::Result<()> {
        sys::map_update(self.workloads.as_fd(), &wid, w)
    }

    /// The binding of the task `pidfd` holds.
    pub fn binding(&self, pidfd: BorrowedFd<'_>) -> io::Result<Option<hint_task>> {
        sys::map_lookup(self.tasks.as_fd(), &pidfd.as_raw_fd())
    }

    /// Change the part of a task's binding that `edit` picks, keeping the
    /// other; a binding left empty is deleted. Only this thread writes
    /// bindings, so read-modify-write is safe.
    pub fn rebind(
        &self,
        pidfd: BorrowedFd<'_>,
        edit: impl FnOnce(&mut hint_task),
    ) -> io::Result<()> {
        let key = pidfd.as_raw_fd();
        let mut b = self.binding(pidfd)?.unwrap_or(hint_task {
            thread: NO_REF,
            process: NO_REF,
        });
        edit(&mut b);
        if b.thread.wid == 0 && b.process.wid == 0 {
            sys::map_delete(self.tasks.as_fd(), &key).map(|_| ())
        } else {
            sys::map_update(self.tasks.as_fd(), &key, &b)
        }
    }

    pub fn tid_hint(&self, tid: u32) -> io::Result<Option<phase_hint>> {
        sys::map_lookup(self.tid_map.as_fd(), &tid)
    }

    pub fn set_tid_hint(&self, tid: u32, hint: &phase_hint) -> io::Result<()> {
        sys::map_update(self.tid_map.as_fd(), &tid, hint)
    }

    pub fn clear_tid_hint(&self, tid: u32) -> io::Result<bool> {
        sys::map_delete(self.tid_map.as_fd(), &tid)
    }

    pub fn publish(&self, c: &service_counters) -> io::Result<()> {
        sys::map_update(self.stats.as_fd(), &0u32, c)
    }

    /// Zero workload `wid`'s figures (a new id starts from nothing).
    pub fn reset_workload_stats(&self, wid: u32) -> io::Result<()> {
        for slot in 0..NR_SLOTS as u32 {
            inspect::set_workload_stats(
                self.workload_stats.as_fd(),
                wid,
                slot,
                workload_phase_stats::default(),
            )?;
        }
        Ok(())
    }

    /// Workload `wid`'s figures in phase slot `slot`.
    pub fn workload_stats(&self, wid: u32, slot: u32) -> io::Result<workload_phase_stats> {
        inspect::workload_stats(self.workload_stats.as_fd(), wid, slot)
    }

    /// Publish the claims: each CPU's claimant in `cpus` (every CPU in
    /// `all` gets an entry), each workload's CPUs in `by_wid` (workloads in
    /// `cleared` get none), then a new generation for the scheduler.
    pub fn write_claims(
        &self,
        all: &[u32],
        cpus: &std::collections::BTreeMap<u32, (u32, bool)>,
        by_wid: &std::collections::BTreeMap<u32, Vec<u32>>,
        cleared: &[u32],
        generation: u64,
    ) -> io::Result<()> {
        for &cpu in all {
            let (wid, exclusive) = cpus.get(&cpu).copied().unwrap_or((0, false));
            let v = cpu_claim {
                wid,
                exclusive: u32::from(exclusive),
            };
            sys::map_update(self.cpu_claims.as_fd(), &cpu, &v)?;
        }
        for &wid in cleared {
            if !by_wid.contains_key(&wid) {
                let none = workload_claim {
                    nr_cpus: 0,
                    _pad: 0,
                    cpus: [0; CLAIM_MAX_CPUS as usize],
                };
                sys::map_update(self.workload_claims.as_fd(), &wid, &none)?;
            }
        }
        for (&wid, list) in by_wid {
            let mut v = workload_claim {
                nr_cpus: list.len().min(CLAIM_MAX_CPUS as usize) as u32,
                _pad: 0,
                cpus: [0; CLAIM_MAX_CPUS as usize],
            };
            for (d, s) in v.cpus.iter_mut().zip(list) {
                *d = *s as u16;
            }
            sys::map_update(self.workload_claims.as_fd(), &wid, &v)?;
        }
        sys::map_update(self.claim_state.as_fd(), &0u32, &claim_state { generation })
    }

    /// Every task's hint and binding, from the pinned iterator.
    pub fn dump(&self) -> io::Result<Vec<hint_dump>> {
        inspect::read_hints(&self.pin_dir)
    }
}

/// An empty binding.
pub const NO_REF: hint_ref = hint_ref {
    wid: 0,
    slot: 0,
    generation: 0,
    _pad: 0,
};

enum Job {
    Install(u32, OwnedFd, hint_workload),
    /// Memory put in the outer map ahead of a registration, its registry
    /// entry left free; `ready` once it is in.
    Preinstall(u32, OwnedFd, std::sync::Arc<std::sync::atomic::AtomicBool>),
    Remove(u32, hint_workload),
}

/// The queue of outer-map updates; finishes them all when dropped.
pub struct Installer {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Installer {
    /// Install `memory` as workload `wid`'s, then publish `entry`.
    pub fn install(&self, wid: u32, memory: OwnedFd, entry: hint_workload) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Install(wid, memory, entry));
        }
    }

    /// Install `memory` as id `wid`'s with no registry entry: a spare that
    /// a registration can take without waiting (workloads.rs). `ready` is
    /// set once it is in the outer map.
    pub fn preinstall(
        &self,
        wid: u32,
        memory: OwnedFd,
        ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Preinstall(wid, memory, ready));
        }
    }

    /// Publish `entry` (a freed id), then remove the memory.
    pub fn remove(&self, wid: u32, entry: hint_workload) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Remove(wid, entry));
        }
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
