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
typedef unsigned short u16;
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
 * The scheduler's queues (DSQ ids), in one place so that no two pieces
 * pick the same id: data loaders and boosted work per node, fair work per
 * CPU. Built-in DSQ ids have bit 63 set, so none of these collides.
 */
enum scx_phase_dsq {
	SCX_PHASE_LOADER_DSQ_BASE	= 16,				/* + node */
	SCX_PHASE_BOOST_DSQ_BASE	= 16 + SCX_PHASE_MAX_NODES,	/* + node */
	SCX_PHASE_FAIR_DSQ_BASE		= 1 << 16,			/* + CPU */
};
_Static_assert(SCX_PHASE_BOOST_DSQ_BASE + SCX_PHASE_MAX_NODES <= SCX_PHASE_FAIR_DSQ_BASE,
	       "the boosted queues overlap the fair ones");

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
 * A hint: the value of the pinned tid map (phase_map, keyed by the host's
 * thread id; root and admin path) and of every hint-service slot.
 */
struct phase_hint {
	u32 phase;	/* enum scx_phase_id; anything else counts as no hint */
	s32 numa_node;	/* SCX_PHASE_NODE_ANY or a NUMA node id */
};

/*
 * The hint service's shared memory. Each registered process (a workload)
 * gets its own BPF_F_MMAPABLE array of SCX_PHASE_HINT_SLOTS struct
 * phase_hint slots, which it maps and writes with plain 8-byte stores.
 * Slot SCX_PHASE_PROCESS_SLOT holds the process-wide phase; every other
 * slot belongs to one thread the daemon bound to it. A slot whose phase is
 * SCX_PHASE_HINT_UNSET holds no hint.
 */
#define SCX_PHASE_HINT_UNSET	0xffffffffU

enum scx_phase_hint_limits {
	SCX_PHASE_HINT_SLOTS	= 4096,
	SCX_PHASE_PROCESS_SLOT	= 0,
	/* Workload ids are 1 .. SCX_PHASE_MAX_WORKLOADS - 1; 0 means none. */
	SCX_PHASE_MAX_WORKLOADS	= 1024,
	/* Allow masks: bit N set means phase N may be set. */
	SCX_PHASE_ALLOW_IDLE	= 1 << SCX_PHASE_IDLE,
	SCX_PHASE_ALLOW_ALL	= (1 << SCX_PHASE_NR) - 1,
};

/*
 * A registered workload (the hint_workloads array, indexed by workload id),
 * written only by the daemon. The scheduler honours a binding to workload
 * @wid only while @pid is set and the binding's generation is @generation, and a
 * slot's phase only if @allow has its bit.
 */
struct hint_workload {
	u32 pid;		/* the process, as the daemon sees it; 0: free */
	u32 generation;	/* bumped each time the id is handed out */
	u32 allow;		/* phases it may set (SCX_PHASE_ALLOW_*) */
	u32 uid;		/* its effective uid at registration */
	u64 start_time;		/* its start, in clock ticks after boot */
	u64 cgroup_id;		/* its cgroup v2 id at registration */
};

/* A task's binding to a slot of a workload's memory; wid 0 means none. */
struct hint_ref {
	u32 wid;
	u32 slot;
	u32 generation;
	u32 _pad;
};

/*
 * Task-local storage written only by the daemon (keyed by a pidfd it
 * holds): @thread is this thread's own slot; @process, on a group leader,
 * is the slot of its process's process-wide phase.
 */
struct hint_task {
	struct hint_ref thread;
	struct hint_ref process;
};

/* Where a task's effective phase came from, in order of precedence. */
enum scx_phase_hint_source {
	SCX_PHASE_SRC_NONE	= 0,
	SCX_PHASE_SRC_TID_MAP	= 1,	/* the pinned tid map (root, admin) */
	SCX_PHASE_SRC_THREAD	= 2,	/* the thread's slot (hint service) */
	SCX_PHASE_SRC_NAME	= 3,	/* a thread-name rule */
	SCX_PHASE_SRC_PROCESS	= 4,	/* its process's process-wide phase */
};

/*
 * One record of the hint dump iterator (pinned as `hints`): a task with an
 * effective hint, a binding, or an ignored slot value.
 */
struct hint_dump {
	u32 tid;		/* in the reader's PID namespace */
	u32 tgid;
	u32 phase;		/* effective phase, SCX_PHASE_NONE for none */
	s32 numa_node;
	u32 source;		/* enum scx_phase_hint_source */
	u32 ignored;		/* a slot phase the scheduler ignored (garbage
				 * or refused), else SCX_PHASE_HINT_UNSET */
	u64 start_time;		/* the task's start, ns after boot */
	struct hint_task binding;
};

