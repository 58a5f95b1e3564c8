/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_phase: a sched_ext scheduler that schedules by training phase.
 *
 * This file wires the sched_ext callbacks to the policy pieces:
 *   work.bpf.h      work counters: CPUs and queues each callback looked at
 *   stats.bpf.h     per-phase counters
 *   topology.bpf.h  host topology from the loader
 *   task_ctx.bpf.h  per-task state
 *   cpu_ctx.bpf.h   per-CPU state
 *   classes.bpf.h   phase -> class, class weights
 *   classify.bpf.h  thread-name rules for tasks without a hint
 *   hints.bpf.h     where a task's phase comes from: the tid map, its slot
 *                   in the hint service's memory, its name, its process
 *   fair.bpf.h      weighted vtime, one domain for boosted, one for fair
 *   fair_queues.bpf.h  a fair queue per CPU, stealing and balancing
 *   budget.bpf.h    how much of a CPU boosted classes may take
 *   claims.bpf.h    CPU claims of the workload API (maps)
 *   placement.bpf.h claimed CPUs first for their workload, exclusive ones
 *                   for nobody else
 *   numa.bpf.h      data loaders on the CPUs of their node
 *   preempt.bpf.h   which CPU a waking boosted task takes
 *
 * Queues: boosted tasks (checkpoint, backward, forward, optimizer) wait in
 * their node's BOOST_DSQ, un-hinted and idle-phase tasks in their CPU's
 * FAIR_DSQ, data loaders in their node's LOADER_DSQ. A CPU serves boosted
 * work first while it has boost budget left, fair work first once it has
 * none.
 */
#include <scx/common.bpf.h>
#include "intf.h"
#include "work.bpf.h"
#include "stats.bpf.h"
#include "topology.bpf.h"
#include "task_ctx.bpf.h"
#include "cpu_ctx.bpf.h"
#include "classes.bpf.h"
#include "classify.bpf.h"
#include "hints.bpf.h"
#include "claims.bpf.h"
#include "fair.bpf.h"
#include "budget.bpf.h"
#include "placement.bpf.h"
#include "fair_queues.bpf.h"
#include "numa.bpf.h"
#include "preempt.bpf.h"

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

#define BOOST_DSQ(node) (SCX_PHASE_BOOST_DSQ_BASE + (u64)(node))

/*
 * Whether @p may run on some CPU of @node: one kfunc on the node's mask.
 * (A loop over the CPUs cost up to the host's size on every refresh of
 * a loader pinned narrower than the host: every cpuset-pinned pod's.)
 */
static __always_inline bool node_allowed(const struct task_struct *p, s32 node)
{
	const struct cpumask *nm;

	if (p->nr_cpus_allowed >= nr_cpus)
		return true;
	nm = node_cpumask(node);
	return nm && bpf_cpumask_intersects(nm, p->cpus_ptr);
}

/*
 * Re-read @p's phase (hint, else thread name) and derive its class and, for
 * a data loader, its node: the hinted one, else the one it already had,
 * else the one it runs on now.
 */
static __always_inline void refresh(struct task_struct *p, struct task_ctx *tctx)
{
	struct hint_lookup h;
	s32 hint_node, node = -1;
	u32 phase;

	resolve_hint(p, &h);
	count_ignored_hints(h.invalid, h.refused);
	phase = h.phase;
	hint_node = h.node;

	if (phase == SCX_PHASE_DATA_LOADING) {
		if (node_usable(hint_node))
			node = hint_node;
		else if (tctx->phase == SCX_PHASE_DATA_LOADING && tctx->node >= 0)
			node = tctx->node;
		else
			node = node_of_cpu(scx_bpf_task_cpu(p));
		if (!node_usable(node) || !node_allowed(p, node))
			node = -1;
	}
	if (phase != tctx->phase) {
		count_thread_leave(tctx->phase);
		count_thread_enter(phase);
	}
	tctx->phase = phase;
	tctx->source = h.source;
	tctx->wid = h.wid;
	tctx->cls = phase_class(phase);
	tctx->node = node;
	tctx->thread_ref = h.thread_ref;
	tctx->process_ref = h.process_ref;
	tctx->seen_valid = 0;
	tctx->light_ticks = 0;
}

/*
 * A full resolve at least every this many ticks of a running task (32 ms
 * at HZ=250), for what the light check does not read: a tid-map hint, a
 * new binding, a changed allow mask. Each of these also applies at the
 * task's next wake-up, which resolves in full.
 */
