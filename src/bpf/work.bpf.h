/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Work counters: how many CPUs and queues each callback looked at. A
 * callback opens a scope (work_begin()), the pieces it calls count what
 * they visit (work_cpu(), and the queue wrappers below), and the scope's
 * end folds the call's totals into this CPU's entry for the callback.
 *
 * The running totals live in a per-CPU scratch entry. Callbacks do not
 * nest, as they run with interrupts off, except that the tick can
 * interrupt the spill timer's callback (a softirq): so a scope saves the
 * totals it found and puts them back at its end.
 */
#ifndef __SCX_PHASE_WORK_BPF_H
#define __SCX_PHASE_WORK_BPF_H

#include "intf.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct work_counters);
	__uint(max_entries, SCX_PHASE_NR_CALLBACKS);
} work_stats SEC(".maps");

struct work_scope {
	u32 cpus;
	u32 queues;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct work_scope);
	__uint(max_entries, 1);
} work_scratch SEC(".maps");

static __always_inline struct work_scope *work_now(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&work_scratch, &zero);
}

/* Open a callback's scope; returns what an interrupted scope had counted. */
static __always_inline struct work_scope work_begin(void)
{
	struct work_scope *w = work_now(), saved = {};

	if (w) {
		saved = *w;
		w->cpus = 0;
		w->queues = 0;
	}
	return saved;
}

/* Close the scope of callback @cb, restoring the interrupted one's @saved. */
static __always_inline void work_end(u32 cb, struct work_scope saved)
{
	struct work_scope *w = work_now();
	struct work_counters *c;

	if (!w)
		return;
	c = bpf_map_lookup_elem(&work_stats, &cb);
	if (c) {
		c->calls++;
		c->cpus += w->cpus;
		c->queues += w->queues;
		if (w->cpus > c->max_cpus)
			c->max_cpus = w->cpus;
		if (w->queues > c->max_queues)
			c->max_queues = w->queues;
	}
	*w = saved;
}

/* One CPU looked at: a loop's iteration, or a read of another CPU's state. */
static __always_inline void work_cpu(void)
{
	struct work_scope *w = work_now();

	if (w)
		w->cpus++;
}

static __always_inline void work_queue(void)
{
	struct work_scope *w = work_now();

	if (w)
		w->queues++;
}

/* The queue operations, counted. */
static __always_inline struct task_struct *dsq_peek(u64 dsq)
{
	work_queue();
	return __COMPAT_scx_bpf_dsq_peek(dsq);
}

static __always_inline s32 dsq_len(u64 dsq)
{
	work_queue();
	return scx_bpf_dsq_nr_queued(dsq);
}

static __always_inline bool dsq_take(u64 dsq)
{
	work_queue();
	return scx_bpf_dsq_move_to_local(dsq, 0);
}

#endif /* __SCX_PHASE_WORK_BPF_H */
