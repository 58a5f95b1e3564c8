//! Typed access to the pinned phase map: `tid -> struct phase_hint`.
//!
//! The scheduler reads this hash map on every enqueue; anybody with write
//! access to the pin may hint. The layout is the ABI of `src/bpf/intf.h`.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libbpf_rs::libbpf_sys;

use crate::bpffs;
use crate::phase::Phase;

/// Where the loader pins its maps unless told otherwise (`--pin-dir`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/scx_phase";
/// The map's name, in the kernel and in the pin folder.
pub const MAP_NAME: &str = "phase_map";
/// Default capacity, in threads (`--max-hints`).
pub const DEFAULT_MAX_HINTS: u32 = 65_536;

/// The pinned map's path inside a pin folder.
pub fn map_path(pin_dir: &Path) -> PathBuf {
    pin_dir.join(MAP_NAME)
}

/// The value stored per thread: `struct phase_hint` of `intf.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseHint {
    /// The phase number; anything above 5 is ignored by the scheduler.
    pub phase: u32,
    /// The NUMA node, or [`PhaseHint::NODE_ANY`].
    pub numa_node: i32,
}

// SAFETY: two plain integers, no padding, any bit pattern is valid.
unsafe impl plain::Plain for PhaseHint {}

impl PhaseHint {
    /// `numa_node` value meaning "the scheduler chooses".
    pub const NODE_ANY: i32 = -1;

    pub fn new(phase: Phase, node: Option<u32>) -> Self {
        PhaseHint {
            phase: phase as u32,
            numa_node: node
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(Self::NODE_ANY),
        }
    }

    /// The phase, or `None` for a value outside the ABI (garbage).
    pub fn phase(&self) -> Option<Phase> {
        Phase::from_number(self.phase)
    }

    /// The node asked for, or `None` for "any".
    pub fn node(&self) -> Option<u32> {
        u32::try_from(self.numa_node).ok()
    }
}

/// Why a phase-map operation failed. Each displays as one line.
#[derive(Debug)]
pub enum Error {
    /// No map at the path: the scheduler has never run on this boot.
    NotFound {
        path: PathBuf,
        bpffs_missing: Option<String>,
    },
    /// The caller may not open or write the map.
    PermissionDenied { path: PathBuf },
    /// Something is pinned there, but it is not our map.
    Foreign { path: PathBuf, why: String },
    /// The thread id names no live thread.
    NoSuchThread { tid: u32 },
    /// The map holds `--max-hints` entries already.
    Full { path: PathBuf, capacity: u32 },
    /// Any other system-call failure.
    Os {
        op: &'static str,
        path: PathBuf,
        errno: i32,
    },
}

impl Error {
    /// The errno that best describes this error (positive), for the C ABI.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound { .. } => libc::ENOENT,
            Error::PermissionDenied { .. } => libc::EACCES,
            Error::Foreign { .. } => libc::EINVAL,
            Error::NoSuchThread { .. } => libc::ESRCH,
            Error::Full { .. } => libc::E2BIG,
            Error::Os { errno, .. } => *errno,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound {
                bpffs_missing: Some(why),
                ..
            } => f.write_str(why),
            Error::NotFound { path, .. } => write!(
                f,
                "no phase map at {}: scx_phase is not running (start it with: sudo scx_phase)",
                path.display()
            ),
            Error::PermissionDenied { path } => write!(
                f,
                "permission denied on {}: writing hints needs root, or the group given to scx_phase --hint-group",
                path.display()
            ),
            Error::Foreign { path, why } => {
                write!(f, "{} is not a scx_phase phase map: {why}", path.display())
            }
            Error::NoSuchThread { tid } => write!(f, "no thread with id {tid}"),
            Error::Full { path, capacity } => write!(
                f,
                "phase map {} is full ({capacity} threads; restart scx_phase with a larger --max-hints)",
                path.display()
            ),
            Error::Os { op, path, errno } => write!(
                f,
                "{op} {}: {}",
                path.display(),
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// An open phase map. The fd is closed on drop; share one per process.
#[derive(Debug)]
pub struct PhaseMap {
    fd: OwnedFd,
    path: PathBuf,
    capacity: u32,
}

/// libbpf returns `-errno`; turn that into a positive errno.
fn neg_errno(ret: i32) -> i32 {
    if ret < 0 { -ret } else { libc::EIO }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Os {
        op: "open",
        path: path.to_path_buf(),
        errno: libc::EINVAL,
    })
}

/// What the kernel says about the map behind `fd`.
fn map_info(fd: i32) -> std::result::Result<libbpf_sys::bpf_map_info, i32> {
    // SAFETY: bpf_map_info is plain data; the kernel fills at most `len` bytes.
    let mut info: libbpf_sys::bpf_map_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_map_info>() as u32;
    let ret = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd, &mut info, &mut len) };
    if ret != 0 {
        return Err(neg_errno(ret));
    }
    Ok(info)
}

