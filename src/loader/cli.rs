//! Command-line interface: every flag, with its default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use scx_phase::Phase;
use scx_phase::hint::protocol::DEFAULT_SOCKET;
use scx_phase::hint::tid_map::{DEFAULT_MAX_HINTS, DEFAULT_PIN_DIR};

/// scx_phase: a sched_ext CPU scheduler for ML training hosts.
///
/// Without a subcommand it loads and attaches the scheduler and runs until
/// Ctrl-C or SIGTERM, then detaches and prints the kernel's exit reason.
/// Training code hints each thread's phase through the pinned phase map
/// (idle, data_loading, forward, backward, optimizer, checkpoint); the
/// subcommands read and write that map by hand.
#[derive(Debug, Parser)]
#[command(name = "scx_phase", version)]
pub struct Cli {
    #[command(flatten)]
    pub run: RunOpts,

    /// Folder on bpffs where the phase map and stats are pinned.
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,

    /// Unix socket of the hint service, where training processes register
    /// and `set`/`clear` by non-root users go (mount its folder into
    /// containers).
    #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub hint_socket: PathBuf,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options of the scheduler itself.
#[derive(Debug, Args)]
pub struct RunOpts {
    /// Time slice in microseconds: how long a task runs before others get
    /// the CPU.
    #[arg(short = 's', long, default_value_t = 5000, value_name = "US",
          value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub slice_us: u64,

    /// Capacity of the phase map, in threads. A pinned map that already
    /// exists keeps its own capacity.
    #[arg(long, default_value_t = DEFAULT_MAX_HINTS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=(1 << 24)))]
    pub max_hints: u32,

    /// Share of each CPU that boosted phases (checkpoint, backward,
    /// forward, optimizer) may take per window; past it the CPU serves
    /// un-hinted tasks first until the window ends. 100 = no limit.
    #[arg(long, default_value_t = 80, value_name = "PCT",
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub boost_budget_pct: u64,

    /// Length of the boost-budget window, in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub boost_window_ms: u64,

    /// How boosted classes share CPU among themselves: weights of
    /// checkpoint, backward, and forward/optimizer (relative to a nice-0
    /// task).
    #[arg(long, default_value = "8,4,2", value_name = "CKPT,BWD,FWD",
          value_parser = parse_weights)]
    pub boost_weights: BoostWeights,

    /// Data loaders run as fair tasks with their weight multiplied by this:
    /// ahead of un-hinted work, but not boosted.
    #[arg(long, default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub loader_weight: u32,

    /// Idle-phase tasks run as fair tasks with their weight divided by this.
    #[arg(long, default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub idle_divisor: u32,

    /// Let a data loader run on another NUMA node once it has waited this
    /// many microseconds with every CPU of its own node busy
    /// [default: off: loaders never leave their node].
    #[arg(long, value_name = "US")]
    pub numa_spill_us: Option<u64>,

    /// Thread-name rules for threads without a hint, one `PREFIX PHASE` per
    /// line [default: built in: pt_data_worker, pt_multiprocess,
    /// pt_thread_data, pt_data_pin -> data_loading; pt_autograd_ ->
    /// backward].
    #[arg(long, value_name = "FILE", conflicts_with = "no_classify")]
    pub classify_rules: Option<PathBuf>,

    /// Do not classify threads by name: only explicit hints count
    /// [default: off].
    #[arg(long)]
    pub no_classify: bool,

    /// Let a thread's name raise it whoever runs it (single-tenant nodes)
    /// [default: off: a name raises a thread only if its process holds
    /// CAP_SYS_NICE or registered with the hint service as a member of the
    /// hint group; anyone may name a thread pt_autograd_0].
    #[arg(long)]
    pub trust_names: bool,

    /// Let members of GROUP (a name or gid) raise threads above un-hinted
    /// work through the hint service (every phase but idle); anyone may set
    /// idle on threads they could signal [default: none: only holders of
    /// CAP_SYS_NICE may raise]. The pinned maps stay root's.
    #[arg(long, value_name = "GROUP")]
    pub hint_group: Option<String>,

    /// The share of each NUMA node's CPUs that workloads may claim
    /// exclusively, in percent (0 to 100).
    #[arg(long, default_value_t = 75, value_name = "PCT",
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_exclusive_pct: u32,

    /// Locked memory the hint service may grant to jobs in all (it locks
    /// their checkpoint buffers itself), like 4GiB or 512M
    /// [default: a quarter of the host's memory].
    #[arg(long, value_name = "BYTES")]
    pub max_locked_mem: Option<String>,

    /// Run only the hint service, without the scheduler: hints are taken
    /// and can be dumped, but nothing schedules by them. Works without
    /// sched_ext, for testing the hint path [default: off].
    #[arg(long)]
    pub hint_service_only: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics (OpenMetrics text,
    /// or Prometheus text to clients that do not ask for it), like
    /// 127.0.0.1:9464 [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Workloads that --metrics lists one by one (pid, uid and cgroup
    /// labels), the busiest first; the rest are summed under pid "other".
    /// 0 names no tenant: whoever can scrape sees only the sums.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub metrics_max_workloads: usize,

    /// Print the per-phase table every SECS seconds while running
    /// [default: off].
    #[arg(long, value_name = "SECS")]
    pub stats: Option<f64>,

    /// Print the per-phase table of an already running scx_phase every SECS
    /// seconds, without loading a scheduler [default: off].
    #[arg(long, value_name = "SECS", conflicts_with = "stats")]
    pub monitor: Option<f64>,

    /// With --stats or --monitor: one JSON object per line instead of a table
    /// [default: off].
    #[arg(long)]
    pub json: bool,

    /// Size of the kernel's debug dump on a scheduler error, in bytes
    /// (0 = the kernel's default).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub exit_dump_len: u32,

    /// Verbose output, including libbpf's [default: off].
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the NUMA nodes, their CPUs and the node of each PCI GPU.
    Topology,
    /// Hint a thread's phase until it exits (root: in the tid map; others:
    /// through the hint service and its rules).
    Set {
        /// Thread id, as numbered in your PID namespace (gettid()).
        #[arg(long)]
        tid: u32,
        /// Phase name or number: idle, data_loading, forward, backward,
        /// optimizer, checkpoint (0-5).
        #[arg(long, value_parser = parse_phase)]
        phase: Phase,
        /// NUMA node the thread's data lives on [default: chosen by the
        /// scheduler].
        #[arg(long)]
        node: Option<u32>,
    },
    /// Show a thread's effective hint and where it comes from (root).
    Get {
        /// Thread id.
        #[arg(long)]
        tid: u32,
    },
    /// Remove a thread's one-shot hint.
    Clear {
        /// Thread id, as numbered in your PID namespace.
        #[arg(long)]
        tid: u32,
    },
    /// List every thread's effective hint, its source (tid map, thread
    /// slot, name rule, process) and its process (root).
    Dump {
        /// Print JSON instead of a table [default: off].
        #[arg(long)]
        json: bool,
    },
    /// One screen for an operator: attached or not (exit 0 only if this
    /// scheduler is), since when, version, flags, restarts, the last exit
    /// reason, and the workloads (root).
    Status {
        /// Print JSON instead of text [default: off].
        #[arg(long)]
        json: bool,
    },
    /// List the registered workloads: pid, uid, cgroup, claimed CPUs,
    /// exclusivity, locked memory, pressure watches, CPU time per phase
    /// (root).
    Workloads {
        /// Print JSON instead of a table [default: off].
        #[arg(long)]
        json: bool,
    },
}

