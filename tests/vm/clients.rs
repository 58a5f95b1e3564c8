//! Clients of the hint service for the VM tests: the C spinner built
//! against libscx_phase, the raw protocol tool, Python, each run here or
//! in a podman container, and finding their threads from outside.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{VM_PROGRAMS, build_vm_programs, lib_dir, program_is_fresh, vm_programs_dir};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Folder of the C test programs in this VM (mounted into containers),
/// filled once per boot: /tmp lives as long as the VM, and each test runs
/// as a process of its own (scripts/vm-run). The host tests leave them
/// built (common::vm_programs_dir); what is not there, or older than its
/// source, is built here, 30-40 s of gcc under TCG.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from("/tmp/scx-bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let built = vm_programs_dir();
        for name in VM_PROGRAMS {
            let (exe, from) = (dir.join(name), built.join(name));
            if exe.exists() || !program_is_fresh(&from, name) {
                continue;
            }
            let part = dir.join(format!("{name}.part{}", std::process::id()));
            std::fs::copy(&from, &part).unwrap();
            std::fs::rename(&part, &exe).unwrap();
        }
        build_vm_programs(&dir);
        dir
    })
}

/// Environment for a client: the library and Python package of this build.
pub fn client_env() -> Vec<(&'static str, String)> {
    vec![
        (
            "SCX_PHASE_LIB",
            lib_dir().join("libscx_phase.so").display().to_string(),
        ),
        ("PYTHONPATH", root().join("python").display().to_string()),
    ]
}

/// A running client whose stdout is read line by line; it ends when its
/// stdin closes (on drop).
pub struct Client {
    pub child: Child,
    out: BufReader<ChildStdout>,
    pub tag: String,
}

impl Client {
    /// Spawn `argv` (wrapped as given), tagged so it can be found in /proc.
    pub fn spawn(argv: &[String], tag: &str) -> Client {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .envs(client_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        let out = BufReader::new(child.stdout.take().unwrap());
        Client {
            child,
            out,
            tag: tag.to_string(),
        }
    }

    /// The next JSON line it prints.
    pub fn line(&mut self) -> Value {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("read a client's line");
        serde_json::from_str(&l).unwrap_or_else(|_| panic!("client {} printed {l:?}", self.tag))
    }

    /// Everything else it prints, until it exits.
    pub fn rest(mut self) -> String {
        drop(self.child.stdin.take());
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut s);
        s
    }

    /// The host thread id of its thread numbered `ns_tid` in its own PID
    /// namespace (found by its tag in /proc).
    pub fn host_tid(&self, ns_tid: u64) -> u32 {
        let t0 = Instant::now();
        loop {
            if let Some(t) = find_host_tid(&self.tag, ns_tid) {
                return t;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no thread {ns_tid} of a process tagged {} in /proc",
                self.tag
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn find_host_tid(tag: &str, ns_tid: u64) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmd.split(|b| *b == 0).any(|a| a == tag.as_bytes()) {
            continue;
        }
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let last = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last()?.parse::<u64>().ok());
            if last == Some(ns_tid) {
                return t.file_name().to_string_lossy().parse().ok();
            }
        }
    }
    None
}

