//! The C ABI: a C program includes include/scx_phase.h, links
//! libscx_phase.so and drives a real BPF map on the host.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TempBpffs, dead_tid};
use scx_phase::phase_map::{self, PhaseHint, PhaseMap};

/// target/<profile>, where cargo put libscx_phase.so.
fn lib_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_scx_phase"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn build_c_program(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    assert!(
        lib.join("libscx_phase.so").exists(),
        "no libscx_phase.so in {}",
        lib.display()
    );
    let st = Command::new("cc")
        .args(["-Wall", "-Werror", "-o"])
        .arg(out)
        .arg(root.join("tests/c/hint_test.c"))
        .arg(format!("-I{}", root.join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lscx_phase")
        .status()
        .expect("cc");
    assert!(st.success(), "the C program did not build");
}

#[test]
fn a_c_program_hints_through_the_header_and_library() {
    let fs = TempBpffs::new();
    let path = phase_map::map_path(&fs.pin_dir());
    let map = PhaseMap::create_pinned(&path, 64).unwrap();
    let exe = fs
        .path()
        .parent()
        .unwrap()
        .join(format!("hint_test-{}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(exe.file_name().unwrap());
    build_c_program(&exe);

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
