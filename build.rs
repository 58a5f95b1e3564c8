// Compiles the two BPF objects into skeletons and generates Rust bindings
// for the types that BPF and Rust share (src/bpf/intf.h): the scheduler
// (src/bpf/main.bpf.c) and the hint service's maps and iterator
// (src/bpf/service.bpf.c), which needs no sched_ext.
fn main() {
    scx_cargo::BpfBuilder::new()
        .expect("scx_cargo: BPF build environment")
        .enable_intf("src/bpf/intf.h", "bpf_intf.rs")
        .enable_skel("src/bpf/main.bpf.c", "bpf")
        .build()
        .expect("scx_cargo: BPF build of the scheduler");
    scx_cargo::BpfBuilder::new()
        .expect("scx_cargo: BPF build environment")
        .enable_skel("src/bpf/service.bpf.c", "service")
        .build()
        .expect("scx_cargo: BPF build of the hint service");
}
