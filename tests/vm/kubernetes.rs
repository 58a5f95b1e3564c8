//! The pod specs of deploy/kubernetes/, run with podman as written:
//! tests/tools/kube_podman.py translates each container's namespaces,
//! user, groups, capabilities, seccomp profile, mounts and command, and
//! fails on anything it cannot. Each pod gets an image root of its own
//! (the host's /usr, this build's binary or wheel). The DaemonSet's pod
//! attaches the scheduler from inside the container and passes its
//! readiness probe; the example Job's pod (default seccomp profile, no
//! capability, only the socket's folder) trains under
//! `python -m scx_phase.run`, and its hints boost it among hogs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ChildStdout;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::*;
use crate::common::{python_site_dir, python_site_is_fresh};
use crate::support::*;
use crate::workload::*;

const DAEMON: &str = "scx-phase-pod";
const JOB: &str = "tiny-train-pod";
/// The DaemonSet's capabilities (daemonset.yaml), as setpriv and
/// /proc/PID/status name them.
const POD_CAPS: &str =
    "-all,+sys_admin,+bpf,+perfmon,+sys_resource,+sys_ptrace,+chown,+dac_override";
const POD_CAP_EFF: &str = "000000c001280003";

/// A pod's own image root under `work`. Everything else in it is mounted
/// by podman itself, so one pod's cleanup cannot reach another's mounts.
fn pod_root(work: &Path, pod: &str) -> PathBuf {
    let dir = work.join(pod);
    image_root(&dir);
    dir
}

