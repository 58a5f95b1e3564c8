/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Phases map to scheduling classes.
 *
 *   checkpoint           critical  boosted, weight x weight_critical
 *   backward             high      boosted, weight x weight_high
 *   forward, optimizer   normal    boosted, weight x weight_normal
 *   no hint              fair      plain weighted vtime
 *   data_loading         loader    fair, weight x weight_loader, on its node
 *   idle                 idle      fair, weight / idle_divisor
 *
 * Boosted tasks queue apart from fair ones and come first while their CPU
 * is within its boost budget (budget.bpf.h); among themselves they share by
 * class weight, so no boosted task starves either. Data loaders are fair
 * tasks with a larger weight: the whole job waits when they fall behind,
 * yet they are often many, and boosting them all would take the host.
 * Idle-phase tasks are fair tasks with a tiny weight: last, never stalled.
 */
#ifndef __SCX_PHASE_CLASSES_BPF_H
#define __SCX_PHASE_CLASSES_BPF_H

#include "intf.h"

enum phase_class {
	CLASS_IDLE,
	CLASS_FAIR,
	CLASS_LOADER,
	CLASS_NORMAL,
	CLASS_HIGH,
	CLASS_CRITICAL,
};

/* Knobs (--boost-weights, --loader-weight, --idle-divisor). */
const volatile u32 weight_loader = 4;
const volatile u32 weight_normal = 2;
const volatile u32 weight_high = 4;
const volatile u32 weight_critical = 8;
const volatile u32 idle_divisor = 8;

static __always_inline u32 phase_class(u32 phase)
{
	switch (phase) {
	case SCX_PHASE_CHECKPOINT:
		return CLASS_CRITICAL;
	case SCX_PHASE_BACKWARD:
		return CLASS_HIGH;
	case SCX_PHASE_FORWARD:
	case SCX_PHASE_OPTIMIZER:
		return CLASS_NORMAL;
	case SCX_PHASE_DATA_LOADING:
		return CLASS_LOADER;
	case SCX_PHASE_IDLE:
		return CLASS_IDLE;
	default:
		return CLASS_FAIR;
	}
}

static __always_inline bool class_boosted(u32 cls)
{
	return cls >= CLASS_NORMAL;
}

/* Charge for @used ns of CPU in class @cls, at task weight @weight. */
static __always_inline u64 class_charge(u32 cls, u64 used, u64 weight)
{
	u64 w = weight ? weight : 1;

	switch (cls) {
	case CLASS_CRITICAL:
		w *= weight_critical;
		break;
	case CLASS_HIGH:
		w *= weight_high;
		break;
	case CLASS_NORMAL:
		w *= weight_normal;
		break;
	case CLASS_LOADER:
		w *= weight_loader;
		break;
	case CLASS_IDLE:
		return used * 100 * idle_divisor / w;
	}
	return used * 100 / w;
}

#endif /* __SCX_PHASE_CLASSES_BPF_H */
