//! runq-waits: run a command and report how long tasks waited, runnable,
//! for a CPU while it ran, from the scheduler core's tracepoints. The same
//! probe for every scheduler (EEVDF, scx_phase, the sched_ext peers), so
//! their worst and p99 waits compare.
//!
//!   runq-waits [--comm PREFIX] [--json] -- COMMAND [ARGS...]
//!
//! Exits with COMMAND's status (128 + signal if it was killed).

use std::mem::MaybeUninit;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::Parser;
use libbpf_rs::MapCore;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use serde::Serialize;

mod skel {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/runq_skel.rs"));
}
mod intf {
    #![allow(non_upper_case_globals, non_camel_case_types, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/runq_intf.rs"));
    // SAFETY: integers and bytes only.
    unsafe impl plain::Plain for runq_waits {}
}

const BUCKETS: usize = intf::runq_limits_RUNQ_BUCKETS as usize;

/// Run a command and measure every task's runnable waits meanwhile.
#[derive(Debug, Parser)]
#[command(name = "runq-waits", version)]
struct Opts {
    /// Count only tasks whose name starts with this [default: every task].
    #[arg(long)]
    comm: Option<String>,
    /// Print one JSON line rather than a sentence [default: off].
    #[arg(long)]
    json: bool,
    /// The command to run.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

/// The waits, summed over CPUs.
#[derive(Debug, Serialize)]
struct Summary {
    waits: u64,
    mean_us: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    max_pid: u64,
    max_comm: String,
    seconds: f64,
    status: i32,
}

/// The lower bound of bucket `b`, in us (runq_intf.h).
fn bucket_start(b: usize) -> f64 {
    if b < 4 {
        return b as f64;
    }
    let (msb, sub) = ((b + 4) / 4, (b + 4) % 4);
    ((4 + sub) as u64).wrapping_shl(msb as u32 - 2) as f64
}

/// The `q` quantile of a histogram, as the upper bound of its bucket
/// (never below the truth), capped at the largest wait seen.
fn quantile(hist: &[u64], q: f64, max_us: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (b, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return bucket_start(b + 1).min(max_us);
        }
    }
    max_us
}

fn summarise(per_cpu: &[intf::runq_waits], seconds: f64, status: i32) -> Summary {
    let mut hist = [0u64; BUCKETS];
    let (mut count, mut sum, mut max, mut pid, mut comm) = (0, 0, 0, 0, [0u8; 16]);
    for w in per_cpu {
        count += w.count;
        sum += w.sum_ns;
        if w.max_ns > max {
            max = w.max_ns;
            pid = w.max_pid;
            comm = w.max_comm.map(|c| c as u8);
        }
        for (t, n) in hist.iter_mut().zip(w.hist) {
            *t += n;
        }
    }
    let max_us = max as f64 / 1000.0;
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    Summary {
        waits: count,
        mean_us: if count > 0 {
            sum as f64 / count as f64 / 1000.0
        } else {
            0.0
        },
        p50_us: quantile(&hist, 0.5, max_us),
        p90_us: quantile(&hist, 0.9, max_us),
        p99_us: quantile(&hist, 0.99, max_us),
        p999_us: quantile(&hist, 0.999, max_us),
        max_us,
        max_pid: pid,
        max_comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
        seconds,
        status,
    }
}

fn run(opts: &Opts) -> Result<Summary> {
    let mut object = MaybeUninit::uninit();
    let mut open = skel::RunqSkelBuilder::default()
        .open(&mut object)
        .context("cannot open the wait probe")?;
    if let Some(prefix) = &opts.comm {
        let bytes = prefix.as_bytes();
        if bytes.is_empty() || bytes.len() > 15 {
            bail!("--comm takes 1 to 15 bytes of a task name, not {prefix:?}");
        }
        let rodata = open
            .maps
            .rodata_data
            .as_mut()
            .context("probe has no rodata")?;
        for (d, s) in rodata.comm_prefix.iter_mut().zip(bytes) {
            *d = *s as _;
        }
        rodata.comm_prefix_len = bytes.len() as u32;
    }
    let mut probe = open
        .load()
        .context("cannot load the wait probe (needs root and a kernel with BTF)")?;
    probe.attach().context("cannot attach the wait probe")?;

    let t0 = std::time::Instant::now();
    let status = Command::new(&opts.command[0])
        .args(&opts.command[1..])
        .status()
        .with_context(|| format!("cannot run {}", opts.command[0]))?;
    let seconds = t0.elapsed().as_secs_f64();
    let status = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));

    let values = probe
        .maps
        .waits
        .lookup_percpu(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .context("cannot read the probe's counters")?
        .context("the probe's counters are missing")?;
    let per_cpu: Vec<intf::runq_waits> = values
        .iter()
        .map(|v| {
            // SAFETY: runq_waits is integers and bytes; all-zero is valid.
            let mut w: intf::runq_waits = unsafe { std::mem::zeroed() };
            plain::copy_from_bytes(&mut w, v).expect("a per-CPU value of the map's size");
            w
        })
        .collect();
    Ok(summarise(&per_cpu, seconds, status))
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    match run(&opts) {
        Ok(s) => {
            if opts.json {
                println!(
                    "{}",
                    serde_json::to_string(&s).expect("a summary serialises")
                );
            } else {
                println!(
                    "runq-waits: {} waits in {:.1} s: mean {:.0} us, p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us ({} {})",
                    s.waits,
                    s.seconds,
                    s.mean_us,
                    s.p50_us,
                    s.p99_us,
                    s.p999_us,
                    s.max_us,
                    s.max_comm,
                    s.max_pid
                );
            }
            ExitCode::from(s.status.clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("runq-waits: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_quantiles_bound_from_above() {
        for b in 0..BUCKETS - 1 {
            assert!(bucket_start(b) < bucket_start(b + 1), "bucket {b}");
        }
        assert_eq!(bucket_start(4), 4.0);
        assert_eq!(bucket_start(8), 8.0);
        assert_eq!(bucket_start(9), 10.0);
        let mut hist = [0u64; BUCKETS];
        hist[2] = 98; // 2 us
        hist[9] = 2; // 10-11 us
        assert_eq!(quantile(&hist, 0.5, 11.0), 3.0);
        assert_eq!(quantile(&hist, 0.99, 11.0), 11.0);
    }
}
