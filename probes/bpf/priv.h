/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Privilege changes and kernel surface: the setuid/setgid family, capset, ptrace, mount/umount,
 * unshare/setns, module loading, memfd_create, bpf and packet sockets. Reported at syscall entry:
 * the attempt is what matters, whether or not the kernel then allows it.
 *
 * bpf(): only the commands that change the kernel or take hold of existing BPF objects (create
 * a map, load a program or BTF, attach, pin or get a pinned object, open a link or a raw
 * tracepoint, get a program, map, BTF or link by id, enable stats, create an iterator, bind a
 * map, create a token). The data-plane commands (map lookups, updates, deletes, key walks,
 * batches, info and id queries, test runs) are what every BPF tool does thousands of times a
 * second — another habitd reading its counters made 750 of them a second here — and each
 * would cost a ring-buffer record: they filled the ring buffer and real events (execs,
 * connects) were lost. The reported commands are sent once per process, command and interval,
 * as opens are per file: a tool that loads or attaches in a loop costs one record.
 */
#ifndef HABIT_PRIV_H
#define HABIT_PRIV_H

#include "lib/common.h"
#include "net.h"

/* bpf(2) commands worth reporting (see above); BPF_PROG_LOAD is 5. */
static __always_inline int bpf_cmd_reported(__u64 cmd)
{
	switch (cmd) {
	case 0:  /* BPF_MAP_CREATE */
	case 5:  /* BPF_PROG_LOAD */
	case 6:  /* BPF_OBJ_PIN */
	case 7:  /* BPF_OBJ_GET */
	case 8:  /* BPF_PROG_ATTACH */
	case 9:  /* BPF_PROG_DETACH */
	case 13: /* BPF_PROG_GET_FD_BY_ID */
	case 14: /* BPF_MAP_GET_FD_BY_ID */
	case 17: /* BPF_RAW_TRACEPOINT_OPEN */
	case 18: /* BPF_BTF_LOAD */
	case 19: /* BPF_BTF_GET_FD_BY_ID */
	case 28: /* BPF_LINK_CREATE */
	case 29: /* BPF_LINK_UPDATE */
	case 30: /* BPF_LINK_GET_FD_BY_ID */
	case 32: /* BPF_ENABLE_STATS */
	case 33: /* BPF_ITER_CREATE */
	case 35: /* BPF_PROG_BIND_MAP */
	case 36: /* BPF_TOKEN_CREATE */
		return 1;
	}
	return 0;
}

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
	case NR_bpf: return bpf_cmd_reported(arg0) ? HABIT_PRIV_BPF : 0;
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