#define FULL_RESOLVE_TICKS 8

/*
 * The tick's refresh, light: a running task's hint can change with no
 * event only through a plain store into its slot or its process's slot,
 * or a new name (prctl). So read those three (two slots by the bindings
 * the last full resolve found, no task storage, no hash, no rule loop)
 * and resolve in full only if one differs from the last tick's, or every
 * FULL_RESOLVE_TICKS. The first tick after a full resolve has nothing to
 * compare with, and resolves in full.
 */
static __always_inline void refresh_on_tick(struct task_struct *p, struct task_ctx *tctx)
{
	u64 in[4] = {};

	in[0] = slot_raw(&tctx->thread_ref);
	in[1] = slot_raw(&tctx->process_ref);
	bpf_probe_read_kernel(&in[2], 2 * sizeof(u64), p->comm);
	if (tctx->seen_valid && ++tctx->light_ticks < FULL_RESOLVE_TICKS &&
	    in[0] == tctx->seen[0] && in[1] == tctx->seen[1] &&
	    in[2] == tctx->seen[2] && in[3] == tctx->seen[3])
		return;
	refresh(p, tctx);
	count_tick_resolve();
	tctx->seen[0] = in[0];
	tctx->seen[1] = in[1];
	tctx->seen[2] = in[2];
	tctx->seen[3] = in[3];
	tctx->seen_valid = 1;
}

/*
 * Whether @p was preempted inside an RCU read-side section: the context
 * switch queued it on its RCU node's list of blocked readers, where it
 * stays until it leaves the section. Not the nesting count: a task
 * enqueued as it is preempted is still current, and this program's own
 * trampoline holds the read lock, so the count is never 0 then (every
 * preempted task ran next, and the fair queues starved in seconds). Only
 * kernels with preemptible RCU have the field; elsewhere readers are
 * never preempted.
 */
static __always_inline bool in_rcu_reader(const struct task_struct *p)
{
	return bpf_core_field_exists(p->rcu_blocked_node) &&
	       BPF_CORE_READ(p, rcu_blocked_node) != NULL;
}

/* @p is about to wait for (or be given) a CPU; queue_vtime() says which. */
static __always_inline void note_queued(struct task_ctx *tctx, u64 now)
{
	tctx->enqueued_at = now;
	tctx->queued = 0;
	count_enqueue(tctx->phase);
}

/* Charge the CPU time @p used since it started or was last charged. */
static __always_inline void charge(struct task_struct *p, struct task_ctx *tctx,
				   u64 now)
{
	s32 cpu = scx_bpf_task_cpu(p);
	struct cpu_ctx *c;
	u64 used;

	if (!tctx->running_since)
		return;
	used = now - tctx->running_since;
	tctx->running_since = now;
	fair_charge(p, tctx, used);
	count_runtime(tctx->phase, used, tctx->source == SCX_PHASE_SRC_PROCESS);
	count_workload_runtime(tctx->wid, tctx->phase, used, class_boosted(tctx->cls));
	/*
	 * The task's CPU, not this one: on a nohz_full CPU the tick can run
	 * from a housekeeping CPU (sched_tick_remote()).
	 */
	if (is_loader(tctx))
		count_locality(tctx->phase, cpu_in_node(cpu, tctx->node), used);
	if (class_boosted(tctx->cls) && (c = cpu_ctx_of(cpu)) &&
	    budget_charge(c, now, used))
		count_budget_exhausted(tctx->phase);
}

/*
 * An idle CPU of @allowed for @p, @prev_cpu first, or -1.
 * scx_bpf_select_cpu_and() came in 6.16; before it, the same order by
 * hand (without its SMT and cache preferences).
 */
static __always_inline s32 idle_cpu_in(struct task_struct *p, s32 prev_cpu, u64 wake_flags,
				       const struct cpumask *allowed)
{
	if (__COMPAT_HAS_scx_bpf_select_cpu_and)
		return scx_bpf_select_cpu_and(p, prev_cpu, wake_flags, allowed, 0);
	if (bpf_cpumask_test_cpu(prev_cpu, allowed) && scx_bpf_test_and_clear_cpu_idle(prev_cpu))
		return prev_cpu;
	return scx_bpf_pick_idle_cpu(allowed, 0);
}

