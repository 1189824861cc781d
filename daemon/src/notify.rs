//! systemd readiness (sd_notify): under a `Type=notify` unit, `READY=1` is sent to
//! `$NOTIFY_SOCKET` once the probes are attached and the HTTP listener is up, so that
//! `systemctl start habitd` returns when habitd watches. Without the variable (not started by
//! systemd) nothing is sent.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Tells systemd that habitd is ready; `Ok(false)` when not started by systemd.
pub fn ready() -> io::Result<bool> {
    notify(
        std::env::var_os("NOTIFY_SOCKET").as_deref(),
        "READY=1\nSTATUS=Probes attached; serving /healthz and /metrics\n",
    )
}

fn notify(socket_path: Option<&std::ffi::OsStr>, message: &str) -> io::Result<bool> {
    let Some(path) = socket_path else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    match path.as_bytes().strip_prefix(b"@") {
        // An abstract socket (`@name`).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(message.as_bytes(), path)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_sent_to_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        assert!(notify(Some(path.as_os_str()), "READY=1\n").unwrap());
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("READY=1\n"), "{text}");
        assert!(
            !notify(None, "READY=1\n").unwrap(),
            "not under systemd: nothing is sent"
        );
    }
}
