//! Loading the hint service's BPF object (`src/bpf/service.bpf.c`): the
//! hint maps, reused from their pins so that hints outlive a restart, the
//! exit tracepoint and the `hints` iterator. The scheduler object then
//! reuses these maps by fd.

use std::fs;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{AsRawLibbpf, Link, OpenMapMut, OpenObject};
use log::info;
use scx_phase::hint::tid_map::{self, PhaseMap};
use scx_phase::inspect::{
    HINTS_ITER, MEMORY_MAP, SERVICE_STATS, TASKS_MAP, WORKLOAD_STATS_MAP, WORKLOADS_MAP,
};
use scx_phase::sys;

use super::maps::HintMaps;
use crate::service::classify::NameRules;

mod skel {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/service_skel.rs"));
}
use skel::*;

/// The service object's maps that the scheduler object reads too.
pub struct SharedMaps<'a> {
    pub tid_map: BorrowedFd<'a>,
    pub memory: BorrowedFd<'a>,
    pub workloads: BorrowedFd<'a>,
    pub tasks: BorrowedFd<'a>,
    pub cpu_claims: BorrowedFd<'a>,
    pub workload_claims: BorrowedFd<'a>,
    pub claim_state: BorrowedFd<'a>,
    pub workload_stats: BorrowedFd<'a>,
}

/// The loaded service object; its maps stay pinned when it goes.
pub struct ServiceBpf<'a> {
    skel: ServiceSkel<'a>,
    _exit: Link,
    _iter: Link,
    pin_dir: PathBuf,
    /// BTF key and value types of a workload's memory (`struct hint_slots`).
    slot_types: (u32, u32),
}

/// A pinned map's layout (type, key, value, entries, flags).
type Layout = (u32, u32, u32, u32, u32);

/// What the kernel says about a pinned map.
fn pinned_layout(name: &str, pinned: BorrowedFd<'_>) -> Result<Layout> {
    // SAFETY: bpf_map_info is plain data; the kernel fills at most `len` bytes.
    let mut info: libbpf_rs::libbpf_sys::bpf_map_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as u32;
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_get_info_by_fd(pinned.as_raw_fd(), &mut info, &mut len)
    };
    if r != 0 {
        bail!("the pinned {name} is not a BPF map");
    }
    Ok((
        info.type_,
        info.key_size,
        info.value_size,
        info.max_entries,
        info.map_flags,
    ))
}

/// What a pinned map of another layout gets.
#[derive(Clone, Copy)]
enum OtherLayout {
    /// Refused: it holds state (hints, bindings) a new map would lose.
    Refuse,
    /// Replaced: it holds figures only, which start again from zero.
    Replace,
}

/// Reuse the map pinned at `path` if there is one; whether it was reused.
fn reuse_pinned(
    map: &mut OpenMapMut<'_>,
    path: &Path,
    name: &str,
    other: OtherLayout,
) -> Result<bool> {
    let fd = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let got = pinned_layout(name, fd.as_fd())?;
    let wanted = (
        map.map_type() as u32,
        map.key_size(),
        map.value_size(),
        map.max_entries(),
        map.map_flags(),
    );
    if got != wanted {
        let what = format!(
            "the pinned {name} has another layout (type, key, value, entries, flags {got:?}, expected {wanted:?}): it was made by another version of scx_phase"
        );
        match other {
            OtherLayout::Refuse => {
                bail!("{what}; stop it and remove the pin folder to start afresh")
            }
            OtherLayout::Replace => {
                log::warn!("{what}; replacing it (its figures start from zero)");
                fs::remove_file(path)
                    .with_context(|| format!("cannot unpin {}", path.display()))?;
                return Ok(false);
            }
        }
    }
    map.reuse_fd(fd.as_fd())
        .with_context(|| format!("cannot reuse {}", path.display()))?;
    Ok(true)
}

