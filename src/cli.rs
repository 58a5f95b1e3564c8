//! Command-line interface: every flag, with its default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use scx_phase::Phase;
use scx_phase::phase_map::{DEFAULT_MAX_HINTS, DEFAULT_PIN_DIR};

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
    /// Hint a thread's phase.
    Set {
        /// Kernel thread id (what gettid() returns).
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
    /// Show a thread's hint.
    Get {
        /// Kernel thread id.
        #[arg(long)]
        tid: u32,
    },
    /// Remove a thread's hint.
    Clear {
        /// Kernel thread id.
        #[arg(long)]
        tid: u32,
    },
    /// List every hint in the map.
    Dump {
        /// Print JSON instead of a table [default: off].
        #[arg(long)]
        json: bool,
    },
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
        assert_eq!(cli.pin_dir, PathBuf::from("/sys/fs/bpf/scx_phase"));
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
