/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * habitd's probes, compiled as one object so that every hook family shares the ring buffer,
 * the drop counters and the process-level maps without pinning. Each family lives in its own
 * header: process.h (exec/fork/exit), file.h, fchange.h (renames, unlinks, links, truncates,
 * chowns, timestomps), net.h, priv.h, syscalls.h (the hot path), sequence.h (per-thread
 * syscall 6-grams).
 */
#include "lib/common.h"
#include "process.h"
#include "file.h"
#include "fchange.h"
#include "net.h"
#include "priv.h"
#include "syscalls.h"
#include "optional.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
