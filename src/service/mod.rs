//! The hint service: the daemon side of hints, run by `scx_phase` beside
//! the scheduler.
//!
//! A process connects to its Unix socket (default `/run/scx_phase/hint.sock`,
//! any user, any container that mounts the socket's folder) and gets its
//! own hint memory: a `BPF_F_MMAPABLE` array that it maps and writes with
//! plain stores, which the scheduler reads. The service binds each of the
//! process's threads to a slot of it through task storage that only the
//! service writes, keyed by a pidfd the client opened in its own PID
//! namespace. It learns who the client is from the kernel, never from the
//! client, and applies the kernel's own rules (`rules.rs`): a client hints
//! only what it could signal, and only `--hint-group` members (or holders
//! of CAP_SYS_NICE) may raise a thread above un-hinted work. The
//! scheduler checks every value it reads against what the workload was
//! granted, so garbage in the memory is ignored and counted.
//!
//! Its state lives in pinned maps, so a restarted `scx_phase` adopts the
//! registered processes and their threads' hints carry on.
//!
//! - `bpf.rs`: loading the service's BPF object and its pins;
//! - `maps.rs`: every write the service makes to the hint maps;
//! - `identity.rs`: who a client is, which thread a pidfd names;
//! - `rules.rs`: who may hint what;
//! - `classify.rs`: the thread-name rules, written into both BPF objects
//!   (the scheduler's and the service's, whose `dump` resolves by them);
//! - `workloads.rs`: registered processes, their memory and slots;
//! - `server/`: the `Server`, its event loop and limits (`mod.rs`), its
//!   hint requests and adoption after a restart (`hints.rs`), and its
//!   workload-API requests (`workload.rs`);
//! - `watch.rs`: the epoll tokens, and fds that leave the set when dropped;
//! - `closer.rs`: closing what clients sent, off the event loop;
//! - `workload_api.rs`: what jobs hold through the workload API (CPU
//!   claims in `claims.rs`, locked memory in `memlock.rs`, pressure
//!   watches in `pressure.rs`), released when their connections close.
//!
//! Layers point one way: `server/` uses the others; none uses it.

pub mod bpf;
pub mod claims;
pub mod classify;
pub mod closer;
pub mod identity;
pub mod maps;
pub mod memlock;
pub mod pressure;
pub mod quota;
pub mod rules;
pub mod server;
pub mod status_file;
pub mod watch;
pub mod workload_api;
pub mod workloads;

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use log::{info, warn};
use scx_phase::sys;

use self::maps::HintMaps;
use self::server::{Limits, Server};
use self::workload_api::Config;

/// The running service thread; stopped, and its socket removed, on drop.
pub struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The socket file we bound, and its inode: removed on exit only if it
    /// is still ours (a successor may have bound the path meanwhile).
    socket: Option<(PathBuf, u64)>,
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// A listening socket handed over by systemd (socket activation), if any.
fn inherited_socket() -> Option<OwnedFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: systemd passes its sockets from fd 3 on, and nothing else
    // in this process has claimed fd 3.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
    }
    Some(fd)
}

/// Bind `path` (mode 0666: anyone may connect; the rules decide what
/// they may do), replacing a stale socket, refusing a live one.
fn listen(path: &Path) -> Result<OwnedFd> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // Only a folder of its own: one given (a shared /tmp, say) keeps
        // its mode.
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
    if path.exists() {
        if sys::seqpacket_connect(path).is_ok() {
            bail!(
                "another hint service already listens on {} (is scx_phase running?)",
                path.display()
            );
        }
        fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    let c = sys::c_path(path)?;
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let bytes = c.as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        bail!("socket path {} is too long", path.display());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket(2).
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: a valid address of `len` bytes.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot bind {}", path.display()));
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    // SAFETY: listen on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        return Err(std::io::Error::last_os_error()).context("listen");
    }
    Ok(fd)
}

impl Service {
    /// Listen on `socket` (or the socket systemd passed) and serve from a
    /// thread of its own.
    pub fn start(socket: &Path, maps: HintMaps, mut config: Config) -> Result<Service> {
        let (listener, owned) = match inherited_socket() {
            Some(fd) => (fd, None),
            None => {
                let fd = listen(socket)?;
                (fd, inode(socket).map(|ino| (socket.to_path_buf(), ino)))
            }
        };
        if config.status_path.is_none() {
            config.status_path = Some(status_file::beside(socket));
        }
        let mut server = Server::new(listener, maps, config, Limits::default())
            .context("cannot start the hint service")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hint-service".into())
            .spawn(move || server.run(&flag))
            .context("cannot start the hint service thread")?;
        info!(
            "hint service listening on {}",
            owned
                .as_ref()
                .map_or(Path::new("(socket from systemd)"), |(p, _)| p.as_path())
                .display()
        );
        Ok(Service {
            stop,
            thread: Some(thread),
            socket: owned,
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("the hint service thread panicked");
        }
        if let Some((path, ino)) = &self.socket
            && inode(path) == Some(*ino)
        {
            let _ = fs::remove_file(path);
        }
    }
}
