/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Runnable waits of every task, whatever the scheduler: the time from a
 * task becoming runnable (woken, or preempted while still runnable) to
 * its next switch in. The same probe measures EEVDF, scx_phase and the
 * peers, from the scheduler core's own tracepoints.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "runq_intf.h"

char _license[] SEC("license") = "GPL";

/* Only tasks whose name starts with this (empty: every task). */
const volatile char comm_prefix[16];
const volatile u32 comm_prefix_len;

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} runnable_since SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct runq_waits);
} waits SEC(".maps");

static __always_inline bool wanted(struct task_struct *p)
{
	char comm[16];
	u32 i;

	if (!p->pid)
		return false;	/* the idle task */
	if (!comm_prefix_len)
		return true;
	if (bpf_probe_read_kernel_str(comm, sizeof(comm), p->comm) < 0)
		return false;
	for (i = 0; i < 16 && i < comm_prefix_len; i++)
		if (comm[i] != comm_prefix[i])
			return false;
	return true;
}

static __always_inline void stamp(struct task_struct *p)
{
	u64 *since;

	if (!wanted(p))
		return;
	since = bpf_task_storage_get(&runnable_since, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (since)
		*since = bpf_ktime_get_ns();
}

/*
 * Log-linear bucket of a wait of @us microseconds: exact below 4 us, then
 * 4 buckets per power of two (runq_intf.h gives the bounds).
 */
static __always_inline u32 bucket(u64 us)
{
	u64 v = us;
	u32 msb = 0, b;

	if (us < 4)
		return us;
	if (v >> 32) { msb += 32; v >>= 32; }
	if (v >> 16) { msb += 16; v >>= 16; }
	if (v >> 8) { msb += 8; v >>= 8; }
	if (v >> 4) { msb += 4; v >>= 4; }
	if (v >> 2) { msb += 2; v >>= 2; }
	if (v >> 1) { msb += 1; }
	b = msb * 4 + ((us >> (msb - 2)) & 3) - 4;
	return b < RUNQ_BUCKETS ? b : RUNQ_BUCKETS - 1;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup, struct task_struct *p)
{
	stamp(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(on_wakeup_new, struct task_struct *p)
{
	stamp(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct runq_waits *w;
	u64 *since, ns;
	u32 zero = 0, b;

	/* Switched out but still runnable: it waits again from now. */
	if (prev_state == 0)
		stamp(prev);
	since = bpf_task_storage_get(&runnable_since, next, 0, 0);
	if (!since || !*since)
		return 0;
	ns = bpf_ktime_get_ns() - *since;
	*since = 0;
	w = bpf_map_lookup_elem(&waits, &zero);
	if (!w)
		return 0;
	w->count++;
	w->sum_ns += ns;
	if (ns > w->max_ns) {
		w->max_ns = ns;
		w->max_pid = next->pid;
		bpf_probe_read_kernel_str(w->max_comm, sizeof(w->max_comm), next->comm);
	}
	b = bucket(ns / 1000);
	/* Keep the bounds check the compiler would prove away. */
	asm volatile("" : "+r"(b));
	if (b < RUNQ_BUCKETS)
		w->hist[b]++;
	return 0;
}
