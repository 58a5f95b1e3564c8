/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The hint service's BPF object. It owns the hint maps (hints.bpf.h),
 * which the loader pins so that hints outlive a restart and the scheduler
 * object reuses. It needs no sched_ext, so the service also runs, and is
 * tested, on kernels without it:
 *   - forget_exiting_thread drops a thread's tid-map hint as it exits;
 *   - dump_hints, a task iterator pinned as `hints`, reports every task's
 *     effective hint and binding, resolved by the scheduler's own code.
 */
#include <scx/common.bpf.h>
#include "intf.h"
#include "classify.bpf.h"
#include "hints.bpf.h"
#include "claims.bpf.h"

char _license[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct service_counters);
} service_stats SEC(".maps");

/*
 * A thread's tid-map hint dies with it, so a recycled tid never inherits a
 * boost. This runs in do_exit(), while the tid still belongs to the
 * exiting thread, so it cannot delete a hint written for the tid's next
 * owner. (Slot bindings live in task storage and go with the task.)
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(forget_exiting_thread, struct task_struct *p)
{
	u32 tid = p->pid;

	bpf_map_delete_elem(&phase_map, &tid);
	return 0;
}

SEC("iter/task")
int dump_hints(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct hint_dump rec = {};
	struct hint_task *binding;
	struct hint_lookup h;

	if (!task)
		return 0;
	resolve_hint(task, &h);
	binding = bpf_task_storage_get(&hint_tasks, task, 0, 0);
	if (h.source == SCX_PHASE_SRC_NONE && h.ignored == SCX_PHASE_HINT_UNSET && !binding)
		return 0;
	rec.tid = task->pid;
	rec.tgid = task->tgid;
	rec.phase = h.phase;
	rec.numa_node = h.node;
	rec.source = h.source;
	rec.ignored = h.ignored;
	rec.start_time = task->start_boottime;
	if (binding)
		rec.binding = *binding;
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}
