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
 * The phase hinted for @p, or SCX_PHASE_NONE. Garbage values are treated as
 * no hint, so a bad writer can never push a task into an undefined class.
 */
static __always_inline u32 hinted_phase(const struct task_struct *p)
{
	u32 tid = p->pid;
	struct phase_hint *hint = bpf_map_lookup_elem(&phase_map, &tid);

	if (!hint)
		return SCX_PHASE_NONE;
	if (hint->phase >= SCX_PHASE_NR) {
		count_invalid_hint();
		return SCX_PHASE_NONE;
	}
	return hint->phase;
}

#endif /* __SCX_PHASE_HINTS_BPF_H */
