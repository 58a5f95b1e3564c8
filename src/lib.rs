//! scx_phase: a sched_ext scheduler that schedules by training phase.
//!
//! The library is the hint side: phase names and the pinned phase map.
//! The scheduler's loader is the `scx_phase` binary.

pub mod bpf_intf;
pub mod bpffs;
pub mod phase;
pub mod phase_map;
pub mod stats;

pub use phase::{Phase, UnknownPhase};
pub use phase_map::{PhaseHint, PhaseMap};
