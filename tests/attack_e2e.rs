//! End-to-end tests of an attacker's workload (issue 15): a real habitd, real containers.
//!
//! Floods: a container opening a million distinct paths, connecting to thousands of ports,
//! forking thousands of processes and starting thousands of threads with syscall orders of
//! their own (tests/fixtures/flood.c) beside a container learning quietly; habitd's memory,
//! the workload's state, the drops and the neighbour's learning and detection are checked.
//! The flood test runs the release build (`cargo build --release -p habitd` first).
//!
//! Tamper evidence: a map only habitd writes, written with bpftool, is an alert, a metric and
//! a `/healthz` report within the check period.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    // The real runtime is still recognised: the `docker exec` went through runc init in the
    // container's cgroup, and nothing of its own work was scored.
    let runtime_noise: Vec<Value> = common::alerts_of(&daemon, &key)
        .into_iter()
        .filter(|a| field(a, "proc.cmdline").starts_with("runc init"))
        .collect();
    assert!(
        runtime_noise.is_empty(),
        "the runtime's own work was scored: {runtime_noise:#?}"
    );
    drop(client);
}

/// `bpftool` (Debian package `bpftool`), which the tamper test uses as the attacker's tool.
fn require_bpftool() {
    let ok = std::process::Command::new("bpftool")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "bpftool is missing: apt-get install bpftool (the tamper test writes habitd's maps with it)"
    );
}

/// The id of the BPF map called `name` that process `pid` holds (its fds' fdinfo name the
/// map ids; other habitd instances on the machine have maps of the same name).
fn map_id_of(pid: u32, name: &str) -> u32 {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let info = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    for id in ids {
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "show", "id", &id.to_string()])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if v["name"] == name {
            return id;
        }
    }
    panic!("habitd (pid {pid}) holds no map called {name}");
}

