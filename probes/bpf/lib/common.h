/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Maps and helpers shared by every hook family. */
#ifndef HABIT_COMMON_H
#define HABIT_COMMON_H

#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "syscall_nrs.h"

/* Set by the loader: habitd's own process id, whose activity is never reported. */
const volatile __u32 habit_self_tgid = 0;

/* All records for user space. Sized by the loader (default 4 MiB). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} habit_events SEC(".maps");

/* Lost records by reason, per CPU: user space sums and exports them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HABIT_DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} habit_drops SEC(".maps");

/* Records lost on a full ring buffer, per (cgroup slot, kind): struct habit_lost_row in
 * lib/events.h. One shared array, not per-CPU (1025 rows of 128 bytes, whatever the CPU
 * count): only the drop path writes it, with atomic adds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HABIT_MAX_CGROUP_SLOTS + 1);
	__type(key, __u32);
	__type(value, struct habit_lost_row);
} habit_lost SEC(".maps");

/* cgroup id -> counter slot (syscalls.h assigns slots; user space labels and recycles them). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HABIT_MAX_CGROUP_SLOTS);
	__type(key, __u64);
	__type(value, __u32);
} habit_cgroup_slots SEC(".maps");

/* Index 0: the current de-duplication interval, advanced by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} habit_epoch SEC(".maps");

/* The current de-duplication interval (user space advances it every learning interval). */
static __always_inline __u64 current_epoch(void)
{
	__u32 zero = 0;
	__u64 *epoch = bpf_map_lookup_elem(&habit_epoch, &zero);

	return epoch ? *epoch : 0;
}

/* Per-task state: counter slot cache and syscall history (struct habit_task). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct habit_task);
} habit_task_state SEC(".maps");

/* Per-CPU scratch for building records before we know they must be sent. */
struct habit_scratch {
	struct habit_file file;
	struct habit_fchange change;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct habit_scratch);
} habit_scratch_map SEC(".maps");

/* Atomic adds: a softirq's program (an accepted connection) can interrupt a program on the
 * same CPU between the load and the store of a plain increment. Drops are rare; the lock
 * costs nothing on the paths that do not drop. */
static __always_inline void count_drop(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&habit_drops, &reason);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline bool is_self(void)
{
	return (__u32)(bpf_get_current_pid_tgid() >> 32) == habit_self_tgid;
}

/* Fills the header from the current task. */
static __always_inline void fill_hdr(struct habit_hdr *h, __u32 kind)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	h->kind = kind;
	h->cpu = bpf_get_smp_processor_id();
	h->ts_ns = bpf_ktime_get_boot_ns();
	h->pid = (__u32)pid_tgid;
	h->tgid = pid_tgid >> 32;
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	h->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* The open file behind descriptor `fd` of the current task, or NULL. */
static __always_inline struct file *current_fd_file(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = 0;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xfffff]) != 0)
		return 0;
	return file;
}

/* A record of `kind` for cgroup `cgroup_id` could not be reserved: counted per reason and CPU,
 * and per (workload's cgroup slot, kind). Out of line: only the drop path runs it. */
static __noinline void count_lost(__u32 kind, __u64 cgroup_id)
{
	__u32 *slot = bpf_map_lookup_elem(&habit_cgroup_slots, &cgroup_id);
	__u32 row_idx = slot ? *slot : HABIT_LOST_NO_SLOT;
	struct habit_lost_row *row;

	count_drop(HABIT_DROP_RINGBUF_FULL);
	row = bpf_map_lookup_elem(&habit_lost, &row_idx);
	if (row)
		__sync_fetch_and_add(&row->kind[kind & (HABIT_LOST_KINDS - 1)], 1);
}

/* Reserves a record of `kind` belonging to cgroup `cgroup_id`, counting it when the ring
 * buffer is full. */
static __always_inline void *reserve_for(__u64 size, __u32 kind, __u64 cgroup_id)
{
	void *rec = bpf_ringbuf_reserve(&habit_events, size, 0);
	if (!rec)
		count_lost(kind, cgroup_id);
	return rec;
}

/* Reserves a record of `kind` of the current task, counting it when the ring buffer is full. */
static __always_inline void *reserve(__u64 size, __u32 kind)
{
	void *rec = bpf_ringbuf_reserve(&habit_events, size, 0);
	if (!rec)
		count_lost(kind, bpf_get_current_cgroup_id());
	return rec;
}

/* Set by the loader: user space is woken only once this many bytes wait in the ring buffer;
 * below that it reads on its own timer (EventStream, every few milliseconds). A busy server's
 * thousands of records a second would otherwise each cost a wake-up: an IPI to the reader's
 * CPU and a context switch. 0: wake on every record (the kernel's adaptive default). */
const volatile __u64 habit_wakeup_bytes = 0;

/* Submits a reserved record, waking the reader only when enough is waiting. */
static __always_inline void submit(void *rec)
{
	__u64 flags = 0;

	if (habit_wakeup_bytes)
		flags = bpf_ringbuf_query(&habit_events, BPF_RB_AVAIL_DATA) >= habit_wakeup_bytes ?
				BPF_RB_FORCE_WAKEUP :
				BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(rec, flags);
}

#endif
