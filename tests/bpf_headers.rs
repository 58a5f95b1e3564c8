//! Every BPF piece (src/bpf/*.bpf.h) compiles on its own, after only the
//! sched_ext common header: each includes what it uses, so none leans on
//! the order main.bpf.c includes them in. The compiler and its flags are
//! the ones the build used (scx_cargo prints them into the build
//! script's output); libbpf's headers are the ones libbpf-sys built.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The clang and the flags of the BPF build, from the build script's output.
fn build_clang() -> (String, Vec<String>) {
    let output = Path::new(env!("OUT_DIR")).with_file_name("output");
    let text = std::fs::read_to_string(&output)
        .unwrap_or_else(|e| panic!("{}: {e}; run cargo build first", output.display()));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("scx_utils:clang="))
        .unwrap_or_else(|| panic!("{}: no scx_utils:clang= line", output.display()));
    // ClangInfo { clang: "clang-19", ... } ["-g", "-O2", ...]
    let quoted = |s: &str| -> Vec<String> {
        // The odd pieces between quotes are the quoted strings.
        s.split('"')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, q)| q.to_owned())
            .collect()
    };
    let (info, flags) = line.split_once(" [").expect("a flag list");
    let clang = quoted(info.split("clang: ").nth(1).expect("a clang"))
        .into_iter()
        .next()
        .expect("a clang name");
    (clang, quoted(flags))
}

/// libbpf's headers (bpf/bpf_helpers.h), as libbpf-sys built them.
fn libbpf_include() -> PathBuf {
    let build = Path::new(env!("OUT_DIR")).ancestors().nth(2).unwrap();
    std::fs::read_dir(build)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("out/include")))
        .find(|inc| inc.join("bpf/bpf_helpers.h").is_file())
        .unwrap_or_else(|| panic!("no libbpf-sys headers under {}", build.display()))
}

#[test]
fn every_bpf_piece_includes_what_it_uses() {
    let (clang, flags) = build_clang();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bpf");
    let mut pieces: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.h"))
        .collect();
    pieces.sort();
    assert!(
        pieces.len() >= 10,
        "{} pieces in {}",
        pieces.len(),
        src.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for piece in &pieces {
        let name = piece.file_name().unwrap().to_string_lossy().into_owned();
        let unit = dir.path().join(name.replace(".bpf.h", ".c"));
        std::fs::write(
            &unit,
            format!("#include <scx/common.bpf.h>\n#include \"{name}\"\n"),
        )
        .unwrap();
        let out = Command::new(&clang)
            .args(["-target", "bpf", "-fsyntax-only", "-Werror"])
            .args(&flags)
            .arg(format!("-I{}", libbpf_include().display()))
            .arg(format!("-I{}", src.display()))
            .arg(&unit)
            .output()
            .unwrap_or_else(|e| panic!("{clang}: {e}"));
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
            failed.push(format!("{name}: {first}"));
        }
    }
    assert!(
        failed.is_empty(),
        "pieces that do not compile alone:\n{}",
        failed.join("\n")
    );
}
