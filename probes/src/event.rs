//! Decoded events: owned, typed values built from ring-buffer records (see [`crate::abi`]).
//!
//! These are what the rest of habitd sees of the kernel; they carry raw facts only (ids, paths
//! as the process passed them). Attribution to a workload and generalisation happen later.

use std::net::SocketAddr;

/// What every event carries: who did it, when, and in which cgroup / mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Nanoseconds since boot (`CLOCK_BOOTTIME`), as the kernel stamped it.
    pub ts_boot_ns: u64,
    pub cpu: u32,
    /// Thread id.
    pub pid: u32,
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Inode of the mount namespace.
    pub mntns: u32,
    /// cgroup v2 id: the inode of the task's cgroup directory in the unified hierarchy.
    pub cgroup_id: u64,
    /// `comm` of the thread (at most 15 bytes).
    pub comm: String,
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub header: Header,
    pub body: EventBody,
}

/// The kind-specific part of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    /// A successful execve/execveat: the process now runs `filename`.
    Exec {
        /// The path as passed to execve (may be relative, or /proc/self/exe).
        filename: String,
        /// The executed file's path up to the root of its mount, from the kernel's dentries:
        /// the real binary even when `filename` does not name it (empty if unknown).
        exe_path: String,
        argv: Vec<String>,
        /// argv was longer than the probe's buffer and was cut.
        argv_truncated: bool,
        /// Name of the task's memory cgroup (cgroup v1); the container id under Docker/runc.
        cgroup_v1_name: String,
        /// Audit login uid (`u32::MAX` when unset).
        loginuid: u32,
        /// Controlling terminal (`major << 20 | minor`), 0 when none.
        tty: u32,
        /// Effective and permitted capability sets (bit N = capability N).
        cap_effective: u64,
        cap_permitted: u64,
    },
    /// A new process (not a thread) was forked; the header describes the parent.
    Fork { child_pid: u32 },
    /// A process (its last thread) exited; `status` is the wait(2) status.
    Exit { status: i32 },
    /// open/openat/openat2/creat of `path` (relative to `dirfd` when not absolute), seen at
    /// syscall exit with its result.
    Open {
        dirfd: i32,
        path: String,
        /// For a relative `path`: the directory it is relative to, read by the kernel from
        /// its dentries (empty for absolute paths, or if unknown).
        base_dir: String,
        flags: u32,
        mode: u32,
        /// The new fd, or `-errno` when the open failed (Falco's `fd.num`, `evt.rawres`).
        result: i64,
    },
    /// chmod/fchmodat setting the setuid or setgid bit.
    Chmod {
        dirfd: i32,
        path: String,
        /// As for [`EventBody::Open`]; for fchmod, the file itself.
        base_dir: String,
        mode: u32,
    },
    /// A file renamed, deleted, linked, symlinked, truncated, chowned or timestomped (see
    /// [`FileOp`] for what `path` and `path2` are for each operation).
    FileChange(FileChange),
    /// connect(2) to `remote` (IPv4/IPv6 only), seen at syscall exit with its result.
    Connect {
        remote: SocketAddr,
        protocol: Protocol,
        /// 0, or `-errno` (`-EINPROGRESS` for a non-blocking connect under way).
        result: i64,
    },
    /// An inbound TCP connection on a listening socket of this process was established.
    Accept {
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// bind(2) of an IPv4/IPv6 socket to `local`, seen at syscall exit with its result.
    Bind {
        local: SocketAddr,
        protocol: Protocol,
        /// 0, or `-errno`.
        result: i64,
    },
    /// dup/dup2/dup3 made an IPv4/IPv6 socket (`oldfd`) the process's stdin, stdout or stderr
    /// (`newfd`, 0..=2): a reverse shell's redirection. Other duplications are not reported.
    Dup {
        local: SocketAddr,
        remote: SocketAddr,
        protocol: Protocol,
        oldfd: i32,
        /// The syscall's result: the new descriptor.
        newfd: i64,
        /// dup, dup2 or dup3 (Falco's `evt.type`).
        syscall: u32,
    },
    /// A TCP socket started listening on `local`.
    Listen { local: SocketAddr },
    /// A privileged or kernel-surface operation was attempted.
    Privileged(PrivOp),
    /// A syscall 6-gram of a workload with sequences on (see `probes/bpf/sequence.h`).
    Sequence(SeqRecord),
}

/// A syscall-sequence record: the 6-gram that ended at a syscall and the thread's running sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRecord {
    /// Key of the 6-gram (`habit_models::sequence::gram`).
    pub gram: u64,
    /// Grams of the thread since exec (in detection: since scoring began), this one included.
    pub nsys: u64,
    /// Detection: the sum of the values of the grams the kernel valued, in micro-nats.
    pub known_sum: u64,
    /// Detection: grams so far that the workload never made while learning.
    pub unknown: u32,
    /// `abi::SEQ_REC_*` flags: why the record was sent.
    pub flags: u32,
    /// The workload id user space gave the thread's cgroup slot.
    pub wid: u32,
}

