//! scx_phase: a sched_ext scheduler that schedules by training phase.
//!
//! This library is what training code links: the phase ABI ([`phase`],
//! [`bpf_intf`]), the hint library ([`hint`]: the Rust API, its C ABI in
//! `libscx_phase.so`, and the pinned tid map), and the per-phase counters
//! ([`stats`]). The scheduler's loader and the hint service are the
//! `scx_phase` binary (`src/loader/`, `src/service/`).

pub mod bpf_intf;
pub mod bpffs;
pub mod hint;
pub mod inspect;
pub mod phase;
pub mod stats;
pub mod sys;

pub use hint::tid_map::{PhaseHint, PhaseMap};
pub use phase::{Phase, UnknownPhase};
