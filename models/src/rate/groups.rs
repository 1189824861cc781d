//! Syscall groups: the fixed, small alphabet of the rate model's syscall histogram.
//!
//! A histogram over all ~460 syscalls would be mostly zeros and would give a k-means model
//! with 30 learning intervals far more dimensions than points. Sixteen groups of syscalls that
//! do the same kind of work keep the histogram dense and the explanation readable ("share of
//! privileged syscalls 0 % → 12 %"), while still moving when a workload changes what it does:
//! a scan shifts weight to network setup, a miner to memory and sync, an exploit to privileged
//! and process calls.
//!
//! Names follow the kernel's x86_64 table (`probes::syscall_names`); the grouping is by name, so
//! it holds for other architectures' tables too. A name that is not listed (a new syscall, a
//! typo) falls into [`SyscallGroup::Other`], never an error.

use serde::{Deserialize, Serialize};

/// A group of syscalls that do the same kind of work.
///
/// `read`/`write` cannot tell a file from a socket or a pipe at the syscall level, so the two
/// I/O groups are named after the calls, not the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyscallGroup {
    /// `read`, `pread64`, `readv`, `getdents64`, `readlink`, …
    FileRead,
    /// `write`, `pwrite64`, `fsync`, `ftruncate`, `fallocate`, …
    FileWrite,
    /// `open`, `openat`, `openat2`, `creat`, `close`, `close_range`.
    FileOpen,
    /// Metadata and descriptor management: `stat` family, `access`, `fcntl`, `ioctl`, `dup`,
    /// `rename`, `unlink`, `chmod`, `chown`, xattrs, inotify, …
    FileMeta,
    /// Socket set-up: `socket`, `connect`, `bind`, `listen`, `accept`, `setsockopt`, …
    NetSetup,
    /// Socket data: `sendto`, `recvfrom`, `sendmsg`, `recvmsg`, `sendmmsg`, `sendfile`.
    NetIo,
    /// Waiting for events and asynchronous I/O: `poll`, `select`, `epoll_*`, `eventfd`, `io_*`,
    /// `io_uring_*`.
    Poll,
    /// Process life cycle and scheduling: `clone`, `fork`, `execve`, `exit`, `wait4`, `getpid`,
    /// `prctl`, `sched_*`, rlimits, `seccomp`, `rseq`, …
    Process,
    /// Address space: `mmap`, `munmap`, `mprotect`, `brk`, `madvise`, `mlock`, `memfd_create`, …
    Memory,
    /// Clocks, sleeps and timers: `clock_gettime`, `nanosleep`, `timer_*`, `timerfd_*`, …
    Time,
    /// Thread synchronisation: `futex` family, robust lists.
    Sync,
    /// Pipes and System V / POSIX IPC: `pipe2`, `splice`, `shm*`, `sem*`, `msg*`, `mq_*`.
    Ipc,
    /// Signals: `rt_sig*`, `kill`, `tgkill`, `sigaltstack`, `signalfd`, `pidfd_send_signal`.
    Signal,
    /// Reading one's own credentials: `getuid`, `geteuid`, `getgroups`, `capget`, …
    Identity,
    /// Calls that need or change privilege, or reach into other processes or the kernel:
    /// `set*id`, `capset`, `ptrace`, `mount`, `unshare`, `setns`, `bpf`, module loading, …
    Privileged,
    /// Everything else, including names this table does not know.
    Other,
}

impl SyscallGroup {
    /// Number of groups.
    pub const COUNT: usize = 16;

    /// All groups, in feature order.
    pub const ALL: [SyscallGroup; Self::COUNT] = [
        Self::FileRead,
        Self::FileWrite,
        Self::FileOpen,
        Self::FileMeta,
        Self::NetSetup,
        Self::NetIo,
        Self::Poll,
        Self::Process,
        Self::Memory,
        Self::Time,
        Self::Sync,
        Self::Ipc,
        Self::Signal,
        Self::Identity,
        Self::Privileged,
        Self::Other,
    ];

