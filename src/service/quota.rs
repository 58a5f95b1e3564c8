//! Caps: how much of each table or budget one tenant may hold, and the
//! room kept for newcomers. Pure policy; the server counts and asks.
//!
//! A tenant is charged twice, as its user and as its cgroup, and must fit
//! both: a user's many processes (or pods sharing a uid) are bounded by
//! the user's cap, and the processes of one cgroup by the cgroup's. The
//! user is the one who owns the client's user namespace when the client
//! is in one (`identity::owner_uid`), so a rootless container's subordinate
//! uids count as the user who runs it, not as 65,536 users.
//!
//! Caps alone let a few users at their caps fill a table. So the last
//! eighth of every table is kept for newcomers, tenants that hold little
//! (a sixty-fourth of the table, or half their cap if that is less):
//! whatever the others hold, at least eight newcomers get that much.

use std::collections::{BTreeMap, HashMap};

/// Who is charged: the user (after user namespaces) and the cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tenant {
    pub uid: u32,
    /// Its cgroup's id; 0 for none (the root cgroup), charged as its user
    /// only.
    pub cgroup: u64,
}

/// What a tenant's user and cgroup hold, and everyone together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub uid: u64,
    pub cgroup: u64,
    pub total: u64,
}

/// One resource's limits.
#[derive(Clone, Copy, Debug)]
pub struct Cap {
    /// What it counts, as it reads after a quantity ("connections", "of
    /// locked memory").
    pub what: &'static str,
    /// How much there is, for everyone.
    pub capacity: u64,
    /// How much one user, or one cgroup, may hold.
    pub per_tenant: u64,
    /// How a quantity reads in a refusal.
    pub show: fn(u64) -> String,
}

pub fn plain(n: u64) -> String {
    n.to_string()
}

impl Cap {
    /// A cap on things counted one by one.
    pub const fn counted(what: &'static str, capacity: u64, per_tenant: u64) -> Cap {
        Cap {
            what,
            capacity,
            per_tenant,
            show: plain,
        }
    }

    /// Kept for newcomers: the last eighth.
    pub fn reserve(&self) -> u64 {
        self.capacity / 8
    }

    /// A newcomer holds at most this (as its user and as its cgroup), and
    /// may take from the reserve up to it: eight of them fit the reserve.
    /// Half the cap at most, so users at their caps are never newcomers.
    pub fn newcomer(&self) -> u64 {
        (self.capacity / 64).min(self.per_tenant / 2).max(1)
    }

    /// Whether `t`, holding `h`, may take `n` more; else one line.
    pub fn admit(&self, t: Tenant, h: Holding, n: u64) -> Result<(), String> {
        let s = self.show;
        let mine = h.uid.max(h.cgroup);
        if h.uid + n > self.per_tenant {
            return Err(format!(
                "refused: uid {} holds {} {}, and {} more would pass the per-user cap of {}",
                t.uid,
                s(h.uid),
                self.what,
                s(n),
                s(self.per_tenant)
            ));
        }
        if t.cgroup != 0 && h.cgroup + n > self.per_tenant {
            return Err(format!(
                "refused: your cgroup (id {}) holds {} {}, and {} more would pass the per-cgroup cap of {}",
                t.cgroup,
                s(h.cgroup),
                self.what,
                s(n),
                s(self.per_tenant)
            ));
        }
        if h.total + n > self.capacity {
            return Err(format!(
                "refused: the hint service holds {} of its {} {}; {} more do not fit",
                s(h.total),
                s(self.capacity),
                self.what,
                s(n)
            ));
        }
        if mine + n > self.newcomer() && h.total + n > self.capacity - self.reserve() {
            return Err(format!(
                "refused: uid {} holds {} {}; the last {} of {} are kept for users holding under {}, and {} are taken",
                t.uid,
                s(mine),
                self.what,
                s(self.reserve()),
                s(self.capacity),
                s(self.newcomer()),
                s(h.total)
            ));
        }
        Ok(())
    }
}

/// Counts kept as they change: by user, by cgroup, in all.
#[derive(Debug, Default)]
pub struct Counts {
    by_uid: HashMap<u32, u64>,
    by_cgroup: HashMap<u64, u64>,
    total: u64,
}

impl Counts {
    pub fn holding(&self, t: Tenant) -> Holding {
        Holding {
            uid: self.by_uid.get(&t.uid).copied().unwrap_or(0),
            cgroup: match t.cgroup {
                0 => 0,
                cg => self.by_cgroup.get(&cg).copied().unwrap_or(0),
            },
            total: self.total,
        }
    }