/// Class weights of the boosted phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoostWeights {
    pub critical: u32,
    pub high: u32,
    pub normal: u32,
}

fn parse_weights(s: &str) -> Result<BoostWeights, String> {
    let w: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("'{s}' is not three comma-separated integers"))?;
    match w[..] {
        [critical, high, normal]
            if [critical, high, normal]
                .iter()
                .all(|w| (1..=1000).contains(w)) =>
        {
            Ok(BoostWeights {
                critical,
                high,
                normal,
            })
        }
        _ => Err(format!(
            "'{s}': expected three weights from 1 to 1000, like 8,4,2"
        )),
    }
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    s.parse::<Phase>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["scx_phase"]).unwrap();
        assert_eq!(cli.run.slice_us, 5000);
        assert_eq!(cli.run.max_hints, 65_536);
        assert_eq!(cli.run.boost_budget_pct, 80);
        assert_eq!(cli.run.boost_window_ms, 100);
        assert_eq!(
            cli.run.boost_weights,
            BoostWeights {
                critical: 8,
                high: 4,
                normal: 2
            }
        );
        assert_eq!(cli.run.idle_divisor, 8);
        assert_eq!(cli.run.loader_weight, 4);
        assert_eq!(cli.run.numa_spill_us, None);
        assert!(!cli.run.no_classify);
        assert_eq!(cli.pin_dir, PathBuf::from("/sys/fs/bpf/scx_phase"));
        assert_eq!(cli.hint_socket, PathBuf::from("/run/scx_phase/hint.sock"));
        assert!(!cli.run.hint_service_only);
        assert!(cli.command.is_none());
    }

    #[test]
    fn set_parses_names_numbers_and_node() {
        let cli = Cli::try_parse_from([
            "scx_phase",
            "set",
            "--tid",
            "42",
            "--phase",
            "backward",
            "--node",
            "1",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Set { tid, phase, node }) => {
                assert_eq!((tid, phase, node), (42, Phase::Backward, Some(1)))
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["scx_phase", "set", "--tid", "1", "--phase", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Set {
                phase: Phase::Checkpoint,
                node: None,
                ..
            })
        ));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            vec!["scx_phase", "set", "--tid", "1", "--phase", "warp"],
            vec!["scx_phase", "set", "--tid", "-3", "--phase", "idle"],
            vec!["scx_phase", "--slice-us", "0"],
            vec!["scx_phase", "--max-hints", "0"],
            vec!["scx_phase", "--stats", "1", "--monitor", "1"],
            vec!["scx_phase", "--boost-budget-pct", "0"],
            vec!["scx_phase", "--boost-budget-pct", "101"],
            vec!["scx_phase", "--boost-weights", "8,4"],
            vec!["scx_phase", "--boost-weights", "8,0,2"],
            vec!["scx_phase", "--no-classify", "--classify-rules", "x"],
            vec!["scx_phase", "--loader-weight", "0"],
        ] {
            let err = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn every_flag_documents_itself() {
        let mut cmd = Cli::command();
        let help = cmd.render_long_help().to_string();
        for flag in [
            "--slice-us",
            "--max-hints",
            "--stats",
            "--monitor",
            "--json",
            "--exit-dump-len",
            "--verbose",
            "--pin-dir",
            "--boost-budget-pct",
            "--boost-window-ms",
            "--boost-weights",
            "--idle-divisor",
            "--loader-weight",
            "--numa-spill-us",
            "--classify-rules",
            "--no-classify",
            "--hint-group",
            "--hint-socket",
            "--hint-service-only",
            "--max-exclusive-pct",
            "--max-locked-mem",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let doc = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string());
            let doc = doc.unwrap_or_default();
            let has_default = !arg.get_default_values().is_empty() || doc.contains("[default:");
            assert!(has_default, "--{id} does not say its default");
        }
    }
}
