//! End-to-end tests of learning and detection: a real habitd (real probes, real sled store,
//! real HTTP API) learns a real container workload with second-scale windows, then detects
//! what breaks its habit. They need root, BTF and Docker and fail with what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ClientLoop, Container, Daemon, TOKEN, busybox_image, http_request};
use serde_json::Value;

/// Learning windows in seconds, so that a test converges in well under a minute.
const FAST_LEARNING: &str = "[learning]\nmin = \"3s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.2\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

const WAIT: Duration = Duration::from_secs(30);

/// `learning.checkpoint` of [`FAST_LEARNING`]: what a kill -9 may lose at most.
const CHECKPOINT: Duration = Duration::from_millis(300);

/// These tests load probes and run containers: one at a time keeps their timing honest on a
/// two-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The workload's normal life: a client fetching the index page every 200 ms.
fn web_client(ip: String) -> ClientLoop {
    ClientLoop::start(move || {
        let _ = common::web_get(&ip, "/index.html");
    })
}

/// A busybox web server container of a fresh image tag (so each test has its own workload).
fn web_server(tag: &str) -> (String, Container) {
    let image = busybox_image(tag);
    let c = Container::run(&image, &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]);
    (format!("docker.io/habitd-e2e/busybox:{tag}"), c)
}

#[test]
fn learns_until_converged_then_alerts_only_on_novel_behaviour() {
    let _serial = serial();
    let daemon = Daemon::start(FAST_LEARNING);
    let (key, c) = web_server("learn");
    let ip = c.ip();
    let client = web_client(ip.clone());

    let learning = daemon.wait_state(&key, "learning", WAIT);
    assert!(learning["learning"]["progress"].as_f64().unwrap() < 1.0);
    let stable = daemon.wait_state(&key, "stable", Duration::from_secs(60));
    assert_eq!(stable["partial"], false, "converged, not forced: {stable}");
    assert!(stable["items"].as_u64().unwrap() > 0, "{stable}");
    assert!(
        stable["profile_sizes"]["exec"].as_u64().unwrap() >= 1,
        "{stable}"
    );
    assert!(
        daemon.metric("habitd_workloads{state=\"stable\"}") >= 1.0,
        "stable workloads are counted in /metrics"
    );

    // Repeating the learned behaviour raises nothing.
    std::thread::sleep(Duration::from_secs(4));
    let quiet = common::alerts_of(&daemon, &key);
    assert!(
        quiet.is_empty(),
        "learned behaviour raised alerts: {quiet:#?}"
    );

    // A shell spawned in the container.
    c.exec(&["/bin/sh", "-c", "/bin/true"]);
    let a = daemon.wait_alert("a shell", &key, WAIT, |a| {
        common::has_novel(a, "exec", "/bin/sh")
    });
    // The built-in rule fires too: fused with the novelty, one escalated rule alert.
    assert_eq!(a["rule"], "Shell spawned in container", "{a:#}");
    assert_eq!(
        a["priority"], "Warning",
        "Notice escalated one level: {a:#}"
    );
    assert_eq!(a["habitd"]["baseline_state"], "stable");
    assert!(a["habitd"]["anomaly_score"].as_f64().unwrap() > 0.0);
    assert!(a["output"].as_str().unwrap().contains("/bin/sh"), "{a}");
    assert_eq!(a["output_fields"]["container.id"], &c.id[..12]);

    // The server reading a file it never read.
    assert!(
        common::web_get(&ip, "/secret.html")
            .unwrap()
            .contains("secret")
    );
    daemon.wait_alert("a file never read", &key, WAIT, |a| {
        common::has_novel(a, "file", "/www/secret.html")
    });

    // A connection to a new destination.
    c.exec(&["/bin/actions", "connect", "127.0.0.1", "9"]);
    daemon.wait_alert("a new destination", &key, WAIT, |a| {
        common::has_novel(a, "network", "127.0.0.1")
    });

    // A new listening port.
    c.exec(&["/bin/actions", "listen", "4444", "1"]);
    daemon.wait_alert("a new listening port", &key, WAIT, |a| {
        common::has_novel(a, "network", "4444")
    });

    // ptrace and setuid.
    c.exec(&["/bin/actions", "ptrace"]);
    // Privileged operations are reported under the `syscall` dimension (DESIGN.md's list).
    daemon.wait_alert("ptrace", &key, WAIT, |a| {
        common::has_novel(a, "syscall", "ptrace")
    });
    // (setuid is not a test of novelty here: runc itself calls it in the container's cgroup
    // whenever a process starts in it, so it is part of every container's baseline.)
    drop(client);
}

