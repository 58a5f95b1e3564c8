//! The hint service on the host (no sched_ext needed): a real
//! `scx_phase --hint-service-only` on a private bpffs, real clients in
//! other users and PID namespaces, and what the `hints` iterator (the
//! scheduler's own resolution code) says of their threads.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HintService, client_env, stderr};
use serde_json::Value;

const NOBODY: &str = "65534";
const MEMBER: &str = "4243";
const GROUP: &str = "4242";
const OTHER: &str = "4244";

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn raw_tool() -> String {
    root().join("tests/tools/hint_raw.py").display().to_string()
}

/// `cmd` prefixed to run as `uid` (with `groups`, or none).
fn as_user(uid: Option<&str>, groups: Option<&str>) -> Vec<String> {
    match uid {
        None => vec![],
        Some(u) => {
            let g =
                groups.map_or_else(|| "--clear-groups".to_string(), |g| format!("--groups={g}"));
            vec![
                "setpriv".into(),
                format!("--reuid={u}"),
                format!("--regid={u}"),
                g,
            ]
        }
    }
}

/// A client process, with its stdout read line by line.
struct Client {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

/// A client process: `/usr/bin/python3 ARGS`, as `uid`, under `wrap`
/// (e.g. unshare), with stdin and stdout piped.
fn client(
    svc: &HintService,
    wrap: &[&str],
    uid: Option<&str>,
    groups: Option<&str>,
    args: &[&str],
) -> Client {
    let mut argv: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
    argv.extend(as_user(uid, groups));
    argv.push("/usr/bin/python3".into());
    argv.extend(args.iter().map(|s| s.to_string()));
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(client_env(svc))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a client");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    Client { child, out }
}

/// The next JSON line a client prints.
fn line(c: &mut Client) -> Value {
    let mut l = String::new();
    c.out.read_line(&mut l).expect("read");
    serde_json::from_str(&l).unwrap_or_else(|_| {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(c.child.stderr.as_mut().unwrap(), &mut err);
        panic!("client printed {l:?}; stderr: {err}")
    })
}

fn finish(mut c: Client) -> (Option<i32>, String) {
    drop(c.child.stdin.take());
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut c.out, &mut text);
    let out = c.child.wait_with_output().expect("wait");
    (
        out.status.code(),
        text + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Python that prints one JSON line per `emit(...)`, then waits for EOF
/// on stdin.
const PRELUDE: &str = "import json, os, sys, threading, time, scx_phase\n\
def emit(**kw): print(json.dumps(kw), flush=True)\n\
def tid(): return threading.get_native_id()\n\
def attempt(f, *a):\n    try:\n        return ('ok', f(*a))\n    except Exception as e:\n        return (type(e).__name__, str(e))\n";

fn py(body: &str) -> String {
    format!("{PRELUDE}{body}\nsys.stdin.read()\n")
}

fn sleeper() -> Child {
    Command::new("sleep").arg("600").spawn().unwrap()
}

fn sleeper_as(uid: &str) -> Child {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "sleep",
            "600",
        ])
        .spawn()
        .unwrap()
}

fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn a_thread_in_a_pid_namespace_hints_itself_by_its_own_numbers() {
    let svc = HintService::start();
    let code = py(
        "emit(pid=os.getpid(), tid=tid(), set=attempt(scx_phase.set_phase, 'checkpoint'), \
                   one_shot=attempt(scx_phase.set_thread_phase, 1, 'idle'))",
    );
    let mut c = client(
        &svc,
        &["unshare", "--pid", "--fork", "--mount-proc"],
        None,
        None,
        &["-c", &code],
    );
    let got = line(&mut c);
    assert_eq!(got["pid"], 1, "{got}");
    assert_eq!(got["set"][0], "ok", "{got}");
    assert_eq!(got["one_shot"][0], "ok", "{got}");
    let dump = svc.dump();
    let mine: Vec<&Value> = dump.iter().filter(|e| e["ns_tid"] == 1).collect();
    assert_eq!(mine.len(), 1, "{dump:?}");
    let host_tid = mine[0]["tid"].as_u64().unwrap();
    assert_ne!(host_tid, 1);
    // The one-shot hint (tid map) wins over the thread's own slot.
    assert_eq!(mine[0]["phase"], "idle", "{}", mine[0]);
    assert_eq!(mine[0]["source"], "tid map");
    assert!(svc.unhinted(1), "the host's pid 1 got a hint: {dump:?}");
    println!(
        "MEASURED pid namespace: 'tid 1' inside is host tid {host_tid}; host pid 1 has no hint"
    );
    finish(c);
}

