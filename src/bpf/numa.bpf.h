/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NUMA-local data loaders: a data_loading task waits in the queue of its
 * node and is only ever dispatched by that node's CPUs, or placed directly
 * on an idle CPU of that node. With --numa-spill-us, a loader that has
 * waited that long may be taken by another node's CPU.
 */
#ifndef __SCX_PHASE_NUMA_BPF_H
#define __SCX_PHASE_NUMA_BPF_H

#include "intf.h"
#include "work.bpf.h"
#include "topology.bpf.h"
#include "task_ctx.bpf.h"
#include "cpu_ctx.bpf.h"
#include "placement.bpf.h"

/* Per-node idle cpumasks are on (SCX_OPS_BUILTIN_IDLE_PER_NODE). */
const volatile bool numa_idle;
/* Knob (--numa-spill-us): 0 keeps loaders on their node, always. */
const volatile u64 numa_spill_ns;

#define LOADER_DSQ(node) (SCX_PHASE_LOADER_DSQ_BASE + (u64)(node))

static __always_inline bool is_loader(const struct task_ctx *tctx)
{
	return tctx->phase == SCX_PHASE_DATA_LOADING && tctx->node >= 0;
}

static __always_inline bool cpu_in_node(s32 cpu, s32 node)
{
	return node_of_cpu(cpu) == node;
}

/*
 * Claim an idle CPU of @node in @allowed, or -EBUSY. Only the per-node
 * kfunc is safe once per-node idle tracking is on (6.15+, more than one
 * node). Without it, the global kfunc on @allowed and the node's mask,
 * intersected in this CPU's scratch mask: no loop over the CPUs (one
 * tested them one by one, up to the host's size per wake-up). A wake-up
 * in a hard interrupt can reuse the mask while the spill timer (a
 * softirq) holds it; the timer then kicks a CPU off the node it meant,
 * which only costs that CPU a look at its queues.
 */
static __always_inline s32 idle_cpu_in_node(const struct cpumask *allowed, s32 node)
{
	const struct cpumask *nm;
	struct bpf_cpumask *tmp;
	struct cpu_ctx *c;

	if (numa_idle)
		return __COMPAT_scx_bpf_pick_idle_cpu_node(allowed, node,
							   SCX_PICK_IDLE_IN_NODE);
	if (nr_nodes <= 1)
		return scx_bpf_pick_idle_cpu(allowed, 0);
	nm = node_cpumask(node);
	c = this_cpu_ctx();
	tmp = c ? c->tmp_mask : NULL;
	if (!nm || !tmp)
		return -EBUSY;
	bpf_cpumask_and(tmp, allowed, nm);
	return scx_bpf_pick_idle_cpu(cast_mask(tmp), 0);
}

/* Claim an idle CPU in @allowed, nearest @prev_cpu's node first; or -EBUSY. */
static __always_inline s32 idle_cpu_near(const struct cpumask *allowed, s32 prev_cpu)
{
	if (numa_idle)
		return __COMPAT_scx_bpf_pick_idle_cpu_node(allowed, node_of_cpu(prev_cpu), 0);
	return scx_bpf_pick_idle_cpu(allowed, 0);
}

/*
 * An idle CPU of @wid's claim that @p may use, claimed, @prefer first (the
 * CPU the task last ran on: its cache), then its node's; or -1. Kfuncs on
 * the claim's mask (placement.bpf.h): no CPU is looked at one by one.
 */
static __always_inline s32 claimed_idle_cpu(const struct task_struct *p, u32 wid, s32 prefer)
{
	const struct cpumask *mine = claim_cpumask(wid);
	struct bpf_cpumask *tmp;
	struct cpu_ctx *c;

	if (!mine)
		return -1;
	if (bpf_cpumask_test_cpu(prefer, mine) && bpf_cpumask_test_cpu(prefer, p->cpus_ptr) &&
	    scx_bpf_test_and_clear_cpu_idle(prefer))
		return prefer;
	if (p->nr_cpus_allowed >= nr_cpus)
		return idle_cpu_near(mine, prefer);
	/* This CPU's scratch, as idle_cpu_in_node() uses it: one after the other. */
	c = this_cpu_ctx();
	if (!c || !(tmp = c->tmp_mask))
		return -1;
	bpf_cpumask_and(tmp, mine, p->cpus_ptr);
	return idle_cpu_near(cast_mask(tmp), prefer);
}

/*
 * Spill needs a CPU of another node to look for work; an idle one never
 * would. So while spilling is on, a timer wakes an idle CPU of another node
 * whenever a loader queue's head has waited past the threshold.
 */
struct spill_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct spill_timer);
} spill_timer_map SEC(".maps");

/*
 * Kick an idle CPU of another node if node @n's loader queue head has
 * waited past the threshold. The head is looked at inside an explicit RCU
 * read-side section: before 7.1 the peek walks a DSQ iterator, which the
 * verifier allows only in one, and up to at least 6.12 it counts a timer
 * callback armed by the sleepable ops.init as sleepable, so outside one
 * (load failed with EPROTO, "expected an RCU CS", on 6.12.118).
 */
static __always_inline void spill_kick_for(u32 n, u64 now)
{
	struct task_struct *head;
	struct task_ctx *tctx;
	u32 m;

	bpf_rcu_read_lock();
	head = dsq_peek(LOADER_DSQ(n));
	if (!head || !(tctx = task_ctx(head)) ||
	    now - tctx->enqueued_at < numa_spill_ns)
		goto out;
	bpf_for(m, 0, nr_nodes) {
		s32 cpu;

		if (m == n)
			continue;
		cpu = idle_cpu_in_node(head->cpus_ptr, m);
		if (cpu >= 0) {
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
			break;
		}
	}
out:
	bpf_rcu_read_unlock();
}

static int spill_timer_fn(void *map, int *key, struct bpf_timer *timer)
{
	struct work_scope w = work_begin();
	u64 now = scx_bpf_now();
	u32 n;

	bpf_for(n, 0, nr_nodes)
		spill_kick_for(n, now);
	work_end(SCX_PHASE_CB_SPILL_TIMER, w);
	bpf_timer_start(timer, numa_spill_ns, 0);
	return 0;
}

static __always_inline s32 spill_timer_init(void)
{
	struct spill_timer *t;
	u32 zero = 0;
	s32 err;

	if (!numa_spill_ns || nr_nodes < 2)
		return 0;
	t = bpf_map_lookup_elem(&spill_timer_map, &zero);
	if (!t)
		return -ENOENT;
	if ((err = bpf_timer_init(&t->timer, &spill_timer_map, CLOCK_MONOTONIC)) ||
	    (err = bpf_timer_set_callback(&t->timer, spill_timer_fn)))
		return err;
	return bpf_timer_start(&t->timer, numa_spill_ns, 0);
}

/*
 * On @cpu of node @node: take a loader of another node that has waited
 * longer than numa_spill_ns, if any (and if @cpu may take it).
 */
static __always_inline bool spill_loader(s32 cpu, s32 node, u64 now)
{
	struct task_struct *head;
	struct task_ctx *tctx;
	u32 n;

	if (!numa_spill_ns)
		return false;
	bpf_for(n, 0, nr_nodes) {
		if ((s32)n == node)
			continue;
		head = dsq_peek(LOADER_DSQ(n));
		if (!head)
			continue;
		tctx = task_ctx(head);
		if (tctx && now - tctx->enqueued_at >= numa_spill_ns &&
		    task_placeable_on(head, cpu) &&
		    dsq_take(LOADER_DSQ(n)))
			return true;
	}
	return false;
}

#endif /* __SCX_PHASE_NUMA_BPF_H */
