/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Network use. connect/bind are decoded at syscall exit (syscalls.h: habit_sys_exit) from the
 * caller's sockaddr, still in its saved registers, with the result (0, -EINPROGRESS for a
 * non-blocking connect, -ECONNREFUSED, ...: Falco's evt.res/evt.rawres); listen and
 * accept come from the TCP state machine (inet_sock_set_state): LISTEN is set in the listener's
 * process context, which we record per (netns, port) so that a passive open (SYN_RECV ->
 * ESTABLISHED, in softirq context) is attributed to the listening process, with both addresses.
 */
#ifndef HABIT_NET_H
#define HABIT_NET_H

#include "lib/common.h"

#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

/* Who listens on (netns, port): filled at LISTEN (and by user space at start-up). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct habit_listener_key);
	__type(value, struct habit_hdr);
} habit_listeners SEC(".maps");

static __always_inline __u16 bswap16(__u16 v)
{
	return (v >> 8) | (v << 8);
}

/* Decodes a user sockaddr (AF_INET/AF_INET6 only) into `dst`; returns 0 on success. */
static __always_inline int read_user_sockaddr(struct habit_sockaddr *dst, const void *uaddr, __u32 addrlen)
{
	__u8 buf[28] = {};
	__u16 family;

	if (!uaddr || addrlen < 8)
		return -1;
	/* A 64-bit copy kept opaque to clang: otherwise it passes the unclamped argument register
	 * (the helper's size is 32-bit) and the verifier rejects the possibly negative size. */
	__u64 len = addrlen > sizeof(buf) ? sizeof(buf) : addrlen;
	asm volatile("" : "+r"(len));
	if (len > sizeof(buf))
		return -1;
	if (bpf_probe_read_user(buf, len, uaddr) != 0)
		return -1;
	family = *(__u16 *)buf;
	dst->family = family;
	dst->port = bswap16(*(__u16 *)(buf + 2));
	dst->scope = 0;
	__builtin_memset(dst->addr, 0, sizeof(dst->addr));
	if (family == AF_INET) {
		__builtin_memcpy(dst->addr, buf + 4, 4);
		return 0;
	}
	if (family == AF_INET6 && len >= 24) {
		__builtin_memcpy(dst->addr, buf + 8, 16);
		dst->scope = *(__u32 *)(buf + 24);
		return 0;
	}
	return -1;
}

/* The protocol of the socket behind `fd` in the current task, 0 when unknown. */
static __always_inline __u32 socket_protocol(int fd)
{
	struct file *file = current_fd_file(fd);
	struct socket *sock;
	__u32 proto;

	if (!file)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	proto = BPF_CORE_READ(sock, sk, sk_protocol);
	return (proto == IPPROTO_TCP || proto == IPPROTO_UDP) ? proto : 0;
}

/* connect(fd, addr, len) and bind(fd, addr, len), at syscall exit with result `ret`. */
static __noinline int handle_connect_bind(struct pt_regs *regs, __u32 nr, long ret)
{
	struct habit_sockaddr sa;
	struct habit_net *e;
	int fd = (int)regs->di;

	if (read_user_sockaddr(&sa, (const void *)regs->si, (__u32)regs->dx) != 0)
		return 0;
	e = reserve(sizeof(*e), nr == NR_connect ? HABIT_EV_CONNECT : HABIT_EV_BIND);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	fill_hdr(&e->hdr, nr == NR_connect ? HABIT_EV_CONNECT : HABIT_EV_BIND);
	if (nr == NR_connect)
		e->remote = sa;
	else
		e->local = sa;
	e->fd = fd;
	e->res = ret;
	e->syscall = nr;
	e->protocol = socket_protocol(fd);
	submit(e);
	return 0;
}

static __always_inline void read_sock_addrs(const struct sock *sk, struct habit_sockaddr *local,
					    struct habit_sockaddr *remote);

#define S_IFMT 0170000
#define S_IFSOCK 0140000

/* dup/dup2/dup3 at exit: a socket made the new stdin, stdout or stderr (a reverse shell's
 * redirection; Falco's "Redirect STDOUT/STDIN to Network Connection in Container"). Other
 * duplications return after the result check. Not de-duplicated: it is rare, and each one is
 * a shell's worth of evidence. */
static __noinline int handle_dup(struct pt_regs *regs, __u32 nr, long ret)
{
	struct file *file;
	struct socket *sock;
	struct sock *sk;
	struct habit_net *e;
	__u16 family;

	if (ret < 0 || ret > 2)
		return 0;
	file = current_fd_file((int)ret);
	if (!file || (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	sk = sock ? BPF_CORE_READ(sock, sk) : 0;
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	e = reserve(sizeof(*e), HABIT_EV_DUP);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	fill_hdr(&e->hdr, HABIT_EV_DUP);
	read_sock_addrs(sk, &e->local, &e->remote);
	e->protocol = BPF_CORE_READ(sk, sk_protocol);
	e->fd = (int)regs->di;
	e->res = ret;
	e->syscall = nr;
	submit(e);
	return 0;
}

static __always_inline void read_sock_addrs(const struct sock *sk, struct habit_sockaddr *local,
					    struct habit_sockaddr *remote)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	local->family = remote->family = family;
	local->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	remote->port = bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&local->addr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&remote->addr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)local->addr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)remote->addr, sk, __sk_common.skc_daddr);
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(habit_sock_state, const struct sock *sk, int oldstate, int newstate)
{
	struct habit_listener_key key = {};
	struct habit_hdr *listener;
	struct habit_net *e;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	key.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	key.port = BPF_CORE_READ(sk, __sk_common.skc_num);

	if (newstate == TCP_LISTEN) {
		/* Process context: the listener itself. habitd's own listeners are recorded too, so
		 * that connections to them are recognised as ours and never reported. */
		struct habit_hdr hdr;

		fill_hdr(&hdr, HABIT_EV_LISTEN);
		if (bpf_map_update_elem(&habit_listeners, &key, &hdr, BPF_ANY) != 0)
			count_drop(HABIT_DROP_LISTENERS_FULL);
		if (hdr.tgid == habit_self_tgid)
			return 0;
		e = reserve_for(sizeof(*e), HABIT_EV_LISTEN, hdr.cgroup_id);
		if (!e)
			return 0;
		__builtin_memset(e, 0, sizeof(*e));
		e->hdr = hdr;
		read_sock_addrs(sk, &e->local, &e->remote);
		__builtin_memset(&e->remote, 0, sizeof(e->remote));
		e->protocol = IPPROTO_TCP;
		e->fd = -1;
		submit(e);
		return 0;
	}
	if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		bpf_map_delete_elem(&habit_listeners, &key);
		return 0;
	}
	if (oldstate != TCP_SYN_RECV || newstate != TCP_ESTABLISHED)
		return 0;

	/* Passive open, usually in softirq context: attribute to the recorded listener. */
	listener = bpf_map_lookup_elem(&habit_listeners, &key);
	if (listener && listener->tgid == habit_self_tgid)
		return 0;
	/* Lost, it is counted against the listener's workload (no slot when it is unknown). */
	e = reserve_for(sizeof(*e), HABIT_EV_ACCEPT, listener ? listener->cgroup_id : 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	if (listener)
		e->hdr = *listener;
	e->hdr.kind = HABIT_EV_ACCEPT;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->hdr.ts_ns = bpf_ktime_get_boot_ns();
	read_sock_addrs(sk, &e->local, &e->remote);
	e->protocol = IPPROTO_TCP;
	e->fd = -1;
	submit(e);
	return 0;
}

#endif
