//! Decoding of ring-buffer records into [`Event`]s.
//!
//! Records come from the kernel, but a decoder that trusts its input turns one bug (or an ABI
//! mismatch between an old object and a new binary) into a crash: every length and kind is
//! checked, and a bad record is an error that the caller counts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::abi;
use crate::event::{Event, EventBody, FileChange, FileOp, Header, PrivOp, Protocol, SeqRecord};

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is shorter than the struct its kind announces.
    #[error("record of kind {kind} is {len} bytes, expected at least {expected}")]
    Truncated {
        kind: u32,
        len: usize,
        expected: usize,
    },
    /// The kind is not one this build knows (an object from another ABI version?).
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    /// A socket address with a family other than AF_INET/AF_INET6.
    #[error("unsupported address family {0}")]
    AddressFamily(u16),
    /// A privileged-operation record with an unknown operation code.
    #[error("unknown privileged operation {0}")]
    UnknownPrivOp(u32),
    /// A file-change record with an unknown operation code.
    #[error("unknown file-change operation {0}")]
    UnknownFileOp(u32),
}

impl DecodeError {
    /// Every [`Self::reason`], so that each label can be exported at zero from start-up.
    pub const REASONS: [&'static str; 5] = [
        "truncated",
        "unknown_kind",
        "address_family",
        "unknown_priv_op",
        "unknown_file_op",
    ];

    /// A low-cardinality label for the `habitd_decode_errors_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::AddressFamily(_) => "address_family",
            DecodeError::UnknownPrivOp(_) => "unknown_priv_op",
            DecodeError::UnknownFileOp(_) => "unknown_file_op",
        }
    }
}

/// Reads a `T` from the front of `bytes`, or fails with `Truncated` when too short.
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let expected = std::mem::size_of::<T>();
    if bytes.len() < expected {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length was checked above; `T` is one of the `#[repr(C)]` plain-data ABI types,
    // valid for any bit pattern; read_unaligned copes with the ring buffer's 8-byte alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A NUL-terminated string from a fixed buffer (lossy: paths are bytes, not UTF-8).
pub fn c_string(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Rebuilds `/a/b/c` from the leaf-first, NUL-separated dentry names; empty if none.
fn components_path(components: &[u8]) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut rest = components;
    while let Some(end) = rest.iter().position(|&b| b == 0) {
        if end == 0 {
            break;
        }
        parts.push(&rest[..end]);
        rest = &rest[end + 1..];
    }
    let mut path = String::new();
    for part in parts.iter().rev() {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(part));
    }
    path
}

