//! Checks made before loading, each failing with one line that says what
//! is wrong and what to do.

use std::fs;
use std::path::Path;

use anyhow::{Result, bail};
use scx_phase::bpffs;

use crate::loader::btf::Btf;
use crate::service::identity;

const SCHED_EXT: &str = "/sys/kernel/sched_ext";

/// The kernel release, for messages.
pub(crate) fn kernel_release() -> String {
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
            "this kernel ({}) has no sched_ext: scx_phase needs Linux {OLDEST_KERNEL} or newer built \
             with CONFIG_SCHED_CLASS_EXT=y (scripts/vm.sh runs one in a VM)",
            kernel_release()
        );
    }
    Ok(())
}

/// The kernel functions the scheduler calls, each with the names older
/// kernels gave it: it needs one of each. 6.12 is the floor; the names of
/// 6.13 (the `dispatch` verbs renamed) and of 6.19 (the wrappers that pack
/// their arguments) are chosen at load time by scx's compat headers. Newer
/// functions with a fallback in the scheduler itself (scx_bpf_now,
/// scx_bpf_select_cpu_and, scx_bpf_dsq_peek, scx_bpf_task_set_slice, ...)
/// need no check here.
const REQUIRED_KFUNCS: &[&[&str]] = &[
    &["scx_bpf_create_dsq"],
    &["scx_bpf_dsq_insert", "scx_bpf_dispatch"],
    &[
        "scx_bpf_dsq_insert_vtime",
        "__scx_bpf_dsq_insert_vtime",
        "scx_bpf_dispatch_vtime",
    ],
    &["scx_bpf_dsq_move_to_local", "scx_bpf_consume"],
    &["scx_bpf_dsq_move", "scx_bpf_dispatch_from_dsq"],
    &["scx_bpf_dsq_nr_queued"],
    &["scx_bpf_kick_cpu"],
    &["scx_bpf_pick_any_cpu"],
    &["scx_bpf_pick_idle_cpu"],
    &["scx_bpf_select_cpu_dfl"],
    &["scx_bpf_task_cpu"],
    &["scx_bpf_test_and_clear_cpu_idle"],
    &["bpf_iter_scx_dsq_new"],
];

/// The oldest kernel the scheduler runs on, for messages.
pub const OLDEST_KERNEL: &str = "6.12";

/// Which of REQUIRED_KFUNCS `has` says are missing, by their newest name.
fn missing_kfuncs(has: impl Fn(&str) -> bool) -> Vec<&'static str> {
    REQUIRED_KFUNCS
        .iter()
        .filter(|names| !names.iter().any(|f| has(f)))
        .map(|names| names[0])
        .collect()
}

