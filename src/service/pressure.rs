//! Memory-pressure watches: a PSI trigger on the workload's cgroup
//! (`memory.pressure`), or on the host's (`/proc/pressure/memory`) when the
//! process sits in the root cgroup. The service writes the trigger (so any
//! window works for any client) and polls it; each firing goes to the
//! client with the figures of the moment.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// PSI's bounds on a trigger's window, in µs.
pub const WINDOW_US: std::ops::RangeInclusive<u32> = 500_000..=10_000_000;

#[derive(Debug)]
pub struct Watch {
    file: fs::File,
    pub path: PathBuf,
    pub stall_us: u32,
    pub window_us: u32,
    pub full: bool,
}

/// The pressure file of `pid`'s cgroup, else the host's.
fn pressure_path(pid: u32) -> PathBuf {
    let cgroup = super::identity::cgroup_of(pid).unwrap_or_default();
    if cgroup != "/" && !cgroup.is_empty() {
        let p = PathBuf::from(format!("/sys/fs/cgroup{cgroup}/memory.pressure"));
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("/proc/pressure/memory")
}

impl Watch {
    pub fn open(pid: u32, stall_us: u32, window_us: u32, full: bool) -> Result<Watch, String> {
        if !WINDOW_US.contains(&window_us) || stall_us == 0 || stall_us > window_us {
            return Err(format!(
                "refused: a pressure watch needs a window of 0.5 to 10 s and a stall within it (got {} ms in {} ms)",
                stall_us / 1000,
                window_us / 1000
            ));
        }
        let path = pressure_path(pid);
        let mut file = fs::File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("refused: cannot open {}: {e}", path.display()))?;
        let level = if full { "full" } else { "some" };
        file.write_all(format!("{level} {stall_us} {window_us}\0").as_bytes())
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EINVAL) && !window_us.is_multiple_of(2_000_000) {
                    format!(
                        "refused: a {} ms window on {} needs CAP_SYS_RESOURCE, which this scx_phase lacks (without it: multiples of 2 s)",
                        window_us / 1000,
                        path.display()
                    )
                } else {
                    format!("refused: cannot set a trigger on {}: {e}", path.display())
                }
            })?;
        Ok(Watch {
            file,
            path,
            stall_us,
            window_us,
            full,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The file's figures now, on one line ("some avg10=… total=…; full …").
    pub fn figures(&mut self) -> io::Result<String> {
        self.file.rewind()?;
        let mut s = String::new();
        self.file.read_to_string(&mut s)?;
        Ok(s.lines().collect::<Vec<_>>().join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_stalls_are_checked() {
        let me = std::process::id();
        assert!(
            Watch::open(me, 100_000, 100_000, false)
                .unwrap_err()
                .contains("0.5 to 10 s")
        );
        assert!(Watch::open(me, 0, 1_000_000, false).is_err());
        assert!(Watch::open(me, 2_000_000, 1_000_000, false).is_err());
    }

    #[test]
    fn a_trigger_on_the_hosts_or_our_cgroup_reads_its_figures() {
        // A 2 s window: allowed without CAP_SYS_RESOURCE too.
        let mut w = Watch::open(std::process::id(), 150_000, 2_000_000, false).unwrap();
        let f = w.figures().unwrap();
        assert!(f.starts_with("some avg10="), "{f}");
    }
}
