//! The Python package's unit tests (python/tests), against a real map on
//! the host, with the library built by this cargo run.

mod common;

use std::path::Path;
use std::process::Command;

use common::TempBpffs;
use scx_phase::phase_map::{self, PhaseMap};

#[test]
fn python_package_unit_tests() {
    let fs = TempBpffs::new();
    let dir = fs.pin_dir();
    let path = phase_map::map_path(&dir);
    let _map = PhaseMap::create_pinned(&path, 256).unwrap();
    // Let an unprivileged user reach the map's folder, so the permission
    // test fails on the map itself.
    for p in [fs.path(), dir.as_path()] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = Path::new(env!("CARGO_BIN_EXE_scx_phase"));
    let lib = bin.parent().unwrap().join("libscx_phase.so");
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(root.join("python/tests"))
        .env("PYTHONPATH", root.join("python"))
        .env("SCX_PHASE_MAP", &path)
        .env("SCX_PHASE_LIB", &lib)
        .env("SCX_PHASE_BIN", bin)
        .env("SCX_PHASE_PIN_DIR", &dir)
        .output()
        .expect("/usr/bin/python3");
    let report = String::from_utf8_lossy(&out.stderr);
    println!("{report}");
    assert!(out.status.success(), "python unit tests failed:\n{report}");
    assert!(report.contains("\nOK"), "{report}");
}
