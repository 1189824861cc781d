//! The JSON view of an attributed event (`habitd run --print-events`), with Falco's field
//! names wherever Falco has one, so that tools built for Falco output can read it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use habit_probes::{Event, EventBody, PrivOp};
use serde_json::{Map, Value, json};

use crate::alerts::alert::rfc3339;
use crate::attribution::Workload;
use crate::process::table::ProcInfo;

/// Converts kernel boot-time stamps (`CLOCK_BOOTTIME`) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock time at boot.
    boot: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let since_boot = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        Self {
            boot: SystemTime::now() - since_boot,
        }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// An event with everything user space added to it.
pub struct Attributed<'a> {
    pub event: &'a Event,
    pub workload: &'a Workload,
    pub process: Option<&'a ProcInfo>,
    /// For exec/open/chmod: the path made absolute where it could be.
    pub path: Option<&'a str>,
    pub time: SystemTime,
}

fn endpoint(out: &mut Map<String, Value>, prefix: &str, addr: &SocketAddr) {
    out.insert(format!("fd.{prefix}ip"), json!(addr.ip().to_string()));
    out.insert(format!("fd.{prefix}port"), json!(addr.port()));
}

/// Falco's `fd.name` for a connection: `client:port->server:port`.
fn conn_name(client: Option<&SocketAddr>, server: &SocketAddr) -> String {
    match client {
        Some(c) => format!("{}:{}->{}:{}", c.ip(), c.port(), server.ip(), server.port()),
        None => format!("->{}:{}", server.ip(), server.port()),
    }
}

impl Attributed<'_> {
    /// The Falco-style fields of this event (`output_fields` of an alert use the same).
    pub fn fields(&self) -> Map<String, Value> {
        let h = &self.event.header;
        let mut f = Map::new();
        f.insert("evt.type".into(), json!(self.event.body.evt_type()));
        f.insert("proc.pid".into(), json!(h.tgid));
        f.insert("thread.tid".into(), json!(h.pid));
        f.insert("proc.ppid".into(), json!(h.ppid));
        f.insert("proc.name".into(), json!(h.comm));
        f.insert("user.uid".into(), json!(h.uid));
        f.insert("group.gid".into(), json!(h.gid));
        if let Some(p) = self.process {
            f.insert("proc.exe".into(), json!(p.exe));
            f.insert("proc.cmdline".into(), json!(cmdline(&h.comm, &p.args)));
        }
        f.insert("cgroup.id".into(), json!(h.cgroup_id));
        f.insert("proc.mntns".into(), json!(h.mntns));
        self.workload_fields(&mut f);
        self.body_fields(&mut f);
        f
    }

    fn workload_fields(&self, f: &mut Map<String, Value>) {
        let w = self.workload;
        f.insert("habitd.workload".into(), json!(w.key.as_str()));
        f.insert(
            "container.id".into(),
            json!(
                w.container_id
                    .as_deref()
                    .map_or("host", |id| &id[..id.len().min(12)])
            ),
        );
        if let Some(c) = &w.container {
            f.insert("container.full_id".into(), json!(c.id));
            f.insert("container.name".into(), json!(c.name));
            f.insert("container.image".into(), json!(c.image));
            f.insert(
                "container.image.repository".into(),
                json!(c.image_ref.repository),
            );
            f.insert("container.image.tag".into(), json!(c.image_ref.tag));
            f.insert("container.image.digest".into(), json!(c.image_digest));
            f.insert("k8s.ns.name".into(), json!(c.k8s_namespace));
            f.insert("k8s.pod.name".into(), json!(c.k8s_pod));
            f.insert("k8s.pod.uid".into(), json!(c.k8s_pod_uid));
            f.insert("k8s.pod.labels".into(), json!(c.pod_labels_text()));
        }
        if let Some(unit) = &w.host_unit {
            f.insert("habitd.host_unit".into(), json!(unit));
        }
    }

    fn body_fields(&self, f: &mut Map<String, Value>) {
        let path = self.path.map(|p| json!(p));
        match &self.event.body {
            EventBody::Exec {
                filename,
                argv,
                argv_truncated,
                ..
            } => {
                f.insert("proc.exepath".into(), path.unwrap_or(json!(filename)));
                f.insert(
                    "proc.args".into(),
                    json!(argv.iter().skip(1).cloned().collect::<Vec<_>>().join(" ")),
                );
                f.insert("habitd.argv_truncated".into(), json!(argv_truncated));
            }
            EventBody::Fork { child_pid } => {
                f.insert("evt.arg.child_pid".into(), json!(child_pid));
            }
            EventBody::Exit { status } => {
                f.insert("evt.arg.status".into(), json!(status));
            }
            EventBody::Open {
                path: raw,
                flags,
                mode,
                ..
            } => {
                f.insert("fd.name".into(), path.unwrap_or(json!(raw)));
                f.insert("evt.arg.flags".into(), json!(flags));
                f.insert("evt.arg.mode".into(), json!(format!("{mode:o}")));
                f.insert("evt.is_open_write".into(), json!(flags & 3 != 0));
            }
            EventBody::Chmod {
                path: raw, mode, ..
            } => {
                f.insert("fd.name".into(), path.unwrap_or(json!(raw)));
                f.insert("evt.arg.mode".into(), json!(format!("{mode:o}")));
            }
            EventBody::Connect { remote, protocol } => {
                endpoint(f, "s", remote);
                endpoint(f, "r", remote);
                f.insert("fd.name".into(), json!(conn_name(None, remote)));
                f.insert("fd.l4proto".into(), json!(protocol.as_str()));
            }
            EventBody::Accept { local, remote } => {
                endpoint(f, "s", local);
                endpoint(f, "l", local);
                endpoint(f, "c", remote);
                endpoint(f, "r", remote);
                f.insert("fd.name".into(), json!(conn_name(Some(remote), local)));
                f.insert("fd.l4proto".into(), json!("tcp"));
            }
            EventBody::Bind { local, protocol } => {
                endpoint(f, "l", local);
                f.insert("fd.l4proto".into(), json!(protocol.as_str()));
            }
            EventBody::Listen { local } => {
                endpoint(f, "l", local);
                f.insert("fd.l4proto".into(), json!("tcp"));
            }
            EventBody::Privileged(op) => priv_fields(f, op),
            EventBody::Sequence(r) => {
                let names = crate::sequences::gram_names(r.gram);
                f.insert("habitd.sequence.gram".into(), json!(names));
                f.insert("habitd.sequence.flags".into(), json!(r.flags));
            }
        }
    }

    /// One JSON line for `--print-events`.
    pub fn to_json_line(&self) -> String {
        let mut obj = Map::new();
        obj.insert("time".into(), json!(rfc3339(self.time)));
        obj.insert("source".into(), json!("syscall"));
        obj.insert("kind".into(), json!(self.event.body.kind_label()));
        obj.insert("output_fields".into(), Value::Object(self.fields()));
        Value::Object(obj).to_string()
    }
}

