//! The scheduler loader: the `scx_phase` command line, loading and
//! attaching the BPF scheduler (`src/bpf/`), the host topology and
//! thread-name rules it is configured with, the stats it prints, its
//! status for operators, and the subcommands that read and write hints
//! by hand.

pub mod access;
pub mod bpf_skel;
pub mod btf;
pub mod cli;
pub mod commands;
pub mod kernel;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod preflight;
pub mod scheduler;
pub mod status;
pub mod topology;
