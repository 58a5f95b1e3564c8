/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Weighted virtual time, in two domains: boosted tasks are ordered against
 * each other and fair tasks against each other, each by the CPU time they
 * used scaled by weight (nice x class, classes.bpf.h).
 *
 * Each domain has one clock: the highest vtime a task started at out of a
 * queue while others waited (a task handed an idle CPU, or alone on its
 * CPU, runs out of order and does not move it: an idle-phase or nice 19
 * task alone on a CPU would drag it ahead of every queue), moved at most
 * a slice by any one start. A task joins a queue at its own vtime, held
 * within a window around the clock:
 *   - a waking task keeps at most a slice of credit below a reference:
 *     the clock, or its queue's head if that is older, but never more than
 *     VTIME_DRIFT_SLICES behind the clock. Without that floor each waker
 *     became the new head a slice below the last, the head drifted down
 *     without bound, and a task queued behind it waited until the
 *     wake-ups stopped: 18 s under perf bench sched messaging, 2,560
 *     tasks on 4 CPUs (EEVDF: 1.8-3.6 s);
 *   - a task still runnable when its slice ended keeps what it is owed,
 *     down to VTIME_LAG_SLICES below the clock;
 *   - nobody leads the reference by more than VTIME_LEAD_SLICES.
 *
 * The bound on a wait. Weighted fairness alone bounds no wait: the clock
 * moves as fast as the tasks that run, and with N tasks per CPU that is
 * 1/N of real time, so a task at the top of the window waits for N tasks
 * to use a whole window each, while every newcomer joins ahead of it.
 * So the clock also never moves slower than real time / floor_div,
 * chosen so that it crosses the whole window (LEAD + LAG slices) in
 * VTIME_CATCHUP_NS. A task joins at most LEAD slices above the clock and
 * every newcomer at least LAG slices below it, so VTIME_CATCHUP_NS after
 * a task joined, no newcomer goes ahead of it: it waits at most that,
 * plus one turn of each task already ahead of it in its queue, each
 * running at most one slice, shortened as the queue grows (fair_slice()).
 * The floor moves the clock faster than the tasks only when a CPU's queue
 * holds more than floor_div (14) runnable nice-0 tasks: then shares by
 * weight give way to bounded waits.
 */
#ifndef __SCX_PHASE_FAIR_BPF_H
#define __SCX_PHASE_FAIR_BPF_H

#include "intf.h"
#include "work.bpf.h"
#include "task_ctx.bpf.h"
#include "classes.bpf.h"

enum vtime_domain {
	DOMAIN_FAIR,
	DOMAIN_BOOST,
	NR_DOMAINS,
};

/* Knob: time slice in ns (--slice-us). */
const volatile u64 slice_ns = 5ULL * 1000 * 1000;

/* The window around the clock, in slices (see above). */
#define VTIME_LEAD_SLICES	8
#define VTIME_DRIFT_SLICES	2
#define VTIME_LAG_SLICES	6
/* How long a queued task may see newcomers go ahead of it, at most. */
#define VTIME_CATCHUP_NS	(1000ULL * 1000 * 1000)
/*
 * The clock is written when it moved this far, or this long after its
 * last write: every CPU reads its line, so writes are kept rare.
 */
#define CLOCK_STEP_NS		(50ULL * 1000)
#define CLOCK_STAMP_NS		(1000ULL * 1000)

/*
 * One domain's clock, on a cache line of its own: its value, and the
 * value and time of its last write, from which the floor grows.
 */
struct vclock {
	u64 vtime;
	u64 at_vtime;
	u64 at_ns;
	u64 _pad[5];
} __attribute__((aligned(64)));

static struct vclock vclocks[NR_DOMAINS];
/* Real ns per ns of vtime at which the floor moves (fair_init()). */
static u64 floor_div = 1;

/*
 * A fair task's slice when @waiting tasks wait in its CPU's queue: the
 * whole slice while a few wait, shorter as more do, so that a queue turns
 * over within about SLICE_FULL_WAITERS slices (down to slice_ns /
 * SLICE_MIN_DIV). EEVDF's slice is 2-3 ms on these hosts; with 5 ms and
 * 640 tasks a CPU, one turn of a queue took 3 s.
 */
#define SLICE_FULL_WAITERS	4
#define SLICE_MIN_DIV		8

static __always_inline u64 fair_slice(u64 waiting)
{
	u64 s;

	if (waiting <= SLICE_FULL_WAITERS)
		return slice_ns;
	s = slice_ns * SLICE_FULL_WAITERS / waiting;
	return s > slice_ns / SLICE_MIN_DIV ? s : slice_ns / SLICE_MIN_DIV;
}

static __always_inline u32 domain_of(u32 cls)
{
	return class_boosted(cls) ? DOMAIN_BOOST : DOMAIN_FAIR;
}

