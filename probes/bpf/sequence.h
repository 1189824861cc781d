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
 *
 * Detection reads a gram's value through a per-CPU direct-mapped cache (habit_gram_cache): a
 * per-CPU array lookup is inlined by the verifier, where the hash map costs a helper call that
 * hashes a 16-byte key and walks a bucket on every syscall. Learning does not use it: its counts
 * must reach user space exact, so each gram still takes the hash lookup and the shared add.
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

/*
 * The detection cache. Entry i of each CPU holds the last (workload, gram) of that CPU whose
 * hash (gram_cache_index) is i, with what habit_grams said about it then (its value and flags;
 * flags 0 when it had none, so an unknown gram is cached too) and the generation of its workload
 * at the time. A hit needs the same gram, workload and generation.
 *
 * Invalidation: habit_grams changes under detection only from user space (set_values, clear),
 * which bumps the workload's generation after its last write. The kernel reads the generation
 * before the hash lookup that fills an entry, so an entry filled from the map as it was before
 * a write carries the old generation and misses once the bump is visible; until then a syscall
 * may use the old value, as a hash lookup racing the write could. Learning changes the map from
 * the kernel but never reads the cache, and user space bumps the generation when a workload
 * (re)enters detection, after writing its values.
 *
 * Concurrency: each CPU has its own entries, and only habit_sys_enter writes them; the kernel
 * runs one instance of a program per CPU at a time (a nested run is skipped), so an entry is
 * never written by two runs at once and no atomics are needed. Different workloads share the
 * table; their entries evict each other (a miss, never a wrong value: the workload id is
 * compared).
 */
#define HABIT_GRAM_CACHE_BITS 12
#define HABIT_GRAM_CACHE_ENTRIES (1 << HABIT_GRAM_CACHE_BITS)

struct habit_gram_cached {
	__u64 gram;
	__u32 wid;
	__u32 gen;
	__u32 value;
	__u32 flags; /* HABIT_GRAM_* of the map's entry, 0 when the map had none */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HABIT_GRAM_CACHE_ENTRIES);
	__type(key, __u32);
	__type(value, struct habit_gram_cached);
} habit_gram_cache SEC(".maps");

/* Per workload id (masked): the generation of its grams in habit_grams, written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HABIT_GRAM_GENS);
	__type(key, __u32);
	__type(value, struct habit_gram_gen);
} habit_gram_gens SEC(".maps");

/* Multiply-shift hash of (workload, gram) to a cache index: the top bits of the product. */
static __always_inline __u32 gram_cache_index(__u32 wid, __u64 gram)
{
	__u64 h = (gram ^ ((__u64)wid << 32)) * 0x9e3779b97f4a7c15ULL;

	return h >> (64 - HABIT_GRAM_CACHE_BITS);
}

/* What habit_grams holds for `key` in detection: the value and HABIT_GRAM_* flags (0 when the
 * map has no entry), through the cache. */
static __always_inline __u32 gram_lookup(struct habit_gram_key *key, __u32 *value)
{
	__u32 gidx = key->wid & (HABIT_GRAM_GENS - 1);
	__u32 idx = gram_cache_index(key->wid, key->gram);
	struct habit_gram_gen *genp = bpf_map_lookup_elem(&habit_gram_gens, &gidx);
	struct habit_gram_cached *c = bpf_map_lookup_elem(&habit_gram_cache, &idx);
	struct habit_gram_val *v;
	__u64 pair;
	__u32 gen;
	bool cacheable;

	/* One load of both halves; a pair that does not match was torn by a write in progress. */
	pair = genp ? *(volatile __u64 *)genp : 0;
	gen = (__u32)pair;
	cacheable = c && genp && (__u32)(pair >> 32) == ~gen;
	if (cacheable && c->gram == key->gram && c->wid == key->wid && c->gen == gen) {
		*value = c->value;
		return c->flags;
	}
	v = bpf_map_lookup_elem(&habit_grams, key);
	*value = v ? v->value : 0;
	if (cacheable) {
		c->gram = key->gram;
		c->wid = key->wid;
		c->gen = gen;
		c->value = *value;
		c->flags = v ? v->flags : 0;
	}
	return v ? v->flags : 0;
}

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
	__u32 flags = 0, gflags, value;

	if (!(ts->flags & HABIT_TASK_SCORING)) {
		/* Scoring starts here: the counts restart, the history carries on. */
		ts->flags = (ts->flags | HABIT_TASK_SCORING) & ~HABIT_TASK_SAMPLED;
		ts->nsys = 1;
		ts->known_sum = 0;
		ts->unknown = 0;
	}
	gflags = gram_lookup(key, &value);
	if (gflags & HABIT_GRAM_VALUED) {
		ts->known_sum += value;
		if (gflags & HABIT_GRAM_UNLEARNED)
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
