/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Empty programs of the optional hook types. habitd only loads and attaches them once at
 * start-up to learn whether this kernel permits fentry and BPF-LSM (lockdown, missing
 * CONFIG_BPF_LSM or an LSM list without "bpf" make them fail), then unloads them.
 */
#ifndef HABIT_OPTIONAL_H
#define HABIT_OPTIONAL_H

#include "lib/common.h"

SEC("fentry/do_exit")
int BPF_PROG(habit_probe_fentry)
{
	return 0;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(habit_probe_lsm)
{
	return 0;
}

#endif
