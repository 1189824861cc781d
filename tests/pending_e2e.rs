//! End-to-end tests of a container's first events (its entrypoint's exec, its first opens),
//! which come before Docker has described it: they are held until it is, then learned under
//! the image, so that a restart or a replica of a learned workload raises nothing. Real probes,
//! real Docker, a real habitd; they need root, BTF and Docker and fail with what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ClientLoop, Container, Daemon, busybox_image};
use serde_json::Value;

const FAST_LEARNING: &str = "[learning]\nmin = \"3s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.2\ncheckpoint = \"300ms\"\n\
    [probes]\ncounters_interval = \"1s\"\n";

/// Generous: the test machines are shared and often loaded (load average 10+ on 2 cores).
const WAIT: Duration = Duration::from_secs(60);

/// The busybox web server behind a shell entrypoint, as in issue 10's report.
const ENTRYPOINT: [&str; 3] = ["/bin/sh", "-c", "/bin/httpd -f -p 8080 -h /www"];

fn ip_of(id: &str) -> Option<String> {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ])
        .output()
        .ok()?;
    let ip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!ip.is_empty()).then_some(ip)
}

fn get(ip: &str) -> Option<String> {
    let mut s = TcpStream::connect((ip, 8080)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Waits for the exec of the entrypoint shell of container `id` attributed to `key`.
fn wait_entrypoint(daemon: &Daemon, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(e) = daemon.events().into_iter().find(|e| {
            let f = &e["output_fields"];
            f["habitd.workload"] == key
                && f["container.id"] == id[..12]
                && f["evt.type"] == "execve"
                && f["proc.cmdline"]
                    .as_str()
                    .is_some_and(|c| c.contains("httpd"))
        }) {
            return e;
        }
        if Instant::now() > deadline {
            let mine: Vec<String> = daemon
                .events()
                .into_iter()
                .filter(|e| {
                    e["output_fields"]["container.id"] == id[..12]
                        && e["output_fields"]["evt.type"] == "execve"
                })
                .take(30)
                .map(|e| {
                    let f = &e["output_fields"];
                    format!(
                        "{} {} {} {}",
                        f["habitd.workload"], e["kind"], f["proc.exe"], f["proc.cmdline"]
                    )
                })
                .collect();
            panic!(
                "no entrypoint exec of {id} under {key}; its events:\n{}\nkernel drops: {}\n\
                 habitd log:\n{}",
                mine.join("\n"),
                common::drops(daemon),
                common::tail(&daemon.log(), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client fetching the index page of every container in `containers` every 200 ms.
fn web_clients(containers: Vec<String>) -> ClientLoop {
    ClientLoop::start(move || {
        for id in &containers {
            // Looked up each time: a restarted container may get another address.
            if let Some(ip) = ip_of(id) {
                let _ = get(&ip);
            }
        }
    })
}

#[test]
fn a_learned_shell_entrypoint_restarted_or_replicated_in_detection_raises_no_alert() {
    let daemon = Daemon::start(FAST_LEARNING);
    let image = busybox_image("entrypoint");
    let key = format!("docker.io/{image}");
    let c = Container::run(&image, &ENTRYPOINT);
    let client = web_clients(vec![c.id.clone()]);

    // The entrypoint ran before Docker could describe the container: held, then attributed.
    let entry = wait_entrypoint(&daemon, &key, &c.id);
    assert_eq!(
        entry["output_fields"]["container.image.repository"],
        "docker.io/habitd-e2e/busybox"
    );
    let stable = daemon.wait_state(&key, "stable", Duration::from_secs(60));
    assert!(
        stable["profile_sizes"]["exec"].as_u64().unwrap() >= 1,
        "{stable}"
    );
    let described = daemon.metric("habitd_pending_events_released_total{outcome=\"described\"}");
    assert!(
        described >= 1.0,
        "the first events were held, then described"
    );
    println!(
        "held then described: {described} events; describe wait sum {:.4}s over {} containers",
        daemon.metric("habitd_pending_describe_seconds_sum"),
        daemon.metric("habitd_pending_describe_seconds_count")
    );

    // `docker restart` in detection: the shell entrypoint runs again, and is known.
    let restarted_at = Instant::now();
    let out = Command::new("docker")
        .args(["restart", &c.id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let execs_before = daemon.events().len();
    daemon.wait_event("the restarted entrypoint", WAIT, |f| {
        f["container.id"] == c.id[..12]
            && f["evt.type"] == "execve"
            && f["proc.cmdline"]
                .as_str()
                .is_some_and(|c| c.contains("httpd"))
            && restarted_at.elapsed() > Duration::ZERO
    });
    assert!(daemon.events().len() >= execs_before);

    // A replica started in detection.
    let replica = Container::run(&image, &ENTRYPOINT);
    let client2 = web_clients(vec![replica.id.clone()]);
    wait_entrypoint(&daemon, &key, &replica.id);
    std::thread::sleep(Duration::from_secs(5));
    let alerts = common::alerts_of(&daemon, &key);
    assert!(
        alerts.is_empty(),
        "a restart or a replica of a learned workload raised alerts: {alerts:#?}"
    );
    assert_eq!(
        daemon.workload(&key).unwrap()["state"],
        "stable",
        "still stable"
    );

    // Detection still works on the replica: a connection to a destination it never used.
    // (Nothing listens on port 9: the connect is refused, and seen all the same.)
    replica.exec(&["/bin/actions", "connect", "127.0.0.1", "9"]);
    daemon.wait_alert("a new destination", &key, WAIT, |a| {
        a["habitd"]["novel"].as_array().is_some_and(|n| {
            n.iter().any(|x| {
                x["dimension"] == "network"
                    && x["item"].as_str().is_some_and(|i| i.contains("127.0.0.1"))
            })
        }) && a["output_fields"]["container.id"] == replica.id[..12]
    });
    drop((client, client2));
}