/// The map's name from its info, as a string.
fn info_name(info: &libbpf_sys::bpf_map_info) -> String {
    let bytes: Vec<u8> = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Why the map described by `info` is not a phase map, if it is not.
pub(crate) fn incompatibility(info: &libbpf_sys::bpf_map_info) -> Option<String> {
    let name = info_name(info);
    let want_key = std::mem::size_of::<u32>() as u32;
    let want_val = std::mem::size_of::<PhaseHint>() as u32;
    if info.type_ != libbpf_sys::BPF_MAP_TYPE_HASH {
        return Some(format!(
            "map '{name}' has type {}, not a hash map",
            info.type_
        ));
    }
    if name != MAP_NAME {
        return Some(format!("map is named '{name}', not '{MAP_NAME}'"));
    }
    if info.key_size != want_key || info.value_size != want_val {
        return Some(format!(
            "key/value are {}/{} bytes, expected {want_key}/{want_val}",
            info.key_size, info.value_size
        ));
    }
    None
}

impl PhaseMap {
    /// Open the map pinned at `path` and check that it is ours.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let c = c_path(&path)?;
        // SAFETY: `c` is a valid C string.
        let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
        if fd < 0 {
            let is_dir = path.is_dir();
            return Err(match neg_errno(fd) {
                libc::ENOENT => Error::NotFound {
                    bpffs_missing: bpffs::missing_bpffs(&path),
                    path,
                },
                // bpffs answers EACCES for a folder, whoever asks.
                _ if is_dir => Error::Foreign {
                    path,
                    why: "it is a folder".into(),
                },
                libc::EACCES | libc::EPERM => Error::PermissionDenied { path },
                // A regular file or folder where the pin should be.
                libc::EINVAL => Error::Foreign {
                    path,
                    why: "it is not a pinned BPF object".into(),
                },
                errno => Error::Os {
                    op: "open",
                    path,
                    errno,
                },
            });
        }
        // SAFETY: bpf_obj_get returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let info = map_info(fd.as_raw_fd()).map_err(|errno| Error::Foreign {
            path: path.clone(),
            why: format!(
                "it is not a BPF map ({})",
                std::io::Error::from_raw_os_error(errno)
            ),
        })?;
        if let Some(why) = incompatibility(&info) {
            return Err(Error::Foreign { path, why });
        }
        Ok(PhaseMap {
            fd,
            capacity: info.max_entries,
            path,
        })
    }

    /// Open the map in the default pin folder.
    pub fn open_default() -> Result<Self> {
        Self::open(map_path(Path::new(DEFAULT_PIN_DIR)))
    }

    /// Create an empty phase map and pin it at `path`. The loader creates
    /// its own (with BTF); this is for tests and tools that need a map
    /// without the scheduler.
    pub fn create_pinned(path: impl AsRef<Path>, capacity: u32) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let name = CString::new(MAP_NAME).map_err(|_| Error::Os {
            op: "create",
            path: path.clone(),
            errno: libc::EINVAL,
        })?;
        // SAFETY: valid name, null opts (defaults).
        let fd = unsafe {
            libbpf_sys::bpf_map_create(
                libbpf_sys::BPF_MAP_TYPE_HASH,
                name.as_ptr(),
                std::mem::size_of::<u32>() as u32,
                std::mem::size_of::<PhaseHint>() as u32,
                capacity,
                std::ptr::null(),
            )
        };
        if fd < 0 {
            return Err(Error::Os {
                op: "create map",
                path,
                errno: neg_errno(fd),
            });
        }
        // SAFETY: a fresh fd from the kernel.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = c_path(&path)?;
        // SAFETY: valid fd and C string.
        let ret = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
        if ret != 0 {
            return Err(match neg_errno(ret) {
                libc::ENOENT => Error::NotFound {
                    bpffs_missing: bpffs::missing_bpffs(&path),
                    path,
                },
                libc::EACCES | libc::EPERM => Error::PermissionDenied { path },
                errno => Error::Os {
                    op: "pin",
                    path,
                    errno,
                },
            });
        }
        Ok(PhaseMap { fd, path, capacity })
    }

    /// The map's fd, for handing to libbpf (the loader reuses it).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where the map is pinned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many threads the map can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    fn os_err(&self, op: &'static str, ret: i32) -> Error {
        match neg_errno(ret) {
            libc::EACCES | libc::EPERM => Error::PermissionDenied {
                path: self.path.clone(),
            },
            libc::E2BIG => Error::Full {
                path: self.path.clone(),
                capacity: self.capacity,
            },
            errno => Error::Os {
                op,
                path: self.path.clone(),
                errno,
            },
        }
    }

    /// Write `hint` for `tid`. No liveness check and no allocation: this is
    /// the hot path of the hint shim.
    pub fn set(&self, tid: u32, hint: PhaseHint) -> Result<()> {
        // SAFETY: key and value point to live values of the sizes the map
        // was checked to have.
        let ret = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                (&tid as *const u32).cast(),
                (&hint as *const PhaseHint).cast(),
                libbpf_sys::BPF_ANY as u64,
            )
        };
        if ret != 0 {
            return Err(self.os_err("update", ret));
        }
        Ok(())
    }

    /// Write `hint` for another thread, after checking that it exists.
    pub fn set_tid(&self, tid: u32, hint: PhaseHint) -> Result<()> {
        if !thread_exists(tid) {
            return Err(Error::NoSuchThread { tid });
        }
        self.set(tid, hint)
    }

    /// The hint stored for `tid`, if any.
    pub fn get(&self, tid: u32) -> Result<Option<PhaseHint>> {
        let mut hint = PhaseHint::default();
        // SAFETY: as in `set`; the kernel writes value_size bytes into `hint`.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                (&tid as *const u32).cast(),
                (&mut hint as *mut PhaseHint).cast(),
            )
        };
        match ret {
            0 => Ok(Some(hint)),
            r if neg_errno(r) == libc::ENOENT => Ok(None),
            r => Err(self.os_err("lookup", r)),
        }
    }

    /// Remove `tid`'s hint. Returns whether there was one.
    pub fn clear(&self, tid: u32) -> Result<bool> {
        // SAFETY: as in `set`.
        let ret = unsafe {
            libbpf_sys::bpf_map_delete_elem(self.fd.as_raw_fd(), (&tid as *const u32).cast())
        };
        match ret {
            0 => Ok(true),
            r if neg_errno(r) == libc::ENOENT => Ok(false),
            r => Err(self.os_err("delete", r)),
        }
    }

    /// Every entry, sorted by tid. Entries that vanish while we walk the
    /// map (a thread exiting) are skipped.
    pub fn entries(&self) -> Result<Vec<(u32, PhaseHint)>> {
        let mut out = Vec::new();
        let mut key: u32 = 0;
        let mut first = true;
        loop {
            let mut next: u32 = 0;
            let prev: *const libc::c_void = if first {
                std::ptr::null()
            } else {
                (&key as *const u32).cast()
            };
            // SAFETY: prev is null or a live u32; next is a u32 out buffer.
            let ret = unsafe {
                libbpf_sys::bpf_map_get_next_key(
                    self.fd.as_raw_fd(),
                    prev,
                    (&mut next as *mut u32).cast(),
                )
            };
            if ret != 0 {
                if neg_errno(ret) == libc::ENOENT {
                    break;
                }
                return Err(self.os_err("iterate", ret));
            }
            first = false;
            key = next;
            if let Some(hint) = self.get(key)? {
                out.push((key, hint));
            }
        }
        out.sort_by_key(|(tid, _)| *tid);
        Ok(out)
    }
}

