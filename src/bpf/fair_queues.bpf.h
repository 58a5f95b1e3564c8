/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Where fair (un-hinted and idle-phase) tasks wait: one vtime queue per
 * CPU, so a woken task usually runs where it last ran and no CPU has to
 * pull it across from another's run queue. Vtime is one clock for all
 * these queues (fair.bpf.h), which keeps them comparable:
 *   - a CPU with nothing of its own steals from the others, its node first;
 *   - a busy CPU also looks at one other queue per dispatch, in turn, and
 *     takes that queue's head when it has waited a slice's worth of vtime
 *     longer than its own, so an overloaded CPU cannot starve its queue.
 */
#ifndef __SCX_PHASE_FAIR_QUEUES_BPF_H
#define __SCX_PHASE_FAIR_QUEUES_BPF_H

#include "intf.h"
#include "work.bpf.h"
#include "topology.bpf.h"
#include "task_ctx.bpf.h"
#include "cpu_ctx.bpf.h"
#include "classes.bpf.h"
#include "budget.bpf.h"
#include "placement.bpf.h"
#include "stats.bpf.h"
#include "fair.bpf.h"

#define FAIR_DSQ(cpu) (SCX_PHASE_FAIR_DSQ_BASE + (u64)(cpu))

static __always_inline s32 fair_queues_init(void)
{
	s32 err;
	u32 cpu;

	bpf_for(cpu, 0, nr_cpus) {
		if ((err = scx_bpf_create_dsq(FAIR_DSQ(cpu), node_of_cpu(cpu))))
			return err;
	}
	return 0;
}

/*
 * The CPU whose queue @p joins: the one it is on, unless its affinity no
 * longer allows that (it changed while the task was queued or running) or
 * another workload claimed it; a CPU outside the mask would
 * never run it, and nobody could steal it. @allowed is where it may go.
 */
static __always_inline s32 fair_queue_cpu(struct task_struct *p, const struct cpumask *allowed,
					  s32 cpu)
{
	if (cpu >= 0 && cpu < nr_cpus && bpf_cpumask_test_cpu(cpu, allowed))
		return cpu;
	/* Not scx_bpf_pick_any_cpu(): with per-node idle tracking it is an error. */
	cpu = bpf_cpumask_any_distribute(allowed);
	if (cpu >= 0 && cpu < nr_cpus)
		return cpu;
	cpu = bpf_cpumask_any_distribute(p->cpus_ptr);
	return cpu >= 0 && cpu < nr_cpus ? cpu : 0;
}

/*
 * How soon @cpu could start a fair task queued now: when the running
 * task's slice ends, or a boost window away while boosted work holds it.
 */
static __always_inline u64 fair_turn_at(s32 cpu, u64 now)
{
	struct cpu_ctx *c = cpu_ctx_of(cpu);

	work_cpu();
	if (!c || c->cur_class == CLASS_NONE)
		return now;
	if (class_boosted(c->cur_class) && budget_left_remote(c, now))
		return now + budget_window_ns;
	return c->slice_end;
}

/*
 * The CPU of @wid's claim where @p's turn comes soonest, of @cpu and up
 * to CLAIM_TRIES (2) others of the claim; @cpu itself on a tie (it is warm);
 * -1 if @wid claims none of those that @p may use.
 */
static __always_inline s32 claimed_queue_cpu(struct task_struct *p, u32 wid, s32 cpu, u64 now)
{
	struct workload_claim *wc = claim_cpus(wid);
	s32 best = -1;
	u64 best_at = 0, at;
	u32 i, n, start;

	if (!wc || !wc->nr_cpus)
		return -1;
	if (claimant(cpu) == wid && bpf_cpumask_test_cpu(cpu, p->cpus_ptr)) {
		best = cpu;
		best_at = fair_turn_at(cpu, now);
	}
	start = claim_start(wc, &n);
	bpf_for(i, 0, n) {
		s32 mine = claimed_cpu(wc, start + i, wid, p);

		if (mine < 0 || mine == best)
			continue;
		at = fair_turn_at(mine, now);
		if (best < 0 || at < best_at) {
			best_at = at;
			best = mine;
		}
	}
	return best;
}

/*
 * A woken fair task that found no idle CPU queues on the CPU with the
 * shortest queue, and among equals where its turn comes soonest: its own
 * CPU, the waker's, or one of two more allowed CPUs taken in turn
 * (successive picks differ, so one is not its own CPU). Sampling a few
 * keeps the cost flat on big hosts, and waiting on its own CPU only would
 * double a wake-up's wait among hogs. The queue's length comes first
 * because the turn alone (when the running slice ends) let queues grow
 * apart. Under 2,560 messaging processes on 16 vCPUs, in one boot, two
 * runs each: by turn, p99 waits of 12.6-16.8 s, and the kernel ejected
 * us in both (an RCU stall, a 19.6 s wait); by length, 3.1-3.7 s, never
 * ejected, the load 0.5x EEVDF's time (EEVDF: 6.3-7.3 s, worst 29-32 s).
 */
