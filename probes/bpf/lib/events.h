/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The event ABI between habitd's eBPF programs and user space.
 *
 * This header is the single source of truth: probes/src/abi.rs mirrors every struct here with
 * #[repr(C)], and probes/tests/abi_layout.rs compiles a C program against this header to check
 * every size and offset. Change both sides together and bump HABIT_ABI_VERSION.
 *
 * Every record on the ring buffer starts with `struct habit_hdr`; `kind` selects the body.
 * Strings are NUL-terminated inside fixed buffers; lengths that were cut are flagged.
 */
#ifndef HABIT_EVENTS_H
#define HABIT_EVENTS_H

#define HABIT_ABI_VERSION 6

#define HABIT_COMM_LEN 16
#define HABIT_PATH_LEN 256
#define HABIT_ARGS_LEN 512
#define HABIT_CGNAME_LEN 72
/* A path as dentry names up to its mount's root, leaf first, each NUL-terminated: how the
 * probes name a file when the syscall's path does not (see lib/dentry.h). */
#define HABIT_COMPONENTS_LEN 512
#define HABIT_COMPONENTS_MAX_DEPTH 16

/* Size of the per-(cgroup slot, syscall) counter table. */
#define HABIT_MAX_SYSCALLS 512
#define HABIT_MAX_CGROUP_SLOTS 1024

enum habit_kind {
	HABIT_EV_EXEC = 1,
	HABIT_EV_FORK = 2,
	HABIT_EV_EXIT = 3,
	HABIT_EV_OPEN = 4,
	HABIT_EV_CHMOD = 5,
	HABIT_EV_CONNECT = 6,
	HABIT_EV_ACCEPT = 7,
	HABIT_EV_BIND = 8,
	HABIT_EV_LISTEN = 9,
	HABIT_EV_PRIV = 10,
	HABIT_EV_SEQ = 11,
	HABIT_EV_FCHANGE = 12,
	HABIT_EV_DUP = 13,
};

/* Reasons a record was lost; index into the per-CPU `drops` array. */
enum habit_drop {
	HABIT_DROP_RINGBUF_FULL = 0,
	HABIT_DROP_SLOTS_FULL = 1,   /* no cgroup slot left for syscall counters */
	HABIT_DROP_DEDUP_FULL = 2,   /* open de-duplication map update failed */
	HABIT_DROP_LISTENERS_FULL = 3,
	HABIT_DROP_TASK_STORAGE = 4, /* task storage could not be created */
	HABIT_DROP_GRAMS_FULL = 5,   /* the 6-gram map is full: a new gram was not counted */
	HABIT_DROP_PRIV_DEDUP_FULL = 6, /* bpf() de-duplication map update failed */
	HABIT_DROP_GRAMS_SLOT_FULL = 7, /* a slot inserted HABIT_SEQ_SLOT_GRAMS new grams this interval */
	HABIT_DROP_MAX = 8,
};

/*
 * Records lost because the ring buffer was full, by workload and kind (`habit_lost`): one row
 * per cgroup slot (the slots of the syscall counters), indexed by enum habit_kind, plus row
 * HABIT_LOST_NO_SLOT for records of a cgroup without a slot (or an accepted connection whose
 * listener is unknown). Every HABIT_DROP_RINGBUF_FULL is counted in exactly one cell.
 */
#define HABIT_LOST_KINDS 16
#define HABIT_LOST_NO_SLOT HABIT_MAX_CGROUP_SLOTS

struct habit_lost_row {
	__u64 kind[HABIT_LOST_KINDS];
};

