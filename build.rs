// Compiles the BPF objects into skeletons and generates Rust bindings
// for the types that BPF and Rust share: the scheduler
// (src/bpf/main.bpf.c), the hint service's maps and iterator
// (src/bpf/service.bpf.c), which needs no sched_ext, and the benchmark's
// run-queue wait probe (src/bin/runq-waits/runq.bpf.c), which needs none
// either.
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
    scx_cargo::BpfBuilder::new()
        .expect("scx_cargo: BPF build environment")
        .enable_intf("src/bin/runq-waits/runq_intf.h", "runq_intf.rs")
        .enable_skel("src/bin/runq-waits/runq.bpf.c", "runq")
        .build()
        .expect("scx_cargo: BPF build of the wait probe");
}
