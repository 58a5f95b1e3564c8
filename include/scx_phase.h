/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_phase hint shim: tell the scx_phase scheduler which training phase
 * the calling thread is in. Link with -lscx_phase.
 *
 * Every call returns 0 or a negative errno:
 *   -ENOENT  scx_phase is not running (no phase map)
 *   -EACCES  no permission to write the map (see scx_phase --hint-group)
 *   -ESRCH   no thread with that id
 *   -EINVAL  invalid phase or node
 *   -E2BIG   the map is full
 * A call costs one bpf() system call; the map is opened once per process.
 * SCX_PHASE_MAP in the environment names a map other than the default
 * /sys/fs/bpf/scx_phase/phase_map.
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

int scx_phase_set(int phase);
int scx_phase_set_node(int phase, int node);
int scx_phase_set_tid(pid_t tid, int phase, int node);
int scx_phase_clear(void);
const char *scx_phase_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* SCX_PHASE_H */