/// Splits a NUL-separated argv block.
fn split_args(buf: &[u8]) -> Vec<String> {
    let buf = buf.strip_suffix(&[0]).unwrap_or(buf);
    if buf.is_empty() {
        return Vec::new();
    }
    buf.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn header(h: &abi::Hdr) -> Header {
    Header {
        ts_boot_ns: h.ts_ns,
        cpu: h.cpu,
        pid: h.pid,
        tgid: h.tgid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        mntns: h.mntns,
        cgroup_id: h.cgroup_id,
        comm: c_string(&h.comm),
    }
}

fn socket_addr(sa: &abi::SockAddr) -> Result<SocketAddr, DecodeError> {
    let ip = match sa.family as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(
            sa.addr[0], sa.addr[1], sa.addr[2], sa.addr[3],
        )),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(sa.addr)),
        _ => return Err(DecodeError::AddressFamily(sa.family)),
    };
    Ok(SocketAddr::new(ip, sa.port))
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let kind = match bytes.get(..4) {
        Some(k) => u32::from_ne_bytes([k[0], k[1], k[2], k[3]]),
        None => {
            return Err(DecodeError::Truncated {
                kind: 0,
                len: bytes.len(),
                expected: std::mem::size_of::<abi::Hdr>(),
            });
        }
    };
    let (hdr, body) = match kind {
        abi::EV_EXEC => {
            let e: abi::Exec = read(bytes, kind)?;
            let args_len = (e.args_len as usize).min(abi::ARGS_LEN);
            let body = EventBody::Exec {
                filename: c_string(&e.filename),
                exe_path: components_path(&e.exe_components),
                argv: split_args(&e.args[..args_len]),
                argv_truncated: e.flags & abi::EXEC_ARGS_TRUNCATED != 0,
                cgroup_v1_name: c_string(&e.cgroup_v1),
                loginuid: e.loginuid,
                tty: e.tty,
                cap_effective: e.cap_effective,
                cap_permitted: e.cap_permitted,
            };
            (e.hdr, body)
        }
        abi::EV_FORK => {
            let e: abi::Fork = read(bytes, kind)?;
            (
                e.hdr,
                EventBody::Fork {
                    child_pid: e.child_tgid,
                },
            )
        }
        abi::EV_EXIT => {
            let e: abi::Exit = read(bytes, kind)?;
            (
                e.hdr,
                EventBody::Exit {
                    status: e.exit_code,
                },
            )
        }
        abi::EV_OPEN | abi::EV_CHMOD => {
            let e: abi::File = read(bytes, kind)?;
            let path = c_string(&e.path);
            let base_dir = components_path(&e.base_components);
            let body = if kind == abi::EV_OPEN {
                EventBody::Open {
                    dirfd: e.dirfd,
                    path,
                    base_dir,
                    flags: e.flags,
                    mode: e.mode,
                    result: e.res,
                }
            } else {
                EventBody::Chmod {
                    dirfd: e.dirfd,
                    path,
                    base_dir,
                    mode: e.mode,
                }
            };
            (e.hdr, body)
        }
        abi::EV_FCHANGE => {
            let e: abi::FChange = read(bytes, kind)?;
            let op = FileOp::from_abi(e.op).ok_or(DecodeError::UnknownFileOp(e.op))?;
            let change = FileChange {
                op,
                syscall: e.syscall,
                path: c_string(&e.path),
                dirfd: e.dirfd,
                base_dir: components_path(&e.base_components),
                path2: c_string(&e.path2),
                dirfd2: e.dirfd2,
                base_dir2: components_path(&e.base2_components),
                arg: e.arg,
            };
            (e.hdr, EventBody::FileChange(change))
        }
        abi::EV_DUP => {
            let e: abi::Net = read(bytes, kind)?;
            let body = EventBody::Dup {
                local: socket_addr(&e.local)?,
                remote: socket_addr(&e.remote)?,
                protocol: Protocol::from_ipproto(e.protocol),
                oldfd: e.fd,
                newfd: e.res,
                syscall: e.syscall,
            };
            (e.hdr, body)
        }
        abi::EV_CONNECT | abi::EV_ACCEPT | abi::EV_BIND | abi::EV_LISTEN => {
            let e: abi::Net = read(bytes, kind)?;
            let protocol = Protocol::from_ipproto(e.protocol);
            let body = match kind {
                abi::EV_CONNECT => EventBody::Connect {
                    remote: socket_addr(&e.remote)?,
                    protocol,
                    result: e.res,
                },
                abi::EV_BIND => EventBody::Bind {
                    local: socket_addr(&e.local)?,
                    protocol,
                    result: e.res,
                },
                abi::EV_LISTEN => EventBody::Listen {
                    local: socket_addr(&e.local)?,
                },
                _ => EventBody::Accept {
                    local: socket_addr(&e.local)?,
                    remote: socket_addr(&e.remote)?,
                },
            };
            (e.hdr, body)
        }
        abi::EV_PRIV => {
            let e: abi::Priv = read(bytes, kind)?;
            (e.hdr, EventBody::Privileged(priv_op(&e)?))
        }
        abi::EV_SEQ => {
            let e: abi::Seq = read(bytes, kind)?;
            let record = SeqRecord {
                gram: e.gram,
                nsys: e.nsys,
                known_sum: e.known_sum,
                unknown: e.unknown,
                flags: e.flags,
                wid: e.wid,
            };
            (e.hdr, EventBody::Sequence(record))
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(Event {
        header: header(&hdr),
        body,
    })
}

fn priv_op(e: &abi::Priv) -> Result<PrivOp, DecodeError> {
    let [a0, a1, a2, _] = e.args;
    let id = |v: u64| v as u32;
    Ok(match e.op {
        abi::PRIV_SETUID => PrivOp::SetUid {
            ruid: id(a0),
            euid: id(a0),
            suid: id(a0),
        },
        abi::PRIV_SETREUID => PrivOp::SetUid {
            ruid: id(a0),
            euid: id(a1),
            suid: u32::MAX,
        },
        abi::PRIV_SETRESUID => PrivOp::SetUid {
            ruid: id(a0),
            euid: id(a1),
            suid: id(a2),
        },
        abi::PRIV_SETGID => PrivOp::SetGid {
            rgid: id(a0),
            egid: id(a0),
            sgid: id(a0),
        },
        abi::PRIV_SETREGID => PrivOp::SetGid {
            rgid: id(a0),
            egid: id(a1),
            sgid: u32::MAX,
        },
        abi::PRIV_SETRESGID => PrivOp::SetGid {
            rgid: id(a0),
            egid: id(a1),
            sgid: id(a2),
        },
        abi::PRIV_CAPSET => PrivOp::Capset,
        abi::PRIV_PTRACE => PrivOp::Ptrace {
            request: a0,
            target_pid: id(a1),
        },
        abi::PRIV_MOUNT => PrivOp::Mount {
            target: c_string(&e.arg_str),
            flags: e.args[3],
        },
        abi::PRIV_UMOUNT => PrivOp::Umount {
            target: c_string(&e.arg_str),
        },
        abi::PRIV_UNSHARE => PrivOp::Unshare { flags: a0 },
        abi::PRIV_SETNS => PrivOp::Setns { nstype: a1 },
        abi::PRIV_INIT_MODULE => PrivOp::InitModule,
        abi::PRIV_FINIT_MODULE => PrivOp::FinitModule { fd: a0 as i32 },
        abi::PRIV_MEMFD_CREATE => PrivOp::MemfdCreate {
            name: c_string(&e.arg_str),
        },
        abi::PRIV_BPF => PrivOp::Bpf { cmd: a0 },
        abi::PRIV_PACKET_SOCKET => PrivOp::PacketSocket {
            sock_type: a1,
            protocol: a2,
        },
        other => return Err(DecodeError::UnknownPrivOp(other)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_decode_error_reason_is_listed() {
        for e in [
            DecodeError::Truncated {
                kind: 0,
                len: 0,
                expected: 1,
            },
            DecodeError::UnknownKind(99),
            DecodeError::AddressFamily(3),
            DecodeError::UnknownPrivOp(9),
            DecodeError::UnknownFileOp(9),
        ] {
            assert!(DecodeError::REASONS.contains(&e.reason()), "{e}");
        }
    }

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data value for a test fixture.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn hdr(kind: u32) -> abi::Hdr {
        let mut comm = [0u8; abi::COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        abi::Hdr {
            kind,
            cpu: 1,
            ts_ns: 42,
            pid: 100,
            tgid: 100,
            ppid: 1,
            uid: 0,
            gid: 0,
            mntns: 4026531841,
            cgroup_id: 7,
            comm,
        }
    }

    fn exec_record() -> abi::Exec {
        let mut e = abi::Exec {
            hdr: hdr(abi::EV_EXEC),
            flags: 0,
            args_len: 0,
            loginuid: u32::MAX,
            tty: 0,
            cap_effective: 0,
            cap_permitted: 0,
            filename: [0; abi::PATH_LEN],
            cgroup_v1: [0; abi::CGNAME_LEN],
            args: [0; abi::ARGS_LEN],
            exe_components: [0; abi::COMPONENTS_LEN],
        };
        e.exe_components[..13].copy_from_slice(b"curl\0bin\0usr\0");
        e.filename[..13].copy_from_slice(b"/usr/bin/curl");
        let args = b"curl\0-s\0http://x\0";
        e.args[..args.len()].copy_from_slice(args);
        e.args_len = args.len() as u32;
        e
    }

    #[test]
    fn decodes_exec() {
        let ev = decode(&bytes_of(&exec_record())).unwrap();
        assert_eq!(ev.header.comm, "curl");
        assert_eq!(ev.header.cgroup_id, 7);
        match ev.body {
            EventBody::Exec {
                filename,
                exe_path,
                argv,
                ..
            } => {
                assert_eq!(filename, "/usr/bin/curl");
                assert_eq!(exe_path, "/usr/bin/curl");
                assert_eq!(argv, vec!["curl", "-s", "http://x"]);
            }
            other => panic!("wrong body {other:?}"),
        }
    }

    #[test]
    fn truncated_record_is_an_error_not_a_panic() {
        let full = bytes_of(&exec_record());
        for len in [0, 3, 4, 20, std::mem::size_of::<abi::Hdr>(), full.len() - 1] {
            let err = decode(&full[..len]).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { .. }),
                "len {len}: {err:?}"
            );
            assert_eq!(err.reason(), "truncated");
        }
    }

    #[test]
    fn relative_open_carries_its_base_directory() {
        let mut f = abi::File {
            hdr: hdr(abi::EV_OPEN),
            dirfd: -100,
            flags: 0,
            mode: 0,
            syscall: 257,
            res: 5,
            path: [0; abi::PATH_LEN],
            base_components: [0; abi::COMPONENTS_LEN],
        };
        f.path[..11].copy_from_slice(b"secret.html");
        f.base_components[..4].copy_from_slice(b"www\0");
        match decode(&bytes_of(&f)).unwrap().body {
            EventBody::Open { path, base_dir, .. } => {
                assert_eq!(path, "secret.html");
                assert_eq!(base_dir, "/www");
            }
            other => panic!("wrong body {other:?}"),
        }
    }

    /// Opens are reported at syscall exit: the new fd of a successful open and the -errno of a
    /// failed one arrive as the event's result (Falco's fd.num / evt.rawres).
    #[test]
    fn open_carries_its_result_fd_or_errno() {
        for res in [7, -i64::from(libc::ENOENT), -i64::from(libc::EACCES)] {
            let mut f = abi::File {
                hdr: hdr(abi::EV_OPEN),
                dirfd: -100,
                flags: 0,
                mode: 0,
                syscall: 257,
                res,
                path: [0; abi::PATH_LEN],
                base_components: [0; abi::COMPONENTS_LEN],
            };
            f.path[..11].copy_from_slice(b"/etc/shadow");
            let ev = decode(&bytes_of(&f)).unwrap();
            assert_eq!(ev.body.result(), Some(res));
            assert!(matches!(ev.body, EventBody::Open { result, .. } if result == res));
        }
    }

    /// A socket duplicated onto stdio: both ends, the old fd and the new one (the result).
    #[test]
    fn decodes_a_socket_duplicated_onto_stdio() {
        let mut remote = [0u8; 16];
        remote[..4].copy_from_slice(&[10, 0, 0, 1]);
        let n = abi::Net {
            hdr: hdr(abi::EV_DUP),
            local: abi::SockAddr {
                family: libc::AF_INET as u16,
                port: 40312,
                scope: 0,
                addr: [172, 17, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            remote: abi::SockAddr {
                family: libc::AF_INET as u16,
                port: 4444,
                scope: 0,
                addr: remote,
            },
            protocol: 6,
            fd: 3,
            res: 0,
            syscall: 33,
            _pad: 0,
        };
        let ev = decode(&bytes_of(&n)).unwrap();
        assert_eq!(
            ev.body,
            EventBody::Dup {
                local: "172.17.0.2:40312".parse().unwrap(),
                remote: "10.0.0.1:4444".parse().unwrap(),
                protocol: Protocol::Tcp,
                oldfd: 3,
                newfd: 0,
                syscall: 33,
            }
        );
        assert_eq!(ev.body.evt_type(), "dup2");
        assert_eq!(ev.body.result(), Some(0));
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut rec = bytes_of(&exec_record());
        rec[..4].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(decode(&rec).unwrap_err(), DecodeError::UnknownKind(999));
    }

    #[test]
    fn args_len_beyond_buffer_is_clamped() {
        let mut e = exec_record();
        e.args_len = u32::MAX;
        assert!(decode(&bytes_of(&e)).is_ok());
    }

    #[test]
    fn decodes_ipv6_connect_and_rejects_unix_family() {
        let mut addr = [0u8; 16];
        addr[15] = 1;
        let mut n = abi::Net {
            hdr: hdr(abi::EV_CONNECT),
            local: abi::SockAddr {
                family: 0,
                port: 0,
                scope: 0,
                addr: [0; 16],
            },
            remote: abi::SockAddr {
                family: libc::AF_INET6 as u16,
                port: 8080,
                scope: 0,
                addr,
            },
            protocol: 6,
            fd: 3,
            res: -i64::from(libc::EINPROGRESS),
            syscall: 42,
            _pad: 0,
        };
        let ev = decode(&bytes_of(&n)).unwrap();
        assert_eq!(
            ev.body,
            EventBody::Connect {
                remote: "[::1]:8080".parse().unwrap(),
                protocol: Protocol::Tcp,
                result: -115,
            }
        );
        n.remote.family = libc::AF_UNIX as u16;
        assert_eq!(
            decode(&bytes_of(&n)).unwrap_err(),
            DecodeError::AddressFamily(1)
        );
    }

    /// The kernel counts lost records by `hdr.kind`; metrics name them as the decoder names
    /// the records it did get: the two must agree for every kind.
    #[test]
    fn lost_records_are_labelled_as_their_decoded_kind() {
        let mut records = vec![bytes_of(&exec_record())];
        records.push(bytes_of(&abi::Fork {
            hdr: hdr(abi::EV_FORK),
            child_pid: 2,
            child_tgid: 2,
        }));
        records.push(bytes_of(&abi::Exit {
            hdr: hdr(abi::EV_EXIT),
            exit_code: 0,
            _pad: 0,
        }));
        for kind in [abi::EV_OPEN, abi::EV_CHMOD] {
            let mut f = abi::File {
                hdr: hdr(kind),
                dirfd: -100,
                flags: 0,
                mode: 0o4755,
                syscall: 2,
                res: 3,
                path: [0; abi::PATH_LEN],
                base_components: [0; abi::COMPONENTS_LEN],
            };
            f.path[..2].copy_from_slice(b"/x");
            records.push(bytes_of(&f));
        }
        let addr = abi::SockAddr {
            family: libc::AF_INET as u16,
            port: 80,
            scope: 0,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        for kind in [
            abi::EV_CONNECT,
            abi::EV_ACCEPT,
            abi::EV_BIND,
            abi::EV_LISTEN,
        ] {
            records.push(bytes_of(&abi::Net {
                hdr: hdr(kind),
                local: addr,
                remote: addr,
                protocol: 6,
                fd: 3,
                res: 0,
                syscall: 0,
                _pad: 0,
            }));
        }
        records.push(bytes_of(&abi::Priv {
            hdr: hdr(abi::EV_PRIV),
            op: abi::PRIV_SETUID,
            syscall: 105,
            args: [0; 4],
            arg_str: [0; abi::PRIV_ARG_LEN],
        }));
        records.push(bytes_of(&abi::Seq {
            hdr: hdr(abi::EV_SEQ),
            gram: 1,
            nsys: 1,
            known_sum: 0,
            unknown: 0,
            flags: abi::SEQ_REC_NEW,
            wid: 1,
            _pad: 0,
        }));
        records.push(bytes_of(&fchange_record(
            abi::FC_UNLINK,
            b"/var/log/x",
            b"",
        )));
        records.push(bytes_of(&abi::Net {
            hdr: hdr(abi::EV_DUP),
            local: addr,
            remote: addr,
            protocol: 6,
            fd: 3,
            res: 1,
            syscall: 33,
            _pad: 0,
        }));
        let mut labels = Vec::new();
        for record in &records {
            let ev = decode(record).unwrap();
            let kind = u32::from_ne_bytes(record[..4].try_into().unwrap());
            assert_eq!(
                EventBody::label_of_kind(kind),
                Some(ev.body.kind_label()),
                "kind {kind}"
            );
            labels.push(ev.body.kind_label());
        }
        assert_eq!(labels, EventBody::KIND_LABELS, "every kind is covered");
        assert_eq!(EventBody::label_of_kind(0), None);
        assert_eq!(EventBody::label_of_kind(14), None);
        assert!(abi::LOST_KINDS > EventBody::KIND_LABELS.len());
    }

    fn fchange_record(op: u32, path: &[u8], path2: &[u8]) -> abi::FChange {
        let mut c = abi::FChange {
            hdr: hdr(abi::EV_FCHANGE),
            op,
            syscall: 316,
            dirfd: -100,
            dirfd2: -100,
            arg: 0,
            path: [0; abi::PATH_LEN],
            path2: [0; abi::PATH_LEN],
            base_components: [0; abi::COMPONENTS_LEN],
            base2_components: [0; abi::COMPONENTS_LEN],
        };
        c.path[..path.len()].copy_from_slice(path);
        c.path2[..path2.len()].copy_from_slice(path2);
        c
    }

    #[test]
    fn decodes_a_rename_with_both_paths_and_bases() {
        let mut c = fchange_record(abi::FC_RENAME, b"passwd.new", b"/etc/passwd");
        c.base_components[..8].copy_from_slice(b"tmp\0var\0");
        let ev = decode(&bytes_of(&c)).unwrap();
        assert_eq!(ev.body.evt_type(), "renameat2");
        match ev.body {
            EventBody::FileChange(change) => {
                assert_eq!(change.op, FileOp::Rename);
                assert_eq!(change.path, "passwd.new");
                assert_eq!(change.base_dir, "/var/tmp");
                assert_eq!(change.path2, "/etc/passwd");
                assert_eq!(change.base_dir2, "");
            }
            other => panic!("wrong body {other:?}"),
        }
    }

    #[test]
    fn decodes_every_file_op_and_rejects_unknown_ones() {
        for (code, op) in (1..).zip(FileOp::ALL) {
            let ev = decode(&bytes_of(&fchange_record(code, b"/x", b""))).unwrap();
            assert!(matches!(ev.body, EventBody::FileChange(c) if c.op == op));
        }
        for bad in [0, 9, u32::MAX] {
            assert_eq!(
                decode(&bytes_of(&fchange_record(bad, b"/x", b""))).unwrap_err(),
                DecodeError::UnknownFileOp(bad)
            );
        }
    }

    #[test]
    fn chown_owner_and_group_unchanged_are_none() {
        let mut c = fchange_record(abi::FC_CHOWN, b"/etc/shadow", b"");
        c.syscall = 92;
        c.arg = (1000u64 << 32) | u64::from(u32::MAX);
        match decode(&bytes_of(&c)).unwrap().body {
            EventBody::FileChange(change) => {
                assert_eq!(change.uid(), Some(1000));
                assert_eq!(change.gid(), None);
                assert_eq!(change.syscall_name(), "chown");
            }
            other => panic!("wrong body {other:?}"),
        }
    }

    #[test]
    fn unknown_priv_op_is_rejected() {
        let p = abi::Priv {
            hdr: hdr(abi::EV_PRIV),
            op: 77,
            syscall: 0,
            args: [0; 4],
            arg_str: [0; abi::PRIV_ARG_LEN],
        };
        assert_eq!(
            decode(&bytes_of(&p)).unwrap_err(),
            DecodeError::UnknownPrivOp(77)
        );
    }
}
