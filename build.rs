// Compiles the BPF scheduler into a skeleton and generates Rust bindings for
// the types that BPF and Rust share (src/bpf/intf.h).
fn main() {
    scx_cargo::BpfBuilder::new()
        .expect("scx_cargo: BPF build environment")
        .enable_intf("src/bpf/intf.h", "bpf_intf.rs")
        .enable_skel("src/bpf/main.bpf.c", "bpf")
        .build()
        .expect("scx_cargo: BPF build");
}
