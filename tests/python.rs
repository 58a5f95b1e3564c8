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
fn a_wheel_bundles_the_library_and_pip_installs_it() {
    let svc = HintService::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let site = tempfile::tempdir().unwrap();
    let wheels = tempfile::tempdir().unwrap();
    // scripts/wheel.sh takes target/release, what this cargo run built.
    let out = Command::new(root.join("scripts/wheel.sh"))
        .args(["--no-build", "--out"])
        .arg(wheels.path())
        .output()
        .expect("scripts/wheel.sh");
    assert!(
        out.status.success(),
        "wheel.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whl = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // A platform wheel (it carries a shared library), for any Python 3.
    assert!(
        whl.ends_with(&format!(
            "scx_phase-{}-py3-none-linux_x86_64.whl",
            env!("CARGO_PKG_VERSION")
        )),
        "{whl}"
    );
    let listing = Command::new("/usr/bin/python3")
        .args(["-m", "zipfile", "-l", &whl])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("scx_phase/libscx_phase.so"),
        "library not in the wheel"
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(site.path())
        .arg(&whl)
        .output()
        .expect("python3 -m pip");
    assert!(
        out.status.success(),
        "pip install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        site.path().join("scx_phase/libscx_phase.so").exists(),
        "library not installed"
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
