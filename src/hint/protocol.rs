//! The wire format between the hint library and the hint service: one
//! fixed-size request per `SOCK_SEQPACKET` message, at most one file
//! descriptor with it (`SCM_RIGHTS`), one reply per request.
//!
//! The client never says who it is: the service reads that from the
//! socket (`SO_PEERCRED`, `SO_PEERPIDFD`). It names threads with pidfds it
//! opened itself, so every number is resolved in its own PID namespace.

use std::fmt;

/// Where the service listens unless told otherwise (`--hint-socket`).
pub const DEFAULT_SOCKET: &str = "/run/scx_phase/hint.sock";
/// Environment variable naming the socket for the library.
pub const SOCKET_ENV: &str = "SCX_PHASE_SOCKET";
/// Protocol version; a request of another version is refused.
pub const VERSION: u16 = 1;
/// Bytes in a request.
pub const REQUEST_LEN: usize = 16;
/// Bytes in the largest reply.
pub const MAX_REPLY_LEN: usize = HEADER_LEN + MAX_MESSAGE;
const HEADER_LEN: usize = 28;
/// The longest reason a reply carries.
pub const MAX_MESSAGE: usize = 232;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Register the calling process. The reply carries its hint memory
    /// (the fd of its BPF array, to mmap) and what it may set.
    Hello = 1,
    /// Bind the thread of the pidfd sent along (one of the caller's own)
    /// to a slot of its hint memory. The reply names the slot.
    Thread = 2,
    /// Set `phase`/`node` on the thread of the pidfd sent along, until it
    /// exits: a one-shot hint, for threads that do not hint themselves.
    Set = 3,
    /// Remove the one-shot hint of the thread of the pidfd sent along.
    Clear = 4,
}

impl Op {
    fn from_u16(v: u16) -> Option<Op> {
        Some(match v {
            1 => Op::Hello,
            2 => Op::Thread,
            3 => Op::Set,
            4 => Op::Clear,
            _ => return None,
        })
    }

    /// Whether the request must carry a pidfd.
    pub fn needs_fd(self) -> bool {
        !matches!(self, Op::Hello)
    }
}

/// One request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    /// A phase number (Set).
    pub phase: u32,
    /// A NUMA node, or -1 for any (Set).
    pub node: i32,
}

/// Why a request could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Request {
    pub fn new(op: Op) -> Request {
        Request {
            op,
            phase: 0,
            node: -1,
        }
    }

    /// `version u16, op u16, phase u32, node i32, reserved u32` (LE).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..2].copy_from_slice(&VERSION.to_le_bytes());
        b[2..4].copy_from_slice(&(self.op as u16).to_le_bytes());
        b[4..8].copy_from_slice(&self.phase.to_le_bytes());
        b[8..12].copy_from_slice(&self.node.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Request, BadRequest> {
        if b.len() != REQUEST_LEN {
            return Err(BadRequest(format!(
                "a request is {REQUEST_LEN} bytes, not {}",
                b.len()
            )));
        }
        let version = u16_at(b, 0);
        if version != VERSION {
            return Err(BadRequest(format!(
                "protocol version {version}; this service speaks {VERSION}"
            )));
        }
        let op = Op::from_u16(u16_at(b, 2))
            .ok_or_else(|| BadRequest(format!("unknown request {}", u16_at(b, 2))))?;
        if u32_at(b, 12) != 0 {
            return Err(BadRequest("reserved bytes are not zero".into()));
        }
        Ok(Request {
            op,
            phase: u32_at(b, 4),
            node: u32_at(b, 8) as i32,
        })
    }
}

/// One reply: a status (0 or a negative errno) and, on success, what the
/// request returns; on failure, a one-line reason that names the rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub status: i32,
    /// The workload id (Hello).
    pub wid: u32,
    /// Its generation: with `wid`, names this process's memory (Hello).
    pub generation: u32,
    /// The slot (Thread).
    pub slot: u32,
    /// Phases the caller may set, a bit per phase (Hello).
    pub allow: u32,
    /// Slots in the hint memory (Hello).
    pub slots: u32,
    pub message: String,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::default()
    }

    pub fn error(errno: i32, message: impl Into<String>) -> Reply {
        Reply {
            status: -errno.abs(),
            message: message.into(),
            ..Reply::default()
        }
    }

    /// `version u16, len u16, status i32, wid, generation, slot, allow, slots
    /// (u32), message (len bytes, UTF-8)` (LE).
    pub fn encode(&self) -> Vec<u8> {
        let mut msg = self.message.as_bytes();
        if msg.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !self.message.is_char_boundary(end) {
                end -= 1;
            }
            msg = &msg[..end];
        }
        let mut b = Vec::with_capacity(HEADER_LEN + msg.len());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&(msg.len() as u16).to_le_bytes());
        b.extend_from_slice(&self.status.to_le_bytes());
        for v in [self.wid, self.generation, self.slot, self.allow, self.slots] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(msg);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Reply, BadRequest> {
        if b.len() < HEADER_LEN || u16_at(b, 0) != VERSION {
            return Err(BadRequest("malformed reply from the hint service".into()));
        }
        let len = u16_at(b, 2) as usize;
        if b.len() != HEADER_LEN + len {
            return Err(BadRequest("truncated reply from the hint service".into()));
        }
        Ok(Reply {
            status: u32_at(b, 4) as i32,
            wid: u32_at(b, 8),
            generation: u32_at(b, 12),
            slot: u32_at(b, 16),
            allow: u32_at(b, 20),
            slots: u32_at(b, 24),
            message: String::from_utf8_lossy(&b[HEADER_LEN..]).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for op in [Op::Hello, Op::Thread, Op::Set, Op::Clear] {
            let r = Request {
                op,
                phase: 3,
                node: -1,
            };
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let good = Request::new(Op::Set).encode();
        let mut v = good;
        v[0] = 9;
        assert!(Request::decode(&v).unwrap_err().0.contains("version 9"));
        let mut o = good;
        o[2] = 77;
        assert!(
            Request::decode(&o)
                .unwrap_err()
                .0
                .contains("unknown request 77")
        );
        let mut r = good;
        r[15] = 1;
        assert!(Request::decode(&r).is_err());
        assert!(Request::decode(&good[..15]).is_err());
        assert!(Request::decode(&[]).is_err());
    }

    #[test]
    fn replies_round_trip_and_cut_long_messages() {
        let r = Reply {
            status: -1,
            wid: 7,
            generation: 2,
            slot: 9,
            allow: 63,
            slots: 4096,
            message: "refused: é".into(),
        };
        assert_eq!(Reply::decode(&r.encode()), Ok(r));
        let long = Reply::error(1, "é".repeat(400));
        let back = Reply::decode(&long.encode()).unwrap();
        assert!(back.message.len() <= MAX_MESSAGE);
        assert_eq!(back.status, -1);
        assert!(long.encode().len() <= MAX_REPLY_LEN);
    }
}
