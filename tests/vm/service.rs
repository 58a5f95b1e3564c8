//! The hint service with the scheduler: hints by plain stores boost, the
//! process-wide phase carries a thread pool, values a writer may not set
//! and garbage change nothing, hints survive a restart of scx_phase, and
//! the service holds up under churn.

use std::path::Path;
use std::time::{Duration, Instant};

use scx_phase::Phase;
use scx_phase::stats::StatsMap;

use crate::clients::*;
use crate::support::*;
use crate::workload::*;

const MEASURE: Duration = Duration::from_secs(4);

/// Share of one CPU of host thread `tid` over MEASURE.
fn share(tid: u32) -> f64 {
    shares(&[tid], MEASURE)[0]
}

/// Share of an un-hinted spinner among what runs now.
fn unhinted_share() -> f64 {
    let mut base = spin_c("none", "thread", None);
    let b = base.line();
    share(base.host_tid(b["tid"].as_u64().unwrap()))
}

fn stats() -> scx_phase::stats::Snapshot {
    StatsMap::open(Path::new(PIN_DIR)).unwrap().read().unwrap()
}

#[test]
fn a_process_and_its_thread_pool_are_boosted_through_the_service() {
    let _loader = Loader::start(&[]);
    let _hogs = Hogs::start(4);
    let unhinted = unhinted_share();

    let mut own = spin_c("3", "thread", None);
    let o = own.line();
    assert_eq!(o["set"], 0, "{o}");
    let boosted = share(own.host_tid(o["tid"].as_u64().unwrap()));
    drop(own);

    // A thread that nobody hints follows its process's phase.
    let before = stats();
    let mut pool = spin_c("3", "process", None);
    let p = pool.line();
    assert_eq!(p["set"], 0, "{p}");
    let follower = share(pool.host_tid(p["tid"].as_u64().unwrap()));
    let after = stats();
    drop(pool);
    let bwd = Phase::Backward as usize;
    let from_process = after.slots[bwd].process_ns - before.slots[bwd].process_ns;
    println!(
        "MEASURED hint service on {} vCPUs among 4 hogs, {:.0} s each: un-hinted {unhinted:.1}%, own slot backward {boosted:.1}%, a worker following its process's backward {follower:.1}% ({:.0} ms of backward run time came from the process-wide phase)",
        nr_cpus(),
        MEASURE.as_secs_f64(),
        from_process as f64 / 1e6
    );
    assert!(boosted >= 85.0, "own slot: {boosted:.1}%");
    assert!(follower >= 85.0, "process-wide phase: {follower:.1}%");
    assert!(unhinted < 60.0, "un-hinted: {unhinted:.1}%");
    assert!(
        from_process > 1_000_000_000,
        "{from_process} ns from the process phase"
    );
}

#[test]
fn what_a_writer_may_not_set_and_garbage_change_nothing() {
    let _loader = Loader::start(&[]);
    let _hogs = Hogs::start(4);
    let unhinted = unhinted_share();

    // nobody skips the library and writes backward into its own slot.
    let s0 = stats();
    let mut liar = raw(&["own", "3", "spin"], Some("65534"));
    let l = liar.line();
    assert_eq!(l["hello"]["allow"], 1, "{l}");
    let lied = share(liar.host_tid(l["tid"].as_u64().unwrap()));
    drop(liar);
    let s1 = stats();

    // Root writes garbage into its slot.
    let mut junk = raw(&["own", "0xdeadbeef00000063", "spin"], None);
    let j = junk.line();
    let junked = share(junk.host_tid(j["tid"].as_u64().unwrap()));
    drop(junk);
    let s2 = stats();
    println!(
        "MEASURED un-hinted {unhinted:.1}%; nobody writing backward raw {lied:.1}% ({} lookups refused); root writing garbage {junked:.1}% ({} lookups invalid); scheduler {}",
        s1.refused_hints() - s0.refused_hints(),
        s2.invalid_hints() - s1.invalid_hints(),
        state()
    );
    assert!(
        (lied - unhinted).abs() < 10.0,
        "a refused value changed the share: {lied:.1}% vs {unhinted:.1}%"
    );
    assert!(
        (junked - unhinted).abs() < 10.0,
        "garbage changed the share: {junked:.1}% vs {unhinted:.1}%"
    );
    assert!(
        s1.refused_hints() > s0.refused_hints(),
        "refused values not counted"
    );
    assert!(
        s2.invalid_hints() > s1.invalid_hints(),
        "garbage not counted"
    );
    assert_eq!(state(), "enabled");
}

