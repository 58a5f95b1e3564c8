//! The Python unit tests: the package's (python/tests), against a real
//! hint service on the host with the library built by this cargo run; and
//! the benchmark report's (scripts/tests).

mod common;

use std::path::Path;
use std::process::Command;

use common::{HintService, client_env};

#[test]
fn python_package_unit_tests() {
    let svc = HintService::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = Path::new(env!("CARGO_BIN_EXE_scx_phase"));
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.envs(client_env(&svc))
        .env("SCX_PHASE_BIN", bin)
        .env("SCX_PHASE_PIN_DIR", svc.pin_dir());
    let report = unittest(cmd, &root.join("python/tests"));
    assert!(report.contains("\nOK"), "{report}");
}

/// Run `python -m unittest discover` on @dir with @cmd; its report, after
/// asserting that it passed.
fn unittest(mut cmd: Command, dir: &Path) -> String {
    let out = cmd
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(dir)
        .output()
        .expect("/usr/bin/python3");
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("{report}");
    assert!(
        out.status.success(),
        "unit tests in {dir:?} failed:\n{report}"
    );
    report
}

#[test]
fn pip_install_bundles_the_library() {
    let svc = HintService::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = Path::new(env!("CARGO_BIN_EXE_scx_phase"))
        .parent()
        .unwrap()
        .join("libscx_phase.so");
    let site = tempfile::tempdir().unwrap();
    let build = tempfile::tempdir().unwrap();
    // A copy of the package, so the build leaves the checkout clean.
    let src = build.path().join("python");
    let st = Command::new("cp")
        .arg("-r")
        .arg(root.join("python"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(site.path())
        .arg(&src)
        .env("SCX_PHASE_LIB", &lib)
        .output()
        .expect("python3 -m pip");
    assert!(
        out.status.success(),
        "pip install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        site.path().join("scx_phase/libscx_phase.so").exists(),
        "library not bundled"
    );

    // The installed package finds its own library: no SCX_PHASE_LIB.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", "import scx_phase, threading, time; print(scx_phase.set_phase('optimizer'), threading.get_native_id(), flush=True); time.sleep(3)"])
        .env("PYTHONPATH", site.path())
        .env("SCX_PHASE_SOCKET", svc.socket())
        .env_remove("SCX_PHASE_LIB")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("True"), "{line}");
    let tid: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(svc.hint_of(tid).unwrap()["phase"], "optimizer");
    let _ = child.kill();
    let _ = child.wait();
}

/// The benchmark report's own tests: its check must be able to fail.
#[test]
fn bench_report_unit_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let report = unittest(
        Command::new("/usr/bin/python3"),
        &root.join("scripts/tests"),
    );
    assert!(report.contains("Ran 6 tests"), "{report}");
}
