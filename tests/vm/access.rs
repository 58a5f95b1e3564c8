//! `--hint-group` governs who may raise threads through the hint service;
//! the pinned maps are root's alone. Checked with
//! kernel.unprivileged_bpf_disabled at 2 (Debian's default) and at 1: the
//! service path needs no bpf() from the client at all.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use scx_phase::stats::StatsMap;

use crate::clients::{Client, tag};
use crate::support::*;
use crate::workload::{Hogs, nr_cpus, shares};

const GID: &str = "4242";
const UID: &str = "4243";

fn as_user(groups: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([&format!("--reuid={UID}"), &format!("--regid={UID}"), groups])
        .arg(BIN)
        .args(args)
        .output()
        .expect("setpriv")
}

fn own_sleeper() -> Child {
    Command::new("setpriv")
        .args([
            &format!("--reuid={UID}"),
            &format!("--regid={UID}"),
            "--clear-groups",
            "sleep",
            "600",
        ])
        .spawn()
        .expect("sleeper")
}

#[test]
fn the_hint_group_may_raise_through_the_service_and_the_maps_are_roots() {
    require_sched_ext();
    let loader = Loader::start(&["--hint-group", GID]);
    assert!(
        loader
            .log()
            .contains("members of group 4242 (gid 4242) may raise threads"),
        "{}",
        loader.log()
    );
    let mut target = own_sleeper();
    let tid = target.id().to_string();
    let sysctl = "/proc/sys/kernel/unprivileged_bpf_disabled";
    let mut seen = Vec::new();
    for setting in ["2", "1"] {
        std::fs::write(sysctl, setting).expect("set unprivileged_bpf_disabled");
        let _ = scx_phase(&["clear", "--tid", &tid]);

        let raise = ["set", "--tid", &tid, "--phase", "backward"];
        let outsider = as_user("--clear-groups", &raise);
        let err = String::from_utf8_lossy(&outsider.stderr);
        assert_eq!(outsider.status.code(), Some(1), "outsider: {err}");
        assert!(err.contains("membership in the hint group '4242'"), "{err}");
        let lower = as_user("--clear-groups", &["set", "--tid", &tid, "--phase", "idle"]);
        assert!(
            lower.status.success(),
            "an outsider may lower its own thread: {}",
            String::from_utf8_lossy(&lower.stderr)
        );

        let member = as_user(&format!("--groups={GID}"), &raise);
        assert!(
            member.status.success(),
            "group member refused with unprivileged_bpf_disabled={setting}: {}",
            String::from_utf8_lossy(&member.stderr)
        );
        let got = scx_phase(&["get", "--tid", &tid]);
        assert!(
            String::from_utf8_lossy(&got.stdout).contains("backward"),
            "{}",
            String::from_utf8_lossy(&got.stdout)
        );
        // Not even the group opens the pinned map itself.
        let direct = Command::new("setpriv")
            .args([
                &format!("--reuid={UID}"),
                &format!("--regid={UID}"),
                &format!("--groups={GID}"),
            ])
            .args([
                "bpftool",
                "map",
                "dump",
                "pinned",
                "/sys/fs/bpf/scx_phase/phase_map",
            ])
            .output()
            .unwrap();
        assert!(
            !direct.status.success(),
            "a group member opened the pinned map"
        );
        seen.push(format!(
            "unprivileged_bpf_disabled={setting}: outsider refused ({}), outsider lowered its own thread, member raised it; the pinned map refused the member",
            err.trim()
        ));
    }
    println!("MEASURED --hint-group: {}", seen.join("; "));
    let _ = target.kill();
    let _ = target.wait();
}

