//! What the running kernel's sched_ext lacks that scx_phase would use. The
//! scheduler still runs: scx's compat wrappers choose a fallback at load
//! time. This names each fallback once, with the release that brought the
//! feature and what running without it costs, in the log at start and in
//! `status` (and its `--json`).

use serde::{Deserialize, Serialize};

use super::btf::Btf;

/// What brings a feature: a kernel release, or the pahole that wrote the
/// kernel's BTF.
#[derive(Debug, PartialEq, Eq)]
pub enum Needs {
    Linux(u32, u32),
    Pahole(&'static str),
}

impl std::fmt::Display for Needs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Needs::Linux(major, minor) => write!(f, "Linux {major}.{minor}"),
            Needs::Pahole(v) => write!(f, "a kernel BTF from pahole {v}"),
        }
    }
}

/// A kernel feature with a fallback.
#[derive(Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    /// What brought it.
    pub since: Needs,
    /// What running without it costs.
    pub without: &'static str,
    /// Kernel functions, any of which means the feature is there.
    funcs: &'static [&'static str],
}

pub const FEATURES: &[Feature] = &[
    Feature {
        name: "scx_bpf_now",
        since: Needs::Linux(6, 14),
        without: "timestamps read the clock instead of the run queue's cached one, a little more work per event",
        funcs: &["scx_bpf_now"],
    },
    Feature {
        name: "per-node idle tracking",
        since: Needs::Linux(6, 15),
        without: "idle CPUs are tracked host-wide, so on hosts of several NUMA nodes a search for an idle CPU is not kept to one node by the kernel",
        funcs: &["scx_bpf_pick_idle_cpu_node"],
    },
    Feature {
        name: "scx_bpf_select_cpu_and",
        since: Needs::Linux(6, 16),
        without: "a task kept off others' exclusive CPUs gets an idle CPU without the kernel's SMT and cache preferences",
        funcs: &["__scx_bpf_select_cpu_and", "scx_bpf_select_cpu_and"],
    },
    Feature {
        // 6.19 has it, but it can miss a task before 7.1 (scx's compat.bpf.h).
        name: "a reliable scx_bpf_dsq_peek",
        since: Needs::Linux(7, 1),
        without: "each look at a queue's head walks a DSQ iterator instead of one lockless read, more work per dispatch",
        funcs: &["scx_bpf_dsq_peek"],
    },
];

/// Not a function but how the kernel's BTF was written: without ENUM64,
/// sched_ext's 64-bit enum values (the built-in queue ids among them) read
/// as their low 32 bits. scx_utils then uses the values this binary was
/// built with, checked against those low halves.
pub const ENUM64: Feature = Feature {
    name: "64-bit enum values in its BTF",
    since: Needs::Pahole("1.24 without --skip_encoding_btf_enum64"),
    without: "sched_ext's 64-bit constants are taken from the kernel scx_phase was built against, checked only in their low 32 bits (so a kernel that moved one would be misread)",
    funcs: &[],
};

/// "6.12.118-1-amd64" -> (6, 12).
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The features a kernel of `version` whose BTF `has` lacks. A function
/// can be there before it is usable (scx_bpf_dsq_peek), so the release
/// counts too; an unknown release trusts the BTF.
pub fn missing(has: impl Fn(&str) -> bool, version: Option<(u32, u32)>) -> Vec<&'static Feature> {
    FEATURES
        .iter()
        .filter(|f| {
            let too_old = match f.since {
                Needs::Linux(major, minor) => version.is_some_and(|v| v < (major, minor)),
                Needs::Pahole(_) => false,
            };
            !f.funcs.iter().any(|n| has(n)) || too_old
        })
        .collect()
}

/// One line for the log.
pub fn line(release: &str, f: &Feature) -> String {
    format!(
        "this kernel ({release}) lacks {} ({}): {}",
        f.name, f.since, f.without
    )
}

