//! `workloads.json`: what the hint service tells the rest of scx_phase
//! about the registered processes. The service writes it; `status`,
//! `workloads`, `--stats`/`--monitor` and `/metrics` read it. One type for
//! both sides, with no field defaulted on the way in: a field renamed or
//! missing is a parse error that names it, never a silent 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The folder of scx_phase's run files (this one, `loader.json`): the hint
/// socket's, `/run/scx_phase` by default. The one place that says so.
pub fn run_dir(socket: &Path) -> &Path {
    socket.parent().unwrap_or_else(|| {
        Path::new(scx_phase::hint::protocol::DEFAULT_SOCKET)
            .parent()
            .unwrap_or(Path::new("/"))
    })
}

/// Where the file is: beside the service's socket, for the service that
/// writes it and every reader.
pub fn beside(socket: &Path) -> PathBuf {
    run_dir(socket).join("workloads.json")
}

/// The running service's file, with each workload's CPU time per phase
/// from the pinned figures under `pin_dir`; a one-line error if it cannot
/// be read.
pub fn read(pin_dir: &Path, socket: &Path) -> Result<WorkloadsFile> {
    let path = beside(socket);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("scx_phase is not running (no {})", path.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!(
                "permission denied on {}: listing workloads needs root",
                path.display()
            )
        }
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    let mut file = WorkloadsFile::parse(&text, &path).map_err(anyhow::Error::msg)?;
    for row in &mut file.workloads {
        let figures = scx_phase::inspect::read_workload_stats(pin_dir, row.wid).unwrap_or_default();
        row.cpu_ms = Some(
            figures
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    (
                        scx_phase::stats::slot_name(i).to_string(),
                        f.runtime_ns / 1_000_000,
                    )
                })
                .collect(),
        );
    }
    Ok(file)
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadsFile {
    pub workloads: Vec<WorkloadRow>,
    /// `--max-locked-mem`, in bytes.
    pub locked_budget_bytes: u64,
    pub locked_used_bytes: u64,
    /// `--max-exclusive-pct`.
    pub max_exclusive_pct: u32,
}

/// One registered process and what it holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRow {
    pub wid: u32,
    pub pid: u32,
    pub uid: u32,
    /// Its cgroup v2 path, if it could be read.
    pub cgroup: Option<String>,
    pub threads_bound: usize,
    pub connections: u32,
    pub claims: Vec<ClaimRow>,
    pub locked_bytes: u64,
    pub pressure_watches: Vec<WatchRow>,
    /// CPU ms per phase slot name, from the scheduler's per-workload
    /// figures: added by the reader (`scx_phase` has the pinned maps),
    /// never written by the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimRow {
    pub node: u32,
    pub cpus: Vec<u32>,
    pub exclusive: bool,
    pub placement: Placement,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    #[default]
    Pack,
    Spread,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchRow {
    pub path: String,
    pub stall_ms: u32,
    pub window_ms: u32,
    pub level: Level,
}

/// PSI's levels: some task stalled, or all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Some,
    Full,
}

impl WorkloadRow {
    /// CPUs claimed: (shared, exclusive).
    pub fn cpus_claimed(&self) -> (u64, u64) {
        self.claims.iter().fold((0, 0), |(s, e), c| {
            let n = c.cpus.len() as u64;
            if c.exclusive { (s, e + n) } else { (s + n, e) }
        })
    }

    /// CPU ms in the phase slot named `slot`, 0 if the figures were not read.
    pub fn cpu_ms(&self, slot: &str) -> u64 {
        self.cpu_ms
            .as_ref()
            .and_then(|m| m.get(slot).copied())
            .unwrap_or(0)
    }
}

impl WorkloadsFile {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data always serializes")
    }

    /// Parse the file's text; `path` names it in the error.
    pub fn parse(text: &str, path: &Path) -> Result<WorkloadsFile, String> {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "cannot read {}: {e} (written by another version of scx_phase? restart it)",
                path.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkloadsFile {
        WorkloadsFile {
            workloads: vec![WorkloadRow {
                wid: 3,
                pid: 812,
                uid: 1000,
                cgroup: Some("/job.slice/rank0".into()),
                threads_bound: 12,
                connections: 2,
                claims: vec![
                    ClaimRow {
                        node: 1,
                        cpus: vec![2, 3],
                        exclusive: true,
                        placement: Placement::Spread,
                    },
                    ClaimRow {
                        node: 0,
                        cpus: vec![0],
                        exclusive: false,
                        placement: Placement::Pack,
                    },
                ],
                locked_bytes: 256 << 20,
                pressure_watches: vec![WatchRow {
                    path: "/sys/fs/cgroup/job.slice/memory.pressure".into(),
                    stall_ms: 100,
                    window_ms: 1000,
                    level: Level::Full,
                }],
                cpu_ms: None,
            }],
            locked_budget_bytes: 1 << 30,
            locked_used_bytes: 256 << 20,
            max_exclusive_pct: 75,
        }
    }

    #[test]
    fn what_the_service_writes_reads_back_whole() {
        let f = sample();
        let text = f.to_json();
        // The names other tools and the examples in docs/ use.
        for key in [
            "\"threads_bound\":12",
            "\"placement\":\"spread\"",
            "\"level\":\"full\"",
            "\"locked_used_bytes\":268435456",
            "\"cgroup\":\"/job.slice/rank0\"",
        ] {
            assert!(text.contains(key), "{key} not in {text}");
        }
        assert!(
            !text.contains("cpu_ms"),
            "the service writes no figures: {text}"
        );
        assert_eq!(
            WorkloadsFile::parse(&text, Path::new("w.json")),
            Ok(f.clone())
        );
        assert_eq!(f.workloads[0].cpus_claimed(), (1, 2));
    }

    #[test]
    fn a_renamed_or_missing_field_is_an_error_that_names_it_not_a_zero() {
        let text = sample().to_json().replace("threads_bound", "threads");
        let err =
            WorkloadsFile::parse(&text, Path::new("/run/scx_phase/workloads.json")).unwrap_err();
        assert!(err.contains("missing field `threads_bound`"), "{err}");
        assert!(
            err.starts_with("cannot read /run/scx_phase/workloads.json: "),
            "{err}"
        );
        let text = sample()
            .to_json()
            .replace("\"level\":\"full\"", "\"level\":\"half\"");
        assert!(WorkloadsFile::parse(&text, Path::new("w")).is_err());
    }

    #[test]
    fn the_figures_a_reader_adds_are_kept_and_read_by_slot() {
        let mut f = sample();
        f.workloads[0].cpu_ms = Some(BTreeMap::from([("backward".into(), 1500)]));
        let back = WorkloadsFile::parse(&f.to_json(), Path::new("w")).unwrap();
        assert_eq!(back.workloads[0].cpu_ms("backward"), 1500);
        assert_eq!(back.workloads[0].cpu_ms("forward"), 0);
    }
}