/// A Python process of uid UID (in the hint group if `member`) that names
/// its main thread `name`, registers with the hint service if `register`
/// (as `import scx_phase` does on its first call), prints its tid and
/// spins until its stdin closes.
fn named_spinner(name: &str, member: bool, register: bool) -> (Client, u32) {
    let code = format!(
        r#"
import ctypes, json, os, sys, threading
ctypes.CDLL(None).prctl(15, b"{name}", 0, 0, 0)
if {register}:
    import scx_phase
    scx_phase.clear_process_phase()
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
print(json.dumps({{"tid": threading.get_native_id()}}), flush=True)
while True:
    pass
"#,
        register = if register { "True" } else { "False" }
    );
    let t = tag("named");
    let groups = if member {
        format!("--groups={GID}")
    } else {
        "--clear-groups".into()
    };
    let argv: Vec<String> = [
        "setpriv",
        &format!("--reuid={UID}"),
        &format!("--regid={UID}"),
        &groups,
        "/usr/bin/python3",
        "-c",
        &code,
        &t,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut c = Client::spawn(&argv, &t);
    let tid = c.line()["tid"].as_u64().expect("tid");
    let host = c.host_tid(tid);
    (c, host)
}

/// The share of a CPU `name`'s spinner gets among the hogs, over 4 s.
fn named_share(name: &str, member: bool, register: bool) -> f64 {
    let (_c, tid) = named_spinner(name, member, register);
    shares(&[tid], Duration::from_secs(4))[0]
}

fn refused() -> u64 {
    StatsMap::open(Path::new(PIN_DIR))
        .unwrap()
        .read()
        .unwrap()
        .refused_hints()
}

#[test]
fn a_name_raises_only_a_thread_whose_process_may_raise() {
    require_sched_ext();
    let mut seen = Vec::new();
    {
        let _loader = Loader::start(&["--hint-group", GID]);
        let _hogs = Hogs::start(4);
        let plain = named_share("spin", false, false);
        let r0 = refused();
        let outsider = named_share("pt_autograd_0", false, false);
        let r1 = refused();
        let member = named_share("pt_autograd_0", true, true);
        let outsider_registered = named_share("pt_autograd_0", false, true);
        println!(
            "MEASURED a thread named pt_autograd_0 among 4 hogs on {} vCPUs, uid {UID}: plain name {plain:.1}%; named, outside the hint group {outsider:.1}% ({} lookups refused); named, outside the group but registered {outsider_registered:.1}%; named, a registered member of the group {member:.1}%",
            nr_cpus(),
            r1 - r0
        );
        seen.push(format!("{plain:.1} {outsider:.1} {member:.1}"));
        assert!(
            (outsider - plain).abs() < 10.0,
            "a name raised a thread of a process that may not raise: {outsider:.1}% against {plain:.1}% for its plain twin"
        );
        assert!(
            (outsider_registered - plain).abs() < 10.0,
            "a name raised a registered outsider: {outsider_registered:.1}% against {plain:.1}%"
        );
        assert!(r1 > r0, "the refused name was not counted");
        assert!(
            member >= 85.0,
            "a registered member's pt_autograd_0 got {member:.1}%: zero-code-change PyTorch lost its boost"
        );
        assert_eq!(state(), "enabled");
    }
    // A single-tenant node may trust every name.
    let _loader = Loader::start(&["--hint-group", GID, "--trust-names"]);
    let _hogs = Hogs::start(4);
    let trusted = named_share("pt_autograd_0", false, false);
    println!("MEASURED with --trust-names, the outsider's pt_autograd_0: {trusted:.1}%");
    assert!(
        trusted >= 85.0,
        "--trust-names: the outsider's named thread got {trusted:.1}%"
    );
}

/// A client of uid UID connects to the hint service and forks; the parent
/// then execs `exec` (or sleeps, if None), and the child, once the parent
/// runs it, sends Hello on the shared connection. The reply, as JSON.
fn hello_after_exec(exec: Option<&str>) -> serde_json::Value {
    let code = format!(
        r#"
import json, os, socket, struct, sys, time
exec_path = {exec}
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(os.environ.get("SCX_PHASE_SOCKET", "/run/scx_phase/hint.sock"))
parent = os.getpid()
if os.fork() == 0:
    def euid():
        return int([l.split()[2] for l in open(f"/proc/{{parent}}/status") if l.startswith("Uid:")][0])
    for _ in range(200):
        if exec_path is None or euid() == 0:
            break
        time.sleep(0.05)
    s.send(struct.pack("<HHIiI", 1, 1, 0, -1, 0))
    data = s.recv(4096)
    _, n, status = struct.unpack_from("<HHi", data)
    print(json.dumps({{"status": status, "message": data[28:28 + n].decode(), "parent_euid": euid()}}), flush=True)
    sys.exit(0)
if exec_path is not None:
    os.execv(exec_path, ["sleep", "20"])
time.sleep(20)
"#,
        exec = exec.map_or("None".to_string(), |p| format!("'{p}'")),
    );
    let mut child = Command::new("setpriv")
        .args([
            &format!("--reuid={UID}"),
            &format!("--regid={UID}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &code,
        ])
        .stderr(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the child's reply");
    let _ = child.kill();
    let _ = child.wait();
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("child printed {line:?}"))
}

#[test]
fn a_client_whose_credentials_changed_since_it_connected_is_refused() {
    require_sched_ext();
    let _loader = Loader::start(&["--hint-group", GID]);
    // A setuid-root program of our own (the VM's /tmp allows setuid).
    let suid = "/tmp/scx-test-suid-sleep";
    std::fs::copy("/usr/bin/sleep", suid).expect("copy sleep");
    std::os::unix::fs::chown(suid, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let plain = hello_after_exec(None);
    let exec = hello_after_exec(Some(suid));
    println!(
        "MEASURED a client of uid {UID} that connected, forked, and then sent Hello from the child: parent unchanged: status {} (parent euid {}); parent exec'd a setuid-root program: status {} (parent euid {}): {}",
        plain["status"], plain["parent_euid"], exec["status"], exec["parent_euid"], exec["message"]
    );
    let _ = std::process::Command::new("pkill")
        .args(["-f", suid])
        .status();
    assert_eq!(plain["status"], 0, "{plain}");
    assert_eq!(
        exec["parent_euid"], 0,
        "the setuid program did not run: {exec}"
    );
    assert_eq!(exec["status"], -libc::EPERM, "{exec}");
    assert!(
        exec["message"]
            .as_str()
            .unwrap_or("")
            .contains("credentials changed since you connected"),
        "{exec}"
    );
    assert_eq!(state(), "enabled");
}
