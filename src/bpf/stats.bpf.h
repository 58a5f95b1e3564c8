/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Per-phase counters. Per-CPU so the hot paths never share a cache line;
 * pinned by the loader so `scx_phase --monitor` and bpftool can read them.
 */
#ifndef __SCX_PHASE_STATS_BPF_H
#define __SCX_PHASE_STATS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct phase_counters);
	__uint(max_entries, SCX_PHASE_NR_SLOTS);
} phase_stats SEC(".maps");

static __always_inline struct phase_counters *phase_counters(u32 phase)
{
	u32 slot = phase < SCX_PHASE_NR_SLOTS ? phase : SCX_PHASE_NONE;

	return bpf_map_lookup_elem(&phase_stats, &slot);
}

static __always_inline void count_enqueue(u32 phase)
{
	struct phase_counters *c = phase_counters(phase);

	if (c)
		c->enqueues++;
}

static __always_inline void count_runtime(u32 phase, u64 ns)
{
	struct phase_counters *c = phase_counters(phase);

	if (c)
		c->runtime_ns += ns;
}

static __always_inline void count_invalid_hint(void)
{
	struct phase_counters *c = phase_counters(SCX_PHASE_NONE);

	if (c)
		c->invalid_hints++;
}

#endif /* __SCX_PHASE_STATS_BPF_H */
