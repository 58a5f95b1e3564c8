/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Preemption: a boosted task that wakes when no CPU is idle takes the CPU
 * of the lowest-class task running (one below its own class, on a CPU it
 * may use, that still has boost budget) instead of waiting for a slice to
 * end.
 */
#ifndef __SCX_PHASE_PREEMPT_BPF_H
#define __SCX_PHASE_PREEMPT_BPF_H

/* The CPU to take for a task of class @cls, or -1. */
static __always_inline s32 preemption_victim(const struct task_struct *p,
					     u32 cls, u64 now)
{
	u32 best_cls = cls;
	s32 best = -1;
	u32 cpu;

	bpf_for(cpu, 0, nr_cpus) {
		struct cpu_ctx *c;

		if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		c = cpu_ctx_of(cpu);
		if (!c || c->cur_class >= best_cls || !budget_left_remote(c, now))
			continue;
		best = cpu;
		best_cls = c->cur_class;
		if (best_cls == CLASS_IDLE)
			break;
	}
	return best;
}

#endif /* __SCX_PHASE_PREEMPT_BPF_H */
