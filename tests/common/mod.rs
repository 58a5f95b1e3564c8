//! Helpers shared by the host tests.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private bpffs mounted on a temporary folder, unmounted on drop. Lets
/// tests create and pin real BPF maps without touching /sys/fs/bpf.
pub struct TempBpffs {
    dir: tempfile::TempDir,
}

impl TempBpffs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let fstype = CString::new("bpf").unwrap();
        // SAFETY: valid C strings; no data argument.
        let ret = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            ret,
            0,
            "mounting bpffs on {} failed ({}); the host tests need root",
            dir.path().display(),
            std::io::Error::last_os_error()
        );
        TempBpffs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A pin folder inside this bpffs, created.
    pub fn pin_dir(&self) -> PathBuf {
        let p = self.path().join("scx_phase");
        std::fs::create_dir_all(&p).expect("mkdir on bpffs");
        p
    }
}

impl Drop for TempBpffs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Run the scx_phase binary.
pub fn scx_phase(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scx_phase"))
        .args(args)
        .output()
        .expect("run scx_phase")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the command failed with `code` and a single stderr line
/// containing `needle`, and no panic.
pub fn assert_one_line_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A tid that cannot be alive: above the kernel's pid_max.
pub fn dead_tid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    max + 1
}

/// target/<profile>, where cargo put the binary and libscx_phase.so.
pub fn lib_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_scx_phase"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// The C programs the VM tests run, from tests/c/<name>.c, built -O2.
pub const VM_PROGRAMS: [&str; 5] = [
    "hint_spin",
    "hint_soak",
    "workload_spin",
    "checkpoint",
    "memhog",
];

/// Where a host test (tests/capi.rs) builds VM_PROGRAMS, and the VM tests
/// copy them from: gcc takes about a second here, 30-40 s in each VM boot
/// under TCG.
pub fn vm_programs_dir() -> PathBuf {
    lib_dir().join("vm-programs")
}

/// Whether `exe`, built from tests/c/<name>.c, is newer than its source,
/// the header and the library.
pub fn program_is_fresh(exe: &Path, name: &str) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = mtime(exe) else {
        return false;
    };
    [
        root.join("tests/c").join(format!("{name}.c")),
        root.join("include/scx_phase.h"),
        lib_dir().join("libscx_phase.so"),
    ]
    .iter()
    .all(|input| mtime(input).is_some_and(|t| t <= built))
}

/// Build into `dir` each of VM_PROGRAMS that is missing there or older
/// than its inputs, in parallel (gcc is single-threaded). Each is renamed
/// into place whole: a test killed mid-build leaves no half-written
/// program for the next one.
pub fn build_vm_programs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::thread::scope(|s| {
        for name in VM_PROGRAMS {
            let exe = dir.join(name);
            if program_is_fresh(&exe, name) {
                continue;
            }
            let part = dir.join(format!("{name}.part{}", std::process::id()));
            s.spawn(move || {
                build_c(&format!("{name}.c"), &part, "-O2");
                std::fs::rename(&part, &exe).unwrap();
            });
        }
    });
}

/// Where a host test (tests/python.rs) pip-installs the wheel this build
/// makes, for the VM's Kubernetes test to copy into its Job's image:
/// building and installing it there took 42 s under TCG.
pub fn python_site_dir() -> PathBuf {
    lib_dir().join("vm-python-site")
}

/// The file the host test writes once the install in `site` succeeded.
pub fn python_site_stamp(site: &Path) -> PathBuf {
    site.join(".installed")
}

/// Whether `site` holds an install newer than what the wheel is made of:
/// the package's files, its build files and the library.
pub fn python_site_is_fresh(site: &Path) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(installed) = mtime(&python_site_stamp(site)) else {
        return false;
    };
    let Ok(package) = std::fs::read_dir(root.join("python/scx_phase")) else {
        return false;
    };
    package
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .chain([
            root.join("python/pyproject.toml"),
            root.join("python/setup.py"),
            root.join("scripts/wheel.sh"),
            lib_dir().join("libscx_phase.so"),
        ])
        .all(|input| mtime(&input).is_some_and(|t| t <= installed))
}

