//! End-to-end test of file integrity (issue 16) with a real habitd (real probes, real sled)
//! and a real container: each file change an intruder makes — a file renamed over
//! /etc/passwd, a log deleted, a hard link and a symlink to /etc/shadow, a log truncated, a
//! file re-owned, a timestamp set back with `touch -d` — is reported as its event
//! (`--print-events`, Falco's field names) and alerted by its default rule; and the changes the
//! workload made all along while it learned (a log rotated, a configuration file re-rendered
//! and renamed into place below /etc every second) raise nothing in detection: the
//! `file_change` dimension learned them and the baseline suppresses the rule hit.
//!
//! Needs root, BTF and Docker; fails, saying what to install, when one is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Container, Daemon, busybox_image};
use serde_json::Value;

/// Fast learning (1-s intervals) with the defaults otherwise, as in detect_e2e.
const FAST_CLOCK: &str = "[learning]\nmin = \"14s\"\nstable = \"8s\"\nmax = \"120s\"\n\
    interval = \"1s\"\ncheckpoint = \"300ms\"\n[probes]\ncounters_interval = \"1s\"\n";

const WAIT: Duration = Duration::from_secs(30);

/// What the workload does every second: appends to its log and rotates it, and re-renders
/// its configuration below /etc, renaming it into place (as confd-style entrypoints do).
const HABIT: &str = "mkdir -p /var/log/app; i=0; while true; do i=$((i+1)); \
    echo line $i >> /var/log/app/app.log; mv /var/log/app/app.log /var/log/app/app.log.1; \
    echo port=$i > /etc/app.conf.new; mv /etc/app.conf.new /etc/app.conf; sleep 1; done";

