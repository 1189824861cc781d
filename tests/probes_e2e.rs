//! End-to-end tests of the probes, the event stream and workload attribution: a real habitd,
//! real eBPF on the running kernel, real containers. They need root, BTF and Docker and fail
//! with what to install when one is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{Container, Daemon, busybox_image};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

#[test]
fn exec_event_has_pid_ppid_path_and_argv() {
    let daemon = Daemon::start("");
    let marker = format!("habitd-e2e-exec-{}", std::process::id());
    let mut child = Command::new("/bin/echo")
        .args(["-n", &marker])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as u64;
    child.wait().unwrap();

    let ev = daemon.wait_event("exec of /bin/echo", WAIT, |f| {
        f["evt.type"] == "execve" && u64_of(&f["proc.pid"]) == pid
    });
    assert_eq!(ev["proc.exepath"], "/bin/echo", "{ev}");
    assert_eq!(u64_of(&ev["proc.ppid"]), std::process::id() as u64, "{ev}");
    assert_eq!(ev["proc.args"], format!("-n {marker}"), "{ev}");
    assert_eq!(ev["proc.cmdline"], format!("echo -n {marker}"), "{ev}");
    assert_eq!(ev["proc.name"], "echo", "{ev}");
    assert!(
        ev["habitd.workload"].as_str().unwrap().starts_with("host"),
        "a host process is attributed to a host workload: {ev}"
    );
    assert_eq!(ev["container.id"], "host");

    let exit = daemon.wait_event("exit of the echo", WAIT, |f| {
        f["evt.type"] == "procexit" && u64_of(&f["proc.pid"]) == pid
    });
    assert_eq!(exit["evt.arg.status"], 0, "{exit}");
}

#[test]
fn container_events_are_attributed_to_the_image() {
    let image = busybox_image("attribution");
    let daemon = Daemon::start("");
    let container = Container::run(
        &image,
        &[
            "sh",
            "-c",
            "cat /etc/hostname; sleep 1; cat /etc/passwd; sleep 30",
        ],
    );
    let short = &container.id[..12];
    let key = "docker.io/habitd-e2e/busybox:attribution";

    // busybox's shell runs its applets by re-executing /proc/self/exe: habitd names the real
    // binary inside the container.
    let ev = daemon.wait_event("exec of cat in the container", WAIT, |f| {
        f["evt.type"] == "execve" && f["container.id"] == short && f["proc.args"] == "/etc/hostname"
    });
    assert_eq!(ev["proc.exepath"], "/bin/busybox", "{ev}");
    assert_eq!(ev["habitd.workload"], key, "{ev}");
    assert_eq!(
        ev["container.image.repository"],
        "docker.io/habitd-e2e/busybox"
    );
    assert_eq!(ev["container.image.tag"], "attribution");
    assert_eq!(ev["container.full_id"], container.id.as_str());

    let open = daemon.wait_event("open of /etc/passwd in the container", WAIT, |f| {
        f["evt.type"] == "openat" && f["container.id"] == short && f["fd.name"] == "/etc/passwd"
    });
    assert_eq!(open["habitd.workload"], key);

    // Meanwhile the host's own processes stay host workloads.
    let host_pid = {
        let mut c = Command::new("/bin/true").spawn().unwrap();
        let pid = c.id() as u64;
        c.wait().unwrap();
        pid
    };
    let host = daemon.wait_event("host exec", WAIT, |f| {
        f["evt.type"] == "execve" && u64_of(&f["proc.pid"]) == host_pid
    });
    assert!(
        host["habitd.workload"]
            .as_str()
            .unwrap()
            .starts_with("host"),
        "{host}"
    );
}

/// connect + accept of one TCP connection on loopback, seen with both addresses and ports.
fn check_tcp_loopback(daemon: &Daemon, bind: &str) {
    let listener = TcpListener::bind(bind).unwrap();
    let server = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        peer
    });
    let mut client = TcpStream::connect(server).unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(b"ping").unwrap();
    let peer = handle.join().unwrap();
    assert_eq!(peer, client_addr);
    let me = std::process::id() as u64;
    let ip = server.ip().to_string();

    let listen = daemon.wait_event(&format!("listen on {server}"), WAIT, |f| {
        f["evt.type"] == "listen" && f["fd.lport"] == server.port() && u64_of(&f["proc.pid"]) == me
    });
    assert_eq!(listen["fd.lip"], ip, "{listen}");

    let connect = daemon.wait_event(&format!("connect to {server}"), WAIT, |f| {
        f["evt.type"] == "connect" && f["fd.sport"] == server.port() && u64_of(&f["proc.pid"]) == me
    });
    assert_eq!(connect["fd.sip"], ip, "{connect}");
    assert_eq!(connect["fd.l4proto"], "tcp", "{connect}");

    let accept = daemon.wait_event(&format!("accept on {server}"), WAIT, |f| {
        f["evt.type"] == "accept" && f["fd.sport"] == server.port()
    });
    assert_eq!(
        u64_of(&accept["proc.pid"]),
        me,
        "attributed to the listener: {accept}"
    );
    assert_eq!(accept["fd.sip"], ip, "{accept}");
    assert_eq!(accept["fd.cip"], client_addr.ip().to_string(), "{accept}");
    assert_eq!(accept["fd.cport"], client_addr.port(), "{accept}");
}

#[test]
fn tcp_connect_and_accept_ipv4_and_ipv6() {
    let daemon = Daemon::start("");
    check_tcp_loopback(&daemon, "127.0.0.1:0");
    check_tcp_loopback(&daemon, "[::1]:0");
}