/// Drop the tid-map hints of threads that exited while nothing watched
/// (their tids could be reused). Returns (kept, dropped).
fn drop_dead_threads(map: &PhaseMap) -> (usize, usize) {
    let Ok(entries) = map.entries() else {
        return (0, 0);
    };
    let mut dropped = 0;
    for (tid, _) in &entries {
        if !tid_map::thread_exists(*tid) && map.clear(*tid).unwrap_or(false) {
            dropped += 1;
        }
    }
    (entries.len() - dropped, dropped)
}

impl<'a> ServiceBpf<'a> {
    /// Open, configure and load the object, reusing or pinning its maps in
    /// `pin_dir`, and attach its programs.
    pub fn load(
        pin_dir: &Path,
        max_hints: u32,
        rules: &NameRules,
        verbose: bool,
        open_object: &'a mut MaybeUninit<OpenObject>,
    ) -> Result<Self> {
        let mut builder = ServiceSkelBuilder::default();
        builder.obj_builder.debug(verbose);
        let mut open = builder
            .open(open_object)
            .context("cannot open the hint service's BPF object")?;
        // scx's common header brings a probe for sched_ext attach; the
        // service has no scheduler to probe.
        open.progs.scx_lib_init_probe.set_autoload(false);
        let rodata = open
            .maps
            .rodata_data
            .as_mut()
            .context("the hint service's BPF object has no read-only data")?;
        crate::write_rules!(rodata, rules);

        fs::create_dir_all(pin_dir)
            .with_context(|| format!("cannot create {}", pin_dir.display()))?;
        let map_path = tid_map::map_path(pin_dir);
        let tid_map_pinned = match PhaseMap::open(&map_path) {
            Ok(pinned) => {
                open.maps.phase_map.set_max_entries(pinned.capacity())?;
                open.maps
                    .phase_map
                    .reuse_fd(pinned.as_fd())
                    .with_context(|| format!("cannot reuse {}", map_path.display()))?;
                let (kept, dropped) = drop_dead_threads(&pinned);
                info!(
                    "reusing pinned phase map {} ({kept} hints kept, {dropped} of exited threads dropped, capacity {})",
                    map_path.display(),
                    pinned.capacity()
                );
                true
            }
            Err(tid_map::Error::NotFound { .. }) => {
                open.maps.phase_map.set_max_entries(max_hints)?;
                false
            }
            Err(e) => bail!("{e}"),
        };
        // libbpf drops the inner map's definition once the outer map
        // exists, so take its BTF types now.
        let outer = open.maps.hint_memory.as_libbpf_object();
        // SAFETY: reads libbpf's bookkeeping of a map that lives in `open`.
        let slot_types = unsafe {
            let inner = libbpf_rs::libbpf_sys::bpf_map__inner_map(outer.as_ptr());
            if inner.is_null() {
                bail!("the hint service's BPF object has no inner map for its hint memory");
            }
            (
                libbpf_rs::libbpf_sys::bpf_map__btf_key_type_id(inner),
                libbpf_rs::libbpf_sys::bpf_map__btf_value_type_id(inner),
            )
        };
        let memory_pinned = reuse_pinned(
            &mut open.maps.hint_memory,
            &pin_dir.join(MEMORY_MAP),
            MEMORY_MAP,
            OtherLayout::Refuse,
        )?;
        let workloads_pinned = reuse_pinned(
            &mut open.maps.hint_workloads,
            &pin_dir.join(WORKLOADS_MAP),
            WORKLOADS_MAP,
            OtherLayout::Refuse,
        )?;
        let tasks_pinned = reuse_pinned(
            &mut open.maps.hint_tasks,
            &pin_dir.join(TASKS_MAP),
            TASKS_MAP,
            OtherLayout::Refuse,
        )?;
        let stats_pinned = reuse_pinned(
            &mut open.maps.workload_stats,
            &pin_dir.join(WORKLOAD_STATS_MAP),
            WORKLOAD_STATS_MAP,
            OtherLayout::Replace,
        )?;

        let mut skel = open
            .load()
            .context("cannot load the hint service's BPF object")?;
        let pin = |map: &mut libbpf_rs::MapMut<'_>, name: &str| -> Result<()> {
            let path = pin_dir.join(name);
            map.pin(&path)
                .with_context(|| format!("cannot pin {}", path.display()))
        };
        if !tid_map_pinned {
            pin(&mut skel.maps.phase_map, tid_map::MAP_NAME)?;
        }
        if !memory_pinned {
            pin(&mut skel.maps.hint_memory, MEMORY_MAP)?;
        }
        if !workloads_pinned {
            pin(&mut skel.maps.hint_workloads, WORKLOADS_MAP)?;
        }
        if !tasks_pinned {
            pin(&mut skel.maps.hint_tasks, TASKS_MAP)?;
        }
        if !stats_pinned {
            pin(&mut skel.maps.workload_stats, WORKLOAD_STATS_MAP)?;
        }
        // The counters start afresh with each run.
        let _ = fs::remove_file(pin_dir.join(SERVICE_STATS));
        pin(&mut skel.maps.service_stats, SERVICE_STATS)?;

