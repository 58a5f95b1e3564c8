//! Locked memory for checkpoint buffers, within a budget for the whole
//! host (`--max-locked-mem`). A job makes its buffer a memfd, writes every
//! page (so they are its own, charged to its cgroup), and sends the fd;
//! the service maps it and locks it in its own address space (pages a
//! client left unwritten are faulted in here, charged to the service's
//! cgroup, still within the budget). The pages
//! then stay resident until the lock ends, with the job's process, its
//! connection, or an unlock. Nothing of the job's limits changes, so
//! nothing can outlast the lock or be inherited by a child: an earlier
//! design raised the job's RLIMIT_MEMLOCK, and release lowered only the
//! soft limit (the hard one stayed raised, 8 MiB -> 72 MiB after a 64 MiB
//! grant), and children inherited both.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;

use scx_phase::sys::Mapping;

use super::quota::{self, Cap, Tenant};

/// "256 MiB", "1.5 GiB", "512 B"
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {name}")
            } else {
                format!("{v:.1} {name}")
            };
        }
    }
    format!("{bytes} B")
}

/// "4GiB", "512M", "1048576" -> bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (like 4GiB, 512M or 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (B, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    Ok((n * mult as f64) as u64)
}

/// The budget when the admin names none: a quarter of the host's memory.
pub fn default_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(1 << 30, |kb| kb * 1024 / 4)
}