#[test]
fn service_hints_survive_a_restart_and_a_kill_of_scx_phase() {
    let mut loader = Loader::start(&[]);
    let _hogs = Hogs::start(4);
    let mut own = spin_c("3", "thread", None);
    let o = own.line();
    let tid = own.host_tid(o["tid"].as_u64().unwrap());
    let first = share(tid);
    let mut seen = vec![format!("{first:.1}% before")];
    for how in ["SIGINT", "SIGKILL"] {
        loader.signal(if how == "SIGINT" {
            libc::SIGINT
        } else {
            libc::SIGKILL
        });
        loader.wait(Duration::from_secs(10));
        assert!(wait_state("disabled", Duration::from_secs(5)).is_some());
        drop(loader);
        loader = Loader::start(&[]);
        assert!(
            loader
                .log()
                .contains("adopted 1 registered process(es) and 1 bound thread(s)"),
            "{}",
            loader.log()
        );
        let again = share(tid);
        seen.push(format!("{again:.1}% after a {how} and restart"));
        assert!(again >= 85.0, "after {how}: {again:.1}%");
    }
    println!(
        "MEASURED a thread hinted backward through the service, among 4 hogs: {}",
        seen.join(", ")
    );
    assert!(first >= 85.0, "{first:.1}%");
}

/// A process's anonymous and file-backed resident memory (kB), and fds.
/// Anonymous memory is what a leak grows; file pages grow as code paths
/// run for the first time.
pub fn footprint(pid: i32) -> (u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (kb("RssAnon:"), kb("RssFile:"), fds)
}

