/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Privilege changes and kernel surface: the setuid/setgid family, capset, ptrace, mount/umount,
 * unshare/setns, module loading, memfd_create, bpf and packet sockets. Reported at syscall entry:
 * the attempt is what matters, whether or not the kernel then allows it.
 *
 * bpf() is the one of these a program makes in bulk (a BPF tool, another habitd, reads its maps
 * with thousands of calls a second): it is reported once per process, command and interval, as
 * opens are per file (before, three habitds on one host reported each other's map reads:
 * 336 204 records in two minutes). The others are rare and each is reported.
 */
#ifndef HABIT_PRIV_H
#define HABIT_PRIV_H

#include "lib/common.h"
#include "net.h"

static __always_inline __u32 priv_op(__u32 nr, __u64 arg0)
{
	switch (nr) {
	case NR_setuid: return HABIT_PRIV_SETUID;
	case NR_setgid: return HABIT_PRIV_SETGID;
	case NR_setreuid: return HABIT_PRIV_SETREUID;
	case NR_setregid: return HABIT_PRIV_SETREGID;
	case NR_setresuid: return HABIT_PRIV_SETRESUID;
	case NR_setresgid: return HABIT_PRIV_SETRESGID;
	case NR_capset: return HABIT_PRIV_CAPSET;
	case NR_ptrace: return HABIT_PRIV_PTRACE;
	case NR_mount: return HABIT_PRIV_MOUNT;
	case NR_umount2: return HABIT_PRIV_UMOUNT;
	case NR_unshare: return HABIT_PRIV_UNSHARE;
	case NR_setns: return HABIT_PRIV_SETNS;
	case NR_init_module: return HABIT_PRIV_INIT_MODULE;
	case NR_finit_module: return HABIT_PRIV_FINIT_MODULE;
	case NR_memfd_create: return HABIT_PRIV_MEMFD_CREATE;
	case NR_bpf: return HABIT_PRIV_BPF;
	case NR_socket: return arg0 == AF_PACKET ? HABIT_PRIV_PACKET_SOCKET : 0;
	}
	return 0;
}

struct habit_priv_key {
	__u32 tgid;
	__u32 cmd;
};

/* Value: the interval in which (process, bpf command) was last sent. LRU: forgetting costs a
 * resend only. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct habit_priv_key);
	__type(value, __u64);
} habit_priv_seen SEC(".maps");

/* True when this process's bpf(cmd) was already sent in the current interval. */
static __always_inline bool bpf_seen_this_interval(__u64 cmd)
{
	struct habit_priv_key key = {
		.tgid = bpf_get_current_pid_tgid() >> 32,
		.cmd = cmd,
	};
	__u64 epoch = current_epoch();
	__u64 *last = bpf_map_lookup_elem(&habit_priv_seen, &key);

	if (last && *last == epoch)
		return true;
	if (bpf_map_update_elem(&habit_priv_seen, &key, &epoch, BPF_ANY) != 0)
		count_drop(HABIT_DROP_PRIV_DEDUP_FULL);
	return false;
}

static __noinline int handle_priv(struct pt_regs *regs, __u32 nr)
{
	__u32 op = priv_op(nr, regs->di);
	const char *ustr = 0;
	struct habit_priv *e;

	if (!op)
		return 0;
	if (op == HABIT_PRIV_BPF && bpf_seen_this_interval(regs->di))
		return 0;
	e = reserve(sizeof(*e), HABIT_EV_PRIV);
	if (!e)
		return 0;
	fill_hdr(&e->hdr, HABIT_EV_PRIV);
	e->op = op;
	e->syscall = nr;
	e->args[0] = regs->di;
	e->args[1] = regs->si;
	e->args[2] = regs->dx;
	e->args[3] = regs->r10;
	e->arg_str[0] = 0;
	if (op == HABIT_PRIV_MOUNT)
		ustr = (const char *)regs->si; /* target directory */
	else if (op == HABIT_PRIV_UMOUNT || op == HABIT_PRIV_MEMFD_CREATE)
		ustr = (const char *)regs->di;
	if (ustr)
		bpf_probe_read_user_str(e->arg_str, sizeof(e->arg_str), ustr);
	submit(e);
	return 0;
}

#endif
