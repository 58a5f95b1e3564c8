//! Fds in the service's epoll set that leave it when they are dropped.
//!
//! epoll drops a watch only when the watched *file* is released, that is
//! when its last fd closes, wherever that fd is. A pidfd a client sends is
//! a file the client, or a child it forked, may still hold: closing the
//! service's copy left the watch in the set, level-triggered and readable
//! once its thread had exited, and the loop woke for it at once, every
//! turn (51-101% of a CPU, measured in the VM). So a watched fd deletes
//! its watch before it closes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Add `fd` to `epoll` for `events`, tagged with `token`.
pub(super) fn epoll_add_events(
    epoll: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    token: u64,
    events: u32,
) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: valid fds and event.
    if unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            &mut ev,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Add `fd` to `epoll` for input, tagged with `token`.
pub(super) fn epoll_add(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
    epoll_add_events(epoll, fd, token, libc::EPOLLIN as u32)
}

/// An fd that may be in the service's epoll set, and is out of it once
/// dropped.
pub struct Watched {
    fd: OwnedFd,
    epoll: Arc<OwnedFd>,
    added: bool,
}

impl Watched {
    /// `fd`, not watched yet.
    pub fn new(epoll: &Arc<OwnedFd>, fd: OwnedFd) -> Watched {
        Watched {
            fd,
            epoll: Arc::clone(epoll),
            added: false,
        }
    }

    /// Watch it for input (a pidfd: its task exited), tagged with `token`.
    pub fn watch(&mut self, token: u64) -> io::Result<()> {
        epoll_add(self.epoll.as_fd(), self.fd.as_fd(), token)?;
        self.added = true;
        Ok(())
    }
}

impl AsFd for Watched {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.added {
            // SAFETY: both fds are open; a null event is allowed for DEL.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                );
            }
        }
    }
}
