//! Which processes are the container runtime's own work (runc/crun init, conmon, a containerd
//! shim): they run in a container's cgroup while they start or enter it, but what they do is
//! the runtime's, not the workload's, so it is neither learned nor scored.
//!
//! Why by where it was executed, not by name: a process's comm (`prctl(PR_SET_NAME)`), its
//! argv, its executable's name (a copy of a binary called `runc`), its environment and its
//! cgroup's name are all the workload's to choose, and every event of a process called
//! `runc:[2:INIT]` used to be dropped before any rule ran. What an unprivileged container
//! process cannot do is execute a program in the host's mount namespace: it lives in its
//! container's, and `setns` into the host's needs `CAP_SYS_ADMIN` over it. The runtime's
//! binaries are executed by the engine on the host (runc by the shim, runc init by runc) and
//! only then enter the container's namespaces and cgroup. So a process is the runtime when
//! its last exec happened in the host's mount namespace (the kernel's `mntns` of the exec
//! event, compared with that of the host's pid 1, or kthreadd's) and ran a runtime's binary, or re-executed
//! itself there (runc init re-executes a sealed memfd copy of itself: CVE-2019-5736) while
//! already being the runtime. Forks inherit it; the next exec decides again: the entrypoint
//! or a `docker exec`'d command, executed inside the container, is the workload.
//!
//! The name check only narrows which host programs count (the host's own services stay
//! learned under `host:…`); it is decided on the host side, out of the workload's reach.
//! Limits: a runtime started in a private mount namespace (a systemd unit with
//! `PrivateMounts=`) is not recognised — its work is then learned as the workload's, noise
//! rather than an exemption; a privileged container that can `setns` into the host's mount
//! namespace is root on the node and out of scope.

use std::path::Path;

/// What a process's edge to its parent names when the parent is the runtime (which of runc
/// or the shim is the parent of a `docker exec`'d command depends on timing: both are "the
/// runtime").
pub const RUNTIME_PARENT: &str = "<runtime>";

/// Whether `exe` (an absolute path) is one of the container runtimes' binaries by name. Only
/// meaningful for a program executed on the host (see the module docs).
pub fn is_runtime_executable(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    matches!(name, "runc" | "crun" | "conmon" | "youki") || name.starts_with("containerd-shim")
}

/// The inode of a namespace of a process (`/proc/<pid>/ns/<ns>` links to `mnt:[4026531841]`),
/// read under `proc_root`.
pub fn namespace_inode(proc_root: &Path, pid: u32, ns: &str) -> Option<u32> {
    let link = std::fs::read_link(proc_root.join(format!("{pid}/ns/{ns}"))).ok()?;
    let s = link.to_string_lossy();
    s.split_once('[')?.1.strip_suffix(']')?.parse().ok()
}

/// The host's mount namespace: that of pid 1 in the host's procfs or, where pid 1 cannot be
/// inspected (an init with capabilities habitd lacks), that of pid 2, kthreadd: kernel threads
/// live in the initial mount namespace. `None` (with a warning) when neither can be read, and
/// then no process is taken for the runtime.
pub fn host_mount_namespace(proc_root: &Path) -> Option<u32> {
    let ns = namespace_inode(proc_root, 1, "mnt").or_else(|| namespace_inode(proc_root, 2, "mnt"));
    if ns.is_none() {
        tracing::warn!(
            message = "The host's mount namespace cannot be read: no process is recognised as the container runtime, so runtime work in containers is learned as theirs.",
            path = %proc_root.join("1/ns/mnt").display()
        );
    }
    ns
}

/// Whether an exec makes its process the runtime: executed in the host's mount namespace,
/// and a runtime's binary or the runtime re-executing itself (`was_runtime`).
pub fn exec_is_runtime(
    host_mntns: Option<u32>,
    exec_mntns: u32,
    exe: &str,
    was_runtime: bool,
) -> bool {
    host_mntns.is_some_and(|host| host == exec_mntns) && (was_runtime || is_runtime_executable(exe))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: u32 = 4026531840;
    const CONTAINER: u32 = 4026532300;

    #[test]
    fn only_a_runtime_binary_executed_on_the_host_is_the_runtime() {
        let host = Some(HOST);
        assert!(exec_is_runtime(host, HOST, "/usr/sbin/runc", false));
        assert!(exec_is_runtime(
            host,
            HOST,
            "/usr/bin/containerd-shim-runc-v2",
            false
        ));
        // runc init re-executing its memfd copy on the host.
        assert!(exec_is_runtime(
            host,
            HOST,
            "/memfd:runc_cloned:/proc/self/exe",
            true
        ));
        // A host program that is not a runtime.
        assert!(!exec_is_runtime(host, HOST, "/usr/sbin/sshd", false));
        // Anything executed inside a container, whatever it is called or was before.
        assert!(!exec_is_runtime(host, CONTAINER, "/usr/sbin/runc", false));
        assert!(!exec_is_runtime(
            host,
            CONTAINER,
            "/tmp/containerd-shim-runc-v2",
            true
        ));
        assert!(!exec_is_runtime(host, CONTAINER, "/bin/sh", true));
        // The host's namespace unknown: nothing is exempt.
        assert!(!exec_is_runtime(None, HOST, "/usr/sbin/runc", true));
    }

    #[test]
    fn names_of_runtime_binaries() {
        assert!(is_runtime_executable("/usr/sbin/runc"));
        assert!(is_runtime_executable("/usr/bin/crun"));
        assert!(is_runtime_executable("/usr/bin/containerd-shim-runc-v2"));
        assert!(!is_runtime_executable("/usr/bin/habitd"));
        assert!(!is_runtime_executable("/bin/sh"));
    }

    #[test]
    fn our_own_mount_namespace_is_read_from_procfs() {
        let proc_root = Path::new("/proc");
        let ours = namespace_inode(proc_root, std::process::id(), "mnt");
        assert!(ours.is_some_and(|n| n > 0));
        assert_eq!(namespace_inode(proc_root, u32::MAX, "mnt"), None);
        // Run on the host, habitd is in the host's mount namespace.
        assert_eq!(host_mount_namespace(proc_root), ours);
    }
}
