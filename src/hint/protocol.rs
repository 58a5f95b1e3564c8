//! The wire format between the hint library and the hint service: one
//! fixed-size request per `SOCK_SEQPACKET` message, at most one file
//! descriptor with it (`SCM_RIGHTS`), one reply per request.
//!
//! The client never says who it is: the service reads that from the
//! socket (`SO_PEERCRED`, `SO_PEERPIDFD`). It names threads with pidfds it
//! opened itself, so every number is resolved in its own PID namespace.

use std::fmt;

use crate::bpf_intf::workload_phase_stats;

/// Where the service listens unless told otherwise (`--hint-socket`).
pub const DEFAULT_SOCKET: &str = "/run/scx_phase/hint.sock";
/// Environment variable naming the socket for the library.
pub const SOCKET_ENV: &str = "SCX_PHASE_SOCKET";
/// Environment variable: how long the library waits for the service's
/// reply, in milliseconds (default [`DEFAULT_TIMEOUT_MS`]).
pub const TIMEOUT_ENV: &str = "SCX_PHASE_TIMEOUT_MS";
/// A service that has not answered in a second is stuck or hostile; the
/// caller carries on un-hinted rather than wait.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
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
    /// Claim CPUs for the caller's process while this connection is open:
    /// `a` CPUs, on node `b` (-1 any; -2 - i: GPU i's node), `c` flags
    /// (CLAIM_EXCLUSIVE, CLAIM_SPREAD). The reply: `slot` the node,
    /// `slots` the count, `message` the CPU list.
    Claim = 5,
    /// Locked memory, out of the host's budget, while this connection is
    /// open and the caller's process lives. Without an fd: reserve
    /// `a | c << 32` bytes for buffers to come. With a memfd of the
    /// caller's: lock its pages resident (the service maps and mlocks
    /// them; nothing of the caller's limits changes), out of what it
    /// reserved first. The reply's `slot` names the lock (or the
    /// reservation), for UnlockMemory.
    LockMemory = 6,
    /// Watch memory pressure (PSI) of the caller's cgroup: an event when
    /// `a` µs of stall (`c` level: 0 some, 1 full) build up within `b` µs.
    WatchPressure = 7,
    /// What the scheduler counted for the caller's process in phase slot
    /// `a` (the phases, then un-hinted) since it registered. The reply's
    /// `message`: `runtime_ns boosted_ns wait_ns waits`, in decimal.
    Stats = 8,
    /// End the lock or reservation `a` (a LockMemory reply's `slot`) of
    /// this connection.
    UnlockMemory = 9,
}

/// What a request carries besides its 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carries {
    Nothing,
    /// A pidfd of the thread it is about.
    Pidfd,
    /// A memfd to lock, or nothing (a reservation).
    MaybeMemfd,
}

/// Claim flags.
pub const CLAIM_EXCLUSIVE: u32 = 1;
pub const CLAIM_SPREAD: u32 = 2;

/// Reply statuses above zero are events the service sends unasked.
pub const EVENT_PRESSURE: i32 = 1;
/// The claim's CPUs changed (a CPU went offline); `message` lists them.
pub const EVENT_CLAIM: i32 = 2;

impl Op {
    /// Every operation, in number order.
    pub const ALL: [Op; 9] = [
        Op::Hello,
        Op::Thread,
        Op::Set,
        Op::Clear,
        Op::Claim,
        Op::LockMemory,
        Op::WatchPressure,
        Op::Stats,
        Op::UnlockMemory,
    ];

    fn from_u16(v: u16) -> Option<Op> {
        Op::ALL.into_iter().find(|op| *op as u16 == v)
    }

    /// What the request may carry.
    pub fn carries(self) -> Carries {
        match self {
            Op::Thread | Op::Set | Op::Clear => Carries::Pidfd,
            Op::LockMemory => Carries::MaybeMemfd,
            _ => Carries::Nothing,
        }
    }

    /// Whether the reserved word must be zero (it carries data otherwise).
    fn plain(self) -> bool {
        matches!(
            self,
            Op::Hello | Op::Thread | Op::Set | Op::Clear | Op::Stats | Op::UnlockMemory
        )
    }
}

