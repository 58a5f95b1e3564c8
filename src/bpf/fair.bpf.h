/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Weighted virtual time, in two domains: boosted tasks are ordered against
 * each other and fair tasks against each other, each by the CPU time they
 * used scaled by weight (nice x class, classes.bpf.h).
 *
 * A task joins a queue at its own vtime, kept within reach of that queue:
 * at most one slice of credit before its reference (so waking up never
 * lets it monopolise a CPU) and at most VTIME_LEAD_SLICES after it (so a
 * task that ran alone for long does not wait for newcomers to catch up).
 * The reference is the domain's clock, vtime_now, or the queue's head if
 * that is older. vtime_now moves only with tasks that ran in vtime order,
 * out of a queue: a task handed an idle CPU runs out of order, and an
 * idle-phase or nice 19 task alone on its CPU would otherwise drag the
 * clock far ahead of every queue, and every waking task behind them.
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

/* Per domain, the highest vtime a task started at out of a queue. */
static u64 vtime_now[NR_DOMAINS];

/* The largest lead over the reference a queued task keeps, in slices. */
#define VTIME_LEAD_SLICES 8

static __always_inline u32 domain_of(u32 cls)
{
	return class_boosted(cls) ? DOMAIN_BOOST : DOMAIN_FAIR;
}

static __always_inline bool vtime_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

/* The vtime @tctx's task joins queue @dsq at, in its current domain. */
static __always_inline u64 queue_vtime(struct task_ctx *tctx, u64 dsq)
{
	struct task_struct *head = __COMPAT_scx_bpf_dsq_peek(dsq);
	u32 d = domain_of(tctx->cls) & 1;
	u64 ref = vtime_now[d];

	if (head && vtime_before(head->scx.dsq_vtime, ref))
		ref = head->scx.dsq_vtime;
	if (vtime_before(tctx->vtime[d], ref - slice_ns))
		tctx->vtime[d] = ref - slice_ns;
	else if (vtime_before(ref + VTIME_LEAD_SLICES * slice_ns, tctx->vtime[d]))
		tctx->vtime[d] = ref + VTIME_LEAD_SLICES * slice_ns;
	tctx->queued = 1;
	return tctx->vtime[d];
}

static __always_inline void fair_running(struct task_ctx *tctx)
{
	u32 d = domain_of(tctx->cls) & 1;

	if (tctx->queued && vtime_before(vtime_now[d], tctx->vtime[d]))
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