/// Runs `script` in the container with busybox's shell, asserting that it succeeded.
fn run(c: &Container, script: &str) {
    let out = c.exec(&["/bin/busybox", "sh", "-c", script]);
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for the alert of `rule` about this container whose `fd.name` is `file`.
fn wait_rule_alert(d: &Daemon, key: &str, rule: &str, file: &str) -> Value {
    let a = d.wait_alert(&format!("{rule} on {file}"), key, WAIT, |a| {
        a["rule"] == rule && a["output_fields"]["fd.name"] == file
    });
    assert_eq!(a["habitd"]["suppressed"], false, "{a:#}");
    assert!(
        common::has_novel(&a, "file", file),
        "the alert names the novel file change: {a:#}"
    );
    a
}

#[test]
fn every_file_change_is_an_event_and_an_alert_and_a_learned_one_is_quiet() {
    let started = Instant::now();
    let daemon = Daemon::start(FAST_CLOCK);
    let image = busybox_image("file-integrity");
    let key = "docker.io/habitd-e2e/busybox:file-integrity";
    let c = Container::run(&image, &["/bin/busybox", "sh", "-c", HABIT]);
    let id12 = c.id[..12].to_string();

    // The habitual rotation is seen as a rename with both paths, made absolute.
    let rotation = daemon.wait_event("the log rotation", WAIT, |f| {
        f["container.id"] == id12.as_str()
            && f["evt.arg.oldpath"] == "/var/log/app/app.log"
            && f["evt.arg.newpath"] == "/var/log/app/app.log.1"
    });
    assert!(
        matches!(
            rotation["evt.type"].as_str(),
            Some("rename" | "renameat" | "renameat2")
        ),
        "{rotation:#}"
    );

    let stable = daemon.wait_state(key, "stable", Duration::from_secs(120));
    eprintln!(
        "stable after {:?}: {stable}",
        started.elapsed().as_secs_f32()
    );
    let baseline = daemon
        .get(&format!("/api/v1/baselines/{key}"))
        .map(|(_, body)| body)
        .unwrap_or_default();
    if !baseline.contains("rename /etc/app.conf.new -> /etc/app.conf") {
        eprintln!(
            "baseline without the configuration's rename; habitd log:\n{}",
            common::tail(&daemon.log(), 80)
        );
    }
    assert!(
        baseline.contains("rename /var/log/app/app.log -> /var/log/app/app.log.<num>"),
        "the rotation is learned, generalised: {}",
        common::tail(&baseline, 60)
    );
    assert!(
        baseline.contains("rename /etc/app.conf.new -> /etc/app.conf"),
        "the configuration's rename is learned (held, then habitual): {}",
        common::tail(&baseline, 60)
    );

    // Detection: the habit goes on and raises nothing; its rule hit on /etc is suppressed.
    let suppressed = "habitd_alerts_suppressed_total{rule=\"Critical file changed\"}";
    let deadline = Instant::now() + WAIT;
    while daemon.metric(suppressed) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the learned rename below /etc was never suppressed; log:\n{}",
            common::tail(&daemon.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    // (While it learned, its rule hits were alerted: a workload is not trusted before its
    // baseline exists.)
    let quiet: Vec<Value> = common::alerts_of(&daemon, key)
        .into_iter()
        .filter(|a| a["habitd"]["baseline_state"] != "learning")
        .collect();
    assert!(quiet.is_empty(), "learned file changes alerted: {quiet:#?}");

    // An intruder's changes, one after the other.
    run(
        &c,
        "echo 'root::0:0::/root:/bin/sh' > /tmp/passwd.new && mv /tmp/passwd.new /etc/passwd",
    );
    let ev = daemon.wait_event("the rename over /etc/passwd", WAIT, |f| {
        f["container.id"] == id12.as_str() && f["evt.arg.newpath"] == "/etc/passwd"
    });
    assert_eq!(ev["evt.arg.oldpath"], "/tmp/passwd.new", "{ev:#}");
    assert_eq!(ev["fd.name"], "/etc/passwd", "{ev:#}");
    wait_rule_alert(&daemon, key, "Critical file changed", "/etc/passwd");

    run(
        &c,
        "echo 'Accepted password for root' > /var/log/auth.log && rm /var/log/auth.log",
    );
    let ev = daemon.wait_event("the deleted log", WAIT, |f| {
        f["container.id"] == id12.as_str()
            && matches!(f["evt.type"].as_str(), Some("unlink" | "unlinkat"))
            && f["fd.name"] == "/var/log/auth.log"
    });
    eprintln!("unlink: {ev}");
    wait_rule_alert(
        &daemon,
        key,
        "Log file deleted or truncated",
        "/var/log/auth.log",
    );

    run(
        &c,
        "echo 'root:*:19000::::::' > /etc/shadow && ln /etc/shadow /tmp/h && ln -s /etc/shadow /tmp/s",
    );
    let ev = daemon.wait_event("the hard link to /etc/shadow", WAIT, |f| {
        f["container.id"] == id12.as_str()
            && matches!(f["evt.type"].as_str(), Some("link" | "linkat"))
            && f["evt.arg.oldpath"] == "/etc/shadow"
    });
    assert_eq!(ev["evt.arg.newpath"], "/tmp/h", "{ev:#}");
    let ev = daemon.wait_event("the symlink to /etc/shadow", WAIT, |f| {
        f["container.id"] == id12.as_str()
            && matches!(f["evt.type"].as_str(), Some("symlink" | "symlinkat"))
            && f["evt.arg.target"] == "/etc/shadow"
    });
    assert_eq!(ev["evt.arg.linkpath"], "/tmp/s", "{ev:#}");
    wait_rule_alert(&daemon, key, "Link to sensitive file", "/tmp/h");
    wait_rule_alert(&daemon, key, "Link to sensitive file", "/tmp/s");

    run(
        &c,
        "echo 'GET /admin' > /var/log/app/access.log && truncate -s 0 /var/log/app/access.log",
    );
    let ev = daemon.wait_event("the truncated log", WAIT, |f| {
        f["container.id"] == id12.as_str()
            && matches!(f["evt.type"].as_str(), Some("truncate" | "ftruncate"))
            && f["fd.name"] == "/var/log/app/access.log"
    });
    eprintln!("truncate: {ev}");
    wait_rule_alert(
        &daemon,
        key,
        "Log file deleted or truncated",
        "/var/log/app/access.log",
    );

    run(&c, "chown 1000:1000 /etc/passwd");
    let ev = daemon.wait_event("the chown of /etc/passwd", WAIT, |f| {
        f["container.id"] == id12.as_str()
            && f["evt.type"].as_str().is_some_and(|t| t.contains("chown"))
            && f["fd.name"] == "/etc/passwd"
    });
    assert_eq!(ev["evt.arg.uid"], 1000, "{ev:#}");
    assert_eq!(ev["evt.arg.gid"], 1000, "{ev:#}");
    let chown = daemon.wait_alert("the chown alert", key, WAIT, |a| {
        a["rule"] == "Critical file changed"
            && a["output_fields"]["evt.type"]
                .as_str()
                .is_some_and(|t| t.contains("chown"))
    });
    assert!(
        common::has_novel(&chown, "file", "chown /etc/passwd"),
        "{chown:#}"
    );

    run(&c, "touch -d '2019-01-01 00:00:00' /bin/busybox");
    let ev = daemon.wait_event("the timestomped binary", WAIT, |f| {
        f["container.id"] == id12.as_str()
            && f["evt.type"] == "utimensat"
            && f["fd.name"] == "/bin/busybox"
    });
    eprintln!("utimensat: {ev}");
    let touch = daemon.wait_alert("the timestomp alert", key, WAIT, |a| {
        a["rule"] == "Critical file changed" && a["output_fields"]["evt.type"] == "utimensat"
    });
    assert!(
        common::has_novel(&touch, "file", "utimes /bin/busybox"),
        "{touch:#}"
    );
    // A plain `touch` (the time set to now) is no change worth a record.
    run(&c, "touch /etc/app.conf.keep");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !daemon.events().iter().any(|e| {
            let f = &e["output_fields"];
            f["container.id"] == id12.as_str()
                && f["evt.type"] == "utimensat"
                && f["fd.name"] == "/etc/app.conf.keep"
        }),
        "touch without -d reported as a timestamp change"
    );
    eprintln!("took {:?}", started.elapsed());
}

/// Like opens, file changes are de-duplicated in the kernel per workload, operation, paths and
/// base directories within an interval (10 minutes here): 300 renames of one relative name to
/// another in /tmp give one event, and the same relative names renamed in another directory
/// are reported too (the key holds the directory a relative path is resolved from).
#[test]
fn repeated_changes_are_sent_once_per_interval_and_directory() {
    const RENAMES: u32 = 300;
    let daemon =
        Daemon::start("[learning]\ninterval = \"10m\"\n[probes]\ncounters_interval = \"1s\"\n");
    let image = busybox_image("file-changes-dedup");
    let script = format!(
        "cd /tmp; i=0; while [ $i -lt {RENAMES} ]; do echo x > a; mv a b; i=$((i+1)); done; \
         mkdir -p /tmp/d2; cd /tmp/d2; echo x > a; mv a b; echo done; sleep 60"
    );
    let c = Container::run(&image, &["/bin/busybox", "sh", "-c", &script]);
    let id12 = c.id[..12].to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let logs = std::process::Command::new("docker")
            .args(["logs", &c.id])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&logs.stdout).contains("done") {
            break;
        }
        assert!(Instant::now() < deadline, "the rename loop did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let renamed = |dir: &'static str| {
        let id12 = id12.clone();
        move |f: &Value| {
            f["container.id"] == id12.as_str()
                && f["evt.arg.oldpath"] == format!("{dir}/a").as_str()
                && f["evt.arg.newpath"] == format!("{dir}/b").as_str()
        }
    };
    daemon.wait_event("the rename in /tmp/d2", WAIT, renamed("/tmp/d2"));
    daemon.wait_event("the rename in /tmp", WAIT, renamed("/tmp"));
    std::thread::sleep(Duration::from_secs(2));
    let count = |dir: &'static str| {
        let pred = renamed(dir);
        daemon
            .events()
            .iter()
            .filter(|e| pred(&e["output_fields"]))
            .count()
    };
    assert_eq!(
        count("/tmp"),
        1,
        "{RENAMES} renames of one pair in one interval must give one event"
    );
    assert_eq!(count("/tmp/d2"), 1, "the same names in another directory");
}