        let exit = skel
            .progs
            .forget_exiting_thread
            .attach()
            .context("cannot attach the thread-exit tracepoint")?;
        let mut iter = skel
            .progs
            .dump_hints
            .attach_iter_with_opts(libbpf_rs::IterOpts::None)
            .context("cannot attach the hints iterator")?;
        let iter_path = pin_dir.join(HINTS_ITER);
        let _ = fs::remove_file(&iter_path);
        iter.pin(&iter_path)
            .with_context(|| format!("cannot pin {}", iter_path.display()))?;
        Ok(ServiceBpf {
            skel,
            _exit: exit,
            _iter: iter,
            pin_dir: pin_dir.to_path_buf(),
            slot_types,
        })
    }

    /// The maps the scheduler object reuses.
    pub fn shared_maps(&self) -> SharedMaps<'_> {
        let m = &self.skel.maps;
        SharedMaps {
            tid_map: m.phase_map.as_fd(),
            memory: m.hint_memory.as_fd(),
            workloads: m.hint_workloads.as_fd(),
            tasks: m.hint_tasks.as_fd(),
            cpu_claims: m.cpu_claims.as_fd(),
            workload_claims: m.workload_claims.as_fd(),
            claim_state: m.claim_state.as_fd(),
            workload_stats: m.workload_stats.as_fd(),
        }
    }

    /// Owned handles on the maps, and what creating a workload's memory
    /// needs (the object's BTF), for the service thread.
    pub fn hint_maps(&self) -> Result<HintMaps> {
        let m = &self.skel.maps;
        let dup = |fd: BorrowedFd<'_>| -> Result<OwnedFd> {
            fd.try_clone_to_owned().context("cannot duplicate a map fd")
        };
        // The object's BTF, so that bpftool shows a workload's slots with
        // named fields.
        let obj = self.skel.object().as_libbpf_object();
        // SAFETY: the object lives as long as `self`; this reads libbpf's
        // bookkeeping.
        let btf_fd = unsafe {
            let btf = libbpf_rs::libbpf_sys::bpf_object__btf(obj.as_ptr());
            if btf.is_null() {
                bail!("the hint service's BPF object has no BTF");
            }
            libbpf_rs::libbpf_sys::btf__fd(btf)
        };
        if btf_fd < 0 {
            bail!("the hint service's BPF object's BTF is not loaded");
        }
        let (key_type, value_type) = self.slot_types;
        // SAFETY: libbpf owns this fd for the object's life; we only dup it.
        let btf = unsafe { BorrowedFd::borrow_raw(btf_fd) };
        Ok(HintMaps {
            tid_map: dup(m.phase_map.as_fd())?,
            memory: dup(m.hint_memory.as_fd())?,
            workloads: dup(m.hint_workloads.as_fd())?,
            tasks: dup(m.hint_tasks.as_fd())?,
            stats: dup(m.service_stats.as_fd())?,
            cpu_claims: dup(m.cpu_claims.as_fd())?,
            workload_claims: dup(m.workload_claims.as_fd())?,
            claim_state: dup(m.claim_state.as_fd())?,
            workload_stats: dup(m.workload_stats.as_fd())?,
            btf: dup(btf)?,
            key_type,
            value_type,
            pin_dir: self.pin_dir.clone(),
        })
    }
}