static __always_inline s32 wakeup_queue_cpu(const struct cpumask *allowed, s32 cpu, u64 now)
{
	s32 cand[3] = { bpf_get_smp_processor_id(),
			bpf_cpumask_any_distribute(allowed),
			bpf_cpumask_any_distribute(allowed) };
	u64 best_at = fair_turn_at(cpu, now), at;
	u64 best_len = dsq_len(FAIR_DSQ(cpu)), len;
	u32 i;

	bpf_for(i, 0, 3) {
		s32 other = cand[i < 3 ? i : 0];

		if (other == cpu || other < 0 || other >= nr_cpus ||
		    !bpf_cpumask_test_cpu(other, allowed))
			continue;
		len = dsq_len(FAIR_DSQ(other));
		if (len > best_len)
			continue;
		at = fair_turn_at(other, now);
		if (len < best_len || at < best_at) {
			best_len = len;
			best_at = at;
			cpu = other;
		}
	}
	return cpu;
}

/* The next CPU this one compares its queue with, round robin. */
static __always_inline s32 balance_peer(s32 cpu, struct cpu_ctx *c)
{
	u32 peer;

	if (nr_cpus < 2 || !c)
		return -1;
	peer = c->balance_next % nr_cpus;
	if (peer == cpu)
		peer = (peer + 1) % nr_cpus;
	c->balance_next = peer + 1;
	return peer;
}

/*
 * Take the head of @peer's queue if it has waited a slice of vtime longer
 * than @mine (the oldest task @cpu could run instead).
 */
static __always_inline bool take_lagging(s32 cpu, s32 peer, struct task_struct *mine)
{
	struct task_struct *head;

	if (peer < 0 || !mine)
		return false;
	head = dsq_peek(FAIR_DSQ(peer));
	if (!head || !vtime_before(head->scx.dsq_vtime + slice_ns, mine->scx.dsq_vtime) ||
	    !task_movable(head, peer, cpu) ||
	    !dsq_take(FAIR_DSQ(peer)))
		return false;
	count_fair_move(false);
	return true;
}

/* How far into its own queue a CPU claimed exclusively looks (take_placeable()). */
#define PLACEABLE_SCAN 8

/*
 * @cpu, claimed exclusively, has others' tasks at the head of its queue:
 * queued before the claim was made or seen. Run the first task behind them
 * that it may take (its claimant's), among the first PLACEABLE_SCAN. Never
 * waiting for the others' tasks to be stolen keeps the claim: busy CPUs
 * take them only once they lag a slice, and under a restart after hotplug
 * the claimant's thread sat behind them while the CPU idled. A global
 * function: the verifier checks the loop once, not in every dispatch path.
 */
__noinline bool take_placeable(s32 cpu)
{
	struct task_struct *p;
	u32 seen = 0;

	work_queue();
	bpf_for_each(scx_dsq, p, FAIR_DSQ(cpu), 0) {
		if (++seen > PLACEABLE_SCAN)
			break;
		if (task_placeable_on(p, cpu) &&
		    scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL, 0)) {
			count_claim_pass();
			return true;
		}
	}
	return false;
}

/*
 * How many other CPUs' queues a CPU with nothing of its own looks at
 * before it idles, besides the one it was kicked for. Work reaches an
 * idle CPU mainly by a kick: a task queued on a busy CPU kicks an idle
 * one and names that queue to it (kick_for()), so the kicked CPU looks
 * there first. The tries go to its node's other CPUs in turn, and on a
 * host of more than one node at least one to another node's CPUs in
 * turn: every CPU of a host of up to 4 in 2 nodes, a constant number on
 * any. A scan of every queue cost up to twice the host's size per
 * dispatch.
 */
#define STEAL_TRIES 3

/* Take the head of @other's fair queue to @cpu, if @cpu may run it. */
static __always_inline bool steal_from(s32 cpu, s32 other)
{
	struct task_struct *head;

	work_cpu();
	head = dsq_peek(FAIR_DSQ(other));
	if (!head || !task_placeable_on(head, cpu) || !dsq_take(FAIR_DSQ(other)))
		return false;
	count_fair_move(true);
	return true;
}

/* The next CPU of another node than @node, in turn (nr_nodes > 1). */
static __always_inline s32 far_cpu(s32 node, struct cpu_ctx *c)
{
	u32 k = c->steal_far++, others = nr_nodes - 1;

	if (!others)
		return -1;
	return node_cpu((node + 1 + k % others) % nr_nodes, k / others);
}

/*
 * Nothing of its own to run: steal fair work, from the queue of the CPU
 * that kicked this one first, then from up to STEAL_TRIES others; that is
 * also how a workload's tasks spill off its busy claimed CPUs.
 */
static __always_inline bool steal_fair(s32 cpu, s32 node, struct cpu_ctx *c)
{
	const volatile u32 *in_node = MEMBER_VPTR(node_nr_cpus, [node]);
	s32 other, last = -1;
	u32 i, near;

	if (!c)
		return false;
	if (c->steal_hint) {
		other = c->steal_hint - 1;
		c->steal_hint = 0;
		if (other != cpu && other < nr_cpus && steal_from(cpu, other))
			return true;
		last = other;
	}
	near = in_node && *in_node > 1 ? *in_node - 1 : 0;
	if (nr_nodes > 1 && near > STEAL_TRIES - 1)
		near = STEAL_TRIES - 1;
	bpf_for(i, 0, STEAL_TRIES) {
		if (i < near) {
			other = node_cpu(node, c->steal_next++);
			if (other == cpu)
				other = node_cpu(node, c->steal_next++);
		} else if (nr_nodes > 1) {
			other = far_cpu(node, c);
		} else {
			break;
		}
		if (other < 0 || other == cpu || other == last || other >= nr_cpus)
			continue;
		last = other;
		if (steal_from(cpu, other))
			return true;
	}
	return false;
}

#endif /* __SCX_PHASE_FAIR_QUEUES_BPF_H */
