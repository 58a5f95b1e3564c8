//! Tests that need a sched_ext kernel; scripts/test.sh runs them in the VM,
//! one at a time (`--test-threads=1`): only one scheduler can attach.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod claims;
mod clients;
mod containers;
mod fair;
mod hints;
mod kubernetes;
mod lifecycle;
mod memory;
mod metrics;
mod mlflow;
mod numa;
mod overload;
mod policy;
mod service;
mod shim;
mod smoke;
mod support;
mod systemd;
mod topology;
mod work;
mod workload;
