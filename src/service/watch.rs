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

/// What an epoll event is about: the tag of each fd in the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// The listening socket: connections to accept.
    Listener,
    /// A client's socket; `generation` tells its index's occupants apart.
    Client { index: u32, generation: u32 },
    /// The pidfd of a thread bound to `slot` of workload `wid`.
    Thread { wid: u32, slot: u32 },
    /// The pidfd of workload `wid`'s process.
    Process { wid: u32 },
    /// A memory-pressure trigger.
    Pressure { id: u32 },
}

/// The kind in the top byte, a 24-bit field, then a 32-bit one.
const SHIFT: u32 = 56;
const HIGH: u64 = 0xff_ffff;

impl Token {
    /// As epoll's 64-bit tag. The 24-bit fields (a generation, a
    /// workload id) are masked: ids stay below 2^24.
    pub fn encode(self) -> u64 {
        let (kind, high, low) = match self {
            Token::Listener => (1, 0, 0),
            Token::Client { index, generation } => (2, generation, index),
            Token::Thread { wid, slot } => (3, wid, slot),
            Token::Process { wid } => (4, 0, wid),
            Token::Pressure { id } => (5, 0, id),
        };
        kind << SHIFT | (high as u64 & HIGH) << 32 | low as u64
    }

    pub fn decode(tag: u64) -> Option<Token> {
        let high = ((tag >> 32) & HIGH) as u32;
        let low = tag as u32;
        Some(match tag >> SHIFT {
            1 => Token::Listener,
            2 => Token::Client {
                index: low,
                generation: high,
            },
            3 => Token::Thread {
                wid: high,
                slot: low,
            },
            4 => Token::Process { wid: low },
            5 => Token::Pressure { id: low },
            _ => return None,
        })
    }
}

/// Add `fd` to `epoll` for `events`, tagged with `token`.
pub(super) fn epoll_add_events(
    epoll: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    token: Token,
    events: u32,
) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: token.encode(),
    };
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
pub(super) fn epoll_add(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
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
    pub fn watch(&mut self, token: Token) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_reads_back_as_written() {
        let tokens = [
            Token::Listener,
            Token::Client {
                index: u32::MAX,
                generation: 0xff_ffff,
            },
            Token::Client {
                index: 7,
                generation: 1,
            },
            Token::Thread {
                wid: 4095,
                slot: 4095,
            },
            Token::Process { wid: 1 },
            Token::Pressure { id: u32::MAX },
        ];
        for t in tokens {
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(9 << SHIFT), None);
    }
}
