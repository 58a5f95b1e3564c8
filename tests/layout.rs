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
        refused_hints,
        process_ns,
        wait_hist,
        fair_steals,
        fair_rebalances,
        claim_passes,
        rcu_readers,
        tick_resolves,
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

/// The repeated copies of the hint ABI agree with the one source (intf.h,
/// through bindgen, and src/hint/): the C header, the Python package, the
/// test tool that speaks the protocol by hand, and the library's exports.
mod copies {
    use std::collections::BTreeSet;
    use std::path::Path;

    use scx_phase::Phase;
    use scx_phase::hint::protocol;

    fn read(rel: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
    }

    /// `NAME = VALUE` pairs of a C enum or Python class body.
    fn assignments(text: &str, prefix: &str) -> Vec<(String, i64)> {
        text.lines()
            .filter_map(|l| {
                let l = l.trim().trim_end_matches(',');
                let (name, value) = l.split_once('=')?;
                let name = name.trim();
                name.starts_with(prefix)
                    .then(|| Some((name.to_string(), value.trim().parse().ok()?)))?
            })
            .collect()
    }

    fn upper(p: Phase) -> String {
        p.name().to_uppercase()
    }

    #[test]
    fn the_c_header_numbers_the_phases_as_rust_does() {
        let h = read("include/scx_phase.h");
        let got = assignments(&h, "SCX_PHASE_");
        let want: Vec<(String, i64)> = Phase::ALL
            .iter()
            .map(|p| (format!("SCX_PHASE_{}", upper(*p)), *p as i64))
            .collect();
        assert_eq!(got, want);
        assert!(h.contains("#define SCX_PHASE_NODE_ANY (-1)"));
    }

    #[test]
    fn the_python_package_numbers_the_phases_as_rust_does() {
        let py = read("python/scx_phase/__init__.py");
        let body = &py[py.find("class Phase(enum.IntEnum):").unwrap()..];
        let got = assignments(&body[..body.find("\n\n").unwrap()], "");
        let want: Vec<(String, i64)> = Phase::ALL.iter().map(|p| (upper(*p), *p as i64)).collect();
        assert_eq!(got, want);
    }

    fn exports() -> BTreeSet<String> {
        let lib = Path::new(env!("CARGO_BIN_EXE_scx_phase"))
            .parent()
            .unwrap()
            .join("libscx_phase.so");
        let out = std::process::Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(&lib)
            .output()
            .expect("nm");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|s| s.starts_with("scx_phase_"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_header_declares_what_the_library_exports_and_python_calls_it() {
        let h = read("include/scx_phase.h");
        // Without comments, every `scx_phase_name(` is a declaration.
        let mut code = String::new();
        let mut rest = h.as_str();
        while let Some(open) = rest.find("/*") {
            code.push_str(&rest[..open]);
            rest = rest[open..].split_once("*/").map_or("", |(_, r)| r);
        }
        code.push_str(rest);
        let declared: BTreeSet<String> = code
            .match_indices("scx_phase_")
            .filter_map(|(i, _)| {
                let name: String = code[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                code[i + name.len()..].starts_with('(').then_some(name)
            })
            .collect();
        assert_eq!(declared, exports(), "header vs libscx_phase.so");
        let py = read("python/scx_phase/__init__.py");
        for f in py
            .split('"')
            .filter(|w| w.starts_with("scx_phase_") && !w.contains(' '))
        {
            assert!(
                declared.contains(f),
                "Python calls {f}, which the header lacks"
            );
        }
    }

    /// A struct's name, its fields' offsets and its size.
    type Layout<'a> = (&'a str, &'a [(&'a str, usize)], usize);

    /// "struct field offset" lines, then "struct size N" for each struct.
    fn layout_lines(fields: &[Layout]) -> String {
        let mut out = String::new();
        for (st, fs, size) in fields {
            for (f, off) in *fs {
                out.push_str(&format!("{st} {f} {off}\n"));
            }
            out.push_str(&format!("{st} size {size}\n"));
        }
        out
    }

