//! The loader's topology (from hwloc) is the kernel's.

use std::collections::BTreeMap;

use crate::support::*;

/// node id -> CPU list, as sysfs says.
fn sysfs_nodes() -> BTreeMap<u32, String> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir("/sys/devices/system/node").expect("sysfs node dir") {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_prefix("node").and_then(|n| n.parse().ok()) {
            let cpus = std::fs::read_to_string(format!("/sys/devices/system/node/{name}/cpulist"))
                .unwrap()
                .trim()
                .to_string();
            m.insert(id, cpus);
        }
    }
    m
}

#[test]
fn topology_matches_sysfs() {
    require_sched_ext();
    let o = scx_phase(&["topology"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let nodes = sysfs_nodes();
    assert!(
        out.contains(&format!("NUMA nodes: {}\n", nodes.len())),
        "{out}"
    );
    for (id, cpus) in &nodes {
        assert!(
            out.contains(&format!("node {id}: CPUs {cpus}\n")),
            "node {id} ({cpus}) in {out}"
        );
    }
    println!("MEASURED topology in the VM:\n{out}");
}

#[test]
fn the_loader_reports_every_node() {
    let loader = Loader::start(&[]);
    let n = sysfs_nodes().len();
    assert!(
        loader.log().contains(&format!("{n} NUMA node(s)")),
        "{}",
        loader.log()
    );
}
