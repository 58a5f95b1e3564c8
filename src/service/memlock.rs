//! Locked memory for checkpoint buffers. The service raises a client's
//! RLIMIT_MEMLOCK (prlimit) by what it asks, within a budget for the whole
//! host (`--max-locked-mem`), so that an unprivileged job can lock its
//! buffer without CAP_IPC_LOCK; the raise is taken back when the grant ends.

use std::collections::BTreeMap;
use std::io;

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

fn memlock(pid: u32) -> io::Result<libc::rlimit> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a valid out pointer and no new limit.
    if unsafe { libc::prlimit(pid as i32, libc::RLIMIT_MEMLOCK, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

fn set_memlock(pid: u32, lim: &libc::rlimit) -> io::Result<()> {
    // SAFETY: prlimit with a valid new limit.
    if unsafe { libc::prlimit(pid as i32, libc::RLIMIT_MEMLOCK, lim, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct Grant {
    pub pid: u32,
    pub uid: u32,
    pub bytes: u64,
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

    /// Whether `bytes` fit, or the one-line refusal with the numbers.
    pub fn check(&self, bytes: u64) -> Result<(), String> {
        let left = self.total.saturating_sub(self.used());
        if bytes == 0 {
            return Err("refused: ask for some locked memory, not 0 bytes".into());
        }
        if bytes <= left {
            return Ok(());
        }
        let mut held: Vec<String> = self
            .grants
            .values()
            .map(|g| format!("pid {} (uid {}) {}", g.pid, g.uid, human(g.bytes)))
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

    /// Raise `pid`'s RLIMIT_MEMLOCK by `bytes`; returns the grant's id and
    /// the new soft limit.
    pub fn grant(&mut self, pid: u32, uid: u32, bytes: u64) -> Result<(u64, u64), String> {
        self.check(bytes)?;
        let old = memlock(pid).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                format!(
                    "refused: changing the RLIMIT_MEMLOCK of pid {pid} (uid {uid}) needs CAP_SYS_RESOURCE, which this scx_phase lacks"
                )
            } else {
                format!("refused: cannot read the RLIMIT_MEMLOCK of pid {pid}: {e}")
            }
        })?;
        let soft = if old.rlim_cur == libc::RLIM_INFINITY {
            old.rlim_cur
        } else {
            old.rlim_cur.saturating_add(bytes)
        };
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max.max(soft),
        };
        set_memlock(pid, &new).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                format!(
                    "refused: raising pid {pid}'s RLIMIT_MEMLOCK past its hard limit ({}) needs CAP_SYS_RESOURCE, which this scx_phase lacks",
                    human(old.rlim_max)
                )
            } else {
                format!("refused: cannot raise its RLIMIT_MEMLOCK: {e}")
            }
        })?;
        let id = self.next_id;
        self.next_id += 1;
        self.grants.insert(id, Grant { pid, uid, bytes });
        Ok((id, soft))
    }

    /// End a grant; lower the process's limit back if it still lives.
    pub fn release(&mut self, id: u64, alive: bool) {
        let Some(g) = self.grants.remove(&id) else {
            return;
        };
        if !alive {
            return;
        }
        if let Ok(mut lim) = memlock(g.pid)
            && lim.rlim_cur != libc::RLIM_INFINITY
        {
            lim.rlim_cur = lim.rlim_cur.saturating_sub(g.bytes);
            let _ = set_memlock(g.pid, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                uid: 1000,
                bytes: 768 << 20,
            },
        );
        assert!(b.check(256 << 20).is_ok());
        let err = b.check(512 << 20).unwrap_err();
        assert!(err.contains("512 MiB of locked memory asked"), "{err}");
        assert!(
            err.contains("--max-locked-mem 1 GiB) has 256 MiB left"),
            "{err}"
        );
        assert!(err.contains("pid 812 (uid 1000) 768 MiB"), "{err}");
    }

    #[test]
    fn a_grant_raises_our_own_limit_and_its_release_lowers_it() {
        let me = std::process::id();
        // Room under the hard limit, so that no CAP_SYS_RESOURCE is needed.
        let mut before = memlock(me).unwrap();
        if before.rlim_max != libc::RLIM_INFINITY {
            before.rlim_cur = before.rlim_max.saturating_sub(2 << 20);
            set_memlock(me, &before).unwrap();
        }
        let mut b = Budget::new(1 << 30);
        let (id, soft) = b.grant(me, 0, 1 << 20).unwrap();
        if before.rlim_cur != libc::RLIM_INFINITY {
            assert_eq!(soft, before.rlim_cur + (1 << 20));
            assert_eq!(memlock(me).unwrap().rlim_cur, soft);
        }
        b.release(id, true);
        assert_eq!(memlock(me).unwrap().rlim_cur, before.rlim_cur);
        assert_eq!(b.used(), 0);
    }
}
