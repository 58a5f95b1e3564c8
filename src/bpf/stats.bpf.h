/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Per-phase counters. Per-CPU so the hot paths never share a cache line;
 * pinned by the loader so `scx_phase --monitor` and bpftool can read them.
 */
#ifndef __SCX_PHASE_STATS_BPF_H
#define __SCX_PHASE_STATS_BPF_H

#include "intf.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct phase_counters);
	__uint(max_entries, SCX_PHASE_NR_SLOTS);
} phase_stats SEC(".maps");

/* This CPU's counters for @phase (SCX_PHASE_NONE for no hint). */
static __always_inline struct phase_counters *stats_of(u32 phase)
{
	u32 slot = phase < SCX_PHASE_NR_SLOTS ? phase : SCX_PHASE_NONE;

	return bpf_map_lookup_elem(&phase_stats, &slot);
}

static __always_inline void count_enqueue(u32 phase)
{
	struct phase_counters *c = stats_of(phase);

	if (c)
		c->enqueues++;
}

static __always_inline void count_runtime(u32 phase, u64 ns, bool from_process)
{
	struct phase_counters *c = stats_of(phase);

	if (!c)
		return;
	c->runtime_ns += ns;
	if (from_process)
		c->process_ns += ns;
}

/* The wait_hist bucket of a wait of ns: decades from 10 us. */
static __always_inline u32 wait_bucket(u64 ns)
{
	u64 bound = 10000;	/* 10 us */
	u32 i;

	for (i = 0; i < SCX_PHASE_WAIT_BUCKETS - 1; i++, bound *= 10)
		if (ns <= bound)
			return i;
	return SCX_PHASE_WAIT_BUCKETS - 1;
}

static __always_inline void count_wait(u32 phase, u64 ns, u32 tid)
{
	struct phase_counters *c = stats_of(phase);
	u32 b;

	if (!c)
		return;
	c->wait_ns += ns;
	b = wait_bucket(ns);
	if (b < SCX_PHASE_WAIT_BUCKETS)
		c->wait_hist[b]++;
	if (ns > c->max_wait_ns) {
		c->max_wait_ns = ns;
		c->max_wait_tid = tid;
	}
}

static __always_inline void count_preemption(u32 phase)
{
	struct phase_counters *c = stats_of(phase);

	if (c)
		c->preemptions++;
}

static __always_inline void count_budget_exhausted(u32 phase)
{
	struct phase_counters *c = stats_of(phase);

	if (c)
		c->budget_exhaustions++;
}

static __always_inline void count_locality(u32 phase, bool local, u64 ns)
{
	struct phase_counters *c = stats_of(phase);

	if (!c)
		return;
	if (local)
		c->local_ns += ns;
	else
		c->remote_ns += ns;
}

static __always_inline void count_fair_move(bool steal)
{
	struct phase_counters *c = stats_of(SCX_PHASE_NONE);

	if (!c)
		return;
	if (steal)
		c->fair_steals++;
	else
		c->fair_rebalances++;
}

/* A claimant's task run from behind others' on its exclusive CPU. */
static __always_inline void count_claim_pass(void)
{
	struct phase_counters *c = stats_of(SCX_PHASE_NONE);

	if (c)
		c->claim_passes++;
}

/* A task preempted inside an RCU read-side section, run next. */
static __always_inline void count_rcu_reader(void)
{
	struct phase_counters *c = stats_of(SCX_PHASE_NONE);

	if (c)
		c->rcu_readers++;
}

/* A tick that resolved its task's hint in full (main.bpf.c). */
static __always_inline void count_tick_resolve(void)
{
	struct phase_counters *c = stats_of(SCX_PHASE_NONE);

	if (c)
		c->tick_resolves++;
}

/* Hint values a lookup ignored: garbage, and phases the writer may not set. */
static __always_inline void count_ignored_hints(u32 invalid, u32 refused)
{
	struct phase_counters *c;

	if (!invalid && !refused)
		return;
	c = stats_of(SCX_PHASE_NONE);
	if (!c)
		return;
	c->invalid_hints += invalid;
	c->refused_hints += refused;
}

/* Gauge of tasks per phase: a task entered or left @phase. */
static __always_inline void count_thread_enter(u32 phase)
{
	struct phase_counters *c = stats_of(phase);

	if (c)
		c->threads++;
}

static __always_inline void count_thread_leave(u32 phase)
{
	struct phase_counters *c = stats_of(phase);

	if (c)
		c->threads--;
}

#endif /* __SCX_PHASE_STATS_BPF_H */