#[test]
fn a_burst_of_connects_raises_a_rate_alert_naming_the_feature() {
    let _serial = serial();
    // Long enough learning for the rate model (at least 10 one-second intervals).
    let config = FAST_LEARNING.replace("min = \"3s\"", "min = \"14s\"");
    let daemon = Daemon::start(&config);
    let (key, c) = web_server("rates");
    let client = web_client(c.ip());
    daemon.wait_state(&key, "stable", Duration::from_secs(60));
    let is_rate = |a: &Value| {
        a["habitd"]["novel"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x["dimension"] == "rate"))
    };

    // The learned steady load scores within the baseline: no rate alert.
    std::thread::sleep(Duration::from_secs(3));
    let quiet: Vec<Value> = common::alerts_of(&daemon, &key)
        .into_iter()
        .filter(|a| is_rate(a))
        .collect();
    assert!(
        quiet.is_empty(),
        "steady intervals raised rate alerts: {quiet:#?}\nhabitd log tail:\n{}",
        common::tail(&daemon.log(), 40)
    );

    // 300 execs and 300 connects in a few seconds, from none while learning.
    c.exec(&[
        "/bin/sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do /bin/actions connect 127.0.0.1 8080; i=$((i+1)); done",
    ]);
    // The burst's first interval may hold only its syscall counts (runc's `exec` set-up, and
    // events still in the ring buffer when the counters tick: they count in the next
    // interval), so it can be named by the syscall rate; an interval of the burst names the
    // connects or execs.
    let names_burst = |a: &Value| {
        let item = a["habitd"]["novel"][0]["item"].as_str().unwrap_or_default();
        is_rate(a)
            && (item.starts_with("connect rate") || item.starts_with("exec rate"))
            && item.contains("/s")
            && item.contains("baseline")
    };
    let a = daemon.wait_alert(
        "a rate anomaly naming the connect or exec rate with its normal and observed values",
        &key,
        WAIT,
        names_burst,
    );
    eprintln!("rate alert: {}", a["output"]);
    assert!(a["output"].as_str().unwrap().contains("baseline"), "{a:#}");
    drop(client);
}

