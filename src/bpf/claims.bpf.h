/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The workload API's maps: CPU claims, and each workload's run time and
 * waits per phase. The hint service's object creates and pins them, the
 * service writes the claims, the scheduler reads them (placement.bpf.h)
 * and adds up the figures.
 */
#ifndef __SCX_PHASE_CLAIMS_BPF_H
#define __SCX_PHASE_CLAIMS_BPF_H

#include "intf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SCX_PHASE_MAX_CPUS);
	__type(key, u32);
	__type(value, struct cpu_claim);
} cpu_claims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SCX_PHASE_MAX_WORKLOADS);
	__type(key, u32);
	__type(value, struct workload_claim);
} workload_claims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct claim_state);
} claim_state SEC(".maps");

/*
 * Figures per workload and phase slot: index wid * SCX_PHASE_NR_SLOTS +
 * slot. Per CPU: every thread of a job in one phase adds to the same
 * entry from running, tick and stopping, and one shared value would move
 * its cache line between all their CPUs (an atomic add each time). The
 * cost is memory: 32 bytes a CPU for each of 1024 x 7 entries, 224 KiB a
 * CPU (49 MiB on 224 CPUs); readers add the CPUs up.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCX_PHASE_MAX_WORKLOADS * SCX_PHASE_NR_SLOTS);
	__type(key, u32);
	__type(value, struct workload_phase_stats);
} workload_stats SEC(".maps");

#endif /* __SCX_PHASE_CLAIMS_BPF_H */
