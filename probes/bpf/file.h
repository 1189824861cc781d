/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * File access: opens (de-duplicated in the kernel per workload, file, access mode and result
 * within an interval, so a process opening one file a million times costs one record per
 * interval) and chmod calls that set the setuid or setgid bit.
 *
 * Opens are handled at syscall exit (syscalls.h: habit_sys_exit), where the arguments are still
 * in the caller's saved registers and the result is known: the record carries the new fd or
 * -errno (Falco's fd.num, evt.res, evt.rawres). The result's errno is part of the
 * de-duplication key: a failed open of a file is reported even when the same file was opened
 * successfully in this interval (and the other way round), because Falco's rules and habitd's
 * care about failures (a denied read of /etc/shadow); repeats of the same failure are not.
 *
 * The de-duplication key names the file actually opened, not the string the program passed:
 * a relative path is keyed with the directory it is resolved from (the dentry of the cwd or
 * of dirfd), so `temp-1.rdb` written in /root/.ssh does not hide `temp-1.rdb` written in /etc
 * (issue 11: redis `CONFIG SET dir`). An absolute path needs no directory. The base dentry
 * is read once per relative open (two pointer loads for the cwd, the fd table walk for a
 * dirfd) and reused to name the directory when the open is sent.
 */
#ifndef HABIT_FILE_H
#define HABIT_FILE_H

#include "lib/common.h"
#include "lib/dentry.h"

#define O_ACCMODE 3
#define O_WRONLY 1
#define O_CREAT 0100
#define O_TRUNC 01000
#define S_ISUID 04000
#define S_ISGID 02000
#define AT_FDCWD -100

struct habit_open_key {
	__u64 cgroup_id;
	__u64 path_hash;
	/* The dentry a relative path is resolved from; 0 for an absolute path. */
	__u64 base;
	__u32 accmode;
	/* 0 for a successful open, the errno of a failed one. */
	__u32 err;
};

/* Value: the interval in which the key was last sent. LRU: forgetting costs a resend only. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct habit_open_key);
	__type(value, __u64);
} habit_open_seen SEC(".maps");

/* FNV-1a over the first `len` bytes; bounded for the verifier. */
static __always_inline __u64 hash_path(const char *s, long len)
{
	__u64 h = 0xcbf29ce484222325ULL;

	for (int i = 0; i < HABIT_PATH_LEN; i++) {
		if (i >= len)
			break;
		h ^= (__u8)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* True when this (workload, file, access mode, result) was already sent in the current
 * interval; `base` is the directory a relative path is resolved from (0 for an absolute one). */
static __always_inline bool open_seen_this_interval(struct habit_file *f, long len,
						    struct dentry *base)
{
	struct habit_open_key key = {
		.cgroup_id = bpf_get_current_cgroup_id(),
		.path_hash = hash_path(f->path, len),
		.base = (__u64)base,
		.accmode = f->flags & O_ACCMODE,
		.err = f->res < 0 ? (__u32)-f->res : 0,
	};
	__u64 epoch = current_epoch();
	__u64 *last = bpf_map_lookup_elem(&habit_open_seen, &key);

	if (last && *last == epoch)
		return true;
	if (bpf_map_update_elem(&habit_open_seen, &key, &epoch, BPF_ANY) != 0)
		count_drop(HABIT_DROP_DEDUP_FULL);
	return false;
}

static __always_inline struct habit_file *scratch_file(void)
{
	__u32 zero = 0;
	struct habit_scratch *s = bpf_map_lookup_elem(&habit_scratch_map, &zero);

	return s ? &s->file : 0;
}

/* The directory a relative path is resolved from: the cwd, or the directory behind dirfd. */
static __always_inline struct dentry *base_dentry(int dirfd)
{
	struct file *file;

	if (dirfd == AT_FDCWD)
		return BPF_CORE_READ((struct task_struct *)bpf_get_current_task_btf(), fs, pwd.dentry);
	file = current_fd_file(dirfd);
	return file ? BPF_CORE_READ(file, f_path.dentry) : 0;
}

/* The directory a path is resolved from: 0 for an absolute path. */
static __always_inline struct dentry *path_base(struct habit_file *f)
{
	if (f->path[0] == '/')
		return 0;
	return base_dentry(f->dirfd);
}

/* Fills base_components for a relative path (from its base dentry), so user space need not
 * race the process for its cwd in /proc. */
static __always_inline void fill_base(struct habit_file *f, struct dentry *base)
{
	f->base_components[0] = 0;
	if (base)
		read_components(base, f->base_components);
}

static __always_inline void send_file(struct habit_file *f)
{
	struct habit_file *e = reserve_for(sizeof(*e), f->hdr.kind, f->hdr.cgroup_id);

	if (!e)
		return;
	bpf_probe_read_kernel(e, sizeof(*e), f);
	submit(e);
}

/* At syscall exit: `regs` are the caller's saved registers (the arguments), `ret` the result. */
static __noinline int handle_open(struct pt_regs *regs, __u32 nr, long ret)
{
	struct habit_file *f = scratch_file();
	struct dentry *base;
	const char *upath;
	long len;

	if (!f)
		return 0;
	f->syscall = nr;
	f->res = ret;
	f->mode = 0;
	if (nr == NR_open) {
		f->dirfd = AT_FDCWD;
		upath = (const char *)regs->di;
		f->flags = regs->si;
		f->mode = regs->dx;
	} else if (nr == NR_creat) {
		f->dirfd = AT_FDCWD;
		upath = (const char *)regs->di;
		f->flags = O_CREAT | O_WRONLY | O_TRUNC;
		f->mode = regs->si;
	} else if (nr == NR_openat) {
		f->dirfd = (int)regs->di;
		upath = (const char *)regs->si;
		f->flags = regs->dx;
		f->mode = regs->r10;
	} else { /* openat2: flags live in the user's struct open_how */
		__u64 how[2] = {};
		f->dirfd = (int)regs->di;
		upath = (const char *)regs->si;
		bpf_probe_read_user(how, sizeof(how), (void *)regs->dx);
		f->flags = how[0];
		f->mode = how[1];
	}
	len = bpf_probe_read_user_str(f->path, sizeof(f->path), upath);
	if (len <= 0)
		return 0;
	base = path_base(f);
	if (open_seen_this_interval(f, len, base))
		return 0;
	/* The header (a dozen helper calls and kernel reads) only for what is sent: most opens
	 * are repeats of the interval. */
	fill_hdr(&f->hdr, HABIT_EV_OPEN);
	fill_base(f, base);
	send_file(f);
	return 0;
}

static __noinline int handle_chmod(struct pt_regs *regs, __u32 nr)
{
	struct habit_file *f;
	const char *upath = 0;
	__u32 mode;

	if (nr == NR_chmod)
		mode = regs->si;
	else if (nr == NR_fchmod)
		mode = regs->si;
	else
		mode = regs->dx;
	if (!(mode & (S_ISUID | S_ISGID)))
		return 0;
	f = scratch_file();
	if (!f)
		return 0;
	fill_hdr(&f->hdr, HABIT_EV_CHMOD);
	f->syscall = nr;
	f->res = 0;
	f->flags = 0;
	f->mode = mode;
	f->path[0] = 0;
	if (nr == NR_chmod) {
		f->dirfd = AT_FDCWD;
		upath = (const char *)regs->di;
	} else if (nr == NR_fchmod) {
		f->dirfd = (int)regs->di; /* the file itself; user space resolves the fd */
	} else {
		f->dirfd = (int)regs->di;
		upath = (const char *)regs->si;
	}
	if (upath)
		bpf_probe_read_user_str(f->path, sizeof(f->path), upath);
	fill_base(f, path_base(f));
	send_file(f);
	return 0;
}

#endif
