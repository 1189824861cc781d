//! End-to-end tests of detection with the defaults a user runs (issue 11): a real habitd
//! (real probes, real sled store) learns a real container with the default false-alarm
//! target (`learning.false_alarm_rate = 0.01`) and the default scoring; only the clock is
//! faster (one-second learning intervals instead of one minute, so that a test converges in
//! well under a minute). A new program, a new listening port and a new outbound destination
//! must each alert on their own, without a rule. They need root, BTF and Docker and fail with
//! what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{ClientLoop, Container, Daemon, busybox_image};

/// The default settings but for the clock: 1-s intervals, about 20 of them of learning (the
/// default learning gives at least 30 one-minute ones). No `false_alarm_rate`: the default.
const DEFAULTS_FAST_CLOCK: &str = "[learning]\nmin = \"14s\"\nstable = \"8s\"\nmax = \"120s\"\n\
    interval = \"1s\"\ncheckpoint = \"300ms\"\n[probes]\ncounters_interval = \"1s\"\n";

const WAIT: Duration = Duration::from_secs(30);

/// The rule of alerts that anomalies raise alone.
const ANOMALY_RULE: &str = "habitd anomaly";

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A client fetching the index page every 200 ms: the workload's normal life.
fn web_client(ip: String) -> ClientLoop {
    ClientLoop::start(move || {
        if let Ok(mut s) = TcpStream::connect((ip.as_str(), 8080)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(s, "GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
        }
    })
}

/// Issue 11: in a learned busybox httpd, `docker exec -d <c> nc -l -p 39300` raised no alert
/// at all with the defaults (novelty scores could not reach the 0.99 threshold after a
/// normal learning); nor did a new outbound destination of a workload that never connected
/// out (an empty dimension). Each must now alert on its own.
#[test]
fn with_the_defaults_a_new_program_port_and_destination_alert_alone() {
    let _serial = serial();
    let daemon = Daemon::start(DEFAULTS_FAST_CLOCK);
    let image = busybox_image("detect-defaults");
    let key = "docker.io/habitd-e2e/busybox:detect-defaults";
    let c = Container::run(&image, &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]);
    let client = web_client(c.ip());

    let stable = daemon.wait_state(key, "stable", Duration::from_secs(90));
    assert_eq!(stable["partial"], false, "converged, not forced: {stable}");

    // Its normal life raises nothing.
    std::thread::sleep(Duration::from_secs(5));
    let quiet = common::alerts_of(&daemon, key);
    assert!(
        quiet.is_empty(),
        "learned behaviour raised alerts: {quiet:#?}"
    );

    // A bind shell's listener: a new program and a new listening port.
    let out = c.exec_with(&["-d"], &["/bin/nc", "-l", "-p", "39300"]);
    assert!(out.status.success(), "{out:?}");
    let port = daemon.wait_alert("the new listening port", key, WAIT, |a| {
        common::has_novel(a, "network", "39300")
    });
    eprintln!("listen alert: {port}");
    assert_eq!(port["rule"], ANOMALY_RULE, "novelty alone alerts: {port:#}");
    assert!(
        port["habitd"]["anomaly_score"].as_f64().unwrap() >= 0.99,
        "{port:#}"
    );
    let exec = daemon.wait_alert("the new program", key, WAIT, |a| {
        common::has_novel(a, "exec", "/bin/nc")
    });
    eprintln!("exec alert: {exec}");

    // A program no rule knows, connecting to a destination the workload never had (its
    // outbound dimension is empty): both alert alone.
    let _ = c.exec(&["/bin/actions", "connect", "127.0.0.1", "9"]);
    let dest = daemon.wait_alert("the new destination", key, WAIT, |a| {
        common::has_novel(a, "network", "127.0.0.1 9/tcp")
    });
    eprintln!("outbound alert: {dest}");
    assert_eq!(dest["rule"], ANOMALY_RULE, "{dest:#}");
    let helper = daemon.wait_alert("the helper program", key, WAIT, |a| {
        common::has_novel(a, "exec", "/bin/actions")
    });
    assert_eq!(helper["rule"], ANOMALY_RULE, "{helper:#}");
    assert_eq!(helper["priority"], "Error", "{helper:#}");
    drop(client);
}
