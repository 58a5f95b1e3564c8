//! The C ABI: a C program includes include/scx_phase.h, links
//! libscx_phase.so and drives a real hint service on the host.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{
    HintService, VM_PROGRAMS, build_c, build_vm_programs, client_env, dead_tid, program_is_fresh,
    vm_programs_dir,
};

fn exe() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    // Other users run it too.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let exe = dir.path().join("hint_test");
    build_c("hint_test.c", &exe, "-O0");
    (dir, exe)
}

#[test]
fn a_c_program_hints_through_the_header_and_library() {
    let svc = HintService::start();
    let (_dir, exe) = exe();
    let mut child = Command::new(&exe)
        .arg(dead_tid().to_string())
        .envs(client_env(&svc))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(tid) = line
        .trim()
        .strip_prefix("tid=")
        .and_then(|t| t.parse::<u32>().ok())
    else {
        let out = child.wait_with_output().unwrap();
        panic!(
            "no tid in {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let e = svc.hint_of(tid).expect("the C program's hint");
    assert_eq!(e["phase"], "data_loading", "{e}");
    assert_eq!(e["numa_node"], 1, "{e}");
    assert_eq!(e["source"], "thread", "{e}");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(svc.counters().workloads, 0, "its registration outlived it");
}

#[test]
fn an_unprivileged_c_program_gets_the_rule() {
    let svc = HintService::start();
    let (_dir, exe) = exe();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .arg("--unprivileged")
        .envs(client_env(&svc))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("may set idle only"), "{text}");
    assert!(text.contains("kill(2)"), "{text}");
}

#[test]
fn without_the_service_every_call_says_not_running() {
    let (_dir, exe) = exe();
    let out = Command::new(&exe)
        .arg("--missing")
        .env("SCX_PHASE_SOCKET", "/nonexistent/hint.sock")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("not running"), "{text}");
    assert!(text.contains("/nonexistent/hint.sock"), "{text}");
}

/// The C programs the VM tests run build warning-free against the header
/// and the library. They are left in target/<profile>/vm-programs, where
/// each VM boot copies them rather than spending 30-40 s of gcc under TCG
/// (scripts/test.sh runs these tests before the VM's).
#[test]
fn the_vm_tests_c_programs_build_warning_free() {
    let dir = vm_programs_dir();
    build_vm_programs(&dir);
    for name in VM_PROGRAMS {
        assert!(program_is_fresh(&dir.join(name), name), "{name} not built");
    }
}
