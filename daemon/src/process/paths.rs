//! Naming the file of an exec/open/chmod/file-change event by an absolute path: relative paths
//! are joined to the directory the kernel sent (or, racily, the process's cwd/dirfd in /proc),
//! and self re-execs through `/proc/self/exe` or an fd take the kernel's dentry path.

use std::path::Path;

use habit_probes::{Event, EventBody, FileOp};

const AT_FDCWD: i32 = -100;

/// The path of an exec/open/chmod event made absolute: relative paths are resolved against the
/// process's working directory or the directory fd, read from /proc while it still exists.
/// For a file change: its first path (rename's and link's old name, the file of the one-path
/// operations, the fd's file of ftruncate/fchown/futimens); a symlink's target is returned as
/// the process gave it (it is a string stored in the link, not a file resolved now).
pub fn absolute_path(ev: &Event) -> Option<String> {
    let (path, dirfd, base_dir) = match &ev.body {
        EventBody::FileChange(c) if c.op == FileOp::Symlink => return Some(c.path.clone()),
        EventBody::FileChange(c) => (c.path.as_str(), c.dirfd, c.base_dir.as_str()),
        EventBody::Exec { filename, .. } => (filename.as_str(), AT_FDCWD, ""),
        EventBody::Open {
            path,
            dirfd,
            base_dir,
            ..
        }
        | EventBody::Chmod {
            path,
            dirfd,
            base_dir,
            ..
        } => (path.as_str(), *dirfd, base_dir.as_str()),
        _ => return None,
    };
    let tgid = ev.header.tgid;
    if let EventBody::Exec { exe_path, .. } = &ev.body
        && (is_self_exe(path) || !path.starts_with('/'))
        && !exe_path.is_empty()
    {
        // busybox and friends re-exec themselves through /proc/self/exe (or an fd): the
        // kernel's dentry path names the real binary.
        return Some(exe_path.clone());
    }
    resolve(tgid, path, dirfd, base_dir)
}

/// The second path of a rename, link or symlink (the new name) made absolute; `None` for
/// other events.
pub fn second_path(ev: &Event) -> Option<String> {
    match &ev.body {
        EventBody::FileChange(c) if c.op.has_two_paths() => {
            resolve(ev.header.tgid, &c.path2, c.dirfd2, &c.base_dir2)
        }
        _ => None,
    }
}

/// `path` made absolute and without `.` and `..`: as it is when absolute, else joined to `base_dir` (what the kernel
/// read from the dentries) or, racily, to the cwd or `dirfd` of process `tgid` in /proc.
fn resolve(tgid: u32, path: &str, dirfd: i32, base_dir: &str) -> Option<String> {
    if path.starts_with('/') {
        // `/www/../../etc/passwd` is /etc/passwd (as Falco's fd.name has it); the path as
        // passed stays in the event (fd.nameraw).
        return Some(normalize(path));
    }
    // Relative: the kernel sent the base directory; /proc is a racy fallback (the process
    // may be gone by now).
    let dir = if !base_dir.is_empty() {
        std::path::PathBuf::from(base_dir)
    } else if dirfd == AT_FDCWD {
        std::fs::read_link(crate::host::proc().join(format!("{tgid}/cwd"))).ok()?
    } else {
        std::fs::read_link(crate::host::proc().join(format!("{tgid}/fd/{dirfd}"))).ok()?
    };
    let joined = if path.is_empty() {
        dir
    } else {
        dir.join(Path::new(path))
    };
    Some(normalize(&joined.to_string_lossy()))
}

/// `/proc/self/exe`, `/proc/<pid>/exe`, `/dev/fd/<n>` or `/proc/<self|pid>/fd/<n>`: an exec
/// that names no real path (self re-exec, fexecve of a memfd or an open file).
fn is_self_exe(path: &str) -> bool {
    if path.starts_with("/dev/fd/") {
        return true;
    }
    let Some(rest) = path.strip_prefix("/proc/") else {
        return false;
    };
    let Some((who, what)) = rest.split_once('/') else {
        return false;
    };
    let who_ok = who == "self" || (!who.is_empty() && who.bytes().all(|b| b.is_ascii_digit()));
    who_ok && (what == "exe" || what.starts_with("fd/"))
}

/// Removes `.` and `..` components lexically (the kernel already resolved them on open).
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use habit_probes::{Event, EventBody, FileChange, FileOp, Header};

    fn change(op: FileOp, path: &str, base_dir: &str, path2: &str, base_dir2: &str) -> Event {
        Event {
            header: Header {
                ts_boot_ns: 0,
                cpu: 0,
                pid: u32::MAX,
                tgid: u32::MAX,
                ppid: 0,
                uid: 0,
                gid: 0,
                mntns: 0,
                cgroup_id: 1,
                comm: "mv".into(),
            },
            body: EventBody::FileChange(FileChange {
                op,
                syscall: 316,
                path: path.into(),
                dirfd: -100,
                base_dir: base_dir.into(),
                path2: path2.into(),
                dirfd2: -100,
                base_dir2: base_dir2.into(),
                arg: 0,
            }),
        }
    }

    #[test]
    fn file_changes_resolve_both_paths() {
        let ev = change(FileOp::Rename, "passwd.new", "/tmp", "passwd", "/etc");
        assert_eq!(
            super::absolute_path(&ev).as_deref(),
            Some("/tmp/passwd.new")
        );
        assert_eq!(super::second_path(&ev).as_deref(), Some("/etc/passwd"));
        // A symlink's target is kept as given; its new link is resolved.
        let ev = change(FileOp::Symlink, "../etc/shadow", "", "s", "/tmp");
        assert_eq!(super::absolute_path(&ev).as_deref(), Some("../etc/shadow"));
        assert_eq!(super::second_path(&ev).as_deref(), Some("/tmp/s"));
        // ftruncate: no path, the base is the fd's file itself.
        let ev = change(FileOp::Truncate, "", "/var/log/app.log", "", "");
        assert_eq!(
            super::absolute_path(&ev).as_deref(),
            Some("/var/log/app.log")
        );
        assert_eq!(super::second_path(&ev), None);
    }

    #[test]
    fn recognises_self_exec_paths() {
        assert!(super::is_self_exe("/proc/self/exe"));
        assert!(super::is_self_exe("/proc/42/exe"));
        assert!(super::is_self_exe("/dev/fd/3"));
        assert!(super::is_self_exe("/proc/self/fd/3"));
        assert!(super::is_self_exe("/proc/12/fd/4"));
        assert!(!super::is_self_exe("/proc/x/exe"));
        assert!(!super::is_self_exe("/bin/sh"));
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(super::normalize("/a/./b/../c"), "/a/c");
        assert_eq!(super::normalize("/../x"), "/x");
        assert_eq!(super::normalize("/"), "/");
    }
}