/// The /healthz body.
fn health(daemon: &Daemon) -> Value {
    let (status, body) = daemon.get("/healthz").expect("/healthz answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_map_written_by_another_process_is_an_alert_a_metric_and_in_healthz() {
    common::require_root_and_bpf();
    require_bpftool();
    let _serial = serial();
    // Checked every second; learning intervals of 250 ms, so that habitd itself writes the
    // map four times a second: a foreign write is found whether a check or habitd's next
    // write comes first.
    let daemon =
        Daemon::start("[probes]\nintegrity_interval = \"1s\"\n[learning]\ninterval = \"250ms\"\n");
    let before = health(&daemon);
    assert_eq!(before["status"], "ok", "{before}");
    assert_eq!(before["tamper"], serde_json::json!([]), "{before}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        common::alerts_of(&daemon, "host")
            .iter()
            .all(|a| a["rule"] != "habitd probes tampered with"),
        "habitd's own writes are not tampering"
    );

    // The de-duplication interval, set to a value habitd never writes.
    let id = map_id_of(daemon.pid(), "habit_epoch");
    let written_at = std::time::Instant::now();
    let out = std::process::Command::new("bpftool")
        .args([
            "map",
            "update",
            "id",
            &id.to_string(),
            "key",
            "0",
            "0",
            "0",
            "0",
        ])
        .args(["value", "0xef", "0xbe", "0xad", "0xde", "0", "0", "0", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bpftool map update failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let a = daemon.wait_alert("the map written", "host", Duration::from_secs(10), |a| {
        a["rule"] == "habitd probes tampered with"
    });
    let found_after = written_at.elapsed();
    assert_eq!(a["priority"], "Critical", "{a:#}");
    assert_eq!(
        a["output_fields"]["habitd.tamper.kind"], "map_written",
        "{a:#}"
    );
    assert_eq!(
        a["output_fields"]["habitd.tamper.object"], "habit_epoch",
        "{a:#}"
    );
    assert!(
        a["output"]
            .as_str()
            .unwrap()
            .contains(&0xdead_beef_u64.to_string()),
        "the alert names the value found: {a:#}"
    );
    let h = health(&daemon);
    assert_eq!(h["status"], "tampered", "{h}");
    let report = &h["tamper"][0];
    assert_eq!(report["kind"], "map_written", "{h}");
    assert_eq!(report["object"], "habit_epoch", "{h}");
    assert_eq!(
        daemon.metric("habitd_tamper_detected_total{kind=\"map_written\"}"),
        1.0
    );
    assert_eq!(daemon.metric("habitd_probes_tampered"), 1.0);
    assert!(
        found_after < Duration::from_secs(3),
        "found within the check period (1 s) and an alert flush: {found_after:?}"
    );

    // Put back: the map no longer holds the foreign value.
    let dump = std::process::Command::new("bpftool")
        .args([
            "-j",
            "map",
            "lookup",
            "id",
            &id.to_string(),
            "key",
            "0",
            "0",
            "0",
            "0",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&dump.stdout).unwrap();
    assert_ne!(
        v["value"],
        serde_json::json!([
            "0xef", "0xbe", "0xad", "0xde", "0x00", "0x00", "0x00", "0x00"
        ]),
        "habitd wrote its interval back: {v}"
    );
}

/// An image for the flood test: the busybox test image's root plus the flood generator at
/// /bin/flood.
fn flood_image(tag: &str) -> String {
    let name = format!("habitd-e2e/flood:{tag}");
    let root = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; cd {root}; mkdir -p bin etc tmp www; cp {busybox} bin/; \
         for a in sh cat sleep httpd true; do ln -sf busybox bin/$a; done; \
         echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd; echo hello > www/index.html; \
         cp {flood} bin/flood",
        root = root.path().display(),
        busybox = common::static_busybox().display(),
        flood = common::static_helper_with("flood", &["-pthread"]).display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "preparing the root of {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::import_rootfs(root.path(), &name, &[]);
    name
}

/// The resident memory of process `pid`, bytes (0 once it is gone).
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples a process's resident memory every 100 ms; keeps the peak.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssPeak {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// The sum of the samples of metric `name` whose labels contain every `filter` pair.
fn metric_sum(daemon: &Daemon, name: &str, filter: &[&str]) -> f64 {
    let (_, body) = daemon.get("/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| filter.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_flood_makes_its_workload_unstable_while_a_neighbour_learns_and_detects() {
    common::require_root_and_bpf();
    common::require_docker();
    let _serial = serial();
    let bin = common::release_habitd_bin();
    // The rate model needs at least 10 counters intervals of learning.
    let config = FAST_LEARNING.replace("min = \"3s\"", "min = \"14s\"");
    let daemon = Daemon::start_streaming(&bin, &config, None);
    let rss_idle = rss_bytes(daemon.pid());
    let rss = RssPeak::start(daemon.pid());
    let image = flood_image("attack");

    // The neighbour: a web server learning its habit while the flood goes on beside it.
    let neighbour = Container::run_with(
        &["--label", "role=neighbour"],
        &image,
        &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    let ip = neighbour.ip();
    let client = ClientLoop::start(move || {
        let _ = common::web_get(&ip, "/index.html");
    });
    let key = "docker.io/habitd-e2e/flood:attack".to_string();
    daemon.wait_state(&key, "learning", WAIT);

    // The flood, in a second image (its own workload) made of the same root.
    let flood_key = "docker.io/habitd-e2e/flooder:attack";
    tag(&image, "habitd-e2e/flooder:attack");
    let started = std::time::Instant::now();
    let attacker = Container::run(
        "habitd-e2e/flooder:attack",
        &[
            "/bin/sh",
            "-c",
            "/bin/flood files 1000000; /bin/flood ports 5000; /bin/flood forks 5000; \
             /bin/flood threads 5000; exec /bin/sleep 600",
        ],
    );
    let unstable = daemon.wait_state(flood_key, "unstable", Duration::from_secs(90));
    let became_unstable = started.elapsed();
    let reason = unstable["unstable_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !reason.is_empty(),
        "an unstable workload says why: {unstable}"
    );
    assert!(daemon.metric("habitd_workloads{state=\"unstable\"}") >= 1.0);
    assert_eq!(
        daemon.metric("habitd_limit_reached_total{limit=\"profile\"}"),
        1.0
    );
    // An alert says so: a workload flooding while it learns is matched by rules only from
    // now on, and that must not go unnoticed.
    let a = daemon.wait_alert("the workload unstable", flood_key, WAIT, |a| {
        a["rule"] == "habitd workload unstable"
    });
    assert_eq!(a["habitd"]["baseline_state"], "unstable", "{a:#}");
    assert!(
        a["output"].as_str().unwrap().contains(&reason),
        "the alert names the limit: {a:#}"
    );
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("Workload unstable") && l.contains(flood_key)),
        "the state change is logged:\n{}",
        common::tail(&log, 20)
    );

    // Threads making syscalls in ever new orders, alone in a workload of their own: its
    // sequence learning is bounded, and its 6-grams leave the kernel map every workload shares.
    let threads_key = "docker.io/habitd-e2e/flooder:threads";
    tag(&image, "habitd-e2e/flooder:threads");
    let threads_started = std::time::Instant::now();
    let _threads = Container::run(
        "habitd-e2e/flooder:threads",
        &[
            "/bin/sh",
            "-c",
            "sleep 3; /bin/flood threads 5000; exec /bin/sleep 600",
        ],
    );
    let unstable = daemon.wait_state(threads_key, "unstable", Duration::from_secs(60));
    let threads_unstable = threads_started.elapsed();
    let threads_reason = unstable["unstable_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        threads_reason.contains("6-grams"),
        "unstable for its syscall orders: {unstable}"
    );
    daemon.wait_alert("the thread flood unstable", threads_key, WAIT, |a| {
        a["rule"] == "habitd workload unstable"
    });

    // The neighbour converges meanwhile, and detects.
    daemon.wait_state(&key, "stable", Duration::from_secs(90));
    let neighbour_stable = started.elapsed();
    neighbour.exec(&["/bin/sh", "-c", "/bin/true"]);
    daemon.wait_alert("a shell in the neighbour", &key, WAIT, |a| {
        common::has_novel(a, "exec", "/bin/sh")
    });

    // Let the whole flood run out before measuring what it cost.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ps = attacker.exec(&["/bin/sh", "-c", "ps | grep -c '[f]lood'"]);
        if String::from_utf8_lossy(&ps.stdout).trim() == "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the flood did not finish within a minute"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let flood_done = started.elapsed();

    // The flood in detection: the neighbour, stable, connects to thousands of ports.
    neighbour.exec(&["/bin/flood", "ports", "3000"]);
    let a = daemon.wait_alert("the neighbour's flood", &key, WAIT, |a| {
        common::has_novel(a, "rate", "")
    });
    let peak = rss.peak();
    drop(rss);

    // Kernel drops: by reason, and a ring buffer overflow is counted per workload too.
    let ringbuf_full = metric_sum(&daemon, "habitd_events_dropped_total", &["ringbuf_full"]);
    let grams_full = metric_sum(
        &daemon,
        "habitd_events_dropped_total",
        &["reason=\"grams_full\""],
    );
    let grams_slot_full = metric_sum(
        &daemon,
        "habitd_events_dropped_total",
        &["reason=\"grams_slot_full\""],
    );
    let attacker_lost = metric_sum(
        &daemon,
        "habitd_workload_events_dropped_total",
        &[&format!("workload=\"{flood_key}\"")],
    );
    eprintln!(
        "flood: unstable after {:.1} s ({reason}); threads unstable after {:.1} s \
         ({threads_reason}); neighbour stable after {:.1} s; flood done after \
         {:.1} s; habitd RSS idle {:.1} MiB, peak {:.1} MiB; ring buffer full {ringbuf_full}, \
         the attacker's lost records {attacker_lost}; drops: {}; the flood's alert: {}",
        became_unstable.as_secs_f64(),
        threads_unstable.as_secs_f64(),
        neighbour_stable.as_secs_f64(),
        flood_done.as_secs_f64(),
        rss_idle as f64 / MIB,
        peak as f64 / MIB,
        daemon.nonzero_drops().join(", "),
        a["output"]
    );
    if ringbuf_full > 0.0 {
        assert!(
            attacker_lost > 0.0,
            "records lost on a full ring buffer are counted per workload: {}",
            daemon.nonzero_drops().join(", ")
        );
    }
    assert_eq!(
        grams_full,
        0.0,
        "the shared 6-gram map never filled: {}",
        daemon.nonzero_drops().join(", ")
    );
    assert!(
        grams_slot_full > 0.0,
        "the thread flood's new grams past its slot's bound are counted: {}",
        daemon.nonzero_drops().join(", ")
    );
    assert!(
        peak < 512 * 1024 * 1024,
        "habitd's memory stays bounded under the flood: peak RSS {:.1} MiB",
        peak as f64 / MIB
    );
    drop(client);
}

/// `docker tag image name`: another image repository, so another workload, of the same root.
fn tag(image: &str, name: &str) {
    let out = std::process::Command::new("docker")
        .args(["tag", image, name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker tag {image} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
