/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Weighted virtual-time fairness: every task is ordered by the CPU time it
 * has used, scaled by its weight (nice). A task that slept may not bank more
 * than one slice of credit, so waking up never lets it monopolise a CPU.
 */
#ifndef __SCX_PHASE_FAIR_BPF_H
#define __SCX_PHASE_FAIR_BPF_H

/* Knob: time slice in ns (--slice-us). */
const volatile u64 slice_ns = 5ULL * 1000 * 1000;

/* The vtime of the most recently started task: the "now" of the queue. */
static u64 vtime_now;

static __always_inline bool vtime_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

/* The vtime @p is queued at, with its sleep credit capped. */
static __always_inline u64 fair_vtime(const struct task_struct *p)
{
	u64 vtime = p->scx.dsq_vtime;
	u64 floor = vtime_now - slice_ns;

	return vtime_before(vtime, floor) ? floor : vtime;
}

static __always_inline void fair_running(const struct task_struct *p)
{
	if (vtime_before(vtime_now, p->scx.dsq_vtime))
		vtime_now = p->scx.dsq_vtime;
}

/* Charge @used ns of CPU to @p, inversely to its weight (100 = nice 0). */
static __always_inline void fair_charge(struct task_struct *p, u64 used)
{
	u64 weight = p->scx.weight ? p->scx.weight : 1;

	scx_bpf_task_set_dsq_vtime(p, p->scx.dsq_vtime + used * 100 / weight);
}

static __always_inline void fair_enable(struct task_struct *p)
{
	scx_bpf_task_set_dsq_vtime(p, vtime_now);
}

#endif /* __SCX_PHASE_FAIR_BPF_H */