/* Privileged / kernel-surface operations carried by HABIT_EV_PRIV. */
enum habit_priv_op {
	HABIT_PRIV_SETUID = 1,
	HABIT_PRIV_SETGID = 2,
	HABIT_PRIV_SETREUID = 3,
	HABIT_PRIV_SETREGID = 4,
	HABIT_PRIV_SETRESUID = 5,
	HABIT_PRIV_SETRESGID = 6,
	HABIT_PRIV_CAPSET = 7,
	HABIT_PRIV_PTRACE = 8,
	HABIT_PRIV_MOUNT = 9,
	HABIT_PRIV_UMOUNT = 10,
	HABIT_PRIV_UNSHARE = 11,
	HABIT_PRIV_SETNS = 12,
	HABIT_PRIV_INIT_MODULE = 13,
	HABIT_PRIV_FINIT_MODULE = 14,
	HABIT_PRIV_MEMFD_CREATE = 15,
	HABIT_PRIV_BPF = 16,
	HABIT_PRIV_PACKET_SOCKET = 17,
};

struct habit_hdr {
	__u32 kind;
	__u32 cpu;
	__u64 ts_ns; /* bpf_ktime_get_boot_ns() */
	__u32 pid;   /* thread id */
	__u32 tgid;  /* process id */
	__u32 ppid;  /* tgid of the real parent */
	__u32 uid;
	__u32 gid;
	__u32 mntns; /* mount namespace inode */
	__u64 cgroup_id; /* cgroup v2 id (inode of the cgroup directory) */
	char comm[HABIT_COMM_LEN];
};

#define HABIT_EXEC_ARGS_TRUNCATED 1
#define HABIT_EXEC_EXE_TRUNCATED 2 /* exe_components stopped before the mount root */

struct habit_exec {
	struct habit_hdr hdr;
	__u32 flags;    /* HABIT_EXEC_* */
	__u32 args_len; /* bytes of `args` in use: NUL-separated argv */
	__u32 loginuid;
	__u32 tty;      /* controlling terminal as a device number (major << 20 | minor), 0 if none */
	__u64 cap_effective;
	__u64 cap_permitted;
	char filename[HABIT_PATH_LEN];
	char cgroup_v1[HABIT_CGNAME_LEN]; /* memory-cgroup directory name (v1 fallback) */
	char args[HABIT_ARGS_LEN];
	/* The executed file's dentry names up to its mount's root, leaf first: names the real
	 * binary when `filename` does not (/proc/self/exe, /dev/fd/N, relative paths). */
	char exe_components[HABIT_COMPONENTS_LEN];
};

struct habit_fork {
	struct habit_hdr hdr; /* the parent */
	__u32 child_pid;
	__u32 child_tgid;
};

struct habit_exit {
	struct habit_hdr hdr;
	__s32 exit_code; /* wait(2) status: code << 8 | signal */
	__u32 _pad;
};

/* HABIT_EV_OPEN and HABIT_EV_CHMOD */
struct habit_file {
	struct habit_hdr hdr;
	__s32 dirfd;  /* AT_FDCWD (-100) or a directory fd for relative paths */
	__u32 flags;  /* open flags, or 0 for chmod */
	__u32 mode;   /* creation mode, or the new mode for chmod */
	__u32 syscall;
	/* An open's result, read at syscall exit: the new fd (>= 0) or -errno; 0 for chmod
	 * (reported at entry). */
	__s64 res;
	char path[HABIT_PATH_LEN];
	/* For a relative `path`: the directory it is relative to (cwd or dirfd), as components;
	 * empty for absolute paths. */
	char base_components[HABIT_COMPONENTS_LEN];
};

/* File changes carried by HABIT_EV_FCHANGE (file integrity: issue 16). */
enum habit_fchange_op {
	HABIT_FC_RENAME = 1,   /* rename/renameat/renameat2: path -> path2 */
	HABIT_FC_UNLINK = 2,   /* unlink/unlinkat */
	HABIT_FC_RMDIR = 3,    /* rmdir, unlinkat(AT_REMOVEDIR) */
	HABIT_FC_LINK = 4,     /* link/linkat: path (existing) -> path2 (new name) */
	HABIT_FC_SYMLINK = 5,  /* symlink/symlinkat: path (target, as given) -> path2 (new link) */
	HABIT_FC_TRUNCATE = 6, /* truncate, ftruncate (path empty: the fd's file) */
	HABIT_FC_CHOWN = 7,    /* chown/lchown/fchownat, fchown (path empty: the fd's file) */
	HABIT_FC_UTIMES = 8,   /* utimensat setting an explicit time (timestomping) */
};

