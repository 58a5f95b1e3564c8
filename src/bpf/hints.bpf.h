/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The phase hint map: tid -> struct phase_hint, written from userspace by
 * the shim, pinned by the loader so that it outlives a scheduler restart.
 */
#ifndef __SCX_PHASE_HINTS_BPF_H
#define __SCX_PHASE_HINTS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, u32);
	__type(value, struct phase_hint);
	/* The loader resizes this (--max-hints) before load. */
	__uint(max_entries, 65536);
} phase_map SEC(".maps");

/*
 * The phase @p is in: its explicit hint, else its thread-name rule, else
 * SCX_PHASE_NONE. A hint with a phase outside the ABI counts as no hint
 * (and is counted), so a bad writer can never push a task into an
 * undefined class. *@node gets the hinted node, or SCX_PHASE_NODE_ANY.
 */
static __always_inline u32 resolve_phase(const struct task_struct *p, s32 *node)
{
	u32 tid = p->pid;
	struct phase_hint *hint = bpf_map_lookup_elem(&phase_map, &tid);

	*node = SCX_PHASE_NODE_ANY;
	if (hint) {
		if (hint->phase < SCX_PHASE_NR) {
			*node = hint->numa_node;
			return hint->phase;
		}
		count_invalid_hint();
	}
	return classify(p);
}

/*
 * A thread's hint dies with it, so a recycled tid never inherits a boost.
 * This runs in do_exit(), while the tid still belongs to the exiting
 * thread, so it cannot delete a hint written for the tid's next owner.
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(forget_exiting_thread, struct task_struct *p)
{
	u32 tid = p->pid;

	bpf_map_delete_elem(&phase_map, &tid);
	return 0;
}

#endif /* __SCX_PHASE_HINTS_BPF_H */
