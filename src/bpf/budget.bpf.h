/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The boost budget: in every window of budget_window_ns, boosted classes
 * may use at most budget_ns of a CPU. Past that, the CPU serves fair tasks
 * first until the window ends, so un-hinted work always progresses (and
 * the sched_ext watchdog never sees a stalled task).
 */
#ifndef __SCX_PHASE_BUDGET_BPF_H
#define __SCX_PHASE_BUDGET_BPF_H

#include "intf.h"
#include "cpu_ctx.bpf.h"

/* Knobs (--boost-window-ms, --boost-budget-pct). */
const volatile u64 budget_window_ns = 100ULL * 1000 * 1000;
const volatile u64 budget_ns = 80ULL * 1000 * 1000;

static __always_inline void budget_roll(struct cpu_ctx *c, u64 now)
{
	if (now - c->window_start >= budget_window_ns) {
		c->window_start = now;
		c->boosted_ns = 0;
	}
}

/* Whether boosted classes may still come first on this CPU. */
static __always_inline bool budget_left(struct cpu_ctx *c, u64 now)
{
	budget_roll(c, now);
	return c->boosted_ns < budget_ns;
}

/* Account @used ns of boosted run time; true if that used the budget up. */
static __always_inline bool budget_charge(struct cpu_ctx *c, u64 now, u64 used)
{
	bool had_budget;

	budget_roll(c, now);
	had_budget = c->boosted_ns < budget_ns;
	c->boosted_ns += used;
	return had_budget && c->boosted_ns >= budget_ns;
}

/* The slice a boosted task may have here: no more than the budget left. */
static __always_inline u64 budget_slice(struct cpu_ctx *c, u64 now, u64 slice)
{
	u64 left;

	budget_roll(c, now);
	left = c->boosted_ns < budget_ns ? budget_ns - c->boosted_ns : 0;
	/* Not below 100 us: a sliver of a slice costs more than it gives. */
	if (left < 100 * 1000)
		left = 100 * 1000;
	return left < slice ? left : slice;
}

/* Another CPU's budget, read without rolling its window. */
static __always_inline bool budget_left_remote(const struct cpu_ctx *c, u64 now)
{
	return now - c->window_start >= budget_window_ns || c->boosted_ns < budget_ns;
}

#endif /* __SCX_PHASE_BUDGET_BPF_H */
