/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Zero-code-change classification: a task without an explicit hint gets the
 * phase of the first rule whose prefix starts its thread name (PyTorch
 * names its DataLoader workers pt_data_worker..., its autograd device
 * threads pt_autograd_...). Names are read at every lookup, so a rename
 * (prctl, pthread_setname_np) takes effect at once.
 */
#ifndef __SCX_PHASE_CLASSIFY_BPF_H
#define __SCX_PHASE_CLASSIFY_BPF_H

#include "intf.h"

/* Knobs (--classify-rules, --no-classify, --trust-names). */
const volatile bool classify_enabled = true;
const volatile bool classify_trusted;
const volatile u32 nr_classify_rules;
const volatile struct classify_rule classify_rules[SCX_PHASE_MAX_RULES];

/* Mask of the first @len bytes of an 8-byte little-endian word. */
static __always_inline u64 prefix_mask(s32 len)
{
	if (len <= 0)
		return 0;
	if (len >= 8)
		return ~0ULL;
	return (1ULL << (8 * len)) - 1;
}

static __always_inline u32 classify(const struct task_struct *p)
{
	u64 comm[2] = {};
	u32 i;

	if (!classify_enabled || !nr_classify_rules)
		return SCX_PHASE_NONE;
	if (bpf_probe_read_kernel(comm, sizeof(comm), p->comm))
		return SCX_PHASE_NONE;

	bpf_for(i, 0, nr_classify_rules) {
		const volatile struct classify_rule *r;
		u64 w0, w1;
		s32 len;

		r = MEMBER_VPTR(classify_rules, [i]);
		if (!r)
			break;
		len = r->len;
		w0 = *(const volatile u64 *)&r->prefix[0];
		w1 = *(const volatile u64 *)&r->prefix[8];
		if ((comm[0] & prefix_mask(len)) == w0 &&
		    (comm[1] & prefix_mask(len - 8)) == w1)
			return r->phase;
	}
	return SCX_PHASE_NONE;
}

/*
 * Whether @p's credentials hold the raise privilege on the host:
 * CAP_SYS_NICE, effective, in the initial user namespace (host root has
 * it; root of a container with its own user namespace, or without the
 * capability, does not). The same rule the hint service applies to a
 * client (rules::may_raise), read from the task itself.
 */
static __always_inline bool creds_may_raise(const struct task_struct *p)
{
	const struct cred *cred = BPF_CORE_READ(p, cred);
	u64 caps;

	if (!cred || BPF_CORE_READ(cred, user_ns, level) != 0)
		return false;
	caps = BPF_CORE_READ(cred, cap_effective.val);
	return caps & (1ULL << 23);	/* CAP_SYS_NICE: a macro, not in vmlinux.h */
}

#endif /* __SCX_PHASE_CLASSIFY_BPF_H */