impl SeqRecord {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// A change to a file other than writing through an open: the facts the kernel sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub op: FileOp,
    /// The syscall number (rename vs renameat2, fchown vs fchownat: Falco's `evt.type`).
    pub syscall: u32,
    /// The first path as passed: rename/link's old path, a symlink's target, or the file of
    /// the other operations; empty for an fd operation (ftruncate, fchown, futimens).
    pub path: String,
    /// What a relative `path` is relative to (`AT_FDCWD` or a directory fd); the fd itself for
    /// an fd operation.
    pub dirfd: i32,
    /// For a relative `path` (or an fd operation: the file itself): the directory (file) the
    /// kernel resolved it from, from its dentries; empty for absolute paths and symlink targets.
    pub base_dir: String,
    /// The second path: rename's and link's new name, symlink's new link; empty otherwise.
    pub path2: String,
    pub dirfd2: i32,
    /// As `base_dir`, for `path2`.
    pub base_dir2: String,
    /// chown: `uid << 32 | gid` (`u32::MAX` = unchanged); truncate: the new length;
    /// rename/unlinkat/linkat: the flags.
    pub arg: u64,
}

impl EventBody {
    /// The syscall's result where the probes report it (opens, connect, bind: the value the
    /// syscall returned, `-errno` on failure); `None` for events without one.
    pub fn result(&self) -> Option<i64> {
        match self {
            EventBody::Open { result, .. }
            | EventBody::Connect { result, .. }
            | EventBody::Bind { result, .. } => Some(*result),
            EventBody::Dup { newfd, .. } => Some(*newfd),
            _ => None,
        }
    }
}

impl FileChange {
    /// The syscall's name, as Falco's `evt.type` shows it.
    pub fn syscall_name(&self) -> &'static str {
        crate::syscall_names::name(self.syscall).unwrap_or(self.op.name())
    }

    /// chown's new owner (`None` when left unchanged, or for other operations).
    pub fn uid(&self) -> Option<u32> {
        (self.op == FileOp::Chown)
            .then_some((self.arg >> 32) as u32)
            .filter(|&u| u != u32::MAX)
    }

    /// chown's new group (`None` when left unchanged, or for other operations).
    pub fn gid(&self) -> Option<u32> {
        (self.op == FileOp::Chown)
            .then_some(self.arg as u32)
            .filter(|&g| g != u32::MAX)
    }
}

/// What was done to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileOp {
    /// `path` renamed to `path2` (which is replaced if it exists).
    Rename,
    /// `path` deleted.
    Unlink,
    /// The directory `path` deleted.
    Rmdir,
    /// A hard link `path2` made to the existing `path`.
    Link,
    /// A symbolic link `path2` made, pointing to `path` (stored as given, not resolved).
    Symlink,
    /// `path` (or the fd's file) truncated.
    Truncate,
    /// The owner or group of `path` (or the fd's file) changed.
    Chown,
    /// An explicit access/modification time set on `path` (or the fd's file): timestomping.
    Utimes,
}

impl FileOp {
    /// Every operation, in ABI order (`abi::FC_*` = index + 1).
    pub const ALL: [FileOp; 8] = [
        FileOp::Rename,
        FileOp::Unlink,
        FileOp::Rmdir,
        FileOp::Link,
        FileOp::Symlink,
        FileOp::Truncate,
        FileOp::Chown,
        FileOp::Utimes,
    ];

    /// The operation of an `abi::FC_*` code.
    pub fn from_abi(op: u32) -> Option<Self> {
        Self::ALL
            .get(usize::try_from(op).ok()?.checked_sub(1)?)
            .copied()
    }

    /// The stable lowercase name (profile items, `--print-events`).
    pub const fn name(self) -> &'static str {
        match self {
            FileOp::Rename => "rename",
            FileOp::Unlink => "unlink",
            FileOp::Rmdir => "rmdir",
            FileOp::Link => "link",
            FileOp::Symlink => "symlink",
            FileOp::Truncate => "truncate",
            FileOp::Chown => "chown",
            FileOp::Utimes => "utimes",
        }
    }

    /// Whether the operation has a second path (`path2`).
    pub const fn has_two_paths(self) -> bool {
        matches!(self, FileOp::Rename | FileOp::Link | FileOp::Symlink)
    }
}

/// Transport protocol of a socket event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Other(u32),
}

