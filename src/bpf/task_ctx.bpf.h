/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Per-task scheduler state, in task-local storage so that it is freed with
 * the task.
 */
#ifndef __SCX_PHASE_TASK_CTX_BPF_H
#define __SCX_PHASE_TASK_CTX_BPF_H

struct task_ctx {
	u32 phase;		/* phase seen at the last enqueue */
	u64 running_since;	/* timestamp of the last ops.running() */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctx_stor SEC(".maps");

static __always_inline struct task_ctx *task_ctx(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctx_stor, p, 0, 0);
}

static __always_inline struct task_ctx *task_ctx_create(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctx_stor, p, 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
}

#endif /* __SCX_PHASE_TASK_CTX_BPF_H */
