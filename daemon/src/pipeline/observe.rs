//! Turns an attributed event into the observations a profile learns and a scorer scores.
//!
//! One job: decide which facts of an event are behaviour (what ran, what was opened or changed,
//! who was talked to, which privileged operation was tried); the profiles crate generalises
//! them.

use habit_probes::{Event, EventBody, PrivOp, Protocol};
use habit_profiles::observation::{FileMode, Observation, Proto};

fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
        Protocol::Other(n) => Proto::Other(n as u8),
    }
}

/// The observations of one event, appended to `out` (a buffer the caller reuses).
///
/// `path` is the event's absolute path (exec/open/chmod/file change), `path2` a rename's,
/// link's or symlink's new name; `exe` the process's executable and `parent_exe` its parent's,
/// when known (privileged operations, the parent → child edge; `<runtime>` when the parent is
/// the container runtime: `pipeline::exec_parent`). `peer` is the workload key of the container
/// a connection goes to, when the destination address is one habitd has described
/// (`attribution::peers`): the connection is then to that workload, whichever replica.
pub fn observations(
    ev: &Event,
    path: Option<&str>,
    path2: Option<&str>,
    exe: Option<&str>,
    parent_exe: Option<&str>,
    peer: Option<&str>,
    out: &mut Vec<Observation>,
) {
    match &ev.body {
        EventBody::Exec { filename, argv, .. } => {
            let exe = path.unwrap_or(filename);
            out.push(Observation::exec_of(exe, argv));
            if let Some(parent) = parent_exe.filter(|p| !p.is_empty()) {
                out.push(Observation::process_edge_of(parent, exe, argv));
            }
            // argv[0] included: multi-call binaries (busybox) are told apart by it.
            out.push(Observation::args(exe, argv));
        }
        EventBody::Open {
            path: raw, flags, ..
        } => {
            out.push(Observation::file(
                path.unwrap_or(raw),
                FileMode::from_open_flags(*flags),
            ));
        }
        EventBody::Chmod { path: raw, .. } => {
            out.push(Observation::privileged(
                "chmod_setid",
                Some(path.unwrap_or(raw)),
            ));
        }
        EventBody::FileChange(change) => {
            let second = change
                .op
                .has_two_paths()
                .then(|| path2.unwrap_or(&change.path2));
            out.push(Observation::file_change(
                change.op.name(),
                path.unwrap_or(&change.path),
                second,
            ));
        }
        EventBody::Connect {
            remote, protocol, ..
        } => {
            out.push(match peer {
                Some(workload) => {
                    Observation::outbound_workload(workload, remote.port(), proto(*protocol))
                }
                None => Observation::outbound(remote.ip(), remote.port(), proto(*protocol)),
            });
        }
        EventBody::Accept { local, remote } => {
            out.push(Observation::inbound(
                remote.ip(),
                remote.port(),
                local.port(),
                Proto::Tcp,
            ));
        }
        EventBody::Listen { local } => out.push(Observation::listen(local.port(), Proto::Tcp)),
        // A UDP server binds its port; TCP binds are followed by listen (or are client-side).
        // A bind that failed (EADDRINUSE) opened no port.
        EventBody::Bind {
            local,
            protocol,
            result,
        } if *protocol == Protocol::Udp && local.port() != 0 && *result == 0 => {
            out.push(Observation::listen(local.port(), Proto::Udp));
        }
        EventBody::Privileged(op) => {
            // The target of a mount, or else the program that asked: `unshare` by the
            // workload's own binary is habitual, by a dropped tool it is not.
            let target = match op {
                PrivOp::Mount { target, .. } | PrivOp::Umount { target } => Some(target.as_str()),
                _ => exe,
            };
            let name = match op {
                PrivOp::PacketSocket { .. } => "packet_socket",
                other => other.syscall_name(),
            };
            out.push(Observation::privileged(name, target));
        }
        // A socket made stdin/stdout/stderr (a reverse shell's redirection): learned like a
        // privileged operation of the program that did it (inetd-style servers do it).
        EventBody::Dup { .. } => out.push(Observation::privileged("dup_socket_to_stdio", exe)),
        // Sequences are learned and scored by their own model (crate::sequence).
        EventBody::Sequence(_) => {}
        EventBody::Bind { .. } | EventBody::Fork { .. } | EventBody::Exit { .. } => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use habit_probes::{FileChange, FileOp, Header};
    use habit_profiles::observation::Dimension;

    fn ev(body: EventBody) -> Event {
        Event {
            header: Header {
                ts_boot_ns: 0,
                cpu: 0,
                pid: 1,
                tgid: 1,
                ppid: 0,
                uid: 0,
                gid: 0,
                mntns: 0,
                cgroup_id: 1,
                comm: "x".into(),
            },
            body,
        }
    }

    #[test]
    fn exec_gives_exec_edge_and_args() {
        let mut out = Vec::new();
        let e = ev(EventBody::Exec {
            filename: "/proc/self/exe".into(),
            exe_path: "/bin/busybox".into(),
            argv: vec!["cat".into(), "/etc/hosts".into()],
            argv_truncated: false,
            cgroup_v1_name: String::new(),
            loginuid: 0,
            tty: 0,
            cap_effective: 0,
            cap_permitted: 0,
        });
        observations(
            &e,
            Some("/bin/busybox"),
            None,
            None,
            Some("/bin/sh"),
            None,
            &mut out,
        );
        let dims: Vec<Dimension> = out.iter().map(|o| o.dimension).collect();
        assert_eq!(
            dims,
            [Dimension::Exec, Dimension::ProcessEdge, Dimension::Args]
        );
        assert_eq!(out[0].item, "/bin/busybox (cat)");
        assert_eq!(out[1].item, "/bin/sh -> /bin/busybox (cat)");
    }

    #[test]
    fn network_and_privileged() {
        let mut out = Vec::new();
        observations(
            &ev(EventBody::Connect {
                remote: "10.0.0.1:443".parse().unwrap(),
                protocol: Protocol::Tcp,
                result: 0,
            }),
            None,
            None,
            None,
            None,
            None,
            &mut out,
        );
        observations(
            &ev(EventBody::Privileged(PrivOp::Ptrace {
                request: 16,
                target_pid: 5,
            })),
            None,
            None,
            Some("/bin/actions"),
            None,
            None,
            &mut out,
        );
        assert_eq!(out[0].dimension, Dimension::Outbound);
        assert_eq!(out[0].item, "10.0.0.1 443/tcp");
        assert_eq!(out[1].dimension, Dimension::Privileged);
        assert_eq!(out[1].item, "ptrace /bin/actions");
    }

    /// A connection to a described container names its workload, not the replica's address.
    #[test]
    fn a_connection_to_a_known_container_names_its_workload() {
        let mut out = Vec::new();
        let connect = |ip: &str| {
            ev(EventBody::Connect {
                remote: format!("{ip}:8000").parse().unwrap(),
                protocol: Protocol::Tcp,
                result: 0,
            })
        };
        let backend = Some("docker.io/shop/backend:2");
        for ip in ["172.24.0.3", "172.24.0.7"] {
            observations(&connect(ip), None, None, None, None, backend, &mut out);
        }
        assert_eq!(out[0].item, "docker.io/shop/backend:2 8000/tcp");
        assert_eq!(out[0].generalised(), out[1].generalised());
    }

    /// A UDP bind opens a port only when it succeeded (binds are reported at exit).
    #[test]
    fn a_failed_udp_bind_opens_no_port() {
        let bind = |result| {
            let mut out = Vec::new();
            observations(
                &ev(EventBody::Bind {
                    local: "0.0.0.0:5353".parse().unwrap(),
                    protocol: Protocol::Udp,
                    result,
                }),
                None,
                None,
                None,
                None,
                None,
                &mut out,
            );
            out.len()
        };
        assert_eq!(bind(0), 1);
        assert_eq!(bind(-i64::from(libc::EADDRINUSE)), 0);
    }

    fn change(op: FileOp, path: &str, path2: &str) -> Event {
        ev(EventBody::FileChange(FileChange {
            op,
            syscall: 82,
            path: path.into(),
            dirfd: -100,
            base_dir: String::new(),
            path2: path2.into(),
            dirfd2: -100,
            base_dir2: String::new(),
            arg: 0,
        }))
    }

    #[test]
    fn file_changes_name_the_operation_and_the_resolved_paths() {
        let mut out = Vec::new();
        let rename = change(FileOp::Rename, "access.log", "access.log.1");
        observations(
            &rename,
            Some("/var/log/nginx/access.log"),
            Some("/var/log/nginx/access.log.1"),
            None,
            None,
            None,
            &mut out,
        );
        let unlink = change(FileOp::Unlink, "/var/log/auth.log", "");
        observations(&unlink, None, None, None, None, None, &mut out);
        assert_eq!(out[0].dimension, Dimension::FileChange);
        assert_eq!(
            out[0].generalised(),
            "rename /var/log/nginx/access.log -> /var/log/nginx/access.log.<num>"
        );
        assert_eq!(out[1].item, "unlink /var/log/auth.log");
    }
}