/*
 * Whether a fair task that finds no idle CPU has its queue chosen in
 * select_cpu() (and joins the queue of the CPU returned), rather than in
 * enqueue(): the task then moves to that CPU as it wakes, and the CPU
 * takes it from its queue as a task of its own run queue. Chosen in
 * enqueue, the queue was often another CPU's than the task's, and every
 * such take was a remote move that locks both run queues: under 10,240
 * messaging threads on 4 vCPUs, 100,212 of 155,485 takes, 97 us each
 * against 5 us for a local one, 9.7 s of dispatch in a 29 s run (bpf
 * run-time stats). Loaders, boosted tasks and a workload's claimed tasks
 * queue by rules of their own, in enqueue().
 */
static __always_inline bool queues_where_selected(struct task_ctx *tctx)
{
	struct workload_claim *wc;

	if (is_loader(tctx) || class_boosted(tctx->cls))
		return false;
	wc = claim_cpus(tctx->wid);
	return !wc || !wc->nr_cpus;
}

static __always_inline s32 on_select_cpu(struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct task_ctx *tctx = task_ctx_ours(p, "select_cpu");
	const struct cpumask *allowed;
	bool is_idle = false;
	s32 cpu;

	if (!tctx)
		return prev_cpu;
	placement_sync();	/* as in enqueue() */
	refresh(p, tctx);

	/* A workload's task: an idle CPU of its claim first. */
	cpu = claimed_idle_cpu(p, tctx->wid, prev_cpu);
	if (cpu >= 0) {
		note_queued(tctx, scx_bpf_now());
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		return cpu;
	}
	allowed = placeable_mask(p, tctx);
	if (is_loader(tctx)) {
		if (cpu_in_node(prev_cpu, tctx->node) && placeable(p, tctx->wid, prev_cpu) &&
		    scx_bpf_test_and_clear_cpu_idle(prev_cpu))
			cpu = prev_cpu;
		else
			cpu = idle_cpu_in_node(allowed, tctx->node);
		if (cpu < 0)
			return prev_cpu;	/* enqueue queues it on its node */
		is_idle = true;
	} else if (allowed != p->cpus_ptr) {
		/* Others' exclusive CPUs taken out of what it may use. */
		cpu = idle_cpu_in(p, prev_cpu, wake_flags, allowed);
		is_idle = cpu >= 0;
		if (!is_idle)
			cpu = prev_cpu;
	} else {
		cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	}

	/* An idle CPU needs no queueing decision: run there now. */
	if (is_idle) {
		note_queued(tctx, scx_bpf_now());
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		return cpu;
	}

	/*
	 * No idle CPU for a waking boosted task, or for a task whose claimed
	 * CPUs others are using: take one from a lower class right away,
	 * straight into its local queue, ahead of what runs there.
	 */
	{
		u64 now = scx_bpf_now();
		s32 victim = claimed_cpu_to_take(p, tctx->wid, tctx->cls);

		if (victim < 0 && class_boosted(tctx->cls))
			victim = preemption_victim(p, tctx->wid, tctx->cls, now);
		if (victim >= 0) {
			note_queued(tctx, now);
			count_preemption(tctx->phase);
			scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, SCX_ENQ_PREEMPT);
			return victim;
		}
		if (queues_where_selected(tctx)) {
			allowed = queue_mask(p, tctx);
			cpu = wakeup_queue_cpu(allowed, fair_queue_cpu(p, allowed, prev_cpu), now);
		}
	}
	return cpu;
}

s32 BPF_STRUCT_OPS(phase_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	struct work_scope w = work_begin();
	s32 cpu = on_select_cpu(p, prev_cpu, wake_flags);

	work_end(SCX_PHASE_CB_SELECT_CPU, w);
	return cpu;
}

/*
 * Whether @p, the last runnable task of @cpu, may simply run on there: not
 * a loader off its node, not a workload's task off its claimed CPUs, not
 * on a CPU another workload claimed.
 */
static __always_inline bool stays_on(struct task_struct *p, struct task_ctx *tctx, s32 cpu)
{
	struct workload_claim *wc = claim_cpus(tctx->wid);

	if (is_loader(tctx) && !cpu_in_node(cpu, tctx->node))
		return false;
	if (wc && wc->nr_cpus && claimant(cpu) != tctx->wid)
		return false;
	return queueable(p, tctx->wid, cpu);
}

