/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Per-task scheduler state, in task-local storage so that it is freed with
 * the task.
 */
#ifndef __SCX_PHASE_TASK_CTX_BPF_H
#define __SCX_PHASE_TASK_CTX_BPF_H

#include "intf.h"

struct task_ctx {
	u32 phase;		/* resolved phase, SCX_PHASE_NONE without one */
	u32 cls;		/* enum phase_class of @phase */
	s32 node;		/* data_loading: the node to run on; else -1 */
	u32 queued;		/* waits in a vtime-ordered queue, not handed a CPU */
	u32 source;		/* enum scx_phase_hint_source of @phase */
	u32 wid;		/* its process's workload (hint service), or 0 */
	u64 running_since;	/* last ops.running() or charge, 0 if not running */
	u64 enqueued_at;	/* when it last became runnable-and-waiting */
	u64 vtime[2];		/* per vtime domain (fair.bpf.h) */
	/*
	 * The light tick (main.bpf.c): the task's bindings as of the last
	 * full resolve, what its slots and name held at the last tick, and
	 * the ticks since a full resolve.
	 */
	struct hint_ref thread_ref;
	struct hint_ref process_ref;
	u64 seen[4];		/* thread slot, process slot, name (16 bytes) */
	u32 seen_valid;		/* seen[] was read since the last full resolve */
	u32 light_ticks;
	struct bpf_cpumask __kptr *tmp_mask;	/* scratch (placement.bpf.h) */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctx_stor SEC(".maps");

static __always_inline struct task_ctx *task_ctx(const struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctx_stor, (struct task_struct *)p, 0, 0);
}

/*
 * @p's state in a callback of @cb: ops.init_task() made it before @p
 * could run, so none is a bug (or root deleted it). The scheduler then
 * exits, naming the task and the callback, rather than schedule @p
 * blind: sched_ext hands every task back to the fair class, and the
 * loader prints the reason (and `scx_phase status` keeps it).
 */
#define task_ctx_ours(p, cb)							\
	({									\
		struct task_ctx *__tctx = task_ctx(p);				\
										\
		if (!__tctx)							\
			scx_bpf_error(cb ": no task context for %s[%d]; "	\
				      "ops.init_task() gives every task one",	\
				      (p)->comm, (p)->pid);			\
		__tctx;								\
	})

/* A new task's state, with its scratch cpumask; NULL if out of memory. */
static __always_inline struct task_ctx *task_ctx_create(struct task_struct *p)
{
	struct task_ctx *tctx;
	struct bpf_cpumask *m;

	tctx = bpf_task_storage_get(&task_ctx_stor, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx)
		return NULL;
	m = bpf_cpumask_create();
	if (!m)
		return NULL;
	m = bpf_kptr_xchg(&tctx->tmp_mask, m);
	if (m)
		bpf_cpumask_release(m);
	return tctx;
}

#endif /* __SCX_PHASE_TASK_CTX_BPF_H */
