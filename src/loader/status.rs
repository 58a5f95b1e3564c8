//! `scx_phase status`: one screen for an operator, and the record behind
//! it. The running loader keeps `loader.json` beside the hint socket (its
//! pid, version, flags, when it attached, how often it restarted and the
//! kernel's last exit reason); `status` joins it with sched_ext's own
//! state and the hint service's workloads. It exits 0 only when this
//! scheduler is attached, so it serves as a readiness probe.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use log::debug;
use serde::{Deserialize, Serialize};

use crate::loader::kernel::KernelRecord;
use crate::loader::preflight::sched_ext_state;
use crate::service::claims::format_cpulist;
use crate::service::memlock::human;
use crate::service::status_file::WorkloadRow;

/// `loader.json`, beside the hint socket.
pub fn record_path(socket: &Path) -> PathBuf {
    crate::service::status_file::run_dir(socket).join("loader.json")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `loader.json`: what the running loader writes about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoaderRecord {
    pub pid: u32,
    pub version: String,
    pub args: Vec<String>,
    pub started_at: u64,
    /// The loader's own word: cleared when the scheduler leaves; a loader
    /// killed outright cannot clear it.
    pub attached: bool,
    pub attached_at: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
    pub kernel: Option<KernelRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    pub at: u64,
    /// As the kernel gave it.
    pub reason: String,
}

/// Keeps `loader.json` up to date.
pub struct Recorder {
    path: PathBuf,
    record: LoaderRecord,
}

impl Recorder {
    pub fn new(socket: &Path) -> Recorder {
        Recorder {
            path: record_path(socket),
            record: LoaderRecord {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                args: std::env::args().skip(1).collect(),
                started_at: now(),
                ..Default::default()
            },
        }
    }

    /// The running kernel and the features it lacks.
    pub fn kernel(&mut self, kernel: KernelRecord) {
        self.record.kernel = Some(kernel);
    }

    pub fn attached(&mut self) {
        self.record.attached = true;
        self.record.attached_at = Some(now());
        self.write();
    }

    /// The scheduler left: `reason` as the kernel gave it; `restarting`
    /// if the loader attaches it again.
    pub fn exited(&mut self, reason: &str, restarting: bool) {
        self.record.attached = false;
        self.record.last_exit = Some(LastExit {
            at: now(),
            reason: reason.into(),
        });
        if restarting {
            self.record.restarts += 1;
        }
        self.write();
    }

    /// Atomically, so that a reader never sees half a record. A failure
    /// costs only the status screen, never the scheduler.
    fn write(&self) {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string(&self.record).unwrap_or_default();
        let written = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            debug!("cannot write {}: {e}", self.path.display());
        }
    }
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// What `status` shows: sched_ext's state, the loader's record, the
/// service's workloads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub attached: bool,
    pub sched_ext: String,
    pub ops: Option<String>,
    pub loader: Option<LoaderRecord>,
    /// Why there is no record: none was written, or it cannot be read.
    pub loader_error: Option<String>,
    pub loader_running: bool,
    pub workloads: Option<Vec<WorkloadRow>>,
    pub locked_used_bytes: Option<u64>,
    pub locked_budget_bytes: Option<u64>,
    pub workloads_error: Option<String>,
}

/// The status, and whether this scheduler is attached.
pub fn collect(pin_dir: &Path, socket: &Path) -> (Status, bool) {
    let (state, ops) = sched_ext_state();
    let ours = ops.as_deref().is_some_and(|o| o.starts_with("scx_phase"));
    let path = record_path(socket);
    let record = match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str::<LoaderRecord>(&t)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(e) => Err(format!("no {}: {e}", path.display())),
    };
    let loader_running = record.as_ref().is_ok_and(|r| pid_alive(u64::from(r.pid)));
    let workloads =
        crate::service::status_file::read(pin_dir, socket).map_err(|e| format!("{e:#}"));
    let attached = state == "enabled" && ours;
    let (loader, loader_error) = match record {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    let (workloads, workloads_error) = match workloads {
        Ok(w) => (Some(w), None),
        Err(e) => (None, Some(e)),
    };
    let status = Status {
        attached,
        sched_ext: state,
        ops,
        loader,
        loader_error,
        loader_running,
        locked_used_bytes: workloads.as_ref().map(|w| w.locked_used_bytes),
        locked_budget_bytes: workloads.as_ref().map(|w| w.locked_budget_bytes),
        workloads: workloads.map(|w| w.workloads),
        workloads_error,
    };
    (status, attached)
}

