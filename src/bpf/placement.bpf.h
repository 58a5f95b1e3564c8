/* SPDX-License-Identifier: GPL-2.0 */
/*
 * CPU claims (the workload API), as placement:
 *   - a workload's threads run on its claimed CPUs first: an idle one on
 *     wake-up, else one running another's task of a class not above
 *     theirs (taken at once); they queue there, and spill only to a CPU
 *     that has nothing else to run (it steals them);
 *   - others never queue on a claimed CPU, and one running there yields
 *     at its next tick when the claimant's task waits: a CPU claimed
 *     without exclusivity lends itself only while the claimant has
 *     nothing to run there;
 *   - a CPU claimed exclusively takes no task of anyone else at all.
 * Tasks that may run only on claimed CPUs (per-CPU kernel threads, tasks
 * pinned there) are exempt: nothing starves. Others are placed with the
 * claimed CPUs taken out of their mask, never by changing their affinity.
 * The service writes the claims; the masks of claimed and exclusive CPUs
 * are rebuilt here whenever the service bumps claim_state.generation.
 */
#ifndef __SCX_PHASE_PLACEMENT_BPF_H
#define __SCX_PHASE_PLACEMENT_BPF_H

#include "intf.h"
#include "work.bpf.h"
#include "topology.bpf.h"
#include "task_ctx.bpf.h"
#include "claims.bpf.h"
#include "cpu_ctx.bpf.h"

/* CPUs claimed at all, and exclusively, in step with cpu_claims. */
private(CLAIMS) struct bpf_cpumask __kptr *claimed_mask;
private(CLAIMS) struct bpf_cpumask __kptr *exclusive_mask;
/* The claim_state generation the masks reflect, and whether they are empty. */
static u64 claims_applied;
static bool any_claimed, any_exclusive;

/*
 * Each workload's claimed CPUs as a cpumask, in step with cpu_claims, so
 * that an idle one is one kfunc. Sampling 4 of a claim's CPUs in turn
 * looked at 4 CPUs per wake-up and, on a 16-CPU claim with one idle CPU,
 * would miss it 3 times in 4 (by count, not measured). A mask is made the
 * first time its workload claims a CPU and kept for the id's next owner.
 */
struct claim_mask {
	struct bpf_cpumask __kptr *mask;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SCX_PHASE_MAX_WORKLOADS);
	__type(key, u32);
	__type(value, struct claim_mask);
} claim_masks SEC(".maps");

/* The workload whose claim mask holds each CPU's bit, or 0. */
static u32 mask_owner[SCX_PHASE_MAX_CPUS];

/* Set or clear @cpu in workload @wid's claim mask (made when first set). */
static __always_inline void claim_mask_put(u32 wid, s32 cpu, bool set)
{
	struct bpf_cpumask *mask;
	struct claim_mask *m;
	u32 key = wid;

	if (!wid || !(m = bpf_map_lookup_elem(&claim_masks, &key)))
		return;
	if (!m->mask && set) {
		if (!(mask = bpf_cpumask_create()))
			return;
		mask = bpf_kptr_xchg(&m->mask, mask);
		if (mask)
			bpf_cpumask_release(mask);
	}
	mask = m->mask;
	if (!mask)
		return;
	if (set)
		bpf_cpumask_set_cpu(cpu, mask);
	else
		bpf_cpumask_clear_cpu(cpu, mask);
}

/* Workload @wid's claimed CPUs, or NULL if it never claimed one. */
static __always_inline const struct cpumask *claim_cpumask(u32 wid)
{
	struct claim_mask *m;
	u32 key = wid;

	if (!wid || !(m = bpf_map_lookup_elem(&claim_masks, &key)) || !m->mask)
		return NULL;
	return cast_mask(m->mask);
}