/// A sched_ext too old for this scheduler, named in one line rather than
/// left to a verifier log.
pub fn require_kfuncs() -> Result<()> {
    let Some(btf) = Btf::kernel() else {
        // No BTF to ask: loading will say what it lacks.
        return Ok(());
    };
    let missing = missing_kfuncs(|f| btf.has_func(f));
    if !missing.is_empty() {
        bail!(
            "this kernel ({})'s sched_ext lacks {}, which scx_phase calls: it needs Linux {OLDEST_KERNEL} or newer",
            kernel_release(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// A load that failed on a kernel whose BTF pahole older than 1.26 wrote:
/// one line naming the cause, instead of libbpf's "func_proto
/// incompatible". Any other failure is returned as it was.
pub fn explain_load_failure(e: anyhow::Error) -> anyhow::Error {
    match Btf::kernel().map(|b| b.malformed_kfuncs()) {
        Some(bad) if !bad.is_empty() => anyhow::anyhow!(malformed_line(&kernel_release(), &bad)),
        _ => e,
    }
}

fn malformed_line(release: &str, bad: &[String]) -> String {
    format!(
        "this kernel ({release}) was built with pahole older than 1.26: the BTF prototypes of {} keep \
         their implicit aux argument, so no scheduler that calls them can load; boot a kernel built \
         with pahole 1.26 or newer",
        bad.join(", ")
    )
}

/// What sched_ext says: "enabled", "disabled", ..., or "absent" on a
/// kernel without it; and the root scheduler's name when one is attached.
/// The one reader of that state, for preflight and `status` alike.
pub fn sched_ext_state() -> (String, Option<String>) {
    let read = |f: &str| {
        fs::read_to_string(Path::new(SCHED_EXT).join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    match read("state") {
        None => ("absent".into(), None),
        Some(state) => (state, read("root/ops").filter(|o| !o.is_empty())),
    }
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

/// What identifying the hint service's clients needs of the kernel. Every
/// sched_ext kernel has it; the hint service alone may run on others.
pub fn require_service_kernel() -> Result<()> {
    if let Some(line) = service_line(&kernel_release(), &identity::kernel_lacks()) {
        bail!("{line}");
    }
    Ok(())
}

fn service_line(release: &str, lacks: &[&identity::Need]) -> Option<String> {
    let what: Vec<String> = lacks
        .iter()
        .map(|n| format!("{} (Linux {}: {})", n.name, n.since, n.why))
        .collect();
    (!what.is_empty()).then(|| {
        format!(
            "this kernel ({release}) lacks {}, which the hint service needs to know its clients: it needs Linux {} or newer",
            what.join(" and "),
            identity::THREAD_PIDFD.since
        )
    })
}

/// What the hint service alone needs.
pub fn check_for_service(pin_dir: &Path) -> Result<()> {
    require_root()?;
    require_service_kernel()?;
    require_bpffs(pin_dir)
}

/// Everything the loader needs, in the order a user would fix them.
pub fn check_for_loading(pin_dir: &Path) -> Result<()> {
    require_root()?;
    require_sched_ext()?;
    require_kfuncs()?;
    require_service_kernel()?;
    require_no_other_scheduler()?;
    require_bpffs(pin_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_without_some_kfuncs_gets_them_named() {
        let old = |f: &str| f != "scx_bpf_dsq_nr_queued" && f != "bpf_iter_scx_dsq_new";
        assert_eq!(
            missing_kfuncs(old),
            ["scx_bpf_dsq_nr_queued", "bpf_iter_scx_dsq_new"]
        );
        assert!(missing_kfuncs(|_| true).is_empty());
    }

    #[test]
    fn a_6_12_kernel_has_every_function_under_its_old_name() {
        // 6.12's sched_ext: the dispatch verbs, no insert, move or
        // task_set_slice yet.
        let newer = [
            "scx_bpf_dsq_insert",
            "__scx_bpf_dsq_insert_vtime",
            "scx_bpf_dsq_insert_vtime",
            "scx_bpf_dsq_move_to_local",
            "scx_bpf_dsq_move",
            "scx_bpf_task_set_slice",
        ];
        assert!(missing_kfuncs(|f| !newer.contains(&f)).is_empty());
        // A kernel with neither name of one gets the newest named.
        let neither = |f: &str| f != "scx_bpf_consume" && f != "scx_bpf_dsq_move_to_local";
        assert_eq!(missing_kfuncs(neither), ["scx_bpf_dsq_move_to_local"]);
    }

    #[test]
    fn a_kernel_from_an_old_pahole_is_named_in_one_line() {
        let bad = [
            "scx_bpf_kick_cpu".to_string(),
            "scx_bpf_dsq_insert".to_string(),
        ];
        let line = malformed_line("6.17.0-5-generic", &bad);
        assert_eq!(
            line,
            "this kernel (6.17.0-5-generic) was built with pahole older than 1.26: the BTF \
             prototypes of scx_bpf_kick_cpu, scx_bpf_dsq_insert keep their implicit aux argument, \
             so no scheduler that calls them can load; boot a kernel built with pahole 1.26 or newer"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_kernel_without_thread_pidfds_is_named_for_the_service() {
        assert_eq!(service_line("6.8.0", &[]), None);
        assert_eq!(
            service_line("6.8.0", &[&identity::THREAD_PIDFD]).unwrap(),
            "this kernel (6.8.0) lacks PIDFD_THREAD (Linux 6.9: a pidfd for one thread, the key of its hint), \
             which the hint service needs to know its clients: it needs Linux 6.9 or newer"
        );
    }

    #[test]
    fn this_hosts_btf_is_read() {
        // Every kernel with BPF has the bpf_task_acquire kfunc; without
        // sched_ext (as on the build hosts) it has none of sched_ext's.
        let btf = Btf::kernel().expect("the kernel's BTF");
        assert!(btf.has_func("bpf_task_acquire"));
        assert!(!btf.has_func("no_such_function_anywhere"));
        let sched_ext = std::path::Path::new(SCHED_EXT).exists();
        assert_eq!(btf.has_func("scx_bpf_kick_cpu"), sched_ext);
    }
}