#[test]
fn listeners_from_before_the_daemon_are_attributed() {
    // The server listens before habitd starts: habitd seeds the kernel's listener table from
    // /proc, so the connection it accepts is still attributed to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let daemon = Daemon::start("");
    let handle = std::thread::spawn(move || listener.accept().map(|(_, peer)| peer).unwrap());
    let client = TcpStream::connect(server).unwrap();
    let client_addr = client.local_addr().unwrap();
    handle.join().unwrap();
    let accept = daemon.wait_event("accept on a pre-existing listener", WAIT, |f| {
        f["evt.type"] == "accept"
            && f["fd.sport"] == server.port()
            && f["fd.cport"] == client_addr.port()
    });
    assert_eq!(
        u64_of(&accept["proc.pid"]),
        std::process::id() as u64,
        "{accept}"
    );
}

#[test]
fn repeated_opens_are_sent_once_per_interval_and_syscalls_are_counted() {
    let image = busybox_image("opens");
    let daemon =
        Daemon::start("[learning]\ninterval = \"10m\"\n[probes]\ncounters_interval = \"1s\"\n");
    let key = "docker.io/habitd-e2e/busybox:opens";
    let sample = format!("habitd_syscalls_total{{workload=\"{key}\"}}");
    let before = daemon.metric(&sample);
    const OPENS: u64 = 3000;
    // `read < file` is a shell builtin: one open per iteration and no exec.
    let container = Container::run(
        &image,
        &[
            "sh",
            "-c",
            &format!(
                "i=0; while [ $i -lt {OPENS} ]; do read x < /etc/hostname; i=$((i+1)); done; echo done; sleep 30"
            ),
        ],
    );
    let short = container.id[..12].to_string();
    // Wait for the loop to finish (it prints "done").
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let logs = Command::new("docker")
            .args(["logs", &container.id])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&logs.stdout).contains("done") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the open loop did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Counters are read every second: wait until they cover the loop.
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.metric(&sample) - before < OPENS as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "{sample} grew by {} only, expected at least {OPENS}\n{}\n{}",
            daemon.metric(&sample) - before,
            daemon.get("/metrics").unwrap().1,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.wait_event("open of /etc/hostname in the container", WAIT, |f| {
        f["evt.type"] == "openat"
            && f["container.id"] == short.as_str()
            && f["fd.name"] == "/etc/hostname"
    });
    std::thread::sleep(Duration::from_secs(1));
    let opens = daemon
        .events()
        .iter()
        .map(|e| &e["output_fields"])
        .filter(|f| {
            f["evt.type"] == "openat"
                && f["container.id"] == short.as_str()
                && f["fd.name"] == "/etc/hostname"
        })
        .count();
    assert_eq!(
        opens, 1,
        "{OPENS} opens of one file in one interval must give one event"
    );
}

/// Issue 11, evasion through relative paths: the kernel's open de-duplication keyed on the
/// path string as passed, so `temp-1.rdb` written in /root/.ssh hid `temp-1.rdb` written in
/// /etc for the rest of the interval (redis `CONFIG SET dir` then `SAVE`). Both writes, in
/// one interval (10 minutes here), must be reported; a repeat in the same directory is still
/// de-duplicated.
#[test]
fn same_named_relative_writes_in_two_directories_are_both_reported() {
    let image = busybox_image("relative");
    let daemon =
        Daemon::start("[learning]\ninterval = \"10m\"\n[probes]\ncounters_interval = \"1s\"\n");
    let container = Container::run(
        &image,
        &[
            "sh",
            "-c",
            "busybox mkdir -p /root/.ssh; sleep 2; \
             cd /root/.ssh && echo a > temp-1.rdb && echo a > temp-1.rdb; \
             cd /etc && echo b > temp-1.rdb; echo done; sleep 30",
        ],
    );
    let short = container.id[..12].to_string();
    let written = |f: &Value, name: &str| {
        f["evt.type"] == "openat" && f["container.id"] == short.as_str() && f["fd.name"] == name
    };
    // (A loaded machine can take a while to deliver the events.)
    let wait = 3 * WAIT;
    daemon.wait_event("the write of /root/.ssh/temp-1.rdb", wait, |f| {
        written(f, "/root/.ssh/temp-1.rdb")
    });
    daemon.wait_event("the write of /etc/temp-1.rdb", wait, |f| {
        written(f, "/etc/temp-1.rdb")
    });
    std::thread::sleep(Duration::from_secs(1));
    let ssh = daemon
        .events()
        .iter()
        .filter(|e| written(&e["output_fields"], "/root/.ssh/temp-1.rdb"))
        .count();
    assert_eq!(
        ssh, 1,
        "two writes of one file in one interval give one event"
    );
}

#[test]
fn metrics_and_health_are_served() {
    let daemon = Daemon::start("");
    let (status, body) = daemon.get("/healthz").unwrap();
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["probes_attached"], true);
    Command::new("/bin/true").status().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (status, metrics) = daemon.get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("habitd_events_total{type=\"exec\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("habitd_probes_attached 1"), "{metrics}");

    // habitd never reports its own activity: not its opens, not the connections to its
    // HTTP listener that this test just made.
    let me = daemon.pid() as u64;
    let own: Vec<Value> = daemon
        .events()
        .into_iter()
        .filter(|e| u64_of(&e["output_fields"]["proc.pid"]) == me)
        .collect();
    assert!(own.is_empty(), "habitd reported itself: {own:#?}");
}
