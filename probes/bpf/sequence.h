/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Syscall sequences: every thread's last six syscalls form a 6-gram key (models/src/sequence/
 * gram.rs defines it, with test vectors). What happens to a key depends on the mode user space
 * set for the thread's cgroup slot:
 *
 *   learning   count it in the workload's 6-gram map; send it once, the first time the workload
 *              makes it; send every key of a few sampled new threads (calibration traces)
 *   detection  look it up: if user space gave it a value, add the value to the thread's sum;
 *              otherwise send it. A thread that made an unknown gram also sends its sums every
 *              HABIT_SEQ_CHECKPOINT grams and when it ends, so user space can score the thread
 *              over all its grams while only unknown grams cross the ring buffer.
 */
#ifndef HABIT_SEQUENCE_H
#define HABIT_SEQUENCE_H

#include "lib/common.h"

/* Set by the loader: CLOCK_MONOTONIC when the probes were loaded. A thread that started before
 * that is LATE: its first five grams miss the syscalls it made before. */
const volatile __u64 habit_attach_ns = 0;

/* Per cgroup slot: mode and workload id, written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HABIT_MAX_CGROUP_SLOTS);
	__type(key, __u32);
	__type(value, struct habit_seq_slot);
} habit_seq_slots SEC(".maps");

/* (workload, 6-gram) -> count while learning, value in detection. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct habit_gram_key);
	__type(value, struct habit_gram_val);
} habit_grams SEC(".maps");

static __always_inline __u64 seq_lane(__u32 nr)
{
	return nr > 1021 ? 1023 : (__u64)nr + 1;
}

/* Called for every syscall of a task with storage: the history always advances, so that a
 * workload switching to detection scores its threads from a full history. */
static __always_inline void seq_push(struct habit_task *ts, __u32 nr)
{
	if (!(ts->flags & HABIT_TASK_INIT)) {
		ts->flags = HABIT_TASK_INIT;
		if (BPF_CORE_READ(bpf_get_current_task_btf(), start_time) < habit_attach_ns)
			ts->flags |= HABIT_TASK_LATE;
	}
	ts->history = (ts->history << HABIT_SEQ_LANE_BITS) | seq_lane(nr);
	ts->nsys += 1;
}

static __noinline void seq_send(struct habit_task *ts, __u32 wid, __u32 flags)
{
	struct habit_seq *e = reserve(sizeof(*e), HABIT_EV_SEQ);

	if (!e)
		return;
	fill_hdr(&e->hdr, HABIT_EV_SEQ);
	e->gram = ts->history & HABIT_SEQ_KEY_MASK;
	e->nsys = ts->nsys;
	e->known_sum = ts->known_sum;
	e->unknown = ts->unknown;
	e->flags = flags;
	e->wid = wid;
	e->_pad = 0;
	submit(e);
}

static __always_inline __u32 seq_learn(struct habit_task *ts, struct habit_seq_slot *cfg,
				       struct habit_gram_key *key)
{
	struct habit_gram_val *v, fresh = { .count = 1 };
	__u32 flags = 0;

	if (ts->flags & HABIT_TASK_SCORING) {
		/* Back to learning (relearn): grams count from here on. */
		ts->flags &= ~HABIT_TASK_SCORING;
	}
	if (ts->nsys == 1 && !(ts->flags & HABIT_TASK_LATE) && cfg->samples > 0) {
		/* A racy decrement: two CPUs may both take the last sample, which is harmless. */
		cfg->samples -= 1;
		ts->flags |= HABIT_TASK_SAMPLED;
	}
	if ((ts->flags & HABIT_TASK_SAMPLED) && ts->nsys <= HABIT_SEQ_TRACE_MAX)
		flags |= HABIT_SEQ_REC_TRACE;
	v = bpf_map_lookup_elem(&habit_grams, key);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
	} else if (cfg->grams >= HABIT_SEQ_SLOT_GRAMS) {
		count_drop(HABIT_DROP_GRAMS_SLOT_FULL);
	} else if (bpf_map_update_elem(&habit_grams, key, &fresh, BPF_NOEXIST) == 0) {
		__sync_fetch_and_add(&cfg->grams, 1);
		flags |= HABIT_SEQ_REC_NEW;
	} else {
		/* Full, or another CPU inserted it a moment ago (then it sent it). */
		if (!bpf_map_lookup_elem(&habit_grams, key))
			count_drop(HABIT_DROP_GRAMS_FULL);
	}
	return flags;
}

static __always_inline __u32 seq_detect(struct habit_task *ts, struct habit_gram_key *key)
{
	struct habit_gram_val *v;
	__u32 flags = 0;

	if (!(ts->flags & HABIT_TASK_SCORING)) {
		/* Scoring starts here: the counts restart, the history carries on. */
		ts->flags = (ts->flags | HABIT_TASK_SCORING) & ~HABIT_TASK_SAMPLED;
		ts->nsys = 1;
		ts->known_sum = 0;
		ts->unknown = 0;
	}
	v = bpf_map_lookup_elem(&habit_grams, key);
	if (v && (v->flags & HABIT_GRAM_VALUED)) {
		ts->known_sum += v->value;
		if (v->flags & HABIT_GRAM_UNLEARNED)
			ts->unknown += 1;
	} else {
		ts->unknown += 1;
		flags |= HABIT_SEQ_REC_UNKNOWN;
	}
	if (ts->unknown && (ts->nsys & (HABIT_SEQ_CHECKPOINT - 1)) == 0)
		flags |= HABIT_SEQ_REC_CHECKPOINT;
	return flags;
}

/* The out-of-line part of a syscall of a workload whose slot has sequences on. */
static __noinline void seq_gram(struct habit_task *ts, struct habit_seq_slot *cfg)
{
	struct habit_gram_key key = {};
	__u32 flags, wid = cfg->wid;

	/* The first grams of a thread that predates the probes would look like a thread start. */
	if ((ts->flags & HABIT_TASK_LATE) && ts->nsys < 6)
		return;
	key.wid = wid;
	key.gram = ts->history & HABIT_SEQ_KEY_MASK;
	if (cfg->mode == HABIT_SEQ_LEARN)
		flags = seq_learn(ts, cfg, &key);
	else if (cfg->mode == HABIT_SEQ_DETECT)
		flags = seq_detect(ts, &key);
	else
		return;
	if (flags)
		seq_send(ts, wid, flags);
}

static __always_inline __u32 seq_wid(__u32 slot)
{
	struct habit_seq_slot *cfg = bpf_map_lookup_elem(&habit_seq_slots, &slot);

	return cfg ? cfg->wid : 0;
}

/* A thread's program ends (exit, or exec of a new program): send its final sums if user space
 * is scoring it or collecting its trace, then start the history afresh. */
static __always_inline void seq_end(struct task_struct *task, bool reset)
{
	struct habit_task *ts = bpf_task_storage_get(&habit_task_state, task, 0, 0);

	if (!ts)
		return;
	if (((ts->flags & HABIT_TASK_SCORING) && ts->unknown) ||
	    ((ts->flags & HABIT_TASK_SAMPLED) && ts->nsys <= HABIT_SEQ_TRACE_MAX))
		seq_send(ts, ts->slot ? seq_wid(ts->slot - 1) : 0, HABIT_SEQ_REC_END);
	if (reset) {
		ts->flags = HABIT_TASK_INIT;
		ts->history = 0;
		ts->nsys = 0;
		ts->known_sum = 0;
		ts->unknown = 0;
	}
}

#endif