/// Whether `tid` names a live thread in our pid namespace.
pub fn thread_exists(tid: u32) -> bool {
    tid != 0 && Path::new(&format!("/proc/{tid}/stat")).exists()
}

/// The calling thread's kernel id.
pub fn current_tid() -> u32 {
    // SAFETY: gettid never fails.
    (unsafe { libc::gettid() }) as u32
}

/// A thread's name (`comm`), if it is alive.
pub fn thread_name(tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_round_trips_phase_and_node() {
        let h = PhaseHint::new(Phase::Backward, Some(1));
        assert_eq!((h.phase, h.numa_node), (3, 1));
        assert_eq!(h.phase(), Some(Phase::Backward));
        assert_eq!(h.node(), Some(1));
        let any = PhaseHint::new(Phase::Idle, None);
        assert_eq!(any.numa_node, PhaseHint::NODE_ANY);
        assert_eq!(any.node(), None);
        let garbage = PhaseHint {
            phase: 99,
            numa_node: -7,
        };
        assert_eq!(garbage.phase(), None);
        assert_eq!(garbage.node(), None);
    }

    #[test]
    fn errors_are_one_line_with_errno() {
        let errs = [
            Error::NotFound {
                path: "/x".into(),
                bpffs_missing: None,
            },
            Error::PermissionDenied { path: "/x".into() },
            Error::Foreign {
                path: "/x".into(),
                why: "w".into(),
            },
            Error::NoSuchThread { tid: 7 },
            Error::Full {
                path: "/x".into(),
                capacity: 1,
            },
        ];
        let want = [
            libc::ENOENT,
            libc::EACCES,
            libc::EINVAL,
            libc::ESRCH,
            libc::E2BIG,
        ];
        for (e, errno) in errs.iter().zip(want) {
            assert!(!e.to_string().contains('\n'));
            assert_eq!(e.errno(), errno);
        }
    }
}
