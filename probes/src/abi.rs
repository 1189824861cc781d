//! `#[repr(C)]` mirrors of `probes/bpf/lib/events.h`, field for field.
//!
//! The test `abi_layout` (tests/abi_layout.rs) compiles a C program against the header and
//! compares every size and offset, and the constants of [`constant_table`], with these
//! definitions, so the two sides cannot drift.

pub const ABI_VERSION: u32 = 6;

pub const COMM_LEN: usize = 16;
pub const PATH_LEN: usize = 256;
pub const ARGS_LEN: usize = 512;
pub const CGNAME_LEN: usize = 72;
pub const COMPONENTS_LEN: usize = 512;
pub const PRIV_ARG_LEN: usize = 64;

/// Size of the syscall-number axis of the counter table.
pub const MAX_SYSCALLS: u32 = 512;
/// Number of cgroups whose syscalls can be counted at once.
pub const MAX_CGROUP_SLOTS: u32 = 1024;

pub const EV_EXEC: u32 = 1;
pub const EV_FORK: u32 = 2;
pub const EV_EXIT: u32 = 3;
pub const EV_OPEN: u32 = 4;
pub const EV_CHMOD: u32 = 5;
pub const EV_CONNECT: u32 = 6;
pub const EV_ACCEPT: u32 = 7;
pub const EV_BIND: u32 = 8;
pub const EV_LISTEN: u32 = 9;
pub const EV_PRIV: u32 = 10;
pub const EV_SEQ: u32 = 11;
pub const EV_FCHANGE: u32 = 12;
pub const EV_DUP: u32 = 13;

/// `enum habit_fchange_op`: the operation of a file-change record.
pub const FC_RENAME: u32 = 1;
pub const FC_UNLINK: u32 = 2;
pub const FC_RMDIR: u32 = 3;
pub const FC_LINK: u32 = 4;
pub const FC_SYMLINK: u32 = 5;
pub const FC_TRUNCATE: u32 = 6;
pub const FC_CHOWN: u32 = 7;
pub const FC_UTIMES: u32 = 8;

pub const EXEC_ARGS_TRUNCATED: u32 = 1;
pub const EXEC_EXE_TRUNCATED: u32 = 2;

/// Reasons the kernel side lost a record (index into the per-CPU `habit_drops` array).
pub const DROP_REASONS: [&str; 8] = [
    "ringbuf_full",
    "counter_slots_full",
    "open_dedup_full",
    "listeners_full",
    "task_storage",
    "grams_full",
    "priv_dedup_full",
    "grams_slot_full",
];
pub const DROP_MAX: u32 = 8;

/// Cells per row of the `habit_lost` map: records lost on a full ring buffer, indexed by event
/// kind (`EV_*`).
pub const LOST_KINDS: usize = 16;
/// The `habit_lost` row of records whose cgroup had no counter slot (rows below it are slots).
pub const LOST_NO_SLOT: u32 = MAX_CGROUP_SLOTS;

/// `struct habit_lost_row`: one cgroup slot's records lost on a full ring buffer, by kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostRow {
    pub kind: [u64; LOST_KINDS],
}

