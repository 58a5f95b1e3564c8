//! Small workloads for the policy tests: CPU hogs, spinning threads, and
//! per-thread CPU time and placement read from /proc.

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Un-hinted CPU hogs, in their own processes; killed on drop.
pub struct Hogs(pub Vec<Child>);

impl Hogs {
    pub fn start(n: usize) -> Hogs {
        Hogs(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("hog")
                })
                .collect(),
        )
    }

    pub fn tids(&self) -> Vec<u32> {
        self.0.iter().map(|c| c.id()).collect()
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A thread of this process that spins until dropped.
pub struct Spinner {
    pub tid: u32,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Spinner {
    /// Spawn a spinner; `name` (if any) is set with prctl before spinning.
    pub fn start(name: Option<&str>) -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicU32::new(0));
        let (s, t) = (stop.clone(), tid.clone());
        let name = name.map(|n| std::ffi::CString::new(n).unwrap());
        let handle = std::thread::spawn(move || {
            if let Some(n) = name {
                // SAFETY: PR_SET_NAME with a valid C string.
                unsafe { libc::prctl(libc::PR_SET_NAME, n.as_ptr()) };
            }
            t.store(scx_phase::hint::tid_map::current_tid(), Ordering::SeqCst);
            let mut x = 0u64;
            while !s.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
        while tid.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Spinner {
            tid: tid.load(Ordering::SeqCst),
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// How late `period` sleeps wake up, in ms, sorted: on a new thread that
/// first runs `setup` (hint or pin itself), for `count` sleeps or `total`,
/// whichever ends first. Timer slack is off, so lateness is the scheduler's.
pub fn sleep_lateness_ms(
    period: Duration,
    count: usize,
    total: Duration,
    setup: impl FnOnce() + Send + 'static,
) -> Vec<f64> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: plain prctl on the calling thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
        setup();
        let mut late = Vec::new();
        let start = Instant::now();
        while late.len() < count && start.elapsed() < total {
            let t0 = Instant::now();
            std::thread::sleep(period);
            late.push(t0.elapsed().saturating_sub(period).as_secs_f64() * 1e3);
        }
        let _ = tx.send(late);
    });
    let mut d = rx.recv().expect("sleeper thread");
    d.sort_by(|a, b| a.total_cmp(b));
    d
}

/// CPU time a thread has used, in ns (first field of schedstat).
pub fn cpu_ns(tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Each thread's share of one CPU over `d`, in percent.
pub fn shares(tids: &[u32], d: Duration) -> Vec<f64> {
    let before: Vec<u64> = tids.iter().map(|&t| cpu_ns(t)).collect();
    let t0 = Instant::now();
    std::thread::sleep(d);
    let dt = t0.elapsed().as_nanos() as f64;
    tids.iter()
        .zip(before)
        .map(|(&t, b)| (cpu_ns(t) - b) as f64 * 100.0 / dt)
        .collect()
}

/// The CPU a thread is on or last ran on (field 39 of /proc/<tid>/stat).
pub fn cpu_of(tid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // Fields after the name start at field 3.
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}

/// Restrict the calling thread (tid 0) or another thread to `cpus`.
pub fn set_affinity(tid: u32, cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t filled with CPU_SET, passed by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        let r = libc::sched_setaffinity(tid as i32, std::mem::size_of_val(&set), &set);
        assert_eq!(
            r,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The CPUs of a NUMA node, from sysfs.
pub fn node_cpus(node: u32) -> Vec<usize> {
    let list = std::fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist"))
        .expect("node cpulist");
    let mut v = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

pub fn nr_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn fmt_pct(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.1}%"))
        .collect::<Vec<_>>()
        .join(" ")
}
