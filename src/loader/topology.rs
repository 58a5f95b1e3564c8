//! Host topology from hwloc: NUMA nodes, their CPUs, and the node of each
//! PCI GPU. Feeds the scheduler's read-only globals.

use std::fmt;

use anyhow::{Context, Result, bail};
use hwlocality::Topology;
use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::topology::builder::TypeFilter;
use scx_phase::bpf_intf;

#[derive(Clone, Debug)]
pub struct Node {
    pub id: usize,
    pub cpus: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct Gpu {
    pub pci_addr: String,
    pub vendor: u16,
    pub device: u16,
    pub node: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct HostTopology {
    pub nodes: Vec<Node>,
    pub gpus: Vec<Gpu>,
}

/// PCI classes that are compute devices: display (0x03xx: VGA, 3D) and
/// processing accelerators (0x12xx).
fn is_gpu_class(class: u16) -> bool {
    matches!(class >> 8, 0x03 | 0x12)
}

impl HostTopology {
    pub fn discover() -> Result<Self> {
        let topo = Topology::builder()
            .with_type_filter(ObjectType::PCIDevice, TypeFilter::KeepImportant)
            .context("hwloc: cannot keep PCI devices")?
            .build()
            .context("hwloc: cannot read the topology")?;

        let mut nodes = Vec::new();
        for obj in topo.objects_with_type(ObjectType::NUMANode) {
            let id = obj.os_index().context("hwloc: NUMA node without an id")?;
            let cpus = obj
                .cpuset()
                .map(|set| set.iter_set().map(usize::from).collect())
                .unwrap_or_default();
            nodes.push(Node { id, cpus });
        }
        nodes.sort_by_key(|n| n.id);
        if nodes.is_empty() {
            bail!("hwloc found no NUMA node");
        }

        let mut gpus = Vec::new();
        for obj in topo.objects_with_type(ObjectType::PCIDevice) {
            let Some(ObjectAttributes::PCIDevice(pci)) = obj.attributes() else {
                continue;
            };
            if !is_gpu_class(pci.class_id()) {
                continue;
            }
            let node = obj
                .first_non_io_ancestor()
                .and_then(|a| a.nodeset())
                .and_then(|set| set.first_set())
                .map(usize::from);
            gpus.push(Gpu {
                pci_addr: format!(
                    "{:04x}:{:02x}:{:02x}.{:x}",
                    pci.domain(),
                    pci.bus_id(),
                    pci.bus_device(),
                    pci.function()
                ),
                vendor: pci.vendor_id(),
                device: pci.device_id(),
                node,
            });
        }

        let t = HostTopology { nodes, gpus };
        t.check_limits()?;
        Ok(t)
    }

    fn check_limits(&self) -> Result<()> {
        let max_cpus = bpf_intf::scx_phase_limits_SCX_PHASE_MAX_CPUS as usize;
        let max_nodes = bpf_intf::scx_phase_limits_SCX_PHASE_MAX_NODES as usize;
        if self.nr_cpu_ids() > max_cpus {
            bail!(
                "{} CPUs: scx_phase supports at most {max_cpus}",
                self.nr_cpu_ids()
            );
        }
        if let Some(n) = self.nodes.iter().find(|n| n.id >= max_nodes) {
            bail!(
                "NUMA node {}: scx_phase supports node ids below {max_nodes}",
                n.id
            );
        }
        Ok(())
    }

    /// One more than the highest CPU id.
    pub fn nr_cpu_ids(&self) -> usize {
        self.nodes
            .iter()
            .flat_map(|n| n.cpus.iter())
            .max()
            .map_or(0, |m| m + 1)
    }

    /// The node of each CPU id; CPUs hwloc did not place are on node 0.
    pub fn cpu_nodes(&self) -> Vec<usize> {
        let mut v = vec![0; self.nr_cpu_ids()];
        for n in &self.nodes {
            for &c in &n.cpus {
                v[c] = n.id;
            }
        }
        v
    }
}

/// "0-3,8,10-11"
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

impl fmt::Display for HostTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "NUMA nodes: {}", self.nodes.len())?;
        for n in &self.nodes {
            writeln!(f, "  node {}: CPUs {}", n.id, cpu_list(&n.cpus))?;
        }
        if self.gpus.is_empty() {
            writeln!(f, "GPUs: none")?;
        } else {
            writeln!(f, "GPUs: {}", self.gpus.len())?;
            for g in &self.gpus {
                let node = g.node.map_or("unknown".into(), |n| n.to_string());
                writeln!(
                    f,
                    "  {} [{:04x}:{:04x}]: node {node}",
                    g.pci_addr, g.vendor, g.device
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_compress_ranges() {
        assert_eq!(cpu_list(&[]), "none");
        assert_eq!(cpu_list(&[0]), "0");
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    }

    #[test]
    fn gpu_classes() {
        assert!(is_gpu_class(0x0300));
        assert!(is_gpu_class(0x0302));
        assert!(is_gpu_class(0x1200));
        assert!(!is_gpu_class(0x0200)); // network
        assert!(!is_gpu_class(0x0106)); // SATA
    }

    #[test]
    fn this_host_has_a_topology() {
        let t = HostTopology::discover().expect("hwloc works on any host");
        assert!(!t.nodes.is_empty());
        let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let placed: usize = t.nodes.iter().map(|n| n.cpus.len()).sum();
        assert!(placed >= ncpus, "{placed} CPUs placed, {ncpus} online");
        assert_eq!(t.cpu_nodes().len(), t.nr_cpu_ids());
    }
}
