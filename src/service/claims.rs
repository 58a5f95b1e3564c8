//! CPU claims of the workload API, arbitrated here: a claim is granted
//! whole or refused at once with one line that names the holders and
//! what is free; a CPU has one claimant at most; exclusive claims stay
//! within `--max-exclusive-pct` of each node. The scheduler learns the
//! result from the `cpu_claims` and `workload_claims` maps.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs;

use super::quota::{self, Cap, Tenant};
use scx_phase::bpf_intf::scx_phase_claim_limits_SCX_PHASE_CLAIM_MAX_CPUS as CLAIM_MAX_CPUS;

/// What the host's CPUs look like: online CPUs by node, and which share
/// a core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuTopology {
    /// node -> its online CPUs, ascending.
    pub nodes: BTreeMap<u32, Vec<u32>>,
    /// cpu -> the id of its core (its lowest sibling).
    pub core: BTreeMap<u32, u32>,
    /// GPU index (hwloc's order of PCI display and processing devices) ->
    /// its node, if known.
    pub gpu_nodes: Vec<Option<u32>>,
}

/// "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11]
pub fn parse_cpulist(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<u32>().ok()),
        }
    }
    v
}

/// [0, 1, 2, 3, 8] -> "0-3,8"
pub fn format_cpulist(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

impl CpuTopology {
    /// From sysfs, with the GPUs' nodes the loader found.
    pub fn read(gpu_nodes: Vec<Option<u32>>) -> CpuTopology {
        let online = fs::read_to_string("/sys/devices/system/cpu/online")
            .map(|s| parse_cpulist(&s))
            .unwrap_or_default();
        let mut nodes: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        if let Ok(dir) = fs::read_dir("/sys/devices/system/node") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name
                    .strip_prefix("node")
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let cpus = fs::read_to_string(e.path().join("cpulist"))
                    .map(|s| parse_cpulist(&s))
                    .unwrap_or_default();
                let mine: Vec<u32> = cpus.into_iter().filter(|c| online.contains(c)).collect();
                nodes.insert(id, mine);
            }
        }
        if nodes.is_empty() {
            nodes.insert(0, online.clone());
        }
        let mut core = BTreeMap::new();
        for &cpu in &online {
            let siblings = fs::read_to_string(format!(
                "/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
            ))
            .map(|s| parse_cpulist(&s))
            .unwrap_or_default();
            core.insert(cpu, siblings.into_iter().min().unwrap_or(cpu));
        }
        CpuTopology {
            nodes,
            core,
            gpu_nodes,
        }
    }
}

/// Which node a claim asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeChoice {
    Node(u32),
    Any,
    Gpu(u32),
}

