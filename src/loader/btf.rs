//! Reading the running kernel's BTF: which kernel functions its sched_ext
//! has, and whether pahole encoded them soundly. Only the few questions
//! the loader asks; libbpf parses.

use std::ffi::{CStr, CString};

use libbpf_rs::libbpf_sys::{
    self, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_FUNC, BTF_KIND_FUNC_PROTO, btf, btf_param,
    btf_type,
};

/// A BTF object libbpf parsed (or, in tests, one built in memory).
pub(crate) struct Btf {
    raw: *mut btf,
}

fn kind(t: &btf_type) -> u32 {
    (t.info >> 24) & 0x1f
}

fn vlen(t: &btf_type) -> u32 {
    t.info & 0xffff
}

impl Btf {
    /// The running kernel's; None if it cannot be read.
    pub(crate) fn kernel() -> Option<Btf> {
        // SAFETY: no arguments; NULL (errno set) on failure.
        let raw = unsafe { libbpf_sys::btf__load_vmlinux_btf() };
        (!raw.is_null()).then_some(Btf { raw })
    }

    fn types(&self) -> impl Iterator<Item = &btf_type> {
        // SAFETY: a live BTF; ids 1..cnt are valid, and each type lives as
        // long as the BTF, which outlives the borrow of self.
        let cnt = unsafe { libbpf_sys::btf__type_cnt(self.raw) };
        (1..cnt).filter_map(move |id| unsafe { libbpf_sys::btf__type_by_id(self.raw, id).as_ref() })
    }

    fn name(&self, off: u32) -> &str {
        // SAFETY: a live BTF; NULL for an offset out of range.
        let p = unsafe { libbpf_sys::btf__name_by_offset(self.raw, off) };
        if p.is_null() {
            return "";
        }
        // SAFETY: a NUL-terminated string in the BTF's string section.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
    }

    fn params(&self, proto: &btf_type) -> &[btf_param] {
        // SAFETY: a FUNC_PROTO's vlen parameters follow it in memory.
        unsafe {
            std::slice::from_raw_parts(
                (proto as *const btf_type).add(1) as *const btf_param,
                vlen(proto) as usize,
            )
        }
    }

    fn find(&self, name: &str, kind: u32) -> Option<&btf_type> {
        let c = CString::new(name).ok()?;
        // SAFETY: a live BTF and a C string; a negative id if absent.
        let id = unsafe { libbpf_sys::btf__find_by_name_kind(self.raw, c.as_ptr(), kind) };
        if id < 0 {
            return None;
        }
        // SAFETY: an id the BTF just returned.
        unsafe { libbpf_sys::btf__type_by_id(self.raw, id as u32).as_ref() }
    }

    pub(crate) fn has_func(&self, name: &str) -> bool {
        self.find(name, BTF_KIND_FUNC).is_some()
    }

    /// sched_ext kfuncs whose public prototype still has the implicit
    /// `aux` argument the verifier fills in. pahole before 1.26 does not
    /// split such a kfunc into a public prototype and an `_impl` one
    /// (kernel commit 9edd04c4189e raised the minimum to 1.26), so a BPF
    /// program's declaration never matches and libbpf refuses to load it
    /// ("func_proto incompatible with vmlinux").
    pub(crate) fn malformed_kfuncs(&self) -> Vec<String> {
        self.types()
            .filter(|t| kind(t) == BTF_KIND_FUNC)
            .filter_map(|t| {
                let name = self.name(t.name_off);
                let scx = name.starts_with("scx_bpf_") || name.starts_with("__scx_bpf_");
                if !scx || name.ends_with("_impl") {
                    return None;
                }
                // SAFETY: a FUNC's type is its FUNC_PROTO, in this BTF.
                let proto = unsafe {
                    libbpf_sys::btf__type_by_id(self.raw, t.__bindgen_anon_1.type_).as_ref()?
                };
                (kind(proto) == BTF_KIND_FUNC_PROTO
                    && self
                        .params(proto)
                        .iter()
                        .any(|p| self.name(p.name_off) == "aux"))
                .then(|| name.to_string())
            })
            .collect()
    }