/* HABIT_EV_FCHANGE: a change to a file other than by writing it through an open. */
struct habit_fchange {
	struct habit_hdr hdr;
	__u32 op;      /* enum habit_fchange_op */
	__u32 syscall;
	__s32 dirfd;   /* what `path` is relative to (AT_FDCWD or a directory fd); for an fd
			* operation (ftruncate, fchown, utimensat(fd, NULL)) the fd itself */
	__s32 dirfd2;  /* what `path2` is relative to */
	__u64 arg;     /* chown: uid << 32 | gid; truncate: the length; rename/unlinkat/linkat:
			* the flags; 0 otherwise */
	char path[HABIT_PATH_LEN];
	char path2[HABIT_PATH_LEN];
	/* The directory a relative `path` is resolved from (for an fd operation: the file
	 * itself), as components; empty for absolute paths and for a symlink's target. */
	char base_components[HABIT_COMPONENTS_LEN];
	char base2_components[HABIT_COMPONENTS_LEN];
};

/* A socket address: family AF_INET (2) or AF_INET6 (10); addr holds 4 or 16 bytes. */
struct habit_sockaddr {
	__u16 family;
	__u16 port; /* host byte order */
	__u32 scope;
	__u8 addr[16];
};

/* HABIT_EV_CONNECT, HABIT_EV_BIND, HABIT_EV_LISTEN, HABIT_EV_ACCEPT, and HABIT_EV_DUP (an
 * IPv4/IPv6 socket duplicated onto stdin, stdout or stderr: `fd` the old descriptor, `res` the
 * new one, both ends of the socket) */
struct habit_net {
	struct habit_hdr hdr;
	struct habit_sockaddr local;  /* bind/listen/accept: our side */
	struct habit_sockaddr remote; /* connect: destination; accept: peer */
	__u32 protocol; /* IPPROTO_TCP / IPPROTO_UDP, 0 if unknown */
	__s32 fd;       /* socket fd for connect/bind, -1 if not known */
	__s64 res;      /* connect/bind: the syscall's result (0 or -errno, read at exit); 0 for
			 * listen/accept (from the TCP state machine: they happened) */
	__u32 syscall;  /* connect, bind, dup: the syscall number; 0 for listen/accept */
	__u32 _pad;
};

#define HABIT_PRIV_ARG_LEN 64

struct habit_priv {
	struct habit_hdr hdr;
	__u32 op; /* enum habit_priv_op */
	__u32 syscall;
	__u64 args[4]; /* raw syscall arguments (ids, flags, target pid, request) */
	char arg_str[HABIT_PRIV_ARG_LEN]; /* mount target, memfd name: a string argument if any */
};

/* Key of the listener table: who listens on a TCP port in a network namespace. */
struct habit_listener_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

/*
 * Syscall sequences (probes/bpf/sequence.h; the key is defined in models/src/sequence/gram.rs).
 * Every thread keeps its last six syscalls as 10-bit lanes of one u64; the low 60 bits are the
 * key of the 6-gram that ends with the current syscall.
 */
#define HABIT_SEQ_LANE_BITS 10
#define HABIT_SEQ_KEY_MASK ((1ULL << 60) - 1)
/* A thread in detection reports its sums every this many grams once it made an unknown one. */
#define HABIT_SEQ_CHECKPOINT 256
/* At most this many grams of a sampled thread are sent (calibration traces). */
#define HABIT_SEQ_TRACE_MAX 16384

/* What a cgroup slot's workload does with sequences (habit_seq_slot.mode). */
enum habit_seq_mode {
	HABIT_SEQ_OFF = 0,
	HABIT_SEQ_LEARN = 1,  /* count 6-grams per workload, send each new one once */
	HABIT_SEQ_DETECT = 2, /* sum the values of valued 6-grams, send the others */
};