impl NodeChoice {
    /// The wire form: a node, -1 any, -2 - i GPU i.
    pub fn from_wire(v: i32) -> NodeChoice {
        match v {
            v if v >= 0 => NodeChoice::Node(v as u32),
            -1 => NodeChoice::Any,
            v => NodeChoice::Gpu((-2 - v) as u32),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub cpus: u32,
    pub node: NodeChoice,
    pub exclusive: bool,
    /// One CPU per core first; else fill whole cores first (pack).
    pub spread: bool,
}

/// Who holds a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub wid: u32,
    pub pid: u32,
    pub tenant: Tenant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub holder: Holder,
    pub request: ClaimRequest,
    pub node: u32,
    pub cpus: Vec<u32>,
}

/// Every claim; ids are never reused.
#[derive(Debug, Default)]
pub struct Claims {
    pub topo: CpuTopology,
    pub max_exclusive_pct: u32,
    claims: BTreeMap<u64, Claim>,
    next_id: u64,
}

impl Claims {
    pub fn new(topo: CpuTopology, max_exclusive_pct: u32) -> Claims {
        Claims {
            topo,
            max_exclusive_pct,
            claims: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn get(&self, id: u64) -> Option<&Claim> {
        self.claims.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Claim)> {
        self.claims.iter()
    }

    /// cpu -> (holder's wid, exclusive), for every claimed CPU.
    pub fn by_cpu(&self) -> BTreeMap<u32, (u32, bool)> {
        let mut m = BTreeMap::new();
        for c in self.claims.values() {
            for &cpu in &c.cpus {
                m.insert(cpu, (c.holder.wid, c.request.exclusive));
            }
        }
        m
    }

    /// A workload's claimed CPUs, across its claims.
    pub fn cpus_of(&self, wid: u32) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .claims
            .values()
            .filter(|c| c.holder.wid == wid)
            .flat_map(|c| c.cpus.iter().copied())
            .collect();
        v.sort_unstable();
        v
    }

    fn holders_text(&self, node: u32) -> String {
        let mut parts = Vec::new();
        for c in self.claims.values().filter(|c| c.node == node) {
            parts.push(format!(
                "pid {} (uid {}) holds {}{}",
                c.holder.pid,
                c.holder.tenant.uid,
                format_cpulist(&c.cpus),
                if c.request.exclusive {
                    " exclusively"
                } else {
                    ""
                }
            ));
        }
        if parts.is_empty() {
            "nobody holds any".into()
        } else {
            parts.join(", ")
        }
    }

    /// Pick `n` of `free` by the placement: whole cores first (pack) or
    /// one CPU per core first (spread).
    fn pick(&self, free: &[u32], n: usize, spread: bool) -> Vec<u32> {
        let mut by_core: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &cpu in free {
            by_core
                .entry(*self.topo.core.get(&cpu).unwrap_or(&cpu))
                .or_default()
                .push(cpu);
        }
        let mut out = Vec::with_capacity(n);
        if spread {
            let mut round = 0;
            while out.len() < n {
                let mut any = false;
                for cpus in by_core.values() {
                    if let Some(&c) = cpus.get(round) {
                        any = true;
                        if out.len() < n {
                            out.push(c);
                        }
                    }
                }
                if !any {
                    break;
                }
                round += 1;
            }
        } else {
            // Fullest free cores first, so that claims leave whole cores.
            let mut cores: Vec<&Vec<u32>> = by_core.values().collect();
            cores.sort_by_key(|c| std::cmp::Reverse(c.len()));
            for cpus in cores {
                for &c in cpus {
                    if out.len() < n {
                        out.push(c);
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Grant `req` to `holder` whole, or refuse with one line.
    pub fn grant(&mut self, holder: Holder, req: ClaimRequest) -> Result<u64, String> {
        if req.cpus == 0 {
            return Err("refused: a claim needs at least one CPU".into());
        }
        if req.cpus > CLAIM_MAX_CPUS {
            return Err(format!(
                "refused: a claim holds at most {CLAIM_MAX_CPUS} CPUs, not {}",
                req.cpus
            ));
        }
        let already = self.cpus_of(holder.wid).len() as u32;
        if already + req.cpus > CLAIM_MAX_CPUS {
            return Err(format!(
                "refused: a process holds at most {CLAIM_MAX_CPUS} CPUs; this one holds {already} already"
            ));
        }
        let cpus = self.topo.nodes.values().map(|c| c.len() as u64).sum();
        let cap = Cap::counted("CPUs claimed", cpus, u64::MAX);
        let held = quota::sum(self.claims.values(), holder.tenant, |c| {
            (c.holder.tenant, c.cpus.len() as u64)
        });
        // What is not free is refused below, naming the holders.
        if held.total + u64::from(req.cpus) <= cap.capacity {
            cap.admit(holder.tenant, held, u64::from(req.cpus))?;
        }
        let candidates: Vec<u32> = match req.node {
            NodeChoice::Node(n) => {
                if !self.topo.nodes.contains_key(&n) {
                    return Err(format!(
                        "refused: no NUMA node {n} on this host (nodes: {})",
                        self.topo
                            .nodes
                            .keys()
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                vec![n]
            }
            NodeChoice::Gpu(i) => match self.topo.gpu_nodes.get(i as usize) {
                Some(Some(n)) => vec![*n],
                Some(None) => {
                    return Err(format!(
                        "refused: GPU {i}'s NUMA node is not known (see scx_phase topology)"
                    ));
                }
                None => {
                    return Err(format!(
                        "refused: no GPU {i} on this host ({} found; see scx_phase topology)",
                        self.topo.gpu_nodes.len()
                    ));
                }
            },
            NodeChoice::Any => {
                // The node with the most free CPUs first.
                let taken = self.by_cpu();
                let mut nodes: Vec<(usize, u32)> = self
                    .topo
                    .nodes
                    .iter()
                    .map(|(n, cpus)| (cpus.iter().filter(|c| !taken.contains_key(c)).count(), *n))
                    .collect();
                nodes.sort_by_key(|(free, n)| (std::cmp::Reverse(*free), *n));
                nodes.into_iter().map(|(_, n)| n).collect()
            }
        };
        let taken = self.by_cpu();
        let mut reasons = Vec::new();
        for node in candidates {
            let cpus = &self.topo.nodes[&node];
            let free: Vec<u32> = cpus
                .iter()
                .copied()
                .filter(|c| !taken.contains_key(c))
                .collect();
            if (free.len() as u32) < req.cpus {
                reasons.push(format!(
                    "node {node} has {} CPUs: {}; free: {}",
                    cpus.len(),
                    self.holders_text(node),
                    if free.is_empty() {
                        "none".into()
                    } else {
                        format_cpulist(&free)
                    }
                ));
                continue;
            }
            if req.exclusive {
                let limit = cpus.len() as u32 * self.max_exclusive_pct / 100;
                let held: u32 = taken
                    .iter()
                    .filter(|(c, (_, excl))| *excl && cpus.contains(c))
                    .count() as u32;
                if held + req.cpus > limit {
                    reasons.push(format!(
                        "node {node}: {} CPUs exclusive would pass --max-exclusive-pct {} ({limit} of its {} CPUs; {held} held)",
                        held + req.cpus,
                        self.max_exclusive_pct,
                        cpus.len()
                    ));
                    continue;
                }
            }
            let picked = self.pick(&free, req.cpus as usize, req.spread);
            let id = self.next_id;
            self.next_id += 1;
            self.claims.insert(
                id,
                Claim {
                    holder,
                    request: req,
                    node,
                    cpus: picked,
                },
            );
            return Ok(id);
        }
        Err(format!(
            "refused: {} CPU(s){} not free: {}",
            req.cpus,
            if req.exclusive { " exclusively" } else { "" },
            reasons.join("; ")
        ))
    }

    pub fn release(&mut self, id: u64) -> Option<Claim> {
        self.claims.remove(&id)
    }

    /// After a hotplug: take offline CPUs out of the claims and replace
    /// them with free CPUs of the same node where there are any. Returns
    /// the ids of the claims that changed.
    pub fn rehome(&mut self, topo: CpuTopology) -> Vec<u64> {
        self.topo = topo;
        let online: Vec<u32> = self.topo.nodes.values().flatten().copied().collect();
        let mut changed = Vec::new();
        let ids: Vec<u64> = self.claims.keys().copied().collect();
        for id in ids {
            let lost: Vec<u32> = self.claims[&id]
                .cpus
                .iter()
                .copied()
                .filter(|c| !online.contains(c))
                .collect();
            if lost.is_empty() {
                continue;
            }
            let taken = self.by_cpu();
            let (node, spread) = {
                let c = &self.claims[&id];
                (c.node, c.request.spread)
            };
            let free: Vec<u32> = self
                .topo
                .nodes
                .get(&node)
                .map(|cpus| {
                    cpus.iter()
                        .copied()
                        .filter(|c| !taken.contains_key(c))
                        .collect()
                })
                .unwrap_or_default();
            let extra = self.pick(&free, lost.len(), spread);
            if let Some(c) = self.claims.get_mut(&id) {
                c.cpus.retain(|x| !lost.contains(x));
                c.cpus.extend(extra);
                c.cpus.sort_unstable();
            }
            changed.push(id);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 nodes of 4 CPUs, 2 cores of 2 siblings each: node 0 has CPUs
    /// 0-3 (cores 0: 0,2 and 1: 1,3), node 1 has 4-7.
    fn topo() -> CpuTopology {
        let mut core = BTreeMap::new();
        for c in 0..8u32 {
            core.insert(c, (c / 4) * 4 + c % 2);
        }
        CpuTopology {
            nodes: [(0, vec![0, 1, 2, 3]), (1, vec![4, 5, 6, 7])].into(),
            core,
            gpu_nodes: vec![Some(1)],
        }
    }

    fn who(wid: u32) -> Holder {
        Holder {
            wid,
            pid: 100 + wid,
            tenant: Tenant {
                uid: 1000,
                cgroup: 5,
            },
        }
    }

    fn req(cpus: u32, node: NodeChoice, exclusive: bool, spread: bool) -> ClaimRequest {
        ClaimRequest {
            cpus,
            node,
            exclusive,
            spread,
        }
    }

    #[test]
    fn cpulists_round_trip() {
        assert_eq!(parse_cpulist("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(format_cpulist(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(format_cpulist(&[]), "");
    }

    #[test]
    fn pack_fills_cores_and_spread_takes_one_per_core() {
        let mut c = Claims::new(topo(), 100);
        let a = c
            .grant(who(1), req(2, NodeChoice::Node(0), false, false))
            .unwrap();
        assert_eq!(c.get(a).unwrap().cpus, vec![0, 2], "siblings first");
        let b = c
            .grant(who(2), req(2, NodeChoice::Node(1), false, true))
            .unwrap();
        assert_eq!(c.get(b).unwrap().cpus, vec![4, 5], "one per core");
    }

    #[test]
    fn one_user_claiming_all_it_can_leaves_a_cpu_for_a_newcomer() {
        let mut c = Claims::new(topo(), 100);
        for wid in 1..=7 {
            c.grant(who(wid), req(1, NodeChoice::Any, false, false))
                .unwrap();
        }
        // The last eighth of 8 CPUs (one) is for users holding less than
        // one: refused to uid 1000, granted to another user.
        let err = c
            .grant(who(8), req(1, NodeChoice::Any, false, false))
            .unwrap_err();
        assert!(err.contains("the last 1 of 8 are kept"), "{err}");
        let newcomer = Holder {
            wid: 20,
            pid: 120,
            tenant: Tenant {
                uid: 1001,
                cgroup: 6,
            },
        };
        c.grant(newcomer, req(1, NodeChoice::Any, false, false))
            .unwrap();
    }

    #[test]
    fn overcommit_is_refused_whole_naming_holders_and_what_is_free() {
        let mut c = Claims::new(topo(), 100);
        c.grant(who(1), req(3, NodeChoice::Node(1), true, false))
            .unwrap();
        let err = c
            .grant(who(2), req(2, NodeChoice::Node(1), false, false))
            .unwrap_err();
        assert!(
            err.contains("pid 101 (uid 1000) holds 4-6 exclusively"),
            "{err}"
        );
        assert!(err.contains("free: 7"), "{err}");
        assert!(!err.contains('\n'));
        // Nothing half-granted.
        assert_eq!(c.cpus_of(2), Vec::<u32>::new());
        // "any" goes where there is room.
        let ok = c
            .grant(who(2), req(2, NodeChoice::Any, false, false))
            .unwrap();
        assert_eq!(c.get(ok).unwrap().node, 0);
    }

    #[test]
    fn exclusive_claims_stay_within_the_admins_share() {
        let mut c = Claims::new(topo(), 75);
        c.grant(who(1), req(3, NodeChoice::Node(0), true, false))
            .unwrap();
        let err = c
            .grant(who(2), req(1, NodeChoice::Node(0), true, false))
            .unwrap_err();
        assert!(
            err.contains("--max-exclusive-pct 75 (3 of its 4 CPUs; 3 held)"),
            "{err}"
        );
        // A preferred claim of the last CPU is fine.
        c.grant(who(2), req(1, NodeChoice::Node(0), false, false))
            .unwrap();
    }

    #[test]
    fn gpus_and_nodes_are_checked() {
        let mut c = Claims::new(topo(), 100);
        let g = c
            .grant(who(1), req(1, NodeChoice::Gpu(0), false, false))
            .unwrap();
        assert_eq!(c.get(g).unwrap().node, 1);
        assert!(
            c.grant(who(1), req(1, NodeChoice::Gpu(3), false, false))
                .unwrap_err()
                .contains("no GPU 3")
        );
        assert!(
            c.grant(who(1), req(1, NodeChoice::Node(9), false, false))
                .unwrap_err()
                .contains("no NUMA node 9")
        );
        assert!(
            c.grant(who(1), req(0, NodeChoice::Any, false, false))
                .is_err()
        );
    }

    #[test]
    fn release_frees_and_hotplug_rehomes() {
        let mut c = Claims::new(topo(), 100);
        let a = c
            .grant(who(1), req(2, NodeChoice::Node(1), true, false))
            .unwrap();
        assert_eq!(c.get(a).unwrap().cpus, vec![4, 6]);
        let mut t = topo();
        t.nodes.insert(1, vec![5, 6, 7]);
        t.core.remove(&4);
        assert_eq!(c.rehome(t), vec![a]);
        assert_eq!(c.get(a).unwrap().cpus.len(), 2);
        assert!(!c.get(a).unwrap().cpus.contains(&4));
        c.release(a);
        assert!(c.by_cpu().is_empty());
    }
}
