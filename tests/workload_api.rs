//! The workload API against a real `scx_phase --hint-service-only` on the
//! host: claims granted whole or refused in one line, released when the
//! client closes, dies, or dies mid-request; locked memory within the
//! host's budget through a raised RLIMIT_MEMLOCK; pressure watches; and
//! clients that lie. (Placement itself needs sched_ext: tests/vm/claims.rs.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HintService, client_env};
use serde_json::Value;

const NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A client: `argv` with stdin and stdout piped; its first JSON line.
struct Client {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Client {
    fn spawn(svc: &HintService, argv: &[&str]) -> Client {
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .envs(client_env(svc))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let out = BufReader::new(child.stdout.take().unwrap());
        Client { child, out }
    }

    /// The raw protocol tool, as root.
    fn raw(svc: &HintService, args: &[&str]) -> Client {
        let tool = root().join("tests/tools/hint_raw.py");
        let mut argv = vec!["/usr/bin/python3", tool.to_str().unwrap()];
        argv.extend_from_slice(args);
        Client::spawn(svc, &argv)
    }

    fn line(&mut self) -> Value {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap_or_else(|_| panic!("client printed {l:?}"))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line on its stdin.
    fn poke(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn workloads(svc: &HintService) -> Value {
    let mut args = vec!["workloads".to_string(), "--json".into()];
    args.extend(svc.args());
    let out = Command::new(env!("CARGO_BIN_EXE_scx_phase"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `workloads --json` once `ok` holds of it (it is refreshed every
/// 0.1 s), or the last one read after 2 s.
fn workloads_when(svc: &HintService, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let w = workloads(svc);
        if ok(&w) || t0.elapsed() > Duration::from_secs(2) {
            return w;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn row_of(w: &Value, pid: u32) -> Option<Value> {
    w["workloads"]
        .as_array()?
        .iter()
        .find(|r| r["pid"] == pid)
        .cloned()
}

fn pids_holding(w: &Value) -> Vec<u64> {
    w["workloads"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|w| {
            w["claims"].as_array().is_some_and(|c| !c.is_empty())
                || w["locked_bytes"].as_u64().unwrap_or(0) > 0
        })
        .filter_map(|w| w["pid"].as_u64())
        .collect()
}

fn all_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Time until a fresh exclusive claim of every CPU succeeds.
fn until_all_cpus_free(svc: &HintService, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let n = all_cpus().to_string();
    while t0.elapsed() < limit {
        let mut c = Client::raw(svc, &["claim", &n, "-1", "1"]);
        if c.line()["status"] == 0 {
            return Some(t0.elapsed());
        }
    }
    None
}

#[test]
fn a_claim_is_whole_or_refused_naming_the_holder_and_a_kill_frees_it() {
    let svc = HintService::start_with(&["--max-exclusive-pct", "100"]);
    let mut first = Client::raw(&svc, &["claim", "1", "-1", "1"]);
    let got = first.line();
    assert_eq!(got["status"], 0, "{got}");
    assert_eq!(got["slots"], 1, "one CPU: {got}");
    let w = workloads_when(&svc, |w| row_of(w, first.pid()).is_some());
    let row =
        row_of(&w, first.pid()).unwrap_or_else(|| panic!("pid {} not listed: {w}", first.pid()));
    assert_eq!(row["claims"][0]["exclusive"], true, "{row}");
    assert_eq!(row["claims"][0]["cpus"].as_array().unwrap().len(), 1);

    // All CPUs: over-committed by the one held; refused whole, at once.
    let t0 = Instant::now();
    let mut second = Client::raw(&svc, &["claim", &all_cpus().to_string(), "-1", "1"]);
    let refused = second.line();
    let answered = t0.elapsed();
    let why = refused["message"].as_str().unwrap().to_string();
    assert_eq!(refused["status"], -libc::EBUSY, "{refused}");
    assert!(
        why.contains(&format!("pid {} (uid 0) holds", first.pid())) && why.contains("free:"),
        "{why}"
    );
    assert!(!why.contains('\n'));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        pids_holding(&workloads(&svc)),
        vec![first.pid() as u64],
        "half-granted?"
    );
    drop(second);

    first.kill();
    let freed = until_all_cpus_free(&svc, Duration::from_secs(5))
        .expect("the CPUs were not free 5 s after kill -9");
    println!(
        "MEASURED host: a claim over what is free refused in {:.1} ms: \"{why}\"; kill -9 of the holder freed its CPU for a new claim in {:.0} ms",
        answered.as_secs_f64() * 1e3,
        freed.as_secs_f64() * 1e3
    );
    assert!(freed < Duration::from_secs(1), "{freed:?}");
}

#[test]
fn a_claim_ends_with_its_process_whatever_holds_its_socket() {
    let svc = HintService::start_with(&["--max-exclusive-pct", "100"]);
    let n = all_cpus().to_string();
    // The probe registers first: a workload registered later could get
    // the id of the one that ended, and its claim with it.
    let mut probe = Client::raw(&svc, &["claim-on-line", &n, "-1", "1"]);
    assert_eq!(probe.line()["registered"], true);
    // Every CPU, exclusively; then a fork that keeps the socket, and exit.
    let mut c = Client::raw(&svc, &["claim-fork-exit", &n, "-1", "1"]);
    let got = c.line();
    assert_eq!(got["status"], 0, "{got}");
    let child = got["child"].as_u64().unwrap() as i32;
    // Reaped without Child::wait(), which closes the stdin that the child
    // that keeps the socket waits on.
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(c.pid() as i32, std::ptr::null_mut(), 0) };
    let t0 = Instant::now();
    let mut freed = None;
    let mut last = Value::Null;
    while t0.elapsed() < Duration::from_secs(5) {
        probe.poke();
        last = probe.line();
        if last["status"] == 0 {
            freed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The child that keeps the socket is still there (not a zombie).
    let alive = std::fs::read_to_string(format!("/proc/{child}/status")).is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("State:") && !l.contains("zombie"))
    });
    println!(
        "MEASURED host: a process claimed every CPU exclusively, forked a child that keeps the socket, and exited: another workload's claim of them granted after {:?} (the child alive: {alive})",
        freed.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
    );
    drop(c);
    let freed = freed.unwrap_or_else(|| panic!("the claim outlived its process by 5 s: {last}"));
    assert!(alive, "the child exited: the test proved nothing");
    assert!(freed < Duration::from_secs(1), "{freed:?}");
}

#[test]
fn a_client_that_dies_mid_request_holds_nothing() {
    let svc = HintService::start_with(&["--max-exclusive-pct", "100"]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let mut c = Client::raw(&svc, &["claim-and-die", &all_cpus().to_string(), "-1", "1"]);
        assert_eq!(c.line()["sent"], true);
        let _ = c.child.wait();
        times.push(
            until_all_cpus_free(&svc, Duration::from_secs(5))
                .expect("a dead client's claim still held after 5 s"),
        );
    }
    let w = workloads_when(&svc, |w| pids_holding(w).is_empty());
    assert!(pids_holding(&w).is_empty(), "{w}");
    let ms: Vec<String> = times
        .iter()
        .map(|t| format!("{:.0}", t.as_secs_f64() * 1e3))
        .collect();
    println!(
        "MEASURED host: a client that sent an exclusive claim of every CPU and exited without reading the reply, 5 times: all CPUs claimable again after {} ms",
        ms.join("/")
    );
    assert!(times.iter().all(|t| *t < Duration::from_secs(1)), "{ms:?}");
}

#[test]
fn a_workload_id_comes_back_only_after_all_the_others() {
    let svc = HintService::start();
    let mut wids = Vec::new();
    for _ in 0..3 {
        // Registers, prints its reply, and exits: its workload ends.
        let mut c = Client::raw(&svc, &["hello"]);
        let r = c.line();
        assert_eq!(r["status"], 0, "{r}");
        wids.push(r["wid"].as_u64().unwrap());
        let pid = c.pid();
        let w = workloads_when(&svc, |w| row_of(w, pid).is_none());
        assert!(row_of(&w, pid).is_none(), "{w}");
    }
    // Lowest-first, each would have had the id the last one freed.
    assert!(
        wids[0] != wids[1] && wids[1] != wids[2] && wids[0] != wids[2],
        "ids {wids:?}"
    );
    println!("MEASURED host: three processes registered one after another's exit got ids {wids:?}");
}

#[test]
fn lying_workload_requests_get_one_line_refusals_and_change_nothing() {
    let svc = HintService::start_with(&["--max-locked-mem", "64M"]);
    let mut liar = Client::raw(&svc, &["workload-garbage"]);
    let mut seen = Vec::new();
    for _ in 0..14 {
        seen.push(liar.line());
    }
    for r in &seen {
        let m = r["message"].as_str().unwrap_or("");
        assert!(
            r["status"].as_i64().unwrap_or(0) < 0 && m.starts_with("refused") && !m.contains('\n'),
            "{r}"
        );
    }
    let w = workloads_when(&svc, |w| row_of(w, liar.pid()).is_some());
    assert!(row_of(&w, liar.pid()).is_some(), "{w}");
    assert_eq!(w["locked_used_bytes"], 0, "{w}");
    assert!(pids_holding(&w).is_empty(), "{w}");
    // The service still serves others.
    let mut ok = Client::raw(&svc, &["claim", "1", "-1", "0"]);
    assert_eq!(ok.line()["status"], 0);
    println!(
        "MEASURED host: lying workload requests: {}",
        seen.iter()
            .map(|r| format!("{}: {}", r["case"], r["message"]))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// Python as `user` (root if empty), RLIMIT_MEMLOCK 1 MiB soft, 2 MiB
/// hard, asking for a `size` buffer. It prints what it got and the limits
/// of a child forked while the buffer is held; on a line in, it releases
/// the buffer and prints its limits again.
fn locker(svc: &HintService, user: &[&str], size: &str) -> Client {
    let code = r#"
import json, os, resource, sys, scx_phase
def vmlck():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmLck'))
def limits():
    return list(resource.getrlimit(resource.RLIMIT_MEMLOCK))
try:
    w = scx_phase.Workload(locked_memory=sys.argv[1])
    b = w.checkpoint_buffer(sys.argv[1])
    b[:5] = b'hello'
    r, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(wr, json.dumps(limits()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = json.loads(os.read(r, 100))
    print(json.dumps({'ok': True, 'vmlck_kb': vmlck(), 'limits': limits(), 'child': child,
                      'head': bytes(b[:5]).decode()}), flush=True)
    sys.stdin.readline()
    del b
    w.close()
    print(json.dumps({'limits': limits()}), flush=True)
except OSError as e:
    print(json.dumps({'ok': False, 'errno': e.errno, 'message': str(e)}), flush=True)
sys.stdin.read()
"#;
    let mut argv = vec!["prlimit", "--memlock=1048576:2097152"];
    argv.extend_from_slice(user);
    argv.extend(["/usr/bin/python3", "-c", code, size]);
    Client::spawn(svc, &argv)
}

/// VmLck of process `pid`, in kB.
fn vmlck_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn locked_memory_is_locked_by_the_service_and_no_limit_of_the_job_changes() {
    let svc = HintService::start_with(&["--max-locked-mem", "6M"]);
    let base = vmlck_kb(svc.pid());
    let mut a = locker(&svc, NOBODY, "4MiB");
    let got = a.line();
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["head"], "hello");
    let held = vmlck_kb(svc.pid()) - base;
    // The service holds the lock; the job's own limits (1 MiB soft, 2 MiB
    // hard: below the buffer) and its child's are as they were.
    assert_eq!(held, 4096, "the service's VmLck grew by {held} kB");
    assert_eq!(got["vmlck_kb"], 0, "{got}");
    let limits = serde_json::json!([1 << 20, 2 << 20]);
    assert_eq!(got["limits"], limits, "{got}");
    assert_eq!(
        got["child"], limits,
        "a child forked while it is held: {got}"
    );

    let mut b = locker(&svc, &[], "4MiB");
    let over = b.line();
    let why = over["message"].as_str().unwrap_or("").to_string();
    assert_eq!(over["errno"], libc::ENOMEM, "{over}");
    assert!(
        why.contains("4 MiB of locked memory asked")
            && why.contains("--max-locked-mem 6 MiB")
            && why.contains("2 MiB left")
            && why.contains(&format!("pid {} (uid 65534) 4 MiB", a.pid())),
        "{why}"
    );
    drop(b);

    // Released: its limits stay what they were, and the lock is gone.
    a.poke();
    let after = a.line();
    assert_eq!(after["limits"], limits, "after the release: {after}");
    let t0 = Instant::now();
    while vmlck_kb(svc.pid()) != base && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(vmlck_kb(svc.pid()), base, "unlocked after the release");
    let unlocked = t0.elapsed();

    // A holder that exits: its share returns.
    let mut c = locker(&svc, &[], "4MiB");
    assert_eq!(c.line()["ok"], true);
    c.kill();
    let t0 = Instant::now();
    let mut d = locker(&svc, &[], "4MiB");
    let again = d.line();
    assert_eq!(again["ok"], true, "{again}");
    let back = t0.elapsed();
    println!(
        "MEASURED host: nobody, RLIMIT_MEMLOCK 1 MiB soft / 2 MiB hard, got a 4 MiB locked buffer within --max-locked-mem 6M: the service's VmLck +{held} kB, the job's {} kB; the job's limits {} and its child's {} while held, {} after the release (unlocked {:.0} ms after); a second 4 MiB refused: \"{why}\"; after a holder was killed another got it ({:.0} ms)",
        got["vmlck_kb"],
        got["limits"],
        got["child"],
        after["limits"],
        unlocked.as_secs_f64() * 1e3,
        back.as_secs_f64() * 1e3
    );
}

#[test]
fn pressure_watches_are_listed_checked_and_released() {
    let svc = HintService::start();
    let code = r#"
import json, sys, scx_phase
w = scx_phase.Workload()
w.on_memory_pressure(lambda ev: None, stall_ms=150, window_s=2)
res = []
for stall, window in ((100, 0.5), (3000, 2), (0, 2), (100, 30)):
    try:
        w.on_memory_pressure(lambda ev: None, stall_ms=stall, window_s=window)
        res.append('ok')
    except OSError as e:
        res.append(str(e))
print(json.dumps(res), flush=True)
sys.stdin.read()
"#;
    let mut c = Client::spawn(&svc, &["/usr/bin/python3", "-c", code]);
    let res: Vec<String> = serde_json::from_value(c.line()).unwrap();
    let w = workloads_when(&svc, |w| row_of(w, c.pid()).is_some());
    let row = row_of(&w, c.pid()).unwrap_or_else(|| panic!("{w}"));
    let watches = row["pressure_watches"].as_array().unwrap();
    assert!(
        watches
            .iter()
            .any(|x| x["stall_ms"] == 150 && x["window_ms"] == 2000),
        "{row}"
    );
    // Its cgroup's file, or the host's for a process at the root.
    let path = watches[0]["path"].as_str().unwrap();
    if row["cgroup"] == "/" {
        assert_eq!(path, "/proc/pressure/memory", "{row}");
    } else {
        assert!(path.ends_with("memory.pressure"), "{row}");
    }
    // A 0.5 s window needs CAP_SYS_RESOURCE in the service, which a host
    // may lack: then the refusal says so.
    assert!(
        res[0] == "ok" || res[0].contains("needs CAP_SYS_RESOURCE"),
        "{res:?}"
    );
    for r in &res[1..] {
        assert!(
            r.contains("refused: a pressure watch needs a window"),
            "{res:?}"
        );
    }
    let pid = c.pid();
    drop(c);
    let w = workloads_when(&svc, |w| row_of(w, pid).is_none());
    assert!(
        row_of(&w, pid).is_none(),
        "the watch outlived its client: {w}"
    );
    println!(
        "MEASURED host: a 150 ms / 2 s watch listed on {}; other requests: {res:?}",
        watches[0]["path"]
    );
}

#[test]
fn a_process_reads_its_own_figures_and_nobody_elses() {
    let svc = HintService::start();
    let mut a = Client::raw(&svc, &["stats"]);
    let early = a.line();
    let m = early["message"].as_str().unwrap_or("");
    assert!(
        early["status"] == -libc::EPERM && m.starts_with("refused") && m.contains("Hello"),
        "figures before registering: {early}"
    );
    assert_eq!(a.line()["registered"], true);
    let mut b = Client::raw(&svc, &["stats"]);
    b.line();
    assert_eq!(b.line()["registered"], true);

    // What the scheduler would have counted for A in backward.
    svc.write_figures(a.pid(), 3, common::BACKWARD_FIGURES);
    a.poke();
    let got = a.line();
    let zero = Value::from("0 0 0 0");
    let slots = got["slots"].as_array().cloned().unwrap_or_default();
    assert_eq!(slots.len(), 7, "{got}");
    for (i, s) in slots.iter().enumerate() {
        let want = if i == 3 {
            Value::from("2500000000 2000000000 250000000 10")
        } else {
            zero.clone()
        };
        assert_eq!(*s, want, "slot {i}: {got}");
    }
    for (case, r) in got["lies"].as_object().unwrap() {
        let m = r["message"].as_str().unwrap_or("");
        assert!(
            r["status"].as_i64().unwrap_or(0) < 0 && !m.is_empty() && !m.contains('\n'),
            "{case}: {r}"
        );
    }
    // B, registered beside A, sees its own nothing.
    b.poke();
    let theirs = b.line();
    assert!(
        theirs["slots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| *s == zero),
        "{theirs}"
    );
    println!(
        "MEASURED host: Stats before Hello: {}; A's backward slot after the scheduler's figures: {}; B's slots: {}; lies: {}",
        early["message"],
        got["slots"][3],
        theirs["slots"],
        got["lies"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}: {}", v["message"]))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

#[test]
fn a_shared_socket_folder_keeps_its_mode_and_a_planted_symlink_is_not_followed() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let mut svc = HintService::start();
    svc.stop();
    // The socket's folder as a shared one (sticky, world-writable, as
    // /tmp), where another user planted the status file's temporary name
    // as a symlink to a file of root's.
    let dir = svc.socket().parent().unwrap().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = dir.parent().unwrap().join("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    symlink(&victim, dir.join("workloads.json.tmp")).unwrap();
    svc.restart();
    let mut c = Client::raw(&svc, &["claim", "1", "-1", "0"]);
    assert_eq!(c.line()["status"], 0);
    let w = workloads_when(&svc, |w| row_of(w, c.pid()).is_some());
    assert!(row_of(&w, c.pid()).is_some(), "{w}");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    let victim_text = std::fs::read_to_string(&victim).unwrap();
    let victim_mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    let status = std::fs::symlink_metadata(dir.join("workloads.json")).unwrap();
    println!(
        "MEASURED host: socket folder mode {mode:o} after the start (was 1777); the symlink's target {victim_text:?} mode {victim_mode:o}; workloads.json a regular file: {}",
        status.file_type().is_file()
    );
    assert_eq!(
        mode, 0o1777,
        "the service changed a folder it did not create"
    );
    assert_eq!(
        victim_text, "root's file\n",
        "written through a planted symlink"
    );
    assert_eq!(victim_mode, 0o644, "chmodded through a planted symlink");
    assert!(status.file_type().is_file());
}
