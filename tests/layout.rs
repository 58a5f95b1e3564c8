//! The Rust structs that cross into BPF match intf.h byte for byte.

use std::mem::{offset_of, size_of};

use scx_phase::bpf_intf::{phase_counters, phase_hint};
use scx_phase::stats::PhaseCounters;
use scx_phase::{Phase, PhaseHint};

#[test]
fn phase_hint_matches_bpf() {
    assert_eq!(size_of::<PhaseHint>(), size_of::<phase_hint>());
    assert_eq!(size_of::<PhaseHint>(), 8);
    assert_eq!(offset_of!(PhaseHint, phase), offset_of!(phase_hint, phase));
    assert_eq!(
        offset_of!(PhaseHint, numa_node),
        offset_of!(phase_hint, numa_node)
    );
}

#[test]
fn phase_counters_match_bpf() {
    assert_eq!(size_of::<PhaseCounters>(), size_of::<phase_counters>());
    macro_rules! same_offset {
        ($($f:ident),*) => {$(
            assert_eq!(
                offset_of!(PhaseCounters, $f),
                offset_of!(phase_counters, $f),
                stringify!($f)
            );
        )*};
    }
    same_offset!(
        enqueues,
        runtime_ns,
        wait_ns,
        max_wait_ns,
        max_wait_tid,
        preemptions,
        budget_exhaustions,
        local_ns,
        remote_ns,
        invalid_hints,
        fair_steals,
        fair_rebalances,
        threads
    );
}

#[test]
fn phase_numbers_match_bpf() {
    use scx_phase::bpf_intf::*;
    let bpf = [
        scx_phase_id_SCX_PHASE_IDLE,
        scx_phase_id_SCX_PHASE_DATA_LOADING,
        scx_phase_id_SCX_PHASE_FORWARD,
        scx_phase_id_SCX_PHASE_BACKWARD,
        scx_phase_id_SCX_PHASE_OPTIMIZER,
        scx_phase_id_SCX_PHASE_CHECKPOINT,
    ];
    for (p, n) in Phase::ALL.iter().zip(bpf) {
        assert_eq!(*p as u32, n, "{p}");
    }
    assert_eq!(scx_phase_id_SCX_PHASE_NR as usize, Phase::ALL.len());
    assert_eq!(
        scx_phase_id_SCX_PHASE_NR_SLOTS as usize,
        scx_phase::stats::NR_SLOTS
    );
    assert_eq!(scx_phase_limits_SCX_PHASE_NODE_ANY, PhaseHint::NODE_ANY);
}
