//! The C ABI: a C program includes include/scx_phase.h, links
//! libscx_phase.so and drives a real BPF map on the host.

mod common;

use std::process::Command;

use common::{TempBpffs, build_c, dead_tid};
use scx_phase::hint::tid_map::{self, PhaseHint, PhaseMap};

#[test]
fn a_c_program_hints_through_the_header_and_library() {
    let fs = TempBpffs::new();
    let path = tid_map::map_path(&fs.pin_dir());
    let map = PhaseMap::create_pinned(&path, 64).unwrap();
    let exe = fs
        .path()
        .parent()
        .unwrap()
        .join(format!("hint_test-{}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(exe.file_name().unwrap());
    build_c("hint_test.c", &exe, "-O0");

    let out = Command::new(&exe)
        .arg(dead_tid().to_string())
        .env("SCX_PHASE_MAP", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let tid: u32 = stdout
        .trim()
        .strip_prefix("tid=")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no tid in {stdout:?}"));
    assert_eq!(
        map.get(tid).unwrap(),
        Some(PhaseHint {
            phase: 1,
            numa_node: 1
        }),
        "the C program's last hint is in the map"
    );

    let out = Command::new(&exe)
        .arg("--missing")
        .env("SCX_PHASE_MAP", fs.path().join("nothing/phase_map"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
}