/// What a grant is: bytes set aside for buffers to come, or a buffer
/// locked in this process (unmapped, so unlocked, when the grant goes).
#[derive(Debug)]
pub enum Held {
    Reserved,
    /// Held for its drop: unmapping unlocks.
    Locked(#[allow(dead_code)] Mapping),
}

#[derive(Debug)]
pub struct Grant {
    pub pid: u32,
    pub tenant: Tenant,
    pub bytes: u64,
    pub held: Held,
}

#[derive(Debug, Default)]
pub struct Budget {
    pub total: u64,
    grants: BTreeMap<u64, Grant>,
    next_id: u64,
}

impl Budget {
    pub fn new(total: u64) -> Budget {
        Budget {
            total,
            grants: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn used(&self) -> u64 {
        self.grants.values().map(|g| g.bytes).sum()
    }

    pub fn held_by(&self, pid: u32) -> u64 {
        self.grants
            .values()
            .filter(|g| g.pid == pid)
            .map(|g| g.bytes)
            .sum()
    }

    /// One user or cgroup may hold the whole budget but its last eighth,
    /// which is kept for newcomers (quota.rs).
    fn cap(&self) -> Cap {
        Cap {
            what: "of locked memory",
            capacity: self.total,
            per_tenant: self.total,
            show: human,
        }
    }

    /// Whether `bytes` more fit, for `t`, or the one-line refusal with the
    /// numbers.
    pub fn check(&self, t: Tenant, bytes: u64) -> Result<(), String> {
        let left = self.total.saturating_sub(self.used());
        if bytes == 0 {
            return Err("refused: ask for some locked memory, not 0 bytes".into());
        }
        if bytes <= left {
            let held = quota::sum(self.grants.values(), t, |g| (g.tenant, g.bytes));
            return self.cap().admit(t, held, bytes);
        }
        let mut held: Vec<String> = self
            .grants
            .values()
            .filter(|g| g.bytes > 0)
            .map(|g| format!("pid {} (uid {}) {}", g.pid, g.tenant.uid, human(g.bytes)))
            .collect();
        if held.is_empty() {
            held.push("nobody".into());
        }
        Err(format!(
            "refused: {} of locked memory asked; the host's budget (--max-locked-mem {}) has {} left; held: {}",
            human(bytes),
            human(self.total),
            human(left),
            held.join(", ")
        ))
    }

    fn insert(&mut self, grant: Grant) -> u64 {
        // Ids travel in a reply's 32-bit slot: they stay below 2^32 and
        // skip any still held, so an unlock never names another's lock.
        let mut id = self.next_id;
        while id == 0 || self.grants.contains_key(&id) {
            id = (id + 1) & u64::from(u32::MAX);
        }
        self.next_id = (id + 1) & u64::from(u32::MAX);
        self.grants.insert(id, grant);
        id
    }

    /// Set `bytes` aside for `pid`'s buffers to come.
    pub fn reserve(&mut self, pid: u32, tenant: Tenant, bytes: u64) -> Result<u64, String> {
        self.check(tenant, bytes)?;
        Ok(self.insert(Grant {
            pid,
            tenant,
            bytes,
            held: Held::Reserved,
        }))
    }

    /// Lock the `bytes` of memfd `fd` for `pid`: out of what it reserved,
    /// then out of the budget. Returns the lock's id.
    pub fn lock(
        &mut self,
        pid: u32,
        tenant: Tenant,
        fd: BorrowedFd<'_>,
        bytes: u64,
    ) -> Result<u64, String> {
        let reserved: Vec<(u64, u64)> = self
            .grants
            .iter()
            .filter(|(_, g)| g.pid == pid && matches!(g.held, Held::Reserved))
            .map(|(id, g)| (*id, g.bytes))
            .collect();
        let from_reserve = reserved.iter().map(|r| r.1).sum::<u64>().min(bytes);
        if bytes == 0 || bytes > from_reserve {
            self.check(tenant, bytes - from_reserve)?;
        }
        let len = usize::try_from(bytes).map_err(|_| "refused: too large".to_string())?;
        let mapping = Mapping::locked(fd, len)
            .map_err(|e| format!("refused: cannot lock {} of your memfd: {e}", human(bytes)))?;
        let mut left = from_reserve;
        for (id, b) in reserved {
            if left == 0 {
                break;
            }
            let take = b.min(left);
            left -= take;
            // A used-up reservation stays, empty, until its holder lets it
            // go: its id must not come back while a connection holds it.
            if let Some(g) = self.grants.get_mut(&id) {
                g.bytes -= take;
            }
        }
        Ok(self.insert(Grant {
            pid,
            tenant,
            bytes,
            held: Held::Locked(mapping),
        }))
    }

    /// End a grant: a lock's pages are unlocked (and freed, unless the job
    /// still maps them).
    pub fn release(&mut self, id: u64) {
        self.grants.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Tenant = Tenant {
        uid: 1000,
        cgroup: 77,
    };

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(human(256 << 20), "256 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(100), "100 B");
    }

    #[test]
    fn the_budget_refuses_with_the_numbers() {
        let mut b = Budget::new(1 << 30);
        b.grants.insert(
            9,
            Grant {
                pid: 812,
                tenant: T,
                bytes: 640 << 20,
                held: Held::Reserved,
            },
        );
        assert!(b.check(T, 256 << 20).is_ok());
        let err = b.check(T, 512 << 20).unwrap_err();
        assert!(err.contains("512 MiB of locked memory asked"), "{err}");
        assert!(
            err.contains("--max-locked-mem 1 GiB) has 384 MiB left"),
            "{err}"
        );
        assert!(err.contains("pid 812 (uid 1000) 640 MiB"), "{err}");
    }

    #[test]
    fn one_user_cannot_take_the_eighth_kept_for_newcomers() {
        let mut b = Budget::new(1 << 30);
        b.reserve(1, T, 896 << 20).unwrap();
        let err = b.check(T, 1 << 20).unwrap_err();
        assert!(
            err.contains("the last 128 MiB of 1 GiB are kept for users holding under 16 MiB"),
            "{err}"
        );
        // Another user, in another cgroup, gets a newcomer's share.
        let other = Tenant {
            uid: 1001,
            cgroup: 78,
        };
        b.reserve(2, other, 16 << 20).unwrap();
        assert!(b.check(other, 1 << 20).is_err());
    }

    fn vmlck_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn ids_fit_a_reply_slot_and_never_name_a_grant_still_held() {
        let mut b = Budget::new(1 << 30);
        let one = b.reserve(7, T, 4096).unwrap();
        assert_eq!(one, 1);
        b.next_id = u64::from(u32::MAX);
        assert_eq!(b.reserve(7, T, 4096).unwrap(), u64::from(u32::MAX));
        // Wraps past 0, and past 1, which is still held.
        assert_eq!(b.reserve(7, T, 4096).unwrap(), 2);
    }

    #[test]
    fn a_lock_comes_out_of_the_reservation_first_and_its_release_unlocks() {
        use std::os::fd::AsFd;

        let mut b = Budget::new(4 << 20);
        let r = b.reserve(7, T, 1 << 20).unwrap();
        let fd = scx_phase::sys::memfd("test", 3 << 20).unwrap();
        let before = vmlck_kb();
        // 3 MiB: 1 MiB reserved and 2 of the 3 left, so it fits.
        let id = b.lock(7, T, fd.as_fd(), 3 << 20).unwrap();
        assert_eq!(b.grants[&r].bytes, 0, "the reservation is used up");
        assert_eq!((b.used(), b.held_by(7)), (3 << 20, 3 << 20));
        assert_eq!(vmlck_kb() - before, 3 << 10);
        assert!(
            b.lock(8, T, fd.as_fd(), 2 << 20)
                .unwrap_err()
                .contains("1 MiB left")
        );
        b.release(id);
        assert_eq!(vmlck_kb(), before);
        assert_eq!(b.used(), 0);
    }
}
