//! Attach, detach on SIGINT and SIGKILL, and refusing a second scheduler.

use std::time::Duration;

use crate::support::*;

#[test]
fn attaches_under_its_own_name() {
    let loader = Loader::start(&[]);
    assert_eq!(state(), "enabled");
    assert!(ops().starts_with("scx_phase"), "ops is {:?}", ops());
    println!(
        "MEASURED attach: {:.0} ms from exec to sched_ext 'enabled' (ops {})",
        ms(loader.attach_time),
        ops()
    );
}

#[test]
fn sigint_detaches_within_a_second_and_exits_0() {
    let mut loader = Loader::start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    loader.signal(libc::SIGINT);
    let detach = wait_state("disabled", Duration::from_secs(1));
    let status = loader.wait(Duration::from_secs(5));
    let log = loader.log();
    let detach = detach.unwrap_or_else(|| panic!("still {} 1 s after SIGINT: {log}", state()));
    assert_eq!(status.code(), Some(0), "{log}");
    // The kernel's exit reason is printed.
    assert!(log.contains("EXIT: unregistered from user space"), "{log}");
    println!("MEASURED detach after SIGINT: {:.1} ms", ms(detach));
}

#[test]
fn sigterm_also_detaches_cleanly() {
    let mut loader = Loader::start(&[]);
    loader.signal(libc::SIGTERM);
    assert!(wait_state("disabled", Duration::from_secs(1)).is_some());
    assert_eq!(loader.wait(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn sigkill_detaches_within_a_second_and_kills_nothing_else() {
    // Some work that must survive: sleepers and CPU spinners.
    let mut others = vec![sleeper(), sleeper()];
    for _ in 0..2 {
        others.push(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("spinner"),
        );
    }
    let mut loader = Loader::start(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<(i32, String)> = user_pids()
        .into_iter()
        .filter(|&p| p != loader.pid())
        .map(|p| (p, comm(p)))
        .collect();

    loader.signal(libc::SIGKILL);
    let detach = wait_state("disabled", Duration::from_secs(1));
    let status = loader.wait(Duration::from_secs(5));
    let detach = detach.unwrap_or_else(|| panic!("still {} 1 s after SIGKILL", state()));
    assert_eq!(status.code(), None, "killed by a signal");

    // Give a lost task time to show up as dead.
    std::thread::sleep(Duration::from_millis(300));
    let dead: Vec<&(i32, String)> = before.iter().filter(|(p, _)| !alive(*p)).collect();
    assert!(
        dead.is_empty(),
        "processes gone after SIGKILL of the loader: {dead:?}"
    );
    for c in &mut others {
        assert!(c.try_wait().unwrap().is_none(), "a test child died");
        let _ = c.kill();
        let _ = c.wait();
    }
    println!(
        "MEASURED detach after SIGKILL: {:.1} ms; {} other processes all alive",
        ms(detach),
        before.len()
    );
}

#[test]
fn a_second_scheduler_is_refused_and_the_first_keeps_running() {
    let loader = Loader::start(&[]);
    let o = scx_phase(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("already attached"), "{err}");
    assert!(
        err.contains("scx_phase"),
        "names the attached scheduler: {err}"
    );
    assert_eq!(state(), "enabled");
    drop(loader);
}
