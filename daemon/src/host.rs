//! Where habitd sees the host: its procfs (`/proc` on a host; in a container the host's
//! procfs mounted elsewhere, `[host] proc = "/host/proc"` in the Helm chart). Attribution,
//! the `/proc` seeding, listener seeding and path naming read processes through it, so that
//! they see the host's processes with the host's pids, as the probes do.
//!
//! Set once at start-up ([`set_proc`]); everything before or without it reads `/proc`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static PROC: OnceLock<PathBuf> = OnceLock::new();

/// Sets the host's procfs root (first call wins).
pub fn set_proc(path: &Path) {
    let _ = PROC.set(path.to_path_buf());
}

/// The host's procfs root.
pub fn proc() -> &'static Path {
    PROC.get().map_or(Path::new("/proc"), PathBuf::as_path)
}

/// This process's id as the host (and the probes' `bpf_get_current_pid_tgid`) see it: the
/// host procfs's `self` link resolves in that procfs's pid namespace. Inside a container with
/// its own pid namespace this differs from [`std::process::id`].
pub fn self_tgid() -> u32 {
    std::fs::read_link(proc().join("self"))
        .ok()
        .and_then(|link| link.to_str()?.parse().ok())
        .unwrap_or_else(std::process::id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_a_host_our_host_pid_is_our_pid() {
        assert_eq!(super::self_tgid(), std::process::id());
        assert_eq!(super::proc(), std::path::Path::new("/proc"));
    }
}
