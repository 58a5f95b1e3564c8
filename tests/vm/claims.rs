//! CPU claims of the workload API with the scheduler, on 4 vCPUs in 2
//! nodes (scripts/test.sh runs `claims::` in the NUMA VM): exclusive and
//! preferred placement, arbitration, release on exit, the admin's bound.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::bin_dir;
use crate::support::*;
use crate::workload::*;

/// A process holding a claim, with `threads` spinning threads.
struct Claimant {
    child: Child,
    out: BufReader<ChildStdout>,
    reply: Value,
}

impl Claimant {
    fn start(cpus: u32, node: i32, exclusive: bool, threads: u32) -> Claimant {
        let mut child = Command::new(bin_dir().join("workload_spin"))
            .args([
                cpus.to_string(),
                node.to_string(),
                u8::from(exclusive).to_string(),
                threads.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("workload_spin");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        let reply: Value = serde_json::from_str(&l).unwrap_or_else(|_| panic!("printed {l:?}"));
        Claimant { child, out, reply }
    }

    /// The same, each spinning thread in `phase` (the soak's job).
    fn start_in_phase(cpus: u32, node: i32, exclusive: bool, threads: u32, phase: u32) -> Claimant {
        // SAFETY: set before the child is spawned; read only by it. The
        // tests run one at a time (--test-threads=1).
        unsafe { std::env::set_var("SPIN_PHASE", phase.to_string()) };
        let c = Claimant::start(cpus, node, exclusive, threads);
        unsafe { std::env::remove_var("SPIN_PHASE") };
        c
    }

    fn ok(&self) -> bool {
        self.reply["error"] == 0
    }

    fn cpus(&self) -> Vec<u32> {
        cpu_list(&self.reply)
    }

    /// Its spinning threads (named "spin").
    fn threads(&self) -> Vec<u32> {
        let pid = self.child.id();
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&t| comm(t as i32) == "spin")
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_busy(&mut self, busy: bool) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", if busy { "busy" } else { "sleep" }).unwrap();
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
    }

    /// The claim as the library sees it now (it follows hotplug).
    fn ask_cpus(&mut self) -> Vec<u32> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "cpus").unwrap();
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|_| panic!("printed {l:?}"));
        v["cpus"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_u64().map(|c| c as u32))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The "cpus" list of a line workload_spin printed.
