/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Where a task's phase comes from, in order of precedence:
 *   1. the pinned tid map (tid -> struct phase_hint): root and admin;
 *   2. the task's own slot in its workload's hint memory (hint service);
 *   3. its thread-name rule (classify.bpf.h);
 *   4. its process's process-wide phase (slot 0 of the same memory).
 *
 * Both BPF objects include this file: the hint service's object
 * (service.bpf.c) creates and pins the maps, and the scheduler reuses
 * them. Only the daemon writes hint_workloads and hint_tasks; the slot
 * memory is written by the client with plain stores, so every value read
 * from it is checked here: garbage and phases the workload may not set
 * are ignored, and reported to the caller for counting.
 */
#ifndef __SCX_PHASE_HINTS_BPF_H
#define __SCX_PHASE_HINTS_BPF_H

#include "intf.h"
#include "classify.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, u32);
	__type(value, struct phase_hint);
	/* The loader resizes this (--max-hints) before load. */
	__uint(max_entries, 65536);
} phase_map SEC(".maps");

/* One workload's hint memory; the daemon creates one per process. */
struct hint_slots {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, u32);
	__type(value, struct phase_hint);
	__uint(max_entries, SCX_PHASE_HINT_SLOTS);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, SCX_PHASE_MAX_WORKLOADS);
	__type(key, u32);
	__array(values, struct hint_slots);
} hint_memory SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SCX_PHASE_MAX_WORKLOADS);
	__type(key, u32);
	__type(value, struct hint_workload);
} hint_workloads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hint_task);
} hint_tasks SEC(".maps");

/* What resolving a task's phase found. */
struct hint_lookup {
	u32 phase;		/* SCX_PHASE_NONE for none */
	s32 node;
	u32 source;		/* enum scx_phase_hint_source */
	u32 ignored;		/* last ignored value, or SCX_PHASE_HINT_UNSET */
	u32 invalid;		/* values above the last phase seen */
	u32 refused;		/* phases the writer may not set */
	u32 wid;		/* the task's process's workload, or 0 */
	struct hint_ref thread_ref;	/* the task's own binding, or none */
	struct hint_ref process_ref;	/* its process's binding, or none */
};

static __always_inline void hint_ignore(struct hint_lookup *h, u32 phase, bool refused)
{
	h->ignored = phase;
	if (refused)
		h->refused++;
	else
		h->invalid++;
}

/*
 * The hint in @ref's slot, if the binding is current and the value is a
 * phase its workload may set. The client writes phase and node with one
 * 8-byte store, so one 8-byte load never sees half of each.
 */
static __always_inline bool slot_hint(const struct hint_ref *ref, struct hint_lookup *h)
{
	u32 wid = ref->wid, idx = ref->slot, phase;
	struct hint_workload *w;
	struct phase_hint *slot;
	void *memory;
	u64 v;

	if (!wid)
		return false;
	w = bpf_map_lookup_elem(&hint_workloads, &wid);
	if (!w || !w->pid || w->generation != ref->generation)
		return false;
	memory = bpf_map_lookup_elem(&hint_memory, &wid);
	if (!memory)
		return false;
	slot = bpf_map_lookup_elem(memory, &idx);
	if (!slot)
		return false;
	v = *(volatile u64 *)slot;
	phase = (u32)v;
	if (phase == SCX_PHASE_HINT_UNSET)
		return false;
	if (phase >= SCX_PHASE_NR || !(w->allow & (1U << phase))) {
		hint_ignore(h, phase, phase < SCX_PHASE_NR);
		return false;
	}
	h->phase = phase;
	h->node = (s32)(v >> 32);
	return true;
}

/*
 * The raw value of the slot @ref names, or ~0 (what an unset slot holds)
 * if the binding is not current: what the tick compares to see whether a
 * slot changed, so it neither checks nor counts the value.
 */