/// One request, typed: each operation with what it carries. On the wire
/// it is 16 bytes, `version u16, op u16, a u32, b i32, c u32` (LE), and
/// `encode`/`decode` are the one place that gives the three words their
/// meaning per operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Hello,
    Thread,
    Set {
        phase: u32,
        node: i32,
    },
    Clear,
    /// `node`: -1 any, -2 - i GPU i's node; `flags`: CLAIM_*.
    Claim {
        cpus: u32,
        node: i32,
        flags: u32,
    },
    LockMemory {
        bytes: u64,
    },
    /// `level`: 0 some, 1 full (anything else is refused by the service).
    WatchPressure {
        stall_us: u32,
        window_us: i32,
        level: u32,
    },
    Stats {
        slot: u32,
    },
    UnlockMemory {
        lock: u32,
    },
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
    pub fn op(&self) -> Op {
        match self {
            Request::Hello => Op::Hello,
            Request::Thread => Op::Thread,
            Request::Set { .. } => Op::Set,
            Request::Clear => Op::Clear,
            Request::Claim { .. } => Op::Claim,
            Request::LockMemory { .. } => Op::LockMemory,
            Request::WatchPressure { .. } => Op::WatchPressure,
            Request::Stats { .. } => Op::Stats,
            Request::UnlockMemory { .. } => Op::UnlockMemory,
        }
    }

    /// The words `a`, `b`, `c`; -1 in `b` where it carries nothing (no node).
    fn words(&self) -> (u32, i32, u32) {
        match *self {
            Request::Hello | Request::Thread | Request::Clear => (0, -1, 0),
            Request::Set { phase, node } => (phase, node, 0),
            Request::Claim { cpus, node, flags } => (cpus, node, flags),
            Request::LockMemory { bytes } => (bytes as u32, 0, (bytes >> 32) as u32),
            Request::WatchPressure {
                stall_us,
                window_us,
                level,
            } => (stall_us, window_us, level),
            Request::Stats { slot } => (slot, -1, 0),
            Request::UnlockMemory { lock } => (lock, -1, 0),
        }
    }

    /// `version u16, op u16, a u32, b i32, c u32` (LE).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let (a, w, c) = self.words();
        let mut b = [0u8; REQUEST_LEN];
        b[0..2].copy_from_slice(&VERSION.to_le_bytes());
        b[2..4].copy_from_slice(&(self.op() as u16).to_le_bytes());
        b[4..8].copy_from_slice(&a.to_le_bytes());
        b[8..12].copy_from_slice(&w.to_le_bytes());
        b[12..16].copy_from_slice(&c.to_le_bytes());
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
        let c = u32_at(b, 12);
        if op.plain() && c != 0 {
            return Err(BadRequest("reserved bytes are not zero".into()));
        }
        let (a, w) = (u32_at(b, 4), u32_at(b, 8) as i32);
        Ok(match op {
            Op::Hello => Request::Hello,
            Op::Thread => Request::Thread,
            Op::Set => Request::Set { phase: a, node: w },
            Op::Clear => Request::Clear,
            Op::Claim => Request::Claim {
                cpus: a,
                node: w,
                flags: c,
            },
            Op::LockMemory => Request::LockMemory {
                bytes: u64::from(a) | u64::from(c) << 32,
            },
            Op::WatchPressure => Request::WatchPressure {
                stall_us: a,
                window_us: w,
                level: c,
            },
            Op::Stats => Request::Stats { slot: a },
            Op::UnlockMemory => Request::UnlockMemory { lock: a },
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

/// What a reply says, typed. `Reply` is its wire form (a header of five
/// words and a message); `From<Answer> for Reply` and `Reply::answer()`
/// are the one place that gives those words their meaning per request.
/// A refusal is a `Reply::error()`, turned into an error by the caller.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Set, Clear, UnlockMemory, WatchPressure: done, with a note.
    Done { note: String },
    /// Hello: the workload, what it may set, its memory's slots.
    Registered {
        wid: u32,
        generation: u32,
        allow: u32,
        slots: u32,
        grant: String,
    },
    /// Thread: the slot bound to it.
    Bound { slot: u32 },
    /// Claim: the node, and the CPUs as a list ("2-3").
    Claimed { node: u32, count: u32, cpus: String },
    /// LockMemory: the lock's (or reservation's) id, for UnlockMemory.
    Held { lock: u32, note: String },
    /// Stats: the figures, if the message held four numbers.
    Figures(Option<workload_phase_stats>),
    /// Unasked (EVENT_PRESSURE): a pressure trigger fired.
    Pressure {
        full: bool,
        stall_us: u32,
        window_us: u32,
        figures: String,
    },
    /// Unasked (EVENT_CLAIM): a claim's CPUs changed.
    ClaimMoved { node: u32, count: u32, cpus: String },
}

impl From<Answer> for Reply {
    fn from(a: Answer) -> Reply {
        let ok = Reply::ok();
        match a {
            Answer::Done { note } => Reply {
                message: note,
                ..ok
            },
            Answer::Registered {
                wid,
                generation,
                allow,
                slots,
                grant,
            } => Reply {
                wid,
                generation,
                allow,
                slots,
                message: grant,
                ..ok
            },
            Answer::Bound { slot } => Reply { slot, ..ok },
            Answer::Claimed { node, count, cpus } => Reply {
                slot: node,
                slots: count,
                message: cpus,
                ..ok
            },
            Answer::Held { lock, note } => Reply {
                slot: lock,
                message: note,
                ..ok
            },
            Answer::Figures(f) => Reply {
                message: f.as_ref().map(encode_stats).unwrap_or_default(),
                ..ok
            },
            Answer::Pressure {
                full,
                stall_us,
                window_us,
                figures,
            } => Reply {
                status: EVENT_PRESSURE,
                allow: u32::from(full),
                slot: stall_us,
                slots: window_us,
                message: figures,
                ..ok
            },
            Answer::ClaimMoved { node, count, cpus } => Reply {
                status: EVENT_CLAIM,
                slot: node,
                slots: count,
                message: cpus,
                ..ok
            },
        }
    }
}

impl Reply {
    /// What this successful reply to a request of `to` says.
    pub fn answer(&self, to: Op) -> Answer {
        let note = self.message.clone();
        match to {
            Op::Hello => Answer::Registered {
                wid: self.wid,
                generation: self.generation,
                allow: self.allow,
                slots: self.slots,
                grant: note,
            },
            Op::Thread => Answer::Bound { slot: self.slot },
            Op::Claim => Answer::Claimed {
                node: self.slot,
                count: self.slots,
                cpus: note,
            },
            Op::LockMemory => Answer::Held {
                lock: self.slot,
                note,
            },
            Op::Stats => Answer::Figures(decode_stats(&note)),
            Op::Set | Op::Clear | Op::UnlockMemory | Op::WatchPressure => Answer::Done { note },
        }
    }

    /// The event this is, if the service sent it unasked (a status above 0).
    pub fn event(&self) -> Option<Answer> {
        let note = self.message.clone();
        match self.status {
            EVENT_PRESSURE => Some(Answer::Pressure {
                full: self.allow == 1,
                stall_us: self.slot,
                window_us: self.slots,
                figures: note,
            }),
            EVENT_CLAIM => Some(Answer::ClaimMoved {
                node: self.slot,
                count: self.slots,
                cpus: note,
            }),
            _ => None,
        }
    }
}

/// A Stats reply's message, from the scheduler's figures.
pub fn encode_stats(f: &workload_phase_stats) -> String {
    format!(
        "{} {} {} {}",
        f.runtime_ns, f.boosted_ns, f.wait_ns, f.waits
    )
}

/// The figures in a Stats reply's message; None if it is not four numbers.
pub fn decode_stats(message: &str) -> Option<workload_phase_stats> {
    let mut n = message.split(' ').map(|w| w.parse::<u64>().ok());
    let f = workload_phase_stats {
        runtime_ns: n.next()??,
        boosted_ns: n.next()??,
        wait_ns: n.next()??,
        waits: n.next()??,
    };
    n.next().is_none().then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_request() -> [Request; 9] {
        [
            Request::Hello,
            Request::Thread,
            Request::Set { phase: 3, node: -1 },
            Request::Clear,
            Request::Claim {
                cpus: 8,
                node: -3,
                flags: CLAIM_EXCLUSIVE | CLAIM_SPREAD,
            },
            Request::LockMemory { bytes: 5 << 32 | 7 },
            Request::WatchPressure {
                stall_us: 150_000,
                window_us: 1_000_000,
                level: 1,
            },
            Request::Stats { slot: 6 },
            Request::UnlockMemory { lock: 4 },
        ]
    }

    #[test]
    fn requests_round_trip() {
        for r in every_request() {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        assert_eq!(
            every_request().map(|r| r.op()),
            Op::ALL,
            "one request per operation, in order"
        );
    }

    /// The typed requests put the same bytes on the wire as the words
    /// did: the words a, b, c after version 1 and the op, per operation.
    #[test]
    fn the_wire_format_is_the_16_bytes_it_was() {
        let words: [(u32, i32, u32); 9] = [
            (0, -1, 0),
            (0, -1, 0),
            (3, -1, 0),
            (0, -1, 0),
            (8, -3, 3),
            (7, 0, 5),
            (150_000, 1_000_000, 1),
            (6, -1, 0),
            (4, -1, 0),
        ];
        for (r, (a, b, c)) in every_request().iter().zip(words) {
            let mut want = vec![1, 0, r.op() as u8, 0];
            want.extend(a.to_le_bytes());
            want.extend(b.to_le_bytes());
            want.extend(c.to_le_bytes());
            assert_eq!(r.encode().to_vec(), want, "{r:?}");
        }
    }

    #[test]
    fn stats_round_trip_and_garbage_is_refused() {
        let f = workload_phase_stats {
            runtime_ns: u64::MAX,
            boosted_ns: 7,
            wait_ns: 0,
            waits: 12,
        };
        let msg = encode_stats(&f);
        assert!(msg.len() <= MAX_MESSAGE);
        let back = decode_stats(&msg).unwrap();
        assert_eq!(
            (back.runtime_ns, back.boosted_ns, back.wait_ns, back.waits),
            (u64::MAX, 7, 0, 12)
        );
        for bad in ["", "1 2 3", "1 2 3 4 5", "1 2 x 4", "-1 2 3 4"] {
            assert!(decode_stats(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let good = Request::Set { phase: 1, node: -1 }.encode();
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

    /// Each answer survives its wire form, read back for its request.
    #[test]
    fn answers_round_trip_through_replies() {
        let f = workload_phase_stats {
            runtime_ns: 5,
            boosted_ns: 4,
            wait_ns: 3,
            waits: 2,
        };
        let cases = [
            (
                Op::Set,
                Answer::Done {
                    note: String::new(),
                },
            ),
            (
                Op::Hello,
                Answer::Registered {
                    wid: 7,
                    generation: 2,
                    allow: 63,
                    slots: 4096,
                    grant: "uid 0 may set every phase".into(),
                },
            ),
            (Op::Thread, Answer::Bound { slot: 9 }),
            (
                Op::Claim,
                Answer::Claimed {
                    node: 1,
                    count: 2,
                    cpus: "2-3".into(),
                },
            ),
            (
                Op::LockMemory,
                Answer::Held {
                    lock: 4,
                    note: "4 MiB locked".into(),
                },
            ),
            (Op::Stats, Answer::Figures(Some(f))),
            (
                Op::Hello,
                Answer::Pressure {
                    full: true,
                    stall_us: 100,
                    window_us: 1000,
                    figures: "some avg10=1.00".into(),
                },
            ),
            (
                Op::Stats,
                Answer::ClaimMoved {
                    node: 0,
                    count: 1,
                    cpus: "1".into(),
                },
            ),
        ];
        for (op, a) in cases {
            let wire = Reply::decode(&Reply::from(a.clone()).encode()).unwrap();
            let read = wire.event().unwrap_or_else(|| wire.answer(op));
            assert_eq!(format!("{read:?}"), format!("{a:?}"), "{op:?}");
        }
        assert!(Reply::ok().event().is_none());
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
