//! Why a hint call failed: one type for the Rust API, the C ABI's errno
//! and the workload API, kept apart from the calls so that the modules
//! that make them need not import the library's root.

use std::fmt;
use std::path::PathBuf;

use super::{protocol, tid_map};

/// Why a hint was not set. Each displays as one line.
#[derive(Debug)]
pub enum Error {
    /// No hint service listens at the socket: scx_phase is not running.
    NotRunning { socket: PathBuf },
    /// The service (or this library, which knows what was granted)
    /// refused; the message names the rule.
    Refused { errno: i32, message: String },
    /// No thread with that id in the caller's PID namespace.
    NoSuchThread { tid: i32 },
    /// The pinned tid map refused (with `$SCX_PHASE_MAP`).
    Map(tid_map::Error),
    /// The service did not answer in time: hints are not applied, and
    /// the library tries again after a second.
    TimedOut { after_ms: u64 },
    /// A system call failed.
    Os { op: &'static str, errno: i32 },
}

impl Error {
    /// The errno that best describes this error (positive), for the C ABI.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotRunning { .. } => libc::ENOENT,
            Error::Refused { errno, .. } => *errno,
            Error::NoSuchThread { .. } => libc::ESRCH,
            Error::Map(e) => e.errno(),
            Error::TimedOut { .. } => libc::ETIMEDOUT,
            Error::Os { errno, .. } => *errno,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotRunning { socket } => write!(
                f,
                "no hint service at {}: scx_phase is not running (start it with: sudo scx_phase)",
                socket.display()
            ),
            Error::Refused { message, .. } => f.write_str(message),
            Error::NoSuchThread { tid } => write!(f, "no thread with id {tid}"),
            Error::Map(e) => e.fmt(f),
            Error::TimedOut { after_ms } => write!(
                f,
                "the hint service did not answer within {after_ms} ms, so hints are not applied (wait longer with {}=MS)",
                protocol::TIMEOUT_ENV
            ),
            Error::Os { op, errno } => {
                write!(f, "{op}: {}", std::io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<tid_map::Error> for Error {
    fn from(e: tid_map::Error) -> Self {
        Error::Map(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