#[test]
fn a_pidfd_from_outside_the_namespace_is_refused() {
    let svc = HintService::start();
    let victim = sleeper();
    let pidfd = scx_phase::sys::pidfd_open(victim.id() as i32, true).unwrap();
    // Hand the pidfd to a process that then lives in a new PID namespace.
    // SAFETY: clearing FD_CLOEXEC on our own fd.
    unsafe { libc::fcntl(pidfd.as_raw_fd(), libc::F_SETFD, 0) };
    let fd = pidfd.as_raw_fd().to_string();
    let mut c = client(
        &svc,
        &["unshare", "--pid", "--fork"],
        None,
        None,
        &[&raw_tool(), "set-fd", &fd, "0"],
    );
    let r = line(&mut c);
    assert_eq!(r["status"], -libc::EPERM, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("not in your PID namespace"),
        "{r}"
    );
    assert!(svc.unhinted(victim.id()));
    println!(
        "MEASURED a pidfd smuggled into a PID namespace: {}",
        r["message"]
    );
    finish(c);
    kill(victim);
}

#[test]
fn an_unprivileged_user_may_lower_its_own_threads_and_nothing_else() {
    let svc = HintService::start();
    let root_thread = sleeper();
    let code = format!(
        "{PRELUDE}import subprocess\n\
         s = subprocess.Popen(['sleep', '600'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
         emit(tid=tid(), idle=attempt(scx_phase.set_phase, 'idle'), \
              raise_=attempt(scx_phase.set_phase, 'backward'), \
              process=attempt(scx_phase.set_process_phase, 'forward'), \
              root=attempt(scx_phase.set_thread_phase, {}, 'idle'), \
              child=attempt(scx_phase.set_thread_phase, s.pid, 'idle'), child_pid=s.pid)\n\
         sys.stdin.read()\ns.kill()\n",
        root_thread.id()
    );
    let mut c = client(&svc, &[], Some(NOBODY), None, &["-c", &code]);
    let r = line(&mut c);
    assert_eq!(r["idle"][0], "ok", "{r}");
    assert_eq!(r["raise_"][0], "PermissionError", "{r}");
    assert!(
        r["raise_"][1]
            .as_str()
            .unwrap()
            .contains("may set idle only"),
        "{r}"
    );
    assert_eq!(r["process"][0], "PermissionError", "{r}");
    assert_eq!(r["root"][0], "PermissionError", "{r}");
    assert!(r["root"][1].as_str().unwrap().contains("kill(2)"), "{r}");
    assert_eq!(r["child"][0], "ok", "{r}");
    let tid = r["tid"].as_u64().unwrap() as u32;
    let mine = svc.hint_of(tid).expect("own idle hint");
    assert_eq!(
        (mine["phase"].as_str(), mine["source"].as_str()),
        (Some("idle"), Some("thread"))
    );
    let child = svc
        .hint_of(r["child_pid"].as_u64().unwrap() as u32)
        .expect("child hint");
    assert_eq!(child["source"], "tid map");
    assert!(svc.unhinted(root_thread.id()));
    let n = svc.counters();
    assert!(n.refused >= 1, "one-shot refusals are counted");

    // A client that skips the library and writes a raised phase into its
    // own slot anyway: the scheduler ignores it, and says so.
    let mut raw = client(&svc, &[], Some(NOBODY), None, &[&raw_tool(), "own", "3"]);
    let r = line(&mut raw);
    assert_eq!(r["hello"]["allow"], 1, "{r}");
    let t = svc
        .hint_of(r["tid"].as_u64().unwrap() as u32)
        .expect("ignored value shows");
    assert_eq!(t["phase"], Value::Null, "{t}");
    assert_eq!(t["ignored"], "backward (not allowed)", "{t}");
    println!(
        "MEASURED unprivileged client: idle ok; backward refused ({}); root's thread refused (the kill rule); a raw backward write ignored: {}",
        r["hello"]["message"], t["ignored"]
    );
    finish(raw);
    finish(c);
    kill(root_thread);
}

