/* SPDX-License-Identifier: GPL-2.0 */
/*
 * CPU claims (the workload API), as placement:
 *   - a workload's threads run on its claimed CPUs first: an idle one on
 *     wake-up, else one running a task of a lower class than theirs that
 *     is not the workload's (taken at once), and they queue there;
 *   - a CPU claimed exclusively takes no task of anyone else, unless that
 *     task may run nowhere else (per-CPU kernel threads, tasks pinned to
 *     claimed CPUs): nothing starves. Others are placed with the claimed
 *     CPUs taken out of their mask, never by changing their affinity;
 *     those running there when the claim starts leave at their next tick.
 * The service writes the claims; the mask of exclusive CPUs is rebuilt
 * here whenever the service bumps claim_state.generation.
 */
#ifndef __SCX_PHASE_PLACEMENT_BPF_H
#define __SCX_PHASE_PLACEMENT_BPF_H

/* CPUs claimed exclusively, in step with cpu_claims. */
private(CLAIMS) struct bpf_cpumask __kptr *exclusive_mask;
/* The claim_state generation the mask reflects, and whether it is empty. */
static u64 claims_applied;
static bool any_exclusive;

static __always_inline s32 placement_init(void)
{
	struct bpf_cpumask *m = bpf_cpumask_create();

	if (!m)
		return -ENOMEM;
	m = bpf_kptr_xchg(&exclusive_mask, m);
	if (m)
		bpf_cpumask_release(m);
	return 0;
}

static __always_inline struct cpu_claim *claim_of(s32 cpu)
{
	u32 key = cpu;

	return bpf_map_lookup_elem(&cpu_claims, &key);
}

/* The workload that claims @cpu exclusively, or 0. */
static __always_inline u32 exclusive_owner(s32 cpu)
{
	struct cpu_claim *c = claim_of(cpu);

	return c && c->exclusive ? c->wid : 0;
}

/*
 * Rebuild the exclusive mask if the service changed the claims. A global
 * function, so that the verifier checks its loop once, not in every path
 * of ops.dispatch().
 */
__noinline int placement_sync(void)
{
	struct bpf_cpumask *mask;
	struct claim_state *st;
	u32 zero = 0, cpu;
	u64 gen;

	st = bpf_map_lookup_elem(&claim_state, &zero);
	if (!st)
		return 0;
	gen = st->generation;
	if (gen == claims_applied)
		return 0;
	mask = exclusive_mask;
	if (!mask)
		return 0;
	bpf_for(cpu, 0, nr_cpus) {
		if (exclusive_owner(cpu))
			bpf_cpumask_set_cpu(cpu, mask);
		else
			bpf_cpumask_clear_cpu(cpu, mask);
	}
	any_exclusive = !bpf_cpumask_empty(cast_mask(mask));
	claims_applied = gen;
	return 0;
}

/* Whether @p may run on some CPU nobody claims exclusively. */
static __always_inline bool runs_elsewhere(const struct task_struct *p)
{
	struct bpf_cpumask *mask = exclusive_mask;

	if (!any_exclusive || !mask)
		return true;
	return !bpf_cpumask_subset(p->cpus_ptr, cast_mask(mask));
}

/* Whether @p, of workload @wid, may be placed on @cpu. */
static __always_inline bool placeable(const struct task_struct *p, u32 wid, s32 cpu)
{
	u32 owner = exclusive_owner(cpu);

	return !owner || owner == wid || !runs_elsewhere(p);
}

/*
 * The CPUs @p may be placed on: its own, less those others claim
 * exclusively (computed in @tctx's scratch mask).
 */
static __always_inline const struct cpumask *
placeable_mask(const struct task_struct *p, struct task_ctx *tctx)
{
	struct bpf_cpumask *mask = exclusive_mask, *tmp = tctx->tmp_mask;

	if (!any_exclusive || !mask || !tmp || !runs_elsewhere(p))
		return p->cpus_ptr;
	/* p's CPUs minus the exclusive ones: p ^ (p & exclusive). */
	bpf_cpumask_and(tmp, p->cpus_ptr, cast_mask(mask));
	bpf_cpumask_xor(tmp, p->cpus_ptr, cast_mask(tmp));
	return cast_mask(tmp);
}

static __always_inline struct workload_claim *claim_cpus(u32 wid)
{
	return wid ? bpf_map_lookup_elem(&workload_claims, &wid) : NULL;
}

/* An idle CPU of @wid's claim that @p may use, claimed; or -1. */
static __always_inline s32 claimed_idle_cpu(const struct task_struct *p, u32 wid)
{
	struct workload_claim *wc = claim_cpus(wid);
	struct cpu_claim *c;
	u32 i, n;

	if (!wc)
		return -1;
	n = wc->nr_cpus;
	bpf_for(i, 0, n) {
		s32 cpu;

		if (i >= SCX_PHASE_CLAIM_MAX_CPUS)
			break;
		cpu = wc->cpus[i];
		c = claim_of(cpu);
		if (c && c->wid == wid && bpf_cpumask_test_cpu(cpu, p->cpus_ptr) &&
		    scx_bpf_test_and_clear_cpu_idle(cpu))
			return cpu;
	}
	return -1;
}

/*
 * A CPU of @wid's claim that @p may use, running a task of another
 * workload whose class is not above @cls: the one to take; or -1.
 */
static __always_inline s32 claimed_cpu_to_take(const struct task_struct *p, u32 wid, u32 cls)
{
	struct workload_claim *wc = claim_cpus(wid);
	struct cpu_ctx *c;
	u32 i, n;

	if (!wc)
		return -1;
	n = wc->nr_cpus;
	bpf_for(i, 0, n) {
		s32 cpu;

		if (i >= SCX_PHASE_CLAIM_MAX_CPUS)
			break;
		cpu = wc->cpus[i];
		c = cpu_ctx_of(cpu);
		if (c && c->cur_wid != wid && c->cur_class <= cls &&
		    bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			return cpu;
	}
	return -1;
}

/* Whether queued task @t may be taken by @cpu. */
static __always_inline bool task_placeable_on(struct task_struct *t, s32 cpu)
{
	u32 owner = exclusive_owner(cpu);
	struct task_ctx *tctx;

	if (!owner)
		return true;
	tctx = task_ctx(t);
	return (tctx && tctx->wid == owner) || !runs_elsewhere(t);
}

/* Whether the task at the head of @dsq (if any) may be taken by @cpu. */
static __always_inline bool head_placeable(u64 dsq, s32 cpu)
{
	struct task_struct *head = __COMPAT_scx_bpf_dsq_peek(dsq);

	return !head || task_placeable_on(head, cpu);
}

/* Account @ns of run time in @phase to workload @wid. */
static __always_inline void count_workload_runtime(u32 wid, u32 phase, u64 ns)
{
	u32 key = wid * SCX_PHASE_NR_SLOTS + (phase < SCX_PHASE_NR_SLOTS ? phase : SCX_PHASE_NONE);
	u64 *v;

	if (!wid)
		return;
	v = bpf_map_lookup_elem(&workload_runtime, &key);
	if (v)
		__sync_fetch_and_add(v, ns);
}

#endif /* __SCX_PHASE_PLACEMENT_BPF_H */