impl Protocol {
    pub fn from_ipproto(p: u32) -> Self {
        match p {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            other => Protocol::Other(other),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Other(_) => "other",
        }
    }
}

/// Privileged operations, with the arguments that matter for explaining them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivOp {
    /// setuid/setreuid/setresuid: the uids requested (`u32::MAX` = unchanged).
    SetUid {
        ruid: u32,
        euid: u32,
        suid: u32,
    },
    /// setgid/setregid/setresgid.
    SetGid {
        rgid: u32,
        egid: u32,
        sgid: u32,
    },
    Capset,
    Ptrace {
        request: u64,
        target_pid: u32,
    },
    Mount {
        target: String,
        flags: u64,
    },
    Umount {
        target: String,
    },
    Unshare {
        flags: u64,
    },
    Setns {
        nstype: u64,
    },
    InitModule,
    FinitModule {
        fd: i32,
    },
    MemfdCreate {
        name: String,
    },
    Bpf {
        cmd: u64,
    },
    /// socket(AF_PACKET, …).
    PacketSocket {
        sock_type: u64,
        protocol: u64,
    },
}

impl PrivOp {
    /// The syscall name Falco would show as `evt.type`.
    pub fn syscall_name(&self) -> &'static str {
        match self {
            PrivOp::SetUid { .. } => "setuid",
            PrivOp::SetGid { .. } => "setgid",
            PrivOp::Capset => "capset",
            PrivOp::Ptrace { .. } => "ptrace",
            PrivOp::Mount { .. } => "mount",
            PrivOp::Umount { .. } => "umount",
            PrivOp::Unshare { .. } => "unshare",
            PrivOp::Setns { .. } => "setns",
            PrivOp::InitModule => "init_module",
            PrivOp::FinitModule { .. } => "finit_module",
            PrivOp::MemfdCreate { .. } => "memfd_create",
            PrivOp::Bpf { .. } => "bpf",
            PrivOp::PacketSocket { .. } => "socket",
        }
    }
}

impl EventBody {
    /// Falco's `evt.type` for this event.
    pub fn evt_type(&self) -> &'static str {
        match self {
            EventBody::Exec { .. } => "execve",
            EventBody::Fork { .. } => "clone",
            EventBody::Exit { .. } => "procexit",
            EventBody::Open { .. } => "openat",
            EventBody::Chmod { .. } => "chmod",
            EventBody::FileChange(c) => c.syscall_name(),
            EventBody::Connect { .. } => "connect",
            EventBody::Accept { .. } => "accept",
            EventBody::Bind { .. } => "bind",
            EventBody::Listen { .. } => "listen",
            EventBody::Dup { syscall, .. } => crate::syscall_names::name(*syscall).unwrap_or("dup"),
            EventBody::Privileged(op) => op.syscall_name(),
            EventBody::Sequence(_) => "habitd_sequence",
        }
    }

    /// Every [`EventBody::kind_label`], indexed by [`EventBody::kind_index`]: lets metrics
    /// resolve one counter per kind once, instead of a labelled lookup per event.
    pub const KIND_LABELS: [&'static str; 13] = [
        "exec",
        "fork",
        "exit",
        "open",
        "chmod",
        "connect",
        "accept",
        "bind",
        "listen",
        "privileged",
        "sequence",
        "file_change",
        "dup",
    ];

    /// The position of this event's kind in [`EventBody::KIND_LABELS`].
    pub fn kind_index(&self) -> usize {
        match self {
            EventBody::Exec { .. } => 0,
            EventBody::Fork { .. } => 1,
            EventBody::Exit { .. } => 2,
            EventBody::Open { .. } => 3,
            EventBody::Chmod { .. } => 4,
            EventBody::Connect { .. } => 5,
            EventBody::Accept { .. } => 6,
            EventBody::Bind { .. } => 7,
            EventBody::Listen { .. } => 8,
            EventBody::Privileged(_) => 9,
            EventBody::Sequence(_) => 10,
            EventBody::FileChange(_) => 11,
            EventBody::Dup { .. } => 12,
        }
    }

    /// A short, low-cardinality label for metrics (`habitd_events_total{type=…}`).
    pub fn kind_label(&self) -> &'static str {
        Self::KIND_LABELS[self.kind_index()]
    }

    /// The [`EventBody::kind_label`] of records of kernel kind `kind` (`abi::EV_*`, as the
    /// kernel counts lost records), `None` for a kind that is not one: the kinds are numbered
    /// from 1 in [`EventBody::KIND_LABELS`] order.
    pub fn label_of_kind(kind: u32) -> Option<&'static str> {
        let index = usize::try_from(kind).ok()?.checked_sub(1)?;
        Self::KIND_LABELS.get(index).copied()
    }
}