/// A tag no other process carries.
pub fn tag(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "scx-test-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// `setpriv` as `user` (no groups), or nothing for root.
fn as_user(user: Option<&str>) -> Vec<String> {
    user.map(|u| {
        vec![
            "setpriv".into(),
            format!("--reuid={u}"),
            format!("--regid={u}"),
            "--clear-groups".into(),
        ]
    })
    .unwrap_or_default()
}

/// `hint_spin PHASE MODE TAG` on this host (as `user`, if given).
pub fn spin_c(phase: &str, mode: &str, user: Option<&str>) -> Client {
    let t = tag("spin");
    let mut argv = as_user(user);
    argv.push(bin_dir().join("hint_spin").display().to_string());
    argv.extend([phase.into(), mode.into(), t.clone()]);
    Client::spawn(&argv, &t)
}

/// The raw protocol tool, with ARGS, as `user`, tagged.
pub fn raw(args: &[&str], user: Option<&str>) -> Client {
    let t = tag("raw");
    let mut argv = as_user(user);
    argv.push("/usr/bin/python3".into());
    argv.push(root().join("tests/tools/hint_raw.py").display().to_string());
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.push(t.clone());
    Client::spawn(&argv, &t)
}

/// podman, as the facts of these VMs allow: vfs storage on tmpfs, cgroupfs,
/// no networking, a root folder built from this host's /usr. Each
/// container gets the runtime's default seccomp profile, its own PID
/// namespace, no added capability, and only the hint socket's folder and
/// (read-only) the binaries it runs.
pub struct Podman {
    rootfs: PathBuf,
}

/// The root of a container "image" at `dir`: the folders a runtime mounts
/// on, the host's user and library configuration, and `/bin`, `/lib`...
/// as links into `/usr`, which the caller provides.
pub fn image_root(dir: &Path) {
    for d in ["usr", "etc", "proc", "sys", "dev", "tmp", "run", "opt"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for d in ["bin", "lib", "lib64", "sbin"] {
        let _ = std::os::unix::fs::symlink(format!("usr/{d}"), dir.join(d));
    }
    for f in ["passwd", "group", "ld.so.cache", "nsswitch.conf"] {
        std::fs::copy(Path::new("/etc").join(f), dir.join("etc").join(f)).unwrap();
    }
    // Debian reaches BLAS (PyTorch's) through these symlinks.
    let st = Command::new("cp")
        .args(["-a", "/etc/alternatives"])
        .arg(dir.join("etc"))
        .status()
        .unwrap();
    assert!(
        st.success(),
        "copy /etc/alternatives into {}",
        dir.display()
    );
}

impl Podman {
    pub fn get() -> &'static Podman {
        static P: OnceLock<Podman> = OnceLock::new();
        P.get_or_init(|| {
            let rootfs = PathBuf::from("/tmp/ctr-rootfs");
            image_root(&rootfs);
            let st = Command::new("mount")
                .args(["--bind", "-o", "ro", "/usr"])
                .arg(rootfs.join("usr"))
                .status()
                .unwrap();
            assert!(st.success(), "bind /usr into the container root");
            std::fs::create_dir_all("/run/scx_phase").unwrap();
            Podman { rootfs }
        })
    }

    /// `podman` and its options before the subcommand, for these VMs.
    pub fn command() -> Vec<String> {
        [
            "podman",
            "--root",
            "/tmp/podman-storage",
            "--runroot",
            "/run/podman-run",
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `podman run` of `cmd` as `user` (uid:gid), with `groups` added.
    pub fn run(&self, user: &str, groups: &[&str], cmd: &[String], tag: &str) -> Client {
        let project = root().display().to_string();
        let bins = bin_dir().display().to_string();
        let mut argv = Podman::command();
        argv.extend(
            ["run", "--rm", "-i", "--network", "none", "--user", user]
                .iter()
                .map(|s| s.to_string()),
        );
        for g in groups {
            argv.extend(["--group-add".into(), g.to_string()]);
        }
        argv.extend([
            "-v".into(),
            "/run/scx_phase:/run/scx_phase".into(),
            "-v".into(),
            format!("{project}:{project}:ro"),
            "-v".into(),
            format!("{bins}:{bins}:ro"),
        ]);
        for (k, v) in client_env() {
            argv.extend(["-e".into(), format!("{k}={v}")]);
        }
        argv.extend(["--rootfs".into(), self.rootfs.display().to_string()]);
        argv.extend(cmd.iter().cloned());
        Client::spawn(&argv, tag)
    }

    /// `hint_spin PHASE MODE` in a container.
    pub fn spin_c(&self, user: &str, groups: &[&str], phase: &str, mode: &str) -> Client {
        let t = tag("ctr-spin");
        let cmd = vec![
            bin_dir().join("hint_spin").display().to_string(),
            phase.into(),
            mode.into(),
            t.clone(),
        ];
        self.run(user, groups, &cmd, &t)
    }

    /// Python in a container: `code` gets the tag as sys.argv[1].
    pub fn python(&self, user: &str, groups: &[&str], code: &str) -> Client {
        let t = tag("ctr-py");
        let cmd = vec![
            "/usr/bin/python3".into(),
            "-c".into(),
            code.into(),
            t.clone(),
        ];
        self.run(user, groups, &cmd, &t)
    }
}
