/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The per-syscall hot path. Every syscall of every task passes here, so it does the least
 * possible: count the call in a per-CPU array indexed by (cgroup slot, syscall number), with the
 * slot of the task's cgroup cached in task-local storage (no hash lookup unless the task changed
 * cgroup), advance the task's syscall history, and hand the few decoded syscalls (and the
 * 6-grams of workloads with sequences on, see sequence.h) to their out-of-line handlers.
 */
#ifndef HABIT_SYSCALLS_H
#define HABIT_SYSCALLS_H

#include "lib/common.h"
#include "file.h"
#include "fchange.h"
#include "net.h"
#include "priv.h"
#include "sequence.h"

/* Counts per CPU, one row of HABIT_MAX_SYSCALLS counters per cgroup slot: user space reads a
 * whole row with one lookup. */
struct habit_syscall_row {
	__u64 count[HABIT_MAX_SYSCALLS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HABIT_MAX_CGROUP_SLOTS);
	__type(key, __u32);
	__type(value, struct habit_syscall_row);
} habit_syscall_counts SEC(".maps");

/* Free counter slots, filled by user space at start and when a cgroup goes away. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, HABIT_MAX_CGROUP_SLOTS);
	__uint(key_size, 0);
	__type(value, __u32);
} habit_free_slots SEC(".maps");

/* Slot of a cgroup: existing, or taken from the free queue. Returns slot + 1, 0 if none. */
static __noinline __u32 cgroup_slot(__u64 cgroup_id)
{
	__u32 *slot = bpf_map_lookup_elem(&habit_cgroup_slots, &cgroup_id);
	__u32 fresh;

	if (slot)
		return *slot + 1;
	if (bpf_map_pop_elem(&habit_free_slots, &fresh) != 0) {
		count_drop(HABIT_DROP_SLOTS_FULL);
		return 0;
	}
	if (bpf_map_update_elem(&habit_cgroup_slots, &cgroup_id, &fresh, BPF_NOEXIST) != 0) {
		/* Another CPU won the race: give ours back and use theirs. */
		bpf_map_push_elem(&habit_free_slots, &fresh, BPF_ANY);
		slot = bpf_map_lookup_elem(&habit_cgroup_slots, &cgroup_id);
		return slot ? *slot + 1 : 0;
	}
	return fresh + 1;
}

/* Every this many syscalls a task's cgroup id is read even though its css_set pointer did not
 * change: a css_set freed and reallocated at the same address (the task moved twice between
 * two syscalls) cannot misattribute more than this many. */
#define HABIT_CGROUP_RECHECK 1024

/* Keeps the task's counter slot current. The cgroup id (a helper call and three dependent
 * loads, measured as a tenth of this program's time under nginx) is read only when the task's
 * css_set pointer (one load) changed, or every HABIT_CGROUP_RECHECK syscalls. */
static __always_inline bool task_slot(struct habit_task *ts, struct task_struct *task)
{
	__u64 css_set = (__u64)task->cgroups;
	__u64 cgroup_id;

	if (ts->css_set == css_set && ts->slot != 0 && (ts->nsys & (HABIT_CGROUP_RECHECK - 1)))
		return true;
	cgroup_id = bpf_get_current_cgroup_id();
	ts->css_set = css_set;
	if (ts->cgroup_id != cgroup_id || ts->slot == 0) {
		ts->slot = cgroup_slot(cgroup_id);
		ts->cgroup_id = cgroup_id;
	}
	return ts->slot != 0;
}

