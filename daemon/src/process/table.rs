//! What user space knows about each live process, so that every event can carry the process's
//! executable, command line and parent (Falco's `proc.*` fields) although the kernel sends them
//! only at exec. Seeded from /proc at start-up, then kept current by exec/fork/exit events.

use std::collections::HashMap;
use std::sync::Arc;

use habit_probes::{Event, EventBody};

use crate::metrics::{Limit, LimitReached, Metrics};

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
}

impl ProcTable {
    /// A table of at most `limit` processes, counting refused inserts in `metrics`.
    pub fn new(limit: usize, metrics: &Metrics) -> Self {
        Self {
            procs: HashMap::new(),
            limit,
            full: LimitReached::new(Limit::ProcTable, limit, metrics),
        }
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
            } => self.insert(
                h.tgid,
                ProcInfo {
                    exe: exec_path.to_string(),
                    comm: process_name(&h.comm, argv),
                    args: argv.clone(),
                    ppid: h.ppid,
                    tty: *tty,
                    cap_effective: *cap_effective,
                },
            ),
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
                    },
                };
                self.insert(*child_pid, info);
            }
            EventBody::Exit { .. } => {
                self.procs.remove(&h.tgid);
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
}
