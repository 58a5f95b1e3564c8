/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Weighted virtual time, in two domains: boosted tasks are ordered against
 * each other and fair tasks against each other, each by the CPU time they
 * used scaled by weight (nice x class, classes.bpf.h). A task that slept
 * may bank at most one slice of credit, so waking up never lets it
 * monopolise a CPU.
 */
#ifndef __SCX_PHASE_FAIR_BPF_H
#define __SCX_PHASE_FAIR_BPF_H

enum vtime_domain {
	DOMAIN_FAIR,
	DOMAIN_BOOST,
	NR_DOMAINS,
};

/* Knob: time slice in ns (--slice-us). */
const volatile u64 slice_ns = 5ULL * 1000 * 1000;

/* Per domain, the vtime of the most recently started task: its "now". */
static u64 vtime_now[NR_DOMAINS];

static __always_inline u32 domain_of(u32 cls)
{
	return class_boosted(cls) ? DOMAIN_BOOST : DOMAIN_FAIR;
}

static __always_inline bool vtime_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

/* The vtime @tctx's task queues at in its current domain, credit capped. */
static __always_inline u64 queue_vtime(struct task_ctx *tctx)
{
	u32 d = domain_of(tctx->cls);
	u64 floor = vtime_now[d & 1] - slice_ns;

	if (vtime_before(tctx->vtime[d & 1], floor))
		tctx->vtime[d & 1] = floor;
	return tctx->vtime[d & 1];
}

static __always_inline void fair_running(struct task_ctx *tctx)
{
	u32 d = domain_of(tctx->cls) & 1;

	if (vtime_before(vtime_now[d], tctx->vtime[d]))
		vtime_now[d] = tctx->vtime[d];
}

/* Charge @used ns of CPU to the domain @tctx's task runs in. */
static __always_inline void fair_charge(struct task_struct *p,
					struct task_ctx *tctx, u64 used)
{
	u32 d = domain_of(tctx->cls) & 1;

	tctx->vtime[d] += class_charge(tctx->cls, used, p->scx.weight);
}

static __always_inline void fair_enable(struct task_ctx *tctx)
{
	tctx->vtime[DOMAIN_FAIR] = vtime_now[DOMAIN_FAIR];
	tctx->vtime[DOMAIN_BOOST] = vtime_now[DOMAIN_BOOST];
}

#endif /* __SCX_PHASE_FAIR_BPF_H */