#[test]
fn a_hint_group_member_may_raise_its_own_threads_only() {
    let svc = HintService::start_with(&["--hint-group", GROUP]);
    let other = sleeper_as(OTHER);
    let code = py(&format!(
        "emit(tid=tid(), raise_=attempt(scx_phase.set_phase, 'backward'), \
              process=attempt(scx_phase.set_process_phase, 'forward'), \
              other=attempt(scx_phase.set_thread_phase, {}, 'idle'))",
        other.id()
    ));
    let mut c = client(&svc, &[], Some(MEMBER), Some(GROUP), &["-c", &code]);
    let r = line(&mut c);
    assert_eq!(r["raise_"][0], "ok", "{r}");
    assert_eq!(r["process"][0], "ok", "{r}");
    assert_eq!(r["other"][0], "PermissionError", "{r}");
    let mine = svc.hint_of(r["tid"].as_u64().unwrap() as u32).unwrap();
    assert_eq!(mine["phase"], "backward");
    assert!(mine["workload"].is_u64(), "{mine}");
    assert!(svc.unhinted(other.id()));
    // The same user without the group may not raise.
    let mut out = client(
        &svc,
        &[],
        Some(MEMBER),
        None,
        &["-c", &py("emit(r=attempt(scx_phase.set_phase, 'forward'))")],
    );
    let r2 = line(&mut out);
    assert_eq!(r2["r"][0], "PermissionError", "{r2}");
    assert!(r2["r"][1].as_str().unwrap().contains("gid 4242"), "{r2}");
    finish(out);
    finish(c);
    kill(other);
}

#[test]
fn garbage_in_the_shared_memory_is_ignored() {
    let svc = HintService::start();
    // Root may set anything; garbage is garbage whoever writes it.
    let mut c = client(
        &svc,
        &[],
        None,
        None,
        &[&raw_tool(), "own", "0xdeadbeef00000063"],
    );
    let r = line(&mut c);
    let tid = r["tid"].as_u64().unwrap() as u32;
    let e = svc.hint_of(tid).expect("the ignored value shows");
    assert_eq!(e["phase"], Value::Null, "{e}");
    assert_eq!(e["ignored"], "99 (invalid)", "{e}");
    finish(c);
    // The process slot too.
    let mut p = client(
        &svc,
        &[],
        None,
        None,
        &[&raw_tool(), "scribble", "0", "0x7777777777"],
    );
    let r = line(&mut p);
    assert_eq!(r["hello"]["status"], 0, "{r}");
    // Its main thread has nothing of its own: the process slot's garbage
    // shows as ignored, and it has no phase.
    let e = svc
        .hint_of(r["tid"].as_u64().unwrap() as u32)
        .expect("the ignored value shows");
    assert_eq!(e["phase"], Value::Null, "{e}");
    assert_eq!(e["ignored"], format!("{} (invalid)", 0x7777_7777u32), "{e}");
    finish(p);
}

