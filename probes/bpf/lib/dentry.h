/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Naming files from their dentries. tp_btf programs may not call bpf_d_path, and a path taken
 * from user memory can be relative or a /proc/self/exe alias, so the probes walk d_parent up
 * to the process's root directory (or a filesystem root) and write the names, leaf first,
 * NUL-separated, so a container's file is named as inside the container; user space
 * reverses them. Each write starts below offset 256 with at most 256 bytes, so it stays inside
 * the 512-byte buffer (which is what the verifier checks).
 */
#ifndef HABIT_DENTRY_H
#define HABIT_DENTRY_H

#include "common.h"

/* Ends the list of names at `off` (the buffer is reused: an empty name marks the end). */
static __always_inline void end_components(char *buf, __u32 off)
{
	buf[off & (HABIT_COMPONENTS_LEN - 1)] = 0;
}

/* Returns false when the walk stopped before the root (too deep or too long). */
static __always_inline bool read_components(struct dentry *d, char *buf)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct dentry *root = BPF_CORE_READ(task, fs, root.dentry);
	__u32 off = 0;

	for (int i = 0; i < HABIT_COMPONENTS_MAX_DEPTH; i++) {
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		long len;

		if (!d || d == root || !parent) {
			end_components(buf, off);
			return true;
		}
		if (off >= HABIT_COMPONENTS_LEN / 2) {
			end_components(buf, off);
			return false;
		}
		len = bpf_probe_read_kernel_str(&buf[off & (HABIT_COMPONENTS_LEN / 2 - 1)],
						HABIT_COMPONENTS_LEN / 2, BPF_CORE_READ(d, d_name.name));
		if (len <= 0) {
			end_components(buf, off);
			return true;
		}
		if (parent == d) {
			/* A filesystem's root: named "/" (dropped), or a pseudo file such as a memfd
			 * ("memfd:name"), which is its own parent and keeps its name. */
			if (buf[off & (HABIT_COMPONENTS_LEN / 2 - 1)] != '/')
				off += len;
			end_components(buf, off);
			return true;
		}
		off += len;
		d = parent;
	}
	end_components(buf, off);
	return false;
}

#endif
