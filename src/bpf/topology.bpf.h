/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Host topology, filled in by the loader from hwloc before the program is
 * loaded (read-only after that).
 */
#ifndef __SCX_PHASE_TOPOLOGY_BPF_H
#define __SCX_PHASE_TOPOLOGY_BPF_H

const volatile u32 nr_cpus = 1;
const volatile u32 nr_nodes = 1;
/* NUMA node of each CPU id. */
const volatile s32 cpu_node[SCX_PHASE_MAX_CPUS];
/* NUMA node of each PCI GPU, in hwloc's order; feeds data-loader placement. */
const volatile u32 nr_gpus;
const volatile s32 gpu_node[SCX_PHASE_MAX_GPUS];

static __always_inline s32 node_of_cpu(s32 cpu)
{
	if (cpu < 0 || cpu >= SCX_PHASE_MAX_CPUS)
		return 0;
	return cpu_node[cpu];
}

#endif /* __SCX_PHASE_TOPOLOGY_BPF_H */
