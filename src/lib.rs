pub mod bpf_intf;