/// Compile `tests/c/<source>` against include/scx_phase.h and
/// libscx_phase.so into `out`.
pub fn build_c(source: &str, out: &Path, opt: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    assert!(
        lib.join("libscx_phase.so").exists(),
        "no libscx_phase.so in {}: run `cargo build --release` (or without --release) first",
        lib.display()
    );
    let st = Command::new("cc")
        .args(["-Wall", "-Werror", opt, "-o"])
        .arg(out)
        .arg(root.join("tests/c").join(source))
        .arg(format!("-I{}", root.join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lscx_phase")
        .status()
        .expect("cc");
    assert!(st.success(), "{source} did not build");
}

/// A real hint service (`scx_phase --hint-service-only`) on a private
/// bpffs and socket: the whole hint path but the scheduler, which needs no
/// sched_ext. Stopped on drop.
pub struct HintService {
    pub fs: TempBpffs,
    pub dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    extra: Vec<String>,
}

impl HintService {
    pub fn start() -> HintService {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> HintService {
        let fs = TempBpffs::new();
        let dir = tempfile::tempdir().expect("tempdir");
        // Let other users reach the socket's folder.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut s = HintService {
            fs,
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.restart();
        s
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.fs.path().join("scx_phase")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/hint.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("service.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Args that point a `scx_phase` subcommand at this service.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--pin-dir".into(),
            self.pin_dir().display().to_string(),
            "--hint-socket".into(),
            self.socket().display().to_string(),
        ]
    }

    /// Stop the service (SIGINT), as an operator would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }

    /// Kill the service outright (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start (again), and wait until the socket answers.
    pub fn restart(&mut self) {
        self.stop();
        // The socket accepts connections once bound, before the service has
        // adopted the pinned workloads; it logs "listening" after. Wait
        // for that line, so a test reads the log of a ready service.
        let ready = |log: &str| log.matches("hint service listening on").count();
        let started_before = ready(&self.log());
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_scx_phase"))
            .arg("--hint-service-only")
            .args(self.args())
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn scx_phase --hint-service-only");
        self.child = Some(child);
        let t0 = std::time::Instant::now();
        while scx_phase::sys::seqpacket_connect(&self.socket()).is_err() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("the hint service exited ({st}): {}", self.log());
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "the hint service did not listen within 20 s: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        while ready(&self.log()) == started_before {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "the hint service did not log that it listens within 20 s: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// `scx_phase dump --json`, parsed.
    pub fn dump(&self) -> Vec<serde_json::Value> {
        let mut args = self.args();
        args.extend(["dump".into(), "--json".into()]);
        let out = Command::new(env!("CARGO_BIN_EXE_scx_phase"))
            .args(&args)
            .output()
            .expect("scx_phase dump");
        assert!(out.status.success(), "dump: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .expect("dump --json is JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The dump entry of host thread `tid`, waiting up to 2 s for one:
    /// a new process's memory reaches the scheduler a grace period after
    /// it registered (the service installs it off its event loop).
    pub fn hint_of(&self, tid: u32) -> Option<serde_json::Value> {
        let t0 = std::time::Instant::now();
        loop {
            let found = self
                .dump()
                .into_iter()
                .find(|e| e["tid"] == serde_json::json!(tid));
            if found.is_some() || t0.elapsed() > std::time::Duration::from_secs(2) {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether host thread `tid` has no entry, after the time a hint would
    /// take to show.
    pub fn unhinted(&self, tid: u32) -> bool {
        std::thread::sleep(std::time::Duration::from_millis(200));
        !self
            .dump()
            .into_iter()
            .any(|e| e["tid"] == serde_json::json!(tid))
    }

    /// Write `f` as the scheduler would, as process `pid`'s figures for
    /// phase slot `slot`, once it has registered (waiting up to 5 s).
    pub fn write_figures(&self, pid: u32, slot: u32, f: scx_phase::bpf_intf::workload_phase_stats) {
        use std::os::fd::AsFd;
        let t0 = std::time::Instant::now();
        let wid = loop {
            let found = scx_phase::inspect::read_workloads(&self.pin_dir())
                .expect("hint_workloads")
                .into_iter()
                .find(|(_, w)| w.pid == pid);
            if let Some((wid, _)) = found {
                break wid;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(5),
                "process {pid} never registered"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let map =
            scx_phase::sys::obj_get(&self.pin_dir().join(scx_phase::inspect::WORKLOAD_STATS_MAP))
                .expect("workload_stats pinned");
        scx_phase::inspect::set_workload_stats(map.as_fd(), wid, slot, f)
            .expect("write the figures");
    }

    pub fn counters(&self) -> scx_phase::bpf_intf::service_counters {
        // The service publishes every 100 ms.
        std::thread::sleep(std::time::Duration::from_millis(250));
        scx_phase::inspect::read_service_stats(&self.pin_dir()).expect("service_stats")
    }
}

impl Drop for HintService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Figures the tests write as the scheduler's for a process's backward
/// slot: 2.5 s of CPU, 2 s of it boosted, 0.25 s waiting in 10 waits.
pub const BACKWARD_FIGURES: scx_phase::bpf_intf::workload_phase_stats =
    scx_phase::bpf_intf::workload_phase_stats {
        runtime_ns: 2_500_000_000,
        boosted_ns: 2_000_000_000,
        wait_ns: 250_000_000,
        waits: 10,
    };

/// Environment for a client process of `svc`: the socket, and the library
/// and package of this build.
pub fn client_env(svc: &HintService) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        (
            "SCX_PHASE_SOCKET".into(),
            svc.socket().display().to_string(),
        ),
        (
            "SCX_PHASE_LIB".into(),
            lib_dir().join("libscx_phase.so").display().to_string(),
        ),
        (
            "PYTHONPATH".into(),
            root.join("python").display().to_string(),
        ),
    ]
}