/* Set by user space per cgroup slot. */
struct habit_seq_slot {
	__u32 mode;    /* enum habit_seq_mode */
	__u32 wid;     /* workload id: the 6-gram map is keyed by it */
	__s32 samples; /* learning: how many more new threads to send whole (calibration traces) */
	__u32 grams;   /* learning: new 6-grams this slot inserted since user space last wrote it */
};

/* Most new 6-grams one cgroup slot inserts between two writes of its slot by user space (one
 * counters interval): a flood of new syscall orders cannot fill the map every workload shares
 * before user space, at its next read, makes the workload unstable and removes its grams. */
#define HABIT_SEQ_SLOT_GRAMS 16384

struct habit_gram_key {
	__u32 wid;
	__u32 _pad;
	__u64 gram;
};

/* Generations of the detection cache in front of the 6-gram map (sequence.h): user space bumps
 * the entry of workload id `wid & (HABIT_GRAM_GENS - 1)` after it changed that workload's grams,
 * which invalidates every cached gram of it (and of the few workload ids that share the entry). */
#define HABIT_GRAM_GENS 1024

/* One generation, written whole by user space. `check` is always ~generation: the kernel reads the
 * pair in one load and ignores a pair that does not match (a write torn by a byte-wise copy),
 * so that it never tags a cache entry with a generation user space did not write. */
struct habit_gram_gen {
	__u32 generation;
	__u32 check;
};

#define HABIT_GRAM_VALUED 1    /* `value` is set: detection sums it in the kernel */
#define HABIT_GRAM_UNLEARNED 2 /* valued, but not learned (an unknown gram seen before) */

struct habit_gram_val {
	__u64 count; /* learning: occurrences since inserted */
	__u32 value; /* detection: the gram's value in micro-nats */
	__u32 flags; /* HABIT_GRAM_* */
};

/* Flags of a sequence record. */
#define HABIT_SEQ_REC_NEW 1        /* learning: the workload's first occurrence of this gram */
#define HABIT_SEQ_REC_TRACE 2      /* learning: a sampled thread's gram (every one is sent) */
#define HABIT_SEQ_REC_UNKNOWN 4    /* detection: a gram without a value */
#define HABIT_SEQ_REC_CHECKPOINT 8 /* detection: nsys reached a multiple of HABIT_SEQ_CHECKPOINT */
#define HABIT_SEQ_REC_END 16       /* the thread exits or executes a new program */

struct habit_seq {
	struct habit_hdr hdr;
	__u64 gram;      /* key of the 6-gram ending at this syscall (END: the last one) */
	__u64 nsys;      /* grams of the thread since exec (detection: since scoring began) */
	__u64 known_sum; /* detection: sum of the kernel-valued grams' values, micro-nats */
	__u32 unknown;   /* detection: grams so far that the workload never made in learning */
	__u32 flags;     /* HABIT_SEQ_REC_* */
	__u32 wid;
	__u32 _pad;
};

#define HABIT_TASK_INIT 1    /* the storage was initialised */
#define HABIT_TASK_LATE 2    /* the thread ran before the probes: its first grams are partial */
#define HABIT_TASK_SAMPLED 4 /* learning: every gram of this thread is sent */
#define HABIT_TASK_SCORING 8 /* detection: nsys/known_sum/unknown count from scoring start */

/* Per-task state kept in BPF task storage: the cached counter slot of the task's cgroup and
 * the syscall history. */
struct habit_task {
	__u64 cgroup_id;
	/* The task's css_set when cgroup_id was read: while it is unchanged, so is the cgroup. */
	__u64 css_set;
	__u32 slot;
	__u32 flags; /* HABIT_TASK_* */
	__u64 history;
	__u64 nsys;
	__u64 known_sum;
	__u32 unknown;
	__u32 _pad;
};

#endif