fn ago(at: u64) -> String {
    let s = now().saturating_sub(at);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{:.1} h ago", s as f64 / 3600.0),
    }
}

/// The screen: what is attached, the loader, the workloads, the last exit.
pub fn render(v: &Status) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let ops = v.ops.as_deref().unwrap_or("");
    let state = v.sched_ext.as_str();
    line(match (v.attached, state) {
        (true, _) => format!("attached: yes ({ops})"),
        (_, "absent") => "attached: no (this kernel has no sched_ext)".into(),
        (_, "enabled") => format!("attached: no; another scheduler is: {ops}"),
        _ => format!("attached: no (sched_ext {state})"),
    });
    match &v.loader {
        Some(r) => {
            line(format!(
                "loader: pid {} ({}), version {}, flags: {}",
                r.pid,
                if v.loader_running { "running" } else { "gone" },
                r.version,
                if r.args.is_empty() {
                    "(none)".to_string()
                } else {
                    r.args.join(" ")
                }
            ));
            if let Some(k) = r.kernel.as_ref().filter(|k| !k.lacks.is_empty()) {
                let names: Vec<String> = k
                    .lacks
                    .iter()
                    .map(|f| format!("{} ({})", f.feature, f.since))
                    .collect();
                line(format!(
                    "kernel {}: runs without {} (the log says what each costs)",
                    k.release,
                    names.join(", ")
                ));
            }
            if let Some(at) = r.attached_at {
                // The record's own word, and only while its loader runs.
                let now_attached = v.loader_running && r.attached;
                line(format!(
                    "{}: {} ({}); restarts: {}",
                    if now_attached {
                        "attached since"
                    } else {
                        "last attached"
                    },
                    iso(at),
                    ago(at),
                    r.restarts
                ));
            }
            match &r.last_exit {
                Some(e) => line(format!(
                    "last exit: {} ({}): {}",
                    iso(e.at),
                    ago(e.at),
                    e.reason
                )),
                None => line("last exit: none".into()),
            }
        }
        None => line(format!(
            "loader: no record (scx_phase has not run since boot, or another --hint-socket){}",
            v.loader_error
                .as_ref()
                .filter(|e| !e.starts_with("no "))
                .map_or_else(String::new, |e| format!(": {e}"))
        )),
    }
    let loader_gone = v.loader.is_some() && !v.loader_running;
    match &v.workloads {
        // The service's list outlives it; a dead loader's is stale.
        Some(_) if loader_gone => line("workloads: none (the loader is gone)".into()),
        Some(rows) => {
            line(format!(
                "workloads: {} registered; locked memory {} of {}",
                rows.len(),
                human(v.locked_used_bytes.unwrap_or(0)),
                human(v.locked_budget_bytes.unwrap_or(0))
            ));
            for w in rows {
                let claims: Vec<String> = w
                    .claims
                    .iter()
                    .map(|c| {
                        format!(
                            "CPUs {} on node {}{}",
                            format_cpulist(&c.cpus),
                            c.node,
                            if c.exclusive { " exclusively" } else { "" }
                        )
                    })
                    .collect();
                line(format!(
                    "  pid {} uid {}: {}{}",
                    w.pid,
                    w.uid,
                    if claims.is_empty() {
                        "hints only".to_string()
                    } else {
                        claims.join(", ")
                    },
                    if w.locked_bytes > 0 {
                        format!(", {} locked", human(w.locked_bytes))
                    } else {
                        String::new()
                    }
                ));
            }
        }
        None => line(format!(
            "workloads: unknown ({})",
            v.workloads_error.as_deref().unwrap_or("?")
        )),
    }
    out
}