#[test]
fn malformed_requests_get_one_line_errors_and_the_sender_is_cut_off() {
    let svc = HintService::start();
    let mut c = client(&svc, &[], Some(NOBODY), None, &[&raw_tool(), "garbage"]);
    let mut seen = Vec::new();
    for _ in 0..9 {
        let r = line(&mut c);
        seen.push(r);
    }
    let (code, text) = finish(c);
    assert_eq!(code, Some(0), "{text}");
    for r in &seen[..8] {
        assert_eq!(r["status"], -libc::EINVAL, "{r}");
        let m = r["message"].as_str().unwrap();
        assert!(m.starts_with("refused") && !m.contains('\n'), "{r}");
    }
    // After 8 malformed requests the service stops listening to it.
    assert!(seen[8]["status"].is_null(), "{:?}", seen[8]);
    let n = svc.counters();
    assert!(
        n.bad_requests >= 8 && n.dropped_clients >= 1,
        "bad {} dropped {}",
        n.bad_requests,
        n.dropped_clients
    );
    // And it serves everyone else as before.
    let mut ok = client(&svc, &[], Some(NOBODY), None, &[&raw_tool(), "hello"]);
    assert_eq!(line(&mut ok)["status"], 0);
    finish(ok);
    println!(
        "MEASURED malformed requests: {}",
        seen[..8]
            .iter()
            .map(|r| format!("{}: {}", r["case"], r["message"]))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// Workloads' memories in the outer map: every registered process's, and
/// the spares installed ahead.
fn installed_memories(svc: &HintService) -> usize {
    let outer =
        scx_phase::sys::obj_get(&svc.pin_dir().join(scx_phase::inspect::MEMORY_MAP)).unwrap();
    (1..scx_phase::bpf_intf::scx_phase_hint_limits_SCX_PHASE_MAX_WORKLOADS)
        .filter(|wid| {
            matches!(
                scx_phase::sys::map_lookup::<u32, u32>(std::os::fd::AsFd::as_fd(&outer), wid),
                Ok(Some(_))
            )
        })
        .count()
}

/// A process's hints count from the moment its first call returns. Its
/// memory was in the outer map before it came (a spare), so Hello
/// publishes its registry entry itself. Before, the entry came from the
/// installer after an RCU grace period: milliseconds on an idle host,
/// 320-575 ms each with 32 CPU hogs on 16 vCPUs, and the scheduler
/// ignored 8 ranks' loaders' stored hints for up to 3.5 s.
#[test]
fn a_process_is_honoured_as_soon_as_its_first_call_returns() {
    let svc = HintService::start();
    // The spares, installed one grace period after another as the service
    // starts (judged below by what they are for, not here).
    let t0 = Instant::now();
    while installed_memories(&svc) < 8 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let spares_ms = t0.elapsed().as_secs_f64() * 1e3;
    let registry =
        scx_phase::sys::obj_get(&svc.pin_dir().join(scx_phase::inspect::WORKLOADS_MAP)).unwrap();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = client(&svc, &[], None, None, &[&raw_tool(), "own", "3"]);
        let r = line(&mut c);
        // At once: no waiting, no retry.
        let entry: Option<scx_phase::bpf_intf::hint_workload> = scx_phase::sys::map_lookup(
            std::os::fd::AsFd::as_fd(&registry),
            &(r["hello"]["wid"].as_u64().unwrap() as u32),
        )
        .unwrap();
        assert_eq!(
            entry.map(|e| e.pid as u64),
            r["pid"].as_u64(),
            "the registry entry of workload {} as its client's first call returned: {entry:?}",
            r["hello"]["wid"]
        );
        let tid = r["tid"].as_u64().unwrap() as u32;
        assert_eq!(svc.hint_of(tid).unwrap()["phase"], "backward");
        clients.push(c);
    }
    println!(
        "MEASURED 8 processes registered one after another: each in the registry as its first call returned (8 spares installed {spares_ms:.0} ms after the service started)"
    );
    for c in clients {
        finish(c);
    }
}

/// How long a fresh client takes to register and bind a thread, in ms.
fn registration_ms(svc: &HintService, n: usize) -> Vec<f64> {
    let code = "import time, socket, sys\nsys.path.insert(0, sys.argv[1])\nimport hint_raw\n\
                for _ in range(int(sys.argv[2])):\n    t = time.monotonic()\n    s = hint_raw.connect()\n    \
                r, m = hint_raw.hello(s)\n    b = hint_raw.bind_me(s)\n    assert r['status'] == 0 and b['status'] == 0, (r, b)\n    \
                print((time.monotonic() - t) * 1e3, flush=True)\n    s.close()\n";
    let tools = root().join("tests/tools").display().to_string();
    let out = Command::new("/usr/bin/python3")
        .args(["-c", code, &tools, &n.to_string()])
        .envs(client_env(svc))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

#[test]
fn a_client_that_floods_and_never_reads_cannot_stall_the_others() {
    let svc = HintService::start();
    let quiet = registration_ms(&svc, 20);
    let floods: Vec<Client> = (0..4)
        .map(|_| {
            client(
                &svc,
                &[],
                Some(NOBODY),
                None,
                &[&raw_tool(), "flood", "200000"],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let busy = registration_ms(&svc, 20);
    let mut cut = 0;
    for mut f in floods {
        let r = line(&mut f);
        if r["cut"]
            .as_str()
            .is_some_and(|c| !c.starts_with("still open"))
        {
            cut += 1;
        }
        finish(f);
    }
    let n = svc.counters();
    println!(
        "MEASURED register+bind a thread: median {:.2} ms (max {:.2}) quiet, median {:.2} ms (max {:.2}) beside 4 flooding clients; {cut}/4 flooders cut off, {} dropped in all",
        quiet[10], quiet[19], busy[10], busy[19], n.dropped_clients
    );
    assert_eq!(cut, 4, "a flooder that never reads must be cut off");
    assert!(
        busy[19] < 500.0,
        "a registration took {:.0} ms beside the flood",
        busy[19]
    );
}

#[test]
fn one_user_cannot_take_every_connection() {
    let svc = HintService::start();
    let mut c = client(
        &svc,
        &[],
        Some(NOBODY),
        None,
        &[&raw_tool(), "connect", "260"],
    );
    let r = line(&mut c);
    assert_eq!(r["open"], 256, "{r}");
    assert_eq!(r["refused"], 4, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("per-user cap of 256"),
        "{r}"
    );
    // Root is another user: still served.
    let mut ok = client(&svc, &[], None, None, &[&raw_tool(), "hello"]);
    assert_eq!(line(&mut ok)["status"], 0);
    finish(ok);
    finish(c);
}

#[test]
fn users_at_their_caps_leave_room_for_newcomers() {
    let svc = HintService::start();
    // 16 users in turn each register 64 processes, 1,024 in all: more than
    // the service's table of 1,023, had they all been let in.
    let mut held = Vec::new();
    let mut got = Vec::new();
    for i in 0..16 {
        let uid = (20000 + i).to_string();
        let mut c = client(
            &svc,
            &[],
            Some(&uid),
            None,
            &[&raw_tool(), "register", "64"],
        );
        got.push(line(&mut c)["registered"].as_u64().unwrap());
        held.push(c);
    }
    // Then newcomers, as other users: a newcomer's share is 15.
    let mut newcomers = Vec::new();
    let mut refusal = None;
    for i in 0..4 {
        let uid = (30000 + i).to_string();
        let mut c = client(
            &svc,
            &[],
            Some(&uid),
            None,
            &[&raw_tool(), "register", "15"],
        );
        let r = line(&mut c);
        newcomers.push(r["registered"].as_u64().unwrap());
        refusal = refusal.or_else(|| r["message"].as_str().map(str::to_string));
        held.push(c);
    }
    println!(
        "MEASURED host: 16 users registering 64 processes each, in turn, got {got:?} ({} of 1023); then 4 newcomers registering 15 each got {newcomers:?} (a refusal: {refusal:?})",
        got.iter().sum::<u64>()
    );
    // 14 users fill 896 (all but the last eighth); the last two, holding
    // nothing yet, are newcomers themselves and get 15 each.
    let mut want = vec![64; 14];
    want.extend([15, 15]);
    assert_eq!(got, want);
    assert_eq!(newcomers, [15; 4], "a newcomer was refused: {refusal:?}");
    for c in held {
        finish(c);
    }
}

#[test]
fn a_users_subordinate_uids_are_charged_to_the_user() {
    let svc = HintService::start();
    let mut held = Vec::new();
    let mut got = Vec::new();
    let mut refusal = String::new();
    // Two rootless containers of uid 40000: each a user namespace it made,
    // mapped to its subordinate uids (400000-465535) as newuidmap would,
    // whose process runs as uid 0 and 1 inside (400000 and 400001 here).
    for (inner, n) in [("0", "200"), ("1", "60")] {
        let mut c = client(
            &svc,
            &[],
            Some("40000"),
            None,
            &[&raw_tool(), "userns-connect", inner, n],
        );
        let pid = line(&mut c)["pid"].as_u64().expect("its pid");
        for (file, text) in [
            ("setgroups", "deny"),
            ("uid_map", "0 400000 65536"),
            ("gid_map", "0 400000 65536"),
        ] {
            std::fs::write(format!("/proc/{pid}/{file}"), text)
                .unwrap_or_else(|e| panic!("write {file} of {pid}: {e}"));
        }
        writeln!(c.child.stdin.as_mut().unwrap()).unwrap();
        let r = line(&mut c);
        got.push(r["open"].as_u64().unwrap());
        if let Some(m) = r["message"].as_str() {
            refusal = m.to_string();
        }
        held.push(c);
    }
    println!(
        "MEASURED host: two processes of uid 40000's user namespaces, as uids 400000 and 400001, opening 200 and 60 connections got {got:?}: \"{refusal}\""
    );
    assert_eq!(
        got,
        [200, 56],
        "charged to the user who owns the namespaces"
    );
    assert!(
        refusal.contains("uid 40000 holds 256 connections"),
        "{refusal}"
    );
    for c in held {
        finish(c);
    }
}

#[test]
fn a_killed_client_is_freed() {
    let svc = HintService::start();
    let code = py("threads = []\n\
                   for i in range(8):\n    t = threading.Thread(target=lambda: (scx_phase.set_phase('forward'), time.sleep(600)), daemon=True); t.start(); threads.append(t)\n\
                   scx_phase.set_process_phase('backward')\n\
                   time.sleep(0.5)\nemit(pid=os.getpid())");
    let mut c = client(&svc, &[], None, None, &["-c", &code]);
    let pid = line(&mut c)["pid"].as_u64().unwrap() as u32;
    let before = svc.counters();
    assert_eq!((before.workloads, before.bound_threads), (1, 8));
    // The id of its hint memory, from the outer map.
    let memory = svc.pin_dir().join(scx_phase::inspect::MEMORY_MAP);
    let outer = scx_phase::sys::obj_get(&memory).unwrap();
    let wid = scx_phase::inspect::read_workloads(&svc.pin_dir()).unwrap()[0].0;
    let id: u32 = scx_phase::sys::map_lookup(std::os::fd::AsFd::as_fd(&outer), &wid)
        .unwrap()
        .expect("its memory is installed");
    let map_exists = |id: u32| {
        Command::new("bpftool")
            .args(["map", "show", "id", &id.to_string()])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(map_exists(id));
    let t0 = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = c.child.wait();
    let mut freed = None;
    while t0.elapsed() < Duration::from_secs(5) {
        let w = scx_phase::inspect::read_workloads(&svc.pin_dir()).unwrap();
        if w.is_empty() {
            freed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let freed = freed.expect("the killed client's workload is still registered 5 s later");
    let after = svc.counters();
    assert_eq!((after.workloads, after.bound_threads), (0, 0));
    // The kernel frees a map a moment after its last reference goes.
    let t1 = Instant::now();
    while map_exists(id) && t1.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !map_exists(id),
        "its hint memory (map id {id}) is still there"
    );
    println!(
        "MEASURED kill -9 of a client with 8 bound threads: registration and memory freed {:.1} ms later",
        freed.as_secs_f64() * 1e3
    );
}

#[test]
fn a_forked_child_registers_as_a_process_of_its_own() {
    let svc = HintService::start();
    let code = py("scx_phase.set_phase('forward')\n\
                   r, w = os.pipe()\n\
                   pid = os.fork()\n\
                   if pid == 0:\n    scx_phase.set_phase('idle')\n    os.write(w, b'x')\n    time.sleep(600)\n\
                   os.read(r, 1)\n\
                   emit(parent=tid(), child=pid)");
    let mut c = client(&svc, &[], None, None, &["-c", &code]);
    let r = line(&mut c);
    let parent = svc.hint_of(r["parent"].as_u64().unwrap() as u32).unwrap();
    let child = svc.hint_of(r["child"].as_u64().unwrap() as u32).unwrap();
    assert_eq!(
        parent["phase"], "forward",
        "the child wrote its parent's slot"
    );
    assert_eq!(child["phase"], "idle");
    assert_ne!(parent["workload"], child["workload"]);
    let _ = unsafe { libc::kill(r["child"].as_i64().unwrap() as i32, libc::SIGKILL) };
    finish(c);
}

#[test]
fn hints_survive_a_restart_and_clients_carry_on() {
    let mut svc = HintService::start();
    // A client that hints, then on each line of stdin hints again from its
    // main thread (a plain store) and from a new thread (a registration).
    let code = format!(
        "{PRELUDE}scx_phase.set_phase('backward')\nscx_phase.set_process_phase('forward')\nemit(tid=tid())\n\
         for l in sys.stdin:\n    scx_phase.set_phase('checkpoint')\n    out = {{}}\n    \
         def other():\n        out['r'] = attempt(scx_phase.set_phase, 'optimizer'); out['tid'] = tid(); time.sleep(600)\n    \
         threading.Thread(target=other, daemon=True).start()\n    time.sleep(0.5)\n    emit(**out)\n"
    );
    let mut c = client(&svc, &[], None, None, &["-c", &code]);
    let main = line(&mut c)["tid"].as_u64().unwrap() as u32;
    let before = svc.hint_of(main).unwrap();
    assert_eq!(before["phase"], "backward");
    for how in ["stop", "kill"] {
        if how == "stop" {
            svc.stop();
        } else {
            svc.kill();
        }
        // No service: the hint is still in the pinned maps.
        svc.restart();
        assert!(
            svc.log().contains("adopted 1 registered process(es)"),
            "{}",
            svc.log()
        );
        let after = svc.hint_of(main).expect("hint lost across the restart");
        assert_eq!(after["workload"], before["workload"], "{after}");
        writeln!(c.child.stdin.as_mut().unwrap(), "go").unwrap();
        let r = line(&mut c);
        assert_eq!(r["r"][0], "ok", "a new thread after the {how}: {r}");
        assert_eq!(svc.hint_of(main).unwrap()["phase"], "checkpoint");
        let fresh = svc.hint_of(r["tid"].as_u64().unwrap() as u32).unwrap();
        assert_eq!(fresh["phase"], "optimizer");
        assert_eq!(fresh["workload"], before["workload"]);
    }
    println!(
        "MEASURED service restart (SIGINT, then SIGKILL): the process kept its workload and hints; new threads registered through a new connection"
    );
    finish(c);
}

#[test]
fn bpftool_names_the_fields_of_a_workloads_memory() {
    let svc = HintService::start();
    let mut c = client(&svc, &[], None, None, &[&raw_tool(), "own", "3"]);
    let r = line(&mut c);
    let slot = r["bind"]["slot"].as_u64().unwrap();
    assert!(svc.hint_of(r["tid"].as_u64().unwrap() as u32).is_some());
    // The outer map gives the memory's map id; bpftool shows it by BTF.
    let memory = svc.pin_dir().join(scx_phase::inspect::MEMORY_MAP);
    let outer = scx_phase::sys::obj_get(&memory).unwrap();
    let wid = r["hello"]["wid"].as_u64().unwrap() as u32;
    let id: u32 = scx_phase::sys::map_lookup(std::os::fd::AsFd::as_fd(&outer), &wid)
        .unwrap()
        .unwrap();
    let out = Command::new("bpftool")
        .args(["-j", "map", "lookup", "id", &id.to_string(), "key"])
        .args((slot as u32).to_le_bytes().iter().map(|b| b.to_string()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["formatted"]["value"]["phase"], 3, "{v}");
    assert_eq!(v["formatted"]["value"]["numa_node"], 0, "{v}");
    let reg = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(svc.pin_dir().join(scx_phase::inspect::WORKLOADS_MAP))
        .output()
        .unwrap();
    let reg: Value = serde_json::from_slice(&reg.stdout).unwrap();
    let entry = reg
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["formatted"]["key"] == wid)
        .unwrap();
    assert_eq!(entry["formatted"]["value"]["pid"], r["pid"], "{entry}");
    println!(
        "MEASURED bpftool map lookup id {id} (workload {wid}'s memory), slot {slot}: {}; its registry entry: {}",
        v["formatted"]["value"], entry["formatted"]["value"]
    );
    finish(c);
}

/// The workload figures map is per CPU since 2026-12; an older version's
/// (one shared value per entry) left pinned is replaced with a warning,
/// not refused: it holds counts only. Maps that hold state are refused.
#[test]
fn an_older_versions_figures_map_is_replaced_and_its_hints_map_refused() {
    use scx_phase::inspect::WORKLOAD_STATS_MAP;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    let mut svc = HintService::start();
    svc.stop();
    let path = svc.pin_dir().join(WORKLOAD_STATS_MAP);
    std::fs::remove_file(&path).unwrap();
    let entries = scx_phase::bpf_intf::scx_phase_hint_limits_SCX_PHASE_MAX_WORKLOADS
        * scx_phase::stats::NR_SLOTS as u32;
    let value = std::mem::size_of::<scx_phase::bpf_intf::workload_phase_stats>() as u32;
    let map_type = |fd: std::os::fd::BorrowedFd<'_>| {
        // SAFETY: bpf_map_info is plain data; the kernel fills at most `len` bytes.
        let mut info: libbpf_rs::libbpf_sys::bpf_map_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: info and len are live.
        let r = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
        };
        assert_eq!(r, 0, "map info");
        info.type_
    };
    // SAFETY: creates a map; a null name and options are allowed.
    let old = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_create(
            libbpf_rs::libbpf_sys::BPF_MAP_TYPE_ARRAY,
            std::ptr::null(),
            4,
            value,
            entries,
            std::ptr::null(),
        )
    };
    assert!(old >= 0, "bpf_map_create: {old}");
    // SAFETY: a descriptor we just made.
    let old = unsafe { OwnedFd::from_raw_fd(old) };
    let c = scx_phase::sys::c_path(&path).unwrap();
    // SAFETY: a live descriptor and a C path.
    assert_eq!(
        unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(old.as_raw_fd(), c.as_ptr()) },
        0
    );
    drop(old);

    svc.restart();
    let log = svc.log();
    assert!(
        log.contains("the pinned workload_stats has another layout")
            && log.contains("replacing it"),
        "{log}"
    );
    let now = scx_phase::sys::obj_get(&path).expect("workload_stats pinned again");
    assert_eq!(
        map_type(now.as_fd()),
        libbpf_rs::libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY
    );

    // A map of state (the workloads' registry) of another layout: refused.
    svc.stop();
    let reg = svc.pin_dir().join(scx_phase::inspect::WORKLOADS_MAP);
    std::fs::remove_file(&reg).unwrap();
    // SAFETY: as above.
    let bad = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_create(
            libbpf_rs::libbpf_sys::BPF_MAP_TYPE_ARRAY,
            std::ptr::null(),
            4,
            8,
            1,
            std::ptr::null(),
        )
    };
    assert!(bad >= 0);
    // SAFETY: as above.
    let bad = unsafe { OwnedFd::from_raw_fd(bad) };
    let c = scx_phase::sys::c_path(&reg).unwrap();
    // SAFETY: as above.
    assert_eq!(
        unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(bad.as_raw_fd(), c.as_ptr()) },
        0
    );
    let out = common::scx_phase(&[
        "--hint-service-only",
        "--pin-dir",
        &svc.pin_dir().display().to_string(),
        "--hint-socket",
        &svc.dir.path().join("other.sock").display().to_string(),
    ]);
    let err = stderr(&out);
    let last = err.trim_end().lines().last().unwrap_or("");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        last.starts_with("scx_phase: error: the pinned hint_workloads has another layout"),
        "{err}"
    );
    println!(
        "MEASURED an older figures map: replaced, the service up; an older registry: {}",
        last
    );
}

