/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Host topology, filled in by the loader from hwloc before the program is
 * loaded (read-only after that).
 */
#ifndef __SCX_PHASE_TOPOLOGY_BPF_H
#define __SCX_PHASE_TOPOLOGY_BPF_H

#include "intf.h"

const volatile u32 nr_cpus = 1;
const volatile u32 nr_nodes = 1;
/* NUMA node of each CPU id. */
const volatile s32 cpu_node[SCX_PHASE_MAX_CPUS];
/* Online CPUs of each node: a node without any cannot host a loader. */
const volatile u32 node_nr_cpus[SCX_PHASE_MAX_NODES];
/*
 * The online CPUs, node by node: node n's are node_nr_cpus[n] entries
 * from node_first[n]. Lets a CPU visit its node's CPUs in turn without a
 * loop over the host.
 */
const volatile u16 node_cpus[SCX_PHASE_MAX_CPUS];
const volatile u32 node_first[SCX_PHASE_MAX_NODES];
/* NUMA node of each PCI GPU, in hwloc's order. */
const volatile u32 nr_gpus;
const volatile s32 gpu_node[SCX_PHASE_MAX_GPUS];

/* MEMBER_VPTR keeps the bounds check where the verifier can see it. */
static __always_inline s32 node_of_cpu(s32 cpu)
{
	const volatile s32 *node = MEMBER_VPTR(cpu_node, [cpu]);

	return node ? *node : 0;
}

/* The @i-th (cyclically) online CPU of @node, or -1. */
static __always_inline s32 node_cpu(s32 node, u32 i)
{
	const volatile u32 *n = MEMBER_VPTR(node_nr_cpus, [node]);
	const volatile u32 *first = MEMBER_VPTR(node_first, [node]);
	const volatile u16 *cpu;
	u32 idx;

	if (!n || !first || !*n)
		return -1;
	idx = *first + i % *n;
	cpu = MEMBER_VPTR(node_cpus, [idx]);
	return cpu ? *cpu : -1;
}

/* Each node's CPUs as a cpumask, for the kfuncs that take one. */
struct node_mask {
	struct bpf_cpumask __kptr *mask;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct node_mask);
	__uint(max_entries, SCX_PHASE_MAX_NODES);
} node_masks SEC(".maps");

static __always_inline const struct cpumask *node_cpumask(s32 node)
{
	struct node_mask *m;
	u32 key = node;

	m = bpf_map_lookup_elem(&node_masks, &key);
	return m && m->mask ? cast_mask(m->mask) : NULL;
}

/* From the sleepable ops.init: once, so no event loops over the CPUs. */
static __always_inline s32 node_masks_init(void)
{
	struct bpf_cpumask *mask;
	struct node_mask *m;
	u32 n, i, key;
	s32 cpu;

	bpf_for(n, 0, nr_nodes) {
		key = n;
		if (!(m = bpf_map_lookup_elem(&node_masks, &key)))
			return -ENOENT;
		if (!(mask = bpf_cpumask_create()))
			return -ENOMEM;
		bpf_for(i, 0, node_nr_cpus[n & (SCX_PHASE_MAX_NODES - 1)]) {
			cpu = node_cpu(n, i);
			if (cpu >= 0)
				bpf_cpumask_set_cpu(cpu, mask);
		}
		mask = bpf_kptr_xchg(&m->mask, mask);
		if (mask)
			bpf_cpumask_release(mask);
	}
	return 0;
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