    pub fn add(&mut self, t: Tenant, n: u64) {
        *self.by_uid.entry(t.uid).or_default() += n;
        if t.cgroup != 0 {
            *self.by_cgroup.entry(t.cgroup).or_default() += n;
        }
        self.total += n;
    }

    pub fn sub(&mut self, t: Tenant, n: u64) {
        fn down<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u64>, k: K, n: u64) {
            if let Some(v) = m.get_mut(&k) {
                *v = v.saturating_sub(n);
                if *v == 0 {
                    m.remove(&k);
                }
            }
        }
        down(&mut self.by_uid, t.uid, n);
        down(&mut self.by_cgroup, t.cgroup, n);
        self.total = self.total.saturating_sub(n);
    }
}

/// Entries named by a key (a tid in the tid map), each charged to the
/// tenant that wrote it. Entries vanish behind our back (the scheduler's
/// side deletes a thread's entry when it exits), so `sweep` looks at a few
/// each turn and gives their charges back.
#[derive(Debug, Default)]
pub struct Owners {
    by_key: BTreeMap<u32, Tenant>,
    counts: Counts,
    cursor: u32,
}

impl Owners {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Charge `key` to `t` within `cap`. A key another tenant held (a
    /// reused tid whose entry is overwritten) stops counting as theirs.
    pub fn charge(&mut self, cap: &Cap, key: u32, t: Tenant) -> Result<(), String> {
        let old = self.by_key.get(&key).copied();
        if old == Some(t) {
            return Ok(());
        }
        let mut h = self.counts.holding(t);
        if let Some(o) = old {
            h.total -= 1;
            h.uid -= u64::from(o.uid == t.uid);
            h.cgroup -= u64::from(t.cgroup != 0 && o.cgroup == t.cgroup);
        }
        cap.admit(t, h, 1)?;
        if let Some(o) = old {
            self.counts.sub(o, 1);
        }
        self.counts.add(t, 1);
        self.by_key.insert(key, t);
        Ok(())
    }

    pub fn forget(&mut self, key: u32) {
        if let Some(o) = self.by_key.remove(&key) {
            self.counts.sub(o, 1);
        }
    }

    /// Look at up to `n` keys, in turn from where the last sweep ended,
    /// and forget those `gone` says are gone.
    pub fn sweep(&mut self, n: usize, mut gone: impl FnMut(u32) -> bool) {
        let keys: Vec<u32> = self
            .by_key
            .range(self.cursor..)
            .chain(self.by_key.range(..self.cursor))
            .map(|(k, _)| *k)
            .take(n)
            .collect();
        for &k in &keys {
            if gone(k) {
                self.forget(k);
            }
        }
        self.cursor = keys.last().map_or(0, |k| k.wrapping_add(1));
    }
}

/// Sum what `items` hold into a tenant's holding: `of` gives each item's
/// tenant and amount.
pub fn sum<I, F>(items: I, t: Tenant, of: F) -> Holding
where
    I: IntoIterator,
    F: Fn(I::Item) -> (Tenant, u64),
{
    let mut h = Holding::default();
    for item in items {
        let (owner, n) = of(item);
        h.total += n;
        if owner.uid == t.uid {
            h.uid += n;
        }
        if t.cgroup != 0 && owner.cgroup == t.cgroup {
            h.cgroup += n;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> Tenant {
        Tenant {
            uid,
            cgroup: u64::from(uid) + 1000,
        }
    }

    /// Take one unit at a time until refused; how many it got.
    fn fill(cap: &Cap, c: &mut Counts, t: Tenant) -> u64 {
        let mut got = 0;
        while cap.admit(t, c.holding(t), 1).is_ok() {
            c.add(t, 1);
            got += 1;
        }
        got
    }

    const CONNS: Cap = Cap::counted("connections", 4096, 64);

    #[test]
    fn users_at_their_caps_leave_room_for_eight_newcomers() {
        let mut c = Counts::default();
        // 64 users take what they can: 56 reach their cap (64) and stop
        // short of the reserve; the other 8 get a newcomer's 32 from it.
        let heavy: Vec<u64> = (0..64).map(|u| fill(&CONNS, &mut c, user(u))).collect();
        assert_eq!(heavy.iter().filter(|&&n| n == 64).count(), 56);
        assert_eq!(heavy.iter().filter(|&&n| n == 32).count(), 8);
        // Eight more newcomers each still get theirs.
        for u in 100..108 {
            assert_eq!(fill(&CONNS, &mut c, user(u)), 32, "newcomer {u}");
        }
        assert_eq!(c.holding(user(0)).total, 4096);
        let why = CONNS.admit(user(200), c.holding(user(200)), 1).unwrap_err();
        assert!(why.contains("4096 of its 4096 connections"), "{why}");
    }

    #[test]
    fn a_tenant_is_charged_as_its_user_and_as_its_cgroup() {
        let cap = Cap::counted("threads", 1 << 16, 100);
        let mut c = Counts::default();
        // One user in many cgroups: the user's cap.
        let mut got = 0;
        for cg in 0..10 {
            got += fill(&cap, &mut c, Tenant { uid: 7, cgroup: cg });
        }
        assert_eq!(got, 100);
        let why = cap
            .admit(
                Tenant { uid: 7, cgroup: 99 },
                c.holding(Tenant { uid: 7, cgroup: 99 }),
                1,
            )
            .unwrap_err();
        assert!(why.contains("uid 7 holds 100 threads"), "{why}");
        // Many users in one cgroup: the cgroup's cap.
        let mut got = 0;
        for uid in 100..110 {
            got += fill(&cap, &mut c, Tenant { uid, cgroup: 5000 });
        }
        assert_eq!(got, 100);
        let t = Tenant {
            uid: 200,
            cgroup: 5000,
        };
        assert!(
            cap.admit(t, c.holding(t), 1)
                .unwrap_err()
                .contains("per-cgroup cap")
        );
    }

    #[test]
    fn the_root_cgroup_is_nobodys() {
        let cap = Cap::counted("threads", 1 << 16, 10);
        let mut c = Counts::default();
        for uid in 0..5 {
            assert_eq!(fill(&cap, &mut c, Tenant { uid, cgroup: 0 }), 10);
        }
        assert_eq!(c.holding(Tenant { uid: 9, cgroup: 0 }).cgroup, 0);
    }

    #[test]
    fn what_is_given_back_can_be_taken_again() {
        let mut c = Counts::default();
        let t = user(1);
        assert_eq!(fill(&CONNS, &mut c, t), 64);
        c.sub(t, 10);
        assert_eq!(c.holding(t).uid, 54);
        assert_eq!(fill(&CONNS, &mut c, t), 10);
        let why = CONNS.admit(t, c.holding(t), 1).unwrap_err();
        assert!(why.contains("uid 1 holds 64 connections"), "{why}");
        c.sub(t, 64);
        assert_eq!(c.holding(t), Holding::default());
    }

    #[test]
    fn entries_are_charged_to_who_wrote_them_until_swept() {
        let cap = Cap::counted("one-shot hints", 1 << 16, 3);
        let mut o = Owners::default();
        for tid in [10, 11, 12] {
            o.charge(&cap, tid, user(1)).unwrap();
        }
        // Again on one it holds: free. A fourth: over the cap.
        o.charge(&cap, 11, user(1)).unwrap();
        let why = o.charge(&cap, 13, user(1)).unwrap_err();
        assert!(why.contains("uid 1 holds 3 one-shot hints"), "{why}");
        // Another user overwrites tid 12 (reused): it stops being 1's.
        o.charge(&cap, 12, user(2)).unwrap();
        o.charge(&cap, 13, user(1)).unwrap();
        // Threads 10 and 11 exited: a sweep of two gives one back per key.
        o.sweep(2, |tid| tid == 10 || tid == 11);
        assert_eq!(o.len(), 2, "swept 10 and 11 of 10, 11, 12, 13");
        o.sweep(100, |_| false);
        assert_eq!(o.len(), 2);
        o.charge(&cap, 14, user(1)).unwrap();
        o.charge(&cap, 15, user(1)).unwrap();
        assert!(o.charge(&cap, 16, user(1)).is_err());
        o.forget(13);
        o.charge(&cap, 16, user(1)).unwrap();
    }

    #[test]
    fn a_sweep_goes_round_all_keys_a_few_at_a_time() {
        let cap = Cap::counted("one-shot hints", 1 << 16, 100);
        let mut o = Owners::default();
        for tid in 0..10 {
            o.charge(&cap, tid, user(1)).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            o.sweep(3, |tid| {
                seen.push(tid);
                false
            });
        }
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    }

    #[test]
    fn sums_charge_the_user_and_the_cgroup_apart() {
        let items = [
            (user(1), 5),
            (Tenant { uid: 1, cgroup: 9 }, 7),
            (user(2), 11),
        ];
        let h = sum(items.iter(), user(1), |&(t, n)| (t, n));
        assert_eq!(
            h,
            Holding {
                uid: 12,
                cgroup: 5,
                total: 23
            }
        );
    }
}
