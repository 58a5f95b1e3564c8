//! The phase map library against real BPF hash maps on the host kernel.

mod common;

use common::{TempBpffs, dead_tid};
use scx_phase::Phase;
use scx_phase::hint::tid_map::{self, Error, PhaseHint, PhaseMap, current_tid};

#[test]
fn set_get_clear_round_trip() {
    let fs = TempBpffs::new();
    let path = tid_map::map_path(&fs.pin_dir());
    let map = PhaseMap::create_pinned(&path, 128).expect("create");
    let me = current_tid();

    assert_eq!(map.get(me).unwrap(), None);
    map.set(me, PhaseHint::new(Phase::Backward, None)).unwrap();
    assert_eq!(
        map.get(me).unwrap(),
        Some(PhaseHint {
            phase: 3,
            numa_node: -1
        })
    );
    // Overwrite, with a node.
    map.set(me, PhaseHint::new(Phase::DataLoading, Some(1)))
        .unwrap();
    let h = map.get(me).unwrap().unwrap();
    assert_eq!((h.phase(), h.node()), (Some(Phase::DataLoading), Some(1)));

    assert!(map.clear(me).unwrap());
    assert!(!map.clear(me).unwrap(), "second clear finds nothing");
    assert_eq!(map.get(me).unwrap(), None);
}

#[test]
fn a_second_open_sees_the_same_map() {
    let fs = TempBpffs::new();
    let path = tid_map::map_path(&fs.pin_dir());
    let a = PhaseMap::create_pinned(&path, 16).unwrap();
    let b = PhaseMap::open(&path).unwrap();
    assert_eq!(b.capacity(), 16);
    a.set(7, PhaseHint::new(Phase::Checkpoint, None)).unwrap();
    assert_eq!(b.get(7).unwrap().unwrap().phase(), Some(Phase::Checkpoint));
}

#[test]
fn entries_lists_every_hint_sorted() {
    let fs = TempBpffs::new();
    let map = PhaseMap::create_pinned(tid_map::map_path(&fs.pin_dir()), 64).unwrap();
    for (tid, p) in [
        (30, Phase::Forward),
        (10, Phase::Idle),
        (20, Phase::Optimizer),
    ] {
        map.set(tid, PhaseHint::new(p, None)).unwrap();
    }
    let got: Vec<(u32, Option<Phase>)> = map
        .entries()
        .unwrap()
        .into_iter()
        .map(|(t, h)| (t, h.phase()))
        .collect();
    assert_eq!(
        got,
        vec![
            (10, Some(Phase::Idle)),
            (20, Some(Phase::Optimizer)),
            (30, Some(Phase::Forward))
        ]
    );
}

#[test]
fn a_full_map_says_so() {
    let fs = TempBpffs::new();
    let map = PhaseMap::create_pinned(tid_map::map_path(&fs.pin_dir()), 2).unwrap();
    map.set(1, PhaseHint::new(Phase::Idle, None)).unwrap();
    map.set(2, PhaseHint::new(Phase::Idle, None)).unwrap();
    let err = map.set(3, PhaseHint::new(Phase::Idle, None)).unwrap_err();
    assert!(matches!(err, Error::Full { capacity: 2, .. }), "{err}");
    assert!(err.to_string().contains("--max-hints"));
}

#[test]
fn set_tid_refuses_a_dead_thread() {
    let fs = TempBpffs::new();
    let map = PhaseMap::create_pinned(tid_map::map_path(&fs.pin_dir()), 8).unwrap();
    let err = map
        .set_tid(dead_tid(), PhaseHint::new(Phase::Forward, None))
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchThread { .. }), "{err}");
    assert_eq!(err.errno(), libc::ESRCH);
    assert!(map.entries().unwrap().is_empty(), "nothing was written");
    map.set_tid(current_tid(), PhaseHint::new(Phase::Forward, None))
        .unwrap();
}

#[test]
fn a_missing_map_means_not_running() {
    let fs = TempBpffs::new();
    let err = PhaseMap::open(tid_map::map_path(&fs.pin_dir())).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("not running"), "{err}");
}

#[test]
fn a_missing_bpffs_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = PhaseMap::open(dir.path().join("scx_phase/phase_map")).unwrap_err();
    assert!(err.to_string().contains("bpffs is not mounted"), "{err}");
}

#[test]
fn foreign_maps_are_refused() {
    let fs = TempBpffs::new();
    let dir = fs.pin_dir();
    let path = tid_map::map_path(&dir);

    // Right name, wrong value size.
    pin_map(
        &path,
        libbpf_rs::libbpf_sys::BPF_MAP_TYPE_HASH,
        "phase_map",
        4,
        16,
    );
    let err = PhaseMap::open(&path).unwrap_err();
    assert!(matches!(err, Error::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("expected 4/8"), "{err}");
    std::fs::remove_file(&path).unwrap();

    // Right layout, another program's map.
    pin_map(
        &path,
        libbpf_rs::libbpf_sys::BPF_MAP_TYPE_HASH,
        "other_map",
        4,
        8,
    );
    let err = PhaseMap::open(&path).unwrap_err();
    assert!(err.to_string().contains("named 'other_map'"), "{err}");
    std::fs::remove_file(&path).unwrap();

    // An array.
    pin_map(
        &path,
        libbpf_rs::libbpf_sys::BPF_MAP_TYPE_ARRAY,
        "phase_map",
        4,
        8,
    );
    let err = PhaseMap::open(&path).unwrap_err();
    assert!(err.to_string().contains("not a hash map"), "{err}");
}

fn pin_map(path: &std::path::Path, ty: u32, name: &str, key: u32, val: u32) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let name = CString::new(name).unwrap();
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid arguments; the fd is closed right after pinning.
    unsafe {
        let fd =
            libbpf_rs::libbpf_sys::bpf_map_create(ty, name.as_ptr(), key, val, 4, std::ptr::null());
        assert!(fd >= 0, "bpf_map_create: {fd}");
        assert_eq!(libbpf_rs::libbpf_sys::bpf_obj_pin(fd, c.as_ptr()), 0);
        libc::close(fd);
    }
}
