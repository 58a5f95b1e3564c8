//! The scx_phase loader: parse the command line, then either run the
//! scheduler or one of the small subcommands.

mod loader;
mod service;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Parser;
use clap::error::ErrorKind;

use loader::cli::{Cli, Command};
use loader::{commands, output, preflight, scheduler, topology};

/// Exit status of a usage error (clap's convention).
const EXIT_USAGE: u8 = 2;

fn init_logging(verbose: bool) -> Result<()> {
    let level = if verbose {
        simplelog::LevelFilter::Debug
    } else {
        simplelog::LevelFilter::Info
    };
    let cfg = simplelog::ConfigBuilder::new()
        .set_time_level(simplelog::LevelFilter::Off)
        .set_target_level(simplelog::LevelFilter::Off)
        .set_thread_level(simplelog::LevelFilter::Off)
        .set_location_level(simplelog::LevelFilter::Off)
        .build();
    simplelog::TermLogger::init(
        level,
        cfg,
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    )
    .context("cannot set up logging")
}

fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || f.store(true, Ordering::Relaxed))
        .context("cannot install the Ctrl-C/SIGTERM handler")?;
    Ok(flag)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Some(Command::Topology) => {
            print!("{}", topology::HostTopology::discover()?);
            Ok(())
        }
        Some(cmd) => commands::run(cmd, &cli.pin_dir, &cli.hint_socket),
        None => {
            init_logging(cli.run.verbose)?;
            if let Some(secs) = cli.run.monitor {
                return output::monitor(
                    &cli.pin_dir,
                    &cli.hint_socket,
                    secs,
                    cli.run.json,
                    shutdown_flag()?,
                );
            }
            if let Some(secs) = cli.run.stats {
                anyhow::ensure!(
                    secs > 0.0 && secs.is_finite(),
                    "--stats needs a positive interval in seconds, not {secs}"
                );
            }
            if cli.run.hint_service_only {
                preflight::check_for_service(&cli.pin_dir)?;
            } else {
                preflight::check_for_loading(&cli.pin_dir)?;
            }
            scheduler::run(&cli.run, &cli.pin_dir, &cli.hint_socket, shutdown_flag()?)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // One line: clap's first line, without its usage block.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("scx_phase: {}", first.trim_start_matches("error: "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scx_phase: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
