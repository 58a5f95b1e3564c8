/* SPDX-License-Identifier: GPL-2.0 */
/* What runq.bpf.c counts, shared with runq-waits (bindgen). */
#ifndef __RUNQ_INTF_H
#define __RUNQ_INTF_H

#ifndef __VMLINUX_H__
typedef unsigned int u32;
typedef unsigned long long u64;
#endif

/*
 * Wait buckets: b < 4 holds waits of b us; above, bucket b holds waits of
 * [(4 + (b + 4) % 4) << ((b + 4) / 4 - 2), the next bucket's start) us.
 */
enum runq_limits {
	RUNQ_BUCKETS = 160,
};

struct runq_waits {
	u64 count;
	u64 sum_ns;
	u64 max_ns;
	u64 max_pid;
	char max_comm[16];
	u64 hist[RUNQ_BUCKETS];
};

#endif
