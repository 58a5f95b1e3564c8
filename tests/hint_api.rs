//! The process-wide Rust API (`scx_phase::hint`) against a real hint
//! service. One test function: the API talks to one service per process.

mod common;

use std::time::Duration;

use common::{HintService, dead_tid};
use scx_phase::Phase;
use scx_phase::hint::{self, Error};
use serde_json::json;

#[test]
fn the_process_wide_api_sets_clears_restores_and_follows_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("not-yet.sock");
    // SAFETY: set before any thread reads the environment.
    unsafe { std::env::set_var(hint::protocol::SOCKET_ENV, &socket) };

    // No service: a clear error, remembered for a second, never a panic.
    let err = hint::set_phase(Phase::Forward).unwrap_err();
    assert!(matches!(err, Error::NotRunning { .. }), "{err}");
    assert_eq!(err.errno(), libc::ENOENT);
    assert!(
        err.to_string().contains("scx_phase is not running"),
        "{err}"
    );

    let svc = HintService::start();
    std::os::unix::fs::symlink(svc.socket(), &socket).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let me = std::process::id();
    let tid = hint::current_tid() as u32;
    hint::set_phase(Phase::Forward).unwrap();
    let e = svc
        .hint_of(tid)
        .expect("the hint reaches the scheduler's view");
    assert_eq!(
        (e["phase"].clone(), e["source"].clone()),
        (json!("forward"), json!("thread"))
    );
    assert_eq!(e["pid"], json!(me));

    {
        let _g = hint::enter(Phase::Checkpoint).unwrap();
        assert_eq!(
            hint::current_phase().unwrap().unwrap().phase(),
            Some(Phase::Checkpoint)
        );
        {
            let _inner = hint::enter_on(Phase::DataLoading, Some(0)).unwrap();
            let h = hint::current_phase().unwrap().unwrap();
            assert_eq!((h.phase, h.numa_node), (1, 0));
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
    assert_eq!(hint::current_phase().unwrap(), None);
    {
        let _g = hint::enter(Phase::Backward).unwrap();
    }
    assert_eq!(
        hint::current_phase().unwrap(),
        None,
        "a guard over no hint leaves none"
    );

    // The process-wide phase reaches threads with nothing of their own.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        tx.send(hint::current_tid() as u32).unwrap();
        let _ = stop_rx.recv();
    });
    let wtid = rx.recv().unwrap();
    hint::set_process_phase(Phase::Backward, None).unwrap();
    let e = svc.hint_of(wtid).expect("the worker follows the process");
    assert_eq!(
        (e["phase"].clone(), e["source"].clone()),
        (json!("backward"), json!("process"))
    );
    hint::clear_process_phase().unwrap();
    stop_tx.send(()).unwrap();
    worker.join().unwrap();

    // Threads each bind a slot of their own.
    let other = std::thread::spawn(|| {
        hint::set_phase(Phase::Optimizer).unwrap();
        let t = hint::current_tid() as u32;
        std::thread::sleep(Duration::from_millis(600));
        t
    });
    std::thread::sleep(Duration::from_millis(300));
    let e = svc.dump();
    let other = other.join().unwrap();
    assert_ne!(other, tid);
    assert!(
        e.iter()
            .any(|x| x["tid"] == json!(other) && x["phase"] == "optimizer"),
        "{e:?}"
    );

    // One-shot hints of other threads: a dead one is an error.
    let err = hint::set_thread_phase(dead_tid() as i32, Phase::Idle, None).unwrap_err();
    assert!(matches!(err, Error::NoSuchThread { .. }), "{err}");
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    hint::set_thread_phase(sleeper.id() as i32, Phase::Idle, None).unwrap();
    let e = svc.hint_of(sleeper.id()).unwrap();
    assert_eq!(
        (e["phase"].clone(), e["source"].clone()),
        (json!("idle"), json!("tid map"))
    );
    hint::clear_thread_phase(sleeper.id() as i32).unwrap();
    assert!(svc.unhinted(sleeper.id()));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