/// Seconds since the epoch as "YYYY-MM-DD HH:MM:SS UTC".
fn iso(at: u64) -> String {
    let (days, rem) = (at / 86_400, at % 86_400);
    // Civil from days (Howard Hinnant's algorithm), for the UTC date.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Print the status; an error (exit 1) unless this scheduler is attached.
pub fn status(pin_dir: &Path, socket: &Path, json: bool) -> Result<()> {
    let (v, attached) = collect(pin_dir, socket);
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&v));
    }
    if !attached {
        bail!("scx_phase is not attached");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(iso(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(iso(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(iso(1_796_212_800 + 3_723), "2026-12-02 13:02:03 UTC");
    }

    fn stopped() -> Status {
        Status {
            sched_ext: "disabled".into(),
            loader: Some(LoaderRecord {
                pid: 4242,
                version: "0.1.0".into(),
                args: vec!["--hint-group".into(), "train".into()],
                attached_at: Some(60),
                restarts: 2,
                last_exit: Some(LastExit {
                    at: 120,
                    reason: "EXIT: unregistered from user space".into(),
                }),
                ..Default::default()
            }),
            workloads: Some(vec![WorkloadRow {
                pid: 7,
                uid: 1000,
                locked_bytes: 1 << 20,
                claims: vec![crate::service::status_file::ClaimRow {
                    cpus: vec![2, 3],
                    node: 1,
                    exclusive: true,
                    ..Default::default()
                }],
                ..Default::default()
            }]),
            locked_used_bytes: Some(1 << 20),
            locked_budget_bytes: Some(1 << 30),
            ..Default::default()
        }
    }

    #[test]
    fn the_screen_names_the_state_the_loader_and_the_last_exit() {
        let v = stopped();
        let s = render(&v);
        assert!(s.starts_with("attached: no (sched_ext disabled)\n"), "{s}");
        assert!(
            s.contains("loader: pid 4242 (gone), version 0.1.0, flags: --hint-group train"),
            "{s}"
        );
        assert!(s.contains("last attached: 1970-01-01 00:01:00 UTC"), "{s}");
        assert!(s.contains("restarts: 2"), "{s}");
        assert!(s.contains("last exit: 1970-01-01 00:02:00 UTC"), "{s}");
        assert!(s.contains("EXIT: unregistered from user space"), "{s}");
        assert!(s.contains("workloads: none (the loader is gone)"), "{s}");

        // The same workloads from a running loader are listed.
        let mut v = v;
        v.loader_running = true;
        v.loader.as_mut().unwrap().attached = true;
        let s = render(&v);
        assert!(s.contains("attached since: 1970-01-01 00:01:00 UTC"), "{s}");
        assert!(
            s.contains("workloads: 1 registered; locked memory 1 MiB of 1 GiB"),
            "{s}"
        );
        assert!(
            s.contains("pid 7 uid 1000: CPUs 2-3 on node 1 exclusively, 1 MiB locked"),
            "{s}"
        );
    }

    #[test]
    fn a_record_that_does_not_parse_is_named_not_read_as_zeros() {
        let text = serde_json::to_string(&stopped().loader)
            .unwrap()
            .replace("restarts", "restart");
        let err = serde_json::from_str::<LoaderRecord>(&text).unwrap_err();
        assert!(
            err.to_string().contains("missing field `restarts`"),
            "{err}"
        );
        let v = Status {
            loader_error: Some(format!("cannot read /run/scx_phase/loader.json: {err}")),
            ..Default::default()
        };
        let s = render(&v);
        assert!(
            s.contains("loader: no record (scx_phase has not run since boot, or another --hint-socket): cannot read /run/scx_phase/loader.json: missing field `restarts`"),
            "{s}"
        );
    }

    #[test]
    fn a_kernel_that_lacks_features_is_named_with_them() {
        let lacks = crate::loader::kernel::missing(
            |f| f != "scx_bpf_pick_idle_cpu_node",
            crate::loader::kernel::release_version("6.17.0-8-generic"),
        );
        let mut v = Status {
            attached: true,
            sched_ext: "enabled".into(),
            ops: Some("scx_phase_0.1.0".into()),
            loader: Some(LoaderRecord {
                pid: 1,
                version: "0.1.0".into(),
                attached: true,
                attached_at: Some(60),
                kernel: Some(crate::loader::kernel::record("6.17.0-8-generic", &lacks)),
                ..Default::default()
            }),
            loader_running: true,
            workloads: Some(vec![]),
            ..Default::default()
        };
        let s = render(&v);
        assert!(
            s.contains("kernel 6.17.0-8-generic: runs without per-node idle tracking (6.15), a reliable scx_bpf_dsq_peek (7.1)"),
            "{s}"
        );
        // A kernel that lacks nothing gets no line.
        v.loader.as_mut().unwrap().kernel = Some(crate::loader::kernel::record("7.3.4", &[]));
        assert!(!render(&v).contains("runs without"));
    }

    #[test]
    fn without_sched_ext_or_a_record_it_says_so() {
        let v = Status {
            sched_ext: "absent".into(),
            loader_error: Some("no /run/scx_phase/loader.json: No such file or directory".into()),
            workloads_error: Some("scx_phase is not running".into()),
            ..Default::default()
        };
        let s = render(&v);
        assert!(
            s.starts_with("attached: no (this kernel has no sched_ext)"),
            "{s}"
        );
        assert!(s.contains("loader: no record"), "{s}");
        assert!(
            s.contains("workloads: unknown (scx_phase is not running)"),
            "{s}"
        );
    }
}