#[test]
fn kill_9_loses_no_baseline_and_learning_resumes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Long enough learning that the first kill lands while learning.
    let slow = FAST_LEARNING.replace("min = \"3s\"", "min = \"12s\"");
    let (key, c) = web_server("restart");
    let client = web_client(c.ip());

    let mut first = Daemon::start_in(dir.path(), &slow);
    let before = first.wait_state(&key, "learning", WAIT);
    std::thread::sleep(Duration::from_secs(2));
    let before = first.workload(&key).unwrap_or(before);
    assert!(before["items"].as_u64().unwrap() > 0, "{before}");
    // What was learned at `before` is saved by the next checkpoint (every CHECKPOINT, on the
    // engine's tick): past a few of them, a kill -9 may lose only what came after.
    std::thread::sleep(CHECKPOINT * 3 + Duration::from_secs(1));
    let last = first.workload(&key).unwrap();
    assert_eq!(
        last["state"], "learning",
        "still learning at the kill: {last}"
    );
    first.kill9();

    let mut second = Daemon::start_in(dir.path(), &slow);
    let resumed = second
        .workload(&key)
        .expect("the workload survived kill -9");
    assert_eq!(resumed["state"], "learning", "{resumed}");
    assert_eq!(
        resumed["learning"]["started_at"], before["learning"]["started_at"],
        "learning continues where it was, not from scratch"
    );
    // Every item learned before the last checkpoint survived: as many items in total and in
    // every dimension as at `before`.
    eprintln!(
        "kill -9 during learning: {} items learned 3 checkpoints ({} ms each) and more before \
         the kill ({} at the kill), {} after the restart; per dimension before {} / after {}",
        before["items"],
        CHECKPOINT.as_millis(),
        last["items"],
        resumed["items"],
        before["profile_sizes"],
        resumed["profile_sizes"]
    );
    assert!(
        resumed["items"].as_u64().unwrap() >= before["items"].as_u64().unwrap(),
        "items learned before the last checkpoint were lost: before {before}\nafter {resumed}"
    );
    let sizes = before["profile_sizes"].as_object().unwrap();
    assert!(!sizes.is_empty(), "{before}");
    for (dimension, n) in sizes {
        let after = resumed["profile_sizes"][dimension].as_u64().unwrap_or(0);
        assert!(
            after >= n.as_u64().unwrap(),
            "{dimension}: {n} items learned before the last checkpoint, {after} after kill -9 \
             (before {before}\nafter {resumed})"
        );
    }
    second.wait_state(&key, "stable", Duration::from_secs(60));
    let baseline_before = second
        .get(&format!("/api/v1/baselines/{}", key.replace('/', "%2F")))
        .unwrap();
    assert_eq!(baseline_before.0, 200);
    second.kill9();

    let third = Daemon::start_in(dir.path(), &slow);
    let w = third
        .workload(&key)
        .expect("the stable workload survived kill -9");
    assert_eq!(w["state"], "stable", "detection resumes at once: {w}");
    let baseline_after = third
        .get(&format!("/api/v1/baselines/{}", key.replace('/', "%2F")))
        .unwrap();
    assert_eq!(baseline_after, baseline_before, "the baseline is unchanged");
    c.exec(&["/bin/sh", "-c", "/bin/true"]);
    third.wait_alert("a shell after restart", &key, WAIT, |a| {
        common::has_novel(a, "exec", "/bin/sh")
    });
    drop(client);
}