    /// Position in [`Self::ALL`] (and in the histogram part of a feature vector).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name (used in feature names and the baseline file).
    pub const fn name(self) -> &'static str {
        match self {
            Self::FileRead => "file_read",
            Self::FileWrite => "file_write",
            Self::FileOpen => "file_open",
            Self::FileMeta => "file_meta",
            Self::NetSetup => "net_setup",
            Self::NetIo => "net_io",
            Self::Poll => "poll",
            Self::Process => "process",
            Self::Memory => "memory",
            Self::Time => "time",
            Self::Sync => "sync",
            Self::Ipc => "ipc",
            Self::Signal => "signal",
            Self::Identity => "identity",
            Self::Privileged => "privileged",
            Self::Other => "other",
        }
    }

    /// Words for an alert ("share of {description} syscalls").
    pub const fn description(self) -> &'static str {
        match self {
            Self::FileRead => "read-family",
            Self::FileWrite => "write-family",
            Self::FileOpen => "open/close",
            Self::FileMeta => "file-metadata",
            Self::NetSetup => "socket-setup",
            Self::NetIo => "socket-data",
            Self::Poll => "event-wait",
            Self::Process => "process",
            Self::Memory => "memory",
            Self::Time => "time",
            Self::Sync => "futex/sync",
            Self::Ipc => "IPC",
            Self::Signal => "signal",
            Self::Identity => "credential-read",
            Self::Privileged => "privileged",
            Self::Other => "other",
        }
    }

    /// The group of a syscall name such as `"openat"`.
    ///
    /// Accepts the tracing spellings too (`sys_enter_openat`, `__x64_sys_openat`, `sys_openat`)
    /// and any letter case, because names reach the daemon from several sources.
    pub fn of(name: &str) -> SyscallGroup {
        let name = name.trim();
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Self::of_lowercase(&name.to_ascii_lowercase());
        }
        Self::of_lowercase(name)
    }

    fn of_lowercase(name: &str) -> SyscallGroup {
        let name = [
            "sys_enter_",
            "__x64_sys_",
            "__ia32_sys_",
            "__arm64_sys_",
            "sys_",
        ]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
        Self::of_exact(name)
    }

    /// The grouping table. Kept as one `match` so that a reviewer sees every decision in one
    /// place and the compiler builds the lookup.
    fn of_exact(name: &str) -> SyscallGroup {
        match name {
            "read" | "pread64" | "readv" | "preadv" | "preadv2" | "readahead" | "getdents"
            | "getdents64" | "readlink" | "readlinkat" => Self::FileRead,

            "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "fsync" | "fdatasync"
            | "sync" | "syncfs" | "sync_file_range" | "truncate" | "ftruncate" | "fallocate"
            | "copy_file_range" => Self::FileWrite,

            "open" | "openat" | "openat2" | "creat" | "close" | "close_range"
            | "open_by_handle_at" | "name_to_handle_at" => Self::FileOpen,

            "stat" | "fstat" | "lstat" | "newfstatat" | "statx" | "access" | "faccessat"
            | "faccessat2" | "lseek" | "fcntl" | "ioctl" | "flock" | "dup" | "dup2" | "dup3"
            | "getcwd" | "chdir" | "fchdir" | "rename" | "renameat" | "renameat2" | "mkdir"
            | "mkdirat" | "rmdir" | "link" | "linkat" | "symlink" | "symlinkat" | "unlink"
            | "unlinkat" | "chmod" | "fchmod" | "fchmodat" | "fchmodat2" | "chown" | "fchown"
            | "lchown" | "fchownat" | "umask" | "utime" | "utimes" | "utimensat" | "futimesat"
            | "mknod" | "mknodat" | "statfs" | "fstatfs" | "ustat" | "fadvise64" | "setxattr"
            | "lsetxattr" | "fsetxattr" | "getxattr" | "lgetxattr" | "fgetxattr" | "listxattr"
            | "llistxattr" | "flistxattr" | "removexattr" | "lremovexattr" | "fremovexattr"
            | "setxattrat" | "getxattrat" | "listxattrat" | "removexattrat" | "inotify_init"
            | "inotify_init1" | "inotify_add_watch" | "inotify_rm_watch" | "fanotify_init"
            | "fanotify_mark" | "file_getattr" | "file_setattr" | "statmount" | "listmount" => {
                Self::FileMeta
            }

            "socket" | "socketpair" | "connect" | "bind" | "listen" | "accept" | "accept4"
            | "shutdown" | "getsockname" | "getpeername" | "setsockopt" | "getsockopt" => {
                Self::NetSetup
            }

            "sendto" | "recvfrom" | "sendmsg" | "recvmsg" | "sendmmsg" | "recvmmsg"
            | "sendfile" => Self::NetIo,

            "poll" | "ppoll" | "select" | "pselect6" | "epoll_create" | "epoll_create1"
            | "epoll_ctl" | "epoll_wait" | "epoll_pwait" | "epoll_pwait2" | "epoll_ctl_old"
            | "epoll_wait_old" | "eventfd" | "eventfd2" | "io_setup" | "io_destroy"
            | "io_getevents" | "io_pgetevents" | "io_submit" | "io_cancel" | "io_uring_setup"
            | "io_uring_enter" | "io_uring_register" => Self::Poll,

            "fork"
            | "vfork"
            | "clone"
            | "clone3"
            | "execve"
            | "execveat"
            | "exit"
            | "exit_group"
            | "wait4"
            | "waitid"
            | "getpid"
            | "getppid"
            | "gettid"
            | "getpgrp"
            | "getpgid"
            | "setpgid"
            | "getsid"
            | "setsid"
            | "set_tid_address"
            | "prctl"
            | "arch_prctl"
            | "personality"
            | "uname"
            | "sysinfo"
            | "getrlimit"
            | "setrlimit"
            | "prlimit64"
            | "getrusage"
            | "getpriority"
            | "setpriority"
            | "sched_yield"
            | "sched_setparam"
            | "sched_getparam"
            | "sched_setscheduler"
            | "sched_getscheduler"
            | "sched_get_priority_max"
            | "sched_get_priority_min"
            | "sched_rr_get_interval"
            | "sched_setaffinity"
            | "sched_getaffinity"
            | "sched_setattr"
            | "sched_getattr"
            | "getcpu"
            | "ioprio_set"
            | "ioprio_get"
            | "set_thread_area"
            | "get_thread_area"
            | "modify_ldt"
            | "seccomp"
            | "landlock_create_ruleset"
            | "landlock_add_rule"
            | "landlock_restrict_self"
            | "rseq"
            | "pidfd_open"
            | "pidfd_getfd"
            | "restart_syscall" => Self::Process,

            "mmap"
            | "munmap"
            | "mprotect"
            | "mremap"
            | "brk"
            | "madvise"
            | "msync"
            | "mincore"
            | "mlock"
            | "mlock2"
            | "munlock"
            | "mlockall"
            | "munlockall"
            | "remap_file_pages"
            | "mbind"
            | "set_mempolicy"
            | "get_mempolicy"
            | "set_mempolicy_home_node"
            | "migrate_pages"
            | "move_pages"
            | "membarrier"
            | "memfd_create"
            | "memfd_secret"
            | "pkey_mprotect"
            | "pkey_alloc"
            | "pkey_free"
            | "process_madvise"
            | "process_mrelease"
            | "map_shadow_stack"
            | "mseal" => Self::Memory,

            "nanosleep" | "clock_nanosleep" | "clock_gettime" | "clock_getres" | "gettimeofday"
            | "time" | "times" | "alarm" | "getitimer" | "setitimer" | "timer_create"
            | "timer_settime" | "timer_gettime" | "timer_getoverrun" | "timer_delete"
            | "timerfd_create" | "timerfd_settime" | "timerfd_gettime" => Self::Time,

            "futex" | "futex_waitv" | "futex_wake" | "futex_wait" | "futex_requeue"
            | "set_robust_list" | "get_robust_list" => Self::Sync,

            "pipe" | "pipe2" | "splice" | "tee" | "vmsplice" | "shmget" | "shmat" | "shmdt"
            | "shmctl" | "semget" | "semop" | "semtimedop" | "semctl" | "msgget" | "msgsnd"
            | "msgrcv" | "msgctl" | "mq_open" | "mq_unlink" | "mq_timedsend"
            | "mq_timedreceive" | "mq_notify" | "mq_getsetattr" => Self::Ipc,

            "rt_sigaction" | "rt_sigprocmask" | "rt_sigreturn" | "rt_sigpending"
            | "rt_sigtimedwait" | "rt_sigqueueinfo" | "rt_tgsigqueueinfo" | "rt_sigsuspend"
            | "sigaltstack" | "kill" | "tkill" | "tgkill" | "pause" | "signalfd" | "signalfd4"
            | "pidfd_send_signal" => Self::Signal,

            "getuid" | "geteuid" | "getgid" | "getegid" | "getresuid" | "getresgid"
            | "getgroups" | "capget" | "lsm_get_self_attr" | "lsm_list_modules" => Self::Identity,

            "setuid" | "setgid" | "setreuid" | "setregid" | "setresuid" | "setresgid"
            | "setgroups" | "setfsuid" | "setfsgid" | "capset" | "ptrace" | "process_vm_readv"
            | "process_vm_writev" | "kcmp" | "mount" | "umount2" | "pivot_root" | "chroot"
            | "mount_setattr" | "move_mount" | "fsopen" | "fsconfig" | "fsmount" | "fspick"
            | "open_tree" | "open_tree_attr" | "quotactl" | "quotactl_fd" | "init_module"
            | "finit_module" | "delete_module" | "create_module" | "kexec_load"
            | "kexec_file_load" | "bpf" | "perf_event_open" | "setns" | "unshare" | "reboot"
            | "swapon" | "swapoff" | "sethostname" | "setdomainname" | "iopl" | "ioperm"
            | "acct" | "settimeofday" | "clock_settime" | "adjtimex" | "clock_adjtime"
            | "syslog" | "vhangup" | "userfaultfd" | "lookup_dcookie" | "add_key"
            | "request_key" | "keyctl" | "nfsservctl" | "_sysctl" | "uselib"
            | "lsm_set_self_attr" => Self::Privileged,

            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_with_unique_names() {
        for (i, group) in SyscallGroup::ALL.iter().enumerate() {
            assert_eq!(group.index(), i);
        }
        let mut names: Vec<_> = SyscallGroup::ALL.iter().map(|g| g.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SyscallGroup::COUNT);
    }

    #[test]
    fn groups_common_syscalls() {
        use SyscallGroup as G;
        let cases = [
            ("read", G::FileRead),
            ("getdents64", G::FileRead),
            ("write", G::FileWrite),
            ("fsync", G::FileWrite),
            ("openat", G::FileOpen),
            ("close", G::FileOpen),
            ("newfstatat", G::FileMeta),
            ("ioctl", G::FileMeta),
            ("connect", G::NetSetup),
            ("accept4", G::NetSetup),
            ("socket", G::NetSetup),
            ("sendto", G::NetIo),
            ("recvmsg", G::NetIo),
            ("epoll_wait", G::Poll),
            ("io_uring_enter", G::Poll),
            ("execve", G::Process),
            ("clone3", G::Process),
            ("exit_group", G::Process),
            ("mmap", G::Memory),
            ("mprotect", G::Memory),
            ("clock_gettime", G::Time),
            ("nanosleep", G::Time),
            ("futex", G::Sync),
            ("pipe2", G::Ipc),
            ("shmget", G::Ipc),
            ("rt_sigaction", G::Signal),
            ("kill", G::Signal),
            ("getuid", G::Identity),
            ("setuid", G::Privileged),
            ("ptrace", G::Privileged),
            ("mount", G::Privileged),
            ("unshare", G::Privileged),
            ("bpf", G::Privileged),
            ("init_module", G::Privileged),
            ("getrandom", G::Other),
            ("no_such_syscall", G::Other),
            ("", G::Other),
        ];
        for (name, group) in cases {
            assert_eq!(SyscallGroup::of(name), group, "{name}");
        }
    }

    #[test]
    fn accepts_tracing_spellings_and_case() {
        for name in [
            "sys_enter_connect",
            "__x64_sys_connect",
            "sys_connect",
            "CONNECT",
        ] {
            assert_eq!(SyscallGroup::of(name), SyscallGroup::NetSetup, "{name}");
        }
        assert_eq!(SyscallGroup::of(" openat "), SyscallGroup::FileOpen);
        // Real names that start with "sys" but not "sys_" are not stripped.
        assert_eq!(SyscallGroup::of("sysinfo"), SyscallGroup::Process);
        assert_eq!(SyscallGroup::of("syslog"), SyscallGroup::Privileged);
    }

    /// Every name of the x86_64 table except a few obsolete or catch-all ones has a real
    /// group, so "other" stays small in practice.
    #[test]
    fn few_real_syscalls_fall_into_other() {
        let table = "read write open close stat fstat lstat poll lseek mmap mprotect munmap brk \
            rt_sigaction rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access \
            pipe select sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2 \
            pause nanosleep getitimer alarm setitimer getpid sendfile socket connect accept \
            sendto recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername \
            socketpair setsockopt getsockopt clone fork vfork execve exit wait4 kill uname \
            semget semop semctl shmdt msgget msgsnd msgrcv msgctl fcntl flock fsync fdatasync \
            truncate ftruncate getdents getcwd chdir fchdir rename mkdir rmdir creat link unlink \
            symlink readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit \
            getrusage sysinfo times ptrace getuid syslog getgid setuid setgid geteuid getegid \
            setpgid getppid getpgrp setsid setreuid setregid getgroups setgroups setresuid \
            getresuid setresgid getresgid getpgid setfsuid setfsgid getsid capget capset \
            rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack utime mknod \
            uselib personality ustat statfs fstatfs sysfs getpriority setpriority \
            sched_setparam sched_getparam sched_setscheduler sched_getscheduler \
            sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock munlock \
            mlockall munlockall vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex \
            setrlimit chroot sync acct settimeofday mount umount2 swapon swapoff reboot \
            sethostname setdomainname iopl ioperm create_module init_module delete_module \
            get_kernel_syms query_module quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall \
            security gettid readahead setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr \
            listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr tkill time \
            futex sched_setaffinity sched_getaffinity set_thread_area io_setup io_destroy \
            io_getevents io_submit io_cancel get_thread_area lookup_dcookie epoll_create \
            epoll_ctl_old epoll_wait_old remap_file_pages getdents64 set_tid_address \
            restart_syscall semtimedop fadvise64 timer_create timer_settime timer_gettime \
            timer_getoverrun timer_delete clock_settime clock_gettime clock_getres \
            clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes vserver mbind \
            set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify \
            mq_getsetattr kexec_load waitid add_key request_key keyctl ioprio_set ioprio_get \
            inotify_init inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat mknodat \
            fchownat futimesat newfstatat unlinkat renameat linkat symlinkat readlinkat fchmodat \
            faccessat pselect6 ppoll unshare set_robust_list get_robust_list splice tee \
            sync_file_range vmsplice move_pages utimensat epoll_pwait signalfd timerfd_create \
            eventfd fallocate timerfd_settime timerfd_gettime accept4 signalfd4 eventfd2 \
            epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo \
            perf_event_open recvmmsg fanotify_init fanotify_mark prlimit64 name_to_handle_at \
            open_by_handle_at clock_adjtime syncfs sendmmsg setns getcpu process_vm_readv \
            process_vm_writev kcmp finit_module sched_setattr sched_getattr renameat2 seccomp \
            getrandom memfd_create kexec_file_load bpf execveat userfaultfd membarrier mlock2 \
            copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc pkey_free statx \
            io_pgetevents rseq pidfd_send_signal io_uring_setup io_uring_enter io_uring_register \
            open_tree move_mount fsopen fsconfig fsmount fspick pidfd_open clone3 close_range \
            openat2 pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr \
            quotactl_fd landlock_create_ruleset landlock_add_rule landlock_restrict_self \
            memfd_secret process_mrelease futex_waitv set_mempolicy_home_node fchmodat2 \
            map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount \
            lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat \
            listxattrat removexattrat open_tree_attr file_getattr file_setattr";
        let mut other: Vec<&str> = table
            .split_whitespace()
            .filter(|name| SyscallGroup::of(name) == SyscallGroup::Other)
            .collect();
        other.sort_unstable();
        assert_eq!(
            other,
            [
                "afs_syscall",
                "get_kernel_syms",
                "getpmsg",
                "getrandom",
                "putpmsg",
                "query_module",
                "security",
                "sysfs",
                "tuxcall",
                "vserver",
            ]
        );
    }
}
