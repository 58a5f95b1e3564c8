//! `--hint-group` governs who may raise threads through the hint service;
//! the pinned maps are root's alone. Checked with
//! kernel.unprivileged_bpf_disabled at 2 (Debian's default) and at 1: the
//! service path needs no bpf() from the client at all.

use std::process::{Child, Command, Output};

use crate::support::*;

const GID: &str = "4242";
const UID: &str = "4243";

fn as_user(groups: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([&format!("--reuid={UID}"), &format!("--regid={UID}"), groups])
        .arg(BIN)
        .args(args)
        .output()
        .expect("setpriv")
}

fn own_sleeper() -> Child {
    Command::new("setpriv")
        .args([
            &format!("--reuid={UID}"),
            &format!("--regid={UID}"),
            "--clear-groups",
            "sleep",
            "600",
        ])
        .spawn()
        .expect("sleeper")
}

#[test]
fn the_hint_group_may_raise_through_the_service_and_the_maps_are_roots() {
    require_sched_ext();
    let loader = Loader::start(&["--hint-group", GID]);
    assert!(
        loader
            .log()
            .contains("members of group 4242 (gid 4242) may raise threads"),
        "{}",
        loader.log()
    );
    let mut target = own_sleeper();
    let tid = target.id().to_string();
    let sysctl = "/proc/sys/kernel/unprivileged_bpf_disabled";
    let mut seen = Vec::new();
    for setting in ["2", "1"] {
        std::fs::write(sysctl, setting).expect("set unprivileged_bpf_disabled");
        let _ = scx_phase(&["clear", "--tid", &tid]);

        let raise = ["set", "--tid", &tid, "--phase", "backward"];
        let outsider = as_user("--clear-groups", &raise);
        let err = String::from_utf8_lossy(&outsider.stderr);
        assert_eq!(outsider.status.code(), Some(1), "outsider: {err}");
        assert!(err.contains("membership in the hint group '4242'"), "{err}");
        let lower = as_user("--clear-groups", &["set", "--tid", &tid, "--phase", "idle"]);
        assert!(
            lower.status.success(),
            "an outsider may lower its own thread: {}",
            String::from_utf8_lossy(&lower.stderr)
        );

        let member = as_user(&format!("--groups={GID}"), &raise);
        assert!(
            member.status.success(),
            "group member refused with unprivileged_bpf_disabled={setting}: {}",
            String::from_utf8_lossy(&member.stderr)
        );
        let got = scx_phase(&["get", "--tid", &tid]);
        assert!(
            String::from_utf8_lossy(&got.stdout).contains("backward"),
            "{}",
            String::from_utf8_lossy(&got.stdout)
        );
        // Not even the group opens the pinned map itself.
        let direct = Command::new("setpriv")
            .args([
                &format!("--reuid={UID}"),
                &format!("--regid={UID}"),
                &format!("--groups={GID}"),
            ])
            .args([
                "bpftool",
                "map",
                "dump",
                "pinned",
                "/sys/fs/bpf/scx_phase/phase_map",
            ])
            .output()
            .unwrap();
        assert!(
            !direct.status.success(),
            "a group member opened the pinned map"
        );
        seen.push(format!(
            "unprivileged_bpf_disabled={setting}: outsider refused ({}), outsider lowered its own thread, member raised it; the pinned map refused the member",
            err.trim()
        ));
    }
    println!("MEASURED --hint-group: {}", seen.join("; "));
    let _ = target.kill();
    let _ = target.wait();
}
