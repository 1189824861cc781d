//! What user space knows about each live process, so that every event can carry the process's
//! executable, command line and parent (Falco's `proc.*` fields) although the kernel sends them
//! only at exec. Seeded from /proc at start-up, then kept current by exec/fork/exit events.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use habit_probes::{Event, EventBody};

use crate::metrics::{Limit, LimitReached, Metrics};
use crate::process::procfs::snapshot_process;
use crate::process::runtime::{
    exec_is_runtime, host_mount_namespace, is_runtime_executable, namespace_inode,
};

/// Most processes remembered as refreshed from /proc (see [`ProcTable::refresh_missed_exec`]).
const MAX_REFRESHED: usize = 4096;

/// Whether a task name (the kernel's comm of the thread making an event) is the container
/// runtime's: runc (`runc`, `runc:[2:INIT]`, and `exe` while it re-executes itself through
/// `/proc/self/exe`), crun, conmon, a containerd shim.
fn comm_is_runtime(comm: &str) -> bool {
    comm.starts_with("runc")
        || comm.starts_with("containerd-shim")
        || matches!(comm, "crun" | "conmon" | "exe")
}

/// Whether a process flagged as the runtime still runs a runtime's binary by what /proc says
/// of its executable: the binary itself, or runc's sealed memfd copy of itself
/// (`/memfd:runc_cloned:/proc/self/exe (deleted)`). Only asked of processes that were
/// executed on the host as the runtime (`process::runtime`), so a workload cannot reach it.
fn still_runtime_binary(exe: &str) -> bool {
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    is_runtime_executable(exe) || exe.starts_with("/memfd:runc_cloned:")
}

/// The process facts events are enriched with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub exe: String,
    pub comm: String,
    pub args: Vec<String>,
    pub ppid: u32,
    /// Controlling terminal (`major << 20 | minor`), 0 when none.
    pub tty: u32,
    /// Effective capabilities at exec (bit N = capability N).
    pub cap_effective: u64,
    /// The container runtime's own work: decided at exec from where it happened, never from
    /// names the process can set (`process::runtime`).
    pub runtime: bool,
}

/// The process name: the kernel's comm, unless the program was executed through an alias
/// (`/proc/self/exe`, `/dev/fd/N`: comm `exe` or a number) — busybox runs its applets that way
/// — then the name it was given, `basename(argv[0])`, truncated like comm.
pub fn process_name(comm: &str, argv: &[String]) -> String {
    let alias = comm == "exe" || (!comm.is_empty() && comm.bytes().all(|b| b.is_ascii_digit()));
    match argv.first().filter(|a| alias && !a.is_empty()) {
        Some(a0) => a0
            .rsplit('/')
            .next()
            .unwrap_or(a0)
            .chars()
            .take(15)
            .collect(),
        None => comm.to_string(),
    }
}

/// Live processes by pid (tgid), bounded: an insert into a full table is refused, counted in
/// `habitd_limit_reached_total{limit="proc_table"}` and warned about.
pub struct ProcTable {
    procs: HashMap<u32, Arc<ProcInfo>>,
    limit: usize,
    /// Inserts refused because the table was full.
    full: LimitReached,
    /// Processes already refreshed from /proc (read once each; bounded).
    refreshed: HashSet<u32>,
    /// The host's mount namespace: an exec there may be the runtime's, one elsewhere never.
    host_mntns: Option<u32>,
}

impl ProcTable {
    /// A table of at most `limit` processes, counting refused inserts in `metrics`.
    pub fn new(limit: usize, metrics: &Metrics) -> Self {
        Self {
            procs: HashMap::new(),
            limit,
            full: LimitReached::new(Limit::ProcTable, limit, metrics),
            refreshed: HashSet::new(),
            host_mntns: host_mount_namespace(crate::host::proc()),
        }
    }

    /// The table with `host_mntns` as the host's mount namespace (tests).
    #[cfg(test)]
    pub fn with_host_mntns(mut self, host_mntns: Option<u32>) -> Self {
        self.host_mntns = host_mntns;
        self
    }

