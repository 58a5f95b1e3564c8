//! Small facts about bpffs, for clear errors when it is missing.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The default bpffs mount point.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Whether `path` (which must exist) lives on a bpffs mount.
pub fn is_bpffs(path: &Path) -> std::io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a valid out buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The nearest existing ancestor of `path` (or `path` itself).
pub fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    p.to_path_buf()
}

/// If `path` cannot be on bpffs because no bpffs is mounted above it,
/// say so in one line; `None` when bpffs is there.
pub fn missing_bpffs(path: &Path) -> Option<String> {
    let anc = existing_ancestor(path);
    match is_bpffs(&anc) {
        Ok(true) => None,
        _ => Some(format!(
            "bpffs is not mounted, so {} cannot exist (mount it with: mount -t bpf bpf {BPFFS_ROOT})",
            path.display()
        )),
    }
}