static __always_inline void count_syscall(__u32 nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct habit_syscall_row *row;
	struct habit_seq_slot *cfg;
	struct habit_task *ts;
	__u32 slot;

	ts = bpf_task_storage_get(&habit_task_state, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ts) {
		count_drop(HABIT_DROP_TASK_STORAGE);
		return;
	}
	seq_push(ts, nr);
	if (!task_slot(ts, task))
		return;
	slot = ts->slot - 1;
	row = bpf_map_lookup_elem(&habit_syscall_counts, &slot);
	if (row)
		row->count[nr & (HABIT_MAX_SYSCALLS - 1)] += 1;
	cfg = bpf_map_lookup_elem(&habit_seq_slots, &slot);
	if (cfg && cfg->mode != HABIT_SEQ_OFF)
		seq_gram(ts, cfg);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(habit_sys_enter, struct pt_regs *regs, long id)
{
	__u32 nr = id;

	if (is_self())
		return 0;
	count_syscall(nr);

	switch (nr) {
	case NR_chmod:
	case NR_fchmod:
	case NR_fchmodat:
	case NR_fchmodat2:
		return handle_chmod(regs, nr);
	case NR_rename:
	case NR_renameat:
	case NR_renameat2:
	case NR_unlink:
	case NR_unlinkat:
	case NR_rmdir:
	case NR_link:
	case NR_linkat:
	case NR_symlink:
	case NR_symlinkat:
	case NR_truncate:
	case NR_ftruncate:
	case NR_chown:
	case NR_fchown:
	case NR_lchown:
	case NR_fchownat:
	case NR_utimensat:
		return handle_fchange(regs, nr);
	case NR_socket:
	case NR_setuid:
	case NR_setgid:
	case NR_setreuid:
	case NR_setregid:
	case NR_setresuid:
	case NR_setresgid:
	case NR_capset:
	case NR_ptrace:
	case NR_mount:
	case NR_umount2:
	case NR_unshare:
	case NR_setns:
	case NR_init_module:
	case NR_finit_module:
	case NR_memfd_create:
	case NR_bpf:
		return handle_priv(regs, nr);
	}
	return 0;
}

/*
 * The syscalls whose result a rule reads (opens: fd.num, evt.res; connect: evt.rawres; dup:
 * the new descriptor), and bind beside connect, are reported at exit, where the result is known and the arguments are
 * still in the caller's saved registers (x86_64 syscalls do not change them).
 *
 * Preferred hook: the per-syscall exit tracepoints (syscalls/sys_exit_openat, ...), one
 * program per syscall, which reads the saved registers with bpf_task_pt_regs. Every other
 * syscall then pays only the kernel's own per-syscall filter (a bitmap test), measured at
 * +10 ns per syscall against +27 ns for any tp_btf/sys_exit program (benches/overhead.rs,
 * README "Performance"). They need tracefs; where it cannot be mounted the loader attaches
 * habit_sys_exit instead, which returns at the first comparison for other syscalls.
 */
struct habit_sys_exit_ctx {
	__u64 common;
	long nr;
	long ret;
};

static __always_inline int result_of(__u32 nr, struct pt_regs *regs, long ret)
{
	if (is_self())
		return 0;
	switch (nr) {
	case NR_open:
	case NR_openat:
	case NR_openat2:
	case NR_creat:
		return handle_open(regs, nr, ret);
	case NR_connect:
	case NR_bind:
		return handle_connect_bind(regs, nr, ret);
	case NR_dup:
	case NR_dup2:
	case NR_dup3:
		return handle_dup(regs, nr, ret);
	}
	return 0;
}

/* One program for every per-syscall exit tracepoint the loader attaches it to. */
SEC("tracepoint/syscalls/sys_exit_openat")
int habit_sys_exit_tp(struct habit_sys_exit_ctx *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	return result_of(ctx->nr, regs, ctx->ret);
}

/* The fallback without tracefs: runs on every syscall's exit. */
SEC("tp_btf/sys_exit")
int BPF_PROG(habit_sys_exit, struct pt_regs *regs, long ret)
{
	__u32 nr = regs->orig_ax;

	switch (nr) {
	case NR_open:
	case NR_openat:
	case NR_openat2:
	case NR_creat:
	case NR_connect:
	case NR_bind:
	case NR_dup:
	case NR_dup2:
	case NR_dup3:
		return result_of(nr, regs, ret);
	}
	return 0;
}

/* An empty sys_exit program: the floor of a tp_btf/sys_exit hook (overhead benchmark). */
SEC("tp_btf/sys_exit")
int BPF_PROG(habit_bench_empty_exit, struct pt_regs *regs, long ret)
{
	return 0;
}

/* An empty program for the per-syscall exit tracepoints (syscalls/sys_exit_openat, ...): the
 * floor of that option (overhead benchmark; needs tracefs). */
SEC("tracepoint/syscalls/sys_exit_openat")
int habit_bench_empty_exit_tp(void *ctx)
{
	return 0;
}

/* An empty sys_enter program: the reference point of the overhead benchmark. */
SEC("tp_btf/sys_enter")
int BPF_PROG(habit_bench_empty, struct pt_regs *regs, long id)
{
	return 0;
}

#endif