/// The running kernel's missing features; none if its BTF cannot be read
/// (then loading itself says what is wrong).
pub fn missing_here(release: &str) -> Vec<&'static Feature> {
    let Some(btf) = Btf::kernel() else {
        return Vec::new();
    };
    let mut lacks = missing(|f| btf.has_func(f), release_version(release));
    if btf.truncates_enum64() {
        lacks.push(&ENUM64);
    }
    lacks
}

/// The running kernel in the loader's record (`status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelRecord {
    pub release: String,
    pub lacks: Vec<Lack>,
}

/// A feature the kernel lacks: what brought it, and what its fallback costs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lack {
    pub feature: String,
    /// "6.15", or "pahole 1.24 ..." for a BTF encoding.
    pub since: String,
    pub without: String,
}

pub fn record(release: &str, lacks: &[&Feature]) -> KernelRecord {
    KernelRecord {
        release: release.into(),
        lacks: lacks
            .iter()
            .map(|f| Lack {
                feature: f.name.into(),
                since: match &f.since {
                    Needs::Linux(major, minor) => format!("{major}.{minor}"),
                    Needs::Pahole(v) => format!("pahole {v}"),
                },
                without: f.without.into(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUNCS_6_12: &[&str] = &[
        "scx_bpf_dispatch",
        "scx_bpf_consume",
        "bpf_iter_scx_dsq_new",
    ];

    #[test]
    fn a_6_12_kernel_lacks_all_four_and_says_what_it_costs() {
        let lacks = missing(|f| FUNCS_6_12.contains(&f), release_version("6.12.118"));
        let names: Vec<_> = lacks.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "scx_bpf_now",
                "per-node idle tracking",
                "scx_bpf_select_cpu_and",
                "a reliable scx_bpf_dsq_peek"
            ]
        );
        assert_eq!(
            line("6.12.118", lacks[1]),
            "this kernel (6.12.118) lacks per-node idle tracking (Linux 6.15): idle CPUs are tracked host-wide, so on hosts of several NUMA nodes a search for an idle CPU is not kept to one node by the kernel"
        );
    }

    #[test]
    fn a_function_there_too_early_still_counts_as_missing() {
        // 6.19 has scx_bpf_dsq_peek, but before 7.1 it can miss a task.
        let lacks = missing(|_| true, release_version("6.19.6+deb13-amd64"));
        assert_eq!(lacks, [&FEATURES[3]]);
        assert!(missing(|_| true, release_version("7.3.4+deb13-amd64")).is_empty());
        // No release to go by: the BTF alone.
        assert!(missing(|_| true, None).is_empty());
    }

    #[test]
    fn a_btf_without_enum64_is_named_with_the_pahole_that_fixes_it() {
        assert_eq!(
            line("6.6.56+", &ENUM64),
            "this kernel (6.6.56+) lacks 64-bit enum values in its BTF (a kernel BTF from pahole 1.24 without --skip_encoding_btf_enum64): sched_ext's 64-bit constants are taken from the kernel scx_phase was built against, checked only in their low 32 bits (so a kernel that moved one would be misread)"
        );
        assert_eq!(
            record("6.6.56+", &[&ENUM64]).lacks[0].since,
            "pahole 1.24 without --skip_encoding_btf_enum64"
        );
    }

    #[test]
    fn releases_parse() {
        assert_eq!(release_version("6.12.118"), Some((6, 12)));
        assert_eq!(release_version("7.3.4+deb13-amd64"), Some((7, 3)));
        assert_eq!(release_version("6.14.0-37-generic"), Some((6, 14)));
        assert_eq!(release_version("garbage"), None);
    }

    #[test]
    fn the_status_record_lists_each_with_its_release() {
        let v = record("6.14.0", &[&FEATURES[1]]);
        assert_eq!(v.release, "6.14.0");
        assert_eq!(v.lacks[0].feature, "per-node idle tracking");
        assert_eq!(v.lacks[0].since, "6.15");
    }
}