static __always_inline bool vtime_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

static __always_inline u64 vtime_max(u64 a, u64 b)
{
	return vtime_before(a, b) ? b : a;
}

static __always_inline void fair_init(void)
{
	u64 window = (VTIME_LEAD_SLICES + VTIME_LAG_SLICES) * slice_ns;

	floor_div = window ? VTIME_CATCHUP_NS / window : 1;
	if (!floor_div)
		floor_div = 1;
}

/* The time since @c's last write (0 if another CPU's clock is ahead of ours). */
static __always_inline u64 clock_age(const struct vclock *c, u64 now)
{
	u64 at = c->at_ns;

	return (s64)(now - at) > 0 ? now - at : 0;
}

/*
 * Domain @d's clock at @now: its value, or its floor if that is ahead.
 * The fields are written without a lock; a read that mixes two writes is
 * off by at most one CLOCK_STAMP_NS of floor, which the window absorbs.
 */
static __always_inline u64 clock_read(u32 d, u64 now)
{
	struct vclock *c = &vclocks[d & 1];
	u64 floor = c->at_vtime + clock_age(c, now) / floor_div;

	return vtime_max(c->vtime, floor);
}

/* A task started at @vtime out of a queue of domain @d: move the clock. */
static __always_inline void clock_started(u32 d, u64 vtime, u64 now)
{
	struct vclock *c = &vclocks[d & 1];
	u64 cur = clock_read(d, now), v = vtime_max(cur, vtime);

	/*
	 * One task far ahead (a sleeper with a lead) moves it a slice at
	 * most: a jump would put every waking task behind its whole queue.
	 */
	if (vtime_before(cur + slice_ns, v))
		v = cur + slice_ns;
	if (vtime_before(c->vtime + CLOCK_STEP_NS, v) || clock_age(c, now) >= CLOCK_STAMP_NS) {
		c->vtime = v;
		c->at_vtime = v;
		c->at_ns = now;
	}
}

/*
 * The vtime @tctx's task joins queue @dsq at, in its current domain: a
 * waking task (@enq_flags has SCX_ENQ_WAKEUP) with a slice of credit at
 * most, others with what they are owed, within the window (see above).
 */
static __always_inline u64 queue_vtime(struct task_ctx *tctx, u64 dsq, u64 enq_flags, u64 now)
{
	u32 d = domain_of(tctx->cls) & 1;
	u64 clk = clock_read(d, now), ref = clk, lowest;
	struct task_struct *head;

	if (enq_flags & SCX_ENQ_WAKEUP) {
		head = dsq_peek(dsq);
		if (head && vtime_before(head->scx.dsq_vtime, ref))
			ref = head->scx.dsq_vtime;
		if (vtime_before(ref, clk - VTIME_DRIFT_SLICES * slice_ns))
			ref = clk - VTIME_DRIFT_SLICES * slice_ns;
		lowest = ref - slice_ns;
	} else {
		lowest = clk - VTIME_LAG_SLICES * slice_ns;
	}
	if (vtime_before(tctx->vtime[d], lowest))
		tctx->vtime[d] = lowest;
	else if (vtime_before(ref + VTIME_LEAD_SLICES * slice_ns, tctx->vtime[d]))
		tctx->vtime[d] = ref + VTIME_LEAD_SLICES * slice_ns;
	tctx->queued = 1;
	return tctx->vtime[d];
}

/*
 * @tctx's task starts. It moves the clock only if it came out of a queue
 * and others still wait there (@company): a task alone on its CPU, requeued
 * only because its slice ended, runs out of order as much as one handed
 * an idle CPU. Measured on 2 vCPUs: an idle-phase spinner alone on CPU 1,
 * charged 8x, pushed the clock a slice per start, every waking task on
 * CPU 0 joined behind CPU 0's hogs, and 5 ms sleepers woke 50 ms late.
 */
static __always_inline void fair_running(struct task_ctx *tctx, bool company, u64 now)
{
	u32 d = domain_of(tctx->cls) & 1;

	if (tctx->queued && company)
		clock_started(d, tctx->vtime[d], now);
}

/* Charge @used ns of CPU to the domain @tctx's task runs in. */
static __always_inline void fair_charge(struct task_struct *p,
					struct task_ctx *tctx, u64 used)
{
	u32 d = domain_of(tctx->cls) & 1;

	tctx->vtime[d] += class_charge(tctx->cls, used, p->scx.weight);
}

/* A new task starts at the clocks, with no credit. */
static __always_inline void fair_enable(struct task_ctx *tctx, u64 now)
{
	tctx->vtime[DOMAIN_FAIR] = clock_read(DOMAIN_FAIR, now);
	tctx->vtime[DOMAIN_BOOST] = clock_read(DOMAIN_BOOST, now);
}

#endif /* __SCX_PHASE_FAIR_BPF_H */
