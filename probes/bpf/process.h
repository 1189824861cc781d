/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Process lifecycle: exec, fork (processes, not threads), exit (of the last thread). */
#ifndef HABIT_PROCESS_H
#define HABIT_PROCESS_H

#include "lib/common.h"
#include "lib/dentry.h"
#include "sequence.h"

/* Reads the memory cgroup's directory name: the container id under Docker/runc on cgroup v1. */
static __always_inline void read_v1_cgroup_name(struct task_struct *task, char *dst)
{
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	const char *name;

	if (id < 0 || id >= 12)
		return;
	name = BPF_CORE_READ(task, cgroups, subsys[id], cgroup, kn, name);
	if (name)
		bpf_probe_read_kernel_str(dst, HABIT_CGNAME_LEN, name);
}

/* The controlling terminal's device number, as the kernel encodes dev_t (major << 20 | minor). */
static __always_inline __u32 read_tty(struct task_struct *task)
{
	struct tty_struct *tty = BPF_CORE_READ(task, signal, tty);
	__u32 major, minor;

	if (!tty)
		return 0;
	major = BPF_CORE_READ(tty, driver, major);
	minor = BPF_CORE_READ(tty, driver, minor_start) + BPF_CORE_READ(tty, index);
	return (major << 20) | (minor & 0xfffff);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(habit_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	struct habit_exec *e;
	unsigned long arg_start, arg_end, len;

	if (is_self())
		return 0;
	/* A new program: its syscall history starts empty, as in the model. */
	seq_end(task, true);
	e = reserve(sizeof(*e), HABIT_EV_EXEC);
	if (!e)
		return 0;
	fill_hdr(&e->hdr, HABIT_EV_EXEC);
	e->flags = 0;
	e->loginuid = BPF_CORE_READ(task, loginuid.val);
	e->cap_effective = BPF_CORE_READ(task, cred, cap_effective.val);
	e->cap_permitted = BPF_CORE_READ(task, cred, cap_permitted.val);
	e->tty = read_tty(task);
	e->filename[0] = 0;
	e->cgroup_v1[0] = 0;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	read_v1_cgroup_name(task, e->cgroup_v1);
	if (!read_components(BPF_CORE_READ(bprm, file, f_path.dentry), e->exe_components))
		e->flags |= HABIT_EXEC_EXE_TRUNCATED;

	arg_start = BPF_CORE_READ(task, mm, arg_start);
	arg_end = BPF_CORE_READ(task, mm, arg_end);
	len = arg_end - arg_start;
	if (len > HABIT_ARGS_LEN) {
		len = HABIT_ARGS_LEN;
		e->flags |= HABIT_EXEC_ARGS_TRUNCATED;
	}
	e->args_len = 0;
	if (len > 0 && bpf_probe_read_user(e->args, len & (HABIT_ARGS_LEN * 2 - 1), (void *)arg_start) == 0)
		e->args_len = len;
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(habit_fork, struct task_struct *parent, struct task_struct *child)
{
	struct habit_fork *e;
	int pid = BPF_CORE_READ(child, pid), tgid = BPF_CORE_READ(child, tgid);

	if (pid != tgid || is_self())
		return 0; /* a new thread, not a new process */
	e = reserve(sizeof(*e), HABIT_EV_FORK);
	if (!e)
		return 0;
	fill_hdr(&e->hdr, HABIT_EV_FORK);
	e->child_pid = pid;
	e->child_tgid = tgid;
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(habit_exit, struct task_struct *task)
{
	struct habit_exit *e;

	if (is_self())
		return 0;
	seq_end(task, false);
	/* signal->live is decremented before this tracepoint: 0 means the last thread is leaving. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	e = reserve(sizeof(*e), HABIT_EV_EXIT);
	if (!e)
		return 0;
	fill_hdr(&e->hdr, HABIT_EV_EXIT);
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->_pad = 0;
	submit(e);
	return 0;
}

#endif