#[test]
fn soak_threads_register_flip_phases_and_exit() {
    let secs: u64 = std::env::var("SCX_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let loader = Loader::start(&[]);
    let prog = bin_dir().join("hint_soak");
    // A first short round, so that what the service keeps for good (its
    // first workload's pages, the allocator's arenas) is there before.
    let warm = std::process::Command::new(&prog)
        .args(["100", "1", "200", "10000"])
        .output()
        .unwrap();
    assert!(warm.status.success());
    std::thread::sleep(Duration::from_millis(500));
    let (anon0, file0, fds0) = footprint(loader.pid());
    let dmesg_before = dmesg_lines();
    let c0 = scx_phase::inspect::read_service_stats(Path::new(PIN_DIR)).unwrap();
    let t0 = Instant::now();
    let mut child = std::process::Command::new(&prog)
        .args(["1000", &secs.to_string(), "1000", "10000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut attached = 0;
    let mut samples = 0;
    while child.try_wait().unwrap().is_none() {
        samples += 1;
        if state() == "enabled" {
            attached += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            t0.elapsed() < Duration::from_secs(secs + 300),
            "the soak hung"
        );
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let (anon1, file1, fds1) = footprint(loader.pid());
    let c1 = scx_phase::inspect::read_service_stats(Path::new(PIN_DIR)).unwrap();
    let dmesg = dmesg_lines().split_off(dmesg_before.len());
    let stalls = kernel_complaints(&dmesg);
    println!(
        "MEASURED soak {:.0} s: {} rounds of 1000 threads, {} registrations ({} by the service), {} hint writes ({:.0} k/s), {} errors; service memory: anonymous {} -> {} kB, file {} -> {} kB; fds {} -> {}; after: {} processes, {} threads bound; attached at {attached}/{samples} samples; stalls in dmesg: {}",
        t0.elapsed().as_secs_f64(),
        r["rounds"],
        r["registered"],
        c1.registrations - c0.registrations,
        r["writes"],
        r["writes"].as_f64().unwrap() / t0.elapsed().as_secs_f64() / 1e3,
        r["errors"],
        anon0,
        anon1,
        file0,
        file1,
        fds0,
        fds1,
        c1.workloads,
        c1.bound_threads,
        stalls.len()
    );
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(attached, samples, "the scheduler detached during the soak");
    assert!(stalls.is_empty(), "{stalls:?}");
    assert_eq!(
        (c1.workloads, c1.bound_threads),
        (0, 0),
        "registrations leaked"
    );
    assert!(fds1 <= fds0 + 2, "fds leaked: {fds0} -> {fds1}");
    assert!(anon1 < anon0 + 1024, "memory grew: {anon0} -> {anon1} kB");
    assert_eq!(
        c1.registrations - c0.registrations,
        r["registered"].as_u64().unwrap(),
        "every thread registered once"
    );
}

#[test]
fn pytorch_intra_op_threads_follow_the_process_phase() {
    // 16-54 samples/s with vm.sh's CPU model: a few hundred a run.
    const SECS: u32 = 8;
    // One process for the three runs: importing torch under TCG takes
    // longer than a run.
    let script = root().join("tests/vm/assets/train_intraop.py");
    let argv = vec![
        "/usr/bin/python3".to_string(),
        "-m".into(),
        "scx_phase.run".into(),
        script.display().to_string(),
        "--threads".into(),
        "2".into(),
    ];
    let t = tag("torch");
    let mut py = Client::spawn(&argv, &t);
    assert_eq!(py.line()["ready"], true);
    let mut run = |follow: bool| -> serde_json::Value {
        use std::io::Write;
        let stdin = py.child.stdin.as_mut().unwrap();
        writeln!(stdin, "run {SECS} {}", u8::from(follow)).unwrap();
        py.line()
    };
    let hogs = Hogs::start(2 * nr_cpus());
    let eevdf = run(true)["samples_per_s"].as_f64().unwrap();
    let loader = Loader::start(&[]);
    // The hooks find the service again within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let without = run(false)["samples_per_s"].as_f64().unwrap();
    let s0 = stats();
    let v = run(true);
    let with = v["samples_per_s"].as_f64().unwrap();
    let s1 = stats();
    drop(hogs);
    drop(loader);
    drop(py);
    let per_phase: Vec<String> = [Phase::Forward, Phase::Backward, Phase::Optimizer]
        .iter()
        .map(|p| {
            let i = *p as usize;
            format!(
                "{p} {:.0} ms ({:.0} from the process phase)",
                (s1.slots[i].runtime_ns - s0.slots[i].runtime_ns) as f64 / 1e6,
                (s1.slots[i].process_ns - s0.slots[i].process_ns) as f64 / 1e6
            )
        })
        .collect();
    println!(
        "MEASURED PyTorch (elementwise-heavy model), 2 intra-op threads, {} hogs on {} vCPUs, {SECS} s each: EEVDF {eevdf:.0} samples/s; scx_phase without the process-wide phase {without:.0}; with it {with:.0} ({:.2}x without, {:.2}x EEVDF); run time in the last run: {}; threads: {}",
        2 * nr_cpus(),
        nr_cpus(),
        with / without,
        with / eevdf,
        per_phase.join(", "),
        v["threads"]
    );
    let from_process: u64 = [Phase::Forward, Phase::Backward, Phase::Optimizer]
        .iter()
        .map(|p| s1.slots[*p as usize].process_ns - s0.slots[*p as usize].process_ns)
        .sum();
    assert!(from_process > 0, "no run time came from the process phase");
    assert!(
        with > without * 1.05,
        "the process phase did not help: {with:.0} vs {without:.0} samples/s"
    );
}

/// The hint service's CPU use over `d`, in ms per second (the loader's
/// process: the scheduler's loader and the service's threads).
fn service_ms_per_s(pid: u32, d: Duration) -> f64 {
    let (c0, t0) = (process_cpu_ns(pid), Instant::now());
    std::thread::sleep(d);
    (process_cpu_ns(pid) - c0) as f64 / 1e6 / t0.elapsed().as_secs_f64()
}

#[test]
fn a_departed_clients_watches_end_with_it() {
    let loader = Loader::start(&[]);
    let pid = loader.pid() as u32;
    let idle = service_ms_per_s(pid, Duration::from_secs(2));

    // A client binds a thread that exits at once, and keeps the pidfd it
    // sent: the file stays open in the client.
    let mut kept = raw(&["bind-and-keep"], None);
    let k = kept.line();
    assert_eq!(k["bind"]["status"], 0, "{k}");
    let thread_gone = service_ms_per_s(pid, Duration::from_secs(3));

    // A client registers, forks a child that keeps the socket, and exits
    // (a zombie until this harness reaps it).
    let mut forked = raw(&["register-fork-exit"], None);
    let f = forked.line();
    assert_eq!(f["hello"]["status"], 0, "{f}");
    let process_gone = service_ms_per_s(pid, Duration::from_secs(3));
    println!(
        "MEASURED the service's CPU, ms per second: idle {idle:.1}; after a bound thread exited while its client kept the pidfd {thread_gone:.1}; after a registered client forked a child that keeps the socket and exited {process_gone:.1}"
    );
    for (what, got) in [
        ("a bound thread exited, its pidfd kept", thread_gone),
        ("a registered process exited, its socket kept", process_gone),
    ] {
        assert!(
            got <= idle + 20.0,
            "{what}: the service used {got:.1} ms/s against {idle:.1} idle"
        );
    }
    assert_eq!(state(), "enabled");
}

/// A fresh client's Hello: its reply and how long it took, in ms.
fn hello_ms(user: Option<&str>) -> (serde_json::Value, f64) {
    let v = raw(&["hello-ms"], user).line();
    let ms = v["ms"].as_f64().unwrap_or(f64::INFINITY);
    (v, ms)
}

#[test]
fn a_client_that_sends_files_that_block_when_closed_stalls_nobody() {
    let _loader = Loader::start(&[]);
    let (_, quiet) = hello_ms(Some("4244"));
    // 12 Hellos from uid 4245, each carrying a TCP socket whose close
    // waits 30 s for a peer that never reads; then a Hello of its own.
    let mut hostile = raw(&["linger-hello", "12"], Some("4245"));
    let h = hostile.line();
    let (other, busy) = hello_ms(Some("4244"));
    println!(
        "MEASURED Hello latency of another user: {quiet:.1} ms quiet, {busy:.1} ms after uid 4245 sent 12 Hellos carrying lingering TCP sockets (30 s); the sender's own Hello then: {}",
        h["hello"]
    );
    assert_eq!(other["hello"]["status"], 0, "{other}");
    assert!(busy < 1000.0, "another user's Hello took {busy:.0} ms");
    assert!(
        h["hello"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("still closing")),
        "the sender must be refused while its files wait to be closed: {h}"
    );
    // Its peers go when it exits, the closes end, and it may connect again.
    drop(hostile.rest());
    let t0 = Instant::now();
    loop {
        let (again, _) = hello_ms(Some("4245"));
        if again["hello"]["status"] == 0 {
            println!(
                "MEASURED the sender registered again {} ms after it exited",
                t0.elapsed().as_millis()
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "uid 4245 stays refused: {again}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(state(), "enabled");
}