/*
 * Get @cpu, where a task of workload @wid and class @cls was just queued,
 * to look at its queues: at once if idle, or if it is the workload's and
 * runs another's task of a class not above @cls; else an idle CPU of
 * @allowed near it, to steal the task.
 */
static __always_inline void kick_for(const struct cpumask *allowed, s32 cpu, u32 wid, u32 cls)
{
	struct cpu_ctx *c;
	s32 target;

	if (scx_bpf_test_and_clear_cpu_idle(cpu)) {
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		return;
	}
	work_cpu();
	if (wid && claimant(cpu) == wid && (c = cpu_ctx_of(cpu)) && c->cur_wid != wid &&
	    c->cur_class != CLASS_NONE && c->cur_class <= cls) {
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
		return;
	}
	target = idle_cpu_near(allowed, cpu);
	if (target < 0)
		return;
	/* Where to look first: it steals only from a few queues. */
	if ((c = cpu_ctx_of(target)))
		c->steal_hint = cpu + 1;
	scx_bpf_kick_cpu(target, SCX_KICK_IDLE);
}

static __always_inline void on_enqueue(struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = task_ctx_ours(p, "enqueue");
	s32 cpu = scx_bpf_task_cpu(p), target;
	const struct cpumask *allowed;
	u64 now = scx_bpf_now();

	if (!tctx) {
		/*
		 * The scheduler is on its way out (task_ctx_ours()); until it
		 * is gone, never lose a task. In vtime order: a FIFO insert
		 * into a vtime-ordered queue is an error.
		 */
		scx_bpf_dsq_insert_vtime(p, FAIR_DSQ(fair_queue_cpu(p, p->cpus_ptr, cpu)),
					 slice_ns, clock_read(DOMAIN_FAIR, now), enq_flags);
		return;
	}
	/*
	 * The masks as the service's claims are now, not as of the last
	 * dispatch: as the kernel switches to us it enqueues every runnable
	 * task before any dispatch runs, and with empty masks others' tasks
	 * queued on claimed CPUs (a restart after hotplug). One lookup when
	 * nothing changed.
	 */
	placement_sync();
	/* select_cpu() has just read the hint; otherwise read it now. */
	if (!__COMPAT_is_enq_cpu_selected(enq_flags))
		refresh(p, tctx);
	note_queued(tctx, now);

	/*
	 * A kernel thread that wakes keeps the kernel going (RCU's
	 * grace-period kthread, ksoftirqd, kworkers): it runs next on the CPU
	 * the kernel woke it on, behind only the running task's slice, never
	 * behind user work however deep the queues. Under 2,560 messaging
	 * tasks on 4 CPUs, rcu_preempt waited 21 s in a fair queue, no grace
	 * period ended, and the kernel ejected the scheduler for an RCU stall.
	 * One that used its slice and still runs queues like anyone else, so
	 * a busy kthread (kswapd) gets its share, not a CPU.
	 */
	if ((p->flags & PF_KTHREAD) && (enq_flags & SCX_ENQ_WAKEUP) &&
	    (p->nr_cpus_allowed == 1 || placeable(p, tctx->wid, cpu))) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		return;
	}

	/*
	 * A task preempted inside an RCU read-side section holds up every
	 * grace period until it leaves the section: it runs next on its CPU,
	 * for a short slice. Debian's kernels have preemptible RCU without
	 * RCU_BOOST, so nothing else raises such a reader. Under 2,560
	 * messaging processes on 16 vCPUs, one (P3046, "b..l" in the stall
	 * report) waited 21 s behind user work and the kernel ejected us for
	 * an RCU stall. Only kernel code holds the read lock, so no task
	 * earns this by asking.
	 */
	if (!(enq_flags & SCX_ENQ_WAKEUP) && in_rcu_reader(p)) {
		count_rcu_reader();
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns / SLICE_MIN_DIV, enq_flags);
		return;
	}

	/*
	 * The last runnable task of a CPU whose slice ended: this CPU has
	 * already looked for work and found none, so run it again right here
	 * rather than queue it behind an idle CPU.
	 */
	if ((enq_flags & SCX_ENQ_LAST) && stays_on(p, tctx, cpu)) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		return;
	}

	if (is_loader(tctx)) {
		scx_bpf_dsq_insert_vtime(p, LOADER_DSQ(tctx->node), slice_ns,
					 queue_vtime(tctx, LOADER_DSQ(tctx->node), enq_flags, now),
					 enq_flags);
		target = idle_cpu_in_node(placeable_mask(p, tctx), tctx->node);
		if (target >= 0)
			scx_bpf_kick_cpu(target, SCX_KICK_IDLE);
		return;
	}

	if (class_boosted(tctx->cls)) {
		u64 dsq = BOOST_DSQ(node_of_cpu(cpu));
		struct cpu_ctx *tc;

		scx_bpf_dsq_insert_vtime(p, dsq, slice_ns,
					 queue_vtime(tctx, dsq, enq_flags, now), enq_flags);
		target = claimed_idle_cpu(p, tctx->wid, cpu);
		if (target < 0)
			target = idle_cpu_near(placeable_mask(p, tctx), cpu);
		if (target >= 0) {
			/* It may be of another node: name the queue to it. */
			if ((tc = cpu_ctx_of(target)))
				tc->boost_hint = node_of_cpu(cpu) + 1;
			scx_bpf_kick_cpu(target, SCX_KICK_IDLE);
			return;
		}
		target = claimed_cpu_to_take(p, tctx->wid, tctx->cls);
		if (target < 0)
			target = preemption_victim(p, tctx->wid, tctx->cls, now);
		if (target >= 0) {
			if ((tc = cpu_ctx_of(target)))
				tc->boost_hint = node_of_cpu(cpu) + 1;
			scx_bpf_kick_cpu(target, SCX_KICK_PREEMPT);
			count_preemption(tctx->phase);
		}
		return;
	}

	/* A workload's task queues on its claimed CPUs, others off them. */
	target = claimed_queue_cpu(p, tctx->wid, cpu, now);
	if (target < 0) {
		allowed = queue_mask(p, tctx);
		target = fair_queue_cpu(p, allowed, cpu);
		/* select_cpu() chose it, unless the kernel did not ask. */
		if ((enq_flags & SCX_ENQ_WAKEUP) && !__COMPAT_is_enq_cpu_selected(enq_flags))
			target = wakeup_queue_cpu(allowed, target, now);
	}
	scx_bpf_dsq_insert_vtime(p, FAIR_DSQ(target), slice_ns,
				 queue_vtime(tctx, FAIR_DSQ(target), enq_flags, now), enq_flags);
	kick_for(placeable_mask(p, tctx), target, tctx->wid, tctx->cls);
}