/// `podman run` arguments for one container of a manifest, with the image
/// made of `rootfs`, the host's /usr and `files` (PATH=SOURCE), and the
/// image's environment `env` (NAME=VALUE).
fn pod_args(
    manifest: &str,
    container: &str,
    work: &Path,
    rootfs: &Path,
    files: &[String],
    env: &[&str],
) -> Vec<String> {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(root().join("tests/tools/kube_podman.py"))
        .arg(root().join("deploy/kubernetes").join(manifest))
        .args(["--container", container, "--workdir"])
        .arg(work)
        .args(["--image-file", "/usr=/usr"]);
    for f in files {
        cmd.args(["--image-file", f]);
    }
    for e in env {
        cmd.args(["--image-env", e]);
    }
    let o = cmd.output().expect("kube_podman.py");
    assert!(
        o.status.success(),
        "{manifest}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut args: Vec<String> = serde_json::from_value(v["args"].clone()).unwrap();
    args.extend(["--rootfs".to_string(), rootfs.display().to_string()]);
    args.extend(serde_json::from_value::<Vec<String>>(v["command"].clone()).unwrap());
    args
}

fn podman(args: &[&str]) -> std::process::Output {
    let argv = Podman::command();
    Command::new(&argv[0])
        .args(&argv[1..])
        .args(args)
        .output()
        .expect("podman")
}

type Lines = Arc<Mutex<Vec<String>>>;

/// The lines `out` prints, as they come, on a thread of their own.
fn read_lines(out: ChildStdout) -> Lines {
    let lines: Lines = Arc::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

/// Line `n` (from 0), once it has come.
fn wait_line(lines: &Lines, n: usize, limit: Duration) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(l) = lines.lock().unwrap().get(n) {
            return l.clone();
        }
        assert!(t0.elapsed() < limit, "no line {n} in {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The samples/s the Job reported in lines `range`.
fn rates(lines: &Lines, range: std::ops::RangeFrom<usize>) -> Vec<f64> {
    lines.lock().unwrap()[range]
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["samples_per_s"].as_f64())
        .collect()
}

/// The host pid of a running pod's first process.
fn pod_pid(name: &str) -> u32 {
    let o = podman(&["inspect", "--format", "{{.State.Pid}}", name]);
    let pid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    pid.parse()
        .unwrap_or_else(|_| panic!("no pid for {name}: {pid:?}"))
}

/// Removes the pods however the test ends.
struct Pods;

impl Drop for Pods {
    fn drop(&mut self) {
        for name in [JOB, DAEMON] {
            let _ = podman(&["rm", "-f", "-t", "5", name]);
        }
    }
}

/// Build the wheel this build makes and pip-install it into `site`.
fn install_wheel(work: &Path, site: &Path) {
    let o = Command::new(root().join("scripts/wheel.sh"))
        .args(["--no-build", "--out"])
        .arg(work.join("wheels"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let whl = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = Command::new("/usr/bin/python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(site)
        .arg(&whl)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_daemonset_pod_attaches_and_the_jobs_pod_is_boosted() {
    require_sched_ext();
    assert!(
        wait_state("disabled", Duration::from_secs(5)).is_some(),
        "a scheduler is attached before the test"
    );
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let _pods = Pods;

    // The DaemonSet's pod; the image's binary is this build's, a file of
    // the image (crun's exec does not find a bind-mounted one).
    let daemon_root = pod_root(work.path(), DAEMON);
    let image_bin = daemon_root.join("opt/scx_phase/bin");
    std::fs::create_dir_all(&image_bin).unwrap();
    std::fs::copy(BIN, image_bin.join("scx_phase")).unwrap();
    let mut daemon_args = vec![
        "run".to_string(),
        "-d".into(),
        "--name".into(),
        DAEMON.into(),
    ];
    daemon_args.extend(pod_args(
        "daemonset.yaml",
        "scx-phase",
        work.path(),
        &daemon_root,
        &[],
        &[],
    ));
    let t0 = Instant::now();
    let argv: Vec<&str> = daemon_args.iter().map(String::as_str).collect();
    let o = podman(&argv);
    assert!(
        o.status.success(),
        "podman run of the DaemonSet's pod: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    while !(state() == "enabled" && ops().starts_with("scx_phase")) {
        let logs = podman(&["logs", DAEMON]);
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the pod did not attach in 90 s: {}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let attached = t0.elapsed();
    // The readiness probe, run in the pod as the kubelet would.
    // The readiness probe, run in the pod as the kubelet would: in its
    // namespaces and root, with its capabilities and no new privileges.
    // (Not `podman exec`: this VM's root is an initramfs, where crun starts
    // containers by chroot, and its exec does not enter that chroot.)
    let dpid = pod_pid(DAEMON).to_string();
    let probe = Command::new("nsenter")
        .args(["--target", &dpid, "--all", "--root", "--wd", "--"])
        .args([
            "/usr/bin/setpriv",
            "--bounding-set",
            POD_CAPS,
            "--no-new-privs",
            "--",
        ])
        .args(["/opt/scx_phase/bin/scx_phase", "status"])
        .output()
        .expect("nsenter");
    let probe_text = format!(
        "{}{}",
        String::from_utf8_lossy(&probe.stdout),
        String::from_utf8_lossy(&probe.stderr)
    );
    // What the pod's process runs with.
    let status = std::fs::read_to_string(format!("/proc/{dpid}/status")).unwrap();
    let caps_text = status
        .lines()
        .filter(|l| {
            ["CapEff:", "Seccomp:", "NoNewPrivs:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(" ");

    // The Job's pod: its image has the wheel installed; here, the wheel
    // this build makes, installed into the image's /opt/site: as the host
    // tests installed it, or else built and installed here.
    let site = work.path().join("site");
    let host_site = python_site_dir();
    if python_site_is_fresh(&host_site) {
        let o = Command::new("cp")
            .arg("-r")
            .arg(&host_site)
            .arg(&site)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    } else {
        install_wheel(work.path(), &site);
    }
    let mut job_args = vec![
        "run".to_string(),
        "--rm".into(),
        "--name".into(),
        JOB.into(),
    ];
    job_args.extend(pod_args(
        "example-job.yaml",
        "train",
        work.path(),
        &pod_root(work.path(), JOB),
        &[format!("/opt/site={}", site.display())],
        &["PYTHONPATH=/opt/site"],
    ));
    // An un-hinted spinner to measure against, started first: among hogs
    // under TCG, building and starting it takes longer than the Job runs.
    let mut plain = spin_c("none", "thread", None);
    let p = plain.line();
    let plain_tid = plain.host_tid(p["tid"].as_u64().unwrap());
    let argv = Podman::command();
    let mut job = Command::new(&argv[0])
        .args(&argv[1..])
        .args(&job_args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("podman run of the Job's pod");
    let lines = read_lines(job.stdout.take().unwrap());
    let first = wait_line(&lines, 0, Duration::from_secs(240));
    let hello: Value = serde_json::from_str(&first).unwrap_or_else(|_| panic!("{first:?}"));
    let ns_pid = hello["pid"].as_u64().unwrap();
    let job_pid = pod_pid(JOB);
    // Its speed alone, over the lines it prints each second.
    wait_line(&lines, 3, Duration::from_secs(60));
    let alone = rates(&lines, 1..);

    // Then among 4 hogs and the spinner on 2 vCPUs.
    let hogs = Hogs::start(4);
    std::thread::sleep(Duration::from_secs(1));
    let stats = scx_phase::stats::StatsMap::open(Path::new(PIN_DIR)).unwrap();
    let before = stats.read().unwrap();
    let seen = lines.lock().unwrap().len();
    let (job0, plain0, t0) = (process_cpu_ns(job_pid), cpu_ns(plain_tid), Instant::now());
    std::thread::sleep(Duration::from_secs(6));
    let dt = t0.elapsed().as_nanos() as f64;
    let job_share = (process_cpu_ns(job_pid) - job0) as f64 * 100.0 / dt;
    let plain_share = (cpu_ns(plain_tid) - plain0) as f64 * 100.0 / dt;
    let after = stats.read().unwrap();
    let contended = rates(&lines, seen..);
    drop(hogs);
    drop(plain);
    let boosted_ms: u64 = [
        scx_phase::Phase::Forward,
        scx_phase::Phase::Backward,
        scx_phase::Phase::Optimizer,
    ]
    .iter()
    .map(|&ph| {
        (after.slots[ph as usize].runtime_ns - before.slots[ph as usize].runtime_ns) / 1_000_000
    })
    .sum();
    let _ = podman(&["rm", "-f", "-t", "1", JOB]);
    let _ = job.wait();

    // Stopping the DaemonSet's pod detaches the scheduler.
    let t1 = Instant::now();
    let stop = podman(&["stop", "-t", "10", DAEMON]);
    let detached = wait_state("disabled", Duration::from_secs(15)).map(|_| t1.elapsed());

    println!(
        "MEASURED Kubernetes pod specs under podman: the DaemonSet's pod (hostPID, 7 capabilities, default seccomp, read-only root; {caps_text}) attached {:.1} s after podman run; its readiness probe exited {:?}: {:?}; the Job's pod (pid {ns_pid} in its own PID namespace; uid 1000, group 4242, no capability, default seccomp, socket folder read-only) under `python -m scx_phase.run`: beside an un-hinted spinner {alone:?} samples/s; with 4 hogs more on 2 vCPUs {contended:?} samples/s, its process {job_share:.1}% of a CPU against the spinner's {plain_share:.1}%, {boosted_ms} ms of forward+backward+optimizer CPU in 6 s; podman stop of the DaemonSet's pod: detached in {:.0} ms",
        attached.as_secs_f64(),
        probe.status.code(),
        probe_text.lines().next().unwrap_or(""),
        detached.map_or(f64::NAN, ms)
    );
    assert!(probe.status.success(), "probe: {probe_text}");
    assert!(probe_text.starts_with("attached: yes"), "{probe_text}");
    assert!(caps_text.contains("Seccomp:\t2"), "{caps_text}");
    assert!(caps_text.contains("NoNewPrivs:\t1"), "{caps_text}");
    assert!(
        caps_text.contains(&format!("CapEff:\t{POD_CAP_EFF}")),
        "{caps_text}"
    );
    assert_eq!(ns_pid, 1, "the Job's pod has its own PID namespace");
    assert!(job_share >= 80.0, "the Job's pod: {job_share:.1}%");
    // Its samples/s are reported, not bounded: under TCG the hogs slow
    // the emulator itself, whoever the scheduler runs.
    assert!(
        !contended.is_empty() && contended.iter().all(|r| *r > 0.0),
        "the Job stopped training among the hogs: {contended:?}"
    );
    assert!(plain_share < 40.0, "un-hinted: {plain_share:.1}%");
    assert!(boosted_ms > 3000, "{boosted_ms} ms boosted");
    assert!(stop.status.success());
    let detached = detached.expect("still attached 15 s after podman stop");
    assert!(detached < Duration::from_secs(11), "{detached:?}");
}
