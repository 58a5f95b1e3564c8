//! Locked checkpoint memory and memory-pressure callbacks of the workload
//! API, with swap on zram so that reclaim takes anonymous memory as it
//! does on a real host.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::{bin_dir, client_env, root};
use crate::support::*;

const NOBODY: &[&str] = &["--reuid=65534", "--regid=65534", "--clear-groups"];

/// Swap on /dev/zram0, once per VM.
fn swap_on() {
    if std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .contains("zram0")
    {
        return;
    }
    std::fs::write("/sys/block/zram0/disksize", "4G").expect("zram0 (is zram loaded?)");
    for cmd in [&["mkswap", "/dev/zram0"][..], &["swapon", "/dev/zram0"]] {
        let st = Command::new(cmd[0])
            .args(&cmd[1..])
            .stdout(Stdio::null())
            .status();
        assert!(st.is_ok_and(|s| s.success()), "{cmd:?} failed");
    }
}

fn meminfo_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn vmstat(key: &str) -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// tests/c/checkpoint as nobody: a job with a state of `mib` MiB that
/// checkpoints it through a locked buffer or through fresh memory.
struct Job {
    child: Child,
    out: BufReader<ChildStdout>,
    first: Value,
}

impl Job {
    fn start(mode: &str, mib: u32, dir: &Path) -> Job {
        let mut child = Command::new("setpriv")
            .args(NOBODY)
            .arg(bin_dir().join("checkpoint"))
            .args([mode, &mib.to_string()])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("checkpoint");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let first = read_json(&mut out);
        Job { child, out, first }
    }

    fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.child.stdin.as_mut().unwrap(), "{cmd}").unwrap();
        let v = read_json(&mut self.out);
        assert!(v.get("error").is_none(), "{cmd}: {v}");
        v
    }

    fn save_ms(&mut self) -> f64 {
        self.ask("save")["total_ms"].as_f64().unwrap()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn read_json(out: &mut impl BufRead) -> Value {
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    serde_json::from_str(&l).unwrap_or_else(|_| panic!("printed {l:?}"))
}

/// A folder in the project (the host's disk, over 9p) anyone may write.
fn checkpoint_dir() -> PathBuf {
    let dir = root().join("target/vm-checkpoints");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    dir
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn a_locked_checkpoint_buffer_stays_resident_under_reclaim() {
    swap_on();
    let loader = Loader::start(&["--max-locked-mem", "384M"]);
    let service_vmlck = || {
        std::fs::read_to_string(format!("/proc/{}/status", loader.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            .unwrap()
    };
    let base = service_vmlck();
    let dir = checkpoint_dir();
    // Both jobs run as nobody: no CAP_IPC_LOCK, RLIMIT_MEMLOCK 8 MiB. The
    // service locks the buffer in its own address space.
    let mut locked = Job::start("locked", 256, &dir);
    assert_eq!(locked.first["error"], 0, "{}", locked.first);
    let mut plain = Job::start("plain", 256, &dir);
    let over = Job::start("locked", 256, &dir);
    let over_msg = over.first["message"].as_str().unwrap_or("").to_string();
    assert_eq!(over.first["error"], -libc::ENOMEM, "{}", over.first);
    assert!(
        over_msg.contains("256 MiB") && over_msg.contains("384 MiB") && over_msg.contains("held"),
        "{over_msg}"
    );
    drop(over);
    let calm = (locked.save_ms(), plain.save_ms());

    // A hog as big as the VM's memory: reclaim swaps the rest out.
    let total_mib = meminfo_kb("MemTotal") / 1024;
    let swapped0 = vmstat("pswpout");
    let mut hog = Command::new(bin_dir().join("memhog"))
        .arg(total_mib.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while vmstat("pswpout") - swapped0 < 65536 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the hog drove nothing into swap in 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let reclaim_after = t0.elapsed();
    // At least 20 samples, and on until reclaim has reached the unlocked
    // job (up to 100): the locked buffer must hold in every one of them.
    let mut samples = Vec::new();
    let reached = |s: &[(Value, Value, i64)]| {
        s.iter()
            .any(|x| x.1["state_resident"].as_f64().is_some_and(|r| r < 90.0))
    };
    while samples.len() < 20 || (!reached(&samples) && samples.len() < 100) {
        samples.push((
            locked.ask("status"),
            plain.ask("status"),
            service_vmlck() - base,
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        with.push(locked.save_ms());
        without.push(plain.save_ms());
    }
    let swapped_mib = (vmstat("pswpout") - swapped0) * 4 / 1024;
    let _ = hog.kill();
    let _ = hog.wait();

    let vmlck: Vec<i64> = samples.iter().map(|s| s.2).collect();
    let job_vmlck: Vec<i64> = samples
        .iter()
        .map(|s| s.0["vmlck_kb"].as_i64().unwrap())
        .collect();
    let buf_res: Vec<f64> = samples
        .iter()
        .map(|s| s.0["buffer_resident"].as_f64().unwrap())
        .collect();
    let plain_state = samples
        .iter()
        .map(|s| s.1["state_resident"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    println!(
        "MEASURED locked checkpoint memory, as nobody within --max-locked-mem 384M, a {total_mib} MiB hog in a {total_mib} MiB VM with zram swap (in reclaim after {:.1} s, {swapped_mib} MiB swapped out): the service's VmLck +{} kB (the job's {} kB) in all {} samples, the buffer {:.0}-{:.0}% resident; the unlocked job's state down to {plain_state:.0}% resident; a 256 MiB checkpoint (copy + write + fsync over 9p) took {:.0} ms with the locked buffer, {:.0} ms with memory allocated at save time when calm; under reclaim {} ms with it (median {:.0}), {} ms without (median {:.0}); over budget: \"{over_msg}\"",
        reclaim_after.as_secs_f64(),
        vmlck[0],
        job_vmlck[0],
        samples.len(),
        buf_res.iter().cloned().fold(f64::MAX, f64::min),
        buf_res.iter().cloned().fold(0.0, f64::max),
        calm.0,
        calm.1,
        with.iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        median(&with),
        without
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        median(&without),
    );
    assert!(
        vmlck.iter().all(|&k| k == 262144),
        "the service's VmLck {vmlck:?}"
    );
    assert!(
        job_vmlck.iter().all(|&k| k == 0),
        "the job's VmLck {job_vmlck:?}"
    );
    assert!(
        buf_res.iter().all(|&r| r == 100.0),
        "buffer residency {buf_res:?}"
    );
    // Reclaim reached the jobs: the unlocked state was swapped in part.
    assert!(
        (0.0..90.0).contains(&plain_state),
        "the unlocked job kept {plain_state:.0}% resident"
    );
}

#[test]
fn a_memory_hog_in_the_jobs_cgroup_raises_the_callback_and_the_example_halves_its_batch() {
    swap_on();
    let _loader = Loader::start(&[]);
    let cg = Path::new("/sys/fs/cgroup/scx-pressure");
    let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
    let _ = std::fs::create_dir(cg);
    std::fs::write(cg.join("memory.high"), "64M").expect("memory.high");
    let join = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", cg.display());
    let example = root().join("examples/pressure_batch.py");

    // The job joins the cgroup as root, then runs as nobody.
    let mut job = Command::new("sh")
        .args(["-c", &join, "sh", "setpriv"])
        .args(NOBODY)
        .arg("/usr/bin/python3")
        .arg(&example)
        .args(["--batch", "256", "--stall-ms", "100", "--window-s", "1"])
        .envs(client_env())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(job.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("watching"), "{line:?}");

    let events = cg.join("memory.events");
    let high = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("high ")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let high0 = high();
    let mut hog = Command::new("sh")
        .args(["-c", &join, "sh"])
        .arg(bin_dir().join("memhog"))
        .arg("256")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Crossing the threshold: the first time the cgroup goes over memory.high.
    let t0 = Instant::now();
    while high() == high0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the hog never crossed memory.high"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let crossed = monotonic();
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = hog.kill();
    let _ = hog.wait();
    let _ = job.kill();
    let _ = job.wait();
    // "memory pressure at T: batch size 256 -> 128 (...)"
    let at: f64 = line
        .strip_prefix("memory pressure at ")
        .and_then(|r| r.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the example printed {line:?}"));
    let latency = (at - crossed) * 1e3;
    println!(
        "MEASURED memory pressure: a 256 MiB hog in the job's cgroup (memory.high 64M); the callback (stall 100 ms in 1 s, set up by nobody) ran {latency:.0} ms after the cgroup crossed memory.high; the example printed: {}",
        line.trim()
    );
    assert!(line.contains("batch size 256 -> 128"), "{line}");
    // The bound is three windows: one for the stall to add up to 100 ms (how
    // fast the throttled hog stalls depends on reclaim under TCG: 306-2103 ms
    // measured), one for PSI, which reports at most once a window, and one
    // of slack. A callback not wired to PSI would never fire at all.
    assert!(
        latency < 3000.0,
        "{latency:.0} ms, more than 3 windows of 1 s"
    );
    let _ = std::fs::remove_dir(cg);
}

/// CLOCK_MONOTONIC in seconds, as Python's time.monotonic() reads it.
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