fn cpu_list(v: &Value) -> Vec<u32> {
    v["cpus"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_u64().map(|c| c as u32))
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Claimant {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Share of (task, sample) pairs whose CPU is in `cpus`, over `n` samples
/// 50 ms apart.
fn on_cpus(tids: &[u32], cpus: &[usize], n: usize) -> f64 {
    let mut hits = 0;
    let mut all = 0;
    for _ in 0..n {
        for &t in tids {
            if let Some(c) = cpu_of(t) {
                all += 1;
                if cpus.contains(&(c as usize)) {
                    hits += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    hits as f64 * 100.0 / all.max(1) as f64
}

/// Time until no task of `tids` is on `cpus` (10 quiet samples in a row).
fn settle(tids: &[u32], cpus: &[usize], limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut quiet = 0;
    let mut first_quiet = None;
    while t0.elapsed() < limit {
        let on = tids
            .iter()
            .any(|&t| cpu_of(t).is_some_and(|c| cpus.contains(&(c as usize))));
        if on {
            quiet = 0;
            first_quiet = None;
        } else {
            quiet += 1;
            first_quiet.get_or_insert(t0.elapsed());
            if quiet >= 10 {
                return first_quiet;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn one_line(v: &Value) -> String {
    v["message"].as_str().unwrap_or("").to_string()
}

#[test]
fn an_exclusive_claim_keeps_everyone_else_off_its_cpus() {
    let _loader = Loader::start(&["--max-exclusive-pct", "100"]);
    let node1 = node_cpus(1);
    let hogs = Hogs::start(2 * nr_cpus());
    let pinned = std::process::Command::new("taskset")
        .args([
            "-c",
            &node1[0].to_string(),
            "sh",
            "-c",
            "while :; do :; done",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = on_cpus(&hogs.tids(), &node1, 20);

    let w = Claimant::start(node1.len() as u32, 1, true, node1.len() as u32);
    assert!(w.ok(), "{}", w.reply);
    let claimed: Vec<usize> = w.cpus().iter().map(|c| *c as usize).collect();
    assert_eq!(claimed, node1, "{}", w.reply);
    let settled = settle(&hogs.tids(), &node1, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("hogs still on node 1 10 s after the claim"));
    let settle_ms = settled.as_secs_f64() * 1e3;

    // 250 samples, 50 ms apart.
    let pinned_before = cpu_ns(pinned.id());
    let kworkers = Instant::now();
    std::fs::write("/proc/sys/vm/stat_refresh", "1").expect("stat_refresh");
    let kworker_ms = kworkers.elapsed().as_secs_f64() * 1e3;
    let hog_share = on_cpus(&hogs.tids(), &node1, 250);
    let pinned_ran = (cpu_ns(pinned.id()) - pinned_before) as f64 / 1e6;
    let mine = on_cpus(&w.threads(), &node1, 40);

    // Released: hogs come back.
    let t1 = Instant::now();
    w.kill();
    let mut back = None;
    while t1.elapsed() < Duration::from_secs(5) {
        if hogs
            .tids()
            .iter()
            .any(|&t| cpu_of(t).is_some_and(|c| node1.contains(&(c as usize))))
        {
            back = Some(t1.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut pinned = pinned;
    let _ = pinned.kill();
    let _ = pinned.wait();
    let back = back.expect("hogs did not return to node 1 within 5 s of the release");
    println!(
        "MEASURED exclusive claim of node 1 (CPUs {node1:?}) among {} hogs on {} vCPUs: hog samples on node 1 {before:.1}% before, {hog_share:.2}% of 250 samples after the claim settled ({settle_ms:.0} ms after it); the workload's threads {mine:.1}% on node 1; a task pinned to CPU {} ran {pinned_ran:.0} ms over ~13 s; per-CPU kworkers (vm.stat_refresh on every CPU) answered in {kworker_ms:.0} ms; hogs back on node 1 {:.0} ms after kill -9",
        hogs.tids().len(),
        nr_cpus(),
        node1[0],
        back.as_secs_f64() * 1e3
    );
    assert!(hog_share <= 1.0, "hogs on claimed CPUs: {hog_share:.2}%");
    assert!(
        mine >= 90.0,
        "the workload's threads ran off their CPUs: {mine:.1}%"
    );
    assert!(
        pinned_ran > 200.0,
        "the pinned task starved: {pinned_ran:.0} ms"
    );
    assert!(
        kworker_ms < 2000.0,
        "per-CPU kworkers took {kworker_ms:.0} ms"
    );
    assert!(
        back < Duration::from_secs(1),
        "hogs came back after {back:?}"
    );
    assert_eq!(state(), "enabled");
}

#[test]
fn an_exclusive_claim_holds_while_its_owner_sleeps_or_runs_one_thread() {
    let _loader = Loader::start(&["--max-exclusive-pct", "100"]);
    let node1 = node_cpus(1);
    // Hogs first: they run on node 1 when the claim comes.
    let hogs = Hogs::start(2 * nr_cpus());
    std::thread::sleep(Duration::from_millis(500));
    let before = on_cpus(&hogs.tids(), &node1, 20) * 10.0;
    let mut w = Claimant::start(node1.len() as u32, 1, true, 1);
    assert!(w.ok(), "{}", w.reply);
    let claimed: Vec<usize> = w.cpus().iter().map(|c| *c as usize).collect();
    assert_eq!(claimed, node1, "{}", w.reply);
    // Its one thread asleep, then spinning (one CPU of the claim idle).
    w.set_busy(false);
    std::thread::sleep(Duration::from_secs(1));
    let asleep = on_cpus(&hogs.tids(), &node1, 100) * 10.0;
    w.set_busy(true);
    std::thread::sleep(Duration::from_secs(1));
    let one = on_cpus(&hogs.tids(), &node1, 100) * 10.0;
    println!(
        "MEASURED exclusive claim of node 1 (CPUs {node1:?}) among {} hogs started before it on {} vCPUs: hog samples on node 1 {before:.0} per mille before; {asleep:.1} per mille of 100 samples while the owner's thread sleeps; {one:.1} per mille while it spins on one CPU of the two",
        hogs.tids().len(),
        nr_cpus()
    );
    assert!(
        asleep <= 20.0,
        "hogs on CPUs claimed exclusively by a sleeping owner: {asleep:.1} per mille"
    );
    assert!(
        one <= 20.0,
        "hogs on CPUs claimed exclusively by an owner running one thread: {one:.1} per mille"
    );
    assert_eq!(state(), "enabled");
}

#[test]
fn a_preferred_claim_runs_its_threads_first_and_lends_its_cpus_when_idle() {
    let _loader = Loader::start(&[]);
    let node1 = node_cpus(1);
    let n = node1.len() as u32;
    let hogs = Hogs::start(2 * nr_cpus());
    let sum = |v: Vec<f64>| v.iter().sum::<f64>();

    // The same workload without a claim, then with one.
    let plain = Claimant::start(0, -1, false, n);
    assert!(plain.ok(), "{}", plain.reply);
    std::thread::sleep(Duration::from_millis(500));
    let unclaimed = shares(&plain.threads(), Duration::from_secs(4));
    drop(plain);

    let mut w = Claimant::start(n, 1, false, n);
    assert!(w.ok(), "{}", w.reply);
    std::thread::sleep(Duration::from_millis(500));
    let mut all = w.threads();
    let nw = all.len();
    all.extend(hogs.tids());
    let busy = shares(&all, Duration::from_secs(4));
    let placed = on_cpus(&w.threads(), &node1, 40);
    w.set_busy(false);
    std::thread::sleep(Duration::from_millis(500));
    let hogs_idle = sum(shares(&hogs.tids(), Duration::from_secs(4)));
    let (mine, hogs_busy) = (busy[..nw].to_vec(), sum(busy[nw..].to_vec()));
    println!(
        "MEASURED preferred claim of node 1 ({n} CPUs) among {} hogs on {} vCPUs: the workload's {n} threads got {} of a CPU each without a claim, {} with it ({placed:.1}% of samples on node 1); the hogs together got {:.0}% of a CPU while it was busy, {:.0}% while it slept (its CPUs lent)",
        hogs.tids().len(),
        nr_cpus(),
        fmt_pct(&unclaimed),
        fmt_pct(&mine),
        hogs_busy,
        hogs_idle,
    );
    assert!(mine.iter().all(|&s| s >= 85.0), "{mine:?}");
    assert!(unclaimed.iter().all(|&s| s < 70.0), "{unclaimed:?}");
    assert!(placed >= 90.0, "{placed:.1}%");
    // All CPUs but the claimed ones while busy, all of them while asleep.
    let others = (nr_cpus() - node1.len()) as f64 * 100.0;
    assert!(hogs_busy < others + 25.0, "{hogs_busy:.0}%");
    assert!(
        hogs_idle > others + 150.0,
        "the idle claimed CPUs were not lent: {hogs_idle:.0}%"
    );
}

#[test]
fn a_preferred_claim_spills_only_when_its_cpus_are_busy() {
    let _loader = Loader::start(&[]);
    let node1 = node_cpus(1);
    let mine = vec![node1[0]];
    // As many threads as CPUs it claimed: they stay there.
    let fits = Claimant::start(1, 1, false, 1);
    assert_eq!(fits.cpus(), vec![mine[0] as u32], "{}", fits.reply);
    std::thread::sleep(Duration::from_millis(300));
    let stayed = on_cpus(&fits.threads(), &mine, 60);
    drop(fits);
    // Three threads on one claimed CPU of an idle host: two spill.
    let over = Claimant::start(1, 1, false, 3);
    std::thread::sleep(Duration::from_millis(300));
    let got = shares(&over.threads(), Duration::from_secs(3));
    let total: f64 = got.iter().sum();
    println!(
        "MEASURED preferred claim of CPU {} on an idle host: 1 thread {stayed:.1}% of samples on it; 3 threads got {} ({total:.0}% of a CPU together: spilled to idle CPUs)",
        mine[0],
        fmt_pct(&got)
    );
    assert!(stayed >= 95.0, "{stayed:.1}%");
    assert!(total > 250.0, "did not spill: {total:.0}%");
}

#[test]
fn two_claims_race_one_wins_and_a_kill_frees_its_cpus() {
    let _loader = Loader::start(&["--max-exclusive-pct", "100"]);
    let a = std::thread::spawn(|| Claimant::start(2, 1, true, 0));
    let b = std::thread::spawn(|| Claimant::start(2, 1, true, 0));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert!(
        a.ok() != b.ok(),
        "exactly one must win: {} / {}",
        a.reply,
        b.reply
    );
    let (winner, loser) = if a.ok() { (a, b) } else { (b, a) };
    let why = one_line(&loser.reply);
    assert_eq!(loser.reply["error"], -libc::EBUSY, "{}", loser.reply);
    assert!(
        why.contains(&format!("pid {} (uid 0) holds", winner.child.id()))
            && why.contains("free: none"),
        "{why}"
    );
    drop(loser);
    let t0 = Instant::now();
    winner.kill();
    let mut freed = None;
    while t0.elapsed() < Duration::from_secs(5) {
        let c = Claimant::start(2, 1, true, 0);
        if c.ok() {
            freed = Some(t0.elapsed());
            break;
        }
    }
    let freed = freed.expect("the CPUs were not free 5 s after kill -9");
    println!(
        "MEASURED two exclusive claims of node 1 at once: one won, the other got \"{why}\"; kill -9 of the winner freed the CPUs for a new claim {:.0} ms later",
        freed.as_secs_f64() * 1e3
    );
    assert!(freed < Duration::from_secs(1), "{freed:?}");
}

#[test]
fn the_admins_bound_on_exclusive_claims_holds() {
    let _loader = Loader::start(&[]);
    let first = Claimant::start(1, 1, true, 0);
    assert!(first.ok(), "{}", first.reply);
    let over = Claimant::start(1, 1, true, 0);
    assert_eq!(over.reply["error"], -libc::EBUSY, "{}", over.reply);
    let why = one_line(&over.reply);
    assert!(why.contains("--max-exclusive-pct 75"), "{why}");
    // Unprivileged users may not claim at all.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin_dir().join("workload_spin"))
        .args(["1", "0", "0", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], -libc::EPERM, "{v}");
    println!(
        "MEASURED with the default --max-exclusive-pct 75 on 2-CPU nodes: a second exclusive CPU of node 1 refused: \"{why}\"; nobody's claim refused: \"{}\"",
        one_line(&v)
    );
}

/// `scx_phase workloads --json`: pid -> its first claim.
/// A CPU taken offline, and brought back online when dropped, even when
/// the test fails.
struct Offline(String);

impl Offline {
    fn take(cpu: u32) -> Offline {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/online");
        std::fs::write(&path, "0").unwrap_or_else(|e| panic!("offline CPU {cpu}: {e}"));
        Offline(path)
    }
}

impl Drop for Offline {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "1");
    }
}

#[test]
fn a_claimed_cpu_that_goes_offline_is_replaced_on_its_node() {
    let loader = Loader::start(&[]);
    loader.renice(-10);
    let node1 = node_cpus(1);
    let hogs = Hogs::start(2 * nr_cpus());
    let mut w = Claimant::start(1, 1, true, 1);
    assert!(w.ok(), "{}", w.reply);
    let first = w.cpus()[0];
    let other = *node1
        .iter()
        .find(|&&c| c as u32 != first)
        .expect("node 1 has a second CPU") as u32;
    let pid = w.child.id() as u64;
    let mut threads = w.threads();
    for _ in 0..250 {
        if threads.len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        threads = w.threads();
    }
    assert_eq!(threads.len(), 1, "the workload's spinning thread");

    let t0 = Instant::now();
    let offline = Offline::take(first);
    let mut held = Value::Null;
    while t0.elapsed() < Duration::from_secs(10) {
        held = claims_by_pid().get(&pid).cloned().unwrap_or(Value::Null);
        if held["cpus"] == serde_json::json!([other]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rehomed = t0.elapsed();
    assert_eq!(
        held["cpus"],
        serde_json::json!([other]),
        "the claim after CPU {first} went offline: {held}"
    );
    let mut seen = w.ask_cpus();
    while seen != [other] && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        seen = w.ask_cpus();
    }
    let told = t0.elapsed();
    assert_eq!(seen, [other], "what the library says after the rehoming");

    // The scheduler restarts on hotplug, then places by the new claim.
    // Under TCG, among the hogs, a restart takes 9-20 s even at nice -10.
    let mut reattached = None;
    while t0.elapsed() < Duration::from_secs(60) {
        if loader.attaches() >= 2 && state() == "enabled" {
            reattached = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let reattached = reattached
        .unwrap_or_else(|| panic!("not re-attached 60 s after the hotplug: {}", loader.log()));
    // Once it is back, the workload's thread runs on its new CPU within
    // ARRIVAL. Measured 16-45 ms in 10 runs; 15-1,446 ms before the
    // scheduler read the claims in enqueue() (it queued the hogs on the
    // claimed CPU as it attached, and the thread waited behind them).
    const ARRIVAL: Duration = Duration::from_secs(1);
    let t1 = Instant::now();
    let mut arrived = None;
    let mut ran = cpu_ns(threads[0]);
    while t1.elapsed() < ARRIVAL + Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        let now = cpu_ns(threads[0]);
        // On it, and it ran since the last look: it runs there now.
        if cpu_of(threads[0]) == Some(other) && now > ran {
            arrived = Some(t1.elapsed());
            break;
        }
        ran = now;
    }
    let settled = settle(&hogs.tids(), &[other as usize], Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "hogs still on CPU {other} 20 s after the scheduler re-attached ({reattached:?} after the hotplug): {:?}",
            hogs.tids()
                .iter()
                .filter(|&&t| cpu_of(t) == Some(other))
                .map(|&t| (t, task_state(t)))
                .collect::<Vec<_>>()
        )
    });
    let hog_share = on_cpus(&hogs.tids(), &[other as usize], 100);
    let mine = on_cpus(&threads, &[other as usize], 40);
    let attached = state() == "enabled" && ops().starts_with("scx_phase");
    // The restarted scheduler's own count (its stats map is new).
    let passes = scx_phase::stats::StatsMap::open(std::path::Path::new(PIN_DIR))
        .ok()
        .and_then(|m| m.read().ok())
        .map_or(0, |c| c.claim_passes());
    if arrived.is_none() || mine < 90.0 {
        // Where it is: running elsewhere (placed as if it claimed nothing)
        // or waiting (queued where no CPU takes it).
        let before = cpu_ns(threads[0]);
        std::thread::sleep(Duration::from_secs(1));
        eprintln!(
            "the workload's thread {} ran {:.0}% of the next second, last on CPU {:?}, state {}; claims: {}",
            threads[0],
            (cpu_ns(threads[0]) - before) as f64 / 1e7,
            cpu_of(threads[0]),
            task_state(threads[0]),
            claims_by_pid().get(&pid).cloned().unwrap_or(Value::Null)
        );
    }
    drop(offline);
    println!(
        "MEASURED exclusive claim of CPU {first} (node 1) among {} hogs; CPU {first} taken offline: the service moved the claim to CPU {other} in {:.0} ms, the library saw it {:.0} ms after the offlining, the scheduler re-attached after {:.0} ms; the workload's thread on CPU {other} {} after that; hogs off it {:.1} s after that, then {hog_share:.2}% of 100 hog samples there; the workload's thread {mine:.1}% on it; {passes} times CPU {other} ran its claimant's task from behind others' queued before the claim",
        hogs.tids().len(),
        ms(rehomed),
        ms(told),
        ms(reattached),
        arrived.map_or("never".into(), |d| format!("{:.0} ms", ms(d))),
        settled.as_secs_f64()
    );
    assert!(attached, "scx_phase is not attached after the hotplug");
    let arrived = arrived.unwrap_or_else(|| {
        panic!(
            "the workload's thread never ran on its new CPU {other} after the restart (last on {:?}, state {})",
            cpu_of(threads[0]),
            task_state(threads[0])
        )
    });
    assert!(
        arrived <= ARRIVAL,
        "the workload's thread reached its new CPU {arrived:?} after the restart"
    );
    assert!(hog_share <= 1.0, "hogs on the rehomed CPU: {hog_share:.2}%");
    assert!(
        mine >= 90.0,
        "the workload's thread on its new CPU: {mine:.1}% (last on {:?}, state {})",
        cpu_of(threads[0]),
        task_state(threads[0])
    );
    assert!(rehomed < Duration::from_secs(3), "{rehomed:?}");
}

/// A thread's state letter (R runnable or running, S sleeping, ...).
fn task_state(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{tid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()))
        .unwrap_or_else(|| "gone".into())
}

fn claims_by_pid() -> std::collections::HashMap<u64, Value> {
    let out = scx_phase(&["workloads", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["workloads"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| Some((r["pid"].as_u64()?, r["claims"].get(0)?.clone())))
        .collect()
}

/// A rank's JSON line, behind torchrun's "[default0]:" prefix. Whatever
/// follows the object is left: torchrun's tee can glue a second prefix to
/// a line it read before its newline was written.
fn json_after_prefix(line: &str) -> Option<Value> {
    let rest = &line[line.find('{')?..];
    serde_json::Deserializer::from_str(rest)
        .into_iter::<Value>()
        .next()?
        .ok()
}

#[test]
fn a_rank_line_is_read_past_a_glued_prefix() {
    let v = json_after_prefix(r#"[default0]:{"rank": 0}[default0]:"#);
    assert_eq!(v, Some(serde_json::json!({"rank": 0})));
    assert_eq!(json_after_prefix("[default1]:no json"), None);
}

#[test]
fn each_torchrun_rank_claims_on_its_node_and_both_are_released() {
    let _loader = Loader::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    let ckpt = tmp.path().join("model.pt");
    let t0 = Instant::now();
    let mut run = Command::new("/usr/bin/python3")
        .args([
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
        ])
        .args(["--master_addr", "127.0.0.1", "--master_port", "29517"])
        // Debian's torch 1.13 on Python 3.11 cannot parse its own default
        // "0" here (IntFlag iteration skips 0), so name stdout, which it
        // then copies to ours behind a "[default<rank>]:" prefix.
        .args(["--redirects", "1", "--tee", "1"])
        .args(["-m", "scx_phase.run", "--cpus-per-rank", "1", "--exclusive"])
        .args(["--rank-nodes", "0,1", "--locked-memory", "16MiB"])
        .arg(crate::clients::root().join("tests/vm/assets/train_ddp.py"))
        .arg(&ckpt)
        .envs(crate::clients::client_env())
        .env("SCX_TEST_RELEASE", &release)
        .env("GLOO_SOCKET_IFNAME", "lo")
        .env("OMP_NUM_THREADS", "1")
        // torchrun copies the ranks' lines to its stdout, a pipe here:
        // unbuffered, or they would wait for its exit (and it for us).
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("torchrun");
    // Lines from a thread, so that a hung job fails the test in time
    // rather than the VM's timeout.
    let lines = {
        let (tx, rx) = std::sync::mpsc::channel();
        let out = BufReader::new(run.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut next_json = |what: &str| -> Value {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(v) = json_after_prefix(&l) {
                        return v;
                    }
                }
                Err(e) => {
                    let _ = run.kill();
                    panic!(
                        "torchrun: no {what} ({e:?}) {:.0} s after the start",
                        t0.elapsed().as_secs_f64()
                    );
                }
            }
        }
    };
    let ranks = [next_json("rank report"), next_json("second rank report")];
    let started = t0.elapsed();
    let held = claims_by_pid();
    std::fs::write(&release, "").unwrap();
    let saved = next_json("checkpoint report");
    let status = run.wait().unwrap();
    let t1 = Instant::now();
    let mut left = claims_by_pid();
    while !left.is_empty() && t1.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        left = claims_by_pid();
    }
    let released = t1.elapsed();

    let mut summary = Vec::new();
    for r in &ranks {
        let local = r["local_rank"].as_u64().unwrap();
        let pid = r["pid"].as_u64().unwrap();
        let claim = held
            .get(&pid)
            .unwrap_or_else(|| panic!("rank {local} (pid {pid}) holds no claim: {held:?}"));
        let node_cpus: Vec<u64> = node_cpus(local as u32).iter().map(|&c| c as u64).collect();
        let cpus: Vec<u64> = claim["cpus"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        assert_eq!(claim["node"], local, "rank {local}: {claim}");
        assert_eq!(claim["exclusive"], true, "rank {local}: {claim}");
        assert!(
            cpus.len() == 1 && cpus.iter().all(|c| node_cpus.contains(c)),
            "rank {local}: {claim}"
        );
        assert_eq!(
            r["cpus"], claim["cpus"],
            "what the rank sees is what the service holds"
        );
        summary.push(format!(
            "rank {local} pid {pid}: CPU {cpus:?} of node {local}"
        ));
    }
    println!(
        "MEASURED torchrun, 2 ranks (gloo, CPU), --cpus-per-rank 1 --exclusive --rank-nodes 0,1: {}; both ranks up {:.0} s after the start; rank 0's torch.save went through the 16 MiB locked buffer ({} save(s), spilled {}) and loads back {}; every claim gone {:.0} ms after torchrun exited ({status})",
        summary.join(", "),
        started.as_secs_f64(),
        saved["through_buffer"],
        saved["spilled"],
        saved["loads_back"],
        released.as_secs_f64() * 1e3
    );
    assert!(status.success(), "torchrun: {status}");
    assert_eq!(saved["loads_back"], true, "{saved}");
    assert_eq!(saved["through_buffer"], 1, "{saved}");
    assert_eq!(saved["spilled"], false, "{saved}");
    assert!(left.is_empty(), "still held after exit: {left:?}");
    assert!(released < Duration::from_secs(1), "{released:?}");
}

/// Users of three uids attack the hint service at random for 60 s
/// (`SCX_CHAOS_SECS`), while a job holds an exclusive claim of node 1 in
/// backward and a root thread is boosted among hogs (tests/tools/chaos.py:
/// garbage, lies, others' pidfds, sockets, pipes, epoll fds, memfds and
/// /proc files sent along, children that die mid-request, a setuid exec
/// while a child keeps the socket, threads named like PyTorch's, claims,
/// locked memory, pressure watches, floods).
#[test]
fn chaos_soak_users_attack_while_a_job_keeps_its_boost_and_claim() {
    let secs: u64 = std::env::var("SCX_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let loader = Loader::start(&["--max-exclusive-pct", "100"]);
    let node1 = node_cpus(1);
    let suid = "/tmp/scx-chaos-suid-sleep";
    std::fs::copy("/usr/bin/sleep", suid).expect("copy sleep");
    std::os::unix::fs::chown(suid, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let job = Claimant::start_in_phase(node1.len() as u32, 1, true, node1.len() as u32, 3);
    assert!(job.ok(), "{}", job.reply);
    let mut boosted = crate::clients::raw(&["own", "3", "spin"], None);
    let b = boosted.line();
    assert_eq!(b["bind"]["status"], 0, "{b}");
    let actor = |uid: u32, seed: u32, secs: &str| {
        Command::new("setpriv")
            .args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "/usr/bin/python3".into(),
                crate::clients::root()
                    .join("tests/tools/chaos.py")
                    .display()
                    .to_string(),
                seed.to_string(),
                secs.to_string(),
            ])
            .env("CHAOS_SUID", suid)
            .stdout(Stdio::piped())
            .spawn()
            .expect("chaos.py")
    };
    // A short round first: what the service keeps for good (its first
    // workloads' pages, the allocator's arenas) is there before we measure.
    // Before the hogs: among them, this un-hinted round took 44 s (of the
    // test's 160) to start, act for 5 s and exit.
    let warm = actor(50000, 0, "5").wait_with_output().unwrap();
    assert!(warm.status.success());
    let hogs = Hogs::start(nr_cpus());
    std::thread::sleep(Duration::from_secs(2));
    let (anon0, _, fds0) = crate::service::footprint(loader.pid());
    let dmesg_before = dmesg_lines();

    let t0 = Instant::now();
    // One deadline for all: among the hogs, each client takes seconds to
    // start, and on its own clock of `secs` the last ended 25-30 s late.
    let end = monotonic_deadline(Duration::from_secs(secs));
    let actors: Vec<Child> = (1..=3).map(|i| actor(50000 + i, i, &end)).collect();
    let mut probe = crate::clients::raw(&["probe", &end], Some("60000"));
    let mut probe_boosted = crate::clients::raw(&["probe", &end, "boost"], None);
    let actor_uids: Vec<u64> = (50001..=50003).collect();
    let job_pid = u64::from(job.child.id());
    let (mut samples, mut attached, mut claim_held, mut job_boosted) = (0, 0, 0, 0);
    let mut broken: Vec<String> = Vec::new();
    let mut hog_on_claim = Vec::new();
    let mut boosted_cpu = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        samples += 1;
        attached += usize::from(state() == "enabled");
        claim_held += usize::from(claims_by_pid().get(&job_pid).is_some_and(|c| {
            let cpus: Vec<usize> = cpu_list(c).iter().map(|&c| c as usize).collect();
            c["exclusive"] == true && cpus == node1
        }));
        let dump = scx_phase(&["dump", "--json"]);
        let entries: Vec<Value> = serde_json::from_slice(&dump.stdout).unwrap_or_default();
        // The job's threads keep backward; no actor's thread is raised.
        let spin: Vec<&Value> = entries
            .iter()
            .filter(|e| e["pid"] == job_pid && e["thread"] == "spin")
            .collect();
        job_boosted +=
            usize::from(spin.len() == node1.len() && spin.iter().all(|e| e["phase"] == "backward"));
        for e in &entries {
            let actor = e["uid"].as_u64().is_some_and(|u| actor_uids.contains(&u));
            let raised = e["phase"].as_str().is_some_and(|p| p != "idle");
            if actor && raised && broken.len() < 5 {
                broken.push(e.to_string());
            }
        }
        // Half a second of hogs' placement and of the boosted thread's CPU.
        let before = process_cpu_ns(boosted.child.id());
        let t = Instant::now();
        hog_on_claim.push(on_cpus(&hogs.tids(), &node1, 10) * 10.0);
        boosted_cpu.push(
            (process_cpu_ns(boosted.child.id()) - before) as f64 / t.elapsed().as_nanos() as f64
                * 100.0,
        );
    }
    let mut done = Vec::new();
    for a in actors {
        let out = a.wait_with_output().unwrap();
        done.push(serde_json::from_slice::<Value>(&out.stdout).unwrap_or_default());
    }
    let actors_done = t0.elapsed().as_secs_f64();
    let p = probe.line();
    drop(probe);
    let pb = probe_boosted.line();
    drop(probe_boosted);
    let probes_done = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let (anon1, _, fds1) = crate::service::footprint(loader.pid());
    let dmesg = dmesg_lines().split_off(dmesg_before.len());
    let stalls = kernel_complaints(&dmesg);
    let total: u64 = done
        .iter()
        .map(|d| {
            d["actions"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
        })
        .sum();
    let kinds_seen = done
        .iter()
        .filter_map(|d| d["actions"].as_object())
        .flat_map(|m| {
            m.iter()
                .filter(|(_, v)| v.as_u64() > Some(0))
                .map(|(k, _)| k.clone())
        })
        .collect::<std::collections::BTreeSet<_>>();
    let worst_hogs = hog_on_claim.iter().cloned().fold(0.0, f64::max);
    let least_boost = boosted_cpu.iter().cloned().fold(f64::MAX, f64::min);
    let mean_boost = boosted_cpu.iter().sum::<f64>() / boosted_cpu.len().max(1) as f64;
    println!(
        "MEASURED chaos soak {:.0} s on {} vCPUs (sampled for {secs} s; the actors done at {actors_done:.0} s, the probes at {probes_done:.0} s): 3 uids did {total} actions ({} kinds; {}); a Hello every second from a boosted probe: p50 {} ms, {} of {} over 100 ms, max {} ms, {} failed; from an un-hinted one: p50 {} ms, max {} ms, {} failed; attached {attached}/{samples}; the job's exclusive claim of node 1 listed {claim_held}/{samples}, its threads in backward {job_boosted}/{samples}; hogs on its CPUs at most {worst_hogs:.1} per mille; the boosted root thread among {} hogs {mean_boost:.1}% of a CPU (least {least_boost:.1}% in a half-second); actors' threads raised: {}; service: anonymous {anon0} -> {anon1} kB, fds {fds0} -> {fds1}; stalls in dmesg: {}",
        t0.elapsed().as_secs_f64(),
        nr_cpus(),
        kinds_seen.len(),
        done.iter()
            .map(|d| format!(
                "cut off {}, unexpected {} {}",
                d["cut_off"], d["unexpected"], d["first_unexpected"]
            ))
            .collect::<Vec<_>>()
            .join("; "),
        pb["p50_ms"],
        pb["over_100ms"],
        pb["probes"],
        pb["max_ms"],
        pb["failures"],
        p["p50_ms"],
        p["max_ms"],
        p["failures"],
        hogs.tids().len(),
        broken.len(),
        stalls.len()
    );
    assert_eq!(attached, samples, "the scheduler detached");
    assert!(stalls.is_empty(), "{stalls:?}");
    assert_eq!(
        kinds_seen.len(),
        12,
        "some kind of attack never ran: {kinds_seen:?}"
    );
    assert_eq!(
        claim_held, samples,
        "the job's claim was not listed in every sample"
    );
    assert_eq!(job_boosted, samples, "the job's threads left backward");
    assert!(
        broken.is_empty(),
        "an actor's thread was raised: {broken:?}"
    );
    assert!(
        worst_hogs <= 20.0,
        "hogs on the claimed CPUs: {worst_hogs:.1} per mille"
    );
    assert!(
        mean_boost >= 85.0,
        "the boosted thread got {mean_boost:.1}% of a CPU"
    );
    // Every probe answered. The boosted probe measures the service (its
    // own wait for a CPU kept out): answered within 100 ms but for TCG's
    // spikes (4 vCPUs on 2 host cores: 0 and 3 of 60 in two runs, the
    // worst 167 ms), never over 1 s. The un-hinted one also waits for a
    // CPU among the hogs.
    assert_eq!(
        (p["failures"].as_u64(), pb["failures"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(pb["p50_ms"].as_f64().unwrap() <= 20.0, "{pb}");
    assert!(pb["over_100ms"].as_u64().unwrap() <= 6, "{pb}");
    assert!(pb["max_ms"].as_f64().unwrap() <= 1000.0, "{pb}");
    assert!(p["max_ms"].as_f64().unwrap() <= 1000.0, "{p}");
    assert!(fds1 <= fds0 + 8, "the service's fds grew: {fds0} -> {fds1}");
    assert!(
        anon1 < anon0 + 4096,
        "the service's memory grew: {anon0} -> {anon1} kB"
    );
}
