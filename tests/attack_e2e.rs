//! End-to-end tests of an attacker's workload (issue 15): a real habitd, real containers.
//!
//! Evasion: nothing a container's unprivileged process can set (its comm, argv, executable's
//! name, environment, its container's name) makes habitd take it for the container runtime,
//! whose own work is not learned or scored. They need root, BTF and Docker and fail with what
//! to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ClientLoop, Container, Daemon, busybox_image};
use serde_json::Value;

/// Learning windows in seconds, so that a test converges in well under a minute.
const FAST_LEARNING: &str = "[learning]\nmin = \"3s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.2\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

const WAIT: Duration = Duration::from_secs(30);

/// These tests load probes and run containers: one at a time keeps their timing honest on a
/// two-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The output field `field` of alert `a` as a string ("" when absent).
fn field<'a>(a: &'a Value, field: &str) -> &'a str {
    a["output_fields"][field].as_str().unwrap_or_default()
}

#[test]
fn a_workload_named_like_the_runtime_or_habitd_gets_no_exemption() {
    common::require_root_and_bpf();
    common::require_docker();
    let _serial = serial();
    let daemon = Daemon::start(FAST_LEARNING);
    let tag = "evasion";
    let image = busybox_image(tag);
    let key = format!("docker.io/habitd-e2e/busybox:{tag}");
    // Even the container's name looks like the runtime's.
    let name = format!("runc-init-{}", std::process::id());
    let c = Container::run_with(
        &["--name", &name],
        &image,
        &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    let ip = c.ip();
    let client = ClientLoop::start(move || {
        let _ = common::web_get(&ip, "/index.html");
    });
    daemon.wait_state(&key, "stable", Duration::from_secs(60));

    // Each disguise connects to a port of its own: a novel outbound destination that alerts
    // on its own, so each alert proves that disguise was scored. The environment runc's init
    // reads is set on all of them.
    let script = "cp /bin/actions /tmp/runc && cp /bin/actions /tmp/containerd-shim-runc-v2 \
        && cp /bin/actions /tmp/habitd \
        && /bin/actions rename 'runc:[2:INIT]' 127.0.0.1 9101; \
        /tmp/runc connect 127.0.0.1 9102; \
        /tmp/containerd-shim-runc-v2 connect 127.0.0.1 9103; \
        /tmp/habitd connect 127.0.0.1 9104; \
        /bin/actions reexec 'runc:[1:CHILD]' 127.0.0.1 9105; \
        /bin/actions rename habitd 127.0.0.1 9106; true";
    let out = c.exec_with(
        &[
            "-e",
            "_LIBCONTAINER_INITPIPE=3",
            "-e",
            "_LIBCONTAINER_STATEDIR=/run/runc",
        ],
        &["/bin/sh", "-c", script],
    );
    assert!(
        out.status.success(),
        "the disguises did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // (port, what it calls itself, executable) of each disguise.
    let disguises = [
        (9101, "runc:[2:INIT]", "/bin/actions"),
        (9102, "runc", "/tmp/runc"),
        (9103, "containerd-shim", "/tmp/containerd-shim-runc-v2"),
        (9104, "habitd", "/tmp/habitd"),
        (9105, "runc:[1:CHILD]", "/bin/actions"),
        (9106, "habitd", "/bin/actions"),
    ];
    for (port, name, exe) in disguises {
        let item = format!("127.0.0.1 {port}/tcp");
        let a = daemon.wait_alert(&format!("{name} ({exe})"), &key, WAIT, |a| {
            common::has_novel(a, "network", &item)
        });
        assert_eq!(field(&a, "proc.exepath"), exe, "{a:#}");
        assert_eq!(a["habitd"]["baseline_state"], "stable", "{a:#}");
    }
    // The copies' executions are novel executables of the workload, too.
    for exe in ["/tmp/runc", "/tmp/containerd-shim-runc-v2", "/tmp/habitd"] {
        daemon.wait_alert(&format!("exec of {exe}"), &key, WAIT, |a| {
            common::has_novel(a, "exec", exe)
        });
    }
    drop(client);
}