    #[test]
    fn the_workload_structs_lay_out_alike_in_c_rust_and_python() {
        use scx_phase::hint::capi::{
            scx_phase_pressure as P, scx_phase_stats as S, scx_phase_workload_req as R,
        };
        use std::mem::{offset_of, size_of};
        let req: &[(&str, usize)] = &[
            ("cpus", offset_of!(R, cpus)),
            ("node", offset_of!(R, node)),
            ("exclusive", offset_of!(R, exclusive)),
            ("spread", offset_of!(R, spread)),
            ("locked_memory", offset_of!(R, locked_memory)),
        ];
        let pressure: &[(&str, usize)] = &[
            ("full", offset_of!(P, full)),
            ("stall_us", offset_of!(P, stall_us)),
            ("window_us", offset_of!(P, window_us)),
            ("some_avg10", offset_of!(P, some_avg10)),
            ("full_avg10", offset_of!(P, full_avg10)),
            ("figures", offset_of!(P, figures)),
        ];
        let stats: &[(&str, usize)] = &[
            ("runtime_ns", offset_of!(S, runtime_ns)),
            ("boosted_ns", offset_of!(S, boosted_ns)),
            ("wait_ns", offset_of!(S, wait_ns)),
            ("waits", offset_of!(S, waits)),
        ];
        let want = layout_lines(&[
            ("scx_phase_workload_req", req, size_of::<R>()),
            ("scx_phase_pressure", pressure, size_of::<P>()),
            ("scx_phase_stats", stats, size_of::<S>()),
        ]);

        // The C header, as a compiler lays it out.
        let dir = tempfile::tempdir().unwrap();
        let mut c = String::from(
            "#include <stddef.h>\n#include <stdio.h>\n#include \"scx_phase.h\"\nint main(void) {\n",
        );
        let mut py = String::from("import ctypes, scx_phase as s\n");
        for (st, pyname, fs) in [
            ("scx_phase_workload_req", "_WorkloadReq", req),
            ("scx_phase_pressure", "_Pressure", pressure),
            ("scx_phase_stats", "_Stats", stats),
        ] {
            for (f, _) in fs {
                c.push_str(&format!(
                    "printf(\"{st} {f} %zu\\n\", offsetof(struct {st}, {f}));\n"
                ));
                py.push_str(&format!("print('{st} {f}', s.{pyname}.{f}.offset)\n"));
            }
            c.push_str(&format!(
                "printf(\"{st} size %zu\\n\", sizeof(struct {st}));\n"
            ));
            py.push_str(&format!("print('{st} size', ctypes.sizeof(s.{pyname}))\n"));
        }
        c.push_str("return 0; }\n");
        let src = dir.path().join("layout.c");
        let exe = dir.path().join("layout");
        std::fs::write(&src, c).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let st = std::process::Command::new("gcc")
            .arg("-I")
            .arg(root.join("include"))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
            .expect("gcc");
        assert!(st.success(), "gcc failed on the header");
        let got = std::process::Command::new(&exe).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            want,
            "C header vs capi.rs"
        );

