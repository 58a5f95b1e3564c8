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
use serde_json::{Value, json};

use crate::loader::commands::read_workloads;

const SCHED_EXT: &str = "/sys/kernel/sched_ext";

/// `loader.json`, beside the hint socket.
pub fn record_path(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or(Path::new("/run/scx_phase"))
        .join("loader.json")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the running loader writes about itself.
pub struct Recorder {
    path: PathBuf,
    record: Value,
}

impl Recorder {
    pub fn new(socket: &Path) -> Recorder {
        let record = json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "args": std::env::args().skip(1).collect::<Vec<_>>(),
            "started_at": now(),
            "attached": false,
            "attached_at": null,
            "restarts": 0,
            "last_exit": null,
        });
        Recorder {
            path: record_path(socket),
            record,
        }
    }

    /// The running kernel and the features it lacks (kernel::to_json).
    pub fn kernel(&mut self, kernel: Value) {
        self.record["kernel"] = kernel;
    }

    pub fn attached(&mut self) {
        self.record["attached"] = true.into();
        self.record["attached_at"] = now().into();
        self.write();
    }

    /// The scheduler left: `reason` as the kernel gave it; `restarting`
    /// if the loader attaches it again.
    pub fn exited(&mut self, reason: &str, restarting: bool) {
        self.record["attached"] = false.into();
        self.record["last_exit"] = json!({"at": now(), "reason": reason});
        if restarting {
            let n = self.record["restarts"].as_u64().unwrap_or(0);
            self.record["restarts"] = (n + 1).into();
        }
        self.write();
    }

    /// Atomically, so that a reader never sees half a record. A failure
    /// costs only the status screen, never the scheduler.
    fn write(&self) {
        let tmp = self.path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, self.record.to_string())
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            debug!("cannot write {}: {e}", self.path.display());
        }
    }
}

