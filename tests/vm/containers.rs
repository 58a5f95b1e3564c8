//! Hints from containers: podman with its default seccomp profile, its
//! own PID namespace and no added capability, mounting only the hint
//! socket's folder (and, read-only, the binaries it runs).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::clients::*;
use crate::support::*;
use crate::workload::*;

const MEASURE: Duration = Duration::from_secs(4);
const GROUP: &str = "4242";
const MEMBER: &str = "4243:4243";
const STRANGER: &str = "5000:5000";
const HOST_USER: &str = "4244";

fn share(tid: u32) -> f64 {
    shares(&[tid], MEASURE)[0]
}

/// A C spinner in a container: its JSON line and its host tid.
fn ctr_spin(user: &str, groups: &[&str], phase: &str) -> (Client, Value, u32) {
    let mut c = Podman::get().spin_c(user, groups, phase, "thread");
    let v = c.line();
    let tid = c.host_tid(v["tid"].as_u64().unwrap());
    (c, v, tid)
}

const PY_SPIN: &str = "import json, os, sys, threading, scx_phase\n\
err = None\n\
try:\n    scx_phase.set_phase('backward')\nexcept Exception as e:\n    err = f'{type(e).__name__}: {e}'\n\
print(json.dumps({'pid': os.getpid(), 'tid': threading.get_native_id(), 'error': err}), flush=True)\n\
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n\
while True: pass\n";

#[test]
fn containers_hint_themselves_under_their_default_seccomp_profile() {
    let _loader = Loader::start(&["--hint-group", GROUP]);
    // The hogs once the first container is up: among them, podman's first
    // run in a boot took 22 s, against 6 s for the next.
    let (base, b, base_tid) = ctr_spin(MEMBER, &[GROUP], "none");
    let _hogs = Hogs::start(4);
    std::thread::sleep(Duration::from_millis(300)); // for them to spin
    let unhinted = share(base_tid);
    drop(base);

    let (c, v, tid) = ctr_spin(MEMBER, &[GROUP], "3");
    assert_eq!(v["set"], 0, "{v}");
    // The runtime's seccomp filter is on, and bpf() is not allowed.
    assert_eq!(v["seccomp"], 2, "{v}");
    assert_eq!(v["bpf"], -1, "{v}");
    assert_eq!(v["bpf_errno"], libc::EPERM, "{v}");
    assert_eq!(v["pid"], 1, "not in its own PID namespace: {v}");
    let c_share = share(tid);
    // The hint reached the container's thread, not the host's pid 1.
    let dump = scx_phase(&["dump", "--json"]);
    let entries: Vec<Value> = serde_json::from_slice(&dump.stdout).unwrap();
    let mine = entries
        .iter()
        .find(|e| e["tid"] == tid)
        .expect("in the dump");
    assert_eq!(
        (mine["phase"].as_str(), mine["ns_tid"].as_u64()),
        (Some("backward"), Some(1))
    );
    assert!(
        !entries.iter().any(|e| e["tid"] == 1),
        "host pid 1 has a hint"
    );
    drop(c);

    let mut py = Podman::get().python(MEMBER, &[GROUP], PY_SPIN);
    let p = py.line();
    assert!(p["error"].is_null(), "{p}");
    let py_share = share(py.host_tid(p["tid"].as_u64().unwrap()));
    drop(py);
    println!(
        "MEASURED podman (default seccomp: mode {}, bpf() errno {}; own PID namespace, tid {} inside is host tid {tid}; no added capability; uid 4243 in the hint group) among 4 hogs on {} vCPUs: un-hinted {unhinted:.1}%, C backward {c_share:.1}%, Python backward {py_share:.1}%",
        v["seccomp"],
        v["bpf_errno"],
        b["tid"],
        nr_cpus()
    );
    assert!(c_share >= 85.0, "C in a container: {c_share:.1}%");
    assert!(py_share >= 85.0, "Python in a container: {py_share:.1}%");
}

fn run_as(user: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--clear-groups",
        ])
        .arg(BIN)
        .args(args)
        .output()
        .unwrap()
}