#[test]
fn a_client_that_sends_files_that_block_when_closed_stalls_nobody() {
    let svc = HintService::start();
    // 12 Hellos, each with a TCP socket whose close waits 30 s for a peer
    // that never reads, from uid nobody; then Hello of its own.
    let mut hostile = client(
        &svc,
        &[],
        Some(NOBODY),
        None,
        &[&raw_tool(), "linger-hello", "12"],
    );
    let h = line(&mut hostile);
    // Another user registers meanwhile.
    let other = client(&svc, &[], Some(OTHER), None, &[&raw_tool(), "hello-ms"]);
    let (_, out) = finish(other);
    let o: Value = serde_json::from_str(out.lines().next().unwrap_or("{}")).unwrap();
    println!(
        "MEASURED 12 Hellos carrying lingering sockets from nobody: its own Hello then {h}; another user's Hello {o}"
    );
    let ms = o["ms"].as_f64().unwrap_or(f64::INFINITY);
    assert!(
        o["hello"]["status"] == 0 && ms < 1000.0,
        "another user's Hello beside files that block when closed: {o}"
    );
    // The sender is refused while its files wait to be closed.
    assert!(
        h["hello"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("still closing")),
        "{h}"
    );
    // Its peers go when it exits, the closes end, and it may connect again.
    finish(hostile);
    let t0 = Instant::now();
    loop {
        let again = client(&svc, &[], Some(NOBODY), None, &[&raw_tool(), "hello-ms"]);
        let (_, out) = finish(again);
        if out.contains("\"status\": 0") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nobody stays refused: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