/// What sched_ext says: "enabled", "disabled", ..., and the root
/// scheduler's name when one is attached.
fn sched_ext_state() -> (String, Option<String>) {
    let read = |f: &str| {
        std::fs::read_to_string(Path::new(SCHED_EXT).join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    match read("state") {
        None => ("absent".into(), None),
        Some(state) => {
            let ops = read("root/ops").filter(|o| !o.is_empty());
            (state, ops)
        }
    }
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The status as JSON, and whether this scheduler is attached.
pub fn collect(pin_dir: &Path, socket: &Path) -> (Value, bool) {
    let (state, ops) = sched_ext_state();
    let ours = ops.as_deref().is_some_and(|o| o.starts_with("scx_phase"));
    let record: Option<Value> = std::fs::read_to_string(record_path(socket))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let loader_alive = record
        .as_ref()
        .and_then(|r| r["pid"].as_u64())
        .is_some_and(pid_alive);
    let workloads = read_workloads(pin_dir, socket).map_err(|e| format!("{e:#}"));
    let attached = state == "enabled" && ours;
    let v = json!({
        "attached": attached,
        "sched_ext": state,
        "ops": ops,
        "loader": record,
        "loader_running": loader_alive,
        "workloads": workloads.as_ref().ok().map(|w| &w.workloads),
        "locked_used_bytes": workloads.as_ref().ok().map(|w| w.locked_used_bytes),
        "locked_budget_bytes": workloads.as_ref().ok().map(|w| w.locked_budget_bytes),
        "workloads_error": workloads.err(),
    });
    (v, attached)
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
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let ops = v["ops"].as_str().unwrap_or("");
    let state = v["sched_ext"].as_str().unwrap_or("?");
    line(
        &mut out,
        match (v["attached"].as_bool(), state) {
            (Some(true), _) => format!("attached: yes ({ops})"),
            (_, "absent") => "attached: no (this kernel has no sched_ext)".into(),
            (_, "enabled") => format!("attached: no; another scheduler is: {ops}"),
            _ => format!("attached: no (sched_ext {state})"),
        },
    );
    let r = &v["loader"];
    if r.is_object() {
        let running = v["loader_running"].as_bool() == Some(true);
        let args: Vec<&str> = r["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        line(
            &mut out,
            format!(
                "loader: pid {} ({}), version {}, flags: {}",
                r["pid"],
                if running { "running" } else { "gone" },
                r["version"].as_str().unwrap_or("?"),
                if args.is_empty() {
                    "(none)".to_string()
                } else {
                    args.join(" ")
                }
            ),
        );
        if let Some(lacks) = r["kernel"]["lacks"].as_array().filter(|l| !l.is_empty()) {
            let names: Vec<String> = lacks
                .iter()
                .map(|f| {
                    format!(
                        "{} ({})",
                        f["feature"].as_str().unwrap_or("?"),
                        f["since"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            line(
                &mut out,
                format!(
                    "kernel {}: runs without {} (the log says what each costs)",
                    r["kernel"]["release"].as_str().unwrap_or("?"),
                    names.join(", ")
                ),
            );
        }
        if let Some(at) = r["attached_at"].as_u64() {
            // The record's own word: the loader clears it when the
            // scheduler leaves; a loader killed outright cannot.
            let now_attached = running && r["attached"] == true;
            line(
                &mut out,
                format!(
                    "{}: {} ({}); restarts: {}",
                    if now_attached {
                        "attached since"
                    } else {
                        "last attached"
                    },
                    iso(at),
                    ago(at),
                    r["restarts"]
                ),
            );
        }
        match r["last_exit"]["at"].as_u64() {
            Some(at) => line(
                &mut out,
                format!(
                    "last exit: {} ({}): {}",
                    iso(at),
                    ago(at),
                    r["last_exit"]["reason"].as_str().unwrap_or("?")
                ),
            ),
            None => line(&mut out, "last exit: none".into()),
        }
    } else {
        line(
            &mut out,
            "loader: no record (scx_phase has not run since boot, or another --hint-socket)".into(),
        );
    }
    let loader_gone = r.is_object() && v["loader_running"].as_bool() != Some(true);
    match v["workloads"].as_array() {
        // The service's list outlives it; a dead loader's is stale.
        Some(_) if loader_gone => line(&mut out, "workloads: none (the loader is gone)".into()),
        Some(rows) => {
            line(
                &mut out,
                format!(
                    "workloads: {} registered; locked memory {} of {}",
                    rows.len(),
                    crate::service::memlock::human(v["locked_used_bytes"].as_u64().unwrap_or(0)),
                    crate::service::memlock::human(v["locked_budget_bytes"].as_u64().unwrap_or(0))
                ),
            );
            for w in rows {
                let claims: Vec<String> = w["claims"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .map(|c| {
                                format!(
                                    "CPUs {} on node {}{}",
                                    c["cpus"],
                                    c["node"],
                                    if c["exclusive"] == true {
                                        " exclusively"
                                    } else {
                                        ""
                                    }
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                line(
                    &mut out,
                    format!(
                        "  pid {} uid {}: {}{}",
                        w["pid"],
                        w["uid"],
                        if claims.is_empty() {
                            "hints only".to_string()
                        } else {
                            claims.join(", ")
                        },
                        match w["locked_bytes"].as_u64() {
                            Some(b) if b > 0 =>
                                format!(", {} locked", crate::service::memlock::human(b)),
                            _ => String::new(),
                        }
                    ),
                );
            }
        }
        None => line(
            &mut out,
            format!(
                "workloads: unknown ({})",
                v["workloads_error"].as_str().unwrap_or("?")
            ),
        ),
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

    #[test]
    fn the_screen_names_the_state_the_loader_and_the_last_exit() {
        let v = json!({
            "attached": false, "sched_ext": "disabled", "ops": null,
            "loader": {"pid": 4242, "version": "0.1.0", "args": ["--hint-group", "train"],
                       "started_at": 0, "attached": false, "attached_at": 60, "restarts": 2,
                       "last_exit": {"at": 120, "reason": "EXIT: unregistered from user space"}},
            "loader_running": false,
            "workloads": [{"pid": 7, "uid": 1000, "locked_bytes": 1 << 20,
                           "claims": [{"cpus": [2, 3], "node": 1, "exclusive": true}]}],
            "locked_used_bytes": 1 << 20, "locked_budget_bytes": 1 << 30,
        });
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
        v["loader_running"] = true.into();
        v["loader"]["attached"] = true.into();
        let s = render(&v);
        assert!(s.contains("attached since: 1970-01-01 00:01:00 UTC"), "{s}");
        assert!(
            s.contains("workloads: 1 registered; locked memory 1 MiB of 1 GiB"),
            "{s}"
        );
        assert!(
            s.contains("pid 7 uid 1000: CPUs [2,3] on node 1 exclusively, 1 MiB locked"),
            "{s}"
        );
    }

    #[test]
    fn a_kernel_that_lacks_features_is_named_with_them() {
        let lacks = crate::loader::kernel::missing(
            |f| f != "scx_bpf_pick_idle_cpu_node",
            crate::loader::kernel::release_version("6.17.0-8-generic"),
        );
        let v = json!({
            "attached": true, "sched_ext": "enabled", "ops": "scx_phase_0.1.0",
            "loader": {"pid": 1, "version": "0.1.0", "args": [], "attached": true,
                       "attached_at": 60, "restarts": 0, "last_exit": null,
                       "kernel": crate::loader::kernel::to_json("6.17.0-8-generic", &lacks)},
            "loader_running": true, "workloads": [],
        });
        let s = render(&v);
        assert!(
            s.contains("kernel 6.17.0-8-generic: runs without per-node idle tracking (6.15), a reliable scx_bpf_dsq_peek (7.1)"),
            "{s}"
        );
        // A kernel that lacks nothing gets no line.
        let mut v = v;
        v["loader"]["kernel"] = crate::loader::kernel::to_json("7.3.4", &[]);
        assert!(!render(&v).contains("runs without"));
    }

    #[test]
    fn without_sched_ext_or_a_record_it_says_so() {
        let v = json!({"attached": false, "sched_ext": "absent", "loader": null,
                       "workloads": null, "workloads_error": "scx_phase is not running"});
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
