/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Preemption: a boosted task that wakes when no CPU is idle takes the CPU
 * of the lowest-class task running (one below its own class, on a CPU it
 * may use, that still has boost budget) instead of waiting for a slice to
 * end.
 */
#ifndef __SCX_PHASE_PREEMPT_BPF_H
#define __SCX_PHASE_PREEMPT_BPF_H

#include "intf.h"
#include "work.bpf.h"
#include "topology.bpf.h"
#include "cpu_ctx.bpf.h"
#include "classes.bpf.h"
#include "budget.bpf.h"
#include "placement.bpf.h"

/* Whether @cpu runs something of class below @cls and may be taken. */
static __always_inline bool preemptible(const struct task_struct *p, u32 wid, s32 cpu,
					u32 cls, u64 now, u32 *cur)
{
	struct cpu_ctx *c;

	work_cpu();
	if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr) || !placeable(p, wid, cpu))
		return false;
	c = cpu_ctx_of(cpu);
	if (!c || c->cur_class >= cls || !budget_left_remote(c, now))
		return false;
	*cur = c->cur_class;
	return true;
}

/*
 * Other CPUs a waking boosted task looks at for one to take. A sample, not
 * the host: a scan cost up to the host's size per wake-up, twice (select
 * and enqueue). A miss costs at most a tick: a CPU running a lower class
 * yields at its next tick while boosted work waits (ops.tick). With this
 * CPU, the sample covers every CPU of a host of up to 3.
 */
#define PREEMPT_SAMPLES 2

/*
 * The CPU to take for a task of class @cls, or -1: of this CPU and
 * PREEMPT_SAMPLES others it may use (taken in turn), one running the
 * lowest class, preferring this one (the waker's, usually where the task
 * slept), which needs no IPI.
 */
static __always_inline s32 preemption_victim(const struct task_struct *p, u32 wid,
					     u32 cls, u64 now)
{
	s32 here = bpf_get_smp_processor_id(), best = -1, cpu;
	u32 best_cls = cls, cur, i;

	if (preemptible(p, wid, here, cls, now, &cur)) {
		if (cur <= CLASS_LOADER)
			return here;
		best = here;
		best_cls = cur;
	}
	bpf_for(i, 0, PREEMPT_SAMPLES) {
		cpu = bpf_cpumask_any_distribute(p->cpus_ptr);
		if (cpu < 0 || cpu >= nr_cpus || cpu == here ||
		    !preemptible(p, wid, cpu, best_cls, now, &cur))
			continue;
		best = cpu;
		best_cls = cur;
		if (best_cls == CLASS_IDLE)
			break;
	}
	return best;
}

#endif /* __SCX_PHASE_PREEMPT_BPF_H */