/*
 * Per-phase counters: one slot per phase plus SCX_PHASE_NONE, per CPU
 * (the pinned phase_stats map). Userspace sums the CPUs.
 */
/*
 * The wait histogram of struct phase_counters: bucket i counts waits of up
 * to 10^(i+1) microseconds (10 us, 100 us, ... 1 s); the last, longer ones.
 */
enum scx_phase_wait_hist {
	SCX_PHASE_WAIT_BUCKETS = 7,
};

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
	u64 refused_hints;	/* SCX_PHASE_NONE slot: slot phases the
				 * writer may not set */
	u64 process_ns;		/* run time in this phase that came from a
				 * process-wide phase */
	u64 fair_steals;	/* SCX_PHASE_NONE slot: fair tasks an idle CPU
				 * took from another CPU's queue */
	u64 fair_rebalances;	/* SCX_PHASE_NONE slot: lagging queue heads a
				 * busy CPU took from another CPU */
	u64 claim_passes;	/* SCX_PHASE_NONE slot: claimants' tasks a CPU
				 * claimed exclusively ran from behind others'
				 * tasks queued there before the claim */
	u64 rcu_readers;	/* SCX_PHASE_NONE slot: tasks preempted inside
				 * an RCU read-side section, run next */
	u64 tick_resolves;	/* SCX_PHASE_NONE slot: ticks that resolved
				 * their task's hint in full (the others only
				 * checked that nothing changed) */
	s64 threads;		/* tasks in this phase now (sum over CPUs) */
	u64 wait_hist[SCX_PHASE_WAIT_BUCKETS];	/* waits, by length */
};

/*
 * Work counters (the pinned work_stats map, per CPU, one entry per
 * callback): how many CPUs and queues each call looked at, so that the
 * cost of a scheduling event as the host grows is an exact count, not a
 * time (times are distorted under TCG and overcommit).
 */
enum scx_phase_callback {
	SCX_PHASE_CB_SELECT_CPU,
	SCX_PHASE_CB_ENQUEUE,
	SCX_PHASE_CB_DISPATCH,
	SCX_PHASE_CB_RUNNING,
	SCX_PHASE_CB_TICK,
	SCX_PHASE_CB_STOPPING,
	SCX_PHASE_CB_SPILL_TIMER,
	SCX_PHASE_CB_CLAIMS_SYNC,	/* not a callback: the masks' rebuild
					 * after the claims changed, inside
					 * whichever callback saw it first */
	SCX_PHASE_NR_CALLBACKS,
};

struct work_counters {
	u64 calls;		/* times the callback ran */
	u64 cpus;		/* CPUs its calls looked at, in all: a loop's
				 * iteration, a test of another CPU's state */
	u64 queues;		/* queues its calls looked at, in all: a peek,
				 * a length, a move from one */
	u64 max_cpus;		/* most CPUs a single call looked at */
	u64 max_queues;		/* most queues a single call looked at */
};

/*
 * CPU claims of the workload API. The service writes who claims each CPU
 * (cpu_claims) and each workload's CPUs (workload_claims), then bumps
 * claim_state.generation, so that the scheduler rebuilds its mask of
 * exclusive CPUs. Claims belong to a workload id of hint_workloads.
 */
enum scx_phase_claim_limits {
	SCX_PHASE_CLAIM_MAX_CPUS = 64,
};

struct cpu_claim {
	u32 wid;		/* the claiming workload; 0: unclaimed */
	u32 exclusive;		/* nobody else is placed here */
};

struct workload_claim {
	u32 nr_cpus;
	u32 _pad;
	u16 cpus[SCX_PHASE_CLAIM_MAX_CPUS];
};

struct claim_state {
	u64 generation;
};

/*
 * What the scheduler counted for one workload in one phase slot since it
 * registered (the workload_stats array, index wid * SCX_PHASE_NR_SLOTS +
 * slot), so that a job can read its own figures through the hint service.
 */
struct workload_phase_stats {
	u64 runtime_ns;		/* CPU time of its threads */
	u64 boosted_ns;		/* of which in a boosted class */
	u64 wait_ns;		/* time runnable, waiting for a CPU */
	u64 waits;		/* how many times it waited */
};

/*
 * The hint service's counters (the pinned service_stats array, one entry),
 * written by the daemon, so that --monitor and bpftool can read them.
 */
struct service_counters {
	u64 connections;	/* clients accepted */
	u64 registrations;	/* threads bound to a slot */
	u64 one_shot_hints;	/* tid-map hints written for a client */
	u64 refused;		/* requests refused by a rule */
	u64 bad_requests;	/* malformed requests */
	u64 dropped_clients;	/* clients cut off for flooding or not reading */
	u64 workloads;		/* registered processes now */
	u64 bound_threads;	/* threads bound to a slot now */
};

#endif /* __SCX_PHASE_INTF_H */
