//! scripts/install.sh: what it installs, and that a C program finds the
//! library through pkg-config alone.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{lib_dir, stderr, stdout};

fn install(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // What this cargo run built (the script's --no-build takes target/release).
    assert_eq!(
        lib_dir(),
        root.join("target/release"),
        "run with --release and the default target dir"
    );
    Command::new(root.join("scripts/install.sh"))
        .arg("--no-build")
        .args(args)
        .output()
        .expect("scripts/install.sh")
}

#[test]
fn a_c_program_builds_and_runs_from_pkg_config_alone() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr");
    let etc = dir.path().join("etc");
    let o = install(&[
        "--prefix",
        prefix.to_str().unwrap(),
        "--sysconfdir",
        etc.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "bin/scx_phase",
        "lib/libscx_phase.so",
        "include/scx_phase.h",
        "lib/pkgconfig/scx_phase.pc",
    ] {
        assert!(prefix.join(f).exists(), "{f} not installed");
    }
    let pc = |what: &str| {
        let o = Command::new("pkg-config")
            .args([what, "scx_phase"])
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
            .output()
            .expect("pkg-config");
        assert!(o.status.success(), "pkg-config {what}: {}", stderr(&o));
        stdout(&o)
    };
    let flags = format!("{} {}", pc("--cflags"), pc("--libs"));
    assert_eq!(
        pc("--modversion").trim(),
        env!("CARGO_PKG_VERSION"),
        "version in the .pc"
    );

    // A client that hints itself with no service there: the library's
    // answer for that, -ENOENT.
    let src = dir.path().join("client.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <scx_phase.h>\n\
         int main(void) { printf(\"%d\\n\", scx_phase_set(SCX_PHASE_BACKWARD)); return 0; }\n",
    )
    .unwrap();
    let exe = dir.path().join("client");
    let mut cc = Command::new("cc");
    cc.arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace());
    let o = cc.output().expect("cc");
    assert!(o.status.success(), "cc {flags}: {}", stderr(&o));
    // No LD_LIBRARY_PATH: the .pc's rpath finds the installed library.
    let o = Command::new(&exe)
        .env_remove("LD_LIBRARY_PATH")
        .env("SCX_PHASE_SOCKET", dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        (-libc::ENOENT).to_string(),
        "{}",
        stderr(&o)
    );
    let o = Command::new(prefix.join("bin/scx_phase"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(stdout(&o).starts_with("scx_phase "), "{}", stdout(&o));
}

#[test]
fn a_staged_install_names_its_prefix_not_the_stage() {
    let stage = tempfile::tempdir().unwrap();
    let o = install(&[
        "--prefix",
        "/opt/scx_phase",
        "--destdir",
        stage.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pc = std::fs::read_to_string(
        stage
            .path()
            .join("opt/scx_phase/lib/pkgconfig/scx_phase.pc"),
    )
    .expect("staged .pc");
    assert!(pc.contains("prefix=/opt/scx_phase\n"), "{pc}");
    assert!(!pc.contains(stage.path().to_str().unwrap()), "{pc}");
}

#[test]
fn the_unit_names_the_installed_binary_and_keeps_the_operators_flags() {
    let stage = tempfile::tempdir().unwrap();
    let args = [
        "--prefix",
        "/opt/scx_phase",
        "--destdir",
        stage.path().to_str().unwrap(),
    ];
    let o = install(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let unit_path = stage
        .path()
        .join("opt/scx_phase/lib/systemd/system/scx_phase.service");
    let unit = std::fs::read_to_string(&unit_path).expect("the unit");
    let lines: Vec<&str> = unit.lines().collect();
    for want in [
        "ExecStart=/opt/scx_phase/bin/scx_phase $SCX_PHASE_FLAGS",
        "EnvironmentFile=-/etc/default/scx_phase",
        "ConditionPathIsDirectory=/sys/kernel/sched_ext",
        "Restart=on-failure",
        "RuntimeDirectory=scx_phase",
        "Type=notify",
    ] {
        assert!(lines.contains(&want), "no {want:?} in\n{unit}");
    }
    assert!(!unit.contains("@bindir@"), "a placeholder left: {unit}");
    let env_file = stage.path().join("etc/default/scx_phase");
    assert!(
        std::fs::read_to_string(&env_file)
            .unwrap()
            .contains("SCX_PHASE_FLAGS=")
    );
    // An operator's flags survive a reinstall.
    std::fs::write(&env_file, "SCX_PHASE_FLAGS=\"--hint-group 4242\"\n").unwrap();
    let o = install(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "SCX_PHASE_FLAGS=\"--hint-group 4242\"\n"
    );

    let o = install(&[&args[..], &["--unit-dir", "/etc/systemd/system"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stage
            .path()
            .join("etc/systemd/system/scx_phase.service")
            .exists()
    );
}

#[test]
fn bad_options_are_one_line_errors() {
    for (args, want) in [
        (
            &["--prefix", "relative"][..],
            "--prefix must be an absolute path",
        ),
        (&["--frobnicate"][..], "unknown option --frobnicate"),
        (&["--prefix"][..], "--prefix needs a folder"),
        (
            &["--unit-dir", "lib/systemd"][..],
            "must be absolute paths, not lib/systemd",
        ),
    ] {
        let o = install(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
