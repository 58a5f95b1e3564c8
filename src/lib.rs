//! scx_phase: a sched_ext scheduler that schedules by training phase.
//!
//! The library is the hint side: phase names, the pinned phase map, the
//! process-wide hint API (`hint`) and its C ABI (`capi`, built into
//! `libscx_phase.so`). The scheduler's loader is the `scx_phase` binary.

pub mod bpf_intf;
pub mod bpffs;
pub mod capi;
pub mod hint;
pub mod phase;
pub mod phase_map;
pub mod stats;

pub use phase::{Phase, UnknownPhase};
pub use phase_map::{PhaseHint, PhaseMap};
