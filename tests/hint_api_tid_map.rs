//! The process-wide Rust API (`scx_phase::hint`) on the admin path: with
//! `SCX_PHASE_MAP` set it writes that pinned tid map, one bpf() call per
//! hint. One test function: the API chooses its path once per process.

mod common;

use common::{TempBpffs, dead_tid};
use scx_phase::Phase;
use scx_phase::hint::tid_map::{self, PhaseHint, PhaseMap};
use scx_phase::hint::{self, Error};

#[test]
fn the_process_wide_api_sets_clears_and_restores() {
    let fs = TempBpffs::new();
    let path = tid_map::map_path(&fs.pin_dir());
    // SAFETY: set before any thread reads the environment.
    unsafe { std::env::set_var(hint::MAP_ENV, &path) };

    // No map yet: a clear error, not a panic.
    assert!(matches!(
        hint::set_phase(Phase::Forward),
        Err(Error::Map(tid_map::Error::NotFound { .. }))
    ));

    let map = PhaseMap::create_pinned(&path, 64).unwrap();
    // Once the map is there, it is found.
    let me = hint::current_tid() as u32;
    hint::set_phase(Phase::Forward).unwrap();
    assert_eq!(map.get(me).unwrap().unwrap().phase(), Some(Phase::Forward));

    {
        let _g = hint::enter(Phase::Checkpoint).unwrap();
        assert_eq!(
            hint::current_phase().unwrap().unwrap().phase(),
            Some(Phase::Checkpoint)
        );
        {
            let _inner = hint::enter_on(Phase::DataLoading, Some(0)).unwrap();
            assert_eq!(
                map.get(me).unwrap(),
                Some(PhaseHint {
                    phase: 1,
                    numa_node: 0
                })
            );
        }
        assert_eq!(
            hint::current_phase().unwrap().unwrap().phase(),
            Some(Phase::Checkpoint)
        );
    }
    assert_eq!(
        hint::current_phase().unwrap().unwrap().phase(),
        Some(Phase::Forward)
    );

    hint::clear_phase().unwrap();
    assert_eq!(map.get(me).unwrap(), None);
    {
        let _g = hint::enter(Phase::Backward).unwrap();
    }
    assert_eq!(
        map.get(me).unwrap(),
        None,
        "a guard over no hint leaves none"
    );

    // Threads share the one map, each under its own tid.
    let other = std::thread::spawn(|| {
        hint::set_phase(Phase::Optimizer).unwrap();
        hint::current_tid() as u32
    })
    .join()
    .unwrap();
    assert_ne!(other, me);
    assert_eq!(
        map.get(other).unwrap().unwrap().phase(),
        Some(Phase::Optimizer)
    );

    let err = hint::set_thread_phase(dead_tid() as i32, Phase::Idle, None).unwrap_err();
    assert!(
        matches!(err, Error::Map(tid_map::Error::NoSuchThread { .. })),
        "{err}"
    );
    // The process-wide phase exists only in the hint service.
    assert!(hint::set_process_phase(Phase::Forward, None).is_err());
}