    /// Whether a process that predates habitd (seeded from /proc) is the runtime: a runtime's
    /// binary now in the host's mount namespace (a container's process cannot enter it).
    pub fn seeded_is_runtime(&self, tgid: u32, exe: &str) -> bool {
        is_runtime_executable(exe)
            && self.host_mntns.is_some()
            && namespace_inode(crate::host::proc(), tgid, "mnt") == self.host_mntns
    }

    /// Repairs the entry of `tgid` when its exec was missed: the table still says the container
    /// runtime (runc init, forked before the exec), but the thread making the event has a name
    /// no runtime has (`comm`, from the kernel). Events of the runtime are never learned or
    /// scored, so a stale entry silently dropped everything a restarted server did: a
    /// restarted redis made to replicate from the attacker connected out as "runc" and raised
    /// nothing. The entry is re-read from `proc_root` (once per process); if the process is
    /// gone, it keeps the kernel's name and an unknown executable, so that its events are
    /// the workload's again. Returns whether the entry was replaced.
    pub fn refresh_missed_exec(&mut self, tgid: u32, comm: &str, proc_root: &Path) -> bool {
        let stale = !comm.is_empty()
            && !comm_is_runtime(comm)
            && self.procs.get(&tgid).is_some_and(|p| p.runtime);
        if !stale || self.refreshed.contains(&tgid) {
            return false;
        }
        if self.refreshed.len() >= MAX_REFRESHED {
            self.refreshed.clear();
        }
        self.refreshed.insert(tgid);
        let ppid = self.procs.get(&tgid).map_or(0, |p| p.ppid);
        let info = match snapshot_process(proc_root, None, tgid) {
            Some(s) => {
                let exe = s
                    .exe
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Still running the runtime's binary: no exec was missed, the thread only has
                // a name no runtime has (runc init re-executing its memfd copy is named after
                // the descriptor, `3`, until it names itself): still the runtime.
                let runtime = still_runtime_binary(&exe);
                ProcInfo {
                    comm: process_name(&s.comm, &s.cmdline),
                    exe,
                    args: s.cmdline,
                    ppid: s.ppid,
                    tty: s.tty,
                    cap_effective: s.cap_effective,
                    runtime,
                }
            }
            None => ProcInfo {
                exe: String::new(),
                comm: comm.to_string(),
                args: Vec::new(),
                ppid,
                tty: 0,
                cap_effective: 0,
                runtime: false,
            },
        };
        tracing::debug!(
            message = "A process's exec was missed: its entry was re-read from /proc.",
            tgid,
            exe = %info.exe,
            comm = %info.comm
        );
        self.insert(tgid, info);
        true
    }

    pub fn get(&self, pid: u32) -> Option<&Arc<ProcInfo>> {
        self.procs.get(&pid)
    }

    pub fn insert(&mut self, pid: u32, info: ProcInfo) {
        if self.procs.len() >= self.limit && !self.procs.contains_key(&pid) {
            self.full.reached(1);
            return;
        }
        self.procs.insert(pid, Arc::new(info));
    }