void BPF_STRUCT_OPS(phase_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct work_scope w = work_begin();

	on_enqueue(p, enq_flags);
	work_end(SCX_PHASE_CB_ENQUEUE, w);
}

/*
 * A task whose slice ended on a CPU its workload claims keeps it when
 * nothing else of that CPU waits: stealing another's task would make it
 * wait a tick for the CPU it claimed.
 */
static __always_inline bool keep_claimant(struct task_struct *prev, s32 cpu)
{
	struct task_ctx *tctx;

	if (!prev || !(prev->scx.flags & SCX_TASK_QUEUED))
		return false;
	tctx = task_ctx(prev);
	/* A boosted one keeps it only within budget (keep_boosted()). */
	if (!tctx || !tctx->wid || claimant(cpu) != tctx->wid || class_boosted(tctx->cls))
		return false;
	scx_bpf_task_set_slice(prev, slice_ns);
	return true;
}

/*
 * Fair work for @cpu of @node: another CPU's queue head that lags far
 * behind, else this CPU's fair queue or the node's loaders, whichever head
 * has used less, else the claimant's task that ran here (if the CPU is
 * claimed), else fair work stolen from another CPU.
 */
static __always_inline bool dispatch_fair(s32 cpu, s32 node, struct cpu_ctx *c,
					  struct task_struct *prev)
{
	struct task_struct *f = dsq_peek(FAIR_DSQ(cpu));
	struct task_struct *l = dsq_peek(LOADER_DSQ(node));
	u64 first = FAIR_DSQ(cpu), second = LOADER_DSQ(node);

