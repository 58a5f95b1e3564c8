/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_phase: a sched_ext scheduler that schedules by training phase.
 *
 * This file only wires the sched_ext callbacks to the policy pieces:
 *   stats.bpf.h     per-phase counters
 *   hints.bpf.h     the tid -> phase map written by the hint shim
 *   fair.bpf.h      weighted vtime fairness, the base every task gets
 *   task_ctx.bpf.h  per-task state
 *   topology.bpf.h  host topology from the loader
 */
#include <scx/common.bpf.h>
#include "intf.h"
#include "topology.bpf.h"
#include "task_ctx.bpf.h"
#include "stats.bpf.h"
#include "hints.bpf.h"
#include "fair.bpf.h"

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

/* Every queued task waits here, ordered by vtime. */
#define SHARED_DSQ 0

/* Re-read @p's hint: every enqueue sees the phase written most recently. */
static __always_inline void note_enqueue(struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx(p);
	u32 phase = hinted_phase(p);

	if (tctx)
		tctx->phase = phase;
	count_enqueue(phase);
}

/* Charge the CPU time @p used since it started or was last charged. */
static __always_inline void charge(struct task_struct *p, struct task_ctx *tctx,
				   u64 now)
{
	u64 used;

	if (!tctx->running_since)
		return;
	used = now - tctx->running_since;
	tctx->running_since = now;
	fair_charge(p, used);
	count_runtime(tctx->phase, used);
}

s32 BPF_STRUCT_OPS(phase_select_cpu, struct task_struct *p, s32 prev_cpu,
		   u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	/* An idle CPU needs no queueing decision: run there now. */
	if (is_idle) {
		note_enqueue(p);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

void BPF_STRUCT_OPS(phase_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu;

	note_enqueue(p);

	/*
	 * The last runnable task of a CPU whose slice ended: this CPU has
	 * already looked for work and found none, so run it again right here
	 * (with a fresh slice) rather than queue it behind an idle CPU.
	 */
	if (enq_flags & SCX_ENQ_LAST) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		return;
	}

	scx_bpf_dsq_insert_vtime(p, SHARED_DSQ, slice_ns, fair_vtime(p),
				 enq_flags);

	/* Wake an idle CPU to take it, if there is one. */
	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu >= 0)
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

void BPF_STRUCT_OPS(phase_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(SHARED_DSQ, 0);
}

void BPF_STRUCT_OPS(phase_running, struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx(p);

	if (tctx)
		tctx->running_since = scx_bpf_now();
	fair_running(p);
}

/*
 * A task that runs on and on (alone on its CPU, or re-picked without going
 * through enqueue) is still charged every tick to the phase it is in now,
 * so run time lands on the right phase even for a thread that never sleeps.
 */
void BPF_STRUCT_OPS(phase_tick, struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx(p);

	if (!tctx)
		return;
	charge(p, tctx, scx_bpf_now());
	tctx->phase = hinted_phase(p);
}

void BPF_STRUCT_OPS(phase_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = task_ctx(p);

	if (!tctx)
		return;
	charge(p, tctx, scx_bpf_now());
	tctx->running_since = 0;
}

void BPF_STRUCT_OPS(phase_enable, struct task_struct *p)
{
	fair_enable(p);
}

s32 BPF_STRUCT_OPS(phase_init_task, struct task_struct *p,
		   struct scx_init_task_args *args)
{
	struct task_ctx *tctx = task_ctx_create(p);

	if (!tctx)
		return -ENOMEM;
	tctx->phase = SCX_PHASE_NONE;
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(phase_init)
{
	return scx_bpf_create_dsq(SHARED_DSQ, -1);
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
	       .stopping	= (void *)phase_stopping,
	       .tick		= (void *)phase_tick,
	       .enable		= (void *)phase_enable,
	       .init_task	= (void *)phase_init_task,
	       .init		= (void *)phase_init,
	       .exit		= (void *)phase_exit,
	       /*
	        * Enqueue even the last runnable task of a CPU when its slice
	        * ends: otherwise the kernel silently refills its slice, and a
	        * phase change goes unseen for as long as the task keeps running.
	        */
	       .flags		= SCX_OPS_ENQ_LAST,
	       .name		= "scx_phase");
