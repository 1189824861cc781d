//! A start-up scan of `/proc`: the processes that were already running before the probes were
//! attached, so that their later events (connect, open …) can be attributed and explained with
//! the binary and command line that exec events would otherwise have given.

use std::fs;
use std::path::{Path, PathBuf};

use crate::attribution::ResolveError;
use crate::attribution::cgroup::{cgroup_id_in, find_unified_mount};

/// `PF_KTHREAD` in the `flags` field of `/proc/<pid>/stat`: the task is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// One running process, as far as procfs tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSnapshot {
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Parent's process id.
    pub ppid: u32,
    /// Real user id, as `bpf_get_current_uid_gid()` reports it, so that snapshots and live
    /// events agree.
    pub uid: u32,
    /// Real group id, likewise.
    pub gid: u32,
    /// The task name (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// The executable; `None` when it cannot be read (zombie, raced exit).
    pub exe: Option<PathBuf>,
    /// The arguments, lossily decoded as UTF-8.
    pub cmdline: Vec<String>,
    /// The cgroup v2 id, when a unified hierarchy was given and the process is in it.
    pub cgroup_id: Option<u64>,
    /// Controlling terminal as `major << 20 | minor` (the probes' encoding), 0 when none.
    pub tty: u32,
    /// Effective capabilities (`CapEff`).
    pub cap_effective: u64,
}

/// Scans this host's `/proc`, with cgroup ids from the unified hierarchy if one is mounted.
/// Blocking I/O: run it on a blocking thread in async code.
pub fn scan_host_processes() -> Result<Vec<ProcSnapshot>, ResolveError> {
    let unified = find_unified_mount().ok();
    scan_processes(crate::host::proc(), unified.as_deref())
}

/// Scans every process under `proc_root`, skipping kernel threads and ignoring processes that
/// exit during the scan. Only an unreadable `proc_root` is an error.
pub fn scan_processes(
    proc_root: &Path,
    unified_root: Option<&Path>,
) -> Result<Vec<ProcSnapshot>, ResolveError> {
    let entries = fs::read_dir(proc_root).map_err(|source| ResolveError::Io {
        path: proc_root.to_path_buf(),
        source,
    })?;
    let snapshots = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| snapshot_process(proc_root, unified_root, pid))
        .collect();
    Ok(snapshots)
}

/// One process, or `None` if it is a kernel thread or vanished while being read.
pub fn snapshot_process(
    proc_root: &Path,
    unified_root: Option<&Path>,
    pid: u32,
) -> Option<ProcSnapshot> {
    let dir = proc_root.join(pid.to_string());
    let stat = parse_stat(&fs::read_to_string(dir.join("stat")).ok()?)?;
    if stat.flags & PF_KTHREAD != 0 {
        return None;
    }
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let (uid, gid) = parse_ids(&status)?;
    let cmdline = parse_cmdline(&fs::read(dir.join("cmdline")).ok()?);
    let cgroup_id = unified_root.and_then(|root| cgroup_id_in(proc_root, root, pid).ok().flatten());
    Some(ProcSnapshot {
        tgid: pid,
        ppid: stat.ppid,
        uid,
        gid,
        comm: stat.comm,
        exe: fs::read_link(dir.join("exe")).ok(),
        cmdline,
        cgroup_id,
        tty: stat.tty,
        cap_effective: parse_cap_eff(&status).unwrap_or(0),
    })
}

/// `CapEff:\t000001ffffffffff` from `/proc/<pid>/status`.
fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The fields of `/proc/<pid>/stat` the scan needs.
#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    comm: String,
    ppid: u32,
    flags: u64,
    /// `tty_nr` re-encoded as `major << 20 | minor`.
    tty: u32,
}

/// Parses `pid (comm) state ppid pgrp session tty tpgid flags …`. The comm may contain spaces
/// and parentheses, so it runs from the first `(` to the last `)`.
fn parse_stat(text: &str) -> Option<StatFields> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let ppid = rest.nth(1)?.parse().ok()?;
    let tty_nr: u32 = rest.nth(2)?.parse().ok()?;
    let flags = rest.nth(1)?.parse().ok()?;
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    Some(StatFields {
        comm,
        ppid,
        flags,
        tty: (major << 20) | minor,
    })
}

/// The real uid and gid from `/proc/<pid>/status` (`Uid:\treal\teffective\tsaved\tfs`).
fn parse_ids(status: &str) -> Option<(u32, u32)> {
    let first = |prefix: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(prefix))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((first("Uid:")?, first("Gid:")?))
}

/// Splits the NUL-separated `/proc/<pid>/cmdline` into arguments.
fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_comm() {
        let text = "1234 (a (b) c) S 77 1234 1234 0 -1 4194560 100 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(StatFields {
                comm: "a (b) c".to_owned(),
                ppid: 77,
                flags: 4_194_560,
                tty: 0,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn ids_are_the_real_ones() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t0\t0\t0\n";
        assert_eq!(parse_ids(status), Some((1000, 100)));
        assert_eq!(parse_ids("Name:\tx\n"), None);
    }

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(parse_cmdline(b"sleep\x0030\x00"), ["sleep", "30"]);
        assert_eq!(parse_cmdline(b"a\x00\x00b\x00"), ["a", "", "b"]);
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn scan_finds_this_process_and_skips_kernel_threads() {
        let unified = find_unified_mount().ok();
        let all = scan_processes(Path::new("/proc"), unified.as_deref()).unwrap();
        let me = all
            .iter()
            .find(|p| p.tgid == std::process::id())
            .expect("own process in scan");
        assert_eq!(
            me.exe.as_deref(),
            Some(std::env::current_exe().unwrap().as_path())
        );
        assert_eq!(me.cmdline, std::env::args().collect::<Vec<_>>());
        assert_eq!(me.uid, own_uid());
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        if unified.is_some() {
            assert!(me.cgroup_id.is_some());
        }
        // kthreadd (pid 2) is a kernel thread in the initial pid namespace.
        assert!(all.iter().all(|p| p.tgid != 2 || p.comm != "kthreadd"));
    }

    /// This process's real uid, read independently of the code under test.
    fn own_uid() -> u32 {
        let meta = std::fs::metadata("/proc/self").unwrap();
        std::os::unix::fs::MetadataExt::uid(&meta)
    }

    #[test]
    fn missing_proc_root_is_an_error() {
        assert!(scan_processes(Path::new("/nonexistent/proc"), None).is_err());
    }
}