	/*
	 * A CPU claimed exclusively leaves others' heads (queued before the
	 * claim) to the CPUs that steal them, and runs its claimant's task
	 * from behind them.
	 */
	if (f && !task_placeable_on(f, cpu)) {
		if (take_placeable(cpu))
			return true;
		f = NULL;
	}
	if (l && !task_placeable_on(l, cpu))
		l = NULL;
	if (!f || (l && vtime_before(l->scx.dsq_vtime, f->scx.dsq_vtime))) {
		first = LOADER_DSQ(node);
		second = FAIR_DSQ(cpu);
	}
	/*
	 * first is this CPU's queue only if f is there. A claimed CPU serves
	 * its own queue (its claimant's tasks) before anyone else's.
	 */
	if (!claimant(cpu) &&
	    take_lagging(cpu, balance_peer(cpu, c), first == FAIR_DSQ(cpu) ? f : l))
		return true;
	if ((first == FAIR_DSQ(cpu) ? f : l) && dsq_take(first))
		return true;
	if ((second == FAIR_DSQ(cpu) ? f : l) && dsq_take(second))
		return true;
	return keep_claimant(prev, cpu) || steal_fair(cpu, node, c);
}

/*
 * A boosted task whose slice ended keeps its CPU while the CPU has budget
 * and no boosted task that used less is waiting: a round trip through the
 * queue would hand the CPU to fair work and make it preempt its way back.
 */
static __always_inline bool keep_boosted(struct task_struct *prev, u64 boost)
{
	struct task_struct *head;
	struct task_ctx *tctx;
	struct cpu_ctx *c;

	if (!prev || !(prev->scx.flags & SCX_TASK_QUEUED))
		return false;
	tctx = task_ctx(prev);
	if (!tctx || !class_boosted(tctx->cls) ||
	    !placeable(prev, tctx->wid, bpf_get_smp_processor_id()))
		return false;
	head = dsq_peek(boost);
	if (head && vtime_before(head->scx.dsq_vtime, tctx->vtime[DOMAIN_BOOST]))
		return false;
	c = this_cpu_ctx();
	scx_bpf_task_set_slice(prev, c ? budget_slice(c, scx_bpf_now(), slice_ns) : slice_ns);
	return true;
}

/*
 * Nothing else for @cpu: the task whose slice ended there runs on with a
 * new slice, when it may stay (stays_on()), instead of a round trip
 * through enqueue(SCX_ENQ_LAST). On 6.19 that round trip left the CPU
 * idle with the task in its local queue for about 100 ms.
 */
static __always_inline bool keep_last(struct task_struct *prev, s32 cpu)
{
	struct task_ctx *tctx;

	if (!prev || !(prev->scx.flags & SCX_TASK_QUEUED))
		return false;
	tctx = task_ctx(prev);
	if (!tctx || !stays_on(prev, tctx, cpu))
		return false;
	scx_bpf_task_set_slice(prev, slice_ns);
	return true;
}

/*
 * The boosted queue @cpu of @node serves: its node's, or another node's
 * whose head has used less and that @cpu may take. The other node is the
 * one whose task kicked this CPU, else one in turn: two peeks, however
 * many nodes, and boosted work runs in vtime order across nodes within a
 * turn of them.
 */
static __always_inline u64 boost_queue_for(s32 cpu, s32 node, struct cpu_ctx *c)
{
	u64 mine = BOOST_DSQ(node), other;
	struct task_struct *a, *b;
	u32 n;

	if (nr_nodes < 2 || !c)
		return mine;
	if (c->boost_hint) {
		n = c->boost_hint - 1;
		c->boost_hint = 0;
	} else {
		n = (node + 1 + c->boost_next++ % (nr_nodes - 1)) % nr_nodes;
	}
	if ((s32)n == node || n >= nr_nodes)
		return mine;
	other = BOOST_DSQ(n);
	a = dsq_peek(mine);
	if (a && !task_placeable_on(a, cpu))
		a = NULL;
	b = dsq_peek(other);
	if (b && !task_placeable_on(b, cpu))
		b = NULL;
	if (b && (!a || vtime_before(b->scx.dsq_vtime, a->scx.dsq_vtime)))
		return other;
	return mine;
}

/*
 * Whether boosted work waits in another node's queue (one, in turn): its
 * CPUs may all be busy with boosted work of their own, and a single
 * queue for the host would have made this CPU's fair task yield to it.
 * The CPU's next dispatch then looks there first.
 */
