//! The libbpf-rs skeleton of `src/bpf/main.bpf.c`, generated at build time.
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bpf_skel.rs"));
