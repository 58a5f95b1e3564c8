/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Per-CPU state: what runs there (for preemption) and how much of the CPU
 * boosted classes used in the current window (for the budget).
 */
#ifndef __SCX_PHASE_CPU_CTX_BPF_H
#define __SCX_PHASE_CPU_CTX_BPF_H

#include "intf.h"
#include "topology.bpf.h"

/* cur_class of a CPU that runs nothing of ours. */
#define CLASS_NONE 0xff

struct cpu_ctx {
	u64 window_start;	/* start of the current budget window */
	u64 boosted_ns;		/* boosted run time in this window */
	u64 slice_end;		/* when the running task's slice ends */
	u32 cur_class;		/* class of the running task, or CLASS_NONE */
	u32 balance_next;	/* next CPU whose fair queue this one checks */
	u32 cur_wid;		/* workload of the running task, or 0 */
	u32 steal_hint;		/* 1 + the CPU that kicked this one to steal
				 * from its queue, or 0 */
	u32 steal_next;		/* next of its node's CPUs it steals from */
	u32 steal_far;		/* next of other nodes' CPUs it steals from */
	u32 claim_next;		/* where in a claim it looks first */
	u32 boost_hint;		/* 1 + the node whose boosted task kicked it */
	u32 boost_next;		/* next other node whose boosted queue it checks */
	u32 _pad;
	struct bpf_cpumask __kptr *tmp_mask;	/* scratch (numa.bpf.h) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct cpu_ctx);
	__uint(max_entries, 1);
} cpu_ctx_stor SEC(".maps");

/*
 * Every possible CPU has its entry: a failed lookup is a bug (a CPU id
 * out of range), which ends the scheduler with the id.
 */
static __always_inline struct cpu_ctx *this_cpu_ctx(void)
{
	u32 zero = 0;
	struct cpu_ctx *c = bpf_map_lookup_elem(&cpu_ctx_stor, &zero);

	if (!c)
		scx_bpf_error("no CPU context on CPU %d", bpf_get_smp_processor_id());
	return c;
}

static __always_inline struct cpu_ctx *cpu_ctx_of(s32 cpu)
{
	u32 zero = 0;
	struct cpu_ctx *c = bpf_map_lookup_percpu_elem(&cpu_ctx_stor, &zero, cpu);

	if (!c)
		scx_bpf_error("no CPU context for CPU %d", cpu);
	return c;
}

/* Each CPU's scratch mask, from the sleepable ops.init. */
static __always_inline s32 cpu_ctx_init(void)
{
	struct bpf_cpumask *m;
	struct cpu_ctx *c;
	u32 cpu;

	bpf_for(cpu, 0, nr_cpus) {
		if (!(c = cpu_ctx_of(cpu)))
			return -ENOENT;
		if (!(m = bpf_cpumask_create()))
			return -ENOMEM;
		m = bpf_kptr_xchg(&c->tmp_mask, m);
		if (m)
			bpf_cpumask_release(m);
	}
	return 0;
}

#endif /* __SCX_PHASE_CPU_CTX_BPF_H */
