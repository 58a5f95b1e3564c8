//! `--hint-group`: members of the group may hint, others may not, with
//! kernel.unprivileged_bpf_disabled at 2 (Debian's default) and at 1.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::support::*;

const GID: &str = "4242";
const UID: &str = "4243";

fn hint_as_user(groups: &str, tid: u32) -> Output {
    Command::new("setpriv")
        .args([&format!("--reuid={UID}"), &format!("--regid={UID}"), groups])
        .arg(BIN)
        .args(["set", "--tid", &tid.to_string(), "--phase", "backward"])
        .output()
        .expect("setpriv")
}

#[test]
fn hint_group_members_may_hint_and_others_may_not() {
    require_sched_ext();
    // The bpffs root must let the group through; systemd mounts it 0700.
    let root = std::path::Path::new("/sys/fs/bpf");
    let old = std::fs::metadata(root).unwrap().permissions();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(old.mode() | 0o001)).unwrap();

    let loader = Loader::start(&["--hint-group", GID]);
    assert!(
        loader
            .log()
            .contains("members of group 4242 may write hints"),
        "{}",
        loader.log()
    );
    let mut target = sleeper();
    let tid = target.id();
    let sysctl = "/proc/sys/kernel/unprivileged_bpf_disabled";
    let mut seen = Vec::new();
    for setting in ["2", "1"] {
        std::fs::write(sysctl, setting).expect("set unprivileged_bpf_disabled");
        let _ = scx_phase(&["clear", "--tid", &tid.to_string()]);

        let outsider = hint_as_user("--clear-groups", tid);
        let err = String::from_utf8_lossy(&outsider.stderr);
        assert_eq!(outsider.status.code(), Some(1), "outsider: {err}");
        assert!(
            err.contains("permission denied") && err.contains("--hint-group"),
            "{err}"
        );

        let member = hint_as_user(&format!("--groups={GID}"), tid);
        assert!(
            member.status.success(),
            "group member refused with unprivileged_bpf_disabled={setting}: {}",
            String::from_utf8_lossy(&member.stderr)
        );
        let got = scx_phase(&["get", "--tid", &tid.to_string()]);
        assert!(String::from_utf8_lossy(&got.stdout).contains("backward"));
        seen.push(format!(
            "unprivileged_bpf_disabled={setting}: outsider refused ({}), member hinted",
            err.trim()
        ));
    }
    println!("MEASURED --hint-group: {}", seen.join("; "));
    let _ = target.kill();
    let _ = target.wait();
    drop(loader);
    std::fs::set_permissions(root, old).unwrap();
}