pub const PRIV_SETUID: u32 = 1;
pub const PRIV_SETGID: u32 = 2;
pub const PRIV_SETREUID: u32 = 3;
pub const PRIV_SETREGID: u32 = 4;
pub const PRIV_SETRESUID: u32 = 5;
pub const PRIV_SETRESGID: u32 = 6;
pub const PRIV_CAPSET: u32 = 7;
pub const PRIV_PTRACE: u32 = 8;
pub const PRIV_MOUNT: u32 = 9;
pub const PRIV_UMOUNT: u32 = 10;
pub const PRIV_UNSHARE: u32 = 11;
pub const PRIV_SETNS: u32 = 12;
pub const PRIV_INIT_MODULE: u32 = 13;
pub const PRIV_FINIT_MODULE: u32 = 14;
pub const PRIV_MEMFD_CREATE: u32 = 15;
pub const PRIV_BPF: u32 = 16;
pub const PRIV_PACKET_SOCKET: u32 = 17;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Hdr {
    pub kind: u32,
    pub cpu: u32,
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub mntns: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Exec {
    pub hdr: Hdr,
    pub flags: u32,
    pub args_len: u32,
    pub loginuid: u32,
    pub tty: u32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
    pub filename: [u8; PATH_LEN],
    pub cgroup_v1: [u8; CGNAME_LEN],
    pub args: [u8; ARGS_LEN],
    pub exe_components: [u8; COMPONENTS_LEN],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Fork {
    pub hdr: Hdr,
    pub child_pid: u32,
    pub child_tgid: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Exit {
    pub hdr: Hdr,
    pub exit_code: i32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct File {
    pub hdr: Hdr,
    pub dirfd: i32,
    pub flags: u32,
    pub mode: u32,
    pub syscall: u32,
    /// An open's result (new fd or -errno, read at syscall exit); 0 for chmod.
    pub res: i64,
    pub path: [u8; PATH_LEN],
    pub base_components: [u8; COMPONENTS_LEN],
}

/// `struct habit_fchange`: a rename, unlink, link, symlink, truncate, chown or timestomp.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FChange {
    pub hdr: Hdr,
    pub op: u32,
    pub syscall: u32,
    pub dirfd: i32,
    pub dirfd2: i32,
    pub arg: u64,
    pub path: [u8; PATH_LEN],
    pub path2: [u8; PATH_LEN],
    pub base_components: [u8; COMPONENTS_LEN],
    pub base2_components: [u8; COMPONENTS_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockAddr {
    pub family: u16,
    pub port: u16,
    pub scope: u32,
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Net {
    pub hdr: Hdr,
    pub local: SockAddr,
    pub remote: SockAddr,
    pub protocol: u32,
    pub fd: i32,
    /// connect/bind: the syscall's result (0 or -errno); dup: the new fd; 0 for
    /// listen/accept.
    pub res: i64,
    /// connect, bind, dup: the syscall number; 0 for listen/accept.
    pub syscall: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Priv {
    pub hdr: Hdr,
    pub op: u32,
    pub syscall: u32,
    pub args: [u64; 4],
    pub arg_str: [u8; PRIV_ARG_LEN],
}

/// `struct habit_listener_key`: key of the kernel's listener table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

/// `enum habit_seq_mode`: what a cgroup slot's workload does with syscall sequences.
pub const SEQ_OFF: u32 = 0;
pub const SEQ_LEARN: u32 = 1;
pub const SEQ_DETECT: u32 = 2;
/// Bits per syscall in a thread's history (`HABIT_SEQ_LANE_BITS`).
pub const SEQ_LANE_BITS: u32 = 10;
/// The 6-gram key: the low six lanes of the history (`HABIT_SEQ_KEY_MASK`).
pub const SEQ_KEY_MASK: u64 = (1 << 60) - 1;
/// Grams between the sums a scored thread reports (`HABIT_SEQ_CHECKPOINT`).
pub const SEQ_CHECKPOINT: u64 = 256;
/// Longest calibration trace, in grams (`HABIT_SEQ_TRACE_MAX`).
pub const SEQ_TRACE_MAX: u64 = 16384;
/// Most new 6-grams a cgroup slot inserts between two writes of its slot by user space.
pub const SEQ_SLOT_GRAMS: u32 = 16384;
pub const GRAM_VALUED: u32 = 1;
pub const GRAM_UNLEARNED: u32 = 2;
/// Entries of `habit_gram_gens`: a workload id's generation is at `wid & (GRAM_GENS - 1)`.
pub const GRAM_GENS: u32 = 1024;
pub const SEQ_REC_NEW: u32 = 1;
pub const SEQ_REC_TRACE: u32 = 2;
pub const SEQ_REC_UNKNOWN: u32 = 4;
pub const SEQ_REC_CHECKPOINT: u32 = 8;
pub const SEQ_REC_END: u32 = 16;

/// `struct habit_seq`: a syscall 6-gram record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Seq {
    pub hdr: Hdr,
    pub gram: u64,
    pub nsys: u64,
    pub known_sum: u64,
    pub unknown: u32,
    pub flags: u32,
    pub wid: u32,
    pub _pad: u32,
}

/// `struct habit_seq_slot`: the sequence mode of a cgroup slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqSlot {
    pub mode: u32,
    pub wid: u32,
    pub samples: i32,
    /// New 6-grams the slot inserted since user space last wrote it (the kernel counts them).
    pub grams: u32,
}

/// `struct habit_gram_key`: (workload id, 6-gram key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GramKey {
    pub wid: u32,
    pub _pad: u32,
    pub gram: u64,
}

/// `struct habit_gram_gen`: the generation of a workload's grams, which invalidates the kernel's
/// detection cache of them; `check` is always `!generation` (the kernel ignores a torn write).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GramGen {
    pub generation: u32,
    pub check: u32,
}

impl GramGen {
    /// The generation after this one.
    pub fn next(self) -> Self {
        let generation = self.generation.wrapping_add(1);
        Self {
            generation,
            check: !generation,
        }
    }
}

/// `struct habit_gram_val`: a count while learning, a value in detection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GramVal {
    pub count: u64,
    pub value: u32,
    pub flags: u32,
}

// SAFETY: plain-old-data types with no padding holes that matter to the kernel (aya copies them
// byte for byte into and out of maps).
unsafe impl aya::Pod for Hdr {}
unsafe impl aya::Pod for ListenerKey {}
unsafe impl aya::Pod for SeqSlot {}
unsafe impl aya::Pod for GramKey {}
unsafe impl aya::Pod for GramVal {}
unsafe impl aya::Pod for GramGen {}
unsafe impl aya::Pod for LostRow {}

/// (C macro or enumerator, Rust value) for every constant both sides use: compared with the C
/// header by the `abi_layout` test.
pub fn constant_table() -> Vec<(&'static str, u64)> {
    vec![
        ("HABIT_ABI_VERSION", ABI_VERSION.into()),
        ("HABIT_COMM_LEN", COMM_LEN as u64),
        ("HABIT_PATH_LEN", PATH_LEN as u64),
        ("HABIT_ARGS_LEN", ARGS_LEN as u64),
        ("HABIT_CGNAME_LEN", CGNAME_LEN as u64),
        ("HABIT_COMPONENTS_LEN", COMPONENTS_LEN as u64),
        ("HABIT_PRIV_ARG_LEN", PRIV_ARG_LEN as u64),
        ("HABIT_MAX_SYSCALLS", MAX_SYSCALLS.into()),
        ("HABIT_MAX_CGROUP_SLOTS", MAX_CGROUP_SLOTS.into()),
        ("HABIT_EV_PRIV", EV_PRIV.into()),
        ("HABIT_EV_SEQ", EV_SEQ.into()),
        ("HABIT_EV_FCHANGE", EV_FCHANGE.into()),
        ("HABIT_EV_DUP", EV_DUP.into()),
        ("HABIT_FC_RENAME", FC_RENAME.into()),
        ("HABIT_FC_UNLINK", FC_UNLINK.into()),
        ("HABIT_FC_RMDIR", FC_RMDIR.into()),
        ("HABIT_FC_LINK", FC_LINK.into()),
        ("HABIT_FC_SYMLINK", FC_SYMLINK.into()),
        ("HABIT_FC_TRUNCATE", FC_TRUNCATE.into()),
        ("HABIT_FC_CHOWN", FC_CHOWN.into()),
        ("HABIT_FC_UTIMES", FC_UTIMES.into()),
        ("HABIT_DROP_GRAMS_FULL", (DROP_REASONS.len() - 3) as u64),
        (
            "HABIT_DROP_PRIV_DEDUP_FULL",
            (DROP_REASONS.len() - 2) as u64,
        ),
        (
            "HABIT_DROP_GRAMS_SLOT_FULL",
            (DROP_REASONS.len() - 1) as u64,
        ),
        ("HABIT_SEQ_SLOT_GRAMS", SEQ_SLOT_GRAMS.into()),
        ("HABIT_GRAM_GENS", GRAM_GENS.into()),
        ("HABIT_DROP_MAX", DROP_MAX.into()),
        ("HABIT_LOST_KINDS", LOST_KINDS as u64),
        ("HABIT_LOST_NO_SLOT", LOST_NO_SLOT.into()),
        ("HABIT_EV_EXEC", EV_EXEC.into()),
        ("HABIT_EV_CONNECT", EV_CONNECT.into()),
        ("HABIT_EV_ACCEPT", EV_ACCEPT.into()),
        ("HABIT_SEQ_OFF", SEQ_OFF.into()),
        ("HABIT_SEQ_LEARN", SEQ_LEARN.into()),
        ("HABIT_SEQ_DETECT", SEQ_DETECT.into()),
        ("HABIT_SEQ_LANE_BITS", SEQ_LANE_BITS.into()),
        ("HABIT_SEQ_KEY_MASK", SEQ_KEY_MASK),
        ("HABIT_SEQ_CHECKPOINT", SEQ_CHECKPOINT),
        ("HABIT_SEQ_TRACE_MAX", SEQ_TRACE_MAX),
        ("HABIT_GRAM_VALUED", GRAM_VALUED.into()),
        ("HABIT_GRAM_UNLEARNED", GRAM_UNLEARNED.into()),
        ("HABIT_SEQ_REC_NEW", SEQ_REC_NEW.into()),
        ("HABIT_SEQ_REC_TRACE", SEQ_REC_TRACE.into()),
        ("HABIT_SEQ_REC_UNKNOWN", SEQ_REC_UNKNOWN.into()),
        ("HABIT_SEQ_REC_CHECKPOINT", SEQ_REC_CHECKPOINT.into()),
        ("HABIT_SEQ_REC_END", SEQ_REC_END.into()),
    ]
}

/// One row of [`layout_table`]: (C struct name without `struct`, size, [(field, offset)]).
pub type StructLayout = (&'static str, usize, Vec<(&'static str, usize)>);

/// (type name, size, [(field, offset)]) for every mirrored struct: compared with the C header
/// by the `abi_layout` test.
pub fn layout_table() -> Vec<StructLayout> {
    use core::mem::{offset_of, size_of};
    vec![
        (
            "habit_hdr",
            size_of::<Hdr>(),
            vec![
                ("kind", offset_of!(Hdr, kind)),
                ("cpu", offset_of!(Hdr, cpu)),
                ("ts_ns", offset_of!(Hdr, ts_ns)),
                ("pid", offset_of!(Hdr, pid)),
                ("tgid", offset_of!(Hdr, tgid)),
                ("ppid", offset_of!(Hdr, ppid)),
                ("uid", offset_of!(Hdr, uid)),
                ("gid", offset_of!(Hdr, gid)),
                ("mntns", offset_of!(Hdr, mntns)),
                ("cgroup_id", offset_of!(Hdr, cgroup_id)),
                ("comm", offset_of!(Hdr, comm)),
            ],
        ),
        (
            "habit_exec",
            size_of::<Exec>(),
            vec![
                ("flags", offset_of!(Exec, flags)),
                ("args_len", offset_of!(Exec, args_len)),
                ("loginuid", offset_of!(Exec, loginuid)),
                ("tty", offset_of!(Exec, tty)),
                ("cap_effective", offset_of!(Exec, cap_effective)),
                ("cap_permitted", offset_of!(Exec, cap_permitted)),
                ("filename", offset_of!(Exec, filename)),
                ("cgroup_v1", offset_of!(Exec, cgroup_v1)),
                ("args", offset_of!(Exec, args)),
                ("exe_components", offset_of!(Exec, exe_components)),
            ],
        ),
        (
            "habit_fork",
            size_of::<Fork>(),
            vec![
                ("child_pid", offset_of!(Fork, child_pid)),
                ("child_tgid", offset_of!(Fork, child_tgid)),
            ],
        ),
        (
            "habit_exit",
            size_of::<Exit>(),
            vec![("exit_code", offset_of!(Exit, exit_code))],
        ),
        (
            "habit_file",
            size_of::<File>(),
            vec![
                ("dirfd", offset_of!(File, dirfd)),
                ("flags", offset_of!(File, flags)),
                ("mode", offset_of!(File, mode)),
                ("syscall", offset_of!(File, syscall)),
                ("res", offset_of!(File, res)),
                ("path", offset_of!(File, path)),
                ("base_components", offset_of!(File, base_components)),
            ],
        ),
        (
            "habit_fchange",
            size_of::<FChange>(),
            vec![
                ("op", offset_of!(FChange, op)),
                ("syscall", offset_of!(FChange, syscall)),
                ("dirfd", offset_of!(FChange, dirfd)),
                ("dirfd2", offset_of!(FChange, dirfd2)),
                ("arg", offset_of!(FChange, arg)),
                ("path", offset_of!(FChange, path)),
                ("path2", offset_of!(FChange, path2)),
                ("base_components", offset_of!(FChange, base_components)),
                ("base2_components", offset_of!(FChange, base2_components)),
            ],
        ),
        (
            "habit_sockaddr",
            size_of::<SockAddr>(),
            vec![
                ("family", offset_of!(SockAddr, family)),
                ("port", offset_of!(SockAddr, port)),
                ("scope", offset_of!(SockAddr, scope)),
                ("addr", offset_of!(SockAddr, addr)),
            ],
        ),
        (
            "habit_net",
            size_of::<Net>(),
            vec![
                ("local", offset_of!(Net, local)),
                ("remote", offset_of!(Net, remote)),
                ("protocol", offset_of!(Net, protocol)),
                ("fd", offset_of!(Net, fd)),
                ("res", offset_of!(Net, res)),
                ("syscall", offset_of!(Net, syscall)),
            ],
        ),
        (
            "habit_seq",
            size_of::<Seq>(),
            vec![
                ("gram", offset_of!(Seq, gram)),
                ("nsys", offset_of!(Seq, nsys)),
                ("known_sum", offset_of!(Seq, known_sum)),
                ("unknown", offset_of!(Seq, unknown)),
                ("flags", offset_of!(Seq, flags)),
                ("wid", offset_of!(Seq, wid)),
            ],
        ),
        (
            "habit_seq_slot",
            size_of::<SeqSlot>(),
            vec![
                ("mode", offset_of!(SeqSlot, mode)),
                ("wid", offset_of!(SeqSlot, wid)),
                ("samples", offset_of!(SeqSlot, samples)),
                ("grams", offset_of!(SeqSlot, grams)),
            ],
        ),
        (
            "habit_gram_key",
            size_of::<GramKey>(),
            vec![
                ("wid", offset_of!(GramKey, wid)),
                ("gram", offset_of!(GramKey, gram)),
            ],
        ),
        (
            "habit_gram_gen",
            size_of::<GramGen>(),
            vec![
                ("generation", offset_of!(GramGen, generation)),
                ("check", offset_of!(GramGen, check)),
            ],
        ),
        (
            "habit_gram_val",
            size_of::<GramVal>(),
            vec![
                ("count", offset_of!(GramVal, count)),
                ("value", offset_of!(GramVal, value)),
                ("flags", offset_of!(GramVal, flags)),
            ],
        ),
        (
            "habit_priv",
            size_of::<Priv>(),
            vec![
                ("op", offset_of!(Priv, op)),
                ("syscall", offset_of!(Priv, syscall)),
                ("args", offset_of!(Priv, args)),
                ("arg_str", offset_of!(Priv, arg_str)),
            ],
        ),
        (
            "habit_lost_row",
            size_of::<LostRow>(),
            vec![("kind", offset_of!(LostRow, kind))],
        ),
        (
            "habit_listener_key",
            size_of::<ListenerKey>(),
            vec![
                ("netns", offset_of!(ListenerKey, netns)),
                ("port", offset_of!(ListenerKey, port)),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::GramGen;

    /// Every generation user space writes is a valid pair for the kernel (`check == !generation`),
    /// across the wrap; the all-zero initial entry is not one (the kernel's cache stays off for a
    /// workload whose grams user space never wrote).
    #[test]
    fn gram_generations_are_always_valid_pairs() {
        let initial = GramGen::default();
        assert_ne!(initial.check, !initial.generation);
        let mut g = initial;
        for _ in 0..3 {
            g = g.next();
            assert_eq!(g.check, !g.generation);
        }
        assert_eq!(g.generation, 3);
        let wrapped = GramGen {
            generation: u32::MAX,
            check: 0,
        }
        .next();
        assert_eq!((wrapped.generation, wrapped.check), (0, u32::MAX));
    }
}