    /// Whether the BTF stores sched_ext's 64-bit enums as 32-bit values
    /// (pahole before 1.24, which had no ENUM64, or pahole run with
    /// `--skip_encoding_btf_enum64`, as Container-Optimized OS does).
    /// `scx_dsq_id_flags` holds the built-in queue ids, whose top bit is
    /// set: it is 64-bit on every sched_ext kernel.
    pub(crate) fn truncates_enum64(&self) -> bool {
        self.find("scx_dsq_id_flags", BTF_KIND_ENUM)
            .is_some_and(|t| unsafe { t.__bindgen_anon_1.size } == 8)
            && self.find("scx_dsq_id_flags", BTF_KIND_ENUM64).is_none()
    }
}

impl Drop for Btf {
    fn drop(&mut self) {
        // SAFETY: the pointer libbpf gave us, freed once.
        unsafe { libbpf_sys::btf__free(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF built in memory, as pahole would have encoded a kernel.
    struct Builder(Btf);

    impl Builder {
        fn new() -> Builder {
            // SAFETY: no arguments.
            let raw = unsafe { libbpf_sys::btf__new_empty() };
            assert!(!raw.is_null());
            Builder(Btf { raw })
        }

        fn c(s: &str) -> CString {
            CString::new(s).unwrap()
        }

        fn int(&mut self) -> i32 {
            // SAFETY: a live BTF being built, C strings.
            unsafe { libbpf_sys::btf__add_int(self.0.raw, Self::c("int").as_ptr(), 4, 1) }
        }

        /// `int name(params...)`, each parameter an int, global.
        fn func(mut self, name: &str, params: &[&str]) -> Builder {
            let int = self.int();
            // SAFETY: a live BTF being built, C strings, ids it returned.
            unsafe {
                let proto = libbpf_sys::btf__add_func_proto(self.0.raw, int);
                assert!(proto > 0);
                for p in params {
                    assert_eq!(
                        libbpf_sys::btf__add_func_param(self.0.raw, Self::c(p).as_ptr(), int),
                        0
                    );
                }
                let f = libbpf_sys::btf__add_func(self.0.raw, Self::c(name).as_ptr(), 1, proto);
                assert!(f > 0);
            }
            self
        }

        /// `scx_dsq_id_flags`, as ENUM64 or as an 8-byte ENUM of low halves.
        fn dsq_id_flags(self, enum64: bool) -> Builder {
            let name = Self::c("scx_dsq_id_flags");
            let local = Self::c("SCX_DSQ_LOCAL");
            // SAFETY: a live BTF being built and C strings.
            unsafe {
                if enum64 {
                    assert!(libbpf_sys::btf__add_enum64(self.0.raw, name.as_ptr(), 8, false) > 0);
                    assert_eq!(
                        libbpf_sys::btf__add_enum64_value(self.0.raw, local.as_ptr(), 1 << 63 | 2),
                        0
                    );
                } else {
                    assert!(libbpf_sys::btf__add_enum(self.0.raw, name.as_ptr(), 8) > 0);
                    assert_eq!(
                        libbpf_sys::btf__add_enum_value(self.0.raw, local.as_ptr(), 2),
                        0
                    );
                }
            }
            self
        }

        fn build(self) -> Btf {
            self.0
        }
    }

    #[test]
    fn a_prototype_that_kept_aux_is_malformed_unless_it_is_the_impl() {
        let btf = Builder::new()
            .func("scx_bpf_dsq_insert", &["p", "dsq_id", "slice", "enq_flags"])
            .func("scx_bpf_kick_cpu", &["cpu", "flags", "aux"])
            .func("scx_bpf_create_dsq", &["dsq_id", "node"])
            .func("scx_bpf_create_dsq_impl", &["dsq_id", "node", "aux"])
            .func("bpf_other_kfunc", &["x", "aux"])
            .build();
        assert_eq!(btf.malformed_kfuncs(), ["scx_bpf_kick_cpu"]);
        assert!(btf.has_func("scx_bpf_dsq_insert"));
        assert!(!btf.has_func("scx_bpf_dispatch"));
    }

    #[test]
    fn an_eight_byte_enum_without_enum64_is_truncated() {
        assert!(
            Builder::new()
                .dsq_id_flags(false)
                .build()
                .truncates_enum64()
        );
        assert!(!Builder::new().dsq_id_flags(true).build().truncates_enum64());
        // No sched_ext at all: nothing to say about its enums.
        assert!(!Builder::new().build().truncates_enum64());
    }
}
