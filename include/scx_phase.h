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
 * scx_phase_last_error() gives the one-line reason for the calling
 * thread's last failure.
 */
#ifndef SCX_PHASE_H
#define SCX_PHASE_H

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

#ifdef __cplusplus
}
#endif

#endif /* SCX_PHASE_H */