#[test]
fn baseline_import_is_validated_and_authenticated() {
    let _serial = serial();
    let daemon = Daemon::start(FAST_LEARNING);
    let (key, c) = web_server("import");
    let client = web_client(c.ip());
    daemon.wait_state(&key, "stable", Duration::from_secs(60));
    drop(client);
    let path = format!("/api/v1/baselines/{}", key.replace('/', "%2F"));
    let (status, original) = daemon.get(&path).unwrap();
    assert_eq!(status, 200);
    let auth = format!("Bearer {TOKEN}");

    // Unauthenticated: 401, whatever the body.
    let (status, body) = http_request(daemon.port, "PUT", &path, &[], &original).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, _) = http_request(
        daemon.port,
        "PUT",
        &path,
        &[("Authorization", "Bearer wrong")],
        &original,
    )
    .unwrap();
    assert_eq!(status, 401);

    // Malformed: a clear 4xx naming the problem, and the store unchanged.
    let truncated = &original[..original.len() / 2];
    let (status, body) = http_request(
        daemon.port,
        "PUT",
        &path,
        &[("Authorization", &auth)],
        truncated,
    )
    .unwrap();
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(
        body.contains("line"),
        "the error names where the file is broken: {body}"
    );
    let mut doc: Value = serde_json::from_str(&original).unwrap();
    doc["version"] = 99.into();
    let wrong_version = doc.to_string();
    let (status, body) = http_request(
        daemon.port,
        "PUT",
        &path,
        &[("Authorization", &auth)],
        &wrong_version,
    )
    .unwrap();
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(body.contains("version"), "{body}");
    assert_eq!(
        daemon.get(&path).unwrap().1,
        original,
        "the store is unchanged"
    );

    // The untouched file imports fine.
    let (status, body) = http_request(
        daemon.port,
        "PUT",
        &path,
        &[("Authorization", &auth)],
        &original,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");

    // Mode changes need the token too, and work with it.
    let mode = format!("/api/v1/workloads/{}/mode", key.replace('/', "%2F"));
    let (status, _) =
        http_request(daemon.port, "POST", &mode, &[], r#"{"mode":"relearn"}"#).unwrap();
    assert_eq!(status, 401);
    let (status, body) = http_request(
        daemon.port,
        "POST",
        &mode,
        &[("Authorization", &auth)],
        r#"{"mode":"relearn"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let w: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(w["state"], "learning");
}

#[test]
fn baselines_delivered_in_a_directory_detect_from_the_first_event() {
    let _serial = serial();
    // A baseline learned on "another node": this daemon learns it, the test exports it.
    let key;
    let baseline = {
        let learner = Daemon::start(FAST_LEARNING);
        let (k, c) = web_server("delivered");
        key = k;
        let client = web_client(c.ip());
        learner.wait_state(&key, "stable", Duration::from_secs(60));
        drop(client);
        drop(c);
        let (status, body) = learner
            .get(&format!("/api/v1/baselines/{}", key.replace('/', "%2F")))
            .unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };

    // The deployment delivers it in a directory, beside a broken file.
    let dir = tempfile::tempdir().unwrap();
    let baselines = dir.path().join("baselines");
    std::fs::create_dir(&baselines).unwrap();
    std::fs::write(baselines.join("web.json"), &baseline).unwrap();
    let mut broken: Value = serde_json::from_str(&baseline).unwrap();
    broken["learning"] = "yesterday".into();
    std::fs::write(baselines.join("broken.json"), broken.to_string()).unwrap();
    let config = format!(
        "baselines_dir = \"{}\"\n{FAST_LEARNING}",
        baselines.display()
    );
    let daemon = Daemon::start_in(dir.path(), &config);

    // Before its first container: detecting.
    let w = daemon
        .workload(&key)
        .expect("the delivered baseline's workload");
    assert_eq!(w["state"], "stable", "{w}");
    let log = daemon.log();
    assert!(
        log.contains("broken.json") && log.contains("`learning`"),
        "the refusal names the file and the field:\n{}",
        common::tail(&log, 20)
    );
    assert_eq!(
        daemon.metric("habitd_baseline_files_total{result=\"refused\"}"),
        1.0
    );
    assert_eq!(
        daemon.metric("habitd_baseline_files_total{result=\"imported\"}"),
        1.0
    );

    // Its container's learned life raises nothing; a shell does.
    let c = Container::run(
        &busybox_image("delivered"),
        &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    let client = web_client(c.ip());
    std::thread::sleep(Duration::from_secs(4));
    let quiet = common::alerts_of(&daemon, &key);
    assert!(quiet.is_empty(), "learned behaviour raised: {quiet:#?}");
    assert_eq!(daemon.workload(&key).unwrap()["state"], "stable");
    c.exec(&["/bin/sh", "-c", "/bin/true"]);
    daemon.wait_alert("a shell", &key, WAIT, |a| {
        common::has_novel(a, "exec", "/bin/sh")
    });
    drop(client);

    // A file added while running is imported (the directory is polled).
    let other = "docker.io/habitd-e2e/busybox:delivered-later";
    let mut later: Value = serde_json::from_str(&baseline).unwrap();
    later["workload"] = other.into();
    std::fs::write(baselines.join("later.json"), later.to_string()).unwrap();
    daemon.wait_state(other, "stable", Duration::from_secs(20));
    assert_eq!(
        daemon.metric("habitd_baseline_files_total{result=\"imported\"}"),
        2.0
    );
}