fn one_line(o: &std::process::Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert!(!o.status.success(), "an attack succeeded: {e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    e
}

#[test]
fn other_tenants_cannot_raise_themselves_or_demote_anyone() {
    let _loader = Loader::start(&["--hint-group", GROUP]);
    let _hogs = Hogs::start(4);
    // Victims: an un-hinted spinner in the first tenant's container, and
    // one of root's on the host.
    let (victim_ctr, _, a) = ctr_spin(MEMBER, &[GROUP], "none");
    let mut victim_root = spin_c("none", "thread", None);
    let vr = victim_root.line();
    let b = victim_root.host_tid(vr["tid"].as_u64().unwrap());
    // Attackers: a second container (another uid, no group) that tries to
    // raise itself through the library and by writing its slot raw; a host
    // user outside the group.
    let (attacker, av, c) = ctr_spin(STRANGER, &[], "3");
    assert_eq!(av["set"], -libc::EPERM, "{av}");
    let mut raw_ctr = {
        let t = tag("ctr-raw");
        let cmd = vec![
            "/usr/bin/python3".into(),
            root().join("tests/tools/hint_raw.py").display().to_string(),
            "own".into(),
            "3".into(),
            "spin".into(),
            t.clone(),
        ];
        Podman::get().run(STRANGER, &[], &cmd, &t)
    };
    let rv = raw_ctr.line();
    let d = raw_ctr.host_tid(rv["tid"].as_u64().unwrap());
    let mut host_user = spin_c("none", "thread", Some(HOST_USER));
    let hv = host_user.line();
    let e = host_user.host_tid(hv["tid"].as_u64().unwrap());

    let tids = [a, b, c, d, e];
    let before = shares(&tids, MEASURE);

    let mut refused = Vec::new();
    // The host user: demote each victim, raise itself, open the map.
    for victim in [a, b] {
        let o = run_as(
            HOST_USER,
            &["set", "--tid", &victim.to_string(), "--phase", "idle"],
        );
        refused.push(format!("uid 4244 demoting tid {victim}: {}", one_line(&o)));
    }
    let o = run_as(
        HOST_USER,
        &["set", "--tid", &e.to_string(), "--phase", "backward"],
    );
    refused.push(format!("uid 4244 raising itself: {}", one_line(&o)));
    let direct = Command::new("setpriv")
        .args([
            &format!("--reuid={HOST_USER}"),
            &format!("--regid={HOST_USER}"),
            "--clear-groups",
        ])
        .args([
            "bpftool",
            "map",
            "update",
            "pinned",
            "/sys/fs/bpf/scx_phase/phase_map",
        ])
        .args([
            "key", "1", "0", "0", "0", "value", "0", "0", "0", "0", "255", "255", "255", "255",
        ])
        .output()
        .unwrap();
    assert!(
        !direct.status.success(),
        "the pinned map took a write from uid 4244"
    );
    // The second container, by the numbers it sees: its own pid 1 is
    // itself; the victims' host numbers name nothing in its namespace.
    let t = tag("ctr-attack");
    let script = format!(
        "for t in {a} {b}; do {bin} set --tid $t --phase idle 2>&1; done; {bin} set --tid 1 --phase backward 2>&1; echo {t}",
        bin = BIN
    );
    let out = Podman::get()
        .run(STRANGER, &[], &["/bin/sh".into(), "-c".into(), script], &t)
        .rest();
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("scx-test")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        assert!(
            l.contains("no thread with id") || l.contains("refused"),
            "a container attack was not refused: {l}"
        );
    }
    refused.push(format!("container uid 5000: {}", lines.join(" | ")));

    let after = shares(&tids, MEASURE);
    let names = [
        "victim in container",
        "root's victim",
        "container attacker (library)",
        "container attacker (raw write)",
        "host attacker",
    ];
    let table: Vec<String> = names
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(n, (x, y))| format!("{n} {x:.1}% -> {y:.1}%"))
        .collect();
    println!(
        "MEASURED cross-tenant attempts, shares before -> after among 4 hogs: {}",
        table.join(", ")
    );
    println!("MEASURED refusals: {}", refused.join("; "));
    // Everyone stays where un-hinted threads are: within 5 points of the
    // un-hinted victims' mean, before and after.
    let unhinted = (before[0] + before[1]) / 2.0;
    for (i, (x, y)) in before.iter().zip(&after).enumerate() {
        assert!(
            (y - unhinted).abs() <= 5.0 && (x - unhinted).abs() <= 5.0,
            "{}: {x:.1}% -> {y:.1}% against un-hinted {unhinted:.1}%",
            names[i]
        );
    }
    drop((victim_ctr, attacker, raw_ctr, host_user, victim_root));
}
