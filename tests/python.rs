//! The Python unit tests: the package's (python/tests), against a real
//! hint service on the host with the library built by this cargo run; and
//! the benchmark report's (scripts/tests).

mod common;

use std::path::Path;
use std::process::Command;

use common::{HintService, client_env, python_site_dir, python_site_stamp};

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
    // The install is left for the VM's Kubernetes test (python_site_dir).
    let site = python_site_dir();
    let _ = std::fs::remove_dir_all(&site);
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
        .arg(&site)
        .arg(&whl)
        .output()
        .expect("python3 -m pip");
    assert!(
        out.status.success(),
        "pip install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        site.join("scx_phase/libscx_phase.so").exists(),
        "library not installed"
    );
    std::fs::write(python_site_stamp(&site), &whl).unwrap();

    // The installed package finds its own library: no SCX_PHASE_LIB.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", "import scx_phase, threading, time; print(scx_phase.set_phase('optimizer'), threading.get_native_id(), flush=True); time.sleep(3)"])
        .env("PYTHONPATH", &site)
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

/// The benchmark reports' own tests (bench-report.py and
/// bench-overload-report.py): their checks must be able to fail.
#[test]
fn bench_report_unit_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let report = unittest(
        Command::new("/usr/bin/python3"),
        &root.join("scripts/tests"),
    );
    assert!(report.contains("Ran 11 tests"), "{report}");
}

/// The pinned virtualenv's python (scripts/setup.sh): MLflow beside the
/// system's torch.
fn venv_python(root: &Path) -> std::path::PathBuf {
    let py = root.join(".cache/py/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup.sh",
        py.display()
    );
    py
}

/// What the store at `uri` holds of run `id` (tests/tools/mlflow_run.py).
fn mlflow_run(root: &Path, uri: &str, id: &str) -> serde_json::Value {
    let out = Command::new(venv_python(root))
        .arg(root.join("tests/tools/mlflow_run.py"))
        .arg(id)
        .env("MLFLOW_TRACKING_URI", uri)
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .output()
        .expect("mlflow_run.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `python -m scx_phase.run --mlflow train_mlflow.py ARGS` with `env`,
/// stdin and stdout piped: the child, its stdout past the run id it
/// printed, and that id.
fn mlflow_script(
    root: &Path,
    env: &[(String, String)],
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    String,
) {
    use std::io::BufRead;
    let mut child = Command::new(venv_python(root))
        .args(["-m", "scx_phase.run", "--mlflow", "--mlflow-every", "0.3"])
        .arg(root.join("tests/vm/assets/train_mlflow.py"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the virtualenv's python");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let id = line
        .strip_prefix("started ")
        .unwrap_or_else(|| panic!("the script printed {line:?}"))
        .trim()
        .to_string();
    (child, out, id)
}

/// The rest of a child's stdout, its exit status and its stderr.
fn finish(
    mut child: std::process::Child,
    mut out: std::io::BufReader<std::process::ChildStdout>,
) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    out.read_to_string(&mut stdout).unwrap();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).unwrap();
    }
    (child.wait().unwrap(), stdout, stderr)
}

/// MLflow itself (mlflow-skinny, a local file store) against a real hint
/// service on the host. Without sched_ext nothing counts, so the test
/// writes the scheduler's figures for the process into the pinned map,
/// and the run must show exactly those; tests/vm/mlflow.rs shows the
/// scheduler's own.
#[test]
fn mlflow_logs_the_figures_to_the_scripts_own_run() {
    use std::io::Write;
    let svc = HintService::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let store = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", store.path().join("mlruns").display());
    let mut env = client_env(&svc);
    env.push(("MLFLOW_TRACKING_URI".into(), uri.clone()));
    env.push(("MLFLOW_ALLOW_FILE_STORE".into(), "true".into()));

    let (mut child, out, id) = mlflow_script(root, &env, &["--hold", "--seconds", "0.2"]);
    svc.write_figures(child.id(), 3, common::BACKWARD_FIGURES);
    // Two periodic logs see them, then the script trains and ends.
    std::thread::sleep(std::time::Duration::from_millis(900));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let (status, trained, err) = finish(child, out);
    assert!(status.success(), "{err}");
    assert!(trained.starts_with("trained "), "{trained}");

    let run = mlflow_run(root, &uri, &id);
    let m = &run["metrics"];
    assert_eq!(run["runs"], serde_json::json!([id]), "one run: {run}");
    assert_eq!(run["status"], "FINISHED", "{run}");
    assert_eq!(run["name"], "train_mlflow.py", "{run}");
    assert!(m["loss"].is_number(), "the script's own metric: {run}");
    assert_eq!(m["scx_phase.cpu_seconds.backward"], 2.5, "{run}");
    assert_eq!(m["scx_phase.wait_seconds.backward"], 0.25, "{run}");
    assert_eq!(m["scx_phase.waits.backward"], 10.0, "{run}");
    assert_eq!(m["scx_phase.boosted_share"], 0.8, "{run}");
    let h = run["history"]["scx_phase.cpu_seconds.backward"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(h.len() >= 3, "periodic logs and the last: {run}");
    let steps: Vec<f64> = h.iter().map(|p| p[0].as_f64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");

    // Without the scheduler, a failing script: the run says FAILED, holds
    // no scx_phase figures, and the one warning says why.
    let gone = tempfile::tempdir().unwrap();
    for (k, v) in env.iter_mut() {
        if k == "SCX_PHASE_SOCKET" {
            *v = gone.path().join("hint.sock").display().to_string();
        }
    }
    let (child, out, failed) = mlflow_script(root, &env, &["--fail", "--seconds", "0.5"]);
    let (status, _, err) = finish(child, out);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("failed on purpose"), "{err}");
    assert_eq!(err.matches("scx_phase is not running").count(), 1, "{err}");
    let run2 = mlflow_run(root, &uri, &failed);
    assert_eq!(run2["status"], "FAILED", "{run2}");
    let ours = run2["metrics"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("scx_phase."))
        .count();
    assert_eq!(ours, 0, "{run2}");
    println!(
        "MEASURED host: mlflow-skinny file store, run {id} ({}): {} (cpu_seconds.backward logged {} times); without the scheduler, a failing script's run: {}, {}",
        run["status"],
        serde_json::to_string(m).unwrap(),
        h.len(),
        run2["status"],
        serde_json::to_string(&run2["metrics"]).unwrap()
    );
}