        // The Python package's ctypes copies.
        let got = std::process::Command::new("python3")
            .args(["-c", &py])
            .env("PYTHONPATH", root.join("python"))
            .output()
            .expect("python3");
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            want,
            "Python vs capi.rs: {}",
            String::from_utf8_lossy(&got.stderr)
        );

        // Where a claim goes: the same two special nodes everywhere.
        let h = read("include/scx_phase.h");
        assert!(h.contains("#define SCX_PHASE_NODE_GPU (-2)"));
        let py = read("python/scx_phase/__init__.py");
        assert!(py.contains("NODE_ANY, NODE_GPU = -1, -2"));
        // The figures' slots: the phases, then un-hinted.
        let nr = scx_phase::stats::NR_SLOTS;
        assert!(h.contains(&format!("#define SCX_PHASE_NR_SLOTS {nr}")));
        assert_eq!(
            size_of::<S>(),
            size_of::<scx_phase::bpf_intf::workload_phase_stats>()
        );
        let slots = std::process::Command::new("python3")
            .args(["-c", "import scx_phase as s; print(' '.join(s.SLOTS))"])
            .env("PYTHONPATH", root.join("python"))
            .output()
            .expect("python3");
        let want: Vec<&str> = (0..nr).map(scx_phase::stats::slot_name).collect();
        assert_eq!(
            String::from_utf8_lossy(&slots.stdout).trim(),
            want.join(" ")
        );
    }

    #[test]
    fn the_raw_protocol_tool_speaks_protocol_rs() {
        let py = read("tests/tools/hint_raw.py");
        let value = |name: &str| -> String {
            py.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("{name} not in hint_raw.py"))
                .trim()
                .to_string()
        };
        assert_eq!(value("VERSION"), protocol::VERSION.to_string());
        assert_eq!(
            value("OP_HELLO, OP_THREAD, OP_SET, OP_CLEAR"),
            format!(
                "{}, {}, {}, {}",
                protocol::Op::Hello as u16,
                protocol::Op::Thread as u16,
                protocol::Op::Set as u16,
                protocol::Op::Clear as u16
            )
        );
        assert_eq!(
            value("OP_CLAIM, OP_LOCK_MEMORY, OP_WATCH_PRESSURE"),
            format!(
                "{}, {}, {}",
                protocol::Op::Claim as u16,
                protocol::Op::LockMemory as u16,
                protocol::Op::WatchPressure as u16
            )
        );
        assert_eq!(
            value("OP_STATS, OP_UNLOCK_MEMORY"),
            format!(
                "{}, {}",
                protocol::Op::Stats as u16,
                protocol::Op::UnlockMemory as u16
            )
        );
        assert_eq!(value("NR_SLOTS"), scx_phase::stats::NR_SLOTS.to_string());
        assert_eq!(
            value("CLAIM_EXCLUSIVE, CLAIM_SPREAD"),
            format!("{}, {}", protocol::CLAIM_EXCLUSIVE, protocol::CLAIM_SPREAD)
        );
        // struct formats: a request is 16 bytes, a reply header 28.
        assert_eq!(value("REQUEST"), "\"<HHIiI\"");
        assert_eq!(protocol::REQUEST_LEN, 2 + 2 + 4 + 4 + 4);
        assert_eq!(value("REPLY_HEADER"), "\"<HHiIIIII\"");
        assert_eq!(
            value("MAX_REPLY"),
            format!("28 + {}", protocol::MAX_MESSAGE)
        );
        assert_eq!(protocol::MAX_REPLY_LEN, 28 + protocol::MAX_MESSAGE);
        assert_eq!(value("SLOT_BYTES"), "8");
    }

    #[test]
    fn a_slot_is_a_phase_hint_and_unset_is_the_abis() {
        use scx_phase::bpf_intf::{SCX_PHASE_HINT_UNSET, phase_hint};
        use scx_phase::hint::client::{UNSET_WORD, unword, word};
        assert_eq!(std::mem::size_of::<phase_hint>(), 8);
        assert_eq!(unword(UNSET_WORD).0, SCX_PHASE_HINT_UNSET);
        assert_eq!(unword(word(3, -1)), (3, -1));
        assert_eq!(unword(word(1, 7)), (1, 7));
        // Little-endian: the phase is the first field of struct phase_hint.
        let w = word(5, 2).to_le_bytes();
        assert_eq!(u32::from_le_bytes(w[..4].try_into().unwrap()), 5);
        assert_eq!(i32::from_le_bytes(w[4..].try_into().unwrap()), 2);
    }
}