static __always_inline s32 placement_init(void)
{
	struct bpf_cpumask *m = bpf_cpumask_create();

	if (!m)
		return -ENOMEM;
	m = bpf_kptr_xchg(&claimed_mask, m);
	if (m)
		bpf_cpumask_release(m);
	m = bpf_cpumask_create();
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

/* The workload that claims @cpu, or 0. */
static __always_inline u32 claimant(s32 cpu)
{
	struct cpu_claim *c = claim_of(cpu);

	return c ? c->wid : 0;
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
 * of ops.dispatch(). The loop over the CPUs runs once per change of the
 * claims, not per event: its work is counted apart (claims_sync).
 */
__noinline int placement_sync(void)
{
	struct bpf_cpumask *claimed, *excl;
	struct claim_state *st;
	struct work_scope w;
	u32 zero = 0, cpu;
	u64 gen;

	st = bpf_map_lookup_elem(&claim_state, &zero);
	if (!st)
		return 0;
	gen = st->generation;
	if (gen == claims_applied)
		return 0;
	claimed = claimed_mask;
	excl = exclusive_mask;
	if (!claimed || !excl)
		return 0;
	w = work_begin();
	bpf_for(cpu, 0, nr_cpus) {
		struct cpu_claim *c = claim_of(cpu);
		u32 wid = c ? c->wid : 0, *owner;

		work_cpu();
		owner = MEMBER_VPTR(mask_owner, [cpu]);
		if (owner && *owner != wid) {
			claim_mask_put(*owner, cpu, false);
			claim_mask_put(wid, cpu, true);
			*owner = wid;
		}
		if (c && c->wid)
			bpf_cpumask_set_cpu(cpu, claimed);
		else
			bpf_cpumask_clear_cpu(cpu, claimed);
		if (c && c->wid && c->exclusive)
			bpf_cpumask_set_cpu(cpu, excl);
		else
			bpf_cpumask_clear_cpu(cpu, excl);
	}
	any_claimed = !bpf_cpumask_empty(cast_mask(claimed));
	any_exclusive = !bpf_cpumask_empty(cast_mask(excl));
	claims_applied = gen;
	work_end(SCX_PHASE_CB_CLAIMS_SYNC, w);
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

/* Whether @p may run on some CPU nobody claims. */
static __always_inline bool runs_unclaimed(const struct task_struct *p)
{
	struct bpf_cpumask *mask = claimed_mask;

	if (!any_claimed || !mask)
		return true;
	return !bpf_cpumask_subset(p->cpus_ptr, cast_mask(mask));
}

/* Whether @p, of workload @wid, may be placed on @cpu. */
static __always_inline bool placeable(const struct task_struct *p, u32 wid, s32 cpu)
{
	u32 owner = exclusive_owner(cpu);

	return !owner || owner == wid || !runs_elsewhere(p);
}

/* Whether @p, of workload @wid, may queue on @cpu. */
static __always_inline bool queueable(const struct task_struct *p, u32 wid, s32 cpu)
{
	u32 owner = claimant(cpu);

	return !owner || owner == wid || !runs_unclaimed(p);
}

/* @p's CPUs less @less, in @tmp: p ^ (p & less). */
static __always_inline const struct cpumask *
cpus_less(const struct task_struct *p, struct bpf_cpumask *tmp, struct bpf_cpumask *less)
{
	bpf_cpumask_and(tmp, p->cpus_ptr, cast_mask(less));
	bpf_cpumask_xor(tmp, p->cpus_ptr, cast_mask(tmp));
	return cast_mask(tmp);
}

/*
 * The CPUs @p may be placed on when idle: its own, less those others
 * claim exclusively (computed in @tctx's scratch mask).
 */
static __always_inline const struct cpumask *
placeable_mask(const struct task_struct *p, struct task_ctx *tctx)
{
	struct bpf_cpumask *mask = exclusive_mask, *tmp = tctx->tmp_mask;

	if (!any_exclusive || !mask || !tmp || !runs_elsewhere(p))
		return p->cpus_ptr;
	return cpus_less(p, tmp, mask);
}

/*
 * The CPUs @p may queue on: its own, less all claimed ones (its
 * workload's own are tried before, see claimed_queue_cpu()); where that
 * leaves none, the placeable ones.
 */
static __always_inline const struct cpumask *
queue_mask(const struct task_struct *p, struct task_ctx *tctx)
{
	struct bpf_cpumask *mask = claimed_mask, *tmp = tctx->tmp_mask;

	if (!any_claimed || !mask || !tmp)
		return p->cpus_ptr;
	if (!runs_unclaimed(p))
		return placeable_mask(p, tctx);
	return cpus_less(p, tmp, mask);
}

static __always_inline struct workload_claim *claim_cpus(u32 wid)
{
	return wid ? bpf_map_lookup_elem(&workload_claims, &wid) : NULL;
}

/*
 * How many of a claim's CPUs one call looks at to choose where to queue
 * or which CPU to take: all of a claim of up to CLAIM_TRIES, else that
 * many taken in turn (claim_start()). A loop over the claim cost up to its
 * size (64) per wake-up. An idle claimed CPU is never sampled: it comes
 * from the claim's mask (claimed_idle_cpu()). For the rest, two choices
 * (and, to queue, the task's own CPU) balance queues nearly as well as
 * more (the power of two choices), at half the work: with 4, a claimant's
 * fair wake-up looked at 10 CPUs at 16 and 64 vCPUs (each sampled CPU
 * twice: its claim, then its turn), against 6 at 2 vCPUs.
 */
#define CLAIM_TRIES 2

/* Where in @wc this call starts looking, and how many it looks at (@n). */
static __always_inline u32 claim_start(const struct workload_claim *wc, u32 *n)
{
	struct cpu_ctx *c;
	u32 start;

	*n = wc->nr_cpus;
	if (*n <= CLAIM_TRIES || !(c = this_cpu_ctx()))
		return 0;
	start = c->claim_next % *n;
	c->claim_next = start + CLAIM_TRIES;
	*n = CLAIM_TRIES;
	return start;
}

/*
 * The @i-th CPU of claim @wc (cyclically), if @wid still claims it and @p
 * may run there; or -1. Callers loop from claim_start().
 */
static __always_inline s32 claimed_cpu(const struct workload_claim *wc, u32 i, u32 wid,
				       const struct task_struct *p)
{
	s32 cpu;

	work_cpu();
	/* Callers pass start + k, both below nr_cpus. */
	if (i >= wc->nr_cpus)
		i -= wc->nr_cpus;
	if (i >= SCX_PHASE_CLAIM_MAX_CPUS)
		return -1;
	/* The mask keeps the index bounded where the verifier loses track. */
	cpu = wc->cpus[i & (SCX_PHASE_CLAIM_MAX_CPUS - 1)];
	if (claimant(cpu) != wid || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
		return -1;
	return cpu;
}

/*
 * A CPU of @wid's claim that @p may use, running a task of another
 * workload whose class is not above @cls: the one to take; or -1.
 */
static __always_inline s32 claimed_cpu_to_take(const struct task_struct *p, u32 wid, u32 cls)
{
	struct workload_claim *wc = claim_cpus(wid);
	struct cpu_ctx *c;
	u32 i, start, n;

	if (!wc)
		return -1;
	start = claim_start(wc, &n);
	bpf_for(i, 0, n) {
		s32 cpu = claimed_cpu(wc, start + i, wid, p);

		if (cpu >= 0 && (c = cpu_ctx_of(cpu)) && c->cur_wid != wid && c->cur_class <= cls)
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
	struct task_struct *head = dsq_peek(dsq);

	return !head || task_placeable_on(head, cpu);
}

/*
 * Whether busy @cpu may take queued task @t from @from's queue: not a task
 * of the workload that claims @from to a CPU outside its claim.
 */
static __always_inline bool task_movable(struct task_struct *t, s32 from, s32 cpu)
{
	u32 owner = claimant(from);
	struct task_ctx *tctx;

	if (owner && owner != claimant(cpu) && (tctx = task_ctx(t)) && tctx->wid == owner)
		return false;
	return task_placeable_on(t, cpu);
}

/*
 * Whether @p, running on @cpu, should give it to the workload that claims
 * it: @p may run elsewhere, and a task of that workload of a class not
 * below @p's waits in @cpu's queue.
 */
static __always_inline bool claimant_waits(struct task_struct *p, struct task_ctx *tctx,
					   s32 cpu, u64 dsq)
{
	u32 owner = claimant(cpu);
	struct task_struct *head;
	struct task_ctx *hctx;

	if (!owner || owner == tctx->wid || !runs_unclaimed(p))
		return false;
	head = dsq_peek(dsq);
	return head && (hctx = task_ctx(head)) && hctx->wid == owner && hctx->cls >= tctx->cls;
}

/* This CPU's share of workload @wid's figures for @phase, or NULL for none. */
static __always_inline struct workload_phase_stats *workload_stats_of(u32 wid, u32 phase)
{
	u32 key = wid * SCX_PHASE_NR_SLOTS + (phase < SCX_PHASE_NR_SLOTS ? phase : SCX_PHASE_NONE);

	return wid ? bpf_map_lookup_elem(&workload_stats, &key) : NULL;
}

/* Account @ns of run time in @phase (@boosted or not) to workload @wid. */
static __always_inline void count_workload_runtime(u32 wid, u32 phase, u64 ns, bool boosted)
{
	struct workload_phase_stats *w = workload_stats_of(wid, phase);

	if (!w)
		return;
	w->runtime_ns += ns;
	if (boosted)
		w->boosted_ns += ns;
}

/* Account a wait of @ns for a CPU in @phase to workload @wid. */
static __always_inline void count_workload_wait(u32 wid, u32 phase, u64 ns)
{
	struct workload_phase_stats *w = workload_stats_of(wid, phase);

	if (!w)
		return;
	w->wait_ns += ns;
	w->waits++;
}

#endif /* __SCX_PHASE_PLACEMENT_BPF_H */
