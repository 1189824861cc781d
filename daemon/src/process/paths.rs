//! Naming the file of an exec/open/chmod event by an absolute path: relative paths are joined
//! to the directory the kernel sent (or, racily, the process's cwd/dirfd in /proc), and
//! self re-execs through `/proc/self/exe` or an fd take the kernel's dentry path.

use std::path::Path;

use habit_probes::{Event, EventBody};

/// The path of an exec/open/chmod event made absolute: relative paths are resolved against the
/// process's working directory or the directory fd, read from /proc while it still exists.
pub fn absolute_path(ev: &Event) -> Option<String> {
    const AT_FDCWD: i32 = -100;
    let (path, dirfd, base_dir) = match &ev.body {
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
    if path.starts_with('/') {
        return Some(path.to_string());
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
