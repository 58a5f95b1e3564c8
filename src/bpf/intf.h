/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Types and constants shared by the BPF scheduler and the Rust side
 * (bindgen turns this file into src/bpf_intf.rs).
 *
 * Everything is prefixed: un-prefixed names would clash with vmlinux.h.
 */
#ifndef __SCX_PHASE_INTF_H
#define __SCX_PHASE_INTF_H

#ifndef __VMLINUX_H__
typedef unsigned int u32;
typedef signed int s32;
typedef unsigned long long u64;
typedef signed long long s64;
#endif

/* Training phases, in the order and numbering of the hint ABI. */
enum scx_phase_id {
	SCX_PHASE_IDLE		= 0,
	SCX_PHASE_DATA_LOADING	= 1,
	SCX_PHASE_FORWARD	= 2,
	SCX_PHASE_BACKWARD	= 3,
	SCX_PHASE_OPTIMIZER	= 4,
	SCX_PHASE_CHECKPOINT	= 5,
	SCX_PHASE_NR		= 6,
	/* Stats slot for tasks without a (valid) hint. */
	SCX_PHASE_NONE		= SCX_PHASE_NR,
	SCX_PHASE_NR_SLOTS	= SCX_PHASE_NR + 1,
};

enum scx_phase_limits {
	SCX_PHASE_MAX_CPUS	= 1024,
	SCX_PHASE_MAX_NODES	= 64,
	SCX_PHASE_MAX_GPUS	= 64,
	/* numa_node value meaning "the scheduler chooses". */
	SCX_PHASE_NODE_ANY	= -1,
	/* Thread-name classification rules, and a name's length. */
	SCX_PHASE_MAX_RULES	= 32,
	SCX_PHASE_COMM_LEN	= 16,
};

/*
 * A thread-name rule: a task without an explicit hint whose name starts
 * with @prefix (its first @len bytes) is treated as being in @phase.
 */
struct classify_rule {
	char prefix[SCX_PHASE_COMM_LEN];
	u32 len;
	u32 phase;
};

/*
 * Value of the pinned phase_map, keyed by kernel thread id (u32, gettid()).
 * Written by the hint shim, read by the scheduler on every enqueue.
 */
struct phase_hint {
	u32 phase;	/* enum scx_phase_id; anything else counts as no hint */
	s32 numa_node;	/* SCX_PHASE_NODE_ANY or a NUMA node id */
};

/*
 * Per-phase counters: one slot per phase plus SCX_PHASE_NONE, per CPU
 * (the pinned phase_stats map). Userspace sums the CPUs.
 */
struct phase_counters {
	u64 enqueues;		/* times a task of this phase was queued to run */
	u64 runtime_ns;		/* CPU time used */
	u64 wait_ns;		/* time runnable but not running */
	u64 max_wait_ns;	/* longest single wait (max over CPUs) */
	u64 max_wait_tid;	/* the thread that waited max_wait_ns */
	u64 preemptions;	/* CPUs taken from lower-class tasks on wake-up */
	u64 budget_exhaustions;	/* boost budget windows this phase used up */
	u64 local_ns;		/* data_loading: run time on its own node */
	u64 remote_ns;		/* data_loading: run time on another node */
	u64 invalid_hints;	/* SCX_PHASE_NONE slot: hints out of range */
	u64 fair_steals;	/* SCX_PHASE_NONE slot: fair tasks an idle CPU
				 * took from another CPU's queue */
	u64 fair_rebalances;	/* SCX_PHASE_NONE slot: lagging queue heads a
				 * busy CPU took from another CPU */
	s64 threads;		/* tasks in this phase now (sum over CPUs) */
};

#endif /* __SCX_PHASE_INTF_H */
