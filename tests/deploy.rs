//! What deploy/ ships, checked offline: the Kubernetes manifests against
//! the API's schemas (PyPI's kubernetes-validate, strict, from the
//! virtualenv scripts/setup.sh makes), and the translation of their pod
//! specs into podman arguments that the VM tests run them with.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

fn validate(files: &[PathBuf]) -> Output {
    let tool = root().join(".cache/py/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup.sh",
        tool.display()
    );
    Command::new(tool)
        .arg("--strict")
        .args(files)
        .output()
        .expect("kubernetes-validate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_manifests_pass_strict_schema_validation() {
    let files = manifests();
    assert!(files.len() >= 2, "{files:?}");
    let o = validate(&files);
    assert!(o.status.success(), "{}", text(&o));
    for kind in [
        "daemonset/scx-phase",
        "job/tiny-train",
        "configmap/tiny-train",
    ] {
        assert!(
            text(&o).contains(&format!("passed for resource {kind}")),
            "{kind} not validated: {}",
            text(&o)
        );
    }
}

#[test]
fn a_misspelt_field_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let ds = std::fs::read_to_string(root().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    std::fs::write(&bad, ds.replace("hostPID:", "hostPid:")).unwrap();
    let o = validate(&[bad]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("'hostPid' was unexpected"),
        "{}",
        text(&o)
    );
}

fn translate(manifest: &str, container: &str, dir: &Path, extra: &[&str]) -> Output {
    Command::new("/usr/bin/python3")
        .arg(root().join("tests/tools/kube_podman.py"))
        .arg(root().join("deploy/kubernetes").join(manifest))
        .args(["--container", container, "--workdir"])
        .arg(dir)
        .args(extra)
        .output()
        .expect("kube_podman.py")
}

#[test]
fn the_job_translates_to_a_pod_without_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let node = tempfile::tempdir().unwrap();
    let node_root = node.path().to_str().unwrap();
    // The Job's hostPath has type Directory: missing, it is an error.
    let o = translate(
        "example-job.yaml",
        "train",
        dir.path(),
        &["--host-root", node_root],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("hostPath /run/scx_phase is not a directory"),
        "{}",
        text(&o)
    );
    std::fs::create_dir_all(node.path().join("run/scx_phase")).unwrap();
    let o = translate(
        "example-job.yaml",
        "train",
        dir.path(),
        &["--host-root", node_root],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let args: Vec<String> = serde_json::from_value(v["args"].clone()).unwrap();
    let joined = args.join(" ");
    let socket_mount = format!("-v {node_root}/run/scx_phase:/run/scx_phase:ro");
    for want in [
        "--pid private",
        "--user 1000:1000",
        "--group-add 4242",
        "--cap-drop all",
        "--security-opt no-new-privileges",
        "--read-only",
        socket_mount.as_str(),
    ] {
        assert!(joined.contains(want), "no {want:?} in {joined}");
    }
    assert!(!joined.contains("--cap-add"), "{joined}");
    assert!(!joined.contains("seccomp=unconfined"), "{joined}");
    let cmd: Vec<String> = serde_json::from_value(v["command"].clone()).unwrap();
    assert_eq!(cmd[..3], ["python3", "-m", "scx_phase.run"]);
    // The ConfigMap is written where the pod mounts it.
    assert!(dir.path().join("configmap-tiny-train/train.py").exists());
}

#[test]
fn a_field_it_cannot_translate_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("job.yaml");
    let job = std::fs::read_to_string(root().join("deploy/kubernetes/example-job.yaml")).unwrap();
    std::fs::write(
        &bad,
        job.replace(
            "allowPrivilegeEscalation: false",
            "allowPrivilegeEscalation: false\n            procMount: Unmasked",
        ),
    )
    .unwrap();
    let o = Command::new("/usr/bin/python3")
        .arg(root().join("tests/tools/kube_podman.py"))
        .arg(&bad)
        .args(["--container", "train", "--workdir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cannot translate ['procMount']"),
        "{}",
        text(&o)
    );
}
