//! Killing the process of an alert, and only that process.
//!
//! A pid in an alert may have been reused by the time the response acts. So the process is
//! first pinned with a pidfd (`pidfd_open`), then checked through the host's procfs: it must
//! have started no later than the alert's event (a reused pid belongs to a process created
//! after the original one died, so after the event), still be in the alert's container, and
//! be neither habitd, the host's init, a kernel thread nor the container runtime. Only then
//! is SIGKILL sent through the pidfd (`pidfd_send_signal`), which reaches the pinned process
//! or nothing: if it died meanwhile the call fails with ESRCH and no other process is hit.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::falco::output::Clock;
use crate::process::runtime::{host_mount_namespace, is_runtime_executable, namespace_inode};

use super::Outcome;

/// How much later than the event a process may seem to have started: /proc gives start times
/// in clock ticks (10 ms at 100 Hz) and boot-to-wall conversion adds a little.
const START_TOLERANCE: Duration = Duration::from_millis(30);

/// Executables of the container runtimes and node agents that are never killed, beside
/// [`is_runtime_executable`]'s runc, crun, conmon and containerd shims.
const RUNTIME_DAEMONS: &[&str] = &[
    "dockerd",
    "containerd",
    "docker-proxy",
    "docker-init",
    "crio",
    "kubelet",
    "k3s",
    "habitd",
];

/// What must hold of the process before it is killed.
pub struct KillTarget<'a> {
    pub pid: u32,
    /// The alert's event time: the process started no later.
    pub not_after: SystemTime,
    /// The container the alert attributes it to (full or short id); `None` for a host process.
    pub container: Option<&'a str>,
    /// habitd's own pid (as the host sees it).
    pub self_tgid: u32,
}

/// Kills `target.pid` after the checks of the module documentation; the outcome and a
/// sentence saying what happened.
pub fn kill(proc_root: &Path, target: &KillTarget<'_>) -> (Outcome, String) {
    let pid = target.pid;
    if pid == 0 {
        return (Outcome::Failed, "the alert names no process".into());
    }
    if pid == target.self_tgid {
        return (Outcome::Refused, format!("pid {pid} is habitd itself"));
    }
    if pid == 1 {
        return (Outcome::Refused, "pid 1 is the host's init".into());
    }
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            return (Outcome::Gone, format!("pid {pid} had already exited"));
        }
        Err(e) => return (Outcome::Failed, format!("pidfd_open({pid}): {e}")),
    };
    let dir = proc_root.join(pid.to_string());
    let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
        return (Outcome::Gone, format!("pid {pid} had already exited"));
    };
    let Some((comm, start_ticks)) = parse_stat(&stat) else {
        return (
            Outcome::Failed,
            format!("cannot read {}/stat", dir.display()),
        );
    };
    let started = Clock::new().wall(ticks_to_ns(start_ticks));
    if started > target.not_after + START_TOLERANCE {
        return (
            Outcome::Gone,
            format!(
                "pid {pid} ({comm}) is another process now: it started at {}, after the alert's \
                 event at {}",
                crate::alerts::alert::rfc3339(started),
                crate::alerts::alert::rfc3339(target.not_after)
            ),
        );
    }
    let Ok(exe) = std::fs::read_link(dir.join("exe")) else {
        return (
            Outcome::Refused,
            format!("pid {pid} ({comm}) has no executable: a kernel thread"),
        );
    };
    let exe = exe.to_string_lossy();
    // A name protects only a process of the host's mount namespace: inside a container, an
    // executable's name (a copy called `runc` or `habitd`) is the workload's to choose. When
    // the host's namespace cannot be read, every name counts (never kill what may be the
    // runtime).
    let on_host = match host_mount_namespace(proc_root) {
        Some(host) => namespace_inode(proc_root, pid, "mnt") == Some(host),
        None => true,
    };
    if on_host && is_protected(&exe) {
        return (
            Outcome::Refused,
            format!("pid {pid} ({exe}) is the container runtime or habitd"),
        );
    }
    if let Some(container) = target.container {
        let cgroups = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        if !cgroups.contains(container) {
            return (
                Outcome::Gone,
                format!("pid {pid} ({comm}) is no longer in container {container}"),
            );
        }
    }
    match pidfd_send_signal(&pidfd, libc::SIGKILL) {
        Ok(()) => (Outcome::Done, format!("killed pid {pid} ({exe})")),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => (
            Outcome::Gone,
            format!("pid {pid} ({comm}) exited before the signal"),
        ),
        Err(e) => (Outcome::Failed, format!("kill pid {pid} ({exe}): {e}")),
    }
}

