//! Checks made before loading, each failing with one line that says what
//! is wrong and what to do.

use std::fs;
use std::path::Path;

use anyhow::{Result, bail};
use scx_phase::bpffs;

const SCHED_EXT: &str = "/sys/kernel/sched_ext";

/// The kernel release, for messages.
fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid never fails.
    if unsafe { libc::geteuid() } != 0 {
        bail!("scx_phase must run as root to load a scheduler (try: sudo scx_phase)");
    }
    Ok(())
}

pub fn require_sched_ext() -> Result<()> {
    if !Path::new(SCHED_EXT).exists() {
        bail!(
            "this kernel ({}) has no sched_ext: scx_phase needs Linux 6.12 or newer built with \
             CONFIG_SCHED_CLASS_EXT=y (scripts/vm.sh runs one in a VM)",
            kernel_release()
        );
    }
    Ok(())
}

/// The sched_ext state ("disabled", "enabled", ...) and the attached ops.
pub fn sched_ext_state() -> (String, Option<String>) {
    let state = fs::read_to_string(format!("{SCHED_EXT}/state"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let ops = fs::read_to_string(format!("{SCHED_EXT}/root/ops"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    (state, ops)
}

pub fn require_no_other_scheduler() -> Result<()> {
    let (state, ops) = sched_ext_state();
    if state != "disabled" {
        bail!(
            "another sched_ext scheduler ({}) is already attached (state: {state}); stop it first",
            ops.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}

/// Whether scx_phase is the scheduler attached right now.
pub fn scx_phase_attached() -> bool {
    let (state, ops) = sched_ext_state();
    state == "enabled" && ops.is_some_and(|o| o.starts_with("scx_phase"))
}

pub fn require_bpffs(pin_dir: &Path) -> Result<()> {
    if let Some(why) = bpffs::missing_bpffs(pin_dir) {
        bail!("{why}");
    }
    Ok(())
}

/// What the hint service alone needs.
pub fn check_for_service(pin_dir: &Path) -> Result<()> {
    require_root()?;
    require_bpffs(pin_dir)
}

/// Everything the loader needs, in the order a user would fix them.
pub fn check_for_loading(pin_dir: &Path) -> Result<()> {
    require_root()?;
    require_sched_ext()?;
    require_no_other_scheduler()?;
    require_bpffs(pin_dir)
}
