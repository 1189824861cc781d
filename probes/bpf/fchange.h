/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * File changes that are not writes through an open (issue 16, file integrity): rename, unlink,
 * rmdir, link, symlink, truncate, chown and utimensat with an explicit time (timestomping).
 *
 * Only these syscall numbers reach this code (syscalls.h dispatches by number), so no other
 * syscall pays for it. Like opens, a change is de-duplicated in the kernel per workload,
 * operation, path(s) and base directory within an interval (the open de-duplication map, with
 * the operation in the key's mode field), so a log rotated by a busy writer costs one record
 * per interval. Both paths of rename/link/symlink are sent, each with the directory a relative
 * path is resolved from; an fd operation (ftruncate, fchown, futimens) names the file itself
 * from the fd's dentry.
 */
#ifndef HABIT_FCHANGE_H
#define HABIT_FCHANGE_H

#include "lib/common.h"
#include "lib/dentry.h"
#include "file.h"

#define AT_REMOVEDIR 0x200
#define UTIME_NOW ((1L << 30) - 1L)
#define UTIME_OMIT ((1L << 30) - 2L)
/* Keeps file-change keys apart from open keys (whose mode is O_ACCMODE, 0..3) in the shared
 * de-duplication map. */
#define HABIT_FC_DEDUP_MODE 0x100

static __always_inline struct habit_fchange *scratch_change(void)
{
	__u32 zero = 0;
	struct habit_scratch *s = bpf_map_lookup_elem(&habit_scratch_map, &zero);

	return s ? &s->change : 0;
}

/* The directory `path` is resolved from: 0 for an absolute path; for an empty path (an fd
 * operation) the fd's own file. */
static __always_inline struct dentry *change_base(const char *path, int dirfd)
{
	if (path[0] == '/')
		return 0;
	return base_dentry(dirfd);
}

/* True when this change was already sent in the current interval. */
static __always_inline bool change_seen_this_interval(struct habit_fchange *c, long len,
						      long len2, struct dentry *base,
						      struct dentry *base2)
{
	struct habit_open_key key = {
		.cgroup_id = bpf_get_current_cgroup_id(),
		.path_hash = hash_path(c->path, len) ^ (hash_path(c->path2, len2) * 31),
		.base = (__u64)base ^ ((__u64)base2 << 1),
		.accmode = HABIT_FC_DEDUP_MODE | c->op,
	};
	__u64 epoch = current_epoch();
	__u64 *last = bpf_map_lookup_elem(&habit_open_seen, &key);

	if (last && *last == epoch)
		return true;
	if (bpf_map_update_elem(&habit_open_seen, &key, &epoch, BPF_ANY) != 0)
		count_drop(HABIT_DROP_DEDUP_FULL);
	return false;
}

/* utimensat sets an explicit time (not "now", not "leave as is") on either timestamp: what
 * `touch -d` and timestomping tools do. NULL times means "now". */
static __always_inline bool sets_explicit_time(const void *times)
{
	long ts[4] = {};

	if (!times)
		return false;
	if (bpf_probe_read_user(ts, sizeof(ts), times) != 0)
		return true;
	return (ts[1] != UTIME_NOW && ts[1] != UTIME_OMIT) ||
	       (ts[3] != UTIME_NOW && ts[3] != UTIME_OMIT);
}

static __noinline int handle_fchange(struct pt_regs *regs, __u32 nr)
{
	struct habit_fchange *c = scratch_change();
	const char *upath = 0, *upath2 = 0;
	struct dentry *base = 0, *base2 = 0;
	long len = 0, len2 = 0;

	if (!c)
		return 0;
	c->syscall = nr;
	c->dirfd = AT_FDCWD;
	c->dirfd2 = AT_FDCWD;
	c->arg = 0;
	switch (nr) {
	case NR_rename:
		c->op = HABIT_FC_RENAME;
		upath = (const char *)regs->di;
		upath2 = (const char *)regs->si;
		break;
	case NR_renameat:
	case NR_renameat2:
		c->op = HABIT_FC_RENAME;
		c->dirfd = (int)regs->di;
		upath = (const char *)regs->si;
		c->dirfd2 = (int)regs->dx;
		upath2 = (const char *)regs->r10;
		if (nr == NR_renameat2)
			c->arg = regs->r8;
		break;
	case NR_unlink:
		c->op = HABIT_FC_UNLINK;
		upath = (const char *)regs->di;
		break;
	case NR_rmdir:
		c->op = HABIT_FC_RMDIR;
		upath = (const char *)regs->di;
		break;
	case NR_unlinkat:
		c->arg = regs->dx;
		c->op = (c->arg & AT_REMOVEDIR) ? HABIT_FC_RMDIR : HABIT_FC_UNLINK;
		c->dirfd = (int)regs->di;
		upath = (const char *)regs->si;
		break;
	case NR_link:
		c->op = HABIT_FC_LINK;
		upath = (const char *)regs->di;
		upath2 = (const char *)regs->si;
		break;
	case NR_linkat:
		c->op = HABIT_FC_LINK;
		c->dirfd = (int)regs->di;
		upath = (const char *)regs->si;
		c->dirfd2 = (int)regs->dx;
		upath2 = (const char *)regs->r10;
		c->arg = regs->r8;
		break;
	case NR_symlink:
		c->op = HABIT_FC_SYMLINK;
		upath = (const char *)regs->di;
		upath2 = (const char *)regs->si;
		break;
	case NR_symlinkat:
		c->op = HABIT_FC_SYMLINK;
		upath = (const char *)regs->di;
		c->dirfd2 = (int)regs->si;
		upath2 = (const char *)regs->dx;
		break;
	case NR_truncate:
		c->op = HABIT_FC_TRUNCATE;
		upath = (const char *)regs->di;
		c->arg = regs->si;
		break;
	case NR_ftruncate:
		c->op = HABIT_FC_TRUNCATE;
		c->dirfd = (int)regs->di;
		c->arg = regs->si;
		break;
	case NR_chown:
	case NR_lchown:
		c->op = HABIT_FC_CHOWN;
		upath = (const char *)regs->di;
		c->arg = (regs->si << 32) | (__u32)regs->dx;
		break;
	case NR_fchown:
		c->op = HABIT_FC_CHOWN;
		c->dirfd = (int)regs->di;
		c->arg = (regs->si << 32) | (__u32)regs->dx;
		break;
	case NR_fchownat:
		c->op = HABIT_FC_CHOWN;
		c->dirfd = (int)regs->di;
		upath = (const char *)regs->si;
		c->arg = (regs->dx << 32) | (__u32)regs->r10;
		break;
	default: /* NR_utimensat: a NULL path is the fd itself (futimens) */
		if (!sets_explicit_time((const void *)regs->dx))
			return 0;
		c->op = HABIT_FC_UTIMES;
		c->dirfd = (int)regs->di;
		upath = (const char *)regs->si;
		break;
	}
	c->path[0] = 0;
	c->path2[0] = 0;
	if (upath) {
		len = bpf_probe_read_user_str(c->path, sizeof(c->path), upath);
		if (len < 0)
			return 0;
	}
	if (upath2) {
		len2 = bpf_probe_read_user_str(c->path2, sizeof(c->path2), upath2);
		if (len2 < 0)
			return 0;
	}
	/* A symlink's target is a string stored in the link, not a file resolved now. */
	if (c->op != HABIT_FC_SYMLINK)
		base = change_base(c->path, c->dirfd);
	if (upath2)
		base2 = change_base(c->path2, c->dirfd2);
	if (change_seen_this_interval(c, len, len2, base, base2))
		return 0;
	fill_hdr(&c->hdr, HABIT_EV_FCHANGE);
	c->base_components[0] = 0;
	c->base2_components[0] = 0;
	if (base)
		read_components(base, c->base_components);
	if (base2)
		read_components(base2, c->base2_components);
	{
		struct habit_fchange *e = reserve_for(sizeof(*e), HABIT_EV_FCHANGE, c->hdr.cgroup_id);

		if (!e)
			return 0;
		bpf_probe_read_kernel(e, sizeof(*e), c);
		submit(e);
	}
	return 0;
}

#endif
