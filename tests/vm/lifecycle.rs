//! Attach, detach on SIGINT and SIGKILL, and refusing a second scheduler.

use std::time::Duration;

use crate::support::*;

#[test]
fn attaches_under_its_own_name() {
    let loader = Loader::start(&[]);
    assert_eq!(state(), "enabled");
    assert!(ops().starts_with("scx_phase"), "ops is {:?}", ops());
    println!(
        "MEASURED attach: {:.0} ms from exec to sched_ext 'enabled' (ops {})",
        ms(loader.attach_time),
        ops()
    );
}

#[test]
fn sigint_detaches_within_a_second_and_exits_0() {
    let mut loader = Loader::start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    loader.signal(libc::SIGINT);
    let detach = wait_state("disabled", Duration::from_secs(1));
    let status = loader.wait(Duration::from_secs(5));
    let log = loader.log();
    let detach = detach.unwrap_or_else(|| panic!("still {} 1 s after SIGINT: {log}", state()));
    assert_eq!(status.code(), Some(0), "{log}");
    // The kernel's exit reason is printed.
    assert!(log.contains("EXIT: unregistered from user space"), "{log}");
    println!("MEASURED detach after SIGINT: {:.1} ms", ms(detach));
}

#[test]
fn sigterm_also_detaches_cleanly() {
    let mut loader = Loader::start(&[]);
    loader.signal(libc::SIGTERM);
    assert!(wait_state("disabled", Duration::from_secs(1)).is_some());
    assert_eq!(loader.wait(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn sigkill_detaches_within_a_second_and_kills_nothing_else() {
    // Some work that must survive: sleepers and CPU spinners.
    let mut others = vec![sleeper(), sleeper()];
    for _ in 0..2 {
        others.push(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("spinner"),
        );
    }
    let mut loader = Loader::start(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<(i32, String)> = user_pids()
        .into_iter()
        .filter(|&p| p != loader.pid())
        .map(|p| (p, comm(p)))
        .collect();

    loader.signal(libc::SIGKILL);
    let detach = wait_state("disabled", Duration::from_secs(1));
    let status = loader.wait(Duration::from_secs(5));
    let detach = detach.unwrap_or_else(|| panic!("still {} 1 s after SIGKILL", state()));
    assert_eq!(status.code(), None, "killed by a signal");

    // Give a lost task time to show up as dead.
    std::thread::sleep(Duration::from_millis(300));
    let dead: Vec<&(i32, String)> = before.iter().filter(|(p, _)| !alive(*p)).collect();
    assert!(
        dead.is_empty(),
        "processes gone after SIGKILL of the loader: {dead:?}"
    );
    for c in &mut others {
        assert!(c.try_wait().unwrap().is_none(), "a test child died");
        let _ = c.kill();
        let _ = c.wait();
    }
    println!(
        "MEASURED detach after SIGKILL: {:.1} ms; {} other processes all alive",
        ms(detach),
        before.len()
    );
}

#[test]
fn a_second_scheduler_is_refused_and_the_first_keeps_running() {
    let loader = Loader::start(&[]);
    let o = scx_phase(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("already attached"), "{err}");
    assert!(
        err.contains("scx_phase"),
        "names the attached scheduler: {err}"
    );
    assert_eq!(state(), "enabled");
    drop(loader);
}

#[test]
fn no_bpffs_under_the_pin_dir_is_a_clear_error() {
    require_sched_ext();
    let o = scx_phase(&["--pin-dir", "/tmp/not-bpffs/scx_phase"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("bpffs is not mounted"), "{err}");
    assert_eq!(state(), "disabled", "nothing was attached");
}

#[test]
fn cpu_hotplug_makes_it_restart_itself() {
    let cpu1 = "/sys/devices/system/cpu/cpu1/online";
    assert!(
        std::path::Path::new(cpu1).exists(),
        "the VM needs a second, hot-pluggable CPU"
    );
    let mut loader = Loader::start(&[]);
    let set = |v: &str| std::fs::write(cpu1, v).expect("write cpu1/online");

    set("0");
    let back = wait_for_reattach(&loader);
    set("1");
    let again = wait_for_reattach(&loader);
    assert!(
        loader.child.try_wait().unwrap().is_none(),
        "the loader exited"
    );
    let log = loader.log();
    assert!(log.matches("asked for a restart").count() >= 2, "{log}");
    loader.signal(libc::SIGINT);
    assert_eq!(loader.wait(Duration::from_secs(5)).code(), Some(0));
    println!(
        "MEASURED hotplug restart: re-attached {:.0} ms after offlining CPU 1, {:.0} ms after onlining it",
        ms(back),
        ms(again)
    );
}

/// Wait until the kernel has kicked the scheduler out and the loader has
/// attached a new instance.
fn wait_for_reattach(loader: &Loader) -> Duration {
    let t0 = std::time::Instant::now();
    let attached = || state() == "enabled" && ops().starts_with("scx_phase");
    let restarts = loader.log().matches("asked for a restart").count();
    loop {
        if attached() && loader.log().matches("asked for a restart").count() > restarts {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no re-attach after hotplug (state {}): {}",
            state(),
            loader.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `scx_phase status`: its text and exit code.
fn status() -> (Option<i32>, String) {
    let out = scx_phase(&["status"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn status_says_what_runs_since_when_and_why_it_last_stopped() {
    let mut loader = Loader::start(&["--boost-budget-pct", "70"]);
    let (code, text) = status();
    assert_eq!(code, Some(0), "attached, yet: {text}");
    assert!(text.starts_with("attached: yes (scx_phase"), "{text}");
    assert!(
        text.contains(&format!("loader: pid {} (running)", loader.pid())),
        "{text}"
    );
    assert!(text.contains("flags: --boost-budget-pct 70"), "{text}");
    assert!(text.contains("attached since: "), "{text}");
    assert!(text.contains("last exit: none"), "{text}");

    // A hotplug restart is counted, with the kernel's reason.
    let cpu1 = "/sys/devices/system/cpu/cpu1/online";
    std::fs::write(cpu1, "0").expect("offline CPU 1");
    let t0 = std::time::Instant::now();
    let mut restarted = String::new();
    while t0.elapsed() < Duration::from_secs(30) {
        let (code, text) = status();
        if code == Some(0) && text.contains("restarts: 1") {
            restarted = text;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(cpu1, "1").expect("online CPU 1");
    assert!(
        !restarted.is_empty(),
        "no restart in status: {}",
        status().1
    );
    assert!(restarted.contains("last exit: "), "{restarted}");
    assert!(!restarted.contains("last exit: none"), "{restarted}");
    // Let the onlining's own restart finish before stopping.
    std::thread::sleep(Duration::from_secs(3));

    loader.signal(libc::SIGINT);
    assert_eq!(loader.wait(Duration::from_secs(5)).code(), Some(0));
    let (code, text) = status();
    println!("MEASURED scx_phase status after SIGINT (exit {code:?}):\n{restarted}---\n{text}");
    assert_eq!(code, Some(1), "not attached, yet exit 0: {text}");
    assert!(
        text.starts_with("attached: no (sched_ext disabled)"),
        "{text}"
    );
    assert!(text.contains("(gone)"), "{text}");
    assert!(text.contains("last attached: "), "{text}");
    assert!(
        text.contains("workloads: none (the loader is gone)"),
        "{text}"
    );
    assert!(
        text.contains("EXIT: unregistered from user space"),
        "{text}"
    );
}

/// What the running kernel lacks is named once at start and in `status`:
/// nothing on 7.1 and newer, the reliable scx_bpf_dsq_peek on 6.19 (the
/// oldest smoke kernel), four features on 6.12 (the LTS floor).
#[test]
fn the_features_this_kernel_lacks_are_named() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = release.trim();
    let mut v = release.split(|c: char| !c.is_ascii_digit());
    let version: (u32, u32) = (
        v.next().unwrap().parse().unwrap(),
        v.next().unwrap().parse().unwrap(),
    );
    let expected: &[&str] = match version {
        (6, 12) | (6, 13) => &[
            "scx_bpf_now",
            "per-node idle tracking",
            "scx_bpf_select_cpu_and",
            "a reliable scx_bpf_dsq_peek",
        ],
        (6, 19) | (7, 0) => &["a reliable scx_bpf_dsq_peek"],
        v if v >= (7, 1) => &[],
        v => panic!("no expectation written for kernel {v:?} ({release})"),
    };
    let loader = Loader::start(&[]);
    let out = scx_phase(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let kernel = &json["loader"]["kernel"];
    assert_eq!(kernel["release"], release, "{json}");
    let lacks: Vec<&str> = kernel["lacks"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert_eq!(lacks, expected, "{json}");
    let text = String::from_utf8_lossy(&scx_phase(&["status"]).stdout).into_owned();
    let log = loader.log();
    for f in expected {
        assert!(
            log.contains(&format!("this kernel ({release}) lacks {f} (Linux ")),
            "{log}"
        );
        assert!(text.contains(f), "{text}");
    }
    println!(
        "MEASURED kernel {release}: lacks {lacks:?}; status: {}",
        text.lines()
            .find(|l| l.starts_with("kernel "))
            .unwrap_or("(no kernel line)")
    );
}

/// A broken invariant ends the scheduler with a reason that names it:
/// root deletes a spinning task's state (the scheduler's task storage),
/// and the next callback for that task exits through scx_bpf_error().
/// sched_ext hands every task back to the fair class; none is lost.
#[test]
fn a_missing_task_context_ends_the_scheduler_with_the_reason() {
    use libbpf_rs::MapCore;

    let mut spinner = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spinner");
    let pid = spinner.id() as i32;
    let mut loader = Loader::start(&[]);
    std::thread::sleep(Duration::from_millis(300));

    // SAFETY: pidfd_open(2) on our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let maps: Vec<u32> = libbpf_rs::query::MapInfoIter::default()
        .filter(|m| m.name == "task_ctx_stor")
        .map(|m| m.id)
        .collect();
    let deleted = maps.iter().any(|&id| {
        libbpf_rs::MapHandle::from_map_id(id)
            .and_then(|m| m.delete(&pidfd.to_ne_bytes()))
            .is_ok()
    });
    // SAFETY: our own descriptor.
    unsafe { libc::close(pidfd) };
    assert!(
        deleted,
        "no task_ctx_stor map held pid {pid} (maps {maps:?})"
    );

    let t0 = std::time::Instant::now();
    let exit = loader.wait(Duration::from_secs(5));
    let exited = t0.elapsed();
    let log = loader.log();
    let reason = log
        .lines()
        .find(|l| l.contains("EXIT:"))
        .unwrap_or_else(|| panic!("no exit reason: {log}"))
        .to_owned();
    assert_ne!(exit.code(), Some(0), "exit 0 on an error: {log}");
    assert!(
        reason.contains(&format!("no task context for sh[{pid}]")),
        "{reason}"
    );
    assert_eq!(state(), "disabled");
    let (_, text) = status();
    assert!(text.contains("no task context for sh["), "status: {text}");
    // The spinner runs on under the fair class.
    std::thread::sleep(Duration::from_millis(200));
    assert!(spinner.try_wait().unwrap().is_none(), "the spinner died");
    let _ = spinner.kill();
    let _ = spinner.wait();
    println!(
        "MEASURED a task's state deleted by root: the scheduler exited {:.0} ms later, status {:?}, with: {}",
        ms(exited),
        exit.code(),
        reason.trim()
    );
}
