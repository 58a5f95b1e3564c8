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
