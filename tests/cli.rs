//! The scx_phase binary's errors and hint subcommands, on the host.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use scx_phase::Phase;
use scx_phase::hint::tid_map::{self, PhaseHint, PhaseMap, current_tid};

fn pin(dir: &Path) -> String {
    dir.display().to_string()
}

#[test]
fn unknown_phase_lists_the_valid_names_and_exits_2() {
    let o = scx_phase(&["set", "--tid", "1", "--phase", "warp"]);
    assert_one_line_error(&o, 2, "unknown phase 'warp'");
    assert!(stderr(&o).contains("idle, data_loading, forward, backward, optimizer, checkpoint"));
}

#[test]
fn other_usage_errors_are_one_line_and_exit_2() {
    for args in [
        &["--slice-us", "0"][..],
        &["set", "--tid", "x", "--phase", "idle"][..],
        &["get"][..],
        &["--no-such-flag"][..],
    ] {
        let o = scx_phase(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).trim_end().lines().count(),
            1,
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn help_documents_every_default() {
    let o = scx_phase(&["--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    for d in [
        "[default: 5000]",
        "[default: 65536]",
        "[default: /sys/fs/bpf/scx_phase]",
        "[default: /run/scx_phase/hint.sock]",
        "[default: 0]",
        "[default: off]",
    ] {
        assert!(help.contains(d), "{d} missing from --help");
    }
}

#[test]
fn loading_without_root_is_refused() {
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        // Drop to nobody for this one run.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_scx_phase"),
        ]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_scx_phase"))
    };
    let o = cmd.output().expect("run");
    assert_one_line_error(&o, 1, "must run as root");
}

#[test]
fn loading_needs_sched_ext_then_bpffs() {
    let not_bpffs = tempfile::tempdir().unwrap();
    let o = scx_phase(&["--pin-dir", &pin(&not_bpffs.path().join("p"))]);
    if Path::new("/sys/kernel/sched_ext").exists() {
        // A sched_ext kernel: the next check is the pin folder's bpffs.
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("bpffs is not mounted") || err.contains("already attached"),
            "{err}"
        );
    } else {
        assert_one_line_error(&o, 1, "has no sched_ext");
        assert!(stderr(&o).contains("CONFIG_SCHED_CLASS_EXT=y"));
    }
}