static __always_inline u64 slot_raw(const struct hint_ref *ref)
{
	u32 wid = ref->wid, idx = ref->slot;
	struct hint_workload *w;
	struct phase_hint *slot;
	void *memory;

	if (!wid)
		return ~0ULL;
	w = bpf_map_lookup_elem(&hint_workloads, &wid);
	if (!w || !w->pid || w->generation != ref->generation)
		return ~0ULL;
	memory = bpf_map_lookup_elem(&hint_memory, &wid);
	if (!memory)
		return ~0ULL;
	slot = bpf_map_lookup_elem(memory, &idx);
	return slot ? *(volatile u64 *)slot : ~0ULL;
}

/* The workload @ref names, if the binding is current; else 0. */
static __always_inline u32 bound_workload(const struct hint_ref *ref)
{
	u32 wid = ref->wid;
	struct hint_workload *w;

	if (!wid)
		return 0;
	w = bpf_map_lookup_elem(&hint_workloads, &wid);
	return w && w->pid && w->generation == ref->generation ? wid : 0;
}

static __always_inline bool tid_map_hint(const struct task_struct *p, struct hint_lookup *h)
{
	u32 tid = p->pid;
	struct phase_hint *hint = bpf_map_lookup_elem(&phase_map, &tid);

	if (!hint)
		return false;
	if (hint->phase >= SCX_PHASE_NR) {
		hint_ignore(h, hint->phase, false);
		return false;
	}
	h->phase = hint->phase;
	h->node = hint->numa_node;
	return true;
}

/*
 * Whether a name rule may put @p in @phase. A name is not a credential:
 * anyone can name a thread pt_autograd_0, so a name may raise a thread
 * only where the raise rule would allow it: its process holds the raise
 * privilege (CAP_SYS_NICE on the host), or registered with the hint
 * service and was granted @phase there (a member of the hint group;
 * `import scx_phase` registers). Idle lowers and is anyone's. A
 * single-tenant node may trust every name (--trust-names).
 */
static __always_inline bool name_may_set(const struct task_struct *p, u32 wid, u32 phase)
{
	struct hint_workload *w;

	if (phase == SCX_PHASE_IDLE || classify_trusted)
		return true;
	if (wid && (w = bpf_map_lookup_elem(&hint_workloads, &wid)) &&
	    phase < SCX_PHASE_NR && (w->allow & (1U << phase)))
		return true;
	return creds_may_raise(p);
}

/*
 * The phase @p is in and where it came from. Nothing found gives
 * SCX_PHASE_NONE, so a bad writer can never push a task into an
 * undefined class.
 */
static __always_inline void resolve_hint(struct task_struct *p, struct hint_lookup *h)
{
	struct hint_task *mine, *leader;

	h->phase = SCX_PHASE_NONE;
	h->node = SCX_PHASE_NODE_ANY;
	h->source = SCX_PHASE_SRC_NONE;
	h->ignored = SCX_PHASE_HINT_UNSET;
	h->invalid = 0;
	h->refused = 0;
	__builtin_memset(&h->thread_ref, 0, sizeof(h->thread_ref));
	__builtin_memset(&h->process_ref, 0, sizeof(h->process_ref));

	mine = bpf_task_storage_get(&hint_tasks, p, 0, 0);
	leader = p->group_leader == p ? mine :
		 bpf_task_storage_get(&hint_tasks, p->group_leader, 0, 0);
	h->wid = leader ? bound_workload(&leader->process) : 0;
	if (mine)
		h->thread_ref = mine->thread;
	if (leader)
		h->process_ref = leader->process;

	if (tid_map_hint(p, h)) {
		h->source = SCX_PHASE_SRC_TID_MAP;
		return;
	}
	if (mine && slot_hint(&mine->thread, h)) {
		h->source = SCX_PHASE_SRC_THREAD;
		return;
	}
	h->phase = classify(p);
	if (h->phase != SCX_PHASE_NONE) {
		if (name_may_set(p, h->wid, h->phase)) {
			h->source = SCX_PHASE_SRC_NAME;
			return;
		}
		hint_ignore(h, h->phase, true);
		h->phase = SCX_PHASE_NONE;
	}
	if (leader && slot_hint(&leader->process, h))
		h->source = SCX_PHASE_SRC_PROCESS;
}

#endif /* __SCX_PHASE_HINTS_BPF_H */