fn priv_fields(f: &mut Map<String, Value>, op: &PrivOp) {
    match op {
        PrivOp::SetUid { ruid, euid, suid } => {
            f.insert("evt.arg.ruid".into(), json!(ruid));
            f.insert("evt.arg.euid".into(), json!(euid));
            f.insert("evt.arg.suid".into(), json!(suid));
        }
        PrivOp::SetGid { rgid, egid, sgid } => {
            f.insert("evt.arg.rgid".into(), json!(rgid));
            f.insert("evt.arg.egid".into(), json!(egid));
            f.insert("evt.arg.sgid".into(), json!(sgid));
        }
        PrivOp::Ptrace {
            request,
            target_pid,
        } => {
            f.insert("evt.arg.request".into(), json!(request));
            f.insert("evt.arg.pid".into(), json!(target_pid));
        }
        PrivOp::Mount { target, flags } => {
            f.insert("evt.arg.dir".into(), json!(target));
            f.insert("evt.arg.flags".into(), json!(flags));
        }
        PrivOp::Umount { target } => {
            f.insert("evt.arg.name".into(), json!(target));
        }
        PrivOp::Unshare { flags } => {
            f.insert("evt.arg.flags".into(), json!(flags));
        }
        PrivOp::Setns { nstype } => {
            f.insert("evt.arg.nstype".into(), json!(nstype));
        }
        PrivOp::FinitModule { fd } => {
            f.insert("evt.arg.fd".into(), json!(fd));
        }
        PrivOp::MemfdCreate { name } => {
            f.insert("evt.arg.name".into(), json!(name));
        }
        PrivOp::Bpf { cmd } => {
            f.insert("evt.arg.cmd".into(), json!(cmd));
        }
        PrivOp::PacketSocket {
            sock_type,
            protocol,
        } => {
            f.insert("evt.arg.domain".into(), json!("AF_PACKET"));
            f.insert("evt.arg.type".into(), json!(sock_type));
            f.insert("evt.arg.proto".into(), json!(protocol));
        }
        PrivOp::Capset | PrivOp::InitModule => {}
    }
}

/// Falco's `proc.cmdline`: the process name followed by its arguments.
pub fn cmdline(comm: &str, args: &[String]) -> String {
    let mut s = String::from(comm);
    for a in args.iter().skip(1) {
        s.push(' ');
        s.push_str(a);
    }
    s
}
