//! Running the scheduler inside the VM and watching the kernel's view of it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const STATE: &str = "/sys/kernel/sched_ext/state";
pub const OPS: &str = "/sys/kernel/sched_ext/root/ops";
pub const PIN_DIR: &str = "/sys/fs/bpf/scx_phase";
pub const BIN: &str = env!("CARGO_BIN_EXE_scx_phase");

/// Fail loudly unless we run on a sched_ext kernel: a VM test never skips.
pub fn require_sched_ext() {
    assert!(
        Path::new(STATE).exists(),
        "no {STATE}: the VM tests must run on a sched_ext kernel (scripts/vm.sh)"
    );
}

pub fn state() -> String {
    std::fs::read_to_string(STATE).map_or_else(|_| "missing".into(), |s| s.trim().to_string())
}

pub fn ops() -> String {
    std::fs::read_to_string(OPS).map_or_else(|_| String::new(), |s| s.trim().to_string())
}

/// Poll until sched_ext reaches `want`; the time it took, or None.
pub fn wait_state(want: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if state() == want {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A running `scx_phase` loader. Dropping it stops the scheduler, so a
/// failed test never leaves it attached for the next one.
pub struct Loader {
    pub child: Child,
    pub attach_time: Duration,
    log: PathBuf,
}

impl Loader {
    /// Start the loader and wait until the kernel says it is attached and
    /// the loader has logged its start-up summary.
    pub fn start(args: &[&str]) -> Loader {
        require_sched_ext();
        assert!(
            wait_state("disabled", Duration::from_secs(5)).is_some(),
            "a scheduler is still attached before the test: {}",
            ops()
        );
        let log = std::env::temp_dir().join(format!("scx_phase-{}.log", std::process::id()));
        let err = File::create(&log).expect("loader log");
        let t0 = Instant::now();
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn scx_phase");
        loop {
            if state() == "enabled" && ops().starts_with("scx_phase") {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("scx_phase exited ({st}) before attaching: {}", read(&log));
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "scx_phase did not attach within 60 s: {}",
                read(&log)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let attach_time = t0.elapsed();
        // The kernel reports "enabled" before the loader logs its summary
        // line; tests that read the log must not race that write.
        let t1 = Instant::now();
        while !read(&log).contains("scx_phase attached") {
            assert!(
                t1.elapsed() < Duration::from_secs(10),
                "scx_phase attached but did not log it within 10 s: {}",
                read(&log)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Loader {
            attach_time,
            child,
            log,
        }
    }

    /// Give every thread of the loader nice `n`, as the systemd unit runs
    /// it (Nice=-10): a restart then does not wait behind the load.
    pub fn renice(&self, n: i32) {
        for t in std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("loader threads") {
            let tid: u32 = t.unwrap().file_name().to_str().unwrap().parse().unwrap();
            // SAFETY: setpriority on a thread id; no memory is passed.
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, n) };
            assert_eq!(r, 0, "renice {tid}: {}", std::io::Error::last_os_error());
        }
    }

    /// How many times the scheduler attached since the loader started.
    pub fn attaches(&self) -> usize {
        self.log().matches("scx_phase attached").count()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill");
    }

    /// Wait for the loader to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                t0.elapsed() < limit,
                "scx_phase still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the loader printed on stderr so far.
    pub fn log(&self) -> String {
        read(&self.log)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.pid(), libc::SIGINT) };
            let t0 = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        wait_state("disabled", Duration::from_secs(5));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Run scx_phase to completion.
pub fn scx_phase(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run scx_phase")
}

/// A child that sleeps for a long time: a live tid to hint.
pub fn sleeper() -> Child {
    Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep")
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    v
}

/// Every user-space process (kernel threads come and go on their own).
pub fn user_pids() -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| !c.is_empty()))
        .collect()
}

/// A process's name, for messages.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_or_else(|_| "?".into(), |s| s.trim().into())
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// `@T`, the moment `after` from now as hint_raw.py and chaos.py take a
/// deadline: T seconds of CLOCK_MONOTONIC, Python's time.monotonic().
pub fn monotonic_deadline(after: Duration) -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    let now = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    format!("@{:.3}", (now + after).as_secs_f64())
}

/// What the kernel has logged so far, a line each.
pub fn dmesg_lines() -> Vec<String> {
    let out = Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// The lines of `dmesg` that report a stall or a scheduler error.
pub fn kernel_complaints(dmesg: &[String]) -> Vec<&String> {
    dmesg
        .iter()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("stall")
                || l.contains("sched_ext") && (l.contains("error") || l.contains("disabled"))
        })
        .collect()
}

/// The CPU time of process `pid`, all its threads, in ns (utime + stime).
pub fn process_cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("process {pid}: {e}"));
    let after_comm = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // utime and stime, fields 14 and 15 of proc(5); the state (field 3)
    // comes first after the name.
    let field = |n: usize| -> u64 {
        after_comm
            .split_whitespace()
            .nth(n - 3)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("/proc/{pid}/stat field {n}: {stat}"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (field(14) + field(15)) * 1_000_000_000 / hz
}