#[test]
fn status_without_a_scheduler_says_why_and_fails_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hint.sock");
    let o = scx_phase(&["--hint-socket", &pin(&sock), "status"]);
    assert_one_line_error(&o, 1, "scx_phase is not attached");
    let out = stdout(&o);
    if !Path::new("/sys/kernel/sched_ext").exists() {
        assert!(
            out.starts_with("attached: no (this kernel has no sched_ext)"),
            "{out}"
        );
    }
    assert!(out.contains("loader: no record"), "{out}");
    assert!(
        out.contains("workloads: unknown (scx_phase is not running"),
        "{out}"
    );
    let o = scx_phase(&["--hint-socket", &pin(&sock), "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json");
    assert_eq!(v["attached"], false, "{v}");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn topology_works_on_any_host() {
    let o = scx_phase(&["topology"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("NUMA nodes:"), "{out}");
    assert!(out.contains("node 0: CPUs 0"), "{out}");
    assert!(out.contains("GPUs:"), "{out}");
}

#[test]
fn hint_commands_without_the_service_say_not_running() {
    let fs = TempBpffs::new();
    let dir = pin(&fs.pin_dir());
    let sock = "/nonexistent/hint.sock";
    for args in [
        vec!["--pin-dir", &dir, "get", "--tid", "1"],
        vec!["--pin-dir", &dir, "dump"],
        vec![
            "--pin-dir",
            &dir,
            "--hint-socket",
            sock,
            "set",
            "--tid",
            "1",
            "--phase",
            "idle",
        ],
    ] {
        let o = scx_phase(&args);
        assert_one_line_error(&o, 1, "scx_phase is not running");
    }
}

#[test]
fn hint_commands_without_bpffs_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let o = scx_phase(&["--pin-dir", &pin(dir.path()), "dump"]);
    assert_one_line_error(&o, 1, "bpffs is not mounted");
}

fn cli(svc: &HintService, args: &[&str]) -> std::process::Output {
    let mut all = svc.args();
    all.extend(args.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_scx_phase"))
        .args(&all)
        .output()
        .expect("run scx_phase")
}

#[test]
fn set_get_clear_dump_through_the_cli() {
    let svc = HintService::start();
    let map = PhaseMap::open(tid_map::map_path(&svc.pin_dir())).unwrap();
    let me = current_tid().to_string();

    let o = cli(
        &svc,
        &["set", "--tid", &me, "--phase", "backward", "--node", "0"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("backward, node 0"));
    assert_eq!(
        map.get(current_tid()).unwrap(),
        Some(PhaseHint {
            phase: 3,
            numa_node: 0
        })
    );

    let o = cli(&svc, &["get", "--tid", &me]);
    assert!(
        stdout(&o).contains(&format!("tid {me} (")),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("backward, node 0 (from the tid map)"),
        "{}",
        stdout(&o)
    );

    let o = cli(&svc, &["dump", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("dump --json is JSON");
    let e = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["tid"] == serde_json::json!(current_tid()))
        .expect("our hint in the dump");
    assert_eq!(e["phase"], "backward");
    assert_eq!(e["numa_node"], 0);
    assert_eq!(e["source"], "tid map");
    assert_eq!(e["pid"], serde_json::json!(std::process::id()));
    assert_eq!(e["uid"], 0);
    let table = stdout(&cli(&svc, &["dump"]));
    assert!(
        table.contains("source") && table.contains("tid map"),
        "{table}"
    );

    let o = cli(&svc, &["clear", "--tid", &me]);
    assert!(stdout(&o).contains("hint cleared"), "{}", stdout(&o));
    assert_eq!(map.get(current_tid()).unwrap(), None);
    let o = cli(&svc, &["get", "--tid", &me]);
    assert!(stdout(&o).contains("no hint"), "{}", stdout(&o));
}

#[test]
fn a_user_sets_through_the_service_and_its_rules() {
    let svc = HintService::start();
    let run_as = |args: &[String]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_scx_phase"))
            .args(svc.args())
            .args(args)
            .output()
            .unwrap()
    };
    let mut mine = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    let tid = mine.id().to_string();
    let set = |phase: &str| -> Vec<String> {
        ["set", "--tid", &tid, "--phase", phase]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let o = run_as(&set("idle"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(svc.hint_of(mine.id()).unwrap()["phase"], "idle");
    let o = run_as(&set("backward"));
    assert_one_line_error(&o, 1, "needs CAP_SYS_NICE or a hint group");
    // Clearing an idle hint raises the thread back: refused too.
    let o = run_as(&["clear".into(), "--tid".into(), tid.clone()]);
    assert_one_line_error(&o, 1, "raises it back above idle");
    let _ = mine.kill();
    let _ = mine.wait();
}

#[test]
fn a_dead_thread_is_refused() {
    let svc = HintService::start();
    let dead = dead_tid().to_string();
    let o = cli(&svc, &["set", "--tid", &dead, "--phase", "forward"]);
    assert_one_line_error(&o, 1, &format!("no thread with id {dead}"));
    for cmd in ["get", "clear"] {
        let o = cli(&svc, &[cmd, "--tid", &dead]);
        assert_one_line_error(&o, 1, "no thread with id");
    }
}

#[test]
fn an_unknown_node_is_refused() {
    let svc = HintService::start();
    let me = current_tid().to_string();
    let o = cli(
        &svc,
        &[
            "set",
            "--tid",
            &me,
            "--phase",
            "data_loading",
            "--node",
            "63",
        ],
    );
    assert_one_line_error(&o, 1, "no NUMA node 63");
}

#[test]
fn garbage_values_are_shown_not_fatal() {
    let svc = HintService::start();
    let map = PhaseMap::open(tid_map::map_path(&svc.pin_dir())).unwrap();
    map.set(
        current_tid(),
        PhaseHint {
            phase: 99,
            numa_node: -42,
        },
    )
    .unwrap();
    let o = cli(&svc, &["dump"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("[ignored 99 (invalid)]"),
        "{}",
        stdout(&o)
    );
    let o = cli(&svc, &["dump", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["tid"] == serde_json::json!(current_tid()))
        .unwrap();
    assert_eq!(e["phase"], serde_json::Value::Null);
    assert_eq!(e["ignored"], "99 (invalid)");
    let o = cli(&svc, &["get", "--tid", &current_tid().to_string()]);
    assert!(
        stdout(&o).contains("no hint; ignored 99 (invalid)"),
        "{}",
        stdout(&o)
    );
    map.clear(current_tid()).unwrap();
    let _ = Phase::Idle;
}

#[test]
fn a_foreign_map_is_a_clear_error() {
    let fs = TempBpffs::new();
    let dir = fs.pin_dir();
    // A regular folder where the map should be pinned.
    std::fs::create_dir(tid_map::map_path(&dir)).unwrap();
    let me = current_tid().to_string();
    let o = scx_phase(&[
        "--pin-dir",
        &pin(&dir),
        "set",
        "--tid",
        &me,
        "--phase",
        "idle",
    ]);
    assert_one_line_error(&o, 1, "is not a scx_phase phase map");
}

#[test]
fn monitor_without_a_scheduler_says_not_running() {
    let fs = TempBpffs::new();
    let o = scx_phase(&["--pin-dir", &pin(&fs.pin_dir()), "--monitor", "1"]);
    assert_one_line_error(&o, 1, "scx_phase is not running");
}
