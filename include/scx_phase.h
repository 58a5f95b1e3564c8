/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_phase hint library: tell the scx_phase scheduler which training phase
 * the calling thread, or the whole process, is in. Link with -lscx_phase.
 *
 * The process registers with the scx_phase hint service on its first call
 * (a Unix socket: $SCX_PHASE_SOCKET, default /run/scx_phase/hint.sock),
 * and each thread on its first hint; after that a hint is one plain store
 * to memory the scheduler reads: no system call, allowed under a
 * container's default seccomp profile. A forked child registers anew.
 * With $SCX_PHASE_MAP set, hints go to that pinned tid map instead, one
 * bpf() call each (root's admin path).
 *
 * Every call returns 0 or a negative errno:
 *   -ENOENT  scx_phase is not running (no hint service)
 *   -EPERM   refused by the service's rules: raising a thread above
 *            un-hinted work needs --hint-group membership or CAP_SYS_NICE;
 *            a thread of another user cannot be hinted
 *   -ESRCH   no thread with that id
 *   -EINVAL  invalid phase, node or thread id
 *   -ENOSPC  the service has no room left (slots, processes)
 *   -ETIMEDOUT the service did not answer within $SCX_PHASE_TIMEOUT_MS
 *            (default 1000): carry on un-hinted; it is asked again
 *            after a second
 * scx_phase_last_error() gives the one-line reason for the calling
 * thread's last failure.
 */
#ifndef SCX_PHASE_H
#define SCX_PHASE_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
	SCX_PHASE_IDLE = 0,
	SCX_PHASE_DATA_LOADING = 1,
	SCX_PHASE_FORWARD = 2,
	SCX_PHASE_BACKWARD = 3,
	SCX_PHASE_OPTIMIZER = 4,
	SCX_PHASE_CHECKPOINT = 5,
};

/* node for "let the scheduler choose". */
#define SCX_PHASE_NODE_ANY (-1)

/* The calling thread. */
int scx_phase_set(int phase);
int scx_phase_set_node(int phase, int node);
int scx_phase_clear(void);

/* Every thread of this process that has no hint of its own and no name
 * rule (an intra-op pool, say). */
int scx_phase_set_process(int phase);
int scx_phase_set_process_node(int phase, int node);
int scx_phase_clear_process(void);

/* Another thread, by its id in the caller's PID namespace, until it exits
 * (one request to the service each). */
int scx_phase_set_tid(pid_t tid, int phase, int node);
int scx_phase_clear_tid(pid_t tid);

const char *scx_phase_strerror(int err);
const char *scx_phase_last_error(void);

/*
 * What the scheduler counted for this process since it registered with the
 * hint service, one entry per phase slot: the six phases in order, then
 * threads without a phase (SCX_PHASE_NR_SLOTS in all). Fills up to max
 * entries of out; returns how many slots there are, or a negative errno.
 */
#define SCX_PHASE_NR_SLOTS 7

struct scx_phase_stats {
	unsigned long long runtime_ns;	/* CPU time of its threads */
	unsigned long long boosted_ns;	/* of which the scheduler boosted */
	unsigned long long wait_ns;	/* time runnable, waiting for a CPU */
	unsigned long long waits;	/* how many times they waited */
};

int scx_phase_stats(struct scx_phase_stats *out, int max);

/*
 * The workload API: what a job asks of the host at start, held until
 * scx_phase_workload_close() or the end of the process, whichever comes
 * first (the service releases it when the connection closes).
 *   -EPERM   claiming CPUs needs --hint-group membership or CAP_SYS_NICE
 *   -EBUSY   the CPUs are not free; scx_phase_last_error() names who holds
 *            them and what is free
 *   -ENOMEM  over the host's locked-memory budget (--max-locked-mem)
 */

/* node for "the node of the GPU this process uses" (CUDA_VISIBLE_DEVICES,
 * LOCAL_RANK). */
#define SCX_PHASE_NODE_GPU (-2)

struct scx_phase_workload_req {
	int cpus;		/* CPUs to claim; 0: none */
	int node;		/* a node id, SCX_PHASE_NODE_ANY or SCX_PHASE_NODE_GPU */
	int exclusive;		/* nobody else is placed on them */
	int spread;		/* one CPU per core first; else whole cores */
	unsigned long long locked_memory;	/* bytes to reserve */
};

struct scx_phase_pressure {
	int full;		/* the trigger's level: 1 full, 0 some */
	unsigned int stall_us, window_us;
	double some_avg10, full_avg10;	/* percent */
	const char *figures;	/* the pressure file, lines joined by "; " */
};

typedef void (*scx_phase_pressure_fn)(const struct scx_phase_pressure *ev, void *arg);

struct scx_phase_workload;

int scx_phase_workload_open(const struct scx_phase_workload_req *req,
			    struct scx_phase_workload **w);
/* The claimed CPUs: up to max into cpus; returns how many there are. */
int scx_phase_workload_cpus(const struct scx_phase_workload *w, int *cpus, int max);
int scx_phase_workload_node(const struct scx_phase_workload *w);
/* Locked, resident memory, valid until the workload closes: a memfd of
 * this process's that the service locks (no limit of this process changes). */
int scx_phase_workload_checkpoint_buffer(struct scx_phase_workload *w, size_t size,
					 void **buf);
/* fn runs on a background thread, with arg. */
int scx_phase_workload_on_memory_pressure(struct scx_phase_workload *w,
					  unsigned int stall_ms, unsigned int window_ms,
					  int full, scx_phase_pressure_fn fn, void *arg);
void scx_phase_workload_close(struct scx_phase_workload *w);

#ifdef __cplusplus
}
#endif

#endif /* SCX_PHASE_H */