static __always_inline bool boost_waits_elsewhere(s32 node, struct cpu_ctx *c)
{
	u32 n;

	if (nr_nodes < 2)
		return false;
	n = (node + 1 + c->boost_next % (nr_nodes - 1)) % nr_nodes;
	if (n >= nr_nodes || !dsq_len(BOOST_DSQ(n)))
		return false;
	c->boost_hint = n + 1;
	return true;
}

static __always_inline void on_dispatch(s32 cpu, struct task_struct *prev)
{
	struct cpu_ctx *c = this_cpu_ctx();
	u64 now = scx_bpf_now();
	s32 node = node_of_cpu(cpu);
	bool boost_first = !c || budget_left(c, now);
	bool boost_ok;
	u64 boost;

	placement_sync();
	boost = boost_queue_for(cpu, node, c);
	boost_ok = head_placeable(boost, cpu);
	if (boost_first && (keep_boosted(prev, boost) || (boost_ok && dsq_take(boost))))
		return;
	if (dispatch_fair(cpu, node, c, prev))
		return;
	if (!boost_first && boost_ok && dsq_take(boost))
		return;
	if (keep_last(prev, cpu))
		return;
	spill_loader(cpu, node, now);
}

void BPF_STRUCT_OPS(phase_dispatch, s32 cpu, struct task_struct *prev)
{
	struct work_scope w = work_begin();

	on_dispatch(cpu, prev);
	work_end(SCX_PHASE_CB_DISPATCH, w);
}

/* Whether tasks of @tctx's kind still wait for @cpu as it starts one. */
static __always_inline bool company_waits(struct task_ctx *tctx, s32 cpu)
{
	if (class_boosted(tctx->cls))
		return dsq_len(BOOST_DSQ(node_of_cpu(cpu))) > 0;
	return dsq_len(FAIR_DSQ(cpu)) > 0 ||
	       dsq_len(LOADER_DSQ(node_of_cpu(cpu))) > 0;
}

static __always_inline void on_running(struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx_ours(p, "running");
	struct cpu_ctx *c = this_cpu_ctx();
	s32 cpu = bpf_get_smp_processor_id();
	u64 now = scx_bpf_now();

	if (!tctx)
		return;
	if (tctx->enqueued_at) {
		count_wait(tctx->phase, now - tctx->enqueued_at, p->pid);
		count_workload_wait(tctx->wid, tctx->phase, now - tctx->enqueued_at);
		tctx->enqueued_at = 0;
	}
	tctx->running_since = now;
	fair_running(tctx, company_waits(tctx, cpu), now);
	if (!c)
		return;
	c->cur_class = tctx->cls;
	c->cur_wid = tctx->wid;
	/* End the slice where the budget ends, not a tick or more after. */
	if (class_boosted(tctx->cls))
		scx_bpf_task_set_slice(p, budget_slice(c, now, slice_ns));
	else
		scx_bpf_task_set_slice(p, fair_slice(dsq_len(FAIR_DSQ(cpu))));
	c->slice_end = now + p->scx.slice;
}

void BPF_STRUCT_OPS(phase_running, struct task_struct *p)
{
	struct work_scope w = work_begin();

	on_running(p);
	work_end(SCX_PHASE_CB_RUNNING, w);
}

/*
 * Every tick: charge the running task to the phase it is in now, re-read
 * its phase, and cut its slice short when the CPU should serve someone
 * else: a task on a CPU another workload claimed (exclusively, or whose
 * task waits there), a loader that is off its node, a boosted task on a CPU out of
 * budget while fair work waits, or a fair task while boosted work waits
 * on a CPU with budget.
 */
static __always_inline void on_tick(struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx_ours(p, "tick");
	/* The task's CPU: the tick may run remotely (see charge()). */
	s32 cpu = scx_bpf_task_cpu(p), node = node_of_cpu(cpu);
	struct cpu_ctx *c = cpu_ctx_of(cpu);
	u64 now = scx_bpf_now();
	bool budget, yield;

	if (!tctx || !c)
		return;
	charge(p, tctx, now);
	refresh_on_tick(p, tctx);
	c->cur_class = tctx->cls;

	budget = budget_left(c, now);
	c->cur_wid = tctx->wid;
	if (!placeable(p, tctx->wid, cpu))
		yield = true;	/* another workload claimed this CPU since */
	else if (claimant_waits(p, tctx, cpu, FAIR_DSQ(cpu)))
		yield = true;	/* lent to p while its claimant had nothing */
	else if (is_loader(tctx))
		yield = !cpu_in_node(cpu, tctx->node);
	else if (class_boosted(tctx->cls))
		yield = !budget && (dsq_len(FAIR_DSQ(cpu)) ||
				    dsq_len(LOADER_DSQ(node)));
	else if (!budget)
		yield = false;
	else if (dsq_len(BOOST_DSQ(node)))
		yield = true;
	else
		yield = boost_waits_elsewhere(node, c);
	if (yield)
		scx_bpf_task_set_slice(p, 0);
}

