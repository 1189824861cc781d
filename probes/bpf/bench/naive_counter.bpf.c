/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The naive way to count syscalls per workload, as a reference for benches/overhead.rs: one
 * shared hash map keyed by (cgroup id, syscall number), looked up on every sys_enter and bumped
 * with an atomic add. Not part of habitd (which counts in a per-CPU array with the cgroup slot
 * cached in task storage); the benchmark compiles it with the flags of ../clang-args, from
 * probes/bpf/, and loads it with aya.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct naive_key {
	__u64 cgroup_id;
	__u32 nr;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct naive_key);
	__type(value, __u64);
} naive_counts SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(naive_sys_enter, struct pt_regs *regs, long id)
{
	struct naive_key key = {
		.cgroup_id = bpf_get_current_cgroup_id(),
		.nr = (__u32)id,
	};
	__u64 one = 1;
	__u64 *count = bpf_map_lookup_elem(&naive_counts, &key);

	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&naive_counts, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