    /// Applies the lifecycle part of an event (exec, fork, exit).
    pub fn apply(&mut self, ev: &Event, exec_path: &str) {
        let h = &ev.header;
        match &ev.body {
            EventBody::Exec {
                argv,
                tty,
                cap_effective,
                ..
            } => {
                let was_runtime = self.procs.get(&h.tgid).is_some_and(|p| p.runtime);
                let runtime = exec_is_runtime(self.host_mntns, h.mntns, exec_path, was_runtime);
                self.insert(
                    h.tgid,
                    ProcInfo {
                        exe: exec_path.to_string(),
                        comm: process_name(&h.comm, argv),
                        args: argv.clone(),
                        ppid: h.ppid,
                        tty: *tty,
                        cap_effective: *cap_effective,
                        runtime,
                    },
                )
            }
            EventBody::Fork { child_pid } => {
                // The child runs the parent's image until it execs.
                let info = match self.procs.get(&h.tgid) {
                    Some(p) => ProcInfo {
                        ppid: h.tgid,
                        ..(**p).clone()
                    },
                    None => ProcInfo {
                        exe: String::new(),
                        comm: h.comm.clone(),
                        args: Vec::new(),
                        ppid: h.tgid,
                        tty: 0,
                        cap_effective: 0,
                        runtime: false,
                    },
                };
                self.insert(*child_pid, info);
            }
            EventBody::Exit { .. } => {
                self.procs.remove(&h.tgid);
                self.refreshed.remove(&h.tgid);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use habit_probes::Header;

    fn ev(tgid: u32, body: EventBody) -> Event {
        Event {
            header: Header {
                ts_boot_ns: 0,
                cpu: 0,
                pid: tgid,
                tgid,
                ppid: 1,
                uid: 0,
                gid: 0,
                mntns: 0,
                cgroup_id: 1,
                comm: "sh".into(),
            },
            body,
        }
    }

    #[test]
    fn fork_inherits_then_exec_replaces_then_exit_removes() {
        let metrics = Metrics::new().unwrap();
        let mut t = ProcTable::new(10, &metrics);
        let exec = EventBody::Exec {
            filename: "/bin/sh".into(),
            exe_path: "/bin/sh".into(),
            argv: vec!["sh".into()],
            argv_truncated: false,
            cgroup_v1_name: String::new(),
            loginuid: 0,
            tty: 0,
            cap_effective: 0,
            cap_permitted: 0,
        };
        t.apply(&ev(10, exec), "/bin/sh");
        t.apply(&ev(10, EventBody::Fork { child_pid: 11 }), "");
        assert_eq!(t.get(11).unwrap().exe, "/bin/sh");
        assert_eq!(t.get(11).unwrap().ppid, 10);
        t.apply(&ev(11, EventBody::Exit { status: 0 }), "");
        assert!(t.get(11).is_none());
    }

    fn exec_in(tgid: u32, mntns: u32, comm: &str, exe: &str) -> Event {
        let mut e = ev(
            tgid,
            EventBody::Exec {
                filename: exe.into(),
                exe_path: exe.into(),
                argv: vec![exe.into()],
                argv_truncated: false,
                cgroup_v1_name: String::new(),
                loginuid: 0,
                tty: 0,
                cap_effective: 0,
                cap_permitted: 0,
            },
        );
        e.header.mntns = mntns;
        e.header.comm = comm.into();
        e
    }

    #[test]
    fn the_runtime_is_what_was_executed_on_the_host_not_what_it_is_called() {
        const HOST: u32 = 4026531840;
        const CONTAINER: u32 = 4026532301;
        let metrics = Metrics::new().unwrap();
        let mut t = ProcTable::new(16, &metrics).with_host_mntns(Some(HOST));
        // The shim runs runc, runc runs `runc init` (its memfd copy), which forks the init.
        t.apply(
            &exec_in(20, HOST, "runc", "/usr/sbin/runc"),
            "/usr/sbin/runc",
        );
        assert!(t.get(20).unwrap().runtime);
        t.apply(&ev(20, EventBody::Fork { child_pid: 21 }), "");
        let memfd = "/memfd:runc_cloned:/proc/self/exe";
        t.apply(&exec_in(21, HOST, "runc:[0:PARENT]", memfd), memfd);
        assert!(t.get(21).unwrap().runtime, "runc re-executing itself");
        t.apply(&ev(21, EventBody::Fork { child_pid: 22 }), "");
        assert!(t.get(22).unwrap().runtime, "forks inherit");
        // The init executes the entrypoint inside the container: the workload.
        t.apply(&exec_in(22, CONTAINER, "httpd", "/bin/httpd"), "/bin/httpd");
        assert!(!t.get(22).unwrap().runtime);

        // Inside a container, names are the workload's to choose: none of them is the runtime.
        for (pid, comm, exe) in [
            (30, "runc:[2:INIT]", "/bin/actions"),
            (31, "runc", "/tmp/runc"),
            (32, "containerd-shim", "/tmp/containerd-shim-runc-v2"),
            (33, "habitd", "/usr/bin/habitd"),
        ] {
            t.apply(&exec_in(pid, CONTAINER, comm, exe), exe);
            assert!(!t.get(pid).unwrap().runtime, "{comm} {exe}");
        }
        // Nor is a host program that is not a runtime.
        t.apply(
            &exec_in(40, HOST, "sshd", "/usr/sbin/sshd"),
            "/usr/sbin/sshd",
        );
        assert!(!t.get(40).unwrap().runtime);
    }

    #[test]
    fn applets_run_through_proc_self_exe_are_named_by_argv0() {
        assert_eq!(process_name("exe", &["/bin/nc".into(), "-e".into()]), "nc");
        assert_eq!(process_name("exe", &[]), "exe");
        assert_eq!(process_name("sh", &["busybox".into()]), "sh");
    }

    #[test]
    fn bounded_and_a_full_table_is_a_metric_and_one_warning() {
        let metrics = Metrics::new().unwrap();
        let mut t = ProcTable::new(1, &metrics);
        t.apply(&ev(1, EventBody::Fork { child_pid: 2 }), "");
        t.apply(&ev(1, EventBody::Fork { child_pid: 2 }), ""); // a known pid is not refused
        assert_eq!(t.full.count(), 0);
        for child_pid in 3..6 {
            t.apply(&ev(1, EventBody::Fork { child_pid }), "");
        }
        assert_eq!(t.procs.len(), 1);
        assert_eq!(t.full.count(), 3);
        assert_eq!(t.full.lines(), 1, "one warning per period");
        assert!(
            metrics
                .render()
                .contains("habitd_limit_reached_total{limit=\"proc_table\"} 3")
        );
    }

    #[test]
    fn a_missed_exec_is_repaired_from_proc() {
        let metrics = Metrics::new().unwrap();
        let mut t = ProcTable::new(16, &metrics);
        let runc = |ppid| ProcInfo {
            exe: "/usr/sbin/runc".into(),
            comm: "runc:[2:INIT]".into(),
            args: vec!["runc".into(), "init".into()],
            ppid,
            tty: 0,
            cap_effective: 0,
            runtime: true,
        };
        let proc_root = tempfile::tempdir().unwrap();
        let dir = proc_root.path().join("4242");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            "4242 (redis-server) S 4200 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0",
        )
        .unwrap();
        std::fs::write(
            dir.join("status"),
            "Name:\tredis-server\nUid:\t104\t104\t104\t104\nGid:\t108\t108\t108\t108\nCapEff:\t0000000000000000\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("cmdline"),
            b"/usr/bin/redis-server\0/etc/redis/redis.conf\0",
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/bin/redis-server", dir.join("exe")).unwrap();

        // runc's own threads, and runc re-executing itself, are still the runtime.
        t.insert(4242, runc(4200));
        for comm in ["runc:[2:INIT]", "runc", "exe", ""] {
            assert!(!t.refresh_missed_exec(4242, comm, proc_root.path()));
        }
        assert_eq!(t.get(4242).unwrap().exe, "/usr/sbin/runc");
        // A thread named redis-server in a process the table calls runc: the exec was missed.
        assert!(t.refresh_missed_exec(4242, "redis-server", proc_root.path()));
        let p = t.get(4242).unwrap();
        assert_eq!(p.exe, "/usr/bin/redis-server");
        assert_eq!(p.comm, "redis-server");
        assert_eq!(p.args, ["/usr/bin/redis-server", "/etc/redis/redis.conf"]);
        assert_eq!(p.ppid, 4200);
        assert!(!p.runtime);
        // Once only; a process that is not the runtime is never re-read.
        assert!(!t.refresh_missed_exec(4242, "bio_close_file", proc_root.path()));

        // runc init re-executed from its memfd copy (named after the descriptor): no exec was
        // missed, it is still the runtime.
        let dir = proc_root.path().join("4300");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            "4300 (3) S 4200 4300 4300 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0",
        )
        .unwrap();
        std::fs::write(
            dir.join("status"),
            "Name:\t3\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\n",
        )
        .unwrap();
        std::fs::write(dir.join("cmdline"), b"runc\0init\0").unwrap();
        std::os::unix::fs::symlink(
            "/memfd:runc_cloned:/proc/self/exe (deleted)",
            dir.join("exe"),
        )
        .unwrap();
        t.insert(4300, runc(4200));
        assert!(t.refresh_missed_exec(4300, "3", proc_root.path()));
        assert!(t.get(4300).unwrap().runtime);

        // Gone from /proc: the kernel's name, an unknown executable, no longer the runtime.
        t.insert(777, runc(1));
        assert!(t.refresh_missed_exec(777, "nc", proc_root.path()));
        let p = t.get(777).unwrap();
        assert_eq!((p.exe.as_str(), p.comm.as_str(), p.ppid), ("", "nc", 1));
        assert!(!p.runtime);
    }
}