void BPF_STRUCT_OPS(phase_tick, struct task_struct *p)
{
	struct work_scope w = work_begin();

	on_tick(p);
	work_end(SCX_PHASE_CB_TICK, w);
}

static __always_inline void on_stopping(struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx_ours(p, "stopping");
	struct cpu_ctx *c = this_cpu_ctx();

	if (c) {
		c->cur_class = CLASS_NONE;
		c->cur_wid = 0;
	}
	if (!tctx)
		return;
	charge(p, tctx, scx_bpf_now());
	tctx->running_since = 0;
}

void BPF_STRUCT_OPS(phase_stopping, struct task_struct *p, bool runnable)
{
	struct work_scope w = work_begin();

	on_stopping(p);
	work_end(SCX_PHASE_CB_STOPPING, w);
}

void BPF_STRUCT_OPS(phase_enable, struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx(p);

	if (tctx)
		fair_enable(tctx, scx_bpf_now());
}

s32 BPF_STRUCT_OPS(phase_init_task, struct task_struct *p,
		   struct scx_init_task_args *args)
{
	struct task_ctx *tctx = task_ctx_create(p);

	if (!tctx)
		return -ENOMEM;
	tctx->phase = SCX_PHASE_NONE;
	tctx->cls = CLASS_FAIR;
	tctx->node = -1;
	count_thread_enter(SCX_PHASE_NONE);
	return 0;
}

void BPF_STRUCT_OPS(phase_exit_task, struct task_struct *p,
		    struct scx_exit_task_args *args)
{
	struct task_ctx *tctx = task_ctx(p);

	if (tctx)
		count_thread_leave(tctx->phase);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(phase_init)
{
	s32 err;
	u32 n;

	fair_init();
	if ((err = fair_queues_init()) ||
	    (err = placement_init()) || (err = node_masks_init()) || (err = cpu_ctx_init()))
		return err;
	bpf_for(n, 0, nr_nodes) {
		if ((err = scx_bpf_create_dsq(LOADER_DSQ(n), n)) ||
		    (err = scx_bpf_create_dsq(BOOST_DSQ(n), n)))
			return err;
	}
	return spill_timer_init();
}

void BPF_STRUCT_OPS(phase_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(phase_ops,
	       .select_cpu	= (void *)phase_select_cpu,
	       .enqueue		= (void *)phase_enqueue,
	       .dispatch	= (void *)phase_dispatch,
	       .running		= (void *)phase_running,
	       .tick		= (void *)phase_tick,
	       .stopping	= (void *)phase_stopping,
	       .enable		= (void *)phase_enable,
	       .init_task	= (void *)phase_init_task,
	       .exit_task	= (void *)phase_exit_task,
	       .init		= (void *)phase_init,
	       .exit		= (void *)phase_exit,
	       /*
	        * Enqueue even the last runnable task of a CPU when its slice
	        * ends: otherwise the kernel silently refills its slice, and a
	        * phase change goes unseen for as long as the task keeps running.
	        */
	       .flags		= SCX_OPS_ENQ_LAST,
	       /*
	        * The watchdog ejects us when a runnable task waits this long.
	        * Above the waits the policy bounds (fair.bpf.h: about 1 s plus
	        * one turn of a queue) and above what EEVDF itself makes a task
	        * wait on an overcommitted host: under 2,560 messaging tasks on
	        * 16 vCPUs run by 2 host cores, EEVDF's worst wait was 11.2 s
	        * and ours 12.5 s, and a 10 s watchdog ejected us
	        * (scripts/bench.sh --overload). Below the RCU stall timeout
	        * (21 s), so that a bug of ours is named as a stall of ours
	        * rather than as an RCU stall. Peers use 5 s (bpfland, cosmos,
	        * flash), and were ejected on both 4 and 16 vCPUs.
	        */
	       .timeout_ms	= 19000,
	       .name		= "scx_phase");
