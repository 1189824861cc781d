//! Seeds the kernel's listener table with the TCP listeners that existed before habitd
//! started. The kernel learns a listener when it starts listening; without this, connections
//! accepted by a server that was already running would carry no process or workload.
//!
//! Per network namespace, `/proc/<pid>/net/tcp{,6}` lists the listening sockets (by inode);
//! `/proc/<pid>/fd` links name the socket inodes a process holds.

use std::collections::HashMap;
use std::fs;

use habit_probes::abi::{COMM_LEN, EV_LISTEN, Hdr, ListenerKey};

use crate::process::procfs::ProcSnapshot;
use crate::process::runtime::namespace_inode;

/// The inode of a namespace of host process `pid`.
fn ns_inode(pid: u32, ns: &str) -> Option<u32> {
    namespace_inode(crate::host::proc(), pid, ns)
}

/// `st` of a listening socket in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";

/// (local port, socket inode) of every listening socket in a /proc/net/tcp{,6} table.
pub fn parse_tcp_listeners(table: &str) -> Vec<(u16, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            let port = u16::from_str_radix(cols.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let inode = cols.get(9)?.parse().ok()?;
            Some((port, inode))
        })
        .collect()
}

/// Socket inodes held by a process.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(crate::host::proc().join(format!("{pid}/fd"))) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let link = fs::read_link(fd.path()).ok()?;
            let s = link.to_string_lossy();
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The listeners of every network namespace, with the header of the process owning each.
/// Best effort: processes that vanish or cannot be read are skipped.
pub fn existing_listeners(processes: &[ProcSnapshot]) -> Vec<(ListenerKey, Hdr)> {
    let mut by_netns: HashMap<u32, Vec<&ProcSnapshot>> = HashMap::new();
    for p in processes {
        if let Some(ns) = ns_inode(p.tgid, "net") {
            by_netns.entry(ns).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    for (netns, procs) in by_netns {
        let Some(first) = procs.first() else { continue };
        let mut listening: HashMap<u64, u16> = HashMap::new();
        for table in ["tcp", "tcp6"] {
            if let Ok(text) =
                fs::read_to_string(crate::host::proc().join(format!("{}/net/{table}", first.tgid)))
            {
                listening.extend(parse_tcp_listeners(&text).into_iter().map(|(p, i)| (i, p)));
            }
        }
        if listening.is_empty() {
            continue;
        }
        for p in &procs {
            for inode in socket_inodes(p.tgid) {
                if let Some(&port) = listening.get(&inode) {
                    let key = ListenerKey {
                        netns,
                        port,
                        _pad: 0,
                    };
                    out.push((key, header(p)));
                }
            }
        }
    }
    out
}

fn header(p: &ProcSnapshot) -> Hdr {
    let mut comm = [0u8; COMM_LEN];
    let n = p.comm.len().min(COMM_LEN - 1);
    comm[..n].copy_from_slice(&p.comm.as_bytes()[..n]);
    Hdr {
        kind: EV_LISTEN,
        cpu: 0,
        ts_ns: 0,
        pid: p.tgid,
        tgid: p.tgid,
        ppid: p.ppid,
        uid: p.uid,
        gid: p.gid,
        mntns: ns_inode(p.tgid, "mnt").unwrap_or(0),
        cgroup_id: p.cgroup_id.unwrap_or(0),
        comm,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:24F5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:9C40 0100007F:24F5 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(parse_tcp_listeners(table), vec![(0x24F5, 123456)]);
    }

    #[test]
    fn finds_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = crate::process::procfs::scan_host_processes()
            .unwrap()
            .into_iter()
            .filter(|p| p.tgid == std::process::id())
            .collect::<Vec<_>>();
        let found = existing_listeners(&me);
        assert!(
            found
                .iter()
                .any(|(k, h)| k.port == port && h.tgid == std::process::id()),
            "{found:?}"
        );
    }
}