/// The start time of `pid` (clock ticks after boot), `None` when it is gone.
pub fn start_ticks(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&stat).map(|(_, t)| t)
}

/// The runtime's programs and habitd, by the executable's name (of a host process): never
/// killed, whatever an alert says.
fn is_protected(exe: &str) -> bool {
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    let name = exe.rsplit('/').next().unwrap_or(exe);
    is_runtime_executable(exe) || RUNTIME_DAEMONS.contains(&name)
}

/// `comm` and `starttime` (clock ticks after boot) of a `/proc/PID/stat` line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    // After ") ": field 3 (state) onwards; starttime is field 22.
    let start = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()?;
    Some((comm, start))
}

fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks.saturating_mul(1_000_000_000 / hz)
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo (NULL), no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::Command;

    fn target(pid: u32, not_after: SystemTime) -> KillTarget<'static> {
        KillTarget {
            pid,
            not_after,
            container: None,
            self_tgid: std::process::id(),
        }
    }

    #[test]
    fn stat_lines_with_spaces_and_parentheses_in_comm() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1 2 3";
        assert_eq!(parse_stat(line), Some(("a (b) c".into(), 123456)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_runtime_and_habitd_are_protected() {
        assert!(is_protected("/usr/bin/dockerd"));
        assert!(is_protected("/usr/bin/containerd-shim-runc-v2"));
        assert!(is_protected("/usr/sbin/runc"));
        assert!(is_protected("/usr/local/bin/habitd (deleted)"));
        assert!(!is_protected("/bin/busybox"));
    }

    #[test]
    fn a_process_that_started_after_the_event_is_not_killed() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let before = SystemTime::now() - Duration::from_secs(5);
        let (outcome, why) = kill(Path::new("/proc"), &target(child.id(), before));
        assert_eq!(outcome, Outcome::Gone, "{why}");
        assert!(why.contains("another process"), "{why}");
        assert!(child.try_wait().unwrap().is_none(), "it must still run");
        // The same process for an event after its start is killed.
        let (outcome, why) = kill(Path::new("/proc"), &target(child.id(), SystemTime::now()));
        assert_eq!(outcome, Outcome::Done, "{why}");
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn ourselves_init_gone_pids_and_other_containers_are_not_killed() {
        let now = SystemTime::now();
        let me = kill(Path::new("/proc"), &target(std::process::id(), now));
        assert_eq!(me.0, Outcome::Refused, "{}", me.1);
        let init = kill(Path::new("/proc"), &target(1, now));
        assert_eq!(init.0, Outcome::Refused, "{}", init.1);
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = kill(Path::new("/proc"), &target(pid, now));
        assert_eq!(gone.0, Outcome::Gone, "{}", gone.1);
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let mut t = target(child.id(), SystemTime::now());
        t.container = Some("0123456789ab");
        let other = kill(Path::new("/proc"), &t);
        assert_eq!(other.0, Outcome::Gone, "{}", other.1);
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_name_protects_only_on_the_host_not_a_copy_called_runc_in_another_mount_namespace() {
        assert!(
            crate::process::runtime::host_mount_namespace(Path::new("/proc")).is_some(),
            "this test needs root (it reads /proc/1/ns/mnt and runs `unshare -m`)"
        );
        let dir = tempfile::tempdir().unwrap();
        let runc = dir.path().join("runc");
        std::fs::copy("/bin/sleep", &runc).unwrap();
        // On the host: the runtime's name protects it.
        let mut host = Command::new(&runc).arg("30").spawn().unwrap();
        let (outcome, why) = kill(Path::new("/proc"), &target(host.id(), SystemTime::now()));
        assert_eq!(outcome, Outcome::Refused, "{why}");
        host.kill().unwrap();
        host.wait().unwrap();
        // In a mount namespace of its own, as in a container: the same name protects nothing.
        let mut inside = Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(&runc)
            .arg("30")
            .spawn()
            .unwrap();
        let pid = inside.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| !exe.ends_with("runc"))
        {
            assert!(std::time::Instant::now() < deadline, "unshare did not exec");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (outcome, why) = kill(Path::new("/proc"), &target(pid, SystemTime::now()));
        assert_eq!(outcome, Outcome::Done, "{why}");
        inside.wait().unwrap();
    }
}
