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
/* Online CPUs of each node: a node without any cannot host a loader. */
const volatile u32 node_nr_cpus[SCX_PHASE_MAX_NODES];
/* NUMA node of each PCI GPU, in hwloc's order. */
const volatile u32 nr_gpus;
const volatile s32 gpu_node[SCX_PHASE_MAX_GPUS];

/* MEMBER_VPTR keeps the bounds check where the verifier can see it. */
static __always_inline s32 node_of_cpu(s32 cpu)
{
	const volatile s32 *node = MEMBER_VPTR(cpu_node, [cpu]);

	return node ? *node : 0;
}

static __always_inline bool node_usable(s32 node)
{
	const volatile u32 *n;

	if (node < 0 || node >= nr_nodes)
		return false;
	n = MEMBER_VPTR(node_nr_cpus, [node]);
	return n && *n > 0;
}

#endif /* __SCX_PHASE_TOPOLOGY_BPF_H */
